"""The requirements of a code run: a virtual environment per ``requirements.txt``, layered on the
worker's own, cached under ``RUNYARD_HOME/envs`` and reused by every run with the same requirements.

- The env lives at ``RUNYARD_HOME/envs/<key>``, ``key`` the first 16 hex digits of the sha256 of
  the requirements file, the Python version and the worker's prefix (another worker install, or
  another Python, gets an env of its own).
- It is made with ``python -m venv --without-pip`` and gets a ``runyard-worker.pth`` that adds the
  worker's site-packages (through ``site.addsitedir``, so the worker's own ``.pth`` files, editable
  installs among them, work too) *after* the env's own: torch and everything else the worker has
  are seen (pip says "already satisfied"), not installed again, and what the requirements install
  comes first.
- pip is the worker's: ``python -m pip --python ENV/bin/python install -r requirements.txt``, run
  in the snapshot's folder (relative paths and ``--find-links`` in the file work), with
  ``RUNYARD_PIP_ARGS`` (shell-split) added. pip never uninstalls the worker's packages (they are
  outside the env); it installs another version into the env when the requirements ask for one.
- A file lock (``<key>.lock``) serialises the workers of a host building the same env; ``.ready``
  marks a finished one. A failed build is removed and raises :class:`EnvBuildFailed` with pip's
  last output lines.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shlex
import shutil
import site
import subprocess
import sys
import sysconfig
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

REQUIREMENTS = "requirements.txt"
READY = ".ready"
PTH_NAME = "runyard-worker.pth"
TAIL_LINES = 30


class EnvBuildFailed(RuntimeError):
    """The requirements could not be installed; the message holds pip's last lines."""


@dataclass
class CodeEnv:
    path: Path
    key: str
    reused: bool

    @property
    def bin(self) -> Path:
        return self.path / "bin"

    @property
    def python(self) -> Path:
        return self.bin / "python"

    def site_packages(self) -> Path:
        return env_site_packages(self.path)


def env_key(requirements: bytes) -> str:
    """``sha256(requirements + python version + worker prefix)[:16]``."""
    digest = hashlib.sha256()
    digest.update(requirements)
    digest.update(b"\0" + sys.version.encode())
    digest.update(b"\0" + os.path.realpath(sys.prefix).encode())
    return digest.hexdigest()[:16]


def envs_dir(home: str | os.PathLike[str]) -> Path:
    return Path(home) / "envs"


def env_site_packages(env: Path) -> Path:
    """The env's purelib folder (``lib/pythonX.Y/site-packages`` on POSIX)."""
    rel = os.path.relpath(sysconfig.get_path("purelib", vars={"base": "/_b", "platbase": "/_b"}), "/_b")
    return env / rel


def pip_args() -> list[str]:
    """``RUNYARD_PIP_ARGS`` (e.g. ``--index-url https://mirror/simple --no-cache-dir``), shell-split."""
    return shlex.split(os.environ.get("RUNYARD_PIP_ARGS", ""))


def _worker_site_dirs() -> list[str]:
    dirs = [p for p in site.getsitepackages() if os.path.isdir(p)]
    user = site.getusersitepackages() if site.ENABLE_USER_SITE else None
    if user and os.path.isdir(user):
        dirs.append(user)
    return dirs


def _pth_text() -> str:
    lines = [f"import site; site.addsitedir({d!r})" for d in _worker_site_dirs()]
    return (
        "# the Runyard worker's own packages (torch, trainer_core, ...), after this env's\n"
        + "\n".join(lines)
        + "\n"
    )


Output = Callable[[str], None]
ShouldStop = Callable[[], bool]


def _run_logged(
    argv: list[str], cwd: Path, out: Output, should_stop: ShouldStop | None
) -> tuple[int, list[str]]:
    """Run ``argv``, every output line to ``out``; ``(exit code, last lines)``. ``should_stop``
    (polled) terminates it (the code is then negative)."""
    import collections

    from worker.child import Pipe, spawn, supervise_child

    tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
    env = {**os.environ, "PIP_NO_INPUT": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PYTHONUNBUFFERED": "1"}
    proc = spawn(argv, cwd, env, stderr=subprocess.STDOUT)
    assert proc.stdout is not None

    def nonblank(line: str) -> None:
        if line.strip():
            out(line)

    ended = supervise_child(
        proc, [Pipe(proc.stdout, nonblank, tail, "runyard-pip-output")], should_stop, kill_leftovers=False
    )
    return (ended.code if not ended.stopped else -abs(ended.code or 9)), list(tail)


class Stopped(RuntimeError):
    """The build was stopped (the run was cancelled or the worker shuts down)."""


def ensure_env(
    code_dir: Path, home: str | os.PathLike[str], *, out: Output = print, should_stop: ShouldStop | None = None
) -> CodeEnv | None:
    """The env for ``code_dir/requirements.txt`` (built now, or reused); ``None`` without one."""
    req = Path(code_dir) / REQUIREMENTS
    if not req.is_file():
        return None
    key = env_key(req.read_bytes())
    root = envs_dir(home)
    root.mkdir(parents=True, exist_ok=True)
    env = root / key
    with open(root / f"{key}.lock", "a+b") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if (env / READY).is_file():
                out(f"[runyard] requirements: reusing env {key}")
                return CodeEnv(env, key, reused=True)
            started = time.monotonic()
            shutil.rmtree(env, ignore_errors=True)  # a build that died half-way
            try:
                _build(env, code_dir, out, should_stop)
            except BaseException:
                shutil.rmtree(env, ignore_errors=True)
                raise
            (env / READY).write_text(f"{time.time():.0f}\n")
            out(f"[runyard] requirements: installed in {time.monotonic() - started:.1f} s (env {key})")
            return CodeEnv(env, key, reused=False)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _build(env: Path, code_dir: Path, out: Output, should_stop: ShouldStop | None) -> None:
    out(f"[runyard] requirements: building env {env.name} from {REQUIREMENTS}")
    made = subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(env)], capture_output=True, text=True, timeout=300
    )
    if made.returncode != 0:
        raise EnvBuildFailed(
            f"Could not create the requirements env {env}: {(made.stderr or made.stdout).strip()[-2000:]}"
        )
    site_dir = env_site_packages(env)
    site_dir.mkdir(parents=True, exist_ok=True)
    (site_dir / PTH_NAME).write_text(_pth_text())
    argv = [
        sys.executable,
        "-m",
        "pip",
        "--python",
        str(env / "bin" / "python"),
        "install",
        "--no-input",
        "--disable-pip-version-check",
        "-r",
        REQUIREMENTS,
        *pip_args(),
    ]
    out("[runyard] requirements: " + shlex.join(["pip", *argv[3:]]))
    code, tail = _run_logged(argv, Path(code_dir), out, should_stop)
    if code < 0 and should_stop is not None and should_stop():
        raise Stopped("the requirements install was stopped")
    if code != 0:
        last = "\n".join(tail[-TAIL_LINES:])
        raise EnvBuildFailed(
            f"Installing {REQUIREMENTS} failed (pip exited with code {code}). pip's last lines:\n{last}"
        )


def activate_in_process(env: CodeEnv) -> None:
    """Put the env's site-packages (and what its own ``.pth`` files add) in front of ``sys.path``
    (module runs import the user's code in the run's own process, which has the worker's
    packages on its path already)."""
    import importlib

    site_dir = str(env.site_packages())
    before = [p for p in sys.path if p != site_dir]
    sys.path[:] = [site_dir, *before]
    known = site._init_pathinfo()  # type: ignore[attr-defined]
    for name in sorted(os.listdir(site_dir)):
        if name.endswith(".pth") and name != PTH_NAME:
            site.addpackage(site_dir, name, known)
    added = [p for p in sys.path if p not in before and p != site_dir]
    sys.path[:] = [site_dir, *added, *before]
    importlib.invalidate_caches()
