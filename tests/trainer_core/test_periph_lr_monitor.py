"""LearningRateMonitor: Lightning's metric names and the values logged at each step/epoch."""

from __future__ import annotations

import csv
import os

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

import trainer_core as L
from trainer_core.callbacks.lr_monitor import LearningRateMonitor
from trainer_core.loggers import CSVLogger


class Model(L.LightningModule):
    def __init__(self, optim="adam", scheduler=None, interval="epoch", name=None, groups=False):
        super().__init__()
        self.optim, self.scheduler, self.interval, self.name, self.groups = (
            optim,
            scheduler,
            interval,
            name,
            groups,
        )
        self.a = nn.Linear(4, 4)
        self.b = nn.Linear(4, 1)

    def forward(self, x):
        return self.b(self.a(x))

    def training_step(self, batch, batch_idx):
        return F.mse_loss(self(batch), batch.sum(1, keepdim=True))

    def configure_optimizers(self):
        if self.groups:
            params = [{"params": self.a.parameters()}, {"params": self.b.parameters(), "lr": 0.5}]
        else:
            params = self.parameters()
        if self.optim == "adam":
            opt = torch.optim.Adam(params, lr=0.1, weight_decay=0.01)
        else:
            opt = torch.optim.SGD(params, lr=0.1, momentum=0.8)
        if self.scheduler is None:
            return opt
        config = {
            "scheduler": torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5),
            "interval": self.interval,
        }
        if self.name:
            config["name"] = self.name
        return {"optimizer": opt, "lr_scheduler": config}


def loader(n=16):
    return DataLoader(torch.randn(n, 4, generator=torch.Generator().manual_seed(0)), batch_size=4)


def fit(tmp_path, model, monitor, **kwargs):
    logger = CSVLogger(tmp_path)
    trainer = L.Trainer(
        callbacks=[monitor],
        logger=logger,
        default_root_dir=tmp_path,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **kwargs,
    )
    trainer.fit(model, loader())
    with open(os.path.join(logger.log_dir, "metrics.csv"), newline="") as f:
        rows = list(csv.DictReader(f))
    return trainer, rows


def series(rows, key):
    return [(int(r["step"]), float(r[key])) for r in rows if r.get(key)]


def test_step_interval_scheduler_logged_every_step(tmp_path):
    monitor = LearningRateMonitor(logging_interval="step")
    _, rows = fit(
        tmp_path, Model(scheduler="step", interval="step"), monitor, max_epochs=1, log_every_n_steps=1
    )
    # logged at the start of each batch, before that batch's optimizer step and scheduler step
    assert series(rows, "lr-Adam") == [(0, 0.1), (1, 0.05), (2, 0.025), (3, 0.0125)]
    assert monitor.lrs == {"lr-Adam": [0.1, 0.05, 0.025, 0.0125]}


def test_epoch_interval_scheduler_logged_at_epoch_start(tmp_path):
    monitor = LearningRateMonitor()
    _, rows = fit(
        tmp_path, Model(scheduler="step", interval="epoch"), monitor, max_epochs=3, log_every_n_steps=1
    )
    assert series(rows, "lr-Adam") == [(0, 0.1), (4, 0.05), (8, 0.025)]


def test_log_every_n_steps_is_respected(tmp_path):
    monitor = LearningRateMonitor(logging_interval="step")
    _, rows = fit(
        tmp_path, Model(scheduler="step", interval="step"), monitor, max_epochs=2, log_every_n_steps=3
    )
    assert [s for s, _ in series(rows, "lr-Adam")] == [2, 5]


def test_scheduler_name_param_groups_momentum_weight_decay(tmp_path):
    monitor = LearningRateMonitor(logging_interval="epoch", log_momentum=True, log_weight_decay=True)
    model = Model(scheduler="step", interval="epoch", name="my_lr", groups=True)
    _, rows = fit(tmp_path, model, monitor, max_epochs=1)
    keys = set(rows[0])
    assert {"my_lr/pg1", "my_lr/pg2", "my_lr/pg1-momentum", "my_lr/pg1-weight_decay"} <= keys
    assert series(rows, "my_lr/pg2") == [(0, 0.5)]
    assert series(rows, "my_lr/pg1-momentum") == [(0, 0.9)]  # Adam: betas[0]
    assert series(rows, "my_lr/pg1-weight_decay") == [(0, 0.01)]


def test_optimizer_without_scheduler_and_sgd_momentum(tmp_path):
    monitor = LearningRateMonitor(log_momentum=True)
    trainer, rows = fit(tmp_path, Model(optim="sgd"), monitor, max_epochs=1, log_every_n_steps=2)
    assert series(rows, "lr-SGD")[0] == (0, 0.1)
    assert series(rows, "lr-SGD-momentum")[0] == (0, 0.8)
    assert "lr-SGD" in trainer.callback_metrics


def test_names_for_several_optimizers_of_one_class():
    monitor = LearningRateMonitor()
    p = [nn.Parameter(torch.zeros(1)) for _ in range(3)]
    opts = [torch.optim.SGD([p[0]], lr=1), torch.optim.SGD([p[1]], lr=1), torch.optim.Adam([p[2]], lr=1)]
    from collections import defaultdict

    names, _ = monitor._find_names_from_optimizers(opts, [], defaultdict(int))
    assert names == [["lr-SGD"], ["lr-SGD-1"], ["lr-Adam"]]
    named = torch.optim.SGD([{"params": [p[0]], "name": "enc"}, {"params": [p[1]], "name": "dec"}], lr=1)
    assert monitor._find_names_from_optimizers([named], [], defaultdict(int))[0] == [
        ["lr-SGD/enc", "lr-SGD/dec"]
    ]
    duplicate = torch.optim.SGD([{"params": [p[0]], "name": "x"}, {"params": [p[1]], "name": "x"}], lr=1)
    with pytest.raises(ValueError, match="unique"):
        monitor._find_names_from_optimizers([duplicate], [], defaultdict(int))


def test_needs_a_logger_and_a_valid_interval(tmp_path):
    with pytest.raises(ValueError, match="logging_interval"):
        LearningRateMonitor(logging_interval="batch")
    trainer = L.Trainer(
        callbacks=[LearningRateMonitor()],
        logger=False,
        max_epochs=1,
        enable_checkpointing=False,
        enable_progress_bar=False,
        default_root_dir=tmp_path,
    )
    with pytest.raises(ValueError, match="no logger"):
        trainer.fit(Model(), loader())


def test_fast_dev_run_turns_the_monitor_off(tmp_path):
    # "fast_dev_run ... will disable ... loggers and logger callbacks like LearningRateMonitor"
    monitor = LearningRateMonitor()
    trainer = L.Trainer(
        fast_dev_run=2, callbacks=[monitor], default_root_dir=tmp_path, enable_progress_bar=False
    )
    trainer.fit(Model(scheduler="step", interval="step"), loader())
    assert trainer.global_step == 2 and not os.path.exists(tmp_path / "lightning_logs")
