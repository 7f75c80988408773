"""``Trainer``: validates its arguments, wires module, data, callbacks and loggers, and runs the loops."""

from __future__ import annotations

import difflib
import importlib.util
import logging
import os
import time
import warnings
from collections.abc import Iterable, Mapping
from datetime import timedelta
from typing import Any

import torch

from trainer_core.callbacks.callback import CALLBACK_HOOKS, Callback
from trainer_core.checkpoint_io import load_checkpoint, save_checkpoint
from trainer_core.core.datamodule import LightningDataModule
from trainer_core.core.hparams import plain_hparams
from trainer_core.core.module import LightningModule, move_data_to_device
from trainer_core.trainer.accelerator import select_device
from trainer_core.trainer.loops import _EvaluationLoop, _FitLoop, _PredictionLoop, limit_batches
from trainer_core.trainer.optim import LightningOptimizer, normalize_optimizers
from trainer_core.trainer.precision import make_precision, parse_precision
from trainer_core.trainer.results import ResultCollection
from trainer_core.trainer.states import RunningStage, TrainerFn, TrainerState, TrainerStatus

log = logging.getLogger(__name__)

# The Lightning checkpoint format these checkpoints follow (written as "pytorch-lightning_version").
LIGHTNING_FORMAT_VERSION = "2.5.0"

_TRAINER_ARGS = (
    "accelerator", "strategy", "devices", "num_nodes", "precision", "logger", "callbacks", "fast_dev_run",
    "max_epochs", "min_epochs", "max_steps", "min_steps", "max_time", "limit_train_batches",
    "limit_val_batches", "limit_test_batches", "limit_predict_batches", "overfit_batches",
    "val_check_interval", "check_val_every_n_epoch", "num_sanity_val_steps", "log_every_n_steps",
    "enable_checkpointing", "enable_progress_bar", "enable_model_summary", "accumulate_grad_batches",
    "gradient_clip_val", "gradient_clip_algorithm", "deterministic", "benchmark", "inference_mode",
    "use_distributed_sampler", "profiler", "detect_anomaly", "barebones", "plugins", "sync_batchnorm",
    "reload_dataloaders_every_n_epochs", "default_root_dir", "enable_autolog_hparams", "model_registry",
)


class _StageFlag:
    """``trainer.training`` and its siblings: True while ``state.stage`` is this stage; setting
    True enters the stage, setting False leaves it (only if it is the current one), as in Lightning."""

    def __init__(self, stage: RunningStage) -> None:
        self.stage = stage

    def __get__(self, trainer: Any, owner: type | None = None) -> Any:
        if trainer is None:
            return self
        return trainer.state.stage == self.stage

    def __set__(self, trainer: Any, value: bool) -> None:
        if value:
            trainer.state.stage = self.stage
        elif trainer.state.stage == self.stage:
            trainer.state.stage = None


class _SingleDeviceStrategy:
    def __init__(self, device: torch.device) -> None:
        self.root_device = device
        self.lightning_module: Any = None

    @property
    def is_global_zero(self) -> bool:
        return True


def _auto_logger_enabled() -> bool:
    """``RUNYARD_AUTO_LOGGER=1`` with ``RUNYARD_RUN_ID`` set: the worker runs this script as a run's code
    (checked here, so that RunyardLogger is imported only then)."""
    return os.environ.get("RUNYARD_AUTO_LOGGER", "").strip().lower() in ("1", "true", "yes", "on") and bool(
        os.environ.get("RUNYARD_RUN_ID", "").strip()
    )


def _bad(name: str, value: Any, allowed: str) -> ValueError:
    return ValueError(f"Trainer({name}={value!r}) is not valid. Allowed values: {allowed}.")


def _check_limit(name: str, value: Any) -> int | float:
    if value is None:
        return 1.0
    if isinstance(value, bool):
        raise _bad(name, value, "an int >= 0 (number of batches) or a float in [0.0, 1.0] (fraction)")
    if isinstance(value, int):
        if value < 0:
            raise _bad(name, value, "an int >= 0 (number of batches) or a float in [0.0, 1.0] (fraction)")
        return value
    if isinstance(value, float):
        if not 0.0 <= value <= 1.0:
            raise _bad(name, value, "an int >= 0 (number of batches) or a float in [0.0, 1.0] (fraction)")
        return value
    raise _bad(name, value, "an int >= 0 (number of batches) or a float in [0.0, 1.0] (fraction)")


def _parse_max_time(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, Mapping):
        try:
            return timedelta(**value).total_seconds()
        except TypeError as err:
            raise _bad("max_time", value, "'DD:HH:MM:SS', a datetime.timedelta, or a dict of timedelta arguments") from err
    if isinstance(value, str):
        parts = value.split(":")
        if len(parts) == 4 and all(p.strip().isdigit() for p in parts):
            d, h, m, s = (int(p) for p in parts)
            return timedelta(days=d, hours=h, minutes=m, seconds=s).total_seconds()
    raise _bad("max_time", value, "'DD:HH:MM:SS', a datetime.timedelta, or a dict of timedelta arguments")


def _is_overridden(name: str, obj: Any, base: type) -> bool:
    if obj is None:
        return False
    attr = getattr(type(obj), name, None)
    return attr is not None and attr is not getattr(base, name, None)


class Trainer:
    def __init__(
        self,
        *,
        accelerator: str = "auto",
        strategy: str = "auto",
        devices: Any = "auto",
        num_nodes: int = 1,
        precision: Any = None,
        logger: Any = None,
        callbacks: Any = None,
        fast_dev_run: int | bool = False,
        max_epochs: int | None = None,
        min_epochs: int | None = None,
        max_steps: int = -1,
        min_steps: int | None = None,
        max_time: Any = None,
        limit_train_batches: int | float | None = None,
        limit_val_batches: int | float | None = None,
        limit_test_batches: int | float | None = None,
        limit_predict_batches: int | float | None = None,
        overfit_batches: int | float = 0.0,
        val_check_interval: int | float | None = None,
        check_val_every_n_epoch: int | None = 1,
        num_sanity_val_steps: int | None = None,
        log_every_n_steps: int | None = None,
        enable_checkpointing: bool | None = None,
        enable_progress_bar: bool | None = None,
        enable_model_summary: bool | None = None,
        accumulate_grad_batches: int = 1,
        gradient_clip_val: int | float | None = None,
        gradient_clip_algorithm: str | None = None,
        deterministic: bool | str | None = None,
        benchmark: bool | None = None,
        inference_mode: bool = True,
        use_distributed_sampler: bool = True,
        profiler: Any = None,
        detect_anomaly: bool = False,
        barebones: bool = False,
        plugins: Any = None,
        sync_batchnorm: bool = False,
        reload_dataloaders_every_n_epochs: int = 0,
        default_root_dir: str | os.PathLike | None = None,
        enable_autolog_hparams: bool = True,
        model_registry: str | None = None,
        **unknown: Any,
    ) -> None:
        if unknown:
            name = next(iter(unknown))
            close = difflib.get_close_matches(name, _TRAINER_ARGS, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise TypeError(
                f"Trainer() got an unexpected argument {name!r}.{hint} Allowed arguments: {', '.join(_TRAINER_ARGS)}."
            )
        if strategy not in ("auto", "single_device"):
            raise _bad("strategy", strategy, "'auto' or 'single_device' (multi-device strategies are not supported yet)")
        if num_nodes != 1:
            raise _bad("num_nodes", num_nodes, "1 (multi-node training is not supported yet)")
        if overfit_batches not in (0, 0.0):
            raise _bad("overfit_batches", overfit_batches, "0 (overfit_batches is not supported yet)")
        if profiler not in (None, False):
            raise _bad("profiler", profiler, "None (profilers are not supported yet)")
        if plugins not in (None, [], ()):
            raise _bad("plugins", plugins, "None (plugins are not supported yet)")

        # fast_dev_run
        if isinstance(fast_dev_run, bool):
            fast_dev_run_n = 1 if fast_dev_run else 0
        elif isinstance(fast_dev_run, int) and fast_dev_run >= 0:
            fast_dev_run_n = fast_dev_run
        else:
            raise _bad("fast_dev_run", fast_dev_run, "a bool or an int >= 0")
        self.fast_dev_run: int | bool = fast_dev_run if fast_dev_run_n else False

        if max_epochs is not None and (not isinstance(max_epochs, int) or isinstance(max_epochs, bool) or max_epochs < -1):
            raise _bad("max_epochs", max_epochs, "None, -1 (no limit) or an int >= 0")
        if min_epochs is not None and (not isinstance(min_epochs, int) or min_epochs < 0):
            raise _bad("min_epochs", min_epochs, "None or an int >= 0")
        if not isinstance(max_steps, int) or max_steps < -1:
            raise _bad("max_steps", max_steps, "-1 (no limit) or an int >= 0")
        if min_steps is not None and (not isinstance(min_steps, int) or min_steps < 0):
            raise _bad("min_steps", min_steps, "None or an int >= 0")
        self.max_time = _parse_max_time(max_time)
        # Lightning: no epoch or step limit means 1000 epochs, with a warning when fit runs
        self._warn_max_epochs_default = max_epochs is None and max_steps == -1 and self.max_time is None
        if max_epochs is None:
            max_epochs = 1000 if max_steps == -1 and self.max_time is None else -1
        self.limit_train_batches = _check_limit("limit_train_batches", limit_train_batches)
        self.limit_val_batches = _check_limit("limit_val_batches", limit_val_batches)
        self.limit_test_batches = _check_limit("limit_test_batches", limit_test_batches)
        self.limit_predict_batches = _check_limit("limit_predict_batches", limit_predict_batches)

        if val_check_interval is None:
            val_check_interval = 1.0
        if isinstance(val_check_interval, bool) or not isinstance(val_check_interval, (int, float)) or (
            isinstance(val_check_interval, float) and not 0.0 < val_check_interval <= 1.0
        ) or (isinstance(val_check_interval, int) and val_check_interval < 1):
            raise _bad("val_check_interval", val_check_interval, "a float in (0.0, 1.0] or an int >= 1 (batches)")
        self.val_check_interval = val_check_interval
        if check_val_every_n_epoch is not None and (
            not isinstance(check_val_every_n_epoch, int) or check_val_every_n_epoch < 1
        ):
            raise _bad("check_val_every_n_epoch", check_val_every_n_epoch, "None or an int >= 1")
        self.check_val_every_n_epoch = check_val_every_n_epoch
        if num_sanity_val_steps is None:
            num_sanity_val_steps = 2
        if not isinstance(num_sanity_val_steps, int) or num_sanity_val_steps < -1:
            raise _bad("num_sanity_val_steps", num_sanity_val_steps, "-1 (all batches) or an int >= 0")
        if log_every_n_steps is None:
            log_every_n_steps = 50
        if not isinstance(log_every_n_steps, int) or log_every_n_steps < 1:
            raise _bad("log_every_n_steps", log_every_n_steps, "an int >= 1")
        self.log_every_n_steps = log_every_n_steps
        if not isinstance(accumulate_grad_batches, int) or accumulate_grad_batches < 1:
            raise _bad("accumulate_grad_batches", accumulate_grad_batches, "an int >= 1")
        self.accumulate_grad_batches = accumulate_grad_batches
        if gradient_clip_val is not None and (not isinstance(gradient_clip_val, (int, float)) or gradient_clip_val < 0):
            raise _bad("gradient_clip_val", gradient_clip_val, "None or a number >= 0")
        self.gradient_clip_val = gradient_clip_val
        if gradient_clip_algorithm is not None and gradient_clip_algorithm not in ("norm", "value"):
            raise _bad("gradient_clip_algorithm", gradient_clip_algorithm, "'norm' or 'value'")
        self.gradient_clip_algorithm = gradient_clip_algorithm or "norm"
        if deterministic not in (None, True, False, "warn"):
            raise _bad("deterministic", deterministic, "None, True, False or 'warn'")
        self.deterministic = deterministic
        if deterministic is not None and deterministic is not False:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True, warn_only=deterministic == "warn")
        elif deterministic is False:
            torch.use_deterministic_algorithms(False)
        if benchmark is not None:
            torch.backends.cudnn.benchmark = bool(benchmark)
        elif deterministic:
            torch.backends.cudnn.benchmark = False
        if not isinstance(reload_dataloaders_every_n_epochs, int) or reload_dataloaders_every_n_epochs < 0:
            raise _bad("reload_dataloaders_every_n_epochs", reload_dataloaders_every_n_epochs, "an int >= 0")
        self.reload_dataloaders_every_n_epochs = reload_dataloaders_every_n_epochs
        self.inference_mode = bool(inference_mode)
        self.detect_anomaly = bool(detect_anomaly)
        self.barebones = bool(barebones)
        self.enable_autolog_hparams = enable_autolog_hparams

        self.precision = parse_precision(precision)
        device = select_device(accelerator, devices)
        self.strategy = _SingleDeviceStrategy(device)
        self._precision = make_precision(self.precision, device)
        self.accelerator = "cuda" if device.type == "cuda" else device.type

        if default_root_dir is not None and not isinstance(default_root_dir, (str, os.PathLike)):
            raise _bad("default_root_dir", default_root_dir, "None, a str or an os.PathLike")
        self._default_root_dir = os.fspath(default_root_dir) if default_root_dir is not None else os.getcwd()
        for flag, value in (
            ("enable_checkpointing", enable_checkpointing), ("enable_progress_bar", enable_progress_bar),
            ("enable_model_summary", enable_model_summary),
        ):
            if value is not None and not isinstance(value, bool):
                raise _bad(flag, value, "None, True or False")

        if fast_dev_run_n:
            n = fast_dev_run_n
            self.limit_train_batches = self.limit_val_batches = n
            self.limit_test_batches = self.limit_predict_batches = n
            max_steps = n
            num_sanity_val_steps = 0
            max_epochs = 1
            self.val_check_interval = 1.0
            self.check_val_every_n_epoch = 1
            print(
                f"Running in `fast_dev_run` mode: will run the requested loop using {n} batch(es). "
                "Logging and checkpointing is suppressed."
            )
        self.num_sanity_val_steps = float("inf") if num_sanity_val_steps == -1 else num_sanity_val_steps
        self.max_steps = max_steps
        self.min_steps = min_steps

        # loggers
        if barebones:
            logger = False if logger is None else logger
            enable_checkpointing = False if enable_checkpointing is None else enable_checkpointing
            enable_progress_bar = False if enable_progress_bar is None else enable_progress_bar
            enable_model_summary = False if enable_model_summary is None else enable_model_summary
        loggers: list | None
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
        if loggers != [] and not fast_dev_run_n and _auto_logger_enabled():
            # a worker's code run (RUNYARD_AUTO_LOGGER=1, RUNYARD_RUN_ID): the process's one attached
            # RunyardLogger instead of the default, or next to the loggers given
            from trainer_core.loggers.runyard import RunyardLogger

            if loggers is None:
                loggers = [RunyardLogger.auto()]
            elif not any(isinstance(lg, RunyardLogger) for lg in loggers):
                loggers.append(RunyardLogger.auto())
        if fast_dev_run_n and loggers != []:
            from trainer_core.loggers.logger import DummyLogger

            # as Lightning: one logger that records nothing, so `trainer.logger` and `self.logger.experiment`
            # keep working in user code; `log_dir` falls back to `default_root_dir`
            loggers = [DummyLogger()]
        elif loggers is None:
            loggers = [self._default_logger()]
        self.loggers: list = loggers

        # callbacks
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
        self._enable_checkpointing = True if enable_checkpointing is None else bool(enable_checkpointing)
        from trainer_core.callbacks.model_checkpoint import ModelCheckpoint

        has_ckpt = any(isinstance(cb, ModelCheckpoint) for cb in callbacks)
        if not self._enable_checkpointing and has_ckpt:
            raise ValueError(
                "Trainer was configured with `enable_checkpointing=False` but found `ModelCheckpoint` in callbacks list."
            )
        if self._enable_checkpointing and not has_ckpt:
            callbacks.append(ModelCheckpoint())
        if enable_progress_bar is None or enable_progress_bar:
            from trainer_core.callbacks.progress import ProgressBar, TQDMProgressBar

            if not any(isinstance(cb, ProgressBar) for cb in callbacks):
                callbacks.append(TQDMProgressBar())
        else:
            from trainer_core.callbacks.progress import ProgressBar

            bars = [cb for cb in callbacks if isinstance(cb, ProgressBar)]
            if bars:
                raise ValueError(
                    f"Trainer was configured with `enable_progress_bar=False` but found `{type(bars[0]).__name__}` "
                    "in callbacks list."
                )
        self._enable_model_summary = True if enable_model_summary is None else bool(enable_model_summary)
        if self._enable_model_summary:
            from trainer_core.callbacks.model_summary import ModelSummary

            if not any(isinstance(cb, ModelSummary) for cb in callbacks):
                callbacks.append(ModelSummary())
        self.callbacks: list[Callback] = self._reorder(callbacks)

        # loops and state
        self.state = TrainerState()
        self.fit_loop = _FitLoop(self, min_epochs=min_epochs, max_epochs=max_epochs)
        self.validate_loop = _EvaluationLoop(self, "validate")
        self.test_loop = _EvaluationLoop(self, "test")
        self.predict_loop = _PredictionLoop(self)
        self.should_stop = False
        self.lightning_module: Any = None
        self.datamodule: Any = None
        self.optimizers: list = []
        self.lr_scheduler_configs: list = []
        self._lightning_optimizers: list = []
        self._callback_metrics: dict[str, Any] = {}
        self._logged_metrics: dict[str, Any] = {}
        self._pbar_metrics: dict[str, Any] = {}
        self._train_results = ResultCollection(training=True)
        self._results: ResultCollection | None = None
        self._hooks: dict[str, list] = {}
        self._hooks_monitoring: dict[str, list] = {}
        self._hooks_non_monitoring: dict[str, list] = {}
        self._batch_transfer: Any = None
        self._restarting = False
        self._deadline: float | None = None
        self._val_enabled = False
        self._val_enabled_this_epoch = False
        self.val_check_batch: float = float("inf")
        self.train_dataloader: Any = None
        self.val_dataloaders: Any = None
        self.test_dataloaders: Any = None
        self.predict_dataloaders: Any = None
        self._val_loaders: list = []
        self.num_training_batches: float = float("inf")
        self.num_val_batches: list = []
        self.num_test_batches: list = []
        self.num_predict_batches: list = []
        self.num_sanity_val_batches: list = []
        self.ckpt_path: str | None = None
        self._train_source: Any = None

    # ------------------------------------------------------------------ construction helpers
    def _default_logger(self) -> Any:
        # Lightning's default: TensorBoard when it can be imported, else CSV. Our TensorBoardLogger writes through
        # torch.utils.tensorboard, which needs the `tensorboard` package (tensorboardX alone is not enough).
        try:
            has_tensorboard = importlib.util.find_spec("tensorboard") is not None
        except (ValueError, ImportError):  # e.g. sys.modules["tensorboard"] is None
            has_tensorboard = False
        if has_tensorboard:
            from trainer_core.loggers.tensorboard import TensorBoardLogger

            return TensorBoardLogger(save_dir=self._default_root_dir, name="lightning_logs")
        from trainer_core.loggers.csv_logs import CSVLogger

        return CSVLogger(save_dir=self._default_root_dir, name="lightning_logs")

    @staticmethod
    def _reorder(callbacks: list) -> list:
        """Checkpoint callbacks run last, so they see what the other callbacks did (Lightning's order)."""
        from trainer_core.callbacks.model_checkpoint import ModelCheckpoint

        others = [cb for cb in callbacks if not isinstance(cb, ModelCheckpoint)]
        ckpts = [cb for cb in callbacks if isinstance(cb, ModelCheckpoint)]
        return others + ckpts

    # ------------------------------------------------------------------ public attributes
    @property
    def default_root_dir(self) -> str:
        return self._default_root_dir

    @property
    def logger(self) -> Any:
        return self.loggers[0] if self.loggers else None

    @logger.setter
    def logger(self, logger: Any) -> None:
        self.loggers = [] if logger is None else [logger]

    @property
    def log_dir(self) -> str:
        if self.loggers:
            first = self.loggers[0]
            dirpath = getattr(first, "log_dir", None) or getattr(first, "save_dir", None)
            if dirpath:
                return dirpath
        return self._default_root_dir

    @property
    def model(self) -> Any:
        return self.lightning_module

    @property
    def current_epoch(self) -> int:
        return self.fit_loop.epoch_progress.current.completed

    @property
    def global_step(self) -> int:
        return self.fit_loop.epoch_loop.global_step

    @property
    def max_epochs(self) -> int:
        return self.fit_loop.max_epochs

    @property
    def min_epochs(self) -> int | None:
        return self.fit_loop.min_epochs

    @property
    def is_global_zero(self) -> bool:
        return True

    @property
    def global_rank(self) -> int:
        return 0

    @property
    def local_rank(self) -> int:
        return 0

    @property
    def node_rank(self) -> int:
        return 0

    @property
    def world_size(self) -> int:
        return 1

    @property
    def num_devices(self) -> int:
        return 1

    @property
    def num_nodes(self) -> int:
        return 1

    @property
    def device_ids(self) -> list[int]:
        return [self.strategy.root_device.index or 0]

    @property
    def received_sigterm(self) -> bool:
        return False

    @property
    def interrupted(self) -> bool:
        return self.state.status == TrainerStatus.INTERRUPTED

    @property
    def enable_validation(self) -> bool:
        return self._val_enabled

    training = _StageFlag(RunningStage.TRAINING)
    validating = _StageFlag(RunningStage.VALIDATING)
    testing = _StageFlag(RunningStage.TESTING)
    predicting = _StageFlag(RunningStage.PREDICTING)
    sanity_checking = _StageFlag(RunningStage.SANITY_CHECKING)

    @property
    def evaluating(self) -> bool:
        return self.state.stage in (RunningStage.VALIDATING, RunningStage.TESTING)

    @property
    def checkpoint_callbacks(self) -> list:
        from trainer_core.callbacks.model_checkpoint import ModelCheckpoint

        return [cb for cb in self.callbacks if isinstance(cb, ModelCheckpoint)]

    @property
    def checkpoint_callback(self) -> Any:
        cbs = self.checkpoint_callbacks
        return cbs[0] if cbs else None

    @property
    def early_stopping_callbacks(self) -> list:
        from trainer_core.callbacks.early_stopping import EarlyStopping

        return [cb for cb in self.callbacks if isinstance(cb, EarlyStopping)]

    @property
    def early_stopping_callback(self) -> Any:
        cbs = self.early_stopping_callbacks
        return cbs[0] if cbs else None

    @property
    def progress_bar_callback(self) -> Any:
        from trainer_core.callbacks.progress import ProgressBar

        return next((cb for cb in self.callbacks if isinstance(cb, ProgressBar)), None)

    @property
    def estimated_stepping_batches(self) -> float:
        if self.num_training_batches == float("inf") or self.max_epochs == -1:
            return float(self.max_steps) if self.max_steps != -1 else float("inf")
        per_epoch = max(1, int(self.num_training_batches) // self.accumulate_grad_batches)
        total = per_epoch * self.max_epochs
        return min(total, self.max_steps) if self.max_steps != -1 else total

    # ------------------------------------------------------------------ metrics
    def _sync_train_metrics(self) -> None:
        r = self._train_results
        if not r.dirty:
            return
        cb, _, pbar = r.metrics(on_step=True)
        self._callback_metrics.update(cb)
        self._pbar_metrics.update(pbar)
        if r.epoch_end_reached:
            cb, _, pbar = r.metrics(on_step=False)
            self._callback_metrics.update(cb)
            self._pbar_metrics.update(pbar)
        r.dirty = False

    @property
    def callback_metrics(self) -> dict[str, Any]:
        self._sync_train_metrics()
        return self._callback_metrics

    @property
    def logged_metrics(self) -> dict[str, Any]:
        return self._logged_metrics

    @property
    def progress_bar_metrics(self) -> dict[str, float]:
        self._sync_train_metrics()
        return {k: (v.item() if isinstance(v, torch.Tensor) else v) for k, v in self._pbar_metrics.items()}

    def _send_to_loggers(self, metrics: dict[str, Any], step: int) -> None:
        if not self.loggers or not metrics:
            return
        scalars = {k: (v.item() if isinstance(v, torch.Tensor) else v) for k, v in metrics.items()}
        scalars.setdefault("epoch", self.current_epoch)
        for logger in self.loggers:
            logger.log_metrics(scalars, step)
            logger.save()

    def _log_train_step(self) -> None:
        r = self._train_results
        cb, log_metrics, pbar = r.metrics(on_step=True)
        self._callback_metrics.update(cb)
        self._pbar_metrics.update(pbar)
        r.dirty = False
        if log_metrics:
            self._logged_metrics.update(log_metrics)
            self._send_to_loggers(log_metrics, self.fit_loop.epoch_loop._batches_that_stepped)

    def _absorb_train_epoch(self) -> None:
        r = self._train_results
        r.dirty = True
        r.epoch_end_reached = True
        self._sync_train_metrics()
        _, log_metrics, _ = r.metrics(on_step=False)
        if log_metrics:
            self._logged_metrics.update(log_metrics)
            self._send_to_loggers(log_metrics, max(0, self.fit_loop.epoch_loop._batches_that_stepped - 1))

    def _new_eval_results(self) -> ResultCollection:
        results = ResultCollection(training=False)
        self._results = results
        return results

    def _log_eval_step(self, results: ResultCollection, log_step: int) -> int:
        results.dirty = False
        if not self.loggers:
            return log_step
        _, log_metrics, _ = results.metrics(on_step=True)
        if log_metrics:
            self._logged_metrics.update(log_metrics)
            self._send_to_loggers(log_metrics, log_step)
        return log_step + 1

    def _absorb_eval_epoch(self, results: ResultCollection) -> dict[str, Any]:
        cb, log_metrics, pbar = results.metrics(on_step=False)
        self._callback_metrics.update(cb)
        self._pbar_metrics.update(pbar)
        self._logged_metrics.update(log_metrics)
        self._send_to_loggers(log_metrics, self.fit_loop.epoch_loop._batches_that_stepped)
        return log_metrics

    # ------------------------------------------------------------------ hooks
    def _build_hooks(self) -> None:
        from trainer_core.callbacks.early_stopping import EarlyStopping
        from trainer_core.callbacks.model_checkpoint import ModelCheckpoint

        self._hooks = {}
        for name in CALLBACK_HOOKS:
            base = getattr(Callback, name)
            self._hooks[name] = [
                getattr(cb, name) for cb in self.callbacks if getattr(type(cb), name, base) is not base
            ]
        monitoring = (EarlyStopping, ModelCheckpoint)
        for name in ("on_train_epoch_end",):
            base = getattr(Callback, name)
            overriding = [cb for cb in self.callbacks if getattr(type(cb), name, base) is not base]
            self._hooks_monitoring[name] = [getattr(cb, name) for cb in overriding if isinstance(cb, monitoring)]
            self._hooks_non_monitoring[name] = [
                getattr(cb, name) for cb in overriding if not isinstance(cb, monitoring)
            ]

    def _module_hook(self, name: str) -> Any:
        """The module's bound hook when its class overrides ``LightningModule``'s default, else None."""
        module = self.lightning_module
        if _is_overridden(name, module, LightningModule):
            return getattr(module, name)
        return None

    def _call_hook(self, name: str, *args: Any, module_only: bool = False) -> None:
        if self._results is not None:
            self._results.fx = name
        module = self.lightning_module
        if not module_only:
            for hook in self._hooks.get(name, ()):
                hook(self, module, *args)
        fn = getattr(module, name, None)
        if fn is not None:
            fn(*args)

    def _make_batch_transfer(self) -> Any:
        module = self.lightning_module
        dm = self.datamodule
        device = self.strategy.root_device
        hooks = ("transfer_batch_to_device", "on_before_batch_transfer", "on_after_batch_transfer")
        custom_module = any(_is_overridden(h, module, LightningModule) for h in hooks)
        custom_dm = dm is not None and any(_is_overridden(h, dm, LightningDataModule) for h in hooks)
        if not custom_module and not custom_dm:
            if device.type == "cpu":
                return None  # batches from a DataLoader are already on the CPU

            def transfer(batch: Any, dataloader_idx: int) -> Any:
                return move_data_to_device(batch, device)

            return transfer

        def transfer_with_hooks(batch: Any, dataloader_idx: int) -> Any:
            if custom_dm:
                batch = dm.on_before_batch_transfer(batch, dataloader_idx)
            batch = module.on_before_batch_transfer(batch, dataloader_idx)
            if custom_dm and _is_overridden("transfer_batch_to_device", dm, LightningDataModule):
                batch = dm.transfer_batch_to_device(batch, device, dataloader_idx)
            else:
                batch = module.transfer_batch_to_device(batch, device, dataloader_idx)
            batch = module.on_after_batch_transfer(batch, dataloader_idx)
            if custom_dm:
                batch = dm.on_after_batch_transfer(batch, dataloader_idx)
            return batch

        return transfer_with_hooks

    # ------------------------------------------------------------------ data
    def _loader_from(self, stage: str, explicit: Any) -> Any:
        loaders = self._find_loader(stage, explicit)
        if os.environ.get("PL_SEED_WORKERS") == "1":
            from functools import partial

            from torch.utils.data import DataLoader

            from trainer_core.seed import pl_worker_init_function

            for dl in self._as_list(loaders):
                # seed_everything(workers=True): each worker gets its own seed, derived from the global one
                if isinstance(dl, DataLoader) and dl.worker_init_fn is None and dl.num_workers > 0:
                    dl.worker_init_fn = partial(pl_worker_init_function, rank=0)
        return loaders

    def _find_loader(self, stage: str, explicit: Any) -> Any:
        if explicit is not None:
            return explicit
        hook = f"{stage}_dataloader"
        dm = self.datamodule
        if dm is not None and _is_overridden(hook, dm, LightningDataModule) or (
            dm is not None and hook in vars(dm)
        ):
            return getattr(dm, hook)()
        module = self.lightning_module
        if module is not None and hasattr(type(module), hook) and callable(getattr(module, hook)):
            return getattr(module, hook)()
        return None

    @staticmethod
    def _as_list(loaders: Any) -> list:
        if loaders is None:
            return []
        if isinstance(loaders, (list, tuple)):
            return list(loaders)
        if isinstance(loaders, Mapping):
            return list(loaders.values())
        return [loaders]

    def _maybe_reload_train_dataloader(self, epoch: int) -> None:
        n = self.reload_dataloaders_every_n_epochs
        if n and epoch > 0 and epoch % n == 0 and self._train_source is None:
            self.train_dataloader = self._loader_from("train", None)
            self.num_training_batches = limit_batches(self.train_dataloader, self.limit_train_batches, "train")

    # ------------------------------------------------------------------ entry points
    def fit(
        self,
        model: LightningModule,
        train_dataloaders: Any = None,
        val_dataloaders: Any = None,
        datamodule: LightningDataModule | None = None,
        ckpt_path: str | os.PathLike | None = None,
    ) -> None:
        if isinstance(train_dataloaders, LightningDataModule):
            datamodule, train_dataloaders = train_dataloaders, None
        if datamodule is not None and (train_dataloaders is not None or val_dataloaders is not None):
            raise ValueError(
                "You cannot pass `train_dataloader` or `val_dataloaders` to `trainer.fit(datamodule=...)`"
            )
        self._run(TrainerFn.FITTING, model, datamodule, ckpt_path, train=train_dataloaders, val=val_dataloaders)

    def validate(
        self,
        model: LightningModule | None = None,
        dataloaders: Any = None,
        ckpt_path: str | os.PathLike | None = None,
        verbose: bool = True,
        datamodule: LightningDataModule | None = None,
    ) -> list[dict[str, float]]:
        if isinstance(dataloaders, LightningDataModule):
            datamodule, dataloaders = dataloaders, None
        return self._run(TrainerFn.VALIDATING, model, datamodule, ckpt_path, val=dataloaders, verbose=verbose)

    def test(
        self,
        model: LightningModule | None = None,
        dataloaders: Any = None,
        ckpt_path: str | os.PathLike | None = None,
        verbose: bool = True,
        datamodule: LightningDataModule | None = None,
    ) -> list[dict[str, float]]:
        if isinstance(dataloaders, LightningDataModule):
            datamodule, dataloaders = dataloaders, None
        return self._run(TrainerFn.TESTING, model, datamodule, ckpt_path, test=dataloaders, verbose=verbose)

    def predict(
        self,
        model: LightningModule | None = None,
        dataloaders: Any = None,
        datamodule: LightningDataModule | None = None,
        return_predictions: bool | None = None,
        ckpt_path: str | os.PathLike | None = None,
    ) -> Any:
        if isinstance(dataloaders, LightningDataModule):
            datamodule, dataloaders = dataloaders, None
        return self._run(
            TrainerFn.PREDICTING, model, datamodule, ckpt_path, predict=dataloaders,
            return_predictions=True if return_predictions is None else return_predictions,
        )

    # ------------------------------------------------------------------ the run
    def _run(self, fn: TrainerFn, model: Any, datamodule: Any, ckpt_path: Any, **kw: Any) -> Any:
        if model is None:
            model = self.lightning_module
            if model is None:
                raise ValueError(
                    f"`Trainer.{fn.value}()` requires a `LightningModule` when it hasn't been passed in a previous run."
                )
            if ckpt_path is None and fn != TrainerFn.FITTING:
                cb = self.checkpoint_callback
                if cb is not None and cb.best_model_path:
                    ckpt_path = "best"
        if not isinstance(model, LightningModule):
            raise TypeError(f"`Trainer.{fn.value}()` requires a `LightningModule`, got: {type(model).__qualname__}")
        if datamodule is not None and not isinstance(datamodule, LightningDataModule):
            raise TypeError(f"`datamodule` must be a LightningDataModule, got {type(datamodule).__qualname__}.")
        self.state = TrainerState(status=TrainerStatus.RUNNING, fn=fn)
        self.lightning_module = model
        self.strategy.lightning_module = model
        model.trainer = self
        self.datamodule = datamodule
        if datamodule is not None:
            datamodule.trainer = self
        self.should_stop = False
        stage = fn.value
        try:
            self._attach_model_callbacks(model)
            self._build_hooks()
            if datamodule is not None:
                datamodule.prepare_data()
            model.prepare_data()
            if datamodule is not None:
                datamodule.setup(stage)
            for hook in self._hooks["setup"]:
                hook(self, model, stage)
            model.setup(stage)
            model.configure_model()
            ckpt_path = self._resolve_ckpt_path(fn, ckpt_path)
            self.ckpt_path = ckpt_path
            checkpoint = load_checkpoint(ckpt_path, map_location="cpu") if ckpt_path else None
            if checkpoint is not None:
                self._restore_modules_and_callbacks(checkpoint)
            self._callback_metrics = {}
            self._logged_metrics = {}
            self._pbar_metrics = {}
            model.to(self.strategy.root_device)
            self._precision.convert_module(model)
            self._batch_transfer = self._make_batch_transfer()
            if fn == TrainerFn.FITTING:
                out = self._run_fit(model, checkpoint, kw["train"], kw["val"])
            elif fn == TrainerFn.PREDICTING:
                out = self._run_predict(kw["predict"], kw["return_predictions"])
            else:
                out = self._run_eval(fn, kw.get("val") if fn == TrainerFn.VALIDATING else kw.get("test"), kw["verbose"])
            self.state.status = TrainerStatus.FINISHED
            self.state.stage = None
            self._teardown(model, stage, "success")
            return out
        except BaseException as exc:
            self.state.status = TrainerStatus.INTERRUPTED
            for hook in self._hooks.get("on_exception", ()):
                try:
                    hook(self, model, exc)
                except Exception:  # keep the original error
                    log.exception("on_exception hook failed")
            status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
            try:
                self._teardown(model, stage, status)
            except Exception:
                log.exception("teardown after an error failed")
            raise
        finally:
            self._results = None

    def _teardown(self, model: Any, stage: str, status: str) -> None:
        if self.datamodule is not None:
            self.datamodule.teardown(stage)
        for hook in self._hooks.get("teardown", ()):
            hook(self, model, stage)
        model.teardown(stage)
        # like Lightning, after every entry point (fit, validate, test, predict)
        for logger in self.loggers:
            logger.finalize(status)

    def _attach_model_callbacks(self, model: LightningModule) -> None:
        extra = model.configure_callbacks()
        if not extra:
            return
        if isinstance(extra, Callback):
            extra = [extra]
        extra = list(extra)
        types = {type(cb) for cb in extra}
        self.callbacks = self._reorder([cb for cb in self.callbacks if type(cb) not in types] + extra)

    def _resolve_ckpt_path(self, fn: TrainerFn, ckpt_path: Any) -> str | None:
        if ckpt_path is None:
            return None
        if ckpt_path == "best":
            cb = self.checkpoint_callback
            if cb is None:
                raise ValueError(f'`.{fn.value}(ckpt_path="best")` is set but `ModelCheckpoint` is not configured.')
            if not cb.best_model_path:
                if self.fast_dev_run:
                    raise ValueError(
                        f'You cannot execute `.{fn.value}(ckpt_path="best")` with `fast_dev_run=True`. Please pass '
                        f"an exact checkpoint path to `.{fn.value}(ckpt_path=...)`"
                    )
                raise ValueError(
                    f'`.{fn.value}(ckpt_path="best")` is set but `ModelCheckpoint` is not configured to save the '
                    "best model."
                )
            return cb.best_model_path
        if ckpt_path == "last":
            candidates = set()
            for cb in self.checkpoint_callbacks:
                if cb.last_model_path:
                    candidates.add(cb.last_model_path)
                candidates |= cb._find_last_checkpoints(self)
            existing = {p: os.path.getmtime(p) for p in candidates if os.path.exists(p)}
            if not existing:
                warnings.warn(
                    f'.{fn.value}(ckpt_path="last") is set, but there is no last checkpoint available. No checkpoint '
                    "will be loaded. HINT: Set `ModelCheckpoint(..., save_last=True)`.",
                    stacklevel=3,
                )
                return None
            return max(existing, key=existing.get)
        return os.fspath(ckpt_path)

    # ------------------------------------------------------------------ fit
    def _setup_fit_data(self, model: LightningModule, train: Any, val: Any) -> None:
        self._train_source = train
        self.train_dataloader = self._loader_from("train", train)
        if self.train_dataloader is None:
            raise RuntimeError(
                "No `train_dataloader()` found: pass `train_dataloaders=` to `Trainer.fit`, a datamodule, or define "
                "`train_dataloader()` on the LightningModule."
            )
        from torch.utils.data import DataLoader

        nested = self.train_dataloader
        if isinstance(nested, Mapping) or (
            isinstance(nested, (list, tuple)) and nested and all(isinstance(d, DataLoader) for d in nested)
        ):
            raise ValueError(
                "Several train dataloaders (a list or dict of DataLoaders, Lightning's CombinedLoader modes) are not "
                "supported yet; pass a single DataLoader (or any iterable of batches) as `train_dataloaders`."
            )
        self.val_dataloaders = self._loader_from("val", val)
        self._val_loaders = self._as_list(self.val_dataloaders)
        self.num_training_batches = limit_batches(self.train_dataloader, self.limit_train_batches, "train")
        self.num_val_batches = [limit_batches(dl, self.limit_val_batches, "val") for dl in self._val_loaders]
        self._val_enabled = (
            bool(self._val_loaders)
            and _is_overridden("validation_step", model, LightningModule)
            and self.limit_val_batches > 0
        )
        if self._val_loaders and not _is_overridden("validation_step", model, LightningModule):
            warnings.warn(
                "You passed in a `val_dataloader` but have no `validation_step`. Skipping val loop.", stacklevel=3
            )
        self._set_val_check_batch()

    def _run_fit(self, model: LightningModule, checkpoint: dict | None, train: Any, val: Any) -> None:
        if not _is_overridden("training_step", model, LightningModule):
            raise RuntimeError(
                "No `training_step()` method defined. The `Trainer` expects as minimum a `training_step()`, "
                "`train_dataloader()` and `configure_optimizers()` to be defined."
            )
        if self._warn_max_epochs_default and not self.fast_dev_run:
            warnings.warn(
                "`max_epochs` was not set. Setting it to 1000 epochs. To train without an epoch limit,"
                " set `max_epochs=-1`.",
                UserWarning,
                stacklevel=3,
            )

        if model.automatic_optimization is False:
            if self.gradient_clip_val:
                raise ValueError(
                    "Automatic gradient clipping is not supported for manual optimization. Remove "
                    "`Trainer(gradient_clip_val=...)` or switch to automatic optimization."
                )
            if self.accumulate_grad_batches != 1:
                raise ValueError(
                    "Automatic gradient accumulation is not supported for manual optimization. Remove "
                    "`Trainer(accumulate_grad_batches=...)` or switch to automatic optimization."
                )
        self.optimizers, self.lr_scheduler_configs = normalize_optimizers(model.configure_optimizers())
        if model.automatic_optimization and len(self.optimizers) > 1:
            raise RuntimeError(
                "Training with multiple optimizers is only supported with manual optimization. Set "
                "`self.automatic_optimization = False`, then access your optimizers in `training_step` with "
                "`opt1, opt2, ... = self.optimizers()`."
            )
        self._lightning_optimizers = [LightningOptimizer(opt, self) for opt in self.optimizers]

        self._train_results = ResultCollection(training=True)
        self._results = self._train_results
        self._call_hook("on_fit_start")
        # as Lightning: the train/val dataloaders are requested after on_fit_start (its fit loop's setup_data)
        self._setup_fit_data(model, train, val)
        self._log_hyperparams_and_summary(model)
        self._restarting = False
        if checkpoint is not None:
            self._restore_training_state(checkpoint)
        self._deadline = time.monotonic() + self.max_time if self.max_time is not None else None

        if self._val_enabled and self.num_sanity_val_steps > 0 and not self._restarting:
            self._run_sanity_check()
        self._results = self._train_results
        with torch.autograd.set_detect_anomaly(self.detect_anomaly):
            self.fit_loop.run()
        self.training = False
        self._results = self._train_results
        self._call_hook("on_fit_end")
        self._restarting = False

    def _set_val_check_batch(self) -> None:
        interval = self.val_check_interval
        n = self.num_training_batches
        if isinstance(interval, int):
            if self._val_enabled and self.check_val_every_n_epoch is not None and interval > n:
                raise ValueError(
                    f"`val_check_interval` ({interval}) must be less than or equal to the number of the training "
                    f"batches ({n}). If you want to disable validation set `limit_val_batches` to 0.0 instead. If you "
                    "want to validate based on the total training batches, set `check_val_every_n_epoch=None`."
                )
            self.val_check_batch = interval
        elif n == float("inf"):
            if interval != 1.0:
                raise ValueError(
                    "When using an IterableDataset for `train_dataloader`, `Trainer(val_check_interval)` must be "
                    "`1.0` or an int. An int k specifies checking validation every k training batches."
                )
            self.val_check_batch = float("inf")
        else:
            self.val_check_batch = max(1, int(n * interval))

    def _run_sanity_check(self) -> None:
        from trainer_core.seed import capture_rng_state, restore_rng_state

        steps = self.num_sanity_val_steps
        self.num_sanity_val_batches = [min(steps, n) for n in self.num_val_batches]
        prev_stage = self.state.stage
        self.sanity_checking = True
        rng = capture_rng_state()
        try:
            for hook in self._hooks["on_sanity_check_start"]:
                hook(self, self.lightning_module)
            self.fit_loop.epoch_loop.val_loop.run(self._val_loaders, self.num_sanity_val_batches, sanity=True)
            for hook in self._hooks["on_sanity_check_end"]:
                hook(self, self.lightning_module)
        finally:
            restore_rng_state(rng)
        from trainer_core.trainer.loops import _BatchProgress

        self.fit_loop.epoch_loop.val_loop.batch_progress = _BatchProgress()
        self.state.stage = prev_stage

    def _run_validation(self) -> None:
        prev = self._results
        self.validating = True
        try:
            self.fit_loop.epoch_loop.val_loop.run(self._val_loaders, self.num_val_batches)
        finally:
            self._results = prev

    def _log_hyperparams_and_summary(self, model: LightningModule) -> None:
        if not self.loggers:
            return
        from trainer_core.loggers.logger import Logger

        dm = self.datamodule
        params: dict[str, Any] | None = None
        dm_log = dm is not None and dm._log_hyperparams and bool(dm.hparams_initial)
        if model._log_hyperparams and dm_log:
            mine, theirs = dict(model.hparams_initial), dict(dm.hparams_initial)
            clash = [k for k in mine.keys() & theirs.keys() if mine[k] != theirs[k]]
            if clash:
                raise ValueError(
                    f"Error while merging hparams: the keys {clash} are present in both the LightningModule's and "
                    "LightningDataModule's hparams but have different values."
                )
            params = {**mine, **theirs}
        elif model._log_hyperparams:
            params = dict(model.hparams_initial)
        elif dm_log:
            params = dict(dm.hparams_initial)
        summary_dict = None
        for logger in self.loggers:
            if params is not None:
                logger.log_hyperparams(params)
            if hasattr(logger, "log_graph"):
                logger.log_graph(model)
            if type(logger).log_model_summary is not Logger.log_model_summary if isinstance(logger, Logger) else hasattr(
                logger, "log_model_summary"
            ):
                if summary_dict is None:
                    from trainer_core.summary import summarize

                    summary_dict = summarize(model, max_depth=1).to_dict()
                logger.log_model_summary(summary_dict)
            logger.save()

    # ------------------------------------------------------------------ evaluate / predict
    def _run_eval(self, fn: TrainerFn, loaders: Any, verbose: bool) -> list[dict[str, float]]:
        model = self.lightning_module
        testing = fn == TrainerFn.TESTING
        step_name = "test_step" if testing else "validation_step"
        if not _is_overridden(step_name, model, LightningModule):
            raise RuntimeError(f"No `{step_name}()` method defined to run `Trainer.{fn.value}`.")
        stage = "test" if testing else "val"
        source = self._loader_from(stage, loaders)
        if source is None:
            raise RuntimeError(
                f"No `{stage}_dataloader()` found: pass `dataloaders=` to `Trainer.{fn.value}`, a datamodule, or "
                f"define `{stage}_dataloader()` on the LightningModule."
            )
        loader_list = self._as_list(source)
        limit = self.limit_test_batches if testing else self.limit_val_batches
        limits = [limit_batches(dl, limit, stage) for dl in loader_list]
        if testing:
            self.test_dataloaders = source
            self.num_test_batches = limits
            loop = self.test_loop
            self.testing = True
        else:
            self.val_dataloaders = source
            self.num_val_batches = limits
            loop = self.validate_loop
            self.validating = True
        return loop.run(loader_list, limits, verbose=verbose)

    def _run_predict(self, loaders: Any, return_predictions: bool) -> Any:
        source = self._loader_from("predict", loaders)
        if source is None:
            raise RuntimeError(
                "No `predict_dataloader()` found: pass `dataloaders=` to `Trainer.predict`, a datamodule, or define "
                "`predict_dataloader()` on the LightningModule."
            )
        self.predict_dataloaders = source
        loader_list = self._as_list(source)
        self.num_predict_batches = [limit_batches(dl, self.limit_predict_batches, "predict") for dl in loader_list]
        self.predicting = True
        return self.predict_loop.run(loader_list, self.num_predict_batches, return_predictions)

    # ------------------------------------------------------------------ checkpoints
    def _loops_state_dict(self) -> dict[str, Any]:
        return {
            "fit_loop": self.fit_loop.state_dict(),
            "validate_loop": self.validate_loop.state_dict(),
            "test_loop": self.test_loop.state_dict(),
            "predict_loop": self.predict_loop.state_dict(),
        }

    def dump_checkpoint(self, weights_only: bool = False) -> dict[str, Any]:
        from trainer_core import __version__

        model = self.lightning_module
        checkpoint: dict[str, Any] = {
            "epoch": self.current_epoch,
            "global_step": self.global_step,
            "pytorch-lightning_version": LIGHTNING_FORMAT_VERSION,
            "trainer_core_version": __version__,
            "state_dict": model.state_dict(),
            "loops": self._loops_state_dict(),
        }
        if not weights_only:
            callback_states = {}
            for cb in self.callbacks:
                state = cb.state_dict()
                if state:
                    callback_states[cb.state_key] = state
            checkpoint["callbacks"] = callback_states
            checkpoint["optimizer_states"] = [opt.state_dict() for opt in self.optimizers]
            checkpoint["lr_schedulers"] = [config.scheduler.state_dict() for config in self.lr_scheduler_configs]
            precision_state = self._precision.state_dict()
            if precision_state:
                checkpoint[self._precision.checkpoint_key] = precision_state
        if model.hparams:
            checkpoint[LightningModule.CHECKPOINT_HYPER_PARAMS_NAME] = model._hparams_name
            checkpoint[LightningModule.CHECKPOINT_HYPER_PARAMS_KEY] = plain_hparams(model.hparams)
        dm = self.datamodule
        if dm is not None:
            if dm.hparams:
                checkpoint[LightningDataModule.CHECKPOINT_HYPER_PARAMS_NAME] = dm._hparams_name
                checkpoint[LightningDataModule.CHECKPOINT_HYPER_PARAMS_KEY] = plain_hparams(dm.hparams)
            dm_state = dm.state_dict()
            if dm_state:
                checkpoint[type(dm).__qualname__] = dm_state
        if not weights_only:
            for hook in self._hooks.get("on_save_checkpoint", ()):
                hook(self, model, checkpoint)
        if dm is not None:
            dm.on_save_checkpoint(checkpoint)
        model.on_save_checkpoint(checkpoint)
        return checkpoint

    def save_checkpoint(self, filepath: str | os.PathLike, weights_only: bool = False, storage_options: Any = None) -> None:
        if self.lightning_module is None:
            raise RuntimeError(
                "Saving a checkpoint is only possible if a model is attached to the Trainer. Did you call "
                "`Trainer.save_checkpoint()` before calling `Trainer.{fit,validate,test,predict}`?"
            )
        save_checkpoint(self.dump_checkpoint(weights_only), filepath)

    def _restore_modules_and_callbacks(self, checkpoint: dict[str, Any]) -> None:
        model = self.lightning_module
        model.on_load_checkpoint(checkpoint)
        model.load_state_dict(checkpoint["state_dict"], strict=model.strict_loading)
        dm = self.datamodule
        if dm is not None:
            dm.on_load_checkpoint(checkpoint)
            state = checkpoint.get(type(dm).__qualname__)
            if state:
                dm.load_state_dict(state)
        states = checkpoint.get("callbacks") or {}
        for cb in self.callbacks:
            cb.on_load_checkpoint(self, model, checkpoint)
            state = states.get(cb.state_key)
            if state is None:
                state = states.get(type(cb).__qualname__)
            if state:
                cb.load_state_dict(dict(state))

    def _restore_training_state(self, checkpoint: dict[str, Any]) -> None:
        precision_state = checkpoint.get(self._precision.checkpoint_key)
        if precision_state:
            self._precision.load_state_dict(precision_state)
        loops = checkpoint.get("loops")
        if loops and "fit_loop" in loops:
            self.fit_loop.load_state_dict(loops["fit_loop"])
            self._restarting = True
        if "optimizer_states" not in checkpoint:
            raise KeyError(
                "Trying to restore optimizer state but checkpoint contains only the model. This is probably due to "
                "`ModelCheckpoint.save_weights_only` being set to `True`."
            )
        states = checkpoint["optimizer_states"]
        if len(states) != len(self.optimizers):
            raise ValueError(
                f"The checkpoint has {len(states)} optimizer states but `configure_optimizers` returned "
                f"{len(self.optimizers)} optimizers."
            )
        for opt, state in zip(self.optimizers, states, strict=False):
            opt.load_state_dict(state)
        for config, state in zip(self.lr_scheduler_configs, checkpoint.get("lr_schedulers", []), strict=False):
            config.scheduler.load_state_dict(state)
