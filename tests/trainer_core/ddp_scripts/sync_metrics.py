"""2 CPU processes (gloo): ``self.log(sync_dist=True)`` values, the unsynced-epoch warning, ``all_gather`` shapes,
the progress bar and ``self.print`` per rank. Prints one JSON line per rank.

Usage: ``sync_metrics.py ROOT [ddp|ddp_spawn]``."""

from __future__ import annotations

import contextlib
import io
import json
import sys
import warnings
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import trainer_core as L


class Model(L.LightningModule):
    """Rank r logs r+1, with batches of r+1 samples (2 batches on each rank)."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(2, 1)
        self.gathered: dict[str, Any] = {}
        self.printed = ""
        self.record: dict[str, Any] = {}

    def _loader(self) -> DataLoader:
        size = self.global_rank + 1
        return DataLoader(TensorDataset(torch.ones(2 * size, 2)), batch_size=size)

    def train_dataloader(self) -> DataLoader:
        return self._loader()

    def val_dataloader(self) -> DataLoader:
        return self._loader()

    def training_step(self, batch: Any, batch_idx: int) -> Any:
        (x,) = batch
        mine = float(self.global_rank + 1)
        self.log("r", mine, on_step=True, on_epoch=True, sync_dist=True, batch_size=x.shape[0], prog_bar=True)
        self.log("rmax", mine, on_step=False, on_epoch=True, reduce_fx="max", sync_dist=True)
        self.log("rmin", mine, on_step=False, on_epoch=True, reduce_fx="min", sync_dist=True)
        self.log("rsum", mine, on_step=False, on_epoch=True, reduce_fx="sum", sync_dist=True)
        return self.layer(x).sum()

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        mine = float(self.global_rank + 1)
        self.log("val_r", mine, sync_dist=True)
        self.log("val_own", mine)  # not synced: each rank's own (and Lightning's PossibleUserWarning)

    def on_train_end(self) -> None:
        rank = float(self.global_rank)
        shapes = {
            "vec": self.all_gather(torch.arange(3.0) + rank),
            "scalar": self.all_gather(rank),
            "nested": self.all_gather({"n": [torch.zeros(2, 1)]})["n"][0],
        }
        self.gathered = {k: list(v.shape) for k, v in shapes.items()}
        self.gathered_ranks = self.all_gather(torch.tensor(rank)).tolist()
        buffer = io.StringIO()
        with contextlib.redirect_stdout(buffer):
            self.print("printed")
        self.printed = buffer.getvalue()

    def setup(self, stage: str) -> None:
        if stage == "fit":  # in the rank's own process, also under ddp_spawn
            self._catcher = warnings.catch_warnings(record=True)
            self._caught = self._catcher.__enter__()
            warnings.simplefilter("always")

    def on_fit_end(self) -> None:
        self._catcher.__exit__(None, None, None)
        trainer = self.trainer
        bar = trainer.progress_bar_callback
        self.record = {
            "rank": trainer.global_rank,
            "world_size": trainer.world_size,
            "train_batches": 2,
            "callback": {k: float(v) for k, v in trainer.callback_metrics.items()},
            "logged": {k: float(v) for k, v in trainer.logged_metrics.items()},
            "pbar": {k: float(v) for k, v in trainer.progress_bar_metrics.items()},
            "sync_warning": any(
                "sync_dist=True" in str(w.message) and "'val_own'" in str(w.message) for w in self._caught
            ),
            "gather_shapes": self.gathered,
            "gathered_ranks": self.gathered_ranks,
            "bar_enabled": bool(bar is not None and bar.is_enabled),
            "printed": self.printed == "printed\n",
        }
        if MODE == "ddp_spawn":  # the rank processes end with the fit
            print("\n" + json.dumps(self.record), flush=True)

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.parameters(), lr=0.01)


MODE = sys.argv[2] if len(sys.argv) > 2 else "ddp"


def main() -> None:
    root = sys.argv[1]
    trainer = L.Trainer(
        strategy=MODE, devices=2, accelerator="cpu", max_epochs=1, default_root_dir=root, logger=False,
        enable_checkpointing=False, enable_model_summary=False, num_sanity_val_steps=0, use_distributed_sampler=False,
        enable_progress_bar=True,
    )
    model = Model()
    trainer.fit(model)
    if MODE == "ddp":
        record = model.record
        validated = trainer.validate(model, verbose=False)  # per-rank results, synced where logged with sync_dist
        record["validated"] = [{k: float(v) for k, v in d.items()} for d in validated]
        print("\n" + json.dumps(record), flush=True)


if __name__ == "__main__":
    main()
