"""The training epoch loop: the batch loop, LR scheduler stepping and validation placement."""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

from trainer_core.loops.evaluation_loop import _EvaluationLoop
from trainer_core.loops.loop import _Loop
from trainer_core.loops.optimization.automatic import _AutomaticOptimization
from trainer_core.loops.optimization.manual import _ManualOptimization
from trainer_core.loops.progress import _BatchProgress, _SchedulerProgress
from trainer_core.loops.utilities import _END, _LoopContext
from trainer_core.trainer.data import _num_batches, iterate_from

if TYPE_CHECKING:
    from trainer_core.trainer.data import _DataConnector
    from trainer_core.trainer.trainer import Trainer


def _always() -> bool:
    return True


class _TrainingEpochLoop(_Loop):
    """One epoch of training batches: batch hooks, the optimization step, schedulers, logging, validation."""

    def __init__(self) -> None:
        self.batch_progress = _BatchProgress()
        self.scheduler_progress = _SchedulerProgress()
        self.automatic_optimization = _AutomaticOptimization()
        self.manual_optimization = _ManualOptimization()
        self.val_loop = _EvaluationLoop("validate")
        self._batches_that_stepped = 0
        self.batch_idx = 0
        self.total_batch_idx = 0
        # set by the fit loop for each epoch (run's arguments)
        self._val_this_epoch = False
        self._can_stop_early: Callable[[], bool] = _always
        self._val_timer: _DataConnector | None = None  # when val_check_interval is a duration (Lightning 2.6)

    @property
    def global_step(self) -> int:
        return (
            self.automatic_optimization.optim_progress.optimizer.step.total.completed
            + self.manual_optimization.optim_step_progress.total.completed
        )

    def on_save_checkpoint(self) -> dict[str, Any]:
        return {"_batches_that_stepped": self._batches_that_stepped}

    def on_load_checkpoint(self, state_dict: dict[str, Any]) -> None:
        self._batches_that_stepped = state_dict.get("_batches_that_stepped", 0)

    # -- schedulers
    def update_lr_schedulers(self, ctx: _LoopContext, interval: str, plateau: bool) -> None:
        trainer = ctx.trainer
        if not ctx.module.automatic_optimization:
            return
        for config in trainer.lr_scheduler_configs:
            if config.reduce_on_plateau != plateau or config.interval != interval:
                continue
            idx = (self.batch_idx if interval == "step" else trainer.current_epoch) + 1
            if idx % config.frequency:
                continue
            metric = None
            if plateau:
                metrics = trainer.callback_metrics
                metric = metrics.get(config.monitor)
                if metric is None:
                    if config.strict:
                        raise RuntimeError(
                            f"ReduceLROnPlateau conditioned on metric {config.monitor} which is not available. "
                            f"Available metrics are: {list(metrics)}. Condition can be set using `monitor` key in "
                            "lr scheduler dict"
                        )
                    warnings.warn(
                        f"ReduceLROnPlateau conditioned on metric {config.monitor} which is not available but "
                        "strict is set to `False`. Skipping learning rate update.",
                        RuntimeWarning,
                        stacklevel=2,
                    )
                    continue
            self.scheduler_progress.increment_ready()
            ctx.module.lr_scheduler_step(config.scheduler, metric)
            self.scheduler_progress.increment_completed()

    # -- validation placement
    def _should_check_val(self, trainer: Trainer, batch_idx: int, is_last: bool) -> bool:
        if not self._val_this_epoch:
            return False
        if trainer.should_stop and self._can_stop_early():
            return True
        timer = self._val_timer
        if timer is not None and timer.val_time_interval is not None:  # replaces the batch and epoch-end checks
            return time.monotonic() - timer.last_val_time >= timer.val_time_interval
        val_check_batch = trainer.val_check_batch
        if val_check_batch == float("inf"):
            return is_last
        current = self.total_batch_idx if trainer.check_val_every_n_epoch is None else batch_idx
        return (current + 1) % val_check_batch == 0

    def run_validation(self, ctx: _LoopContext, accumulating: bool = False) -> None:
        """Validation inside fit; inside a gradient-accumulation window the gradients are kept (Lightning calls
        ``on_validation_model_zero_grad`` only when ``not _should_accumulate()``)."""
        trainer, metrics = ctx.trainer, ctx.metrics
        if not accumulating:
            ctx.hooks.call("on_validation_model_zero_grad", module_only=True)
        ctx.data.setup_val_data()  # requested at the first validation when there was no sanity check
        if not ctx.data.val_loaders:
            return
        prev = metrics.results
        trainer.validating = True
        try:
            self.val_loop.run(ctx, ctx.data.val_loaders, trainer.num_val_batches)
            ctx.data.last_val_time = time.monotonic()
        finally:
            metrics.results = prev
        trainer.training = True

    # -- the batch loop
    def run(
        self,
        ctx: _LoopContext,
        loader: Any,
        start_batch: int,
        val_pending: bool,
        resumed: bool = False,
        *,
        val_this_epoch: bool = False,
        can_stop_early: Callable[[], bool] = _always,
    ) -> None:
        """The epoch's batches from ``start_batch``; ``val_pending``: that batch's validation is still due."""
        trainer, module, hooks = ctx.trainer, ctx.module, ctx.hooks
        self._val_this_epoch = val_this_epoch
        self._val_timer = ctx.data if ctx.data.val_time_interval is not None else None
        self._can_stop_early = can_stop_early
        results = ctx.metrics.train_results
        cb_batch_start = hooks.callbacks["on_train_batch_start"]
        mod_batch_start = hooks.module_hook("on_train_batch_start")
        on_batch_end = hooks.caller("on_train_batch_end", results)
        has_batch_end = on_batch_end is not None
        transfer = ctx.batch_transfer
        automatic = module.automatic_optimization
        step: Callable[[Any, int, bool, bool], Any] = (
            self.automatic_optimization.make_step(ctx, has_batch_end)
            if automatic
            else partial(self.manual_optimization.step, ctx)
        )
        logging_batch_start = ctx.metrics.on_batch_start
        logging_batch_end = ctx.metrics.on_batch_end
        update_train_step_metrics = ctx.metrics.update_train_step_metrics
        fast_dev_run = bool(trainer.fast_dev_run)
        limit = trainer.num_training_batches
        # look one batch ahead when the loader may end before `limit` (no length, or StochasticWeightAveraging's
        # extra batch): the last batch is the one the loader ends on, as Lightning's prefetching fetcher sees it
        infinite = limit == float("inf") or _num_batches(loader) < limit
        bp = self.batch_progress
        b_total, b_cur = bp.total, bp.current
        accumulate = trainer.accumulate_grad_batches
        log_every = trainer.log_every_n_steps
        has_loggers = bool(trainer.loggers)
        max_steps = trainer.max_steps
        step_schedulers = any(c.interval == "step" for c in trainer.lr_scheduler_configs) and automatic
        epoch_schedulers = any(
            c.interval == "epoch" and not c.reduce_on_plateau for c in trainer.lr_scheduler_configs
        ) and automatic
        plateau_step = any(
            c.interval == "step" and c.reduce_on_plateau for c in trainer.lr_scheduler_configs
        ) and automatic

        if val_pending:
            # resumed from a checkpoint written in on_train_batch_end, before that batch's validation
            last = bp.is_last_batch or start_batch >= limit
            if self._should_check_val(trainer, start_batch - 1, last):
                self.run_validation(ctx, automatic and start_batch % accumulate != 0 and not last)
        if start_batch >= limit:
            return
        iterator = iterate_from(loader, start_batch, resumed)
        batch_idx = start_batch - 1
        nxt = next(iterator, _END) if infinite else None
        while True:
            batch_idx += 1
            if infinite:
                batch = nxt
                if batch is _END:
                    break
                nxt = next(iterator, _END)
                is_last = nxt is _END
            else:
                if batch_idx >= limit:
                    break
                batch = next(iterator, _END)
                if batch is _END:
                    break
                is_last = batch_idx + 1 >= limit
            self.batch_idx = batch_idx
            if transfer is not None:
                batch = transfer(batch, 0)
            b_total.ready += 1
            b_cur.ready += 1
            logging_batch_start(batch)
            # inline rather than hooks.caller(): the module's -1 ends the epoch
            if cb_batch_start or mod_batch_start is not None:
                results.fx = "on_train_batch_start"
                for hook in cb_batch_start:
                    hook(trainer, module, batch, batch_idx)
                if mod_batch_start is not None and mod_batch_start(batch, batch_idx) == -1:
                    # Lightning: the epoch ends here as on its last batch; the schedulers still step
                    b_total.processed += 1
                    b_cur.processed += 1
                    bp.is_last_batch = True
                    if step_schedulers:
                        self.update_lr_schedulers(ctx, "step", plateau=False)
                    if epoch_schedulers:
                        self.update_lr_schedulers(ctx, "epoch", plateau=False)
                    break
            b_total.started += 1
            b_cur.started += 1
            accumulating = automatic and (batch_idx + 1) % accumulate != 0 and not is_last
            outputs = step(batch, batch_idx, accumulating, is_last)
            b_total.processed += 1
            b_cur.processed += 1
            if step_schedulers and not accumulating:
                self.update_lr_schedulers(ctx, "step", plateau=False)
            if is_last and epoch_schedulers:
                self.update_lr_schedulers(ctx, "epoch", plateau=False)
            bp.is_last_batch = is_last
            if on_batch_end is not None:
                on_batch_end(outputs, batch, batch_idx)
            logging_batch_end()
            b_total.completed += 1
            b_cur.completed += 1
            # Lightning's update_train_step_metrics (log_metrics does nothing without loggers)
            if has_loggers and not accumulating and (
                fast_dev_run
                or (log_every != 0 and ((self._batches_that_stepped + 1) % log_every == 0 or trainer.should_stop))
            ):
                update_train_step_metrics()
            # val_this_epoch is fixed for the epoch: with validation off, no per-batch placement check
            if val_this_epoch and self._should_check_val(trainer, batch_idx, is_last):
                self.run_validation(ctx, accumulating)
            if plateau_step:
                self.update_lr_schedulers(ctx, "step", plateau=True)
            if not accumulating:
                self._batches_that_stepped += 1
            self.total_batch_idx += 1
            if max_steps != -1 and self.global_step >= max_steps:
                break
            if trainer.should_stop and can_stop_early():
                break
            if is_last:
                break
        results.fx = None
