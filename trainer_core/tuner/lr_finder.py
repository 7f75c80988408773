"""The learning rate range test (Lightning's ``tuner/lr_finder.py``): ``_LRFinder`` holds the results, ``_lr_find``
runs it inside a fit (from the ``LearningRateFinder`` callback's ``on_fit_start``)."""

from __future__ import annotations

import copy
import importlib
import logging
import warnings
from typing import TYPE_CHECKING, Any

import torch
from torch.optim.lr_scheduler import LRScheduler

from trainer_core.callbacks.callback import Callback
from trainer_core.tuner import _support
from trainer_core.utilities.exceptions import MisconfigurationException

if TYPE_CHECKING:
    from trainer_core.core.module import LightningModule
    from trainer_core.trainer.trainer import Trainer

log = logging.getLogger(__name__)


def _determine_lr_attr_name(model: LightningModule, attr_name: str = "") -> str:
    if attr_name:
        if not _support.lightning_hasattr(model, attr_name):
            raise AttributeError(
                f"The attribute name for the learning rate was set to {attr_name}, but"
                " could not find this as a field in `model` or `model.hparams`."
            )
        return attr_name
    attr_options = ("lr", "learning_rate")
    for attr in attr_options:
        if _support.lightning_hasattr(model, attr):
            return attr
    raise AttributeError(
        "When using the learning rate finder, either `model` or `model.hparams` should"
        f" have one of these fields: {attr_options}. If your model has a different name for the learning rate, set"
        f" it with `.lr_find(attr_name=...)`."
    )


class _LRFinder:
    """The results of ``lr_find()``: ``results`` ``{"lr": [...], "loss": [...]}``, ``suggestion()``, ``plot()``.

    Args:
        mode: ``"linear"`` or ``"exponential"``, how the lr grows after each step
        lr_min: the lr to start from
        lr_max: the lr to end at
        num_training: the number of steps from ``lr_min`` to ``lr_max``
    """

    def __init__(self, mode: str, lr_min: float, lr_max: float, num_training: int) -> None:
        assert mode in ("linear", "exponential"), "mode should be either `linear` or `exponential`"
        self.mode = mode
        self.lr_min = lr_min
        self.lr_max = lr_max
        self.num_training = num_training
        self.results: dict[str, Any] = {}
        self._total_batch_idx = 0
        self._optimal_idx: int | None = None

    def _exchange_scheduler(self, trainer: Trainer) -> None:
        """The user's single optimizer starts at ``lr_min``; the only scheduler is the search's, stepped per step."""
        from trainer_core.trainer.optim import LRSchedulerConfig

        optimizers = trainer.optimizers
        if len(optimizers) != 1:
            raise MisconfigurationException(
                f"`model.configure_optimizers()` returned {len(optimizers)}, but"
                " learning rate finder only works with single optimizer"
            )
        optimizer = optimizers[0]
        for group in optimizer.param_groups:
            group["lr"] = self.lr_min
            group["initial_lr"] = self.lr_min
        cls = _LinearLR if self.mode == "linear" else _ExponentialLR
        scheduler = cls(optimizer, self.lr_max, self.num_training)
        trainer.optimizers = [optimizer]
        trainer.lr_scheduler_configs = [LRSchedulerConfig(scheduler, interval="step")]

    def plot(self, suggest: bool = False, show: bool = False, ax: Any = None) -> Any:
        """Loss against learning rate (matplotlib, imported here); ``suggest`` marks the suggestion in red."""
        try:
            plt: Any = importlib.import_module("matplotlib.pyplot")
        except ImportError as exc:
            raise MisconfigurationException(
                "To use the `plot` method, you must have Matplotlib installed."
                " Install it by running `pip install -U matplotlib`."
            ) from exc
        lrs, losses = self.results["lr"], self.results["loss"]
        if ax is None:
            fig, ax = plt.subplots()
        else:
            fig = ax.figure
        ax.plot(lrs, losses)
        if self.mode == "exponential":
            ax.set_xscale("log")
        ax.set_xlabel("Learning rate")
        ax.set_ylabel("Loss")
        if suggest:
            self.suggestion()
            if self._optimal_idx:
                ax.plot(
                    lrs[self._optimal_idx], losses[self._optimal_idx], markersize=10, marker="o", color="red"
                )
        if show:
            plt.show()
        return fig

    def suggestion(self, skip_begin: int = 10, skip_end: int = 1) -> float | None:
        """The lr at the steepest descent of the (finite) losses, skipping ``skip_begin`` first and ``skip_end``
        last points; None (logged as an error) with fewer than 2 points left."""
        losses = torch.tensor(self.results["loss"][skip_begin:-skip_end])
        lrs = torch.tensor(self.results["lr"][skip_begin:-skip_end])
        is_finite = torch.isfinite(losses)
        losses, lrs = losses[is_finite], lrs[is_finite]
        if len(losses) < 2:
            log.error(
                "Failed to compute suggestion for learning rate because there are not enough points. Increase the loop"
                " iteration limits or the size of your dataset/dataloader."
            )
            self._optimal_idx = None
            return None
        gradients = torch.gradient(losses, spacing=[lrs])[0]
        min_grad = int(torch.argmin(gradients).item())
        idx_non_skipped = torch.arange(len(self.results["loss"]))[skip_begin:-skip_end]
        self._optimal_idx = int(idx_non_skipped[is_finite][min_grad].item())
        lr: float = self.results["lr"][self._optimal_idx]
        return lr


def _lr_find(
    trainer: Trainer,
    model: LightningModule,
    min_lr: float = 1e-8,
    max_lr: float = 1,
    num_training: int = 100,
    mode: str = "exponential",
    early_stop_threshold: float | None = 4.0,
    update_attr: bool = False,
    attr_name: str = "",
) -> _LRFinder | None:
    """The range test inside a running fit: ``num_training`` steps with a growing lr, recording the smoothed loss;
    the model, optimizers, callbacks and loop progress are restored from a temporary checkpoint afterwards."""
    if trainer.fast_dev_run:
        warnings.warn(
            "Skipping learning rate finder since `fast_dev_run` is enabled.", UserWarning, stacklevel=2
        )
        return None
    if update_attr:
        attr_name = _determine_lr_attr_name(model, attr_name)

    ckpt_path = _support.tuner_checkpoint_path(trainer, "lr_find")
    trainer.save_checkpoint(ckpt_path)
    start_steps = trainer.global_step
    params = _dump_params(trainer)
    lr_callback = _LRCallback(num_training, early_stop_threshold)
    progress_bar = trainer.progress_bar_callback
    if progress_bar is not None:
        progress_bar.disable()
    lr_finder = _LRFinder(mode, min_lr, max_lr, num_training)
    finished = False
    try:
        trainer.lr_scheduler_configs = []
        trainer.logger = _dummy_logger() if trainer.logger is not None else None
        trainer.fit_loop.max_steps = num_training + trainer.global_step
        trainer.limit_val_batches = num_training
        lr_finder._exchange_scheduler(trainer)
        with _support.only_callbacks(trainer, [lr_callback]):
            _support.setup_fit_data(trainer)
            _support.run_fit_loop(trainer, params["loop_state_dict"])
        if trainer.global_step != num_training + start_steps:
            log.info(f"LR finder stopped early after {trainer.global_step} steps due to diverging loss.")
        lr_finder.results.update({"lr": lr_callback.lrs, "loss": lr_callback.losses})
        lr_finder._total_batch_idx = trainer.fit_loop.epoch_loop.total_batch_idx
        # under DDP every rank takes rank 0's results, so the suggestion is rank 0's everywhere (Lightning's)
        lr_finder.results = trainer.strategy.broadcast(lr_finder.results)
        finished = True
    finally:
        _restore_params(trainer, params)
        if progress_bar is not None:
            progress_bar.enable()
        _support.restore_checkpoint(trainer, ckpt_path)

    if update_attr and finished:
        lr = lr_finder.suggestion()
        if lr is not None:
            _support.lightning_setattr(model, attr_name, lr)
            for opt in trainer.optimizers:  # the run that follows uses the suggestion too
                for group in opt.param_groups:
                    group["lr"] = lr
            log.info(f"Learning rate set to {lr}")
    return lr_finder


def _dummy_logger() -> Any:
    from trainer_core.loggers.logger import DummyLogger

    return DummyLogger()


def _dump_params(trainer: Trainer) -> dict[str, Any]:
    return {
        "optimizers": trainer.optimizers,
        "lr_scheduler_configs": trainer.lr_scheduler_configs,
        "loggers": trainer.loggers,
        "max_steps": trainer.fit_loop.max_steps,
        "limit_val_batches": trainer.limit_val_batches,
        "loop_state_dict": copy.deepcopy(trainer.fit_loop.state_dict()),
    }


def _restore_params(trainer: Trainer, params: dict[str, Any]) -> None:
    trainer.optimizers = params["optimizers"]
    trainer.lr_scheduler_configs = params["lr_scheduler_configs"]
    trainer.loggers = params["loggers"]
    trainer.fit_loop.max_steps = params["max_steps"]
    trainer.limit_val_batches = params["limit_val_batches"]
    trainer.fit_loop.load_state_dict(copy.deepcopy(params["loop_state_dict"]))
    trainer.should_stop = False


class _LRCallback(Callback):
    """Records the lr before each optimizer step and the smoothed loss after it; stops the search once the
    smoothed loss exceeds ``early_stop_threshold`` times the best (``None``: never)."""

    def __init__(
        self, num_training: int, early_stop_threshold: float | None = 4.0, beta: float = 0.98
    ) -> None:
        self.num_training = num_training
        self.early_stop_threshold = early_stop_threshold
        self.beta = beta
        self.losses: list[float] = []
        self.lrs: list[float] = []
        self.avg_loss = 0.0
        self.best_loss = 0.0

    def _accumulating(self, trainer: Trainer) -> bool:
        return (trainer.fit_loop.epoch_loop.batch_idx + 1) % trainer.accumulate_grad_batches != 0

    def _sync_stop(self, trainer: Trainer) -> None:
        """Under DDP rank 0 decides when the search stops, so every rank runs the same steps (Lightning's
        ``trainer.strategy.broadcast(trainer.should_stop)``; here also after a step without a loss)."""
        if trainer.strategy.is_distributed:
            trainer.should_stop = trainer.strategy.broadcast(bool(trainer.should_stop))

    def on_train_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self._accumulating(trainer):
            return
        self.lrs.append(trainer.lr_scheduler_configs[0].scheduler.lr[0])

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self._accumulating(trainer):
            return
        if not isinstance(outputs, torch.Tensor) and not outputs:
            self.losses.append(float("nan"))  # one loss per recorded lr; NaNs are left out of the suggestion
            self._sync_stop(trainer)
            return
        loss = outputs if isinstance(outputs, torch.Tensor) else outputs["loss"]
        current_loss = float(loss.item())
        current_step = trainer.global_step
        self.avg_loss = self.beta * self.avg_loss + (1 - self.beta) * current_loss
        smoothed_loss = self.avg_loss / (1 - self.beta ** (current_step + 1))
        if (
            self.early_stop_threshold is not None
            and current_step > 1
            and smoothed_loss > self.early_stop_threshold * self.best_loss
        ):
            trainer.should_stop = True
        self._sync_stop(trainer)
        if smoothed_loss < self.best_loss or current_step == 1:
            self.best_loss = smoothed_loss
        self.losses.append(smoothed_loss)


class _RangeLR(LRScheduler):
    """The lr grows from the base lr to ``end_lr`` over ``num_iter`` steps, along :meth:`_at`."""

    def __init__(
        self, optimizer: torch.optim.Optimizer, end_lr: float, num_iter: int, last_epoch: int = -1
    ) -> None:
        self.end_lr = end_lr
        self.num_iter = num_iter
        self._lr: list[float] = []
        super().__init__(optimizer, last_epoch)

    def _at(self, base_lr: float, r: float) -> float:
        raise NotImplementedError

    def get_lr(self) -> list[float]:  # type: ignore[override]
        r = (self.last_epoch + 1) / self.num_iter
        if self.last_epoch > 0:
            val = [self._at(float(base_lr), r) for base_lr in self.base_lrs]
        else:
            val = [float(base_lr) for base_lr in self.base_lrs]
        self._lr = val
        return val

    @property
    def lr(self) -> list[float]:
        return self._lr


class _LinearLR(_RangeLR):
    """The lr grows linearly from the base lr to ``end_lr``."""

    def _at(self, base_lr: float, r: float) -> float:
        return base_lr + r * (self.end_lr - base_lr)


class _ExponentialLR(_RangeLR):
    """The lr grows exponentially from the base lr to ``end_lr``."""

    def _at(self, base_lr: float, r: float) -> float:
        return base_lr * float((self.end_lr / base_lr) ** r)
