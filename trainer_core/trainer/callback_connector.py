"""The Trainer's loggers and callbacks: the defaults Lightning adds, the conflicts it refuses, and the order."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterable, Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from trainer_core.callbacks.callback import Callback
from trainer_core.trainer.config import _bad
from trainer_core.utilities.exceptions import MisconfigurationException
from trainer_core.utilities.rank_zero import rank_zero_info

if TYPE_CHECKING:
    from trainer_core.loggers.logger import Logger


def _auto_logger_enabled() -> bool:
    """``RUNYARD_AUTO_LOGGER=1`` with ``RUNYARD_RUN_ID`` set: the worker runs this script as a run's code
    (checked here, so that RunyardLogger is imported only then)."""
    return os.environ.get("RUNYARD_AUTO_LOGGER", "").strip().lower() in ("1", "true", "yes", "on") and bool(
        os.environ.get("RUNYARD_RUN_ID", "").strip()
    )


def default_logger(root_dir: str) -> Logger:
    # Lightning's default: TensorBoard when it can be imported, else CSV. Our TensorBoardLogger writes through
    # torch.utils.tensorboard, which needs the `tensorboard` package (tensorboardX alone is not enough).
    try:
        has_tensorboard = importlib.util.find_spec("tensorboard") is not None
    except (ValueError, ImportError):  # e.g. sys.modules["tensorboard"] is None
        has_tensorboard = False
    if has_tensorboard:
        from trainer_core.loggers.tensorboard import TensorBoardLogger

        return TensorBoardLogger(save_dir=root_dir, name="lightning_logs")
    from trainer_core.loggers.csv_logs import CSVLogger

    return CSVLogger(save_dir=root_dir, name="lightning_logs")


def configure_loggers(logger: Any, fast_dev_run: int, root_dir: str) -> list[Any]:
    """``Trainer(logger=...)`` as the list ``trainer.loggers``."""
    loggers: list[Any] | None
    if logger is False:
        loggers = []
    elif logger is None or logger is True:
        loggers = None  # the default logger, made below unless fast_dev_run replaces it
    elif isinstance(logger, Iterable) and not isinstance(logger, (str, bytes)):
        loggers = list(logger)
    else:
        loggers = [logger]
    from trainer_core.loggers.logger import Logger

    for lg in loggers or ():
        if not isinstance(lg, Logger):
            raise _bad("logger", logger, "None, True, False, a Logger or a list of Loggers")
    if loggers != [] and not fast_dev_run and _auto_logger_enabled():
        # a worker's code run (RUNYARD_AUTO_LOGGER=1, RUNYARD_RUN_ID): the process's one attached
        # RunyardLogger instead of the default, or next to the loggers given
        from trainer_core.loggers.runyard import RunyardLogger

        if loggers is None:
            loggers = [RunyardLogger.auto()]
        elif not any(isinstance(lg, RunyardLogger) for lg in loggers):
            loggers.append(RunyardLogger.auto())
    if fast_dev_run and loggers != []:
        from trainer_core.loggers.logger import DummyLogger

        # as Lightning: one logger that records nothing, so `trainer.logger` and `self.logger.experiment`
        # keep working in user code; `log_dir` falls back to `default_root_dir`
        return [DummyLogger()]
    if loggers is None:
        return [default_logger(root_dir)]
    return loggers


def reorder(callbacks: list[Callback]) -> list[Callback]:
    """Lightning's ``_reorder_callbacks``: the tuner callbacks (``BatchSizeFinder``, ``LearningRateFinder``) first,
    ``Checkpoint`` callbacks (``ModelCheckpoint``, ``OnExceptionCheckpoint`` ...) last, so they see what the others
    did; each group keeps its order."""
    from trainer_core.callbacks.batch_size_finder import BatchSizeFinder
    from trainer_core.callbacks.checkpoint import Checkpoint
    from trainer_core.callbacks.lr_finder import LearningRateFinder

    tuners: list[Callback] = []
    others: list[Callback] = []
    ckpts: list[Callback] = []
    for cb in callbacks:
        if isinstance(cb, (BatchSizeFinder, LearningRateFinder)):
            tuners.append(cb)
        elif isinstance(cb, Checkpoint):
            ckpts.append(cb)
        else:
            others.append(cb)
    return tuners + others + ckpts


def configure_timer(callbacks: list[Callback], max_time: float | timedelta | None) -> None:
    """``Trainer(max_time=...)``: a ``Timer(duration=max_time, interval="step")`` appended to ``callbacks``, unless
    the user gave a ``Timer`` (Lightning's ``_configure_timer_callback``: then max_time is ignored)."""
    if max_time is None:
        return
    from trainer_core.callbacks.timer import Timer

    if any(isinstance(cb, Timer) for cb in callbacks):
        rank_zero_info("Ignoring `Trainer(max_time=...)`, callbacks list already contains a Timer.")
        return
    duration = max_time if isinstance(max_time, timedelta) else timedelta(seconds=max_time)
    callbacks.append(Timer(duration=duration, interval="step"))


def configure_callbacks(
    callbacks: Any,
    enable_checkpointing: bool,
    enable_progress_bar: bool | None,
    enable_model_summary: bool,
    max_time: float | timedelta | None = None,
) -> list[Callback]:
    """``Trainer(callbacks=...)`` with Lightning's default checkpoint, timer (``max_time``, parsed), progress bar
    and summary callbacks."""
    if callbacks is None:
        callbacks = []
    elif isinstance(callbacks, Callback):
        callbacks = [callbacks]
    elif isinstance(callbacks, Iterable) and not isinstance(callbacks, (str, bytes, Mapping)):
        callbacks = list(callbacks)
    else:
        raise _bad("callbacks", callbacks, "None, a Callback or a list of Callbacks")
    for cb in callbacks:
        if not isinstance(cb, Callback):
            raise TypeError(f"Trainer(callbacks=...) got {type(cb).__name__}; every callback must be a Callback.")
    from trainer_core.callbacks.checkpoint import Checkpoint

    # Lightning: any Checkpoint (OnExceptionCheckpoint too) counts; its message names ModelCheckpoint either way
    has_ckpt = any(isinstance(cb, Checkpoint) for cb in callbacks)
    if not enable_checkpointing and has_ckpt:
        raise MisconfigurationException(
            "Trainer was configured with `enable_checkpointing=False` but found `ModelCheckpoint` in callbacks list."
        )
    if enable_checkpointing and not has_ckpt:
        from trainer_core.callbacks.model_checkpoint import ModelCheckpoint

        callbacks.append(ModelCheckpoint())
    configure_timer(callbacks, max_time)
    from trainer_core.callbacks.progress import ProgressBar

    if enable_progress_bar is None or enable_progress_bar:
        from trainer_core.callbacks.progress import TQDMProgressBar

        if not any(isinstance(cb, ProgressBar) for cb in callbacks):
            callbacks.append(TQDMProgressBar())
    else:
        bars = [cb for cb in callbacks if isinstance(cb, ProgressBar)]
        if bars:
            raise MisconfigurationException(
                f"Trainer was configured with `enable_progress_bar=False` but found `{type(bars[0]).__name__}` "
                "in callbacks list."
            )
    if enable_model_summary:
        from trainer_core.callbacks.model_summary import ModelSummary

        if not any(isinstance(cb, ModelSummary) for cb in callbacks):
            callbacks.append(ModelSummary())
    return reorder(callbacks)


def attach_model_callbacks(callbacks: list[Callback], extra: Any) -> list[Callback]:
    """``configure_callbacks()``'s callbacks replace the Trainer's of the same type or of a base class of theirs
    (Lightning's ``_attach_model_callbacks``; a plain ``Callback`` is never replaced)."""
    if not extra:
        return callbacks
    if isinstance(extra, Callback):
        extra = [extra]
    extra = list(extra)
    trainer_types = {type(cb) for cb in callbacks} - {Callback}
    override: set[type] = set()
    for model_type in {type(cb) for cb in extra}:
        for trainer_type in trainer_types:
            if issubclass(model_type, trainer_type):
                override.add(trainer_type)
                break
    if override:
        rank_zero_info(
            "The following callbacks returned in `LightningModule.configure_callbacks` will override existing"
            f" callbacks passed to Trainer: {', '.join(sorted(t.__name__ for t in override))}"
        )
    return reorder([cb for cb in callbacks if type(cb) not in override] + extra)
