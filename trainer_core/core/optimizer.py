"""``LightningOptimizer``: what ``self.optimizers()`` returns, as in Lightning 2.6 (``lightning.pytorch.core.optimizer``).

The wrapper's class is a dynamic subclass ``Lightning<OptimizerClass>`` of both ``LightningOptimizer`` and the
wrapped optimizer's class, so ``isinstance(opt, torch.optim.SGD)`` holds; attributes it does not define
(``param_groups``, ``state``, ``defaults`` ...) are the wrapped optimizer's. ``step`` goes through the run's
precision (set by the Trainer at fit start), runs ``on_before_optimizer_step`` after the closure, and counts
towards ``global_step`` in manual optimization (the manual-optimization loop installs the counters).
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from contextlib import contextmanager
from functools import partial
from typing import TYPE_CHECKING, Any

from torch.optim import Optimizer

from trainer_core.utilities.exceptions import MisconfigurationException

if TYPE_CHECKING:
    from trainer_core.core.module import LightningModule

# (raw optimizer, closure, **kwargs) -> the step's output: the precision's optimizer step
StepFn = Callable[..., Any]


def do_nothing_closure() -> None:
    return None


def _plain_step(optimizer: Optimizer, closure: Callable[[], Any] | None, **kwargs: Any) -> Any:
    return optimizer.step(closure=closure, **kwargs)


def _call_hook(trainer: Any, name: str, *args: Any) -> None:
    """The run's callbacks' ``name(trainer, module, *args)`` then the module's ``name(*args)``, skipped when nobody
    overrides it; what ``self.log`` writes to is named ``name`` first (Lightning's ``_call_callback_hooks`` and
    ``_call_lightning_module_hook``). For the hooks fired from user code: ``manual_backward``, ``opt.step()``."""
    hooks = trainer._hooks
    callbacks = hooks.callbacks.get(name, ())
    module_hook = hooks.module_hook(name)
    if not callbacks and module_hook is None:
        return
    results = trainer._logger_connector.results
    if results is not None:
        results.fx = name
    module = trainer.lightning_module
    for hook in callbacks:
        hook(trainer, module, *args)
    if module_hook is not None:
        module_hook(*args)


def _after_closure(trainer: Any, optimizer: Optimizer) -> None:
    """After the closure of a ``LightningOptimizer.step``: ``on_before_optimizer_step`` and, in automatic
    optimization, ``configure_gradient_clipping`` with the Trainer's values (Lightning's ``Precision._after_closure``)."""
    _call_hook(trainer, "on_before_optimizer_step", optimizer)
    module = trainer.lightning_module
    if module is not None and module.automatic_optimization:
        results = trainer._logger_connector.results
        if results is not None:
            results.fx = "configure_gradient_clipping"
        module.configure_gradient_clipping(
            optimizer,
            gradient_clip_val=trainer.gradient_clip_val,
            gradient_clip_algorithm=trainer.gradient_clip_algorithm,
        )


class _ClosureThen:
    """``closure()``, then ``after(optimizer)``: the closure an optimizer steps with, so that hooks after the
    backward (``on_before_optimizer_step``, clipping) see the gradients (Lightning's ``_wrap_closure``)."""

    __slots__ = ("after", "closure", "optimizer")

    def __init__(self, closure: Callable[[], Any], after: Callable[[Optimizer], None], optimizer: Optimizer) -> None:
        self.closure = closure
        self.after = after
        self.optimizer = optimizer

    def __call__(self) -> Any:
        result = self.closure()
        self.after(self.optimizer)
        return result


class LightningOptimizer:
    """Wraps a user optimizer: ``step`` through the precision plugin, hooks, progress; ``isinstance`` of the
    wrapped optimizer's class."""

    _optimizer: Optimizer

    def __init__(self, optimizer: Optimizer) -> None:
        self._optimizer = optimizer
        self._module: LightningModule | None = None
        # the precision's optimizer step and what runs after the closure (on_before_optimizer_step, clipping):
        # set for a run by ``_to_lightning_optimizer``
        self._step_fn: StepFn = _plain_step
        self._after_closure: Callable[[Optimizer], None] | None = None
        # to inject logic around the optimizer step (the manual-optimization loop counts steps with them)
        self._on_before_step: Callable[[], None] = do_nothing_closure
        self._on_after_step: Callable[[], None] = do_nothing_closure
        # imitate the class of the wrapped object so that isinstance checks work (Lightning does the same)
        self.__class__ = type("Lightning" + optimizer.__class__.__name__, (self.__class__, optimizer.__class__), {})

    @property
    def optimizer(self) -> Optimizer:
        return self._optimizer

    @classmethod
    def _to_lightning_optimizer(cls, optimizer: Optimizer | LightningOptimizer, trainer: Any) -> LightningOptimizer:
        """``optimizer`` wrapped for ``trainer``'s run (a ``LightningOptimizer`` from ``configure_optimizers`` is
        kept): it steps through the run's precision, with Lightning's hooks after the closure."""
        lightning_optimizer = optimizer if isinstance(optimizer, LightningOptimizer) else cls(optimizer)
        lightning_optimizer._step_fn = trainer._precision.optimizer_step
        lightning_optimizer._after_closure = partial(_after_closure, trainer)
        lightning_optimizer._module = trainer.lightning_module
        return lightning_optimizer

    @contextmanager
    def toggle_model(self, sync_grad: bool = True) -> Generator[None, None, None]:
        """Only this optimizer's parameters require grad inside the block (``sync_grad`` matters only with several
        processes, which this single-device trainer does not run)."""
        module = self._module
        if module is None:
            raise RuntimeError("`toggle_model` needs the optimizer to be attached to a running `Trainer`.")
        module.toggle_optimizer(self)
        yield
        module.untoggle_optimizer(self)

    def step(self, closure: Callable[[], Any] | None = None, **kwargs: Any) -> Any:
        """One optimization step: runs ``closure`` (when given), ``on_before_optimizer_step``, then the update."""
        self._on_before_step()
        after = self._after_closure
        optimizer = self._optimizer
        if closure is None:
            # nothing to run first: the hooks, then the step (a precision may skip a step whose closure gave None)
            if after is not None:
                after(optimizer)
            output = self._step_fn(optimizer, None, **kwargs)
        elif not callable(closure):
            raise MisconfigurationException("When `optimizer.step(closure)` is called, the closure should be callable")
        elif after is not None:
            output = self._step_fn(optimizer, _ClosureThen(closure, after, optimizer), **kwargs)
        else:
            output = self._step_fn(optimizer, closure, **kwargs)
        self._on_after_step()
        return output

    def __getattr__(self, item: str) -> Any:
        if item == "_optimizer":
            # not set yet (an object made without __init__, e.g. by copy/pickle): no wrapped optimizer to ask
            raise AttributeError(item)
        return getattr(self._optimizer, item)


__all__ = ["LightningOptimizer", "do_nothing_closure"]
