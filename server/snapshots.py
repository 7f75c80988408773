"""Code snapshots: the deterministic ``tar.gz`` of a project folder that a code run runs.

Used by the CLI (:func:`pack`), the server (:func:`inspect` on upload, :func:`read_member` to show
one file) and the worker (:func:`extract` into the run's folder). Pure module: stdlib and
``pathspec`` only; no database, no torch (the worker imports it).

A snapshot holds regular files only, sorted by path, with ``mtime=0``, ``uid=gid=0``, empty
owner names and mode ``0o644`` (``0o755`` for executables) in a gzip stream whose header mtime
is 0, so the same folder content always gives the same sha256. ``pack`` adds
``.runyard/git.json`` (and ``.runyard/git.diff`` when the tree is dirty) when the folder is in a
git repository. See docs/code-runs.md for the whole contract.

Reading is defensive: every member is checked (no ``..``, absolute path, backslash, NUL or
control character, link, device, sparse file or duplicate; a size and a file-count limit; long
name / pax headers of at most 256 KiB), decompression stops at a byte budget, and
:func:`extract` creates each file with ``O_CREAT|O_EXCL|O_NOFOLLOW`` relative to directory file
descriptors of directories it made itself.
"""

from __future__ import annotations

import errno
import gzip
import hashlib
import io
import json
import os
import re
import shutil
import stat
import subprocess
import tarfile
import warnings
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, cast

import pathspec

DEFAULT_MAX_BYTES = 100 * 2**20  # unpacked bytes, client and server
DEFAULT_MAX_FILES = 10_000
MAX_DIFF_BYTES = 2**20  # .runyard/git.diff is cut here
MAX_PATH_CHARS = 1024
MAX_NAME_BYTES = 255
GIT_JSON = ".runyard/git.json"
GIT_DIFF = ".runyard/git.diff"
IGNORE_FILE = ".runyardignore"

_MAX_META_BYTES = 256 * 2**10  # a GNU long name or pax header larger than this is refused
_CHUNK = 2**20
_GZIP_LEVEL = 6
_META_TYPES = (
    tarfile.GNUTYPE_LONGNAME,
    tarfile.GNUTYPE_LONGLINK,
    tarfile.XHDTYPE,
    tarfile.XGLTYPE,
    tarfile.SOLARIS_XHDTYPE,
)


class SnapshotError(ValueError):
    """Every refusal; the message says what is wrong and how to fix it."""


class SnapshotTooLarge(SnapshotError):
    """Over the size or file-count limit; the message names the largest files and the limit."""


class UnsafeSnapshot(SnapshotError):
    """Not a tar.gz, or a member that could write outside the folder (tar-slip, link, device...)."""


class SnapshotWarning(UserWarning):
    """Something left out of a snapshot (a symlink, a submodule)."""


@dataclass
class Packed:
    data: bytes
    sha256: str
    files: list[dict]  # [{"path", "size"}], sorted by path, .runyard/ files included
    git: dict | None
    warnings: list[str] = field(default_factory=list)  # what was left out and why (symlinks, ...)


@dataclass
class Inspected:
    files: list[dict]  # [{"path", "size"}] in archive order (sorted for snapshots made by pack)
    unpacked_bytes: int
    git: dict | None


def human_size(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{int(n)} bytes" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"  # pragma: no cover


def _largest(sizes: list[tuple[str, int]], count: int = 5) -> str:
    top = sorted(sizes, key=lambda item: (-item[1], item[0]))[:count]
    return ", ".join(f"{path} ({human_size(size)})" for path, size in top)


def _too_large(sizes: list[tuple[str, int]], total: int, max_bytes: int, what: str) -> SnapshotTooLarge:
    return SnapshotTooLarge(
        f"{what} is {human_size(total)} unpacked, more than the limit of {human_size(max_bytes)}; the largest "
        f"files: {_largest(sizes)}. Leave out data, checkpoints and environments with a .runyardignore "
        f"(or .gitignore) at the folder root, or raise the limit."
    )


# ---------------------------------------------------------------------------------------------
# collecting a folder


def _always_excluded(rel: str, is_dir: bool) -> bool:
    name = rel.rsplit("/", 1)[-1]
    if name == ".git" or (is_dir and name == "__pycache__"):
        return True
    if not is_dir and name.endswith(".pyc"):
        return True
    return rel == ".runyard"


def _read_ignore(path: Path) -> pathspec.GitIgnoreSpec | None:
    try:
        st = os.lstat(path)
    except OSError:
        return None
    if not stat.S_ISREG(st.st_mode) or st.st_size > 4 * 2**20:
        return None
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return None
    return pathspec.GitIgnoreSpec.from_lines(lines)


def _ignored(rel: str, is_dir: bool, specs: list[tuple[str, pathspec.GitIgnoreSpec]]) -> bool:
    """git's rule: the deepest ignore file with a matching pattern decides (its last match)."""
    for base, spec in reversed(specs):
        sub = rel[len(base) + 1 :] if base else rel
        result = spec.check_file(sub + "/" if is_dir else sub)
        if result.include is not None:
            return bool(result.include)
    return False


def _ignored_with_parents(rel: str, spec: pathspec.GitIgnoreSpec) -> bool:
    parts = rel.split("/")
    for i in range(1, len(parts)):
        result = spec.check_file("/".join(parts[:i]) + "/")
        if result.include:
            return True
    return bool(spec.check_file(rel).include)


def _git(root: Path, *args: str, check: bool = True) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=root, capture_output=True, timeout=60, env=_git_env())
    except (OSError, subprocess.SubprocessError):
        return None
    if check and out.returncode != 0:
        return None
    return out.stdout.decode("utf-8", errors="surrogateescape")


def _git_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update({"GIT_TERMINAL_PROMPT": "0", "GIT_OPTIONAL_LOCKS": "0", "LC_ALL": "C", "GIT_PAGER": "cat"})
    return env


def _in_git(root: Path) -> bool:
    out = _git(root, "rev-parse", "--is-inside-work-tree")
    return out is not None and out.strip() == "true"


class _Counter:
    """Counts what would be packed, to stop at the file-count limit with a useful message."""

    def __init__(self, max_files: int, what: str) -> None:
        self.max_files, self.what = max_files, what
        self.files: list[tuple[str, Path, int]] = []

    def add(self, rel: str, path: Path, size: int) -> None:
        self.files.append((rel, path, size))
        if len(self.files) > self.max_files:
            raise self.too_many()

    def too_many(self) -> SnapshotTooLarge:
        per_top: dict[str, int] = {}
        for rel, _, _ in self.files:
            top = rel.split("/", 1)[0] + ("/" if "/" in rel else "")
            per_top[top] = per_top.get(top, 0) + 1
        busiest = sorted(per_top.items(), key=lambda item: (-item[1], item[0]))[:5]
        listed = ", ".join(f"{name} ({count} files)" for name, count in busiest)
        return SnapshotTooLarge(
            f"{self.what} has more than {self.max_files} files to pack (the limit); the fullest: {listed}. "
            f"Leave out data and environments with a .runyardignore (or .gitignore) at the folder root, "
            f"or raise the limit."
        )


def _walk(root: Path, counter: _Counter, warn: Callable[[str], None]) -> None:
    def visit(directory: Path, rel_dir: str, specs: list[tuple[str, pathspec.GitIgnoreSpec]]) -> None:
        spec = _read_ignore(directory / ".gitignore")
        if spec is not None:
            specs = [*specs, (rel_dir, spec)]
        try:
            entries = sorted(os.scandir(directory), key=lambda e: e.name)
        except OSError as exc:
            warn(f"{rel_dir or '.'}: cannot be read ({exc.strerror}); left out")
            return
        for entry in entries:
            rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            is_dir = stat.S_ISDIR(st.st_mode)
            if _always_excluded(rel, is_dir) or _ignored(rel, is_dir, specs):
                continue
            if stat.S_ISLNK(st.st_mode):
                warn(f"{rel} is a symbolic link; left out (snapshots hold regular files only)")
            elif is_dir:
                visit(Path(entry.path), rel, specs)
            elif stat.S_ISREG(st.st_mode):
                counter.add(rel, Path(entry.path), st.st_size)

    visit(root, "", [])


def _git_files(root: Path, counter: _Counter, warn: Callable[[str], None]) -> bool:
    out = _git(
        root, "-c", "core.quotePath=off", "ls-files", "-z", "--cached", "--others", "--exclude-standard"
    )
    if out is None:
        return False
    for rel in sorted(set(p for p in out.split("\0") if p)):
        is_dir_hint = rel.endswith("/")
        rel = rel.rstrip("/")
        path = root / rel
        try:
            st = os.lstat(path)
        except OSError:
            continue  # deleted in the working tree
        is_dir = is_dir_hint or stat.S_ISDIR(st.st_mode)
        parts = rel.split("/")
        if any(_always_excluded("/".join(parts[: i + 1]), True) for i in range(len(parts) - 1)):
            continue
        if _always_excluded(rel, is_dir):
            continue
        if stat.S_ISLNK(st.st_mode):
            warn(f"{rel} is a symbolic link; left out (snapshots hold regular files only)")
        elif is_dir:
            warn(f"{rel} is a git submodule or nested repository; left out")
        elif stat.S_ISREG(st.st_mode):
            counter.add(rel, path, st.st_size)
    return True


def collect(
    root: str | os.PathLike,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_files: int = DEFAULT_MAX_FILES,
    warn: Callable[[str], None] | None = None,
) -> list[tuple[str, Path]]:
    """The files a snapshot of ``root`` holds: ``[(relative posix path, absolute path)]`` sorted by path.

    In a git repository, ``git ls-files --cached --others --exclude-standard`` under the folder;
    otherwise every file minus the ``.gitignore`` patterns of each folder. On top, the
    ``.runyardignore`` at the folder root. ``.git/``, ``__pycache__/``, ``*.pyc`` and the
    folder's own ``.runyard/`` are always left out, and so are symlinks (``warn`` is told, by
    default as a :class:`SnapshotWarning`), sockets and devices. Raises :class:`SnapshotTooLarge`
    over ``max_bytes`` (naming the largest files) or ``max_files``."""
    root = Path(root).resolve()
    if not root.is_dir():
        raise SnapshotError(f"{root} is not a folder; give the folder to snapshot.")
    if warn is None:

        def warn(message: str) -> None:
            warnings.warn(message, SnapshotWarning, stacklevel=3)

    counter = _Counter(max_files, str(root))
    if not (_in_git(root) and _git_files(root, counter, warn)):
        counter.files.clear()
        _walk(root, counter, warn)
    ignore = _read_ignore(root / IGNORE_FILE)
    files = counter.files
    if ignore is not None:
        files = [f for f in files if not _ignored_with_parents(f[0], ignore)]
    files.sort(key=lambda f: f[0])
    total = sum(size for _, _, size in files)
    if total > max_bytes:
        raise _too_large([(rel, size) for rel, _, size in files], total, max_bytes, str(root))
    return [(rel, path) for rel, path, _ in files]


# ---------------------------------------------------------------------------------------------
# git record


def _redact_url(url: str) -> str:
    """Drop credentials from a remote URL (``https://user:token@host/x`` -> ``https://host/x``)."""
    if "://" in url:
        scheme, rest = url.split("://", 1)
        host, sep, path = rest.partition("/")
        if "@" in host:
            host = host.rsplit("@", 1)[1]
        return f"{scheme}://{host}{sep}{path}"
    return url


def _read_limited(args: list[str], root: Path, limit: int) -> tuple[bytes, bool]:
    """stdout of a git command, cut at ``limit`` bytes (the command is stopped there)."""
    try:
        proc = subprocess.Popen(
            ["git", *args], cwd=root, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=_git_env()
        )
    except OSError:
        return b"", False
    assert proc.stdout is not None
    chunks: list[bytes] = []
    size = 0
    truncated = False
    try:
        while True:
            chunk = proc.stdout.read(min(_CHUNK, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
            if size > limit:
                truncated = True
                break
    finally:
        if truncated:
            proc.kill()
        proc.stdout.close()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:  # pragma: no cover
            proc.kill()
            proc.wait()
    data = b"".join(chunks)
    return (data[:limit], True) if truncated else (data, False)


def git_record(root: str | os.PathLike) -> tuple[dict, bytes] | None:
    """``(git.json dict, diff bytes)`` for a folder inside a git work tree, else None.

    The dict: ``commit`` (None before the first commit), ``branch`` (None when detached),
    ``remote`` (origin's URL, else the first remote's, credentials removed; None without one),
    ``dirty``, ``diff_bytes`` (size of the diff kept), ``diff_truncated`` and ``root`` (the
    folder's path in the repository, ``"."`` at its top). The diff is ``git diff HEAD`` of the
    folder plus a list of its untracked, not ignored files, cut at 1 MiB."""
    root = Path(root).resolve()
    if not _in_git(root):
        return None
    commit = (_git(root, "rev-parse", "--verify", "-q", "HEAD") or "").strip() or None
    branch = (_git(root, "symbolic-ref", "--short", "-q", "HEAD") or "").strip() or None
    remote = (_git(root, "config", "--get", "remote.origin.url") or "").strip()
    if not remote:
        names = (_git(root, "remote") or "").split()
        if names:
            remote = (_git(root, "config", "--get", f"remote.{names[0]}.url") or "").strip()
    prefix = (_git(root, "rev-parse", "--show-prefix") or "").strip().rstrip("/")
    # before a first commit there is no HEAD: the staged files are the change
    against = ["HEAD"] if commit else ["--cached"]
    diff, truncated = _read_limited(
        ["-c", "core.quotePath=off", "diff", "--no-color", "--no-ext-diff", *against, "--", "."],
        root,
        MAX_DIFF_BYTES,
    )
    untracked = (
        _git(root, "-c", "core.quotePath=off", "ls-files", "-z", "--others", "--exclude-standard", "--", ".")
        or ""
    ).split("\0")
    untracked = sorted(p for p in untracked if p)
    if untracked and not truncated:
        listing = "".join(f"#   {p}\n" for p in untracked)
        extra = f"# Untracked files (not in the diff above; their content is in the snapshot):\n{listing}"
        diff += extra.encode("utf-8", errors="surrogateescape")
        if len(diff) > MAX_DIFF_BYTES:
            diff, truncated = diff[:MAX_DIFF_BYTES], True
    dirty = bool(diff) or truncated
    record = {
        "commit": commit,
        "branch": branch,
        "remote": _redact_url(remote) or None,
        "dirty": dirty,
        "diff_bytes": len(diff),
        "diff_truncated": truncated,
        "root": prefix or ".",
    }
    return record, diff


# ---------------------------------------------------------------------------------------------
# packing


def _tarinfo(name: str, size: int, executable: bool) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = 0
    info.mode = 0o755 if executable else 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.type = tarfile.REGTYPE
    return info


def _read_file(path: Path, limit: int) -> tuple[bytes, bool]:
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise SnapshotError(f"{path} stopped being a regular file while it was packed; pack again.")
        return f.read(limit + 1), bool(st.st_mode & 0o111)


def pack(
    root: str | os.PathLike, *, max_bytes: int = DEFAULT_MAX_BYTES, max_files: int = DEFAULT_MAX_FILES
) -> Packed:
    """The deterministic snapshot of ``root`` (see :func:`collect` for what is in it), with
    ``.runyard/git.json`` and ``.runyard/git.diff`` when the folder is in a git repository."""
    notes: list[str] = []
    files = collect(root, max_bytes=max_bytes, max_files=max_files, warn=notes.append)
    record = git_record(root)
    members: list[tuple[str, bytes, bool]] = []
    total = 0
    for rel, path in files:
        try:
            data, executable = _read_file(path, max_bytes - total)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                notes.append(f"{rel} became a symbolic link while it was packed; left out")
                continue
            raise SnapshotError(
                f"{rel} cannot be read ({exc.strerror}); fix its permissions or ignore it in .runyardignore."
            ) from exc
        members.append((rel, data, executable))
        total += len(data)
        if total > max_bytes:
            raise _too_large([(m[0], len(m[1])) for m in members], total, max_bytes, str(root))
    if record is not None:
        meta, diff = record
        members.append((GIT_JSON, (json.dumps(meta, indent=2, sort_keys=True) + "\n").encode(), False))
        if diff:
            members.append((GIT_DIFF, diff, False))
        total = sum(len(m[1]) for m in members)
        if total > max_bytes:
            raise _too_large([(m[0], len(m[1])) for m in members], total, max_bytes, str(root))
    if len(members) > max_files:
        raise SnapshotTooLarge(
            f"{root} has {len(members)} files to pack with its git record, more than the "
            f"limit of {max_files}; leave some out with a .runyardignore."
        )
    members.sort(key=lambda m: m[0])
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0, compresslevel=_GZIP_LEVEL) as gz:
        with tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT, encoding="utf-8") as tf:
            for rel, data, executable in members:
                tf.addfile(_tarinfo(rel, len(data), executable), io.BytesIO(data))
    blob = buf.getvalue()
    return Packed(
        data=blob,
        sha256=hashlib.sha256(blob).hexdigest(),
        files=[{"path": rel, "size": len(data)} for rel, data, _ in members],
        git=record[0] if record else None,
        warnings=notes,
    )


# ---------------------------------------------------------------------------------------------
# reading (inspect, read_member, extract)


class _TarInfo(tarfile.TarInfo):
    """Refuses oversized GNU long-name and pax headers before tarfile reads them into memory."""

    def _proc_member(self, tarfile_: tarfile.TarFile) -> tarfile.TarInfo:
        if self.type in _META_TYPES and self.size > _MAX_META_BYTES:
            raise UnsafeSnapshot(
                f"the snapshot has a {human_size(self.size)} tar header (long name or pax "
                f"header; at most {human_size(_MAX_META_BYTES)}); pack it with runyard submit."
            )
        return super()._proc_member(tarfile_)  # type: ignore[misc]


class _Budget(io.RawIOBase):
    """A reader that refuses to decompress more than ``limit`` bytes (a gzip bomb)."""

    def __init__(self, inner: IO[bytes], limit: int) -> None:
        self.inner, self.limit, self.count = inner, limit, 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            size = self.limit - self.count + 1
        if self.count + size > self.limit + 1:
            size = self.limit + 1 - self.count
        data = self.inner.read(size) if size > 0 else b""
        self.count += len(data)
        if self.count > self.limit:
            raise UnsafeSnapshot(
                f"the snapshot unpacks to more than {human_size(self.limit)} of tar data "
                f"(a compression bomb or an archive over the limit)."
            )
        return data

    def readinto(self, b: Any) -> int:  # pragma: no cover - tarfile uses read()
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)


@contextmanager
def _open_source(src: Any) -> Iterator[IO[bytes]]:
    if isinstance(src, bytes | bytearray | memoryview):
        yield io.BytesIO(bytes(src))
    elif isinstance(src, str | os.PathLike):
        with open(src, "rb") as f:
            yield f
    else:
        yield src


@contextmanager
def _members(src: Any, budget: int) -> Iterator[Iterator[tuple[tarfile.TarInfo, tarfile.TarFile]]]:
    """Stream the archive's members (tarfile stream mode; nothing seeks), bad gzip/tar as UnsafeSnapshot."""
    with _open_source(src) as raw:
        gz = gzip.GzipFile(fileobj=raw, mode="rb")
        limited = _Budget(cast("IO[bytes]", gz), budget)
        try:
            tf = tarfile.open(
                fileobj=limited, mode="r|", tarinfo=_TarInfo, encoding="utf-8", errors="surrogateescape"
            )
        except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
            raise UnsafeSnapshot(
                f"the snapshot is not a tar.gz archive ({exc}); pack it with runyard submit."
            ) from exc

        def iterate() -> Iterator[tuple[tarfile.TarInfo, tarfile.TarFile]]:
            try:
                while True:
                    member = tf.next()
                    if member is None:
                        return
                    yield member, tf
                    tf.members.clear()  # type: ignore[attr-defined]  # stream mode keeps every member otherwise
            except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
                raise UnsafeSnapshot(
                    f"the snapshot is not a valid tar.gz archive ({exc}); pack it with runyard submit."
                ) from exc

        try:
            yield iterate()
        finally:
            tf.close()


def _tar_budget(max_bytes: int, max_files: int) -> int:
    # file data plus, per member, a header, its padding and a pax header of a long name
    return max_bytes + (max_files + 2) * 4096 + 2 * _MAX_META_BYTES + 2**20


def _check_name(name: str) -> str | None:
    """Why a member name is refused, or None."""
    if not name:
        return "has an empty name"
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return "has a name that is not UTF-8"
    if "\0" in name:
        return "has a NUL byte in its name"
    if "\\" in name:
        return "has a backslash in its name"
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        return "has a control character in its name"
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        return "has an absolute path"
    if len(name) > MAX_PATH_CHARS:
        return f"has a path longer than {MAX_PATH_CHARS} characters"
    parts = name.split("/")
    if ".." in parts:
        return "has '..' in its path"
    if any(p in ("", ".") for p in parts):
        return "has an empty or '.' part in its path (not a normalised relative path)"
    if any(len(p.encode("utf-8")) > MAX_NAME_BYTES for p in parts):
        return f"has a path part longer than {MAX_NAME_BYTES} bytes"
    return None


class _Checker:
    """The per-member rules shared by inspect and extract."""

    def __init__(self, max_bytes: int, max_files: int) -> None:
        self.max_bytes, self.max_files = max_bytes, max_files
        self.files: dict[str, int] = {}
        self.dirs: set[str] = set()  # explicit and implied directories
        self.explicit_dirs: set[str] = set()
        self.total = 0

    def check(self, m: tarfile.TarInfo) -> bool:
        """Validate one member; True for a regular file, False for a directory."""
        name = m.name
        shown = repr(name)
        reason = _check_name(name)
        if reason:
            raise UnsafeSnapshot(
                f"snapshot member {shown} {reason}; it is refused (pack with runyard submit)."
            )
        if m.issym() or m.islnk():
            kind = "symbolic link" if m.issym() else "hard link"
            raise UnsafeSnapshot(
                f"snapshot member {shown} is a {kind} (to {m.linkname!r}); snapshots may hold "
                f"regular files and directories only."
            )
        if m.ischr() or m.isblk() or m.isfifo():
            raise UnsafeSnapshot(
                f"snapshot member {shown} is a device or FIFO; snapshots may hold regular "
                f"files and directories only."
            )
        if m.issparse():
            raise UnsafeSnapshot(
                f"snapshot member {shown} is a sparse file; snapshots may hold regular files "
                f"and directories only."
            )
        if not (m.isreg() or m.isdir()):
            raise UnsafeSnapshot(
                f"snapshot member {shown} has tar type {m.type!r}; snapshots may hold regular "
                f"files and directories only."
            )
        parts = name.split("/")
        for i in range(1, len(parts)):
            parent = "/".join(parts[:i])
            if parent in self.files:
                raise UnsafeSnapshot(
                    f"snapshot member {shown} goes through {parent!r}, which is a file in the "
                    f"snapshot; it is refused."
                )
        if name in self.files or name in self.explicit_dirs or (m.isreg() and name in self.dirs):
            raise UnsafeSnapshot(
                f"snapshot member {shown} appears more than once (a duplicate member); it is refused."
            )
        for i in range(1, len(parts)):
            self.dirs.add("/".join(parts[:i]))
        if m.isdir():
            self.dirs.add(name)
            self.explicit_dirs.add(name)
            return False
        if len(self.files) >= self.max_files:
            raise SnapshotTooLarge(
                f"the snapshot has more than {self.max_files} files (the limit; at "
                f"{shown}); leave some out with a .runyardignore."
            )
        self.files[name] = m.size
        self.total += m.size
        if self.total > self.max_bytes:
            raise _too_large(list(self.files.items()), self.total, self.max_bytes, "the snapshot")
        return True


def _git_meta(data: bytes) -> dict:
    try:
        raw = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise SnapshotError(
            f"snapshot member {GIT_JSON!r} is not valid JSON ({exc}); pack with runyard submit."
        ) from exc
    if not isinstance(raw, dict):
        raise SnapshotError(f"snapshot member {GIT_JSON!r} is not a JSON object; pack with runyard submit.")

    def text(key: str) -> str | None:
        value = raw.get(key)
        return value[:2000] if isinstance(value, str) else None

    def number(key: str) -> int:
        value = raw.get(key)
        return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0

    return {
        "commit": text("commit"),
        "branch": text("branch"),
        "remote": text("remote"),
        "dirty": bool(raw.get("dirty")),
        "diff_bytes": number("diff_bytes"),
        "diff_truncated": bool(raw.get("diff_truncated")),
        "root": text("root"),
    }


def inspect(src: Any, *, max_bytes: int = DEFAULT_MAX_BYTES, max_files: int = DEFAULT_MAX_FILES) -> Inspected:
    """Validate every member of a snapshot (bytes, a path, or a binary file object read from its
    start) and list its files. Raises :class:`UnsafeSnapshot` / :class:`SnapshotTooLarge` naming
    the member at fault."""
    checker = _Checker(max_bytes, max_files)
    files: list[dict] = []
    git: dict | None = None
    with _members(src, _tar_budget(max_bytes, max_files)) as members:
        for m, tf in members:
            if not checker.check(m):
                continue
            files.append({"path": m.name, "size": m.size})
            if m.name == GIT_JSON:
                if m.size > 64 * 2**10:
                    raise SnapshotError(
                        f"snapshot member {GIT_JSON!r} is larger than 64 KiB; pack with runyard submit."
                    )
                f = tf.extractfile(m)
                git = _git_meta(f.read() if f else b"")
    return Inspected(files=files, unpacked_bytes=checker.total, git=git)


def read_member(
    src: Any,
    path: str,
    *,
    max_bytes: int,
    max_unpacked_bytes: int = DEFAULT_MAX_BYTES,
    max_files: int = DEFAULT_MAX_FILES,
) -> bytes | None:
    """The first ``max_bytes`` bytes of the regular file ``path`` in a snapshot, or None when it
    has no such file. ``max_unpacked_bytes``/``max_files`` bound the archive as in :func:`inspect`."""
    checker = _Checker(max_unpacked_bytes, max_files)
    with _members(src, _tar_budget(max_unpacked_bytes, max_files)) as members:
        for m, tf in members:
            if checker.check(m) and m.name == path:
                f = tf.extractfile(m)
                return f.read(max_bytes) if f else b""
    return None


def _open_dir(name: str, dir_fd: int) -> int:
    return os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=dir_fd)


def extract(
    src: Any,
    dest: str | os.PathLike,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_files: int = DEFAULT_MAX_FILES,
) -> list[str]:
    """Unpack a snapshot into ``dest`` (made when missing) and return the files written.

    Every member is re-checked as in :func:`inspect`; directories are made by extract itself
    (an existing entry of the same name, such as a planted symlink, is refused), each file is
    created with ``O_CREAT|O_EXCL|O_NOFOLLOW`` relative to its directory's file descriptor, and
    its resolved path must stay under ``dest``. On a refusal, what extract wrote is removed."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    dest_real = os.path.realpath(dest)
    checker = _Checker(max_bytes, max_files)
    made: set[str] = set()  # directories made by this extract ("" is dest)
    top_level: list[str] = []
    written: list[str] = []
    nofollow = getattr(os, "O_NOFOLLOW", 0)
    root_fd = os.open(dest_real, os.O_RDONLY | os.O_DIRECTORY)

    def open_parent(parts: list[str], shown: str) -> int:
        """An fd of the directory holding the member, making missing directories on the way."""
        fd = os.dup(root_fd)
        try:
            for i, part in enumerate(parts):
                rel = "/".join(parts[: i + 1])
                if rel not in made:
                    try:
                        os.mkdir(part, 0o755, dir_fd=fd)
                    except FileExistsError:
                        raise UnsafeSnapshot(
                            f"snapshot member {shown}: {rel!r} already exists in {dest} and "
                            f"was not made by this extract (a planted file or symlink?); "
                            f"extract into an empty folder."
                        ) from None
                    made.add(rel)
                    if i == 0:
                        top_level.append(part)
                child = _open_dir(part, fd)
                os.close(fd)
                fd = child
            return fd
        except BaseException:
            os.close(fd)
            raise

    try:
        with _members(src, _tar_budget(max_bytes, max_files)) as members:
            for m, tf in members:
                is_file = checker.check(m)
                shown = repr(m.name)
                parts = m.name.split("/")
                if not is_file:
                    os.close(open_parent(parts, shown))
                    continue
                parent_fd = open_parent(parts[:-1], shown)
                try:
                    mode = 0o755 if m.mode & 0o111 else 0o644
                    try:
                        fd = os.open(
                            parts[-1], os.O_WRONLY | os.O_CREAT | os.O_EXCL | nofollow, mode, dir_fd=parent_fd
                        )
                    except FileExistsError:
                        raise UnsafeSnapshot(
                            f"snapshot member {shown} already exists in {dest} (a planted file "
                            f"or symlink?); extract into an empty folder."
                        ) from None
                    if len(parts) == 1:
                        top_level.append(parts[0])
                    with os.fdopen(fd, "wb") as out:
                        f = tf.extractfile(m)
                        if f is not None:
                            shutil.copyfileobj(f, out, _CHUNK)
                        os.fchmod(out.fileno(), mode)
                finally:
                    os.close(parent_fd)
                target = os.path.realpath(os.path.join(dest_real, *parts))
                if os.path.commonpath([dest_real, target]) != dest_real:  # pragma: no cover - belt and braces
                    raise UnsafeSnapshot(f"snapshot member {shown} resolves to {target}, outside {dest}.")
                written.append(m.name)
    except BaseException as exc:
        for name in reversed(top_level):
            path = os.path.join(dest_real, name)
            try:
                if os.path.isdir(path) and not os.path.islink(path):
                    shutil.rmtree(path)
                else:
                    os.unlink(path)
            except OSError:
                pass
        if isinstance(exc, OSError):
            raise SnapshotError(f"the snapshot could not be unpacked into {dest} ({exc}).") from exc
        raise
    finally:
        os.close(root_fd)
    return written


# ---------------------------------------------------------------------------------------------
# entry points (docs/code-runs.md, "Entry")

ENTRY_KINDS = ("module", "cli", "command")
_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
_CLASS_SPEC = re.compile(rf"^(?P<file>[^:]+\.py):(?P<name>{_IDENT}(?:\.{_IDENT})*)$")
_SUBCOMMAND = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")
MAX_COMMAND_ARGS = 1000
MAX_ARG_CHARS = 4096


class EntryError(SnapshotError):
    """A malformed entry point, or one naming a file the snapshot lacks; ``field`` names the key."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


def entry_key(entry: dict) -> str:
    """sha256 of the entry's canonical JSON (keys sorted, no spaces): what a code schema is keyed by."""
    canonical = json.dumps(entry, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _snapshot_file(value: Any, field_name: str, paths: set[str] | None, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise EntryError(f"{field_name} must be {what}.", field_name)
    if _check_name(value) is not None:
        raise EntryError(
            f"{field_name} {value!r} must be a relative path inside the snapshot (no '..', no "
            f"leading '/', '/' between folders).",
            field_name,
        )
    if paths is not None and value not in paths:
        raise EntryError(
            f"{field_name}: the snapshot has no file {value!r}; give a path relative to the "
            f"snapshot's root (its file list is GET /api/v1/snapshots/{{id}}).",
            field_name,
        )
    return value


def _class_spec(value: Any, field_name: str, paths: set[str] | None) -> str:
    example = "'pkg/models.py:LitClassifier'"
    if not isinstance(value, str) or not _CLASS_SPEC.match(value):
        raise EntryError(
            f"{field_name} must be FILE.py:ClassName, e.g. {example}, not {value!r}.", field_name
        )
    _snapshot_file(value.rsplit(":", 1)[0], field_name, paths, "a .py file of the snapshot")
    return value


def validate_entry(entry: Any, paths: set[str] | list[str] | None = None) -> dict:
    """The entry point in its canonical form, or :class:`EntryError` naming the bad key
    (``kind``, ``model``, ``data``, ``script``, ``subcommand``, ``command``). With ``paths`` (the
    snapshot's files), the files the entry names must be among them.

    - ``{"kind": "module", "model": "pkg/models.py:LitClassifier", "data": "pkg/data.py:MNISTData" | None}``
    - ``{"kind": "cli", "script": "train.py", "subcommand": "fit"}``
    - ``{"kind": "command", "command": ["python", "train.py"]}``"""
    known = set(paths) if paths is not None else None
    if not isinstance(entry, dict):
        raise EntryError("entry must be an object with a kind: module, cli or command.", "kind")
    kind = entry.get("kind")
    if kind not in ENTRY_KINDS:
        raise EntryError(f"entry kind must be one of {', '.join(ENTRY_KINDS)}, not {kind!r}.", "kind")
    allowed = {
        "module": {"kind", "model", "data"},
        "cli": {"kind", "script", "subcommand"},
        "command": {"kind", "command"},
    }[kind]
    extra = sorted(set(entry) - allowed)
    if extra:
        raise EntryError(
            f"a {kind} entry has no key {extra[0]!r}; it takes {', '.join(sorted(allowed))}.", str(extra[0])
        )
    if kind == "module":
        if "model" not in entry:
            raise EntryError("a module entry needs model: FILE.py:LightningModuleClass.", "model")
        model = _class_spec(entry["model"], "model", known)
        data = entry.get("data")
        return {
            "kind": "module",
            "model": model,
            "data": None if data is None else _class_spec(data, "data", known),
        }
    if kind == "cli":
        if "script" not in entry:
            raise EntryError("a cli entry needs script: the .py file that runs LightningCLI.", "script")
        script = _snapshot_file(
            entry["script"], "script", known, "the snapshot's .py file that runs LightningCLI"
        )
        if not script.endswith(".py"):
            raise EntryError(f"script {script!r} must be a .py file.", "script")
        subcommand = entry.get("subcommand", "fit")
        if not isinstance(subcommand, str) or not _SUBCOMMAND.match(subcommand):
            raise EntryError(
                f"subcommand must be a LightningCLI subcommand such as 'fit', not {subcommand!r}.",
                "subcommand",
            )
        return {"kind": "cli", "script": script, "subcommand": subcommand}
    command = entry.get("command")
    if (
        not isinstance(command, list)
        or not command
        or len(command) > MAX_COMMAND_ARGS
        or not all(isinstance(a, str) for a in command)
    ):
        raise EntryError(
            f"command must be a non-empty list of at most {MAX_COMMAND_ARGS} strings, e.g. "
            f"['python', 'train.py'].",
            "command",
        )
    for arg in command:
        if "\0" in arg or len(arg) > MAX_ARG_CHARS:
            raise EntryError(
                f"command arguments may not hold NUL characters or be longer than {MAX_ARG_CHARS} "
                f"characters.",
                "command",
            )
    if not command[0].strip():
        raise EntryError("command must start with a program, e.g. 'python'.", "command")
    return {"kind": "command", "command": list(command)}


def command_argv(command: list[str], params: dict) -> list[str]:
    """A command entry's argv: ``command`` then each option of ``params`` in order, ``[k, v]``
    (``[k]`` for true, nothing for false or None)."""
    argv = list(command)
    for key, value in params.items():
        if value is True:
            argv.append(str(key))
        elif value is False or value is None:
            continue
        else:
            argv.extend([str(key), value if isinstance(value, str) else json.dumps(value)])
    return argv
