"""``HookDispatcher``: which callbacks and which module hooks a run calls, resolved once per run.

For every callback hook the dispatcher holds the bound methods of the callbacks whose class overrides
``Callback``'s no-op; for the module, the bound hook when its class overrides ``LightningModule``'s
default. Asking for a hook nobody overrides is a dict lookup that gives an empty list (or None), so the
loops skip it without a call.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from trainer_core.callbacks.callback import CALLBACK_HOOKS, Callback
from trainer_core.core.module import LightningModule

if TYPE_CHECKING:
    from trainer_core.trainer.results import ResultCollection

Hook = Callable[..., Any]

# callbacks that read the epoch's metrics in on_train_epoch_end: they run after the module's hook (Lightning's order)
_MONITORING_HOOKS = ("on_train_epoch_end",)


def is_overridden(name: str, obj: Any, base: type) -> bool:
    """Whether ``type(obj)`` defines ``name`` other than ``base`` does (False for ``obj=None``)."""
    if obj is None:
        return False
    attr = getattr(type(obj), name, None)
    return attr is not None and attr is not getattr(base, name, None)


class _NoResults:
    """The results holder of a dispatcher that has none: no ``fx`` to set."""

    results: ResultCollection | None = None


class HookDispatcher:
    """The hooks of one run: the trainer, its callbacks (in order) and the module.

    ``results_holder`` is the object whose ``results`` attribute is the collection being logged into
    (the Trainer's logger connector); ``call`` names it as the current ``fx`` before calling.
    """

    def __init__(
        self,
        trainer: Any,
        callbacks: Sequence[Callback],
        module: LightningModule | None,
        results_holder: Any = None,
    ) -> None:
        from trainer_core.callbacks.early_stopping import EarlyStopping
        from trainer_core.callbacks.model_checkpoint import ModelCheckpoint

        self.trainer = trainer
        self.module = module
        self._holder = results_holder if results_holder is not None else _NoResults()
        self.callbacks: dict[str, list[Hook]] = {}
        for name in CALLBACK_HOOKS:
            base = getattr(Callback, name)
            self.callbacks[name] = [getattr(cb, name) for cb in callbacks if getattr(type(cb), name, base) is not base]
        monitoring = (EarlyStopping, ModelCheckpoint)
        self.callbacks_monitoring: dict[str, list[Hook]] = {}
        self.callbacks_non_monitoring: dict[str, list[Hook]] = {}
        for name in _MONITORING_HOOKS:
            base = getattr(Callback, name)
            overriding = [cb for cb in callbacks if getattr(type(cb), name, base) is not base]
            self.callbacks_monitoring[name] = [getattr(cb, name) for cb in overriding if isinstance(cb, monitoring)]
            self.callbacks_non_monitoring[name] = [
                getattr(cb, name) for cb in overriding if not isinstance(cb, monitoring)
            ]
        self._module_overridden: dict[str, Hook | None] = {}

    def module_hook(self, name: str) -> Hook | None:
        """The module's bound hook when its class overrides ``LightningModule``'s default, else None."""
        try:
            return self._module_overridden[name]
        except KeyError:
            module = self.module
            hook = getattr(module, name) if is_overridden(name, module, LightningModule) else None
            self._module_overridden[name] = hook
            return hook

    def caller(self, name: str, results: ResultCollection | None = None) -> Hook | None:
        """One callable for a per-batch hook: it names ``name`` as ``results.fx`` (when given), calls the
        overriding callbacks' ``name(trainer, module, *args)``, then the module's override ``name(*args)``.
        None when nobody overrides the hook, so the loop skips it with one ``is None`` test."""
        callbacks = self.callbacks.get(name, [])
        module_hook = self.module_hook(name)
        if not callbacks and module_hook is None:
            return None
        trainer, module = self.trainer, self.module

        def call(*args: Any) -> None:
            if results is not None:
                results.fx = name
            for hook in callbacks:
                hook(trainer, module, *args)
            if module_hook is not None:
                module_hook(*args)

        return call

    def call(self, name: str, *args: Any, module_only: bool = False) -> None:
        """Callbacks' ``name(trainer, module, *args)`` then the module's ``name(*args)`` (its default too)."""
        results = self._holder.results
        if results is not None:
            results.fx = name
        module = self.module
        if not module_only:
            trainer = self.trainer
            for hook in self.callbacks.get(name, ()):
                hook(trainer, module, *args)
        fn = getattr(module, name, None)
        if fn is not None:
            fn(*args)

    def call_callbacks(self, name: str, *args: Any) -> None:
        """Only the callbacks' ``name(trainer, module, *args)``."""
        trainer, module = self.trainer, self.module
        for hook in self.callbacks.get(name, ()):
            hook(trainer, module, *args)


__all__ = ["HookDispatcher", "is_overridden"]
