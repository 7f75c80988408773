"""Automatic optimization."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor

from trainer_core.loops.loop import _Loop
from trainer_core.loops.progress import _OptimizationProgress
from trainer_core.loops.utilities import _input_converter, _LoopContext, _step_callable
from trainer_core.trainer.precision import Precision


class _AutomaticOptimization(_Loop):
    """The step for ``automatic_optimization = True``: closure (step, zero_grad, backward), clipping,
    ``optimizer.step`` through the precision, gradient accumulation."""

    def __init__(self) -> None:
        self.optim_progress = _OptimizationProgress()
        # Lightning's: the closure runs training_step without zero_grad and backward (set through
        # fit_loop._skip_backward by StochasticWeightAveraging for its batch-norm epoch)
        self._skip_backward = False

    def make_step(self, ctx: _LoopContext, want_outputs: bool) -> Callable[[Any, int, bool, bool], Any]:
        """The automatic-optimization step; it returns the step's outputs (detached loss and extras) only
        when ``want_outputs`` (some ``on_train_batch_end`` reads them), else None."""
        trainer, module, hooks = ctx.trainer, ctx.module, ctx.hooks
        results = ctx.metrics.train_results
        precision = ctx.precision
        forward_context = precision.forward_context
        convert = _input_converter(precision)
        plain_precision = type(precision) is Precision
        plain_step = _step_callable(module.training_step)  # without batch_idx when it takes none
        strategy = trainer.strategy
        training_step = strategy.wrap_step(plain_step)  # DDP: through its wrapper
        # DDP: no gradient all-reduce inside an accumulation window
        block_sync = strategy.block_backward_sync if training_step is not plain_step else None
        optimizer: Any = trainer.optimizers[0] if trainer.optimizers else None
        accumulate = trainer.accumulate_grad_batches
        opt_progress = self.optim_progress.optimizer
        s_total, s_cur = opt_progress.step.total, opt_progress.step.current
        z_total, z_cur = opt_progress.zero_grad.total, opt_progress.zero_grad.current
        on_before_zero_grad = hooks.caller("on_before_zero_grad", results)
        on_before_backward = hooks.caller("on_before_backward", results)
        on_after_backward = hooks.caller("on_after_backward", results)
        on_before_optimizer_step = hooks.caller("on_before_optimizer_step", results)
        custom_zero = hooks.module_hook("optimizer_zero_grad")
        custom_step = hooks.module_hook("optimizer_step")
        custom_backward = hooks.module_hook("backward") is not None
        clip_val = trainer.gradient_clip_val
        clip_algo = trainer.gradient_clip_algorithm
        custom_clip = hooks.module_hook("configure_gradient_clipping")
        needs_clip = bool(clip_val) or custom_clip is not None
        # whether the optimizer needs step_closure, or can call the plain closure directly
        step_hooks = on_before_optimizer_step is not None or needs_clip
        lightning_optimizer = ctx.lightning_optimizers[0] if optimizer is not None else None
        state: dict[str, Any] = {}

        def zero_grad(batch_idx: int) -> None:
            z_total.ready += 1
            z_cur.ready += 1
            if on_before_zero_grad is not None:
                on_before_zero_grad(optimizer)
            z_total.started += 1
            z_cur.started += 1
            if custom_zero is not None:
                custom_zero(trainer.current_epoch, batch_idx, optimizer)
            else:
                optimizer.zero_grad(set_to_none=True)
            z_total.completed += 1
            z_cur.completed += 1

        def run_step(batch: Any, batch_idx: int, accumulating: bool, is_last: bool) -> Any:
            def closure() -> Tensor | None:
                results.fx = "training_step"
                step_batch = batch if convert is None else convert(batch)
                with forward_context():
                    output = training_step(step_batch, batch_idx)
                if isinstance(output, Tensor):
                    loss, extra = output, None
                elif output is None:
                    loss, extra = None, None
                elif isinstance(output, dict):
                    if "loss" not in output:
                        raise RuntimeError(
                            "In automatic_optimization, when `training_step` returns a dict, the 'loss' key needs "
                            "to be present"
                        )
                    loss = output["loss"]
                    extra = {k: v for k, v in output.items() if k != "loss"}
                else:
                    raise RuntimeError(
                        "In automatic optimization, `training_step` must return a Tensor, a dict, or None "
                        f"(where the step will be skipped); got {type(output).__name__}."
                    )
                if loss is not None and accumulate > 1:
                    loss = loss / accumulate
                state["loss"] = loss
                state["extra"] = extra
                if self._skip_backward:
                    return loss
                if optimizer is not None and batch_idx % accumulate == 0:
                    zero_grad(batch_idx)
                if loss is not None:
                    if on_before_backward is not None:
                        on_before_backward(loss)
                    if plain_precision and not custom_backward:
                        loss.backward()  # type: ignore[no-untyped-call]
                    else:
                        precision.backward(module, loss)
                    if on_after_backward is not None:
                        on_after_backward()
                return loss

            def step_closure() -> Tensor | None:
                loss = closure()
                if on_before_optimizer_step is not None:
                    on_before_optimizer_step(optimizer)
                if needs_clip and loss is not None:
                    results.fx = "configure_gradient_clipping"
                    # Lightning's precision._clip_gradients: the hook gets the Trainer's values (None when not set)
                    if custom_clip is not None:
                        custom_clip(optimizer, gradient_clip_val=clip_val, gradient_clip_algorithm=clip_algo)
                    else:
                        module.clip_gradients(optimizer, gradient_clip_val=clip_val, gradient_clip_algorithm=clip_algo)
                return loss

            if accumulating or optimizer is None:
                if block_sync is not None and accumulating:
                    with block_sync():
                        closure()
                else:
                    closure()
                if optimizer is None and not accumulating:
                    s_total.ready += 1
                    s_cur.ready += 1
                    s_total.completed += 1
                    s_cur.completed += 1
            elif custom_step is not None:
                # Lightning: counted around the hook; the LightningOptimizer's step runs on_before_optimizer_step
                # and configure_gradient_clipping after the closure
                s_total.ready += 1
                s_cur.ready += 1
                results.fx = "optimizer_step"
                custom_step(trainer.current_epoch, batch_idx, lightning_optimizer, closure)
                s_total.completed += 1
                s_cur.completed += 1
            else:
                s_total.ready += 1
                s_cur.ready += 1
                precision.optimizer_step(optimizer, step_closure if step_hooks else closure)
                s_total.completed += 1
                s_cur.completed += 1
            if not want_outputs:
                return None
            loss = state.get("loss")
            if loss is None:
                return {}
            extra = state.get("extra")
            out = {"loss": loss.detach()}
            if extra:
                out.update(extra)
            return out

        return run_step
