"""What the loops share: the run context they are given, and small helpers."""

from __future__ import annotations

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
