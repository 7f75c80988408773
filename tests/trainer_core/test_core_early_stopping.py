"""EarlyStopping: patience counts validation checks; min_epochs/min_steps; strict; thresholds; check_finite."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

import trainer_core as L
from trainer_core.callbacks import EarlyStopping


class Scripted(L.LightningModule):
    """Logs ``val_loss`` from a fixed list, one value per validation run."""

    def __init__(self, values):
        super().__init__()
        self.values = list(values)
        self.w = nn.Parameter(torch.zeros(1))
        self.val_runs = 0

    def training_step(self, batch, batch_idx):
        self.log("train_metric", float(batch_idx))
        return (self.w * batch).sum()

    def validation_step(self, batch, batch_idx):
        self.log("val_loss", self.values[min(self.val_runs, len(self.values) - 1)])

    def on_validation_epoch_end(self):
        self.val_runs += 1

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


def _fit(tmp_path, values, es, **kw):
    model = Scripted(values)
    trainer = L.Trainer(
        default_root_dir=tmp_path,
        max_epochs=kw.pop("max_epochs", 20),
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        num_sanity_val_steps=0,
        callbacks=[es],
        **kw,
    )
    data = DataLoader(torch.ones(4, 1), batch_size=2)
    trainer.fit(model, data, DataLoader(torch.ones(2, 1)))
    return trainer, model


def test_patience_counts_checks_without_improvement(tmp_path):
    es = EarlyStopping(monitor="val_loss", patience=2)
    trainer, _ = _fit(tmp_path, [1.0, 0.8, 0.9, 0.85, 0.7], es)
    # improvements at epochs 0, 1; no improvement at 2, 3 -> stop after epoch 3
    assert trainer.current_epoch == 4
    assert es.stopped_epoch == 3 and es.wait_count == 2
    assert es.best_score.item() == pytest.approx(0.8)
    assert trainer.should_stop


def test_min_delta_and_mode_max(tmp_path):
    es = EarlyStopping(monitor="val_loss", mode="max", min_delta=0.1, patience=1)
    trainer, _ = _fit(tmp_path, [0.5, 0.55, 0.9], es)
    assert es.stopped_epoch == 1  # +0.05 is below min_delta
    assert trainer.current_epoch == 2


def test_min_epochs_respected(tmp_path):
    es = EarlyStopping(monitor="val_loss", patience=1)
    trainer, _ = _fit(tmp_path, [1.0, 2.0, 3.0, 4.0, 5.0, 6.0], es, min_epochs=4)
    assert trainer.current_epoch == 4  # should_stop set after epoch 1, honoured once 4 epochs ran


def test_min_steps_respected(tmp_path):
    es = EarlyStopping(monitor="val_loss", patience=1)
    trainer, _ = _fit(tmp_path, [1.0, 2.0, 3.0, 4.0, 5.0, 6.0], es, min_steps=8)
    assert trainer.global_step == 8 and trainer.current_epoch == 4


def test_strict_missing_monitor_lists_logged_keys(tmp_path):
    es = EarlyStopping(monitor="val_accuracy")
    with pytest.raises(RuntimeError) as err:
        _fit(tmp_path, [1.0], es)
    message = str(err.value)
    assert "Early stopping conditioned on metric `val_accuracy` which is not available" in message
    assert "`train_metric`" in message and "`val_loss`" in message


def test_non_strict_missing_monitor_is_ignored(tmp_path):
    es = EarlyStopping(monitor="val_accuracy", strict=False, patience=1)
    trainer, _ = _fit(tmp_path, [1.0], es, max_epochs=3)
    assert trainer.current_epoch == 3 and not trainer.should_stop


def test_stopping_threshold(tmp_path):
    es = EarlyStopping(monitor="val_loss", stopping_threshold=0.5, patience=100)
    trainer, _ = _fit(tmp_path, [1.0, 0.7, 0.4, 0.3], es)
    assert es.stopped_epoch == 2 and trainer.current_epoch == 3


def test_divergence_threshold(tmp_path):
    es = EarlyStopping(monitor="val_loss", divergence_threshold=5.0, patience=100)
    trainer, _ = _fit(tmp_path, [1.0, 2.0, 6.0, 1.0], es)
    assert es.stopped_epoch == 2


def test_check_finite(tmp_path):
    es = EarlyStopping(monitor="val_loss", patience=100)
    trainer, _ = _fit(tmp_path, [1.0, math.nan, 0.5], es)
    assert es.stopped_epoch == 1 and trainer.current_epoch == 2
    es2 = EarlyStopping(monitor="val_loss", patience=100, check_finite=False)
    trainer2, _ = _fit(tmp_path, [1.0, math.nan, 0.5], es2, max_epochs=3)
    assert trainer2.current_epoch == 3


def test_checks_after_each_validation_when_validating_mid_epoch(tmp_path):
    es = EarlyStopping(monitor="val_loss", patience=1)
    trainer, model = _fit(tmp_path, [1.0, 2.0, 3.0], es, val_check_interval=0.5)
    # two validations per epoch (2 batches, every batch) -> stops after the 2nd check, in epoch 0
    assert model.val_runs == 2 and trainer.global_step == 2 and es.stopped_epoch == 0


def test_no_checks_in_fast_dev_run(tmp_path):
    es = EarlyStopping(monitor="val_loss", patience=0)
    trainer, _ = _fit(tmp_path, [1.0, 2.0], es, fast_dev_run=True)
    assert es.wait_count == 0 and not trainer.should_stop


def test_bad_mode():
    with pytest.raises(ValueError, match="`mode` can be min, max"):
        EarlyStopping(monitor="x", mode="avg")
