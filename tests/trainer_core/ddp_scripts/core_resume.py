"""2 CPU processes (gloo), ``strategy="ddp"``: exact resume and the match with one process (issue 13, points 4, 5).

In one launch (later Trainers join the process group the first one made):
- ``full``: an uninterrupted 2-epoch run on shuffled data;
- ``stopped``: the same run, stopped mid-epoch 1 (``trainer.should_stop`` at step ``STOP_STEP``) after
  ``ModelCheckpoint(every_n_train_steps=STOP_STEP)`` wrote ``step=STOP_STEP.ckpt``;
- ``resumed``: a fresh model fitted with ``ckpt_path`` = that checkpoint;
- ``match``: a loader with ``shuffle=False`` (its injected DistributedSampler shuffles all the same, as
  Lightning's does for a train loader), batch ``BATCH`` per rank; the per-step loss averaged over the ranks (all_gather).

Each rank prints one JSON line ``{"rank": r, ...}`` with the final weights of each run. ``Regressor`` and
``dataset`` are imported by the test for the single-process side. Usage: ``core_resume.py ROOT``.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import trainer_core as L
from trainer_core.callbacks import ModelCheckpoint

SEED = 3
N, BATCH, EPOCHS, STOP_STEP = 32, 4, 2, 6  # 4 steps per epoch on each of 2 ranks: step 6 is mid-epoch 1


def dataset() -> TensorDataset:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(N, 3, generator=g)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5]]) + 0.1 * torch.randn(N, 1, generator=g)
    return TensorDataset(x, y)


class Regressor(L.LightningModule):
    def __init__(self, lr: float = 0.1) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1))
        self.losses: list[float] = []

    def training_step(self, batch: Any, batch_idx: int) -> Any:
        x, y = batch
        loss = nn.functional.mse_loss(self.net(x), y)
        self.losses.append(float(self.all_gather(loss.detach()).mean()))  # the global batch's loss
        return loss

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr, momentum=0.9)


class _StopAt(L.Callback):
    def on_train_batch_end(self, trainer: Any, *args: Any) -> None:
        if trainer.global_step == STOP_STEP:
            trainer.should_stop = True


def weights(model: nn.Module) -> list[list[float]]:
    return [p.detach().flatten().tolist() for p in model.parameters()]


def _fit(root: str, model: Regressor, shuffle: bool, callbacks: list[Any] | None = None, **kw: Any) -> L.Trainer:
    trainer = L.Trainer(
        strategy="ddp", devices=2, accelerator="cpu", max_epochs=EPOCHS, default_root_dir=root, logger=False,
        enable_checkpointing=bool(callbacks), callbacks=callbacks, enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, DataLoader(dataset(), batch_size=BATCH, shuffle=shuffle), **kw)
    return trainer


def main() -> None:
    root = sys.argv[1]
    L.seed_everything(SEED)
    full = Regressor()
    _fit(os.path.join(root, "full"), full, shuffle=True)

    L.seed_everything(SEED)
    stopped = Regressor()
    ckpt_dir = os.path.join(root, "ckpts")
    every = ModelCheckpoint(dirpath=ckpt_dir, every_n_train_steps=STOP_STEP, save_top_k=-1, filename="{step}")
    stopped_trainer = _fit(os.path.join(root, "stopped"), stopped, shuffle=True, callbacks=[every, _StopAt()])
    ckpt = os.path.join(ckpt_dir, f"step={STOP_STEP}.ckpt")

    L.seed_everything(SEED)
    resumed = Regressor()
    resumed_trainer = _fit(os.path.join(root, "resumed"), resumed, shuffle=True, ckpt_path=ckpt)

    L.seed_everything(SEED)
    match = Regressor()
    _fit(os.path.join(root, "match"), match, shuffle=False)

    record = {
        "rank": resumed_trainer.global_rank,
        "full": weights(full),
        "stopped_step": stopped_trainer.global_step,
        "stopped": weights(stopped),
        "resumed": weights(resumed),
        "resumed_step": resumed_trainer.global_step,
        "resumed_epoch": resumed_trainer.current_epoch,
        "ckpt": ckpt,
        "match_losses": match.losses,
        "match": weights(match),
    }
    print("\n" + json.dumps(record), flush=True)


if __name__ == "__main__":
    main()
