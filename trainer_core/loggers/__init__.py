"""Loggers: ``Logger`` base, ``CSVLogger``, ``TensorBoardLogger`` (optional tensorboard), ``RunyardLogger``."""

from __future__ import annotations

from typing import Any

from trainer_core.loggers.csv_logs import CSVLogger
from trainer_core.loggers.logger import DummyLogger, Logger
from trainer_core.loggers.tensorboard import TensorBoardLogger


def __getattr__(name: str) -> Any:
    # RunyardLogger pulls in threading/urllib machinery; import it only when asked for
    if name == "RunyardLogger":
        from trainer_core.loggers.runyard import RunyardLogger

        return RunyardLogger
    raise AttributeError(f"module 'trainer_core.loggers' has no attribute {name!r}")


__all__ = ["CSVLogger", "DummyLogger", "Logger", "RunyardLogger", "TensorBoardLogger"]
