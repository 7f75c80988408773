"""``self.log`` semantics: per-hook defaults, forked names, weighted epoch means, reducers, loggers."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

import trainer_core as L
from trainer_core.loggers.logger import Logger


class Collect(Logger):
    def __init__(self):
        self.metrics: list[tuple[int, dict]] = []
        self.hparams: list[dict] = []
        self.statuses: list[str] = []

    @property
    def name(self):
        return "collect"

    @property
    def version(self):
        return 0

    def log_metrics(self, metrics, step=None):
        self.metrics.append((step, dict(metrics)))

    def log_hyperparams(self, params, *args, **kwargs):
        self.hparams.append(dict(params))

    def finalize(self, status):
        self.statuses.append(status)


class Ragged(Dataset):
    """Values 0..n-1; batch sizes vary when n is not a multiple of the batch size."""

    def __init__(self, n: int):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return torch.tensor([float(i)])


class LogModel(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))

    def training_step(self, batch, batch_idx):
        loss = ((batch - self.w) ** 2).mean()
        self.log("loss", loss, prog_bar=True)
        self.log("both", batch.mean(), on_step=True, on_epoch=True)
        self.log("batch_max", batch.max(), on_step=False, on_epoch=True, reduce_fx="max")
        self.log("count", 1.0, on_step=False, on_epoch=True, reduce_fx="sum")
        self.log("hidden", 3.0, logger=False)
        return loss

    def validation_step(self, batch, batch_idx, dataloader_idx=0):
        self.log("val_mean", batch.mean())
        self.log("val_step_too", batch.mean(), on_step=True)

    def test_step(self, batch, batch_idx):
        self.log("test_mean", batch.mean(), prog_bar=True)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


def _trainer(tmp_path, **kw):
    kw.setdefault("logger", False)
    return L.Trainer(
        default_root_dir=tmp_path,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        num_sanity_val_steps=0,
        **kw,
    )


def test_defaults_forked_names_and_weighted_epoch_means(tmp_path):
    logger = Collect()
    trainer = _trainer(tmp_path, max_epochs=1, logger=logger, log_every_n_steps=1)
    train = DataLoader(Ragged(10), batch_size=4)  # batches of 4, 4, 2
    val = DataLoader(Ragged(5), batch_size=2)  # batches of 2, 2, 1
    trainer.fit(LogModel(), train, val)

    cb = trainer.callback_metrics
    # the weighted mean over all 10 samples is 4.5; an unweighted mean of batch means would be 3.833
    assert cb["both_epoch"].item() == pytest.approx(4.5)
    assert cb["both"].item() == pytest.approx(4.5)
    assert cb["both_step"].item() == pytest.approx(8.5)  # last batch [8, 9]
    assert cb["batch_max"].item() == 9.0
    assert cb["count"].item() == 3.0
    assert cb["val_mean"].item() == pytest.approx(2.0)  # (0+1+2+3+4)/5, weighted
    assert "val_step_too_epoch" in cb and "val_step_too_step" not in cb  # eval step values are not callback metrics
    assert "loss" in cb and "loss_step" not in cb and "loss_epoch" not in cb  # training_step: on_step only

    logged = trainer.logged_metrics
    assert "hidden" not in logged and "both_step" in logged and "both_epoch" in logged and "val_mean" in logged
    assert set(trainer.progress_bar_metrics) == {"loss"}
    assert isinstance(trainer.progress_bar_metrics["loss"], float)

    steps = [(step, m) for step, m in logger.metrics if "loss" in m]
    assert [s for s, _ in steps] == [0, 1, 2]
    assert all(m["epoch"] == 0 for _, m in steps)
    epoch_end = [m for _, m in logger.metrics if "both_epoch" in m]
    assert len(epoch_end) == 1 and epoch_end[0]["count"] == 3.0
    assert all(isinstance(v, float | int) for _, m in logger.metrics for v in m.values())
    assert logger.statuses == ["success"]


def test_log_every_n_steps_controls_logger_calls(tmp_path):
    logger = Collect()
    trainer = _trainer(tmp_path, max_epochs=1, logger=logger, log_every_n_steps=4)
    trainer.fit(LogModel(), DataLoader(Ragged(20), batch_size=1))
    step_calls = [step for step, m in logger.metrics if "loss" in m]
    assert step_calls == [3, 7, 11, 15, 19]


def test_explicit_batch_size_and_log_dict(tmp_path):
    class M(LogModel):
        def training_step(self, batch, batch_idx):
            # batch_size given: weights 1 and 3 -> (1*10 + 3*20) / 4 = 17.5
            self.log("weighted", 10.0 if batch_idx == 0 else 20.0, on_epoch=True, batch_size=1 if batch_idx == 0 else 3)
            self.log_dict({"a": 1.0, "b": torch.tensor(2.0)}, on_step=False, on_epoch=True)
            return (self.w * batch).sum()

    trainer = _trainer(tmp_path, max_epochs=1, limit_train_batches=2)
    trainer.fit(M(), DataLoader(Ragged(8), batch_size=2))
    assert trainer.callback_metrics["weighted_epoch"].item() == pytest.approx(17.5)
    assert trainer.callback_metrics["a"].item() == 1.0 and trainer.callback_metrics["b"].item() == 2.0


def test_values_stay_on_device_until_read(tmp_path):
    seen = {}

    class Spy(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            results = trainer._train_results
            seen["types"] = {type(e.step_value) for e in results.entries.values() if e.step_value is not None}

    trainer = _trainer(tmp_path, max_epochs=1, limit_train_batches=2, callbacks=[Spy()])
    trainer.fit(LogModel(), DataLoader(Ragged(8), batch_size=2))
    assert seen["types"] == {torch.Tensor}


def test_logging_errors(tmp_path):
    class BadShape(LogModel):
        def training_step(self, batch, batch_idx):
            self.log("vec", torch.ones(3))
            return None

    with pytest.raises(ValueError, match="must have a single element"):
        _trainer(tmp_path, max_epochs=1).fit(BadShape(), DataLoader(Ragged(4), batch_size=2))

    class OnStepInEpochEnd(LogModel):
        def on_train_epoch_end(self):
            self.log("x", 1.0, on_step=True)

    with pytest.raises(ValueError, match="on_step=True"):
        _trainer(tmp_path, max_epochs=1).fit(OnStepInEpochEnd(), DataLoader(Ragged(4), batch_size=2))

    class ChangingArgs(LogModel):
        def training_step(self, batch, batch_idx):
            self.log("x", 1.0, prog_bar=batch_idx == 0)
            return None

    with pytest.raises(ValueError, match="twice in `training_step` with different arguments"):
        _trainer(tmp_path, max_epochs=1).fit(ChangingArgs(), DataLoader(Ragged(4), batch_size=2))

    class BadReduce(LogModel):
        def training_step(self, batch, batch_idx):
            self.log("x", 1.0, on_epoch=True, reduce_fx="median")
            return None

    with pytest.raises(ValueError, match="reduce_fx"):
        _trainer(tmp_path, max_epochs=1).fit(BadReduce(), DataLoader(Ragged(4), batch_size=2))

    with pytest.warns(UserWarning, match="not registered"):
        LogModel().log("free", 1.0)


def test_epoch_end_hook_logging_and_sync_dist_accepted(tmp_path):
    class M(LogModel):
        def on_train_epoch_end(self):
            self.log("epoch_hook", float(self.current_epoch), sync_dist=True)

        def on_validation_epoch_end(self):
            self.log("val_hook", 5.0)

    trainer = _trainer(tmp_path, max_epochs=2)
    trainer.fit(M(), DataLoader(Ragged(4), batch_size=2), DataLoader(Ragged(4), batch_size=2))
    assert trainer.callback_metrics["epoch_hook"].item() == 1.0
    assert trainer.callback_metrics["val_hook"].item() == 5.0


def test_validate_and_test_return_metrics_and_print_table(tmp_path, capsys):
    trainer = _trainer(tmp_path)
    model = LogModel()
    out = trainer.test(model, DataLoader(Ragged(6), batch_size=4))
    assert out == [{"test_mean": pytest.approx(2.5)}]
    printed = capsys.readouterr().out
    assert "Test metric" in printed and "DataLoader 0" in printed and "test_mean" in printed and "2.5" in printed

    out = trainer.validate(model, [DataLoader(Ragged(4), batch_size=2), DataLoader(Ragged(2), batch_size=2)])
    assert len(out) == 2
    assert out[0]["val_mean/dataloader_idx_0"] == pytest.approx(1.5)
    assert out[1]["val_mean/dataloader_idx_1"] == pytest.approx(0.5)
    assert "val_mean/dataloader_idx_1" not in out[0]
    printed = capsys.readouterr().out
    assert "Validate metric" in printed and "DataLoader 1" in printed

    trainer.test(model, DataLoader(Ragged(6), batch_size=4), verbose=False)
    assert "Test metric" not in capsys.readouterr().out


def test_hyperparams_sent_to_logger(tmp_path):
    class H(LogModel):
        def __init__(self, width: int = 3, name: str = "x"):
            super().__init__()
            self.save_hyperparameters()

    logger = Collect()
    _trainer(tmp_path, max_epochs=1, logger=logger).fit(H(width=5), DataLoader(Ragged(2)))
    assert logger.hparams == [{"width": 5, "name": "x"}]


def test_failed_run_finalizes_loggers_as_failed(tmp_path):
    class Boom(LogModel):
        def training_step(self, batch, batch_idx):
            raise RuntimeError("boom")

    logger = Collect()
    with pytest.raises(RuntimeError, match="boom"):
        _trainer(tmp_path, max_epochs=1, logger=logger).fit(Boom(), DataLoader(Ragged(2)))
    assert logger.statuses == ["failed"]
