"""Normalising ``configure_optimizers`` return values into optimizers and scheduler configs."""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from torch.optim import Optimizer
from torch.optim.lr_scheduler import ReduceLROnPlateau

from trainer_core.core.optimizer import LightningOptimizer
from trainer_core.utilities.exceptions import MisconfigurationException

_CONFIG_KEYS = {"scheduler", "name", "interval", "frequency", "reduce_on_plateau", "monitor", "strict", "opt_idx"}


@dataclass
class LRSchedulerConfig:
    scheduler: Any
    name: str | None = None
    interval: str = "epoch"
    frequency: int = 1
    reduce_on_plateau: bool = False
    monitor: str | None = None
    strict: bool = True
    opt_idx: int | None = None


_MANUAL_IGNORED_KEYS = ("reduce_on_plateau", "monitor", "strict")


def _scheduler_config(obj: Any, monitor: str | None, automatic: bool = True) -> LRSchedulerConfig:
    """One scheduler (or lr scheduler dict) as a config. In manual optimization the user steps the schedulers, so
    ``ReduceLROnPlateau`` needs no monitor and the plateau keys are ignored (Lightning's
    ``_configure_schedulers_manual_opt``)."""
    if isinstance(obj, Mapping):
        if "scheduler" not in obj:
            raise MisconfigurationException(
                'The lr scheduler dict must have the key "scheduler" with its item being an lr scheduler; '
                f"got keys {sorted(obj)}."
            )
        extra = set(obj) - _CONFIG_KEYS
        if extra:
            warnings.warn(
                f"Found unsupported keys in the lr scheduler dict: {sorted(extra)}. "
                f"Allowed keys: {sorted(_CONFIG_KEYS)}.",
                RuntimeWarning,
                stacklevel=4,
            )
        interval = obj.get("interval", "epoch")
        if interval not in ("step", "epoch"):
            raise MisconfigurationException(
                f'The "interval" key in lr scheduler dict must be "step" or "epoch" but is "{interval}"'
            )
        frequency = obj.get("frequency", 1)
        if not isinstance(frequency, int) or frequency < 1:
            raise MisconfigurationException(
                f'The "frequency" key in lr scheduler dict must be a positive integer, got {frequency!r}.'
            )
        scheduler = obj["scheduler"]
        if automatic:
            plateau = obj.get("reduce_on_plateau", isinstance(scheduler, ReduceLROnPlateau))
            if plateau and obj.get("monitor", monitor) is None:
                raise MisconfigurationException(
                    "The lr scheduler dict must include a monitor when a `ReduceLROnPlateau` scheduler is used."
                    ' For example: {"optimizer": optimizer, "lr_scheduler":'
                    ' {"scheduler": scheduler, "monitor": "your_loss"}}'
                )
            config = LRSchedulerConfig(
                scheduler=scheduler,
                name=obj.get("name"),
                interval=interval,
                frequency=frequency,
                reduce_on_plateau=plateau,
                monitor=obj.get("monitor", monitor),
                strict=obj.get("strict", True),
                opt_idx=obj.get("opt_idx"),
            )
        else:
            ignored = [k for k in obj if k in _MANUAL_IGNORED_KEYS]
            if ignored:
                warnings.warn(
                    f"The lr scheduler dict contains the key(s) {ignored}, but the keys will be ignored."
                    " You need to call `lr_scheduler.step()` manually in manual optimization.",
                    RuntimeWarning,
                    stacklevel=4,
                )
            config = LRSchedulerConfig(
                scheduler=scheduler,
                name=obj.get("name"),
                interval=interval,
                frequency=frequency,
                opt_idx=obj.get("opt_idx"),
            )
    elif automatic and isinstance(obj, ReduceLROnPlateau):
        if monitor is None:
            raise MisconfigurationException(
                "`configure_optimizers` must include a monitor when a `ReduceLROnPlateau` scheduler is used. "
                'For example: {"optimizer": optimizer, "lr_scheduler": scheduler, "monitor": "metric_to_track"}'
            )
        config = LRSchedulerConfig(scheduler=obj, reduce_on_plateau=True, monitor=monitor)
    else:
        config = LRSchedulerConfig(scheduler=obj)
    if not hasattr(config.scheduler, "step") or not hasattr(config.scheduler, "state_dict"):
        raise TypeError(
            f"The provided lr scheduler `{type(config.scheduler).__name__}` has no `step`/`state_dict`; "
            "return a torch.optim.lr_scheduler object."
        )
    return config


def _is_optimizer(obj: Any) -> bool:
    return isinstance(obj, Optimizer) or (hasattr(obj, "step") and hasattr(obj, "param_groups"))


def normalize_optimizers(returned: Any, automatic: bool = True) -> tuple[list[Optimizer], list[LRSchedulerConfig]]:
    """Every Lightning return form of ``configure_optimizers`` -> (optimizers, scheduler configs); ``automatic``:
    the module's ``automatic_optimization`` (manual optimization accepts a ``ReduceLROnPlateau`` without monitor)."""
    if returned is None:
        warnings.warn(
            "`LightningModule.configure_optimizers` returned `None`, this fit will run with no optimizer",
            UserWarning,
            stacklevel=3,
        )
        return [], []
    optimizers: list[Optimizer] = []
    configs: list[LRSchedulerConfig] = []
    if _is_optimizer(returned):
        optimizers = [returned]
    elif isinstance(returned, Mapping):
        optimizers, configs = _from_dict(returned, automatic)
    elif isinstance(returned, Sequence) and not isinstance(returned, str):
        items = list(returned)
        if (
            len(items) == 2
            and isinstance(items[0], Sequence)
            and not isinstance(items[0], str)
            and all(_is_optimizer(o) for o in items[0])
        ):
            optimizers = list(items[0])
            scheds = items[1] if isinstance(items[1], Sequence) else [items[1]]
            configs = [_scheduler_config(s, None, automatic) for s in scheds]
        elif items and all(isinstance(i, Mapping) for i in items):
            for d in items:
                opts, cfgs = _from_dict(d, automatic)
                optimizers += opts
                configs += cfgs
        elif all(_is_optimizer(o) for o in items):
            optimizers = items
        else:
            optimizers = []
    if not optimizers:
        raise MisconfigurationException(
            "Unknown configuration for model optimizers. Output from `model.configure_optimizers()` should be "
            "one of: an optimizer; a list of optimizers; a tuple of ([optimizers], [schedulers]); a dict with "
            '"optimizer" and optionally "lr_scheduler" and "monitor"; or a list of such dicts. '
            f"Got {type(returned).__name__}."
        )
    for config in configs:
        scheduler_opt = getattr(config.scheduler, "optimizer", None)
        if scheduler_opt is not None and all(scheduler_opt is not o for o in optimizers):
            raise MisconfigurationException(
                "Some schedulers are attached to an optimizer that wasn't returned from `configure_optimizers`."
            )
    return optimizers, configs


def _from_dict(d: Mapping[str, Any], automatic: bool) -> tuple[list[Optimizer], list[LRSchedulerConfig]]:
    extra = set(d) - {"optimizer", "lr_scheduler", "monitor"}
    if extra:
        warnings.warn(
            f"Found unsupported keys in the optimizer configuration: {sorted(extra)}. "
            "Allowed keys: 'optimizer', 'lr_scheduler', 'monitor'.",
            RuntimeWarning,
            stacklevel=4,
        )
    if "optimizer" not in d:
        raise MisconfigurationException('The optimizer configuration dict must have the key "optimizer".')
    configs: list[LRSchedulerConfig] = []
    if d.get("lr_scheduler") is not None:
        configs = [_scheduler_config(d["lr_scheduler"], d.get("monitor"), automatic)]
    return [d["optimizer"]], configs



def check_fit_optimization(model: Any, gradient_clip_val: int | float | None, accumulate_grad_batches: int) -> None:
    """Lightning's refusals for manual optimization with the Trainer's clipping or accumulation."""
    if model.automatic_optimization is False:
        if gradient_clip_val is not None and gradient_clip_val > 0:
            raise MisconfigurationException(
                "Automatic gradient clipping is not supported for manual optimization."
                f" Remove `Trainer(gradient_clip_val={gradient_clip_val})` or switch to automatic optimization."
            )
        if accumulate_grad_batches != 1:
            raise MisconfigurationException(
                "Automatic gradient accumulation is not supported for manual optimization."
                f" Remove `Trainer(accumulate_grad_batches={accumulate_grad_batches})`"
                " or switch to automatic optimization."
            )


def setup_optimizers(trainer: Any, model: Any) -> None:
    """``configure_optimizers()`` at fit start: sets ``trainer.optimizers``, ``trainer.lr_scheduler_configs``
    and their ``LightningOptimizer`` wrappers, after Lightning's checks."""
    check_fit_optimization(model, trainer.gradient_clip_val, trainer.accumulate_grad_batches)
    trainer.optimizers, trainer.lr_scheduler_configs = normalize_optimizers(
        model.configure_optimizers(), model.automatic_optimization
    )
    optimizers = trainer.optimizers
    if model.automatic_optimization and len(optimizers) > 1:
        raise RuntimeError(
            "Training with multiple optimizers is only supported with manual optimization. Set "
            "`self.automatic_optimization = False`, then access your optimizers in `training_step` with "
            "`opt1, opt2, ... = self.optimizers()`."
        )
    trainer._lightning_optimizers = [LightningOptimizer._to_lightning_optimizer(opt, trainer) for opt in optimizers]


__all__ = ["LRSchedulerConfig", "LightningOptimizer", "normalize_optimizers", "setup_optimizers"]
