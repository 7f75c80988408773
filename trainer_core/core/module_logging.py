"""``LightningModule.log`` and ``log_dict``: checks the value, then hands it to the trainer's results.

A mixin of ``trainer_core.core.module.LightningModule`` (split out of ``module.py``); the reduction is in
``trainer/results.py`` and the sending in ``trainer/logger_connector.py``.
"""

from __future__ import annotations

import numbers
import warnings
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from trainer_core.utilities.exceptions import MisconfigurationException, _MisconfigurationRuntimeError
from trainer_core.utilities.rank_zero import rank_zero_warn


class _ModuleLoggingMixin(nn.Module):
    """``log`` and ``log_dict`` of ``LightningModule``."""

    if TYPE_CHECKING:
        _trainer: Any  # set by LightningModule.__init__ and the ``trainer`` setter

    def log(
        self,
        name: str,
        value: Any,
        prog_bar: bool = False,
        logger: bool | None = None,
        on_step: bool | None = None,
        on_epoch: bool | None = None,
        reduce_fx: Any = "mean",
        enable_graph: bool = False,
        sync_dist: bool = False,
        sync_dist_group: Any = None,
        add_dataloader_idx: bool = True,
        batch_size: int | None = None,
        metric_attribute: str | None = None,
        rank_zero_only: bool = False,
    ) -> None:
        """Record a scalar or a ``torchmetrics.Metric`` (Lightning's ``LightningModule.log``); the trainer reduces
        it per step and/or per epoch (``trainer/results.py``) and sends it (``trainer/logger_connector.py``).

        ``sync_dist=True`` reduces the value across processes with ``trainer.strategy.reduce`` (``reduce_fx``'s op;
        ``sync_dist_group``: the process group): the step value when logged, the epoch value when computed. It has
        nothing to do when one process runs; ``rank_zero_only=True`` logs without syncing (as Lightning).
        """
        trainer = self._trainer
        if trainer is None:
            # not an error, so that the `*_step` methods can be tested without a Trainer (as Lightning)
            warnings.warn(
                "You are trying to `self.log()` but the `self.trainer` reference is not registered on the "
                "model yet. This is most likely because the model hasn't been passed to the `Trainer`",
                stacklevel=2,
            )
            return
        if trainer.barebones:
            rank_zero_warn(
                "You are trying to `self.log()` but `Trainer(barebones=True)` is configured."
                " Logging can impact raw speed so it is disabled under this setting."
            )
            return
        connector = trainer._logger_connector
        results = connector.results
        if results is None:
            raise MisconfigurationException(
                "You are trying to `self.log()` but the loop's result collection is not registered"
                " yet. This is most likely because you are trying to log in a `predict` hook,"
                " but it doesn't support logging"
            )
        if results.fx is None:
            raise _MisconfigurationRuntimeError(
                "You are trying to `self.log()` but it is not managed by the `Trainer` control flow"
            )
        if isinstance(value, Tensor):
            if value.numel() != 1:
                raise ValueError(
                    f"`self.log({name}, {value})` was called, but the tensor must have a single element. "
                    f"You can try doing `self.log({name}, {value}.mean())`"
                )
            value = value.detach()
            if value.dim():
                value = value.reshape(())
            if value.dtype in (torch.float16, torch.bfloat16):
                value = value.float()  # as Lightning: metrics are float32 (or float64) whatever the step's dtype
        elif isinstance(value, numbers.Number):
            # float32 (float64 under "64-true"), never the half dtype a "*16-true" step runs under
            dtype = torch.float64 if torch.get_default_dtype() is torch.float64 else torch.float32
            value = torch.tensor(float(value), dtype=dtype)  # type: ignore[arg-type]
        elif isinstance(value, Mapping):
            raise ValueError(f"self.log({name!r}, value) got a dict; use self.log_dict for several values.")
        elif not _results_module().is_metric(value):
            raise ValueError(
                f"`self.log({name}, {value})` was called, but `{type(value).__name__}` values cannot be logged"
            )
        elif metric_attribute is None:
            metric_attribute, self._metric_attributes = _results_module().find_metric_attribute(
                self, value, name, self.__dict__.get("_metric_attributes")
            )
        if logger and not trainer.loggers:
            rank_zero_warn(
                f"You called `self.log({name!r}, ..., logger=True)` but have no logger configured. You can enable one"
                " by doing `Trainer(logger=ALogger(...))`"
            )
        strategy = trainer.strategy
        sync = bool(sync_dist) and strategy.is_distributed  # Lightning: `sync_dist and ..._connector.is_distributed`
        connector.log(name, value, prog_bar, logger, on_step, on_epoch, reduce_fx, add_dataloader_idx, batch_size,
                      metric_attribute, enable_graph, sync_dist=sync, sync_dist_fn=strategy.reduce if sync else None,
                      sync_dist_group=sync_dist_group, rank_zero_only=rank_zero_only)

    def log_dict(
        self,
        dictionary: Mapping[str, Any],
        prog_bar: bool = False,
        logger: bool | None = None,
        on_step: bool | None = None,
        on_epoch: bool | None = None,
        reduce_fx: Any = "mean",
        enable_graph: bool = False,
        sync_dist: bool = False,
        sync_dist_group: Any = None,
        add_dataloader_idx: bool = True,
        batch_size: int | None = None,
        rank_zero_only: bool = False,
    ) -> None:
        """``self.log`` for each item; a ``torchmetrics.MetricCollection`` logs each of its metrics."""
        items: Any = dictionary.items()
        if _results_module().is_metric_collection(dictionary):
            kwargs: dict[str, bool] = {"keep_base": False}
            if getattr(dictionary, "_enable_compute_groups", False):
                kwargs["copy_state"] = False
            items = dictionary.items(**kwargs)
        for k, v in items:
            self.log(
                k,
                v,
                prog_bar=prog_bar,
                logger=logger,
                on_step=on_step,
                on_epoch=on_epoch,
                reduce_fx=reduce_fx,
                enable_graph=enable_graph,
                sync_dist=sync_dist,
                sync_dist_group=sync_dist_group,
                add_dataloader_idx=add_dataloader_idx,
                batch_size=batch_size,
                rank_zero_only=rank_zero_only,
            )


def _results_module() -> Any:
    """``trainer_core.trainer.results`` (imported late: the trainer package imports this module)."""
    from trainer_core.trainer import results

    return results
