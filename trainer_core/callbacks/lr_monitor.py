"""``LearningRateMonitor``: logs each optimizer's learning rate (and optionally momentum, weight decay).

Names follow Lightning: ``lr-<OptimizerClass>`` (``-1``, ``-2`` for further optimizers of the
same class), ``/pgN`` or ``/<group name>`` per parameter group when there are several, and a
scheduler config's ``name`` replacing the default.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Literal

from trainer_core.callbacks.callback import Callback
from trainer_core.utilities.exceptions import MisconfigurationException


class LearningRateMonitor(Callback):
    def __init__(
        self,
        logging_interval: Literal["step", "epoch"] | None = None,
        log_momentum: bool = False,
        log_weight_decay: bool = False,
    ) -> None:
        if logging_interval not in (None, "step", "epoch"):
            raise MisconfigurationException(
                f"LearningRateMonitor(logging_interval={logging_interval!r}) is not valid; "
                "use None, 'step' or 'epoch'."
            )
        self.logging_interval = logging_interval
        self.log_momentum = log_momentum
        self.log_weight_decay = log_weight_decay
        self.lrs: dict[str, list[float]] = {}
        self.last_momentum_values: dict[str, float | None] = {}
        self.last_weight_decay_values: dict[str, float | None] = {}

    def on_train_start(self, trainer: Any, *args: Any, **kwargs: Any) -> None:
        if not trainer.loggers and getattr(trainer, "fast_dev_run", False):
            return  # fast_dev_run with logger=False: nothing to log to (with loggers it logs to a DummyLogger)
        if not trainer.loggers:
            raise MisconfigurationException(
                "Cannot use the `LearningRateMonitor` callback with a Trainer that has no logger; "
                "pass a logger or remove the callback."
            )
        if self.log_momentum:
            missing = [
                type(opt).__name__
                for opt in trainer.optimizers
                if not all("momentum" in pg or "betas" in pg for pg in opt.param_groups)
            ]
            if missing:
                import warnings

                warnings.warn(
                    f"You set LearningRateMonitor(log_momentum=True) but {missing} have no momentum; "
                    "0 is logged for them.",
                    stacklevel=2,
                )
        sched_names, seen, seen_types = self._find_names_from_schedulers(trainer.lr_scheduler_configs)
        opt_names, _ = self._find_names_from_optimizers(trainer.optimizers, seen, seen_types)
        names = [n for group in sched_names + opt_names for n in group]
        self.lrs = {name: [] for name in names}
        self.last_momentum_values = {f"{name}-momentum": None for name in names}
        self.last_weight_decay_values = {f"{name}-weight_decay": None for name in names}

    @staticmethod
    def _should_log(trainer: Any) -> bool:
        every = getattr(trainer, "log_every_n_steps", 50) or 1
        return (_batches_that_stepped(trainer) + 1) % every == 0 or bool(
            getattr(trainer, "should_stop", False)
        )

    def on_train_batch_start(self, trainer: Any, *args: Any, **kwargs: Any) -> None:
        if self.logging_interval == "epoch" or not self._should_log(trainer):
            return
        interval = "step" if self.logging_interval is None else "any"
        self._log(trainer, interval)

    def on_train_epoch_start(self, trainer: Any, *args: Any, **kwargs: Any) -> None:
        if self.logging_interval == "step":
            return
        interval = "epoch" if self.logging_interval is None else "any"
        self._log(trainer, interval)

    def _log(self, trainer: Any, interval: str) -> None:
        if not trainer.loggers:
            return
        stats = self._extract_stats(trainer, interval)
        if stats:
            step = _batches_that_stepped(trainer)
            for logger in trainer.loggers:
                logger.log_metrics(metrics=stats, step=step)

    def _extract_stats(self, trainer: Any, interval: str) -> dict[str, float]:
        latest: dict[str, float] = {}
        configs = list(trainer.lr_scheduler_configs or [])
        sched_names, seen, seen_types = self._find_names_from_schedulers(configs)
        self._remap_keys(sched_names)
        for names, config in zip(sched_names, configs, strict=True):
            if interval in (config.interval, "any"):
                latest.update(self._get_optimizer_stats(config.scheduler.optimizer, names))
        opt_names, without_scheduler = self._find_names_from_optimizers(trainer.optimizers, seen, seen_types)
        self._remap_keys(opt_names)
        for opt, names in zip(without_scheduler, opt_names, strict=True):
            latest.update(self._get_optimizer_stats(opt, names))
        metrics = getattr(trainer, "callback_metrics", None)
        if latest and isinstance(metrics, dict):
            import torch

            device = getattr(getattr(trainer, "strategy", None), "root_device", None)
            metrics.update({k: torch.tensor(v, device=device) for k, v in latest.items()})
        return latest

    def _get_optimizer_stats(self, optimizer: Any, names: list[str]) -> dict[str, float]:
        stats: dict[str, float] = {}
        use_betas = "betas" in optimizer.defaults
        for pg, name in zip(optimizer.param_groups, names, strict=True):
            lr = float(pg["lr"])
            self.lrs.setdefault(name, []).append(lr)
            stats[name] = lr
            if self.log_momentum:
                momentum = pg["betas"][0] if use_betas else pg.get("momentum", 0)
                self.last_momentum_values[f"{name}-momentum"] = momentum
                stats[f"{name}-momentum"] = float(momentum)
            if self.log_weight_decay:
                wd = pg.get("weight_decay", 0)
                self.last_weight_decay_values[f"{name}-weight_decay"] = wd
                stats[f"{name}-weight_decay"] = float(wd)
        return stats

    def _remap_keys(self, names: list[list[str]], token: str = "/pg1") -> None:
        """A group that became one of several renames ``lr-Adam`` to ``lr-Adam/pg1`` in ``self.lrs``."""
        for group in names:
            for new_name in group:
                old_name = new_name.replace(token, "")
                if token in new_name and old_name in self.lrs:
                    self.lrs[new_name] = self.lrs.pop(old_name)
                elif new_name not in self.lrs:
                    self.lrs[new_name] = []

    def _find_names_from_schedulers(
        self, configs: list[Any]
    ) -> tuple[list[list[str]], list[Any], defaultdict[Any, int]]:
        names: list[list[str]] = []
        seen: list[Any] = []
        seen_types: defaultdict[Any, int] = defaultdict(int)
        for config in configs:
            opt = config.scheduler.optimizer
            name = config.name if getattr(config, "name", None) is not None else "lr-" + type(opt).__name__
            names.append(self._check_duplicates_and_update_name(opt, name, seen, seen_types, config))
        return names, seen, seen_types

    def _find_names_from_optimizers(
        self, optimizers: list[Any], seen: list[Any], seen_types: defaultdict[Any, int]
    ) -> tuple[list[list[str]], list[Any]]:
        names: list[list[str]] = []
        without: list[Any] = []
        for opt in optimizers:
            opt = getattr(opt, "optimizer", opt)  # LightningOptimizer-style wrappers
            if any(opt is s for s in seen):
                continue
            name = "lr-" + type(opt).__name__
            names.append(self._check_duplicates_and_update_name(opt, name, seen, seen_types, None))
            without.append(opt)
        return names, without

    def _check_duplicates_and_update_name(
        self, optimizer: Any, name: str, seen: list[Any], seen_types: defaultdict[Any, int], config: Any
    ) -> list[str]:
        seen.append(optimizer)
        cls = type(optimizer)
        if config is None or getattr(config, "name", None) is None:
            seen_types[cls] += 1
        groups = optimizer.param_groups
        group_names = [pg["name"] for pg in groups if "name" in pg]
        duplicates = {n for n in group_names if group_names.count(n) > 1}
        if duplicates:
            raise MisconfigurationException(
                f"A single {cls.__name__} optimizer has parameter groups with the same name {sorted(duplicates)}; "
                "give each parameter group a unique 'name'."
            )
        if cls in seen_types and seen_types[cls] > 1:
            name = f"{name}-{seen_types[cls] - 1}"
        return [self._add_suffix(name, groups, i) for i in range(len(groups))]

    @staticmethod
    def _add_suffix(name: str, groups: list[dict[str, Any]], index: int) -> str:
        if len(groups) > 1:
            return f"{name}/{groups[index].get('name', f'pg{index + 1}')}"
        pg_name = groups[index].get("name")
        return f"{name}/{pg_name}" if pg_name else name


def _batches_that_stepped(trainer: Any) -> int:
    loop = getattr(getattr(trainer, "fit_loop", None), "epoch_loop", None)
    value = getattr(loop, "_batches_that_stepped", None)
    return int(value) if value is not None else int(trainer.global_step)


__all__ = ["LearningRateMonitor"]
