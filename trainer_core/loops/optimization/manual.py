"""Manual optimization."""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from typing import Any

from torch import Tensor

from trainer_core.core.optimizer import do_nothing_closure
from trainer_core.loops.loop import _Loop
from trainer_core.loops.progress import _Progress, _ReadyCompletedTracker
from trainer_core.loops.utilities import _call_step, _LoopContext
from trainer_core.utilities.exceptions import _MisconfigurationRuntimeError


class _ManualOptimization(_Loop):
    """The step for ``automatic_optimization = False``: ``training_step`` drives its optimizers itself."""

    def __init__(self) -> None:
        self.optim_step_progress = _Progress.from_defaults(_ReadyCompletedTracker)

    def _on_before_step(self) -> None:
        self.optim_step_progress.increment_ready()

    def _on_after_step(self) -> None:
        self.optim_step_progress.increment_completed()

    def step(self, ctx: _LoopContext, batch: Any, batch_idx: int, accumulating: bool, is_last: bool) -> Any:
        module = ctx.module
        ctx.metrics.train_results.fx = "training_step"
        precision = ctx.precision
        step_batch = precision.convert_input(batch)
        # Lightning: inside training_step, each `opt.step()` counts as an optimizer step (global_step)
        optimizers = ctx.lightning_optimizers
        for opt in optimizers:
            opt._on_before_step = self._on_before_step
            opt._on_after_step = self._on_after_step
        try:
            with precision.forward_context():
                step = ctx.trainer.strategy.wrap_step(partial(_call_step, module.training_step))  # DDP: its wrapper
                output = step(step_batch, batch_idx)
        finally:
            for opt in optimizers:
                opt._on_before_step = opt._on_after_step = do_nothing_closure
        if output is not None and not isinstance(output, (Tensor, Mapping)):
            raise _MisconfigurationRuntimeError(
                "In manual optimization, `training_step` must either return a Tensor or have no return."
            )
        if isinstance(output, Tensor):
            return {"loss": output.detach()}
        if isinstance(output, Mapping):
            return {k: (v.detach() if isinstance(v, Tensor) else v) for k, v in output.items()}
        return {}
