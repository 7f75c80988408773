"""Callbacks: ``Callback`` base, ``ModelCheckpoint``, ``EarlyStopping``, progress bars, summary, LR monitor."""

from __future__ import annotations

import importlib
from typing import Any

from trainer_core.callbacks.callback import Callback
from trainer_core.callbacks.early_stopping import EarlyStopping
from trainer_core.callbacks.model_checkpoint import ModelCheckpoint

_LAZY = {
    "ProgressBar": "trainer_core.callbacks.progress",
    "TQDMProgressBar": "trainer_core.callbacks.progress",
    "ModelSummary": "trainer_core.callbacks.model_summary",
    "LearningRateMonitor": "trainer_core.callbacks.lr_monitor",
}

__all__ = ["Callback", "EarlyStopping", "ModelCheckpoint", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'trainer_core.callbacks' has no attribute {name!r}")
