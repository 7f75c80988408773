"""2 CPU processes (gloo): EarlyStopping stops both ranks when only rank 1's metric says stop; ModelCheckpoint and
CSVLogger write files from rank 0 only (an audit hook records every file each rank opens for writing) and keep the
same bookkeeping on both ranks. Prints one JSON line per rank. Usage: ``stop_and_files.py ROOT``."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

ROOT = os.path.realpath(sys.argv[1])
WRITTEN: list[str] = []


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if event != "open" or not isinstance(args[0], (str, bytes, os.PathLike)):
        return
    path = os.fsdecode(args[0])
    mode, flags = args[1], args[2]
    writes = any(c in mode for c in "wax+") if isinstance(mode, str) else bool(
        flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT)
    )
    if writes and os.path.realpath(path).startswith(ROOT + os.sep):
        WRITTEN.append(os.path.relpath(os.path.realpath(path), ROOT))


sys.addaudithook(_audit)

import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

import trainer_core as L  # noqa: E402
from trainer_core.callbacks import EarlyStopping, ModelCheckpoint  # noqa: E402
from trainer_core.loggers import CSVLogger  # noqa: E402

# per epoch: rank 0's metric keeps improving, rank 1's never improves after the first epoch (patience 1)
STOP_METRIC = {0: [3.0, 2.0, 1.0, 0.5, 0.2], 1: [1.0, 2.0, 3.0, 4.0, 5.0]}
VAL_LOSS = [1.0, 0.8, 0.6, 0.4, 0.2]


class Model(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(2, 1)

    def training_step(self, batch: Any, batch_idx: int) -> Any:
        x, y = batch
        loss = nn.functional.mse_loss(self.layer(x), y)
        self.log("train_loss", loss, sync_dist=True)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        epoch = self.current_epoch
        self.log("stop_metric", STOP_METRIC[self.global_rank][epoch])  # each rank its own value
        self.log("val_loss", VAL_LOSS[epoch] + 0.1 * self.global_rank, sync_dist=True)

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.parameters(), lr=0.01)


def main() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(8, 2, generator=g)
    data = TensorDataset(x, x.sum(1, keepdim=True))
    es = EarlyStopping(monitor="stop_metric", patience=1, mode="min")
    ckpt = ModelCheckpoint(monitor="val_loss", save_top_k=2, save_last=True)
    trainer = L.Trainer(
        strategy="ddp", devices=2, accelerator="cpu", max_epochs=5, default_root_dir=ROOT,
        logger=CSVLogger(os.path.join(ROOT, "logs")), callbacks=[es, ckpt], enable_progress_bar=False,
        enable_model_summary=False, num_sanity_val_steps=0, log_every_n_steps=1,
    )
    trainer.fit(Model(), DataLoader(data, batch_size=2), DataLoader(data, batch_size=2))
    record = {
        "rank": trainer.global_rank,
        "current_epoch": trainer.current_epoch,
        "global_step": trainer.global_step,
        "stopped_epoch": es.stopped_epoch,
        "best_model_path": ckpt.best_model_path,
        "best_k_models": {k: float(v) for k, v in ckpt.best_k_models.items()},
        "last_model_path": ckpt.last_model_path,
        "dirpath": ckpt.dirpath,
        "log_dir": trainer.log_dir,
        "logger_version": trainer.logger.version if trainer.logger is not None else None,
        "written": sorted(set(WRITTEN)),
    }
    print("\n" + json.dumps(record), flush=True)


if __name__ == "__main__":
    main()
