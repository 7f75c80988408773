"""``GradientAccumulationScheduler``: change ``accumulate_grad_batches`` at given epochs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from trainer_core.callbacks.callback import Callback
from trainer_core.utilities.exceptions import MisconfigurationException
from trainer_core.utilities.model_helpers import is_overridden
from trainer_core.utilities.rank_zero import rank_zero_warn

if TYPE_CHECKING:
    from trainer_core.core.module import LightningModule
    from trainer_core.trainer.trainer import Trainer


class GradientAccumulationScheduler(Callback):
    """``scheduling={epoch: factor}``: from ``epoch`` on (0-based), accumulate ``factor`` batches per step.

    Epochs before the first key accumulate 1 batch. The callback sets ``trainer.accumulate_grad_batches``
    at each ``on_train_epoch_start``; ``Trainer(accumulate_grad_batches=...)`` must stay 1.
    """

    def __init__(self, scheduling: dict[int, int]) -> None:
        super().__init__()
        if not scheduling:
            raise TypeError("Empty dict cannot be interpreted correct")
        if any(not isinstance(key, int) or key < 0 for key in scheduling):
            raise MisconfigurationException(
                f"Epoch should be an int greater than or equal to 0. Got {list(scheduling.keys())}."
            )
        if any(not isinstance(value, int) or value < 1 for value in scheduling.values()):
            raise MisconfigurationException(
                f"Accumulation factor should be an int greater than 0. Got {list(scheduling.values())}."
            )
        if min(scheduling) != 0:
            scheduling.update({0: 1})
        self.scheduling = scheduling
        self.epochs = sorted(scheduling.keys())

    def going_to_accumulate_grad_batches(self) -> bool:
        return any(v > 1 for v in self.scheduling.values())

    def get_accumulate_grad_batches(self, epoch: int) -> int:
        for iter_epoch in reversed(self.epochs):
            if epoch >= iter_epoch:
                return self.scheduling[iter_epoch]
        return 1

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not pl_module.automatic_optimization:
            raise RuntimeError(
                "Automatic gradient accumulation and the `GradientAccumulationScheduler` is not supported for\n"
                "                manual optimization. Please remove the callback or switch to automatic optimization."
            )
        overridden = is_overridden("optimizer_step", pl_module) or is_overridden("optimizer_zero_grad", pl_module)
        if overridden and self.going_to_accumulate_grad_batches():
            rank_zero_warn(
                "When using `Trainer(accumulate_grad_batches != 1)` and overriding"
                " `LightningModule.optimizer_{step,zero_grad}`, the hooks will not be called on every batch"
                " (rather, they are called on every optimization step)."
            )
        if trainer.accumulate_grad_batches != 1:
            raise ValueError(
                "You have set `accumulate_grad_batches` and are using the `GradientAccumulationScheduler`"
                " callback. Either remove `accumulate_grad_batches` from the Trainer or remove the callback."
            )

    def on_train_epoch_start(self, trainer: Trainer, *_: Any) -> None:
        trainer.accumulate_grad_batches = self.get_accumulate_grad_batches(trainer.current_epoch)


__all__ = ["GradientAccumulationScheduler"]
