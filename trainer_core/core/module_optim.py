"""``LightningModule``'s optimization API: ``optimizers()``, ``lr_schedulers()``, ``manual_backward``,
optimizer toggling, ``clip_gradients`` and the overridable optimizer/scheduler step hooks.

A mixin of ``trainer_core.core.module.LightningModule`` (split out of ``module.py``); use it through
``LightningModule``.
"""

from __future__ import annotations

from collections.abc import Generator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from trainer_core.core.optimizer import _call_hook
from trainer_core.utilities.exceptions import MisconfigurationException, _MisconfigurationRuntimeError

if TYPE_CHECKING:
    from trainer_core.trainer.trainer import Trainer


class _ModuleOptimMixin(nn.Module):
    """The optimization methods and hooks of ``LightningModule``."""

    if TYPE_CHECKING:
        # defined by LightningModule
        @property
        def trainer(self) -> Trainer: ...
        @property
        def automatic_optimization(self) -> bool: ...

    def optimizers(self, use_pl_optimizer: bool = True) -> Any:
        trainer = self.trainer
        opts = trainer._lightning_optimizers if use_pl_optimizer else trainer.optimizers
        if isinstance(opts, list) and len(opts) == 1:
            return opts[0]
        return opts

    def lr_schedulers(self) -> Any:
        configs = self.trainer.lr_scheduler_configs
        if not configs:
            return None
        schedulers = [c.scheduler for c in configs]
        return schedulers[0] if len(schedulers) == 1 else schedulers

    def manual_backward(self, loss: Tensor, *args: Any, **kwargs: Any) -> None:
        if self.automatic_optimization:
            raise _MisconfigurationRuntimeError(
                "to use manual_backward, please disable automatic optimization:"
                " set model property `automatic_optimization` as False"
            )
        # Lightning's strategy.backward: on_before_backward, the precision's backward, on_after_backward
        trainer = self.trainer
        _call_hook(trainer, "on_before_backward", loss)
        trainer.strategy.pre_backward(loss)
        trainer._precision.backward(self, loss, *args, **kwargs)
        _call_hook(trainer, "on_after_backward")

    def backward(self, loss: Tensor, *args: Any, **kwargs: Any) -> None:
        loss.backward(*args, **kwargs)  # type: ignore[no-untyped-call]

    def toggle_optimizer(self, optimizer: Any) -> None:
        """Only the given optimizer's parameters require grad until ``untoggle_optimizer``."""
        optimizer = getattr(optimizer, "optimizer", optimizer)
        keep = {id(p) for g in optimizer.param_groups for p in g["params"]}
        self._param_requires_grad_state: dict[int, tuple[Tensor, bool]] = {}
        for opt in self.trainer.optimizers:
            for g in opt.param_groups:
                for p in g["params"]:
                    if id(p) not in keep and id(p) not in self._param_requires_grad_state:
                        self._param_requires_grad_state[id(p)] = (p, p.requires_grad)
                        p.requires_grad = False

    @contextmanager
    def toggled_optimizer(self, optimizer: Any) -> Generator[None, None, None]:
        """``with self.toggled_optimizer(opt):`` toggles ``opt`` for the block, then untoggles it."""
        self.toggle_optimizer(optimizer)
        try:
            yield
        finally:
            self.untoggle_optimizer(optimizer)

    def untoggle_optimizer(self, optimizer: Any) -> None:
        for p, flag in getattr(self, "_param_requires_grad_state", {}).values():
            p.requires_grad = flag
        self._param_requires_grad_state = {}

    def clip_gradients(
        self,
        optimizer: Any,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str | None = None,
    ) -> None:
        # Lightning's: the Trainer's values are the defaults, and passing other ones than the Trainer's is an error
        trainer = self.trainer
        trainer_val, trainer_algorithm = trainer.gradient_clip_val, trainer.gradient_clip_algorithm
        if gradient_clip_val is None:
            gradient_clip_val = trainer_val or 0.0
        elif trainer_val is not None and trainer_val != gradient_clip_val:
            raise MisconfigurationException(
                f"You have set `Trainer(gradient_clip_val={trainer_val!r})`"
                f" and have passed `clip_gradients(gradient_clip_val={gradient_clip_val!r})`."
                " Please use only one of them."
            )
        if gradient_clip_algorithm is None:
            algorithm = trainer_algorithm or "norm"
        else:
            algorithm = gradient_clip_algorithm.lower()
            if trainer_algorithm is not None and trainer_algorithm != algorithm:
                raise MisconfigurationException(
                    f"You have set `Trainer(gradient_clip_algorithm={getattr(trainer_algorithm, 'value', trainer_algorithm)!r})`"
                    f" and have passed `clip_gradients(gradient_clip_algorithm={algorithm!r})"
                    " Please use only one of them."
                )
        if not isinstance(gradient_clip_val, (int, float)):
            raise TypeError(f"`gradient_clip_val` should be an int or a float. Got {gradient_clip_val}.")
        if algorithm not in ("value", "norm"):
            raise MisconfigurationException(
                f"`gradient_clip_algorithm` {algorithm} is invalid. Allowed algorithms: ['value', 'norm']."
            )
        if gradient_clip_val <= 0:
            return
        optimizer = getattr(optimizer, "optimizer", optimizer)
        trainer._precision.unscale_gradients(optimizer)
        params = [p for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
        if algorithm == "value":
            torch.nn.utils.clip_grad_value_(params, gradient_clip_val)
        else:
            torch.nn.utils.clip_grad_norm_(params, gradient_clip_val)

    def configure_gradient_clipping(
        self,
        optimizer: Any,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str | None = None,
    ) -> None:
        self.clip_gradients(optimizer, gradient_clip_val=gradient_clip_val, gradient_clip_algorithm=gradient_clip_algorithm)

    def optimizer_step(self, epoch: int, batch_idx: int, optimizer: Any, optimizer_closure: Any = None) -> None:
        optimizer.step(closure=optimizer_closure)

    def optimizer_zero_grad(self, epoch: int, batch_idx: int, optimizer: Any) -> None:
        optimizer.zero_grad(set_to_none=True)

    def lr_scheduler_step(self, scheduler: Any, metric: Any) -> None:
        if metric is None:
            scheduler.step()
        else:
            scheduler.step(metric)
