"""CSVLogger and TensorBoardLogger files; Logger base API."""

from __future__ import annotations

import csv
import os
from argparse import Namespace

import pytest
import torch
import yaml

from trainer_core.loggers import CSVLogger, Logger, TensorBoardLogger


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_csv_versions_increment_and_paths(tmp_path):
    first = CSVLogger(tmp_path)
    assert first.version == 0
    assert first.log_dir == os.path.join(str(tmp_path), "lightning_logs", "version_0")
    first.log_metrics({"a": 1.0}, step=0)
    first.finalize("success")
    second = CSVLogger(tmp_path)
    assert second.version == 1 and second.root_dir == os.path.join(str(tmp_path), "lightning_logs")
    named = CSVLogger(tmp_path, name="exp", version="run-a")
    assert named.log_dir == os.path.join(str(tmp_path), "exp", "run-a") and named.name == "exp"
    # a logger that never logged creates no folder
    CSVLogger(tmp_path, name="quiet").finalize("success")
    assert not (tmp_path / "quiet").exists()


def test_csv_metrics_columns_grow_and_file_is_rewritten(tmp_path):
    logger = CSVLogger(tmp_path, flush_logs_every_n_steps=2)
    logger.log_metrics({"train_loss": torch.tensor(0.5), "epoch": 0}, step=0)
    logger.log_metrics({"train_loss": 0.25, "epoch": 0}, step=1)  # (1 + 1) % 2 == 0: flushed
    path = os.path.join(logger.log_dir, "metrics.csv")
    assert read_csv(path) == [
        {"epoch": "0", "step": "0", "train_loss": "0.5"},
        {"epoch": "0", "step": "1", "train_loss": "0.25"},
    ]
    logger.log_metrics({"val_loss": 0.75, "epoch": 0}, step=1)
    logger.log_metrics({"acc": 0.5, "train_loss": 0.125, "epoch": 1}, step=2)
    logger.save()
    with open(path) as f:
        header = f.readline().strip()
    assert header == "epoch,step,acc,train_loss,val_loss"
    rows = read_csv(path)
    assert len(rows) == 4
    assert rows[0] == {"epoch": "0", "step": "0", "acc": "", "train_loss": "0.5", "val_loss": ""}
    assert rows[2]["val_loss"] == "0.75" and rows[3]["acc"] == "0.5"


def test_csv_prefix_and_buffering(tmp_path):
    logger = CSVLogger(tmp_path, prefix="fold1", flush_logs_every_n_steps=100)
    logger.log_metrics({"loss": 1.0}, step=3)
    path = os.path.join(logger.log_dir, "metrics.csv")
    assert not os.path.exists(path)  # buffered until the flush step or save()
    logger.finalize("success")
    assert read_csv(path) == [{"step": "3", "fold1-loss": "1.0"}]


def test_csv_appends_when_reopened(tmp_path):
    first = CSVLogger(tmp_path, version=0)
    first.log_metrics({"loss": 1.0}, step=0)
    first.save()
    again = CSVLogger(tmp_path, version=0)
    again.log_metrics({"loss": 0.5}, step=1)
    again.save()
    assert [r["loss"] for r in read_csv(os.path.join(again.log_dir, "metrics.csv"))] == ["1.0", "0.5"]


def test_csv_hparams_yaml(tmp_path):
    logger = CSVLogger(tmp_path)
    logger.log_hyperparams(Namespace(lr=0.01, layers=[64, 3], name="ae"))
    logger.log_hyperparams({"device": torch.device("cpu")})
    with open(os.path.join(logger.log_dir, "hparams.yaml")) as f:
        saved = yaml.safe_load(f)
    assert saved == {"lr": 0.01, "layers": [64, 3], "name": "ae", "device": "device(type='cpu')"}


def test_csv_rejects_bad_flush_interval(tmp_path):
    with pytest.raises(ValueError, match="flush_logs_every_n_steps"):
        CSVLogger(tmp_path, flush_logs_every_n_steps=0)


def _events(log_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir))
    acc.Reload()
    return acc


def test_tensorboard_writes_scalars_hparams_and_yaml(tmp_path):
    pytest.importorskip("tensorboard")
    logger = TensorBoardLogger(tmp_path)
    assert logger.version == 0 and logger.log_dir == os.path.join(
        str(tmp_path), "lightning_logs", "version_0"
    )
    logger.log_hyperparams({"lr": 0.1, "net": {"width": 8}})
    logger.log_metrics({"train_loss": torch.tensor(0.5)}, step=3)
    logger.log_metrics({"train_loss": 0.25}, step=4)
    logger.finalize("success")
    files = os.listdir(logger.log_dir)
    assert any(f.startswith("events.out.tfevents") for f in files)
    assert "hparams.yaml" in files
    with open(os.path.join(logger.log_dir, "hparams.yaml")) as f:
        assert yaml.safe_load(f) == {"lr": 0.1, "net": {"width": 8}}
    acc = _events(logger.log_dir)
    loss = acc.Scalars("train_loss")
    assert [(e.step, e.value) for e in loss] == [(3, 0.5), (4, 0.25)]
    assert [e.value for e in acc.Scalars("hp_metric")] == [-1]
    assert TensorBoardLogger(tmp_path).version == 1


def test_tensorboard_log_graph_needs_input(tmp_path):
    pytest.importorskip("tensorboard")
    logger = TensorBoardLogger(tmp_path, log_graph=True, default_hp_metric=False)
    model = torch.nn.Linear(3, 2)
    with pytest.warns(UserWarning, match="example_input_array"):
        logger.log_graph(model)
    logger.log_graph(model, torch.zeros(1, 3))
    logger.finalize("success")
    assert _events(logger.log_dir).Graph() is not None


def test_logger_base_requires_core_api_and_has_noop_defaults():
    with pytest.raises(TypeError):
        Logger()  # abstract

    class Recording(Logger):
        name = "rec"
        version = 7

        def __init__(self):
            self.rows = []

        def log_metrics(self, metrics, step=None):
            self.rows.append((step, metrics))

        def log_hyperparams(self, params, *args, **kwargs):
            self.rows.append(("hp", params))

    rec = Recording()
    rec.log_metrics({"x": 1.0}, 2)
    rec.log_hyperparams({"lr": 1})
    rec.log_graph(torch.nn.Linear(1, 1))
    rec.log_model_summary({"layers": []})
    rec.after_save_checkpoint(None)
    rec.finalize("success")
    assert rec.rows == [(2, {"x": 1.0}), ("hp", {"lr": 1})]
    assert (rec.save_dir, rec.log_dir, rec.root_dir, rec.experiment) == (None, None, None, None)


def test_tensorboard_missing_gives_install_hint(tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "tensorboard", None)  # what an environment without it looks like
    with pytest.raises(ImportError, match=r"pip install runyard\[tensorboard\]"):
        TensorBoardLogger(tmp_path)
