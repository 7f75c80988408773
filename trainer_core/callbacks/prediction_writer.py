"""``BasePredictionWriter``: write predictions per batch and/or per epoch (subclass it)."""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Literal

from trainer_core.callbacks.callback import Callback
from trainer_core.utilities.exceptions import MisconfigurationException

if TYPE_CHECKING:
    from trainer_core.core.module import LightningModule
    from trainer_core.trainer.trainer import Trainer


class WriteInterval(StrEnum):
    BATCH = "batch"
    EPOCH = "epoch"
    BATCH_AND_EPOCH = "batch_and_epoch"

    @property
    def on_batch(self) -> bool:
        return self in (WriteInterval.BATCH, WriteInterval.BATCH_AND_EPOCH)

    @property
    def on_epoch(self) -> bool:
        return self in (WriteInterval.EPOCH, WriteInterval.BATCH_AND_EPOCH)


class BasePredictionWriter(Callback):
    """Override ``write_on_batch_end`` and/or ``write_on_epoch_end``; ``write_interval`` says which is called.

    ``batch_indices`` are the dataset indices of the batch's samples (from the predict loader's batch
    sampler), as Lightning passes them.
    """

    def __init__(self, write_interval: Literal["batch", "epoch", "batch_and_epoch"] = "batch") -> None:
        if write_interval not in [i.value for i in WriteInterval]:
            raise MisconfigurationException(f"`write_interval` should be one of {[i.value for i in WriteInterval]}.")
        self.interval = WriteInterval(write_interval)

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        try:
            params = inspect.signature(pl_module.predict_step).parameters
        except (TypeError, ValueError):
            return
        if "dataloader_iter" in params:
            raise NotImplementedError("The `PredictionWriterCallback` does not support using `dataloader_iter`.")

    def write_on_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        prediction: Any,
        batch_indices: Sequence[int] | None,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int,
    ) -> None:
        """Write one batch's prediction (``write_interval`` ``"batch"`` or ``"batch_and_epoch"``)."""
        raise NotImplementedError()

    def write_on_epoch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        predictions: Sequence[Any],
        batch_indices: Sequence[Any],
    ) -> None:
        """Write all predictions of the epoch (``write_interval`` ``"epoch"`` or ``"batch_and_epoch"``)."""
        raise NotImplementedError()

    def on_predict_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if not self.interval.on_batch:
            return
        batch_indices = getattr(trainer.predict_loop, "current_batch_indices", None)
        self.write_on_batch_end(trainer, pl_module, outputs, batch_indices, batch, batch_idx, dataloader_idx)

    def on_predict_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not self.interval.on_epoch:
            return
        loop = trainer.predict_loop
        epoch_batch_indices = getattr(loop, "epoch_batch_indices", [])
        self.write_on_epoch_end(trainer, pl_module, getattr(loop, "predictions", []), epoch_batch_indices)


__all__ = ["BasePredictionWriter", "WriteInterval"]
