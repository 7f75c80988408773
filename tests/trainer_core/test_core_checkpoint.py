"""Checkpoints in Lightning's layout, ModelCheckpoint's policies, load_from_checkpoint and hyperparameters."""

from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import trainer_core as L
from trainer_core.callbacks import EarlyStopping, ModelCheckpoint


class Net(L.LightningModule):
    def __init__(self, hidden: int = 8, lr: float = 0.1, tag: str = "a", *args, **kwargs):
        super().__init__()
        self.save_hyperparameters()
        self.encoder = nn.Linear(4, hidden)
        self.decoder = nn.Linear(hidden, 1)

    def forward(self, x):
        return self.decoder(torch.relu(self.encoder(x)))

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.mse_loss(self(x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        # a deterministic, decreasing-then-increasing schedule of "val_loss" for top-k tests
        self.log("val_loss", torch.tensor(VAL_LOSSES[self.current_epoch % len(VAL_LOSSES)]))
        self.log("val_acc", torch.tensor(1.0 - VAL_LOSSES[self.current_epoch % len(VAL_LOSSES)]))

    def configure_optimizers(self):
        opt = torch.optim.Adam(self.parameters(), lr=self.hparams.lr)
        return {"optimizer": opt, "lr_scheduler": torch.optim.lr_scheduler.ExponentialLR(opt, 0.9)}


VAL_LOSSES = [0.5, 0.3, 0.4, 0.2, 0.6]


def _loaders(n=16, bs=4):
    g = torch.Generator().manual_seed(0)
    ds = TensorDataset(torch.randn(n, 4, generator=g), torch.randn(n, 1, generator=g))
    return DataLoader(ds, batch_size=bs), DataLoader(ds, batch_size=bs)


def _trainer(root, **kw):
    kw.setdefault("logger", False)
    return L.Trainer(
        default_root_dir=root, enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0, **kw
    )


def test_default_layout_keys_and_weights_only(tmp_path):
    train, val = _loaders()
    trainer = L.Trainer(
        default_root_dir=tmp_path, max_epochs=2, enable_progress_bar=False, enable_model_summary=False
    )
    trainer.fit(Net(), train, val)
    expected = os.path.join(tmp_path, "lightning_logs", "version_0", "checkpoints", "epoch=1-step=8.ckpt")
    assert trainer.checkpoint_callback.best_model_path == os.path.realpath(expected)
    assert os.listdir(os.path.dirname(expected)) == ["epoch=1-step=8.ckpt"]  # top-1: epoch 0's file removed
    ckpt = torch.load(expected, weights_only=True)
    assert set(ckpt) == {
        "epoch", "global_step", "pytorch-lightning_version", "trainer_core_version", "state_dict", "loops",
        "callbacks", "optimizer_states", "lr_schedulers", "hparams_name", "hyper_parameters",
    }
    assert ckpt["epoch"] == 1 and ckpt["global_step"] == 8
    major, minor, _ = ckpt["pytorch-lightning_version"].split(".")
    assert major == "2" and int(minor) >= 0
    assert ckpt["hparams_name"] == "kwargs"
    assert ckpt["hyper_parameters"] == {"hidden": 8, "lr": 0.1, "tag": "a"}
    assert list(ckpt["callbacks"]) == [
        "ModelCheckpoint{'monitor': None, 'mode': 'min', 'every_n_train_steps': 0, 'every_n_epochs': 1, "
        "'train_time_interval': None}"
    ]
    assert len(ckpt["optimizer_states"]) == 1 and len(ckpt["lr_schedulers"]) == 1
    loops = ckpt["loops"]
    assert set(loops) == {"fit_loop", "validate_loop", "test_loop", "predict_loop"}
    fit = loops["fit_loop"]
    for key in (
        "state_dict", "epoch_progress", "epoch_loop.state_dict", "epoch_loop.batch_progress",
        "epoch_loop.scheduler_progress", "epoch_loop.automatic_optimization.state_dict",
        "epoch_loop.automatic_optimization.optim_progress", "epoch_loop.manual_optimization.state_dict",
        "epoch_loop.manual_optimization.optim_step_progress", "epoch_loop.val_loop.state_dict",
        "epoch_loop.val_loop.batch_progress",
    ):
        assert key in fit, key
    # saved inside on_train_epoch_end: processed is increased, completed not yet (Lightning's convention)
    assert fit["epoch_progress"]["current"] == {"ready": 2, "completed": 1, "started": 2, "processed": 2}
    assert fit["epoch_loop.batch_progress"]["total"] == {"ready": 8, "completed": 8, "started": 8, "processed": 8}
    assert fit["epoch_loop.batch_progress"]["is_last_batch"] is True
    assert fit["epoch_loop.state_dict"] == {"_batches_that_stepped": 8}
    step = fit["epoch_loop.automatic_optimization.optim_progress"]["optimizer"]["step"]
    assert step["total"] == {"ready": 8, "completed": 8}
    assert fit["epoch_loop.scheduler_progress"]["total"] == {"ready": 2, "completed": 2}
    assert set(loops["validate_loop"]) == {"state_dict", "batch_progress"}
    # the tutorial's weight extraction with plain torch
    enc = {k: v for k, v in ckpt["state_dict"].items() if k.startswith("encoder.")}
    assert set(enc) == {"encoder.weight", "encoder.bias"}


def test_no_checkpoints_when_disabled(tmp_path):
    train, val = _loaders()
    _trainer(tmp_path, max_epochs=1, enable_checkpointing=False).fit(Net(), train, val)
    assert not any(f.endswith(".ckpt") for _, _, files in os.walk(tmp_path) for f in files)
    with pytest.raises(ValueError, match="enable_checkpointing=False"):
        _trainer(tmp_path, enable_checkpointing=False, callbacks=[ModelCheckpoint()])


def test_top_k_monitor_filename_placeholders_and_last(tmp_path):
    train, val = _loaders()
    ckpt = ModelCheckpoint(
        dirpath=tmp_path, filename="m-{epoch:02d}-{val_loss:.2f}", monitor="val_loss", save_top_k=2, save_last=True
    )
    trainer = _trainer(tmp_path, max_epochs=5, callbacks=[ckpt])
    trainer.fit(Net(), train, val)
    files = sorted(f for f in os.listdir(tmp_path) if f.endswith(".ckpt"))
    # losses by epoch: 0.5 0.3 0.4 0.2 0.6 -> best two are epochs 3 (0.2) and 1 (0.3)
    assert files == ["last.ckpt", "m-epoch=01-val_loss=0.30.ckpt", "m-epoch=03-val_loss=0.20.ckpt"]
    assert ckpt.best_model_path.endswith("m-epoch=03-val_loss=0.20.ckpt")
    assert ckpt.best_model_score.item() == pytest.approx(0.2)
    assert ckpt.kth_best_model_path.endswith("m-epoch=01-val_loss=0.30.ckpt")
    assert ckpt.last_model_path.endswith("last.ckpt")
    last = torch.load(ckpt.last_model_path, weights_only=True)
    assert last["epoch"] == 4
    state = last["callbacks"][ckpt.state_key]
    assert ckpt.state_key == (
        "ModelCheckpoint{'monitor': 'val_loss', 'mode': 'min', 'every_n_train_steps': 0, 'every_n_epochs': 1, "
        "'train_time_interval': None}"
    )
    assert set(state) == {
        "monitor", "best_model_score", "best_model_path", "current_score", "dirpath", "best_k_models",
        "kth_best_model_path", "kth_value", "last_model_path",
    }
    # "best" for test/validate resolves to the best path
    model = Net()
    trainer.validate(model, val, ckpt_path="best", verbose=False)
    assert trainer.ckpt_path == ckpt.best_model_path


def test_mode_max_and_no_auto_insert(tmp_path):
    train, val = _loaders()
    ckpt = ModelCheckpoint(
        dirpath=tmp_path, filename="acc_{val_acc:.1f}", monitor="val_acc", mode="max", auto_insert_metric_name=False
    )
    _trainer(tmp_path, max_epochs=4, callbacks=[ckpt]).fit(Net(), train, val)
    assert sorted(os.listdir(tmp_path)) == ["acc_0.8.ckpt"]


def test_every_n_train_steps_and_version_counter(tmp_path):
    train, _ = _loaders(n=20, bs=4)  # 5 batches per epoch
    ckpt = ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=3, save_top_k=-1)
    _trainer(tmp_path, max_epochs=2, callbacks=[ckpt]).fit(Net(), train)
    assert sorted(os.listdir(tmp_path)) == ["epoch=0-step=3.ckpt", "epoch=1-step=6.ckpt", "epoch=1-step=9.ckpt"]
    mid = torch.load(os.path.join(tmp_path, "epoch=1-step=6.ckpt"), weights_only=True)
    bp = mid["loops"]["fit_loop"]["epoch_loop.batch_progress"]["current"]
    assert bp == {"ready": 1, "completed": 0, "started": 1, "processed": 1}

    # same names again: the version counter appends -v1
    ckpt2 = ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=3, save_top_k=-1)
    _trainer(tmp_path, max_epochs=1, callbacks=[ckpt2]).fit(Net(), train)
    assert "epoch=0-step=3-v1.ckpt" in os.listdir(tmp_path)


def test_every_n_epochs_and_weights_only(tmp_path):
    train, _ = _loaders()
    ckpt = ModelCheckpoint(dirpath=tmp_path, every_n_epochs=2, save_top_k=-1, save_weights_only=True)
    _trainer(tmp_path, max_epochs=4, callbacks=[ckpt]).fit(Net(), train)
    assert sorted(os.listdir(tmp_path)) == ["epoch=1-step=8.ckpt", "epoch=3-step=16.ckpt"]
    ck = torch.load(os.path.join(tmp_path, "epoch=3-step=16.ckpt"), weights_only=True)
    assert "optimizer_states" not in ck and "callbacks" not in ck and "state_dict" in ck and "loops" in ck


def test_monitor_missing_raises_after_validation(tmp_path):
    train, val = _loaders()
    ckpt = ModelCheckpoint(dirpath=tmp_path, monitor="nope")
    with pytest.raises(RuntimeError, match="could not find the monitored key"):
        _trainer(tmp_path, max_epochs=1, callbacks=[ckpt]).fit(Net(), train, val)


def test_save_checkpoint_is_atomic_and_hparams_are_plain(tmp_path):
    class WithObject(Net):
        def __init__(self, hidden: int = 8, lr: float = 0.1, act: nn.Module | None = None, path=None):
            super().__init__(hidden=hidden, lr=lr)
            self.save_hyperparameters()

    import pathlib

    train, _ = _loaders()
    model = WithObject(act=nn.ReLU(), path=pathlib.Path("/x/y"))
    trainer = _trainer(tmp_path, max_epochs=1, enable_checkpointing=False)
    trainer.fit(model, train)
    target = tmp_path / "manual.ckpt"
    with pytest.warns(UserWarning, match="'act'"):
        trainer.save_checkpoint(target)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".manual")] == []  # no temp file left
    ck = torch.load(target, weights_only=True)
    # as Lightning: the parent's save_hyperparameters() saved tag="a", the subclass's call adds to it
    assert ck["hyper_parameters"] == {"hidden": 8, "lr": 0.1, "tag": "a", "path": "/x/y"}
    restored = WithObject.load_from_checkpoint(target, act=nn.Tanh())
    assert restored.hparams.act.__class__ is nn.Tanh


def test_load_from_checkpoint_overrides_strict_and_hparam_fallback(tmp_path):
    train, _ = _loaders()
    ckpt = ModelCheckpoint(dirpath=tmp_path)
    model = Net(hidden=6, lr=0.05, tag="t")
    _trainer(tmp_path, max_epochs=1, callbacks=[ckpt]).fit(model, train)

    loaded = Net.load_from_checkpoint(ckpt.best_model_path)
    assert loaded.hparams == {"hidden": 6, "lr": 0.05, "tag": "t"}
    assert loaded.lr == 0.05 and loaded.tag == "t"  # attribute fallback to hyperparameters
    for a, b in zip(model.state_dict().values(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    overridden = Net.load_from_checkpoint(ckpt.best_model_path, lr=1.0, map_location="cpu")
    assert overridden.lr == 1.0 and overridden.hparams.hidden == 6
    with pytest.raises(AttributeError):
        _ = loaded.not_a_thing

    class Bigger(Net):
        def __init__(self, hidden: int = 8, lr: float = 0.1, tag: str = "a"):
            super().__init__(hidden, lr, tag)
            self.extra = nn.Linear(1, 1)

    with pytest.raises(RuntimeError, match="Missing key"):
        Bigger.load_from_checkpoint(ckpt.best_model_path)
    with pytest.warns(UserWarning, match="extra.weight"):
        Bigger.load_from_checkpoint(ckpt.best_model_path, strict=False)


def test_save_hyperparameters_named_ignore_and_dict():
    class Named(L.LightningModule):
        def __init__(self, a: int, b: str = "x", c: float = 1.0):
            super().__init__()
            self.save_hyperparameters("a", "c")

    class Ignored(L.LightningModule):
        def __init__(self, a: int, model: nn.Module | None = None):
            super().__init__()
            self.save_hyperparameters(ignore=["model"])

    class FromDict(L.LightningModule):
        def __init__(self, config: dict):
            super().__init__()
            self.save_hyperparameters(config)

    class Child(Named):
        def __init__(self, a: int, extra: int = 5):
            super().__init__(a, b="y")

    assert Named(1, "q", 2.0).hparams == {"a": 1, "c": 2.0}
    assert Ignored(3, nn.Linear(1, 1)).hparams == {"a": 3}
    assert FromDict({"k": 1}).hparams == {"k": 1}
    assert FromDict({"k": 1}).k == 1
    assert Child(4).hparams == {"a": 4, "c": 1.0}


def test_tutorial_hparams_with_star_args(tmp_path):
    class MyLightningModule(L.LightningModule):
        def __init__(self, learning_rate, another_parameter, *args, **kwargs):
            super().__init__()
            self.save_hyperparameters()
            self.layer = nn.Linear(4, 1)

        def training_step(self, batch, batch_idx):
            x, y = batch
            return F.mse_loss(self.layer(x), y)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=self.learning_rate)

    model = MyLightningModule(0.01, "other", extra_kw=3)
    assert model.hparams == {"learning_rate": 0.01, "another_parameter": "other", "extra_kw": 3}
    train, _ = _loaders()
    trainer = _trainer(tmp_path, max_epochs=1)
    trainer.fit(model, train)
    ck = torch.load(trainer.checkpoint_callback.best_model_path, map_location=lambda storage, loc: storage)
    assert ck["hyper_parameters"] == {"learning_rate": 0.01, "another_parameter": "other", "extra_kw": 3}
    loaded = MyLightningModule.load_from_checkpoint(trainer.checkpoint_callback.best_model_path)
    assert loaded.learning_rate == 0.01


def test_callback_state_restored_under_state_key(tmp_path):
    train, val = _loaders()
    es = EarlyStopping(monitor="val_loss", patience=10)
    trainer = _trainer(tmp_path, max_epochs=3, callbacks=[es, ModelCheckpoint(dirpath=tmp_path)])
    trainer.fit(Net(), train, val)
    ck = torch.load(trainer.checkpoint_callback.best_model_path, weights_only=True)
    assert ck["callbacks"]["EarlyStopping{'monitor': 'val_loss', 'mode': 'min'}"] == {
        "wait_count": 1, "stopped_epoch": 0, "best_score": torch.tensor(0.3), "patience": 10,
        "stopping_reason": 0, "stopping_reason_message": None,  # Lightning 2.6 saves why it stopped
    }


def test_datamodule_state_and_hparams_in_checkpoint(tmp_path):
    class DM(L.LightningDataModule):
        def __init__(self, batch_size: int = 4):
            super().__init__()
            self.save_hyperparameters()
            self.counter = 0

        def train_dataloader(self):
            self.counter += 1
            return _loaders(bs=self.hparams.batch_size)[0]

        def state_dict(self):
            return {"counter": self.counter}

        def load_state_dict(self, state):
            self.counter = state["counter"]

    dm = DM(batch_size=8)
    trainer = _trainer(tmp_path, max_epochs=1)
    trainer.fit(Net(), datamodule=dm)
    ck = torch.load(trainer.checkpoint_callback.best_model_path, weights_only=True)
    assert ck["datamodule_hyper_parameters"] == {"batch_size": 8}
    assert ck[type(dm).__qualname__] == {"counter": 1}
    dm2 = DM.load_from_checkpoint(trainer.checkpoint_callback.best_model_path)
    assert dm2.hparams.batch_size == 8 and dm2.counter == 1


def test_copies_of_a_trained_module_leave_the_trainer_behind(tmp_path):
    import copy
    import pickle

    model = Net()
    train, _ = _loaders()
    _trainer(tmp_path, max_epochs=1, enable_checkpointing=False).fit(model, train)
    clone = copy.deepcopy(model)
    assert clone._trainer is None and model._trainer is not None
    assert torch.equal(clone.encoder.weight, model.encoder.weight) and clone.hparams == model.hparams
    restored = pickle.loads(pickle.dumps(model))
    assert restored.lr == 0.1 and restored._trainer is None
