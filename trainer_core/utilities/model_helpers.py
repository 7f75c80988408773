"""``is_overridden``: whether an object's method differs from its Lightning base class's."""

from __future__ import annotations

from functools import partial
from typing import Any
from unittest.mock import Mock


def _code_of(attr: Any) -> Any:
    """The ``__code__`` behind a method, unwrapping ``functools.wraps``, ``Mock(wraps=...)`` and ``partial``."""
    if hasattr(attr, "__wrapped__"):
        attr = attr.__wrapped__
    if isinstance(attr, Mock):
        attr = attr._mock_wraps
    elif isinstance(attr, partial):
        attr = attr.func
    if attr is None:
        return None
    return getattr(attr, "__code__", attr)


def _default_parent(instance: object) -> type:
    from trainer_core.callbacks.callback import Callback
    from trainer_core.core.datamodule import LightningDataModule
    from trainer_core.core.module import LightningModule

    for parent in (LightningModule, LightningDataModule, Callback):
        if isinstance(instance, parent):
            return parent
    raise ValueError("Expected a parent")


def is_overridden(method_name: str, instance: object | None = None, parent: type | None = None) -> bool:
    """Lightning's ``is_overridden``: True when ``instance.method_name`` is not the ``parent``'s implementation.

    ``parent`` defaults to ``LightningModule``, ``LightningDataModule`` or ``Callback``, whichever
    ``instance`` is. Methods assigned on the instance count; a ``Mock(wraps=f)`` counts as ``f``.
    """
    if instance is None:
        return False
    if parent is None:
        parent = _default_parent(instance)
    instance_attr = getattr(instance, method_name, None)
    if instance_attr is None:
        return False
    code = _code_of(instance_attr)
    if code is None:
        return False
    parent_attr = getattr(parent, method_name, None)
    if parent_attr is None:
        raise ValueError("The parent should define the method")
    return bool(code != parent_attr.__code__)


def hook_is_active(instance: object | None, method_name: str, parent: type) -> bool:
    """Whether the trainer must call ``instance.method_name``: what Lightning would call, minus no-op defaults.

    Lightning calls every callback's hook and the module's hook whatever they are; skipping the base class's
    empty default is the only shortcut allowed. So a hook assigned on the instance, a ``Mock(spec=Callback)``
    attribute or a ``Mock(wraps=...)`` counts as active.
    """
    if instance is None:
        return False
    attr = getattr(instance, method_name, None)
    if attr is None or not callable(attr):
        return False
    if isinstance(attr, Mock):
        return True
    func = getattr(attr, "__func__", attr)
    return func is not getattr(parent, method_name, None)


__all__ = ["hook_is_active", "is_overridden"]
