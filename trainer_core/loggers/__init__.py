"""Loggers: ``Logger`` base, ``CSVLogger``, ``TensorBoardLogger`` (optional tensorboard), ``RunyardLogger``,
and ``MLFlowLogger`` / ``WandbLogger`` when mlflow / wandb are installed."""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

from trainer_core.loggers.csv_logs import CSVLogger
from trainer_core.loggers.logger import DummyLogger, Logger
from trainer_core.loggers.tensorboard import TensorBoardLogger

# imported on first use: RunyardLogger pulls in threading/urllib machinery, the others their client library
# (their modules raise ModuleNotFoundError naming the package to install when it is missing)
_LAZY = {
    "RunyardLogger": ("trainer_core.loggers.runyard", None),
    "MLFlowLogger": ("trainer_core.loggers.mlflow", "mlflow"),
    "WandbLogger": ("trainer_core.loggers.wandb", "wandb"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name][0]), name)
    raise AttributeError(f"module 'trainer_core.loggers' has no attribute {name!r}")


def _installed(package: str | None) -> bool:
    return package is None or importlib.util.find_spec(package) is not None


__all__ = [
    "CSVLogger",
    "DummyLogger",
    "Logger",
    "TensorBoardLogger",
    *(name for name, (_, package) in _LAZY.items() if _installed(package)),
]
