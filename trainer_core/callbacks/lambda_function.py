"""``LambdaCallback``: a callback made of plain functions, one per hook."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from trainer_core.callbacks.callback import CALLBACK_HOOKS, Callback

_LAMBDA_HOOKS = tuple(h for h in CALLBACK_HOOKS)


def _forward(fn: Callable[..., Any]) -> Callable[..., Any]:
    def hook(self: Callback, *args: Any, **kwargs: Any) -> Any:
        return fn(*args, **kwargs)

    return hook


class LambdaCallback(Callback):
    """``LambdaCallback(on_train_epoch_end=lambda trainer, pl_module: ...)``: each given function is a hook.

    As in Lightning, the functions are set on the instance and are called with the hook's arguments
    (``trainer, pl_module, ...``). Each instance also gets its own subclass whose methods forward to the
    functions, so a trainer that looks for hooks overridden on the class finds them too.
    """

    def __init__(self, **hooks: Callable[..., Any] | None) -> None:
        unknown = sorted(set(hooks) - set(_LAMBDA_HOOKS))
        if unknown:
            raise TypeError(f"LambdaCallback got unexpected hook names: {unknown}")
        given = {name: fn for name, fn in hooks.items() if fn is not None}
        if given:
            cls = type(type(self).__name__, (type(self),), {name: _forward(fn) for name, fn in given.items()})
            cls.__qualname__ = type(self).__qualname__
            cls.__module__ = type(self).__module__
            self.__class__ = cls
        for name, fn in given.items():
            setattr(self, name, fn)

    def __reduce__(self) -> Any:
        # the per-instance class is not importable: rebuild from the functions (picklable ones only)
        hooks = {name: self.__dict__[name] for name in _LAMBDA_HOOKS if name in self.__dict__}
        return (_rebuild, (hooks,))


def _rebuild(hooks: dict[str, Callable[..., Any]]) -> LambdaCallback:
    return LambdaCallback(**hooks)


__all__ = ["LambdaCallback"]
