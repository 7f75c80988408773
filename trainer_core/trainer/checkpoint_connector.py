"""``_CheckpointConnector``: what a checkpoint holds (Lightning's layout), restoring from one, and ``ckpt_path``."""

from __future__ import annotations

import os
import warnings
from typing import TYPE_CHECKING, Any

from trainer_core.core.datamodule import LightningDataModule
from trainer_core.core.hparams import plain_hparams
from trainer_core.core.module import LightningModule
from trainer_core.trainer.states import TrainerFn

if TYPE_CHECKING:
    from trainer_core.trainer.trainer import Trainer

# The Lightning checkpoint format these checkpoints follow (written as "pytorch-lightning_version").
LIGHTNING_FORMAT_VERSION = "2.5.0"


class _CheckpointConnector:
    def __init__(self, trainer: Trainer) -> None:
        self.trainer = trainer

    def loops_state_dict(self) -> dict[str, Any]:
        trainer = self.trainer
        return {
            "fit_loop": trainer.fit_loop.state_dict(),
            "validate_loop": trainer.validate_loop.state_dict(),
            "test_loop": trainer.test_loop.state_dict(),
            "predict_loop": trainer.predict_loop.state_dict(),
        }

    def dump_checkpoint(self, weights_only: bool = False) -> dict[str, Any]:
        from trainer_core import __version__

        trainer = self.trainer
        model = trainer.lightning_module
        checkpoint: dict[str, Any] = {
            "epoch": trainer.current_epoch,
            "global_step": trainer.global_step,
            "pytorch-lightning_version": LIGHTNING_FORMAT_VERSION,
            "trainer_core_version": __version__,
            "state_dict": model.state_dict(),
            "loops": self.loops_state_dict(),
        }
        if not weights_only:
            callback_states = {}
            for cb in trainer.callbacks:
                state = cb.state_dict()
                if state:
                    callback_states[cb.state_key] = state
            checkpoint["callbacks"] = callback_states
            checkpoint["optimizer_states"] = [opt.state_dict() for opt in trainer.optimizers]
            checkpoint["lr_schedulers"] = [config.scheduler.state_dict() for config in trainer.lr_scheduler_configs]
            precision = trainer._precision
            precision_state = precision.state_dict()
            if precision_state:
                checkpoint[precision.checkpoint_key] = precision_state
        if model.hparams:
            checkpoint[LightningModule.CHECKPOINT_HYPER_PARAMS_NAME] = model._hparams_name
            checkpoint[LightningModule.CHECKPOINT_HYPER_PARAMS_KEY] = plain_hparams(model.hparams)
        dm = trainer.datamodule
        if dm is not None:
            if dm.hparams:
                checkpoint[LightningDataModule.CHECKPOINT_HYPER_PARAMS_NAME] = dm._hparams_name
                checkpoint[LightningDataModule.CHECKPOINT_HYPER_PARAMS_KEY] = plain_hparams(dm.hparams)
            dm_state = dm.state_dict()
            if dm_state:
                checkpoint[type(dm).__qualname__] = dm_state
        if not weights_only:
            trainer._hooks.call_callbacks("on_save_checkpoint", checkpoint)
        # Lightning 2.6 calls the datamodule's state_dict() above but not its on_save_checkpoint
        model.on_save_checkpoint(checkpoint)
        return checkpoint

    def restore_modules_and_callbacks(self, checkpoint: dict[str, Any]) -> None:
        trainer = self.trainer
        model = trainer.lightning_module
        model.on_load_checkpoint(checkpoint)
        model.load_state_dict(checkpoint["state_dict"], strict=model.strict_loading)
        dm = trainer.datamodule
        if dm is not None:
            dm.on_load_checkpoint(checkpoint)
            state = checkpoint.get(type(dm).__qualname__)
            if state:
                dm.load_state_dict(state)
        states = checkpoint.get("callbacks") or {}
        for cb in trainer.callbacks:
            cb.on_load_checkpoint(trainer, model, checkpoint)
            state = states.get(cb.state_key)
            if state is None:
                state = states.get(type(cb).__qualname__)
            if state:
                cb.load_state_dict(dict(state))

    def restore_training_state(self, checkpoint: dict[str, Any]) -> bool:
        """Precision, loops, optimizers and schedulers; True when the fit loop's progress was restored."""
        trainer = self.trainer
        precision = trainer._precision
        restarting = False
        precision_state = checkpoint.get(precision.checkpoint_key)
        if precision_state:
            precision.load_state_dict(precision_state)
        loops = checkpoint.get("loops")
        if loops and "fit_loop" in loops:
            trainer.fit_loop.load_state_dict(loops["fit_loop"])
            restarting = True
        if "optimizer_states" not in checkpoint:
            raise KeyError(
                "Trying to restore optimizer state but checkpoint contains only the model. This is probably due to "
                "`ModelCheckpoint.save_weights_only` being set to `True`."
            )
        states = checkpoint["optimizer_states"]
        if len(states) != len(trainer.optimizers):
            raise ValueError(
                f"The checkpoint has {len(states)} optimizer states but `configure_optimizers` returned "
                f"{len(trainer.optimizers)} optimizers."
            )
        for opt, state in zip(trainer.optimizers, states, strict=False):
            opt.load_state_dict(state)
        for config, state in zip(trainer.lr_scheduler_configs, checkpoint.get("lr_schedulers", []), strict=False):
            config.scheduler.load_state_dict(state)
        return restarting

    def resolve_ckpt_path(self, fn: TrainerFn, ckpt_path: Any) -> str | None:
        if ckpt_path is None:
            return None
        trainer = self.trainer
        if ckpt_path == "best":
            cb = trainer.checkpoint_callback
            if cb is None:
                raise ValueError(f'`.{fn.value}(ckpt_path="best")` is set but `ModelCheckpoint` is not configured.')
            if not getattr(cb, "best_model_path", None):  # the first Checkpoint may be an OnExceptionCheckpoint
                if trainer.fast_dev_run:
                    raise ValueError(
                        f'You cannot execute `.{fn.value}(ckpt_path="best")` with `fast_dev_run=True`. Please pass '
                        f"an exact checkpoint path to `.{fn.value}(ckpt_path=...)`"
                    )
                raise ValueError(
                    f'`.{fn.value}(ckpt_path="best")` is set but `ModelCheckpoint` is not configured to save the '
                    "best model."
                )
            return cb.best_model_path  # type: ignore[no-any-return]
        if ckpt_path == "last":
            candidates: set[str] = set()
            for cb in trainer.checkpoint_callbacks:
                if getattr(cb, "last_model_path", None):
                    candidates.add(cb.last_model_path)
                if hasattr(cb, "_find_last_checkpoints"):  # ModelCheckpoint's (not OnExceptionCheckpoint's)
                    candidates |= cb._find_last_checkpoints(trainer)
            existing = {p: os.path.getmtime(p) for p in candidates if os.path.exists(p)}
            if not existing:
                warnings.warn(
                    f'.{fn.value}(ckpt_path="last") is set, but there is no last checkpoint available. No checkpoint '
                    "will be loaded. HINT: Set `ModelCheckpoint(..., save_last=True)`.",
                    stacklevel=3,
                )
                return None
            newest: str = max(existing, key=existing.__getitem__)
            return newest
        path: str = os.fspath(ckpt_path)
        return path
