"""Checkpoint files: atomic writes, and loading that never unpickles arbitrary objects.

A checkpoint that does not fit (a full disk, a disk quota, a read-only file system) raises
``OSError(errno.ENOSPC, "no space left on device writing <path>")`` (``EDQUOT``, ``EROFS``: the
same with "disk quota exceeded" / "read-only file system"), never torch's opaque
"PytorchStreamWriter failed writing file"; the temp file is removed and the files already there
stay as they were.
"""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path
from typing import IO, Any, cast

import torch

#: the errors that mean "the storage cannot take this file", with the sentence each becomes
STORAGE_ERRORS = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded",
                  errno.EROFS: "read-only file system"}


def storage_error(exc: OSError, path: str | os.PathLike[str]) -> OSError:
    """``OSError(exc.errno, "no space left on device writing <path>")`` (or the quota / read-only
    sentence) for a full or read-only disk; ``exc`` itself for any other error."""
    if exc.errno not in STORAGE_ERRORS:
        return exc
    return OSError(exc.errno, f"{STORAGE_ERRORS[exc.errno]} writing {os.fspath(path)}")


class _RecordingWriter:
    """The file object torch.save writes to: it keeps the first OSError a write or flush raised.

    torch's zip writer turns a failed write into an opaque RuntimeError ("PytorchStreamWriter
    failed writing file data/0", "unexpected pos ..."); the recorded error says what happened."""

    def __init__(self, f: Any) -> None:
        self._f = f
        self.error: OSError | None = None

    def write(self, data: Any) -> int:
        try:
            return int(self._f.write(data))
        except OSError as exc:
            self.error = self.error or exc
            raise

    def flush(self) -> None:
        try:
            self._f.flush()
        except OSError as exc:
            self.error = self.error or exc
            raise


def _temp_beside(path: Path) -> tuple[int, str]:
    """A new temp file in ``path``'s folder (made if needed): ``(fd, name)``."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        if exc.errno in STORAGE_ERRORS:
            raise storage_error(exc, path) from exc
        raise


def save_checkpoint(checkpoint: dict[str, Any], path: str | os.PathLike[str]) -> None:
    """Write ``checkpoint`` to a temporary file beside ``path`` and rename it into place.

    A crash mid-write leaves at most a stray temp file, never a truncated file under the real name.
    No fsync: a killed process cannot lose page-cache data, and an fsync per checkpoint costs tens of
    milliseconds on slow disks (the rename-over pattern is also what ext4's auto_da_alloc protects).

    A full or read-only disk raises ``OSError(errno.ENOSPC, "no space left on device writing
    <path>")`` (``EDQUOT``: "disk quota exceeded ...", ``EROFS``: "read-only file system ..."); the
    temp file is removed and the files already there (earlier checkpoints, an older ``path``) stay
    as they were.
    """
    path = Path(path)
    fd, tmp = _temp_beside(path)
    writer = None
    try:
        with os.fdopen(fd, "wb") as f:
            writer = _RecordingWriter(f)
            torch.save(checkpoint, cast("IO[bytes]", writer))  # a file-like writer: all torch.save uses
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        recorded = writer.error if writer is not None else None
        if recorded is None and isinstance(exc, OSError):
            recorded = exc  # e.g. the close's final flush, or os.replace
        if recorded is not None and recorded.errno in STORAGE_ERRORS:
            raise storage_error(recorded, path) from recorded
        raise


def copy_checkpoint(src: str | os.PathLike[str], path: str | os.PathLike[str]) -> None:
    """Copy the checkpoint file ``src`` to ``path`` atomically (a temp file beside ``path``, renamed
    into place); a full or read-only disk raises as :func:`save_checkpoint` does."""
    import shutil

    path = Path(path)
    fd, tmp = _temp_beside(path)
    try:
        with open(src, "rb") as source, os.fdopen(fd, "wb") as out:
            shutil.copyfileobj(source, out, 1024 * 1024)
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(exc, OSError) and exc.errno in STORAGE_ERRORS:
            raise storage_error(exc, path) from exc
        raise


def load_checkpoint(path: str | os.PathLike[str], map_location: Any = None) -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True``: only tensors and plain Python values."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"Checkpoint file not found: {os.fspath(path)!r}.")
    return cast("dict[str, Any]", torch.load(path, map_location=map_location, weights_only=True))


def remove_checkpoint(path: str | os.PathLike[str]) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass
