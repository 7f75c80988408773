"""Small tmpfs mounts for full-disk and read-only tests (root only; see need_service).

``mounted_tmpfs(path, size)`` mounts a tmpfs of ``size`` on ``path`` and always unmounts it;
``fill(folder)`` writes a file until the file system refuses more (ENOSPC) and returns it;
``remount(path, "ro" | "rw")`` switches a mount between read-only and read-write.
"""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.conftest import need_service


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=30)


@contextmanager
def mounted_tmpfs(path: Path, size: str = "4m") -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    try:
        done = _run("mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path))
        ok, why = done.returncode == 0, (done.stderr or done.stdout).strip()
    except (OSError, subprocess.SubprocessError) as exc:
        ok, why = False, str(exc)
    need_service("a tmpfs mount", ok, f"`mount -t tmpfs` failed ({why}); these tests need root")
    try:
        yield path
    finally:
        if _run("umount", str(path)).returncode != 0:
            _run("umount", "-l", str(path))  # still busy (a file open somewhere): detach it


def remount(path: Path, mode: str) -> None:
    done = _run("mount", "-o", f"remount,{mode}", str(path))
    assert done.returncode == 0, done.stderr


def fill(folder: Path, name: str = "filler.bin") -> Path:
    """A file that takes every free block of ``folder``'s file system (written until ENOSPC)."""
    path = folder / name
    with open(path, "ab", buffering=0) as f:
        for chunk in (1 << 20, 1 << 16, 4096, 512, 1):
            block = b"\0" * chunk
            while True:
                try:
                    f.write(block)
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC, exc
                    break
    st = os.statvfs(folder)
    assert st.f_bavail == 0, f"{folder} still has {st.f_bavail} blocks free"
    return path
