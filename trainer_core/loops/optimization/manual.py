"""Manual optimization."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from trainer_core.loops.loop import _Loop
from trainer_core.loops.progress import _Progress, _ReadyCompletedTracker
from trainer_core.loops.utilities import _LoopContext


class _ManualOptimization(_Loop):
    """The step for ``automatic_optimization = False``: ``training_step`` drives its optimizers itself."""

    def __init__(self) -> None:
        self.optim_step_progress = _Progress.from_defaults(_ReadyCompletedTracker)

    def step(self, ctx: _LoopContext, batch: Any, batch_idx: int, accumulating: bool, is_last: bool) -> Any:
        module = ctx.module
        ctx.metrics.train_results.fx = "training_step"
        precision = ctx.precision
        step_batch = precision.convert_input(batch)
        with precision.forward_context():
            output = module.training_step(step_batch, batch_idx)
        if output is not None and not isinstance(output, (Tensor, dict)):
            raise RuntimeError(
                "In manual optimization, `training_step` must either return a Tensor, a dict with extras to pass "
                f"to `training_epoch_end` or have no return; got {type(output).__name__}."
            )
        if isinstance(output, Tensor):
            return {"loss": output.detach()}
        if isinstance(output, dict):
            return {k: (v.detach() if isinstance(v, Tensor) else v) for k, v in output.items()}
        return {}
