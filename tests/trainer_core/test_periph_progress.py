"""TQDMProgressBar output in Lightning's form, its bars per stage, and its cost controls."""

from __future__ import annotations

import io
import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

import trainer_core as L
from trainer_core.callbacks.progress import ProgressBar, TQDMProgressBar


class Regressor(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = nn.Linear(4, 1)

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        loss = F.mse_loss(self(batch), batch.sum(1, keepdim=True))
        self.log("train_loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx):
        self.log("val_loss", F.mse_loss(self(batch), batch.sum(1, keepdim=True)), prog_bar=True)

    def test_step(self, batch, batch_idx):
        self.log("test_loss", F.mse_loss(self(batch), batch.sum(1, keepdim=True)))

    def predict_step(self, batch, batch_idx, dataloader_idx=0):
        return self(batch)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def loader(n=24, batch_size=4):
    return DataLoader(torch.randn(n, 4, generator=torch.Generator().manual_seed(0)), batch_size=batch_size)


def trainer(tmp_path, bar, **kwargs):
    kwargs.setdefault("logger", L.loggers.CSVLogger(tmp_path))
    return L.Trainer(
        callbacks=[bar],
        default_root_dir=tmp_path,
        enable_checkpointing=False,
        enable_model_summary=False,
        **kwargs,
    )


def test_train_bar_has_lightnings_form(tmp_path, capsys):
    t = trainer(tmp_path, TQDMProgressBar(), max_epochs=2, num_sanity_val_steps=0)
    assert t.progress_bar_callback is not None and isinstance(t.progress_bar_callback, TQDMProgressBar)
    t.fit(Regressor(), loader(), loader(8))
    out = capsys.readouterr().out
    for epoch in (0, 1):
        pattern = (
            rf"Epoch {epoch}: 100%\|█+\| 6/6 \[\d\d:\d\d<\d\d:\d\d, +[\d.]+it/s, "
            r"v_num=0, train_loss=\d\.\d{3}\d*, val_loss=\d\.\d{3}\d*\]"
        )
        assert re.search(pattern, out), out[-800:]
    assert "Validation" in out


def test_sanity_check_and_validation_bars(tmp_path, capsys):
    t = trainer(tmp_path, TQDMProgressBar(), max_epochs=1, num_sanity_val_steps=2, logger=False)
    t.fit(Regressor(), loader(), loader(16))
    out = capsys.readouterr().out
    assert re.search(r"Sanity Checking: +\d+%\|.*\| 2/2 ", out) or "Sanity Checking" in out
    assert re.search(r"Validation: 100%\|█+\| 4/4 ", out), out[-800:]
    # no logger: no v_num
    assert re.search(r"Epoch 0: 100%\|█+\| 6/6 \[.*it/s, train_loss=", out)


def test_test_and_predict_bars(tmp_path, capsys):
    bar = TQDMProgressBar()
    t = trainer(tmp_path, bar, logger=False)
    model = Regressor()
    t.test(model, loader(12))
    out = capsys.readouterr().out
    assert re.search(r"Testing: 100%\|█+\| 3/3 ", out), out
    t.predict(model, loader(8))
    out = capsys.readouterr().out
    assert re.search(r"Predicting: 100%\|█+\| 2/2 ", out), out


def test_validate_bar_is_the_main_bar(tmp_path, capsys):
    t = trainer(tmp_path, TQDMProgressBar(), logger=False)
    t.validate(Regressor(), loader(12))
    out = capsys.readouterr().out
    assert re.search(r"Validation: 100%\|█+\| 3/3 ", out)
    # the bar is closed, so its line ends before the results table (tqdm pads a redraw that is shorter
    # than the one before it, e.g. "8624.34it/s" after "10556.13it/s", with spaces)
    assert re.search(r"3/3 \[[^\]]*\] *\n", out), out


class CountingBar(TQDMProgressBar):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.metric_reads = 0

    def get_metrics(self, trainer, pl_module):
        self.metric_reads += 1
        return super().get_metrics(trainer, pl_module)


def test_metrics_read_only_when_the_bar_redraws(tmp_path):
    # a long redraw interval: metrics (a device sync each) are read at the last batch of each
    # epoch and at epoch end, not once per step
    bar = CountingBar(min_interval=3600, file=io.StringIO())
    t = trainer(tmp_path, bar, max_epochs=2, logger=False)
    t.fit(Regressor(), loader(n=400, batch_size=4))
    assert t.global_step == 200
    assert bar.metric_reads <= 2 * 3, bar.metric_reads
    text = bar._file.getvalue()
    assert "100/100" in text and "Epoch 1" in text

    # interval 0 with refresh_rate=10: a draw every 10 batches
    bar = CountingBar(refresh_rate=10, min_interval=0, file=io.StringIO())
    t = trainer(tmp_path, bar, max_epochs=1, logger=False)
    t.fit(Regressor(), loader(n=400, batch_size=4))
    assert 10 <= bar.metric_reads <= 12, bar.metric_reads
    assert "50/100" in bar._file.getvalue()


def test_leave_keeps_one_line_per_epoch(tmp_path):
    stream = io.StringIO()
    t = trainer(tmp_path, TQDMProgressBar(leave=True, file=stream), max_epochs=3, logger=False)
    t.fit(Regressor(), loader())
    lines = [line for line in stream.getvalue().split("\n") if "Epoch" in line]
    assert len(lines) == 3 and all("6/6" in line for line in lines)


def test_disabled_bars(tmp_path, capsys):
    t = trainer(tmp_path, TQDMProgressBar(refresh_rate=0), max_epochs=1)
    t.fit(Regressor(), loader())
    assert "Epoch 0" not in capsys.readouterr().out

    t = L.Trainer(enable_progress_bar=False, max_epochs=1, logger=False, enable_checkpointing=False)
    t.fit(Regressor(), loader())
    assert t.progress_bar_callback is None
    assert "Epoch 0" not in capsys.readouterr().out

    bar = TQDMProgressBar()
    bar.disable()
    assert bar.is_disabled
    bar.enable()
    assert bar.is_enabled


def test_unsized_loader_shows_no_total(tmp_path):
    class Stream(torch.utils.data.IterableDataset):
        def __iter__(self):
            return iter(torch.randn(10, 4))

    stream = io.StringIO()
    t = trainer(tmp_path, TQDMProgressBar(file=stream), max_epochs=1, logger=False)
    t.fit(Regressor(), DataLoader(Stream(), batch_size=2))
    assert re.search(r"Epoch 0: \|.*\| 5/\? ", stream.getvalue()), stream.getvalue()


def test_get_metrics_has_version_and_progress_bar_metrics(tmp_path):
    bar = TQDMProgressBar(file=io.StringIO())
    t = trainer(tmp_path, bar, max_epochs=1, logger=L.loggers.CSVLogger(tmp_path, version="run-abcdef"))
    model = Regressor()
    t.fit(model, loader())
    metrics = bar.get_metrics(t, model)
    assert metrics["v_num"] == "cdef"
    assert set(metrics) == {"v_num", "train_loss"}
    assert isinstance(metrics["train_loss"], float)


def test_progress_bar_base_is_abstract_for_enable_disable():
    with pytest.raises(NotImplementedError):
        ProgressBar().disable()
    with pytest.raises(ValueError, match="refresh_rate"):
        TQDMProgressBar(refresh_rate=-1)


def test_several_validation_dataloaders_get_their_own_description(tmp_path):
    class TwoLoaders(Regressor):
        def validation_step(self, batch, batch_idx, dataloader_idx=0):
            self.log("val_loss", F.mse_loss(self(batch), batch.sum(1, keepdim=True)))

    stream = io.StringIO()
    t = trainer(tmp_path, TQDMProgressBar(file=stream), max_epochs=1, logger=False, num_sanity_val_steps=0)
    t.fit(TwoLoaders(), loader(8), [loader(8), loader(12)])
    text = stream.getvalue()
    assert re.search(r"Validation DataLoader 0: 100%\|.*\| 2/2 ", text), text
    assert re.search(r"Validation DataLoader 1: 100%\|.*\| 3/3 ", text), text
