"""``Trainer.fit`` on a ``torch.compile``'d LightningModule (Lightning's ``utilities/compile.py``)."""

from __future__ import annotations

import sys
from typing import Any

_STEPS = ("forward", "training_step", "validation_step", "test_step", "predict_step")


def _optimized_module_type() -> type | None:
    """``OptimizedModule``, when ``torch.compile`` was used (importing ``torch._dynamo`` costs seconds otherwise)."""
    eval_frame = sys.modules.get("torch._dynamo.eval_frame")
    return getattr(eval_frame, "OptimizedModule", None) if eval_frame is not None else None


def from_compiled(compiled: Any) -> Any:
    """The LightningModule inside ``torch.compile(module)``, its ``forward`` and ``*_step`` methods compiled the same
    way (the originals kept in ``module._compiler_ctx`` for ``to_uncompiled``)."""
    from trainer_core.core.module import LightningModule

    optimized = _optimized_module_type()
    if optimized is None or not isinstance(compiled, optimized):
        raise ValueError(f"`model` is required to be a `OptimizedModule`. Found a `{type(compiled).__name__}` instead.")
    model: Any = compiled
    orig = model._orig_mod
    if not isinstance(orig, LightningModule):
        raise ValueError(
            f"`model` is expected to be a compiled LightningModule. Found a `{type(orig).__name__}` instead"
        )
    ctx: dict[str, Any] = {"compiler": "dynamo", "dynamo_ctx": model.dynamo_ctx}
    for name in _STEPS:
        ctx[f"original_{name}"] = getattr(orig, name)
    setattr(orig, "_compiler_ctx", ctx)  # noqa: B010 - not a Module attribute (nn.Module's __setattr__ types)
    for name in _STEPS:
        setattr(orig, name, model.dynamo_ctx(ctx[f"original_{name}"]))
    return orig


def to_uncompiled(model: Any) -> Any:
    """The module with its original (uncompiled) methods back."""
    optimized = _optimized_module_type()
    compiled: Any = model
    original = compiled._orig_mod if optimized is not None and isinstance(model, optimized) else model
    ctx = getattr(original, "_compiler_ctx", None)
    if ctx is not None:
        for name in _STEPS:
            setattr(original, name, ctx[f"original_{name}"])
        original._compiler_ctx = None
    return original


def _maybe_unwrap_optimized(model: Any) -> Any:
    """``model`` itself, or the LightningModule of a compiled one; anything else is left for the caller to refuse."""
    optimized = _optimized_module_type()
    if optimized is not None and isinstance(model, optimized):
        return from_compiled(model)
    return model
