"""``TrainerConfig``: the ``Trainer`` arguments, validated and resolved to the values the run uses.

Every check raises Lightning's ``Trainer(name=value) is not valid`` ``ValueError`` (or ``TypeError`` for an
unknown argument), in the order the arguments are checked by ``Trainer``. Building the config has the
process-wide side effects the arguments ask for (``deterministic``, ``benchmark``), as in Lightning.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import torch

from trainer_core.trainer.precision import Precision, make_precision, parse_precision
from trainer_core.utilities.exceptions import MisconfigurationException

if TYPE_CHECKING:
    from trainer_core.strategies.strategy import Strategy

TRAINER_ARGS = (
    "accelerator", "strategy", "devices", "num_nodes", "precision", "logger", "callbacks", "fast_dev_run",
    "max_epochs", "min_epochs", "max_steps", "min_steps", "max_time", "limit_train_batches",
    "limit_val_batches", "limit_test_batches", "limit_predict_batches", "overfit_batches",
    "val_check_interval", "check_val_every_n_epoch", "num_sanity_val_steps", "log_every_n_steps",
    "enable_checkpointing", "enable_progress_bar", "enable_model_summary", "accumulate_grad_batches",
    "gradient_clip_val", "gradient_clip_algorithm", "deterministic", "benchmark", "inference_mode",
    "use_distributed_sampler", "profiler", "detect_anomaly", "barebones", "plugins", "sync_batchnorm",
    "reload_dataloaders_every_n_epochs", "default_root_dir", "enable_autolog_hparams", "model_registry",
)

_LIMIT_ALLOWED = "an int >= 0 (number of batches) or a float in [0.0, 1.0] (fraction)"
_MAX_TIME_ALLOWED = "'DD:HH:MM:SS', a datetime.timedelta, or a dict of timedelta arguments"
_VAL_TIME = "duration (" + _MAX_TIME_ALLOWED + ")"


def _bad(name: str, value: Any, allowed: str) -> MisconfigurationException:
    # Lightning raises MisconfigurationException for Trainer arguments; it is a ValueError, as raised before
    return MisconfigurationException(f"Trainer({name}={value!r}) is not valid. Allowed values: {allowed}.")


def _check_limit(name: str, value: Any) -> int | float:
    if value is None:
        return 1.0
    if isinstance(value, bool):
        raise _bad(name, value, _LIMIT_ALLOWED)
    if isinstance(value, int):
        if value < 0:
            raise _bad(name, value, _LIMIT_ALLOWED)
        return value
    if isinstance(value, float):
        if not 0.0 <= value <= 1.0:
            raise _bad(name, value, _LIMIT_ALLOWED)
        return value
    raise _bad(name, value, _LIMIT_ALLOWED)


def _parse_duration(name: str, value: Any) -> timedelta | None:
    """``max_time`` / a time-based ``val_check_interval``: ``"DD:HH:MM:SS"``, a timedelta, or a dict of its arguments."""
    if value is None:
        return None
    if isinstance(value, timedelta):
        return value
    if isinstance(value, Mapping):
        try:
            return timedelta(**value)
        except TypeError as err:
            raise _bad(name, value, _MAX_TIME_ALLOWED) from err
    if isinstance(value, str):
        parts = value.split(":")
        if len(parts) == 4 and all(p.strip().isdigit() for p in parts):
            d, h, m, s = (int(p) for p in parts)
            return timedelta(days=d, hours=h, minutes=m, seconds=s)
    raise _bad(name, value, _MAX_TIME_ALLOWED)


def _parse_max_time(value: Any) -> timedelta | None:
    return _parse_duration("max_time", value)


def check_unknown(unknown: Mapping[str, Any]) -> None:
    """``TypeError`` for the first argument ``Trainer`` does not take, with the closest valid name."""
    if not unknown:
        return
    name = next(iter(unknown))
    close = difflib.get_close_matches(name, TRAINER_ARGS, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise TypeError(f"Trainer() got an unexpected argument {name!r}.{hint} Allowed arguments: {', '.join(TRAINER_ARGS)}.")


def _apply_determinism(deterministic: bool | str | None, benchmark: bool | None) -> None:
    if deterministic is not None and deterministic is not False:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=deterministic == "warn")
    elif deterministic is False:
        torch.use_deterministic_algorithms(False)
    if benchmark is not None:
        torch.backends.cudnn.benchmark = bool(benchmark)
    elif deterministic:
        torch.backends.cudnn.benchmark = False


def _check_val_check_interval(value: Any) -> int | float:
    if value is None:
        return 1.0
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (
        isinstance(value, float) and not 0.0 < value <= 1.0
    ) or (isinstance(value, int) and value < 1):
        raise _bad("val_check_interval", value, "a float in (0.0, 1.0], an int >= 1 (batches) or a time " + _VAL_TIME)
    return value


def _check_overfit_batches(value: Any) -> int | float:
    """Lightning's ``_determine_batch_limits(overfit_batches)``: an int number of batches or a fraction."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 or (
        isinstance(value, float) and value > 1.0 and value % 1.0 != 0
    ):
        raise _bad("overfit_batches", value, _LIMIT_ALLOWED)
    return int(value) if isinstance(value, float) and value > 1.0 else value


@dataclass
class TrainerConfig:
    """The resolved arguments (``fast_dev_run`` and ``barebones`` already applied)."""

    fast_dev_run: int | bool
    fast_dev_run_batches: int
    max_epochs: int
    min_epochs: int | None
    max_steps: int
    min_steps: int | None
    max_time: timedelta | None
    warn_max_epochs_default: bool
    limit_train_batches: int | float
    limit_val_batches: int | float
    limit_test_batches: int | float
    limit_predict_batches: int | float
    val_check_interval: int | float
    val_check_time_interval: float | None  # seconds, when val_check_interval is a duration (Lightning 2.6)
    overfit_batches: int | float
    check_val_every_n_epoch: int | None
    num_sanity_val_steps: int | float
    log_every_n_steps: int
    accumulate_grad_batches: int
    gradient_clip_val: int | float | None
    gradient_clip_algorithm: str | None  # None when not given, as Lightning ('norm' is applied in clip_gradients)
    deterministic: bool | str | None
    reload_dataloaders_every_n_epochs: int
    inference_mode: bool
    detect_anomaly: bool
    barebones: bool
    enable_autolog_hparams: bool
    precision: str
    device: torch.device
    strategy: Strategy
    use_distributed_sampler: bool
    sync_batchnorm: bool
    precision_plugin: Precision
    default_root_dir: str
    logger: Any
    enable_checkpointing: bool | None
    enable_progress_bar: bool | None
    enable_model_summary: bool | None

    @classmethod
    def from_arguments(cls, args: Mapping[str, Any]) -> TrainerConfig:
        """Validate ``Trainer``'s keyword arguments (all of ``TRAINER_ARGS``) in Trainer's order."""
        a = args
        from trainer_core.strategies.connector import resolve_strategy

        strategy = resolve_strategy(a["accelerator"], a["strategy"], a["devices"], a["num_nodes"])
        overfit = _check_overfit_batches(a["overfit_batches"])
        if a["profiler"] not in (None, False):
            raise _bad("profiler", a["profiler"], "None (profilers are not supported yet)")
        if a["plugins"] not in (None, [], ()):
            raise _bad("plugins", a["plugins"], "None (plugins are not supported yet)")

        fast_dev_run = a["fast_dev_run"]
        if isinstance(fast_dev_run, bool):
            n_fast = 1 if fast_dev_run else 0
        elif isinstance(fast_dev_run, int) and fast_dev_run >= 0:
            n_fast = fast_dev_run
        else:
            raise _bad("fast_dev_run", fast_dev_run, "a bool or an int >= 0")

        max_epochs, min_epochs, max_steps, min_steps = a["max_epochs"], a["min_epochs"], a["max_steps"], a["min_steps"]
        if max_epochs is not None and (not isinstance(max_epochs, int) or isinstance(max_epochs, bool) or max_epochs < -1):
            raise _bad("max_epochs", max_epochs, "None, -1 (no limit) or an int >= 0")
        if min_epochs is not None and (not isinstance(min_epochs, int) or min_epochs < 0):
            raise _bad("min_epochs", min_epochs, "None or an int >= 0")
        if not isinstance(max_steps, int) or max_steps < -1:
            raise _bad("max_steps", max_steps, "-1 (no limit) or an int >= 0")
        if min_steps is not None and (not isinstance(min_steps, int) or min_steps < 0):
            raise _bad("min_steps", min_steps, "None or an int >= 0")
        max_time = _parse_max_time(a["max_time"])
        # Lightning: no epoch or step limit means 1000 epochs, with a warning when fit runs
        warn_max_epochs_default = max_epochs is None and max_steps == -1 and max_time is None
        if max_epochs is None:
            max_epochs = 1000 if max_steps == -1 and max_time is None else -1
        limits = {
            stage: _check_limit(f"limit_{stage}_batches", a[f"limit_{stage}_batches"])
            for stage in ("train", "val", "test", "predict")
        }
        raw_interval = a["val_check_interval"]
        val_time: timedelta | None = None
        if isinstance(raw_interval, (str, timedelta, Mapping)):
            val_time, val_check_interval = _parse_duration("val_check_interval", raw_interval), 1.0
        else:
            val_check_interval = _check_val_check_interval(raw_interval)
        every_n = a["check_val_every_n_epoch"]
        if every_n is not None and (not isinstance(every_n, int) or every_n < 1):
            raise _bad("check_val_every_n_epoch", every_n, "None or an int >= 1")
        if every_n is None and isinstance(raw_interval, float):
            raise MisconfigurationException(
                "`val_check_interval` should be an integer or a time-based duration (str 'DD:HH:MM:SS', "
                "datetime.timedelta, or dict kwargs for timedelta) when `check_val_every_n_epoch=None`."
            )
        sanity = 2 if a["num_sanity_val_steps"] is None else a["num_sanity_val_steps"]
        if not isinstance(sanity, int) or sanity < -1:
            raise _bad("num_sanity_val_steps", sanity, "-1 (all batches) or an int >= 0")
        log_every = 50 if a["log_every_n_steps"] is None else a["log_every_n_steps"]
        if not isinstance(log_every, int) or log_every < 1:
            raise _bad("log_every_n_steps", log_every, "an int >= 1")
        accumulate = a["accumulate_grad_batches"]
        if not isinstance(accumulate, int) or accumulate < 1:
            raise _bad("accumulate_grad_batches", accumulate, "an int >= 1")
        clip_val, clip_algo = a["gradient_clip_val"], a["gradient_clip_algorithm"]
        if clip_val is not None and (not isinstance(clip_val, (int, float)) or clip_val < 0):
            raise _bad("gradient_clip_val", clip_val, "None or a number >= 0")
        if clip_algo is not None and clip_algo not in ("norm", "value"):
            raise _bad("gradient_clip_algorithm", clip_algo, "'norm' or 'value'")
        deterministic = a["deterministic"]
        if deterministic not in (None, True, False, "warn"):
            raise _bad("deterministic", deterministic, "None, True, False or 'warn'")
        _apply_determinism(deterministic, a["benchmark"])
        reload_every = a["reload_dataloaders_every_n_epochs"]
        if not isinstance(reload_every, int) or reload_every < 0:
            raise _bad("reload_dataloaders_every_n_epochs", reload_every, "an int >= 0")

        precision = parse_precision(a["precision"])
        device = strategy.root_device
        precision_plugin = make_precision(precision, device)
        precision = precision_plugin.name  # 16-mixed on the CPU runs as bf16-mixed (Lightning)

        root = a["default_root_dir"]
        if root is not None and not isinstance(root, (str, os.PathLike)):
            raise _bad("default_root_dir", root, "None, a str or an os.PathLike")
        for flag in ("enable_checkpointing", "enable_progress_bar", "enable_model_summary"):
            if a[flag] is not None and not isinstance(a[flag], bool):
                raise _bad(flag, a[flag], "None, True or False")

        if n_fast:
            limits = dict.fromkeys(limits, n_fast)
            max_steps, sanity, max_epochs = n_fast, 0, 1
            val_check_interval, every_n, val_time = 1.0, 1, None
            print(
                f"Running in `fast_dev_run` mode: will run the requested loop using {n_fast} batch(es). "
                "Logging and checkpointing is suppressed."
            )
        if overfit:  # Lightning: overfit_batches limits the train and the val loaders alike
            limits["train"] = limits["val"] = overfit
        barebones = bool(a["barebones"])
        logger = a["logger"]
        flags: dict[str, bool | None] = {
            f: a[f] for f in ("enable_checkpointing", "enable_progress_bar", "enable_model_summary")
        }
        if barebones:
            logger = False if logger is None else logger
            flags = {f: False if v is None else v for f, v in flags.items()}
        return cls(
            fast_dev_run=fast_dev_run if n_fast else False,
            fast_dev_run_batches=n_fast,
            max_epochs=max_epochs,
            min_epochs=min_epochs,
            max_steps=max_steps,
            min_steps=min_steps,
            max_time=max_time,
            warn_max_epochs_default=warn_max_epochs_default,
            limit_train_batches=limits["train"],
            limit_val_batches=limits["val"],
            limit_test_batches=limits["test"],
            limit_predict_batches=limits["predict"],
            val_check_interval=val_check_interval,
            val_check_time_interval=val_time.total_seconds() if val_time is not None else None,
            overfit_batches=overfit,
            check_val_every_n_epoch=every_n,
            num_sanity_val_steps=float("inf") if sanity == -1 else sanity,
            log_every_n_steps=log_every,
            accumulate_grad_batches=accumulate,
            gradient_clip_val=clip_val,
            gradient_clip_algorithm=clip_algo,
            deterministic=deterministic,
            reload_dataloaders_every_n_epochs=reload_every,
            inference_mode=bool(a["inference_mode"]),
            detect_anomaly=bool(a["detect_anomaly"]),
            barebones=barebones,
            enable_autolog_hparams=a["enable_autolog_hparams"],
            precision=precision,
            device=device,
            strategy=strategy,
            use_distributed_sampler=bool(a["use_distributed_sampler"]),
            sync_batchnorm=bool(a["sync_batchnorm"]),
            precision_plugin=precision_plugin,
            default_root_dir=os.fspath(root) if root is not None else os.getcwd(),
            logger=logger,
            enable_checkpointing=flags["enable_checkpointing"],
            enable_progress_bar=flags["enable_progress_bar"],
            enable_model_summary=flags["enable_model_summary"],
        )
