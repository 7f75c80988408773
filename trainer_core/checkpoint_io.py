"""Checkpoint files: atomic writes, and loading that never unpickles arbitrary objects."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch


def save_checkpoint(checkpoint: dict[str, Any], path: str | os.PathLike) -> None:
    """Write ``checkpoint`` to a temporary file beside ``path`` and rename it into place.

    A crash mid-write leaves at most a stray temp file, never a truncated file under the real name.
    No fsync: a killed process cannot lose page-cache data, and an fsync per checkpoint costs tens of
    milliseconds on slow disks (the rename-over pattern is also what ext4's auto_da_alloc protects).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(checkpoint, f)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def load_checkpoint(path: str | os.PathLike, map_location: Any = None) -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True``: only tensors and plain Python values."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"Checkpoint file not found: {os.fspath(path)!r}.")
    return torch.load(path, map_location=map_location, weights_only=True)


def remove_checkpoint(path: str | os.PathLike) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass
