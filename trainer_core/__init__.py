"""trainer_core: a Lightning-compatible training core. ``import trainer_core as L`` in place of ``lightning``."""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

from trainer_core.callbacks.callback import Callback
from trainer_core.core.datamodule import LightningDataModule
from trainer_core.core.module import LightningModule
from trainer_core.seed import seed_everything
from trainer_core.trainer.trainer import Trainer

_SUBMODULES = ("callbacks", "loggers", "cli", "summary", "core", "trainer", "checkpoint_io", "seed")

__all__ = ["Callback", "LightningDataModule", "LightningModule", "Trainer", "__version__", "seed_everything"]


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"trainer_core.{name}")
    raise AttributeError(f"module 'trainer_core' has no attribute {name!r}")
