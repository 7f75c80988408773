"""The fit loop: epochs, resume point, and the sampler state it checkpoints."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from trainer_core.loops.loop import _Loop
from trainer_core.loops.progress import _BatchProgress, _Progress
from trainer_core.loops.training_epoch_loop import _TrainingEpochLoop
from trainer_core.loops.utilities import _LoopContext
from trainer_core.trainer.data import SamplerState
from trainer_core.trainer.sampling import set_sampler_epoch

if TYPE_CHECKING:
    from trainer_core.trainer.trainer import Trainer


def _no_loader() -> Any:
    return None


class _FitLoop(_Loop):
    """Epochs until a limit or ``should_stop``; resuming inside an epoch; the sampler and RNG state it checkpoints.

    ``train_dataloader`` gives the loader whose sampler state a checkpoint records (the Trainer's current one).
    """

    def __init__(
        self,
        min_epochs: int | None,
        max_epochs: int,
        min_steps: int | None = None,
        max_steps: int = -1,
        train_dataloader: Callable[[], Any] = _no_loader,
    ) -> None:
        self.min_epochs = min_epochs
        self.max_epochs = max_epochs
        self.epoch_progress = _Progress()
        self.epoch_loop = _TrainingEpochLoop()
        self.sampler_state = SamplerState()
        self._restore: dict[str, Any] | None = None  # our extra resume state from the checkpoint
        self.min_steps = min_steps
        self.max_steps = max_steps
        self._train_dataloader = train_dataloader
        # batches in the current epoch (``trainer.num_training_batches``, set when the train loader is loaded)
        self.max_batches: int | float = float("inf")

    @property
    def _skip_backward(self) -> bool:
        """Whether the automatic-optimization closure skips zero_grad and backward (StochasticWeightAveraging)."""
        return self.epoch_loop.automatic_optimization._skip_backward

    @_skip_backward.setter
    def _skip_backward(self, value: bool) -> None:
        self.epoch_loop.automatic_optimization._skip_backward = value

    @property
    def _can_stop_early(self) -> bool:
        met_min_epochs = self.epoch_progress.current.processed >= self.min_epochs if self.min_epochs else True
        met_min_steps = self.epoch_loop.global_step >= self.min_steps if self.min_steps else True
        return met_min_epochs and met_min_steps

    def _can_stop_early_now(self) -> bool:
        return self._can_stop_early

    def _done(self, trainer: Trainer) -> bool:
        if trainer.num_training_batches == 0:
            return True
        if self.max_steps != -1 and self.epoch_loop.global_step >= self.max_steps:
            return True
        if self.max_epochs != -1 and self.epoch_progress.current.processed >= self.max_epochs:
            self.epoch_progress.current.completed = self.epoch_progress.current.processed
            return True
        if trainer.should_stop and self._can_stop_early:
            return True
        return False

    def on_save_checkpoint(self) -> dict[str, Any]:
        from trainer_core.seed import capture_rng_state

        loader = self._train_dataloader()
        return {
            "trainer_core": {
                "sampler": self.sampler_state.state_dict(loader),
                "rng": capture_rng_state(),
            }
        }

    def on_load_checkpoint(self, state_dict: dict[str, Any]) -> None:
        self._restore = state_dict.get("trainer_core")

    def _resume_point(self) -> tuple[int, bool, bool]:
        """(batches already done in the epoch, whether that batch's validation is pending, mid-epoch?)."""
        ep = self.epoch_progress.current
        bp = self.epoch_loop.batch_progress
        if ep.processed > ep.completed:
            # saved in on_train_epoch_end: that epoch is over
            ep.completed = ep.processed
            ep.ready = ep.started = ep.processed
            return 0, False, False
        if ep.started > ep.completed:
            # saved inside an epoch (batch start/end, or after a validation): continue that epoch
            done = bp.current.processed
            pending = bp.current.completed < done
            for tracker in (bp.current, bp.total):
                tracker.ready = tracker.started = tracker.processed
                tracker.completed = tracker.processed
            return done, pending, True
        return 0, False, False

    def run(self, ctx: _LoopContext, restarting: bool = False) -> None:
        """Train until done; ``restarting``: the progress was restored from a checkpoint."""
        trainer, hooks = ctx.trainer, ctx.hooks
        # Lightning's fit_loop.setup_data: the train loader is requested here, after the sanity check
        ctx.data.setup_train_data()
        start_batch, val_pending, mid_epoch = 0, False, False
        restore = self._restore
        if restore is not None or restarting:
            start_batch, val_pending, mid_epoch = self._resume_point()
            if restore is not None and "rng" in restore:
                from trainer_core.seed import restore_rng_state

                restore_rng_state(restore["rng"])
        if self._done(trainer):
            self._restore = None
            return
        every_n = trainer.check_val_every_n_epoch
        if ctx.data.val_enabled and (every_n is None or (trainer.current_epoch + 1) % every_n == 0):
            # Lightning's on_run_start: the val loader is loaded before on_train_start when this epoch validates
            ctx.data.setup_val_data()
        trainer.training = True
        hooks.call("on_train_start")
        mid_restore = None
        if restore is not None and restore.get("sampler"):
            if mid_epoch:
                mid_restore = restore["sampler"]
            else:
                self.sampler_state.on_boundary_restore(ctx.data.train_loader, restore["sampler"])
        self._restore = None
        while not self._done(trainer):
            self._run_epoch(ctx, start_batch, val_pending, mid_epoch, mid_restore)
            start_batch, val_pending, mid_epoch, mid_restore = 0, False, False, None
        hooks.call("on_train_end")

    def _run_epoch(
        self,
        ctx: _LoopContext,
        start_batch: int,
        val_pending: bool,
        resumed_mid_epoch: bool,
        sampler_restore: dict[str, Any] | None,
    ) -> None:
        trainer, hooks, module = ctx.trainer, ctx.hooks, ctx.module
        results = ctx.metrics.train_results
        epoch = self.epoch_progress.current.completed
        ctx.data.maybe_reload_train_dataloader(epoch)
        loader = ctx.data.train_loader  # a CombinedLoader for several train loaders (trainer.train_dataloader: theirs)
        if not resumed_mid_epoch:
            self.epoch_loop.batch_progress.reset_on_run()
            self.epoch_progress.increment_ready()
        self.sampler_state.on_epoch_start(loader, sampler_restore)
        set_sampler_epoch(loader, epoch)  # DistributedSampler and any sampler with set_epoch (Lightning's)
        # no reset here: Lightning resets the training collection at the end of the epoch (update_train_epoch_metrics),
        # so that values logged in on_train_start go out with epoch 0's
        every_n = trainer.check_val_every_n_epoch
        val_this_epoch = ctx.data.val_enabled and (every_n is None or (epoch + 1) % every_n == 0)
        results.fx = "on_train_epoch_start"
        hooks.call("on_train_epoch_start")
        if not resumed_mid_epoch:
            self.epoch_progress.increment_started()
        self.epoch_loop.run(
            ctx, loader, start_batch, val_pending, resumed_mid_epoch,
            val_this_epoch=val_this_epoch, can_stop_early=self._can_stop_early_now,
        )
        self.epoch_progress.increment_processed()
        ctx.metrics.epoch_end_reached()
        results.fx = "on_train_epoch_end"
        for hook in hooks.callbacks_non_monitoring["on_train_epoch_end"]:
            hook(trainer, module)
        mod_hook = hooks.module_hook("on_train_epoch_end")
        if mod_hook is not None:
            mod_hook()
        for hook in hooks.callbacks_monitoring["on_train_epoch_end"]:
            hook(trainer, module)
        ctx.metrics.on_epoch_end()
        results.fx = None
        if self.epoch_loop.batch_progress.is_last_batch:
            self.epoch_loop.update_lr_schedulers(ctx, "epoch", plateau=True)
        # as Lightning: the epoch-end values go out at the last step's number, then the collection is reset
        self.epoch_loop._batches_that_stepped -= 1
        ctx.metrics.update_train_epoch_metrics()
        self.epoch_loop._batches_that_stepped += 1
        self.epoch_progress.increment_completed()
        if trainer.strategy.is_distributed:  # every rank stops when one rank asks to (Lightning's)
            trainer.should_stop = trainer.strategy.reduce_boolean_decision(bool(trainer.should_stop), all=False)

    def run_sanity_check(self, ctx: _LoopContext, num_sanity_val_steps: int | float) -> None:
        """Lightning's sanity check: a few validation batches before training, RNG state left as it was."""
        from trainer_core.seed import capture_rng_state, restore_rng_state

        trainer, hooks = ctx.trainer, ctx.hooks
        prev_stage = trainer.state.stage
        trainer.sanity_checking = True
        rng = capture_rng_state()
        try:
            hooks.call_callbacks("on_sanity_check_start")
            # Lightning's val_loop.setup_data: the val loader is requested inside the sanity check
            ctx.data.setup_val_data()
            trainer.num_sanity_val_batches = [min(num_sanity_val_steps, n) for n in trainer.num_val_batches]
            self.epoch_loop.val_loop.run(ctx, ctx.data.val_loaders, trainer.num_sanity_val_batches, sanity=True)
            hooks.call_callbacks("on_sanity_check_end")
        finally:
            restore_rng_state(rng)
        self.epoch_loop.val_loop.batch_progress = _BatchProgress()
        trainer.state.stage = prev_stage
