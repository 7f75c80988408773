"""What the loops share: the run context they are given, and small helpers."""

from __future__ import annotations

import inspect
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from trainer_core.trainer.precision import Precision

if TYPE_CHECKING:
    from trainer_core.core.module import LightningModule
    from trainer_core.trainer.data import _DataConnector
    from trainer_core.trainer.hooks import HookDispatcher
    from trainer_core.trainer.logger_connector import _LoggerConnector
    from trainer_core.trainer.optim import LightningOptimizer
    from trainer_core.trainer.trainer import Trainer


@dataclass(frozen=True)
class _LoopContext:
    """What a loop needs from the run, handed to ``run()``.

    ``trainer`` is what hooks receive as their first argument; loops read only its public state from it
    (``should_stop``, ``current_epoch``, ``max_steps``, ``accumulate_grad_batches``, ``optimizers`` ...),
    which callbacks and user code may change while the run goes on.
    """

    trainer: Trainer
    module: LightningModule
    hooks: HookDispatcher
    precision: Precision
    metrics: _LoggerConnector
    data: _DataConnector
    lightning_optimizers: Sequence[LightningOptimizer] = ()

    @property
    def batch_transfer(self) -> Callable[[Any, int], Any] | None:
        return self.data.batch_transfer


def _input_converter(precision: Precision) -> Callable[[Any], Any] | None:
    """``precision.convert_input`` when the precision casts batches (the ``*-true`` ones but 32), else None.

    Like Lightning, only the ``*_step`` methods get the cast batch; batch hooks and callbacks see it as loaded.
    """
    return precision.convert_input if precision.input_dtype is not None else None


_END = object()


def is_param_in_hook_signature(
    hook_fx: Callable[..., Any], param: str, explicit: bool = False, min_args: int | None = None
) -> bool:
    """Lightning's rule: ``param`` is a named argument of the hook, or it takes ``*args`` (unless ``explicit``),
    or it has at least ``min_args`` arguments besides the first (``self``)."""
    spec = inspect.getfullargspec(hook_fx)
    args = spec.args[1:]  # ignore `self`
    return (
        param in args
        or (not explicit and spec.varargs is not None)
        or (isinstance(min_args, int) and len(args) >= min_args)
    )


def _step_callable(step_fx: Callable[..., Any]) -> Callable[..., Any]:
    """``step_fx`` called as ``(batch, batch_idx, *rest)``: as it is when it takes ``batch_idx`` (Lightning's
    ``is_param_in_hook_signature(fx, "batch_idx", min_args=2)``), else without that argument."""
    if is_param_in_hook_signature(step_fx, "batch_idx", min_args=2):
        return step_fx

    def without_batch_idx(batch: Any, batch_idx: int, *rest: Any) -> Any:
        return step_fx(batch, *rest)

    return without_batch_idx


_TAKES_BATCH_IDX: weakref.WeakKeyDictionary[Any, bool] = weakref.WeakKeyDictionary()


def _call_step(step_fx: Callable[..., Any], batch: Any, batch_idx: int, *rest: Any) -> Any:
    """``_step_callable(step_fx)(batch, batch_idx, *rest)`` for a per-batch call site (the signature check is
    cached per function)."""
    key = getattr(step_fx, "__func__", step_fx)
    try:
        takes = _TAKES_BATCH_IDX[key]
    except KeyError:
        takes = is_param_in_hook_signature(step_fx, "batch_idx", min_args=2)
        _TAKES_BATCH_IDX[key] = takes
    except TypeError:  # not weak-referenceable
        takes = is_param_in_hook_signature(step_fx, "batch_idx", min_args=2)
    return step_fx(batch, batch_idx, *rest) if takes else step_fx(batch, *rest)


def _verify_dataloader_idx_requirement(hooks: Sequence[str], is_expected: bool, prefix: str, module: Any) -> None:
    """Lightning's check of the ``dataloader_idx`` argument of the step and batch hooks (``prefix``: ``val``,
    ``test`` or ``predict``): required with several loaders, optional (with a default) with one."""
    for hook in hooks:
        fx = getattr(module, hook)
        if not is_param_in_hook_signature(fx, "dataloader_idx"):
            if is_expected:
                raise RuntimeError(
                    f"You provided multiple `{prefix}_dataloader`, but no `dataloader_idx`"
                    f" argument in `{type(module).__name__}.{hook}()`. Try adding `dataloader_idx=0` to its"
                    " signature."
                )
            continue
        params = inspect.signature(fx).parameters
        if "dataloader_idx" not in params:
            continue  # not explicitly present, e.g. `*args` or `**kwargs`
        if not is_expected and params["dataloader_idx"].default is inspect.Parameter.empty:
            raise RuntimeError(
                f"You provided only a single `{prefix}_dataloader`, but have included "
                f"`dataloader_idx` in `{type(module).__name__}.{hook}()`. Either remove the argument or give it a "
                "default value i.e. `dataloader_idx=0`."
            )
