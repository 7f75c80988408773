"""Trainer arguments (validation, defaults), debugging flags, loop limits, precision, hooks, datamodules."""

from __future__ import annotations

import copy
import os
import time

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, IterableDataset

import trainer_core as L
from trainer_core.callbacks import LearningRateMonitor, ModelCheckpoint
from trainer_core.loggers import CSVLogger, DummyLogger


class Tiny(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.layer = nn.Linear(2, 1)
        self.counts = {"train": 0, "val": 0, "test": 0, "predict": 0}

    def forward(self, x):
        return self.layer(x)

    def training_step(self, batch, batch_idx):
        self.counts["train"] += 1
        loss = self(batch).pow(2).mean()
        self.log("loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        self.counts["val"] += 1
        self.log("val_loss", self(batch).pow(2).mean())

    def test_step(self, batch, batch_idx):
        self.counts["test"] += 1

    def predict_step(self, batch, batch_idx, dataloader_idx=0):
        self.counts["predict"] += 1
        return self(batch)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def _data(n=20, bs=2):
    return DataLoader(torch.randn(n, 2), batch_size=bs)


def _quiet(tmp_path, **kw):
    kw.setdefault("logger", False)
    kw.setdefault("enable_checkpointing", False)
    return L.Trainer(default_root_dir=tmp_path, enable_progress_bar=False, enable_model_summary=False, **kw)


# ---------------------------------------------------------------- argument validation


def test_unknown_argument_names_it_and_allowed_values():
    with pytest.raises(TypeError) as err:
        L.Trainer(max_epoch=3)
    msg = str(err.value)
    assert "'max_epoch'" in msg and "Did you mean 'max_epochs'" in msg and "limit_train_batches" in msg


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"precision": "17"}, "precision='17'"),
        ({"accelerator": "tpu"}, "accelerator='tpu'"),
        ({"devices": "two"}, "devices='two'"),
        ({"limit_train_batches": 1.5}, "limit_train_batches=1.5"),
        ({"limit_val_batches": -1}, "limit_val_batches=-1"),
        ({"fast_dev_run": -1}, "fast_dev_run=-1"),
        ({"max_epochs": -5}, "max_epochs=-5"),
        ({"val_check_interval": 0.0}, "val_check_interval=0.0"),
        ({"check_val_every_n_epoch": 0}, "check_val_every_n_epoch=0"),
        ({"num_sanity_val_steps": -2}, "num_sanity_val_steps=-2"),
        ({"log_every_n_steps": 0}, "log_every_n_steps=0"),
        ({"accumulate_grad_batches": 0}, "accumulate_grad_batches=0"),
        ({"gradient_clip_algorithm": "l1"}, "gradient_clip_algorithm='l1'"),
        ({"deterministic": "yes"}, "deterministic='yes'"),
        ({"max_time": "5 minutes"}, "max_time='5 minutes'"),
        ({"strategy": "fsdp"}, "strategy='fsdp'"),
    ],
)
def test_bad_values_name_the_argument_and_allowed_values(kwargs, needle):
    with pytest.raises(ValueError) as err:
        L.Trainer(**kwargs)
    assert needle in str(err.value)
    assert "Allowed" in str(err.value) or "allowed" in str(err.value) or "use" in str(err.value)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
@pytest.mark.parametrize("accelerator", ["gpu", "cuda"])
def test_gpu_without_cuda_is_a_clear_error(accelerator):
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        L.Trainer(accelerator=accelerator)


def test_defaults_like_lightning(tmp_path):
    trainer = L.Trainer(default_root_dir=tmp_path)
    assert trainer.max_epochs == 1000 and trainer.max_steps == -1 and trainer.min_epochs is None
    assert trainer.log_every_n_steps == 50 and trainer.num_sanity_val_steps == 2
    assert trainer.limit_train_batches == 1.0 and trainer.val_check_interval == 1.0
    assert trainer.check_val_every_n_epoch == 1 and trainer.accumulate_grad_batches == 1
    # Lightning 2.6: gradient_clip_algorithm stays None when not given ("norm" is applied in clip_gradients)
    assert trainer.precision == "32-true" and trainer.gradient_clip_algorithm is None
    names = [type(cb).__name__ for cb in trainer.callbacks]
    assert names == ["TQDMProgressBar", "ModelSummary", "ModelCheckpoint"]
    assert type(trainer.logger).__name__ in ("TensorBoardLogger", "CSVLogger")
    assert trainer.logger.save_dir == str(tmp_path) and trainer.logger.name == "lightning_logs"
    assert L.Trainer(max_steps=5).max_epochs == -1
    # as Lightning 2.6: fp16 AMP is not supported on the CPU, so 16-mixed runs as bf16-mixed there
    sixteen = "16-mixed" if torch.cuda.is_available() else "bf16-mixed"
    assert L.Trainer(precision=16).precision == sixteen and L.Trainer(precision="bf16").precision == "bf16-mixed"
    assert L.Trainer(logger=False).logger is None
    assert L.Trainer(accelerator="cpu").strategy.root_device == torch.device("cpu")


# ---------------------------------------------------------------- loops and limits


def test_fast_dev_run(tmp_path, capsys):
    model = Tiny()
    trainer = L.Trainer(default_root_dir=tmp_path, fast_dev_run=True, enable_progress_bar=False)
    trainer.fit(model, _data(), _data())
    assert "fast_dev_run" in capsys.readouterr().out
    assert model.counts["train"] == 1 and model.counts["val"] == 1
    assert [type(lg) for lg in trainer.loggers] == [DummyLogger] and not os.path.exists(tmp_path / "lightning_logs")
    assert not any(f.endswith(".ckpt") for _, _, fs in os.walk(tmp_path) for f in fs)
    trainer.test(model, _data())
    preds = trainer.predict(model, _data())
    assert model.counts["test"] == 1 and len(preds) == 1

    model = Tiny()
    trainer = L.Trainer(default_root_dir=tmp_path, fast_dev_run=7, enable_progress_bar=False)
    trainer.fit(model, _data(), _data())
    assert model.counts["train"] == 7 and model.counts["val"] == 7 and trainer.global_step == 7
    with pytest.raises(ValueError, match="fast_dev_run"):
        trainer.test(ckpt_path="best")


@pytest.mark.parametrize(
    "logger", [None, True, "csv", "several"], ids=["default", "True", "one", "several"]
)
def test_fast_dev_run_swaps_loggers_for_a_dummy_logger(tmp_path, logger):
    if logger == "csv":
        logger = CSVLogger(tmp_path / "csv")
    elif logger == "several":
        logger = [CSVLogger(tmp_path / "csv"), CSVLogger(tmp_path / "csv2")]
    seen = {}

    class UsesTheLogger(Tiny):
        def training_step(self, batch, batch_idx):
            # code written for a TensorBoard/W&B logger keeps running: every call is a no-op
            self.logger.experiment.add_histogram("w", self.layer.weight, self.global_step)
            self.logger.log_image(key="samples", images=[batch])
            seen["logger"], seen["loggers"] = self.logger, self.loggers
            return super().training_step(batch, batch_idx)

    trainer = L.Trainer(
        default_root_dir=tmp_path, fast_dev_run=2, logger=logger, enable_progress_bar=False,
        callbacks=[LearningRateMonitor()],
    )
    assert len(trainer.loggers) == 1 and isinstance(trainer.logger, DummyLogger)
    assert trainer.logger.name == "" and trainer.logger.version == "" and trainer.logger[0] is trainer.logger
    assert trainer.log_dir == str(tmp_path)  # the dummy has no folder: default_root_dir, not None
    assert isinstance(copy.deepcopy(trainer.logger), DummyLogger)  # no-op methods only for ordinary names
    model = UsesTheLogger()
    trainer.fit(model, _data(), _data())
    assert trainer.global_step == 2 and seen["logger"] is trainer.logger and seen["loggers"] == trainer.loggers
    # the LearningRateMonitor ran too (it writes into callback_metrics, as Lightning's does), logging to the dummy
    assert set(trainer.callback_metrics) == {"loss", "val_loss", "lr-SGD"}
    assert trainer.validate(model, _data(), verbose=False)[0].keys() == {"val_loss"}
    assert os.listdir(tmp_path) == []  # no lightning_logs, no csv folders, no checkpoints


def test_fast_dev_run_without_loggers_keeps_none(tmp_path):
    for logger in (False, []):
        trainer = L.Trainer(default_root_dir=tmp_path, fast_dev_run=True, logger=logger, enable_progress_bar=False)
        assert trainer.loggers == [] and trainer.logger is None and trainer.log_dir == str(tmp_path)
        trainer.fit(Tiny(), _data())
        assert trainer.global_step == 1


def test_limits_int_and_float(tmp_path):
    model = Tiny()
    trainer = _quiet(tmp_path, max_epochs=2, limit_train_batches=3, limit_val_batches=0.5, num_sanity_val_steps=0)
    trainer.fit(model, _data(), _data())  # 10 train batches, 10 val batches
    assert model.counts["train"] == 6 and model.counts["val"] == 10
    assert trainer.num_training_batches == 3 and trainer.num_val_batches == [5]

    model = Tiny()
    trainer = _quiet(tmp_path, max_epochs=1, limit_train_batches=0.5, limit_val_batches=2, num_sanity_val_steps=0)
    trainer.fit(model, _data(), _data())
    assert model.counts["train"] == 5 and model.counts["val"] == 2 and trainer.num_training_batches == 5

    model = Tiny()
    trainer = _quiet(tmp_path, limit_test_batches=0.2, limit_predict_batches=4)
    trainer.test(model, _data())
    assert model.counts["test"] == 2 and trainer.num_test_batches == [2]
    assert len(trainer.predict(model, _data())) == 4

    with pytest.raises(ValueError, match="limit_train_batches"):
        _quiet(tmp_path, max_epochs=1, limit_train_batches=0.01).fit(Tiny(), _data())

    model = Tiny()
    trainer = _quiet(tmp_path, max_epochs=1, limit_val_batches=0)
    trainer.fit(model, _data(), _data())
    assert model.counts["val"] == 0


def test_sanity_steps_and_val_check_interval(tmp_path):
    model = Tiny()
    _quiet(tmp_path, max_epochs=1).fit(model, _data(), _data(n=10))
    assert model.counts["val"] == 2 + 5  # default 2 sanity batches, then the 5 val batches

    model = Tiny()
    _quiet(tmp_path, max_epochs=1, num_sanity_val_steps=-1, val_check_interval=0.5).fit(model, _data(), _data(n=10))
    assert model.counts["val"] == 5 + 2 * 5

    model = Tiny()
    _quiet(tmp_path, max_epochs=4, num_sanity_val_steps=0, check_val_every_n_epoch=2).fit(model, _data(), _data(n=4))
    assert model.counts["val"] == 2 * 2

    model = Tiny()
    _quiet(tmp_path, max_steps=12, num_sanity_val_steps=0, val_check_interval=4, check_val_every_n_epoch=None).fit(
        model, _data(), _data(n=2)
    )
    assert model.counts["val"] == 3  # after 4, 8, 12 total batches, across the epoch boundary

    with pytest.raises(ValueError, match="val_check_interval"):
        _quiet(tmp_path, max_epochs=1, val_check_interval=50).fit(Tiny(), _data(), _data())


def test_sanity_check_does_not_leak_metrics_or_rng(tmp_path):
    class Shuffled(Tiny):
        def on_fit_start(self):
            self.rng_at_fit_start = torch.get_rng_state()

        def on_train_start(self):
            self.rng_at_train_start = torch.get_rng_state()

    model = Shuffled()
    trainer = _quiet(tmp_path, max_steps=1, limit_val_batches=0.5)
    trainer.fit(model, _data(), DataLoader(torch.randn(10, 2), batch_size=2, shuffle=True))
    assert torch.equal(model.rng_at_fit_start, model.rng_at_train_start)


def test_max_steps_max_time_min_epochs(tmp_path):
    model = Tiny()
    trainer = _quiet(tmp_path, max_steps=7)
    trainer.fit(model, _data())
    assert trainer.global_step == 7 and trainer.current_epoch == 1  # the cut-short epoch still ends

    class Slow(Tiny):
        def training_step(self, batch, batch_idx):
            time.sleep(0.02)
            return super().training_step(batch, batch_idx)

    trainer = _quiet(tmp_path, max_time={"seconds": 0.1})
    start = time.monotonic()
    trainer.fit(Slow(), _data(n=2000))
    assert time.monotonic() - start < 5 and 0 < trainer.global_step < 100

    class StopNow(Tiny):
        def on_train_batch_end(self, outputs, batch, batch_idx):
            self.trainer.should_stop = True

    trainer = _quiet(tmp_path, max_epochs=10, min_epochs=3)
    trainer.fit(StopNow(), _data(n=4))
    assert trainer.current_epoch == 3 and trainer.global_step == 6


def test_on_train_batch_start_minus_one_ends_epoch(tmp_path):
    class Skip(Tiny):
        def on_train_batch_start(self, batch, batch_idx):
            return -1 if batch_idx == 2 else None

    trainer = _quiet(tmp_path, max_epochs=2)
    model = Skip()
    trainer.fit(model, _data())
    assert model.counts["train"] == 4 and trainer.global_step == 4


def test_iterable_dataset_without_length(tmp_path):
    class Stream(IterableDataset):
        def __iter__(self):
            for _ in range(6):
                yield torch.randn(2)

    model = Tiny()
    trainer = _quiet(tmp_path, max_epochs=2, num_sanity_val_steps=0)
    trainer.fit(model, DataLoader(Stream(), batch_size=2), DataLoader(Stream(), batch_size=3))
    assert trainer.num_training_batches == float("inf")
    assert model.counts["train"] == 6 and model.counts["val"] == 4
    assert trainer.fit_loop.epoch_loop.batch_progress.is_last_batch


# ---------------------------------------------------------------- precision and devices


@pytest.mark.parametrize("precision", ["bf16-mixed", "16-mixed", "64-true"])
def test_precision_on_cpu(tmp_path, precision):
    dtypes = []

    class Spy(Tiny):
        def training_step(self, batch, batch_idx):
            out = self(batch.to(self.dtype))
            dtypes.append(out.dtype)
            return out.float().pow(2).mean()

    trainer = _quiet(tmp_path, max_steps=2, precision=precision, accelerator="cpu", enable_checkpointing=True)
    trainer.fit(Spy(), _data())
    # 16-mixed on the CPU: Lightning warns and autocasts to bfloat16
    expected = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.bfloat16, "64-true": torch.float64}[precision]
    assert dtypes[0] == expected
    ckpt = torch.load(trainer.checkpoint_callback.best_model_path, weights_only=True)
    assert "MixedPrecision" not in ckpt  # no GradScaler on the CPU


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_16_mixed_on_cuda_saves_scaler_state(tmp_path):
    trainer = _quiet(tmp_path, max_steps=3, precision="16-mixed", accelerator="gpu", enable_checkpointing=True)
    model = Tiny()
    trainer.fit(model, _data())
    assert model.device.type == "cuda"
    ckpt = torch.load(trainer.checkpoint_callback.best_model_path, weights_only=True)
    assert set(ckpt["MixedPrecision"]) >= {"scale", "growth_factor", "_growth_tracker"}
    resumed = _quiet(tmp_path / "r", max_steps=5, precision="16-mixed", accelerator="gpu")
    resumed.fit(Tiny(), _data(), ckpt_path=trainer.checkpoint_callback.best_model_path)
    assert resumed.global_step == 5


# ---------------------------------------------------------------- hooks and data sources


def test_hook_order_and_signatures(tmp_path):
    calls = []

    class Recorder(L.Callback):
        def setup(self, trainer, pl_module, stage):
            calls.append(f"cb.setup:{stage}")

        def on_fit_start(self, trainer, pl_module):
            calls.append("cb.on_fit_start")

        def on_sanity_check_start(self, trainer, pl_module):
            calls.append("cb.on_sanity_check_start")

        def on_train_start(self, trainer, pl_module):
            calls.append("cb.on_train_start")

        def on_train_epoch_start(self, trainer, pl_module):
            calls.append("cb.on_train_epoch_start")

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            calls.append(f"cb.on_train_batch_start:{batch_idx}")

        def on_before_backward(self, trainer, pl_module, loss):
            calls.append("cb.on_before_backward")

        def on_after_backward(self, trainer, pl_module):
            calls.append("cb.on_after_backward")

        def on_before_optimizer_step(self, trainer, pl_module, optimizer):
            calls.append("cb.on_before_optimizer_step")

        def on_before_zero_grad(self, trainer, pl_module, optimizer):
            calls.append("cb.on_before_zero_grad")

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            calls.append(f"cb.on_train_batch_end:{batch_idx}:{sorted(outputs)}")

        def on_validation_start(self, trainer, pl_module):
            calls.append(f"cb.on_validation_start:{trainer.sanity_checking}")

        def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
            calls.append(f"cb.on_validation_batch_end:{batch_idx}")

        def on_validation_epoch_end(self, trainer, pl_module):
            calls.append("cb.on_validation_epoch_end")

        def on_validation_end(self, trainer, pl_module):
            calls.append("cb.on_validation_end")

        def on_train_epoch_end(self, trainer, pl_module):
            calls.append("cb.on_train_epoch_end")

        def on_train_end(self, trainer, pl_module):
            calls.append("cb.on_train_end")

        def on_fit_end(self, trainer, pl_module):
            calls.append("cb.on_fit_end")

        def teardown(self, trainer, pl_module, stage):
            calls.append(f"cb.teardown:{stage}")

    class Hooked(Tiny):
        def setup(self, stage):
            calls.append(f"m.setup:{stage}")

        def on_fit_start(self):
            calls.append("m.on_fit_start")

        def on_train_epoch_end(self):
            calls.append("m.on_train_epoch_end")

        def on_validation_epoch_end(self):
            calls.append("m.on_validation_epoch_end")

        def teardown(self, stage):
            calls.append(f"m.teardown:{stage}")

    trainer = _quiet(tmp_path, max_epochs=1, limit_train_batches=1, limit_val_batches=1, num_sanity_val_steps=1,
                     callbacks=[Recorder()])
    trainer.fit(Hooked(), _data(), _data())
    assert calls == [
        "cb.setup:fit", "m.setup:fit", "cb.on_fit_start", "m.on_fit_start",
        "cb.on_sanity_check_start", "cb.on_validation_start:True", "cb.on_validation_batch_end:0",
        "cb.on_validation_epoch_end", "m.on_validation_epoch_end", "cb.on_validation_end",
        "cb.on_train_start", "cb.on_train_epoch_start", "cb.on_train_batch_start:0",
        "cb.on_before_zero_grad", "cb.on_before_backward", "cb.on_after_backward", "cb.on_before_optimizer_step",
        "cb.on_train_batch_end:0:['loss']",
        "cb.on_validation_start:False", "cb.on_validation_batch_end:0", "cb.on_validation_epoch_end",
        "m.on_validation_epoch_end", "cb.on_validation_end",
        "cb.on_train_epoch_end", "m.on_train_epoch_end", "cb.on_train_end", "cb.on_fit_end",
        "cb.teardown:fit", "m.teardown:fit",
    ]


def test_datamodule_flow_and_module_dataloaders(tmp_path):
    events = []

    class DM(L.LightningDataModule):
        def prepare_data(self):
            events.append("prepare")

        def setup(self, stage):
            events.append(f"setup:{stage}")

        def train_dataloader(self):
            return _data(8)

        def val_dataloader(self):
            return _data(4)

        def test_dataloader(self):
            return _data(6)

        def predict_dataloader(self):
            return _data(2)

    model = Tiny()
    trainer = _quiet(tmp_path, max_epochs=1, num_sanity_val_steps=0)
    trainer.fit(model, datamodule=DM())
    assert model.counts == {"train": 4, "val": 2, "test": 0, "predict": 0}
    trainer.test(model, datamodule=DM())
    assert model.counts["test"] == 3
    assert len(trainer.predict(model, DM())) == 1
    assert events[:2] == ["prepare", "setup:fit"] and "setup:test" in events and "setup:predict" in events

    class WithLoaders(Tiny):
        def train_dataloader(self):
            return _data(6)

    model = WithLoaders()
    _quiet(tmp_path, max_epochs=1).fit(model)
    assert model.counts["train"] == 3

    with pytest.raises(ValueError, match="cannot pass"):
        trainer.fit(Tiny(), _data(), datamodule=DM())
    with pytest.raises(RuntimeError, match="train_dataloader"):
        _quiet(tmp_path, max_epochs=1).fit(Tiny())
    with pytest.raises(TypeError, match="LightningModule"):
        trainer.fit(nn.Linear(1, 1), _data())


def test_predict_outputs_and_multiple_dataloaders(tmp_path):
    model = Tiny()
    trainer = _quiet(tmp_path)
    preds = trainer.predict(model, _data(n=5, bs=2))
    assert [p.shape[0] for p in preds] == [2, 2, 1]
    both = trainer.predict(model, [_data(n=2, bs=2), _data(n=4, bs=2)])
    assert [len(p) for p in both] == [1, 2]
    assert trainer.predict(model, _data(), return_predictions=False) is None
    assert not model.training


def test_validate_and_test_use_best_checkpoint_after_fit(tmp_path):
    model = Tiny()
    ckpt = ModelCheckpoint(dirpath=tmp_path, monitor="val_loss")
    trainer = _quiet(tmp_path, max_epochs=2, enable_checkpointing=True, callbacks=[ckpt], num_sanity_val_steps=0)
    trainer.fit(model, _data(), _data())
    trainer.test(dataloaders=_data(), verbose=False)
    assert trainer.ckpt_path == ckpt.best_model_path
    assert trainer.state.fn == "test" and trainer.state.finished


def test_trainer_attributes_during_fit(tmp_path):
    seen = {}

    class Look(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            seen.update(
                training=trainer.training, fn=str(trainer.state.fn), stage=str(trainer.state.stage),
                num_training_batches=trainer.num_training_batches, num_val_batches=trainer.num_val_batches,
                batch_idx=trainer.fit_loop.epoch_loop.batch_idx, root=trainer.strategy.root_device,
                log_dir=trainer.log_dir, global_zero=trainer.is_global_zero,
            )

        def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
            seen["validating"] = trainer.validating

    trainer = _quiet(tmp_path, max_epochs=1, callbacks=[Look()], num_sanity_val_steps=0)
    trainer.fit(Tiny(), _data(n=6), _data(n=4))
    assert seen == {
        "training": True, "fn": "fit", "stage": "train", "num_training_batches": 3, "num_val_batches": [2],
        "batch_idx": 2, "root": torch.device("cpu"), "log_dir": str(tmp_path), "global_zero": True,
        "validating": True,
    }
    assert trainer.estimated_stepping_batches == 3


def test_seed_everything_reproducible_and_worker_seeding(tmp_path, monkeypatch):
    monkeypatch.delenv("PL_GLOBAL_SEED", raising=False)
    monkeypatch.delenv("PL_SEED_WORKERS", raising=False)
    assert L.seed_everything(42) == 42
    a = torch.rand(3)
    L.seed_everything(42)
    assert torch.equal(a, torch.rand(3))
    assert os.environ["PL_GLOBAL_SEED"] == "42"
    with pytest.raises(ValueError, match="out of bounds"):
        L.seed_everything(2**40)

    L.seed_everything(3, workers=True)
    loader = DataLoader(torch.randn(8, 2), batch_size=2, num_workers=1)
    _quiet(tmp_path, max_steps=1).fit(Tiny(), loader)
    assert loader.worker_init_fn is not None


def _with_cpu_scaler(trainer):
    """The GradScaler code paths, exercised on the CPU (normally only 16-mixed on CUDA has a scaler)."""
    from trainer_core.trainer.precision import MixedPrecision

    precision = MixedPrecision("16-mixed", torch.device("cpu"))
    precision.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8)
    trainer._precision = precision
    return precision


def test_grad_scaler_paths_checkpoint_and_resume(tmp_path):
    trainer = _quiet(tmp_path, max_steps=4, enable_checkpointing=True, gradient_clip_val=0.5)
    precision = _with_cpu_scaler(trainer)
    model = Tiny()
    before = model.layer.weight.detach().clone()
    trainer.fit(model, _data())
    assert trainer.global_step == 4 and not torch.equal(before, model.layer.weight)
    ckpt = torch.load(trainer.checkpoint_callback.best_model_path, weights_only=True)
    assert ckpt["MixedPrecision"]["scale"] == precision.scaler.get_scale()

    resumed = _quiet(tmp_path / "r", max_steps=6)
    precision2 = _with_cpu_scaler(resumed)
    precision2.scaler = torch.amp.GradScaler("cpu", init_scale=1.0)
    resumed.fit(Tiny(), _data(), ckpt_path=trainer.checkpoint_callback.best_model_path)
    assert resumed.global_step == 6
    assert precision2.scaler.get_scale() == ckpt["MixedPrecision"]["scale"] == 2.0**8  # restored, not 1.0

    class Manual(Tiny):
        def __init__(self):
            super().__init__()
            self.automatic_optimization = False

        def training_step(self, batch, batch_idx):
            opt = self.optimizers()
            opt.zero_grad()
            self.manual_backward(self(batch).pow(2).mean())
            self.clip_gradients(opt, gradient_clip_val=0.1)
            opt.step()

    manual = _quiet(tmp_path / "m", max_steps=3)
    _with_cpu_scaler(manual)
    model = Manual()
    before = model.layer.weight.detach().clone()
    manual.fit(model, _data())
    assert manual.global_step == 3 and not torch.equal(before, model.layer.weight)


def test_plain_iterables_as_train_data_and_several_train_loaders_combined(tmp_path):
    model = Tiny()
    trainer = _quiet(tmp_path, max_epochs=1)
    trainer.fit(model, [torch.randn(2, 2) for _ in range(3)])
    assert model.counts["train"] == 3
    # several train loaders: Lightning's CombinedLoader(mode="max_size_cycle"), one batch of each per step
    # (tests/trainer_core/compat/test_trainer_features.py::test_several_train_dataloaders has the details)
    seen = []

    class Two(Tiny):
        def training_step(self, batch, batch_idx):
            seen.append(len(batch))
            return super().training_step(batch[0], batch_idx)

    _quiet(tmp_path, max_epochs=1).fit(Two(), [_data(), _data()])
    assert seen and set(seen) == {2}
