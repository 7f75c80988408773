"""Compatibility (issue 12, point 5): Lightning's built-in callbacks.

Expected values were recorded by running the same scenarios under ``lightning`` 2.6.6 (torch CPU); each
test's docstring says which Lightning behaviour it checks.
"""

from __future__ import annotations

import os
from typing import Any

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import trainer_core as L
from trainer_core.callbacks import (
    BackboneFinetuning,
    BasePredictionWriter,
    Checkpoint,
    EarlyStopping,
    GradientAccumulationScheduler,
    LambdaCallback,
    LearningRateMonitor,
    ModelCheckpoint,
    OnExceptionCheckpoint,
    StochasticWeightAveraging,
    Timer,
)
from trainer_core.callbacks.early_stopping import EarlyStoppingReason
from trainer_core.utilities.exceptions import MisconfigurationException


def _data() -> TensorDataset:
    torch.manual_seed(0)
    return TensorDataset(torch.randn(16, 4), torch.randn(16, 1))


def _loader(batch_size: int = 4) -> DataLoader[Any]:
    return DataLoader(_data(), batch_size=batch_size)


class M(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Linear(4, 4)
        self.head = nn.Linear(4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.backbone(x)))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return nn.functional.mse_loss(self(batch[0]), batch[1])

    def predict_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return self(batch[0])

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(filter(lambda p: p.requires_grad, self.parameters()), lr=0.1)


def _trainer(root: Any, **kwargs: Any) -> L.Trainer:
    defaults: dict[str, Any] = dict(
        default_root_dir=root, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False,
    )
    defaults.update(kwargs)
    return L.Trainer(**defaults)


# ---------------------------------------------------------------- EarlyStopping


def _es_check(es: EarlyStopping, values: list[float]) -> list[bool]:
    return [es._evaluate_stopping_criteria(torch.tensor(v))[0] for v in values]


def test_early_stopping_reasons() -> None:
    """Lightning 2.6: ``stopping_reason`` is an ``EarlyStoppingReason`` (NOT_STOPPED until it stops, then
    PATIENCE_EXHAUSTED, STOPPING_THRESHOLD, DIVERGENCE_THRESHOLD or NON_FINITE_METRIC), with the message in
    ``stopping_reason_message``."""
    es = EarlyStopping(monitor="loss", patience=2)
    assert es.stopping_reason is EarlyStoppingReason.NOT_STOPPED
    assert _es_check(es, [1.0, 1.0, 1.0]) == [False, False, True]
    assert es.stopping_reason is EarlyStoppingReason.PATIENCE_EXHAUSTED
    es = EarlyStopping(monitor="loss", stopping_threshold=0.5)
    assert _es_check(es, [1.0, 0.4]) == [False, True]
    assert es.stopping_reason is EarlyStoppingReason.STOPPING_THRESHOLD
    es = EarlyStopping(monitor="loss", divergence_threshold=5.0)
    assert _es_check(es, [1.0, 6.0]) == [False, True]
    assert es.stopping_reason is EarlyStoppingReason.DIVERGENCE_THRESHOLD
    es = EarlyStopping(monitor="loss")
    assert _es_check(es, [float("nan")]) == [True]
    assert es.stopping_reason is EarlyStoppingReason.NON_FINITE_METRIC
    assert [r.value for r in EarlyStoppingReason] == [0, 1, 2, 3, 4]


def test_early_stopping_reason_in_fit_and_state(tmp_path: Any) -> None:
    """Lightning: after fit stops on patience, ``stopping_reason`` and ``stopping_reason_message`` are set and
    saved in the callback state (``stopping_reason`` as its int value), and restored by ``load_state_dict``."""

    class Flat(M):
        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            self.log("metric", 1.0)
            return super().training_step(batch, batch_idx)

    es = EarlyStopping(monitor="metric", patience=1, check_on_train_epoch_end=True)
    trainer = _trainer(tmp_path, max_epochs=5, callbacks=[es])
    trainer.fit(Flat(), _loader())
    assert trainer.current_epoch == 2
    assert es.stopping_reason is EarlyStoppingReason.PATIENCE_EXHAUSTED
    assert es.stopping_reason_message is not None and "did not improve" in es.stopping_reason_message
    state = es.state_dict()
    assert state["stopping_reason"] == EarlyStoppingReason.PATIENCE_EXHAUSTED.value
    fresh = EarlyStopping(monitor="metric")
    fresh.load_state_dict(state)
    assert fresh.stopping_reason is EarlyStoppingReason.PATIENCE_EXHAUSTED
    assert fresh.stopping_reason_message == es.stopping_reason_message


# ---------------------------------------------------------------- MisconfigurationException


def test_misconfiguration_exceptions_where_lightning_raises_them() -> None:
    """Lightning raises ``MisconfigurationException`` for invalid callback arguments; here it is also a
    ``ValueError`` (what trainer_core raised before)."""
    cases = [
        lambda: ModelCheckpoint(save_top_k=-2),
        lambda: ModelCheckpoint(mode="avg"),
        lambda: ModelCheckpoint(every_n_epochs=-1),
        lambda: ModelCheckpoint(every_n_train_steps=2, every_n_epochs=2),
        lambda: ModelCheckpoint(save_top_k=3),
        lambda: EarlyStopping(monitor="x", mode="avg"),
        lambda: LearningRateMonitor(logging_interval="batch"),  # type: ignore[arg-type]
        lambda: Timer(duration="1 day"),
        lambda: Timer(interval="batch"),
        lambda: GradientAccumulationScheduler({-1: 2}),
        lambda: GradientAccumulationScheduler({1: 0}),
        lambda: StochasticWeightAveraging(swa_lrs=-1.0),
        lambda: StochasticWeightAveraging(swa_lrs=0.1, swa_epoch_start=0),
        lambda: BasePredictionWriter("sometimes"),  # type: ignore[arg-type]
    ]
    for make in cases:
        with pytest.raises(MisconfigurationException):
            make()
    assert issubclass(MisconfigurationException, ValueError)


def test_checkpoint_base_class() -> None:
    """Lightning: ``ModelCheckpoint`` and ``OnExceptionCheckpoint`` are ``Checkpoint`` callbacks."""
    assert isinstance(ModelCheckpoint(), Checkpoint)
    assert isinstance(OnExceptionCheckpoint("."), Checkpoint)
    assert isinstance(ModelCheckpoint(), L.Callback)


# ---------------------------------------------------------------- prediction writer


class _Writer(BasePredictionWriter):
    def __init__(self) -> None:
        super().__init__("batch_and_epoch")
        self.batches: list[Any] = []
        self.epoch: Any = None

    def write_on_batch_end(self, trainer: Any, pl_module: Any, prediction: Any, batch_indices: Any, batch: Any,
                           batch_idx: int, dataloader_idx: int) -> None:
        indices = list(batch_indices) if batch_indices is not None else None
        self.batches.append((indices, batch_idx, dataloader_idx, tuple(prediction.shape)))

    def write_on_epoch_end(self, trainer: Any, pl_module: Any, predictions: Any, batch_indices: Any) -> None:
        self.epoch = ([tuple(p.shape) for p in predictions], batch_indices)


def test_prediction_writer_batch_and_epoch(tmp_path: Any) -> None:
    """Lightning: the writer gets each batch's prediction with the dataset indices of its samples, and at the
    epoch end all predictions (kept even with ``return_predictions=False``) with the indices per dataloader."""
    writer = _Writer()
    _trainer(tmp_path, callbacks=[writer]).predict(M(), DataLoader(_data(), batch_size=6), return_predictions=False)
    assert writer.batches == [
        ([0, 1, 2, 3, 4, 5], 0, 0, (6, 1)),
        ([6, 7, 8, 9, 10, 11], 1, 0, (6, 1)),
        ([12, 13, 14, 15], 2, 0, (4, 1)),
    ]
    assert writer.epoch == (
        [(6, 1), (6, 1), (4, 1)],
        [[[0, 1, 2, 3, 4, 5], [6, 7, 8, 9, 10, 11], [12, 13, 14, 15]]],
    )


def test_prediction_writer_interval() -> None:
    """Lightning: ``write_interval`` selects the hooks; the write methods raise NotImplementedError unless
    overridden."""
    w = BasePredictionWriter("epoch")
    assert w.interval.on_epoch and not w.interval.on_batch
    with pytest.raises(NotImplementedError):
        w.write_on_epoch_end(None, None, [], [])  # type: ignore[arg-type]


# ---------------------------------------------------------------- timer, lambda


def test_timer_stops_fit_and_tracks_time(tmp_path: Any) -> None:
    """Lightning: with the duration already spent, fit stops at ``on_fit_start`` (epoch 0, step 0); the
    training time is kept and restored from the state as an offset."""
    timer = Timer(duration={"seconds": 0})
    trainer = _trainer(tmp_path, max_epochs=5, callbacks=[timer])
    trainer.fit(M(), _loader())
    assert (trainer.current_epoch, trainer.global_step) == (0, 0)
    assert timer.time_remaining() is not None
    timer = Timer(duration="00:00:01:00")
    trainer = _trainer(tmp_path, max_epochs=2, callbacks=[timer])
    trainer.fit(M(), _loader())
    assert trainer.current_epoch == 2
    elapsed = timer.time_elapsed("train")
    assert elapsed > 0 and timer.start_time("train") is not None and timer.end_time("train") is not None
    assert timer.time_elapsed("validate") == 0
    state = timer.state_dict()
    assert set(state["time_elapsed"]) == {"train", "sanity_check", "validate", "test", "predict"}
    resumed = Timer()
    resumed.load_state_dict(state)
    assert resumed.time_elapsed() == pytest.approx(elapsed)


def test_lambda_callback(tmp_path: Any) -> None:
    """Lightning: each function given to ``LambdaCallback`` is called as that hook with the hook's arguments
    (recorded: ``['fit_start', 'epoch_end', 'epoch_end']`` for two epochs)."""
    calls: list[str] = []
    cb = LambdaCallback(
        on_fit_start=lambda trainer, pl_module: calls.append("fit_start"),
        on_train_epoch_end=lambda trainer, pl_module: calls.append("epoch_end"),
    )
    _trainer(tmp_path, max_epochs=2, callbacks=[cb]).fit(M(), _loader())
    assert calls == ["fit_start", "epoch_end", "epoch_end"]
    assert isinstance(cb, LambdaCallback) and cb.state_key == "LambdaCallback"


# ---------------------------------------------------------------- optimization callbacks


class _Record(L.Callback):
    def __init__(self) -> None:
        self.rows: list[Any] = []

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        self.rows.append((trainer.accumulate_grad_batches, trainer.global_step))


def test_gradient_accumulation_scheduler(tmp_path: Any) -> None:
    """Lightning: ``{1: 2, 2: 4}`` accumulates 1, 2, then 4 batches; with 4 batches per epoch the optimizer
    steps 4, 2 and 1 times (recorded ``[(1, 4), (2, 6), (4, 7)]``)."""
    rec = _Record()
    gas = GradientAccumulationScheduler({1: 2, 2: 4})
    _trainer(tmp_path, max_epochs=3, callbacks=[gas, rec]).fit(M(), _loader())
    assert rec.rows == [(1, 4), (2, 6), (4, 7)]
    assert [gas.get_accumulate_grad_batches(e) for e in range(4)] == [1, 2, 4, 4]


def test_gradient_accumulation_scheduler_conflicts(tmp_path: Any) -> None:
    """Lightning: the scheduler together with ``Trainer(accumulate_grad_batches != 1)`` raises ValueError."""
    trainer = _trainer(tmp_path, max_epochs=1, accumulate_grad_batches=2,
                       callbacks=[GradientAccumulationScheduler({0: 2})])
    with pytest.raises(ValueError, match="You have set `accumulate_grad_batches`"):
        trainer.fit(M(), _loader())


def test_stochastic_weight_averaging(tmp_path: Any) -> None:
    """Lightning: from ``swa_epoch_start=2`` on (epochs 1..3 of 4) the weights are averaged, the scheduler is
    ``SWALR`` and the module ends with the averaged weights (recorded: n_averaged 3, lr 0.089695,
    ``head.weight.sum()`` -0.33438)."""
    torch.manual_seed(1)
    model = M()
    swa = StochasticWeightAveraging(swa_lrs=0.05, swa_epoch_start=2)
    trainer = _trainer(tmp_path, max_epochs=4, callbacks=[swa])
    trainer.fit(model, _loader())
    assert swa.n_averaged is not None and int(swa.n_averaged) == 3
    assert type(trainer.lr_scheduler_configs[0].scheduler).__name__ == "SWALR"
    assert [round(g["lr"], 6) for g in trainer.optimizers[0].param_groups] == [0.089695]
    assert round(float(model.head.weight.detach().sum()), 5) == -0.33438
    assert swa._average_model is not None
    torch.testing.assert_close(model.head.weight, swa._average_model.head.weight)


def test_stochastic_weight_averaging_with_batch_norm(tmp_path: Any) -> None:
    """Lightning: with batch norms, one extra epoch (its batches accumulated into one step, no backward)
    recomputes the statistics of the averaged weights; ``max_epochs`` and the batch norm momentum are restored
    afterwards (recorded: max_epochs 3, current_epoch 4, global_step 13, n_averaged 2,
    ``head.weight.sum()`` 0.21796, running_mean [0.17683, 0.27566, 0.48005, 0.27104], 4 batches tracked)."""

    class BN(M):
        def __init__(self) -> None:
            super().__init__()
            self.bn = nn.BatchNorm1d(4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.bn(torch.relu(self.backbone(x))))

        def configure_optimizers(self) -> Any:
            return torch.optim.SGD(self.parameters(), lr=0.1)

    torch.manual_seed(1)
    model = BN()
    swa = StochasticWeightAveraging(swa_lrs=0.05, swa_epoch_start=2)
    trainer = _trainer(tmp_path, max_epochs=3, callbacks=[swa])
    trainer.fit(model, _loader())
    assert (trainer.fit_loop.max_epochs, trainer.current_epoch, trainer.global_step) == (3, 4, 13)
    assert swa.n_averaged is not None and int(swa.n_averaged) == 2
    assert model.bn.momentum == 0.1
    assert round(float(model.head.weight.detach().sum()), 5) == 0.21796
    assert [round(float(v), 5) for v in model.bn.running_mean] == [0.17683, 0.27566, 0.48005, 0.27104]
    assert int(model.bn.num_batches_tracked) == 4


def test_backbone_finetuning(tmp_path: Any) -> None:
    """Lightning: the backbone is frozen until ``unfreeze_backbone_at_epoch``, then added as a param group with
    ``lr * backbone_initial_ratio_lr`` multiplied by ``lambda_func`` each epoch (recorded per epoch end:
    ``[0.1]`` frozen, then ``[0.1, 0.01]``, ``[0.1, 0.015]``, ``[0.1, 0.0225]``)."""

    class LR(L.Callback):
        def __init__(self) -> None:
            self.rows: list[Any] = []

        def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
            lrs = [round(g["lr"], 6) for g in trainer.optimizers[0].param_groups]
            self.rows.append((lrs, pl_module.backbone.weight.requires_grad))

    torch.manual_seed(1)
    rec = LR()
    ft = BackboneFinetuning(unfreeze_backbone_at_epoch=1, lambda_func=lambda e: 1.5)
    _trainer(tmp_path, max_epochs=4, callbacks=[ft, rec]).fit(M(), _loader())
    assert rec.rows == [([0.1], False), ([0.1, 0.01], True), ([0.1, 0.015], True), ([0.1, 0.0225], True)]
    state = ft.state_dict()
    assert state["previous_backbone_lr"] == pytest.approx(0.0225)
    assert [len(g["params"]) for g in state["internal_optimizer_metadata"][0]] == [2, 2]


def test_backbone_finetuning_needs_a_backbone(tmp_path: Any) -> None:
    """Lightning: a module without an ``nn.Module`` ``backbone`` attribute raises MisconfigurationException."""

    class NoBackbone(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.l = nn.Linear(4, 1)

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            return self.l(batch[0]).sum()

        def configure_optimizers(self) -> Any:
            return torch.optim.SGD(self.parameters(), lr=0.1)

    class Ft(BackboneFinetuning):
        def freeze_before_training(self, pl_module: Any) -> None:
            pass

    with pytest.raises(MisconfigurationException, match="`backbone` attribute"):
        _trainer(tmp_path, max_epochs=1, callbacks=[Ft()]).fit(NoBackbone(), _loader())


# ---------------------------------------------------------------- checkpoints on exception


class _Boom(M):
    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        if self.current_epoch == 1 and batch_idx == 1:
            raise RuntimeError("boom")
        return super().training_step(batch, batch_idx)


def test_checkpoints_on_exception(tmp_path: Any) -> None:
    """Lightning: when fit fails, ``OnExceptionCheckpoint`` writes ``<dirpath>/on_exception.ckpt`` and
    ``ModelCheckpoint(save_on_exception=True)`` saves one more checkpoint at the failing step (recorded:
    ``['epoch=0-step=4.ckpt', 'epoch=1-step=5.ckpt']``); after a run that ends normally no on-exception
    file is left."""
    oe = OnExceptionCheckpoint(tmp_path / "oe")
    mc = ModelCheckpoint(dirpath=tmp_path / "mc", save_on_exception=True)
    trainer = _trainer(tmp_path, max_epochs=3, enable_checkpointing=True, callbacks=[oe, mc])
    with pytest.raises(RuntimeError, match="boom"):
        trainer.fit(_Boom(), _loader())
    assert os.path.isfile(oe.ckpt_path)
    assert sorted(os.listdir(tmp_path / "mc")) == ["epoch=0-step=4.ckpt", "epoch=1-step=5.ckpt"]
    assert torch.load(oe.ckpt_path, weights_only=True)["global_step"] == 5

    ok = OnExceptionCheckpoint(tmp_path / "ok")
    _trainer(tmp_path, max_epochs=1, enable_checkpointing=True, callbacks=[ok]).fit(M(), _loader())
    assert not os.path.exists(ok.ckpt_path)


def test_model_checkpoint_save_on_exception_argument() -> None:
    """Lightning 2.6: ``save_on_exception`` comes right after ``save_top_k`` and defaults to False."""
    import inspect

    params = list(inspect.signature(ModelCheckpoint).parameters)
    assert params.index("save_on_exception") == params.index("save_top_k") + 1
    assert ModelCheckpoint().save_on_exception is False


def test_timer_stops_mid_epoch(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Lightning: ``interval="step"`` checks after every batch and stops fit mid-epoch as soon as the duration is
    reached; ``"epoch"`` checks at epoch end (recorded with a clock advancing 1 s per batch, duration 3 s:
    step -> current_epoch 1, global_step 3, elapsed 3.0; epoch -> current_epoch 1, global_step 4, elapsed 4.0)."""
    import trainer_core.callbacks.timer as timer_module

    class Clock:
        now = 100.0

        @classmethod
        def monotonic(cls) -> float:
            return cls.now

    class Tick(L.Callback):
        def on_train_batch_end(self, *args: Any) -> None:
            Clock.now += 1.0

    monkeypatch.setattr(timer_module, "time", Clock)
    rows = []
    for interval in ("step", "epoch"):
        timer = Timer(duration={"seconds": 3}, interval=interval)
        trainer = _trainer(tmp_path, max_epochs=5, callbacks=[Tick(), timer])
        trainer.fit(M(), _loader())
        rows.append((trainer.current_epoch, trainer.global_step, timer.time_elapsed(), timer.time_remaining()))
    assert rows == [(1, 3, 3.0, 0.0), (1, 4, 4.0, -1.0)]
