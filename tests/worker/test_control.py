"""RunControl's resume-checkpoint schedule, on trainer_core alone (no database)."""

from __future__ import annotations

import threading

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import trainer_core as L
from worker.control import RunControl


class Tiny(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Linear(4, 1)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.mse_loss(self.net(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _loader() -> DataLoader:
    g = torch.Generator().manual_seed(0)
    return DataLoader(TensorDataset(torch.randn(48, 4, generator=g), torch.randn(48, 1, generator=g)), batch_size=4)


def _fit(ckpt_dir, max_steps: int, ckpt_path=None) -> RunControl:
    control = RunControl(threading.Event(), logger=None, ckpt_dir=ckpt_dir, every_n_train_steps=5)
    trainer = L.Trainer(max_steps=max_steps, callbacks=[control], logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(Tiny(), _loader(), ckpt_path=ckpt_path)
    return control


def test_saves_every_n_steps_at_batch_start(tmp_path):
    _fit(tmp_path / "a", max_steps=12)
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == [
        "last-epoch=0-step=10.ckpt",
        "last-epoch=0-step=5.ckpt",
    ]


def test_a_resumed_run_does_not_save_again_the_step_it_starts_from(tmp_path):
    _fit(tmp_path / "a", max_steps=12)
    # the new attempt (or an API resume) writes into another folder, starting at step 10
    _fit(tmp_path / "b", max_steps=17, ckpt_path=str(tmp_path / "a" / "last-epoch=0-step=10.ckpt"))
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["last-epoch=1-step=15.ckpt"]
