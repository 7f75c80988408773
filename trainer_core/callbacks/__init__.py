"""Callbacks: ``Callback`` base, ``ModelCheckpoint``, ``EarlyStopping``, progress bars, summary, LR monitor, and
Lightning's other built-in callbacks (imported on first use)."""

from __future__ import annotations

import importlib
from typing import Any

from trainer_core.callbacks.callback import Callback
from trainer_core.callbacks.checkpoint import Checkpoint
from trainer_core.callbacks.early_stopping import EarlyStopping
from trainer_core.callbacks.model_checkpoint import ModelCheckpoint

_LAZY = {
    "ProgressBar": "trainer_core.callbacks.progress",
    "TQDMProgressBar": "trainer_core.callbacks.progress",
    "ModelSummary": "trainer_core.callbacks.model_summary",
    "LearningRateMonitor": "trainer_core.callbacks.lr_monitor",
    "BasePredictionWriter": "trainer_core.callbacks.prediction_writer",
    "Timer": "trainer_core.callbacks.timer",
    "LambdaCallback": "trainer_core.callbacks.lambda_function",
    "GradientAccumulationScheduler": "trainer_core.callbacks.gradient_accumulation_scheduler",
    "StochasticWeightAveraging": "trainer_core.callbacks.stochastic_weight_avg",
    "BaseFinetuning": "trainer_core.callbacks.finetuning",
    "BackboneFinetuning": "trainer_core.callbacks.finetuning",
    "OnExceptionCheckpoint": "trainer_core.callbacks.on_exception_checkpoint",
    "LearningRateFinder": "trainer_core.callbacks.lr_finder",
    "BatchSizeFinder": "trainer_core.callbacks.batch_size_finder",
}

__all__ = ["Callback", "Checkpoint", "EarlyStopping", "ModelCheckpoint", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'trainer_core.callbacks' has no attribute {name!r}")
