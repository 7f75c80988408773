"""Helpers shared by the loggers that upload checkpoints (MLflow, W&B)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _scan_checkpoints(checkpoint_callback: Any, logged_model_time: dict[str, float]) -> list[tuple[float, str, Any, str]]:
    """``(mtime, path, score, tag)`` of the callback's checkpoints not logged yet (or changed since), oldest first."""
    checkpoints: dict[str, tuple[Any, str]] = {}
    if hasattr(checkpoint_callback, "last_model_path") and hasattr(checkpoint_callback, "current_score"):
        checkpoints[checkpoint_callback.last_model_path] = (checkpoint_callback.current_score, "latest")
    if hasattr(checkpoint_callback, "best_model_path") and hasattr(checkpoint_callback, "best_model_score"):
        checkpoints[checkpoint_callback.best_model_path] = (checkpoint_callback.best_model_score, "best")
    if hasattr(checkpoint_callback, "best_k_models"):
        for key, value in checkpoint_callback.best_k_models.items():
            checkpoints[key] = (value, "best_k")
    found = sorted(
        (Path(p).stat().st_mtime, p, s, tag) for p, (s, tag) in checkpoints.items() if p and Path(p).is_file()
    )
    return [c for c in found if c[1] not in logged_model_time or logged_model_time[c[1]] < c[0]]
