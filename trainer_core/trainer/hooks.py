"""``HookDispatcher``: which callbacks and which module hooks a run calls, resolved once per run.

Lightning calls hooks by attribute lookup, whatever they are. The dispatcher does the same, minus the base
classes' empty defaults: for every callback hook it holds what ``getattr(callback, name)`` gives when that is
not ``Callback``'s no-op (a subclass override, a function assigned on the instance, a ``Mock(spec=Callback)``
attribute), and likewise for the module against ``LightningModule``'s defaults
(``utilities.model_helpers.hook_is_active``). It is resolved once per run; asking for a hook nobody
overrides is a dict lookup that gives an empty list (or None), so the loops skip it without a call.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from trainer_core.callbacks.callback import CALLBACK_HOOKS, Callback
from trainer_core.core.module import LightningModule
from trainer_core.utilities.model_helpers import hook_is_active
from trainer_core.utilities.model_helpers import is_overridden as _lightning_is_overridden

if TYPE_CHECKING:
    from trainer_core.trainer.results import ResultCollection

Hook = Callable[..., Any]

# callbacks that read the epoch's metrics in on_train_epoch_end: they run after the module's hook (Lightning's order)
_MONITORING_HOOKS = ("on_train_epoch_end",)


def is_overridden(name: str, obj: Any, base: type) -> bool:
    """Lightning's ``is_overridden``: whether ``obj.name`` is other than ``base``'s (False for ``obj=None`` and
    for an attribute set to None; a method assigned on the instance counts)."""
    if obj is None:
        return False
    if getattr(base, name, None) is None:
        return getattr(obj, name, None) is not None
    return _lightning_is_overridden(name, obj, base)


_REMOVED_EPOCH_END = {
    "fit": (("training_epoch_end", "on_train_epoch_end"), ("validation_epoch_end", "on_validation_epoch_end")),
    "validate": (("validation_epoch_end", "on_validation_epoch_end"),),
    "test": (("test_epoch_end", "on_test_epoch_end"),),
}


def verify_no_removed_hooks(model: LightningModule, fn: str) -> None:
    """Lightning's ``configuration_validator``: a module still defining a 1.x ``*_epoch_end`` hook raises
    NotImplementedError before the run starts (``fn``: "fit", "validate", "test" or "predict")."""
    for old, new in _REMOVED_EPOCH_END.get(fn, ()):
        if callable(getattr(model, old, None)):
            raise NotImplementedError(
                f"Support for `{old}` has been removed in v2.0.0. `{type(model).__name__}` implements this method. "
                f"You can use the `{new}` hook instead. To access outputs, save them in-memory as instance "
                "attributes. You can find migration examples in https://github.com/Lightning-AI/pytorch-lightning/pull/16520."
            )


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
            self.callbacks[name] = [getattr(cb, name) for cb in callbacks if hook_is_active(cb, name, Callback)]
        monitoring = (EarlyStopping, ModelCheckpoint)
        self.callbacks_monitoring: dict[str, list[Hook]] = {}
        self.callbacks_non_monitoring: dict[str, list[Hook]] = {}
        for name in _MONITORING_HOOKS:
            overriding = [cb for cb in callbacks if hook_is_active(cb, name, Callback)]
            self.callbacks_monitoring[name] = [getattr(cb, name) for cb in overriding if isinstance(cb, monitoring)]
            self.callbacks_non_monitoring[name] = [
                getattr(cb, name) for cb in overriding if not isinstance(cb, monitoring)
            ]
        self._module_overridden: dict[str, Hook | None] = {}

    def module_hook(self, name: str) -> Hook | None:
        """The module's hook when it is not ``LightningModule``'s default (instance attributes count), else None."""
        try:
            return self._module_overridden[name]
        except KeyError:
            module = self.module
            hook = getattr(module, name) if hook_is_active(module, name, LightningModule) else None
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


__all__ = ["HookDispatcher", "is_overridden", "verify_no_removed_hooks"]
