"""Compatibility (issue 12, point 5): how the Trainer wires Lightning's callbacks, warnings and exceptions.

Expected values were checked by running this file under ``lightning`` 2.6.6 (``import trainer_core`` aliased
to ``lightning.pytorch``); each test's docstring says which Lightning behaviour it checks.
"""

from __future__ import annotations

import warnings
from typing import Any

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import trainer_core as L
from trainer_core.callbacks import (
    BasePredictionWriter,
    EarlyStopping,
    ModelCheckpoint,
    OnExceptionCheckpoint,
    Timer,
)
from trainer_core.utilities.exceptions import MisconfigurationException
from trainer_core.utilities.warnings import PossibleUserWarning


def _data(n: int = 8) -> TensorDataset:
    torch.manual_seed(0)
    return TensorDataset(torch.randn(n, 4), torch.randn(n, 1))


class M(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(4, 1)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return nn.functional.mse_loss(self.layer(batch[0]), batch[1])

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self.log("val_loss", nn.functional.mse_loss(self.layer(batch[0]), batch[1]))

    def predict_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return self.layer(batch[0])

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _trainer(root: Any, **kwargs: Any) -> L.Trainer:
    defaults: dict[str, Any] = dict(
        default_root_dir=root, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, num_sanity_val_steps=0,
    )
    defaults.update(kwargs)
    return L.Trainer(**defaults)


def _messages(caught: list[warnings.WarningMessage], needle: str) -> list[str]:
    return [str(w.message) for w in caught if needle in str(w.message)]


# ---------------------------------------------------------------- max_time and Timer


def test_max_time_attaches_a_step_timer(tmp_path: Any) -> None:
    """Lightning's ``_configure_timer_callback``: ``max_time`` adds one ``Timer(duration=max_time,
    interval="step")``; a ``Timer`` among the callbacks wins and ``max_time`` is ignored."""
    trainer = _trainer(tmp_path, max_time={"minutes": 5})
    timers = [cb for cb in trainer.callbacks if isinstance(cb, Timer)]
    assert len(timers) == 1 and timers[0].time_remaining() == 300.0
    assert timers[0]._interval == "step"
    own = Timer(duration="00:00:01:00", interval="epoch")
    trainer = _trainer(tmp_path, max_time={"minutes": 5}, callbacks=[own])
    assert [cb for cb in trainer.callbacks if isinstance(cb, Timer)] == [own]
    assert not any(isinstance(cb, Timer) for cb in _trainer(tmp_path).callbacks)


def test_a_timer_callback_means_no_epoch_limit(tmp_path: Any) -> None:
    """Lightning's ``_parse_loop_limits``: with neither ``max_epochs`` nor ``max_steps`` but a ``Timer`` callback
    the fit has no epoch limit (``max_epochs == -1``) and no "max_epochs was not set" warning."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer = _trainer(tmp_path, callbacks=[Timer(duration={"seconds": 0})])
        trainer.fit(M(), DataLoader(_data(), batch_size=4))
    assert trainer.max_epochs == -1 and trainer.global_step == 0
    assert _messages(caught, "`max_epochs` was not set") == []


# ---------------------------------------------------------------- Checkpoint callbacks


def test_checkpoint_callbacks_are_every_checkpoint(tmp_path: Any) -> None:
    """Lightning finds checkpointing callbacks by the ``Checkpoint`` base class: with
    ``enable_checkpointing=False`` an ``OnExceptionCheckpoint`` raises (the message says ModelCheckpoint); it
    counts as the checkpoint callback (no default ``ModelCheckpoint`` added), and checkpoint callbacks run
    last, in their order."""
    with pytest.raises(MisconfigurationException, match="`enable_checkpointing=False` but found `ModelCheckpoint`"):
        _trainer(tmp_path, callbacks=[OnExceptionCheckpoint(tmp_path)])
    oe, es = OnExceptionCheckpoint(tmp_path), EarlyStopping(monitor="val_loss")
    trainer = _trainer(tmp_path, enable_checkpointing=True, callbacks=[oe, es])
    assert trainer.callbacks == [es, oe]
    assert trainer.checkpoint_callbacks == [oe] and trainer.checkpoint_callback is oe
    mc = ModelCheckpoint(dirpath=tmp_path)
    trainer = _trainer(tmp_path, enable_checkpointing=True, callbacks=[mc, oe, es])
    assert trainer.callbacks == [es, mc, oe] and trainer.checkpoint_callback is mc


def test_model_callbacks_replace_their_base_types(tmp_path: Any) -> None:
    """Lightning's ``_attach_model_callbacks``: a callback from ``configure_callbacks()`` replaces the Trainer's
    callbacks of its own type or of a base class of it; checkpoint callbacks stay last."""

    class MyStopping(EarlyStopping):
        pass

    class WithCallbacks(M):
        def configure_callbacks(self) -> Any:
            return [MyStopping(monitor="val_loss"), ModelCheckpoint(dirpath=tmp_path / "model")]

    es, mc = EarlyStopping(monitor="val_loss"), ModelCheckpoint(dirpath=tmp_path / "trainer")
    trainer = _trainer(tmp_path, max_epochs=1, enable_checkpointing=True, callbacks=[es, mc])
    trainer.fit(WithCallbacks(), DataLoader(_data(), batch_size=4), DataLoader(_data(), batch_size=4))
    names = [type(cb).__name__ for cb in trainer.callbacks]
    assert names == ["MyStopping", "ModelCheckpoint"] and mc not in trainer.callbacks


# ---------------------------------------------------------------- MisconfigurationException


def test_trainer_raises_misconfiguration_where_lightning_does(tmp_path: Any) -> None:
    """Lightning raises ``MisconfigurationException`` (a ``ValueError``) for a module without ``training_step``
    (here also a ``RuntimeError``, what trainer_core raised before) and for an unavailable accelerator, and a
    plain ``ValueError`` for ``val_check_interval`` beyond the training batches and an unknown accelerator."""
    trainer = _trainer(tmp_path, max_epochs=1, val_check_interval=10)
    with pytest.raises(ValueError, match=r"`val_check_interval` \(10\) must be less than or equal"):
        trainer.fit(M(), DataLoader(_data(), batch_size=4), DataLoader(_data(), batch_size=4))

    class NoStep(L.LightningModule):
        def configure_optimizers(self) -> Any:
            return None

    with pytest.raises(MisconfigurationException, match="No `training_step\\(\\)` method defined"):
        _trainer(tmp_path, max_epochs=1).fit(NoStep(), DataLoader(_data(), batch_size=4))
    with pytest.raises(ValueError):
        _trainer(tmp_path, accelerator="not-a-device")
    if not torch.cuda.is_available():
        with pytest.raises(MisconfigurationException):
            _trainer(tmp_path, accelerator="gpu")


# ---------------------------------------------------------------- warnings


def test_data_warnings_like_lightning(tmp_path: Any) -> None:
    """Lightning warns (PossibleUserWarning) about a shuffling val loader and about a ``validation_step`` with
    no val loader; ``predict_step`` returning None warns once."""
    shuffled = DataLoader(_data(), batch_size=4, shuffle=True)
    with pytest.warns(PossibleUserWarning, match="Your `val_dataloader`'s sampler has shuffling enabled"):
        _trainer(tmp_path, max_epochs=1).fit(M(), DataLoader(_data(), batch_size=4), shuffled)
    with pytest.warns(PossibleUserWarning, match="You defined a `validation_step` but have no `val_dataloader`"):
        _trainer(tmp_path, max_epochs=1).fit(M(), DataLoader(_data(), batch_size=4))

    class NonePredict(M):
        def predict_step(self, batch: Any, batch_idx: int) -> None:
            return None

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _trainer(tmp_path).predict(NonePredict(), DataLoader(_data(), batch_size=2))
    assert _messages(caught, "predict returned None") == [
        "predict returned None if it was on purpose, ignore this warning..."
    ]


def test_prediction_writer_without_a_batch_sampler(tmp_path: Any) -> None:
    """Lightning: with a loader that has no batch sampler (``batch_size=None``) the writer gets no indices and
    the loop warns once "Couldn't infer the batch indices ..."; the user's loader keeps its own batch sampler."""

    class Writer(BasePredictionWriter):
        def __init__(self) -> None:
            super().__init__("batch")
            self.indices: list[Any] = []

        def write_on_batch_end(self, trainer: Any, pl_module: Any, prediction: Any, batch_indices: Any,
                               batch: Any, batch_idx: int, dataloader_idx: int) -> None:
            self.indices.append(batch_indices)

    class Single(M):
        def predict_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            return self.layer(batch[0].unsqueeze(0))

    writer = Writer()
    loader = DataLoader(_data(3), batch_size=None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _trainer(tmp_path, callbacks=[writer]).predict(Single(), loader, return_predictions=False)
    assert _messages(caught, "Couldn't infer the batch indices") == [
        "Couldn't infer the batch indices fetched from your dataloader: `DataLoader`"
    ]
    assert writer.indices == [[], [], []]
    batched = DataLoader(_data(4), batch_size=2)
    sampler = batched.batch_sampler
    writer = Writer()
    _trainer(tmp_path, callbacks=[writer]).predict(M(), batched, return_predictions=False)
    assert writer.indices == [[0, 1], [2, 3]] and batched.batch_sampler is sampler


def test_num_training_batches_is_the_fit_loops_max_batches(tmp_path: Any) -> None:
    """Lightning: ``trainer.num_training_batches`` is ``trainer.fit_loop.max_batches`` (what
    StochasticWeightAveraging changes for its batch-norm epoch)."""
    trainer = _trainer(tmp_path, max_epochs=1, limit_train_batches=3)
    trainer.fit(M(), DataLoader(_data(16), batch_size=2))
    assert trainer.num_training_batches == trainer.fit_loop.max_batches == 3


def test_unused_gpu_warning(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Lightning's ``_log_device_info``: a visible GPU with ``accelerator="cpu"`` warns "GPU available but not
    used" (PossibleUserWarning)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.warns(PossibleUserWarning, match="GPU available but not used"):
        _trainer(tmp_path, accelerator="cpu")
