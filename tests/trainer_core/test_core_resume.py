"""Resume: an interrupted run continued from its checkpoint ends with exactly the weights of an uninterrupted run."""

from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import trainer_core as L
from trainer_core.callbacks import EarlyStopping, ModelCheckpoint


@pytest.fixture(autouse=True)
def _restore_deterministic_flag():
    """Trainer(deterministic=True) switches a process-wide torch flag; leave it as we found it."""
    before = torch.are_deterministic_algorithms_enabled()
    yield
    torch.use_deterministic_algorithms(before)


class Regressor(L.LightningModule):
    def __init__(self, lr: float = 0.05):
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.mse_loss(self.net(x), y)
        self.log("train_loss", loss, on_epoch=True)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", F.mse_loss(self.net(x), y))

    def configure_optimizers(self):
        opt = torch.optim.SGD(self.parameters(), lr=self.hparams.lr, momentum=0.9)
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.7)
        return [opt], [sched]


def _data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 4, generator=g)
    y = x.sum(dim=1, keepdim=True) + 0.1 * torch.randn(40, 1, generator=g)
    return TensorDataset(x, y)


def _loaders():
    ds = _data()
    return DataLoader(ds, batch_size=4, shuffle=True), DataLoader(ds, batch_size=8)


def _trainer(root, max_epochs, callbacks=(), **kw):
    return L.Trainer(
        max_epochs=max_epochs,
        default_root_dir=root,
        deterministic=True,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=list(callbacks),
        **kw,
    )


class _StopAt(L.Callback):
    """Simulates a crash: raises after global step ``step`` (after checkpoints of that step were written); like
    Lightning 2.6, fit turns the KeyboardInterrupt into ``SystemExit(1)`` after its graceful shutdown."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.step:
            raise KeyboardInterrupt


def _reference(root, epochs):
    L.seed_everything(7)
    model = Regressor()
    train, val = _loaders()
    _trainer(root, epochs).fit(model, train, val)
    return model


def test_resume_at_epoch_boundary_equals_uninterrupted(tmp_path):
    ref = _reference(tmp_path / "ref", 4)

    L.seed_everything(7)
    model = Regressor()
    train, val = _loaders()
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ck", save_top_k=-1)
    _trainer(tmp_path / "a", 2, [ckpt]).fit(model, train, val)
    path = os.path.join(tmp_path / "ck", "epoch=1-step=20.ckpt")
    assert os.path.exists(path)

    # a fresh process-like start: different global RNG state, new objects
    torch.manual_seed(12345)
    model2 = Regressor()
    train2, val2 = _loaders()
    trainer = _trainer(tmp_path / "b", 4)
    trainer.fit(model2, train2, val2, ckpt_path=path)
    assert trainer.current_epoch == 4
    assert trainer.global_step == 40
    for (name, a), b in zip(ref.state_dict().items(), model2.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_resume_mid_epoch_equals_uninterrupted(tmp_path):
    ref = _reference(tmp_path / "ref", 3)

    L.seed_everything(7)
    model = Regressor()
    train, val = _loaders()
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ck", every_n_train_steps=3, save_top_k=-1)
    with pytest.raises(SystemExit):  # a KeyboardInterrupt in fit ends it with SystemExit(1), as Lightning
        _trainer(tmp_path / "a", 3, [ckpt, _StopAt(14)]).fit(model, train, val)
    path = os.path.join(tmp_path / "ck", "epoch=1-step=12.ckpt")
    assert os.path.exists(path)
    ck = torch.load(path, weights_only=True)
    assert ck["loops"]["fit_loop"]["epoch_loop.batch_progress"]["current"]["processed"] == 2

    torch.manual_seed(999)
    model2 = Regressor()
    train2, val2 = _loaders()

    seen = []

    class Spy(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            seen.append((trainer.current_epoch, batch_idx))

    trainer = _trainer(tmp_path / "b", 3, [Spy()])
    trainer.fit(model2, train2, val2, ckpt_path=path)
    assert seen[0] == (1, 2)  # exactly the next batch of the interrupted epoch
    assert trainer.global_step == 30
    for (name, a), b in zip(ref.state_dict().items(), model2.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_mid_epoch_resume_does_not_load_skipped_batches(tmp_path):
    class CountingDataset(TensorDataset):
        loaded = 0

        def __getitem__(self, i):
            CountingDataset.loaded += 1
            return super().__getitem__(i)

    ds = _data()
    L.seed_everything(1)
    model = Regressor()
    ckpt = ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=7, save_top_k=-1)
    _trainer(tmp_path / "a", 1, [ckpt], limit_train_batches=8).fit(model, DataLoader(ds, batch_size=4, shuffle=True))
    path = os.path.join(tmp_path, "epoch=0-step=7.ckpt")

    counting = CountingDataset(*ds.tensors)
    CountingDataset.loaded = 0
    model2 = Regressor()
    _trainer(tmp_path / "b", 1, limit_train_batches=8).fit(
        model2, DataLoader(counting, batch_size=4, shuffle=True), ckpt_path=path
    )
    assert CountingDataset.loaded == 4  # only the one remaining batch of 4 samples


def test_resume_restores_optimizer_scheduler_and_callback_state(tmp_path):
    L.seed_everything(3)
    model = Regressor()
    train, val = _loaders()
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ck", monitor="val_loss", save_top_k=2, save_last=True)
    es = EarlyStopping(monitor="val_loss", patience=50)
    t1 = _trainer(tmp_path / "a", 2, [ckpt, es])
    t1.fit(model, train, val)
    best_before = ckpt.best_model_path
    lr_before = t1.optimizers[0].param_groups[0]["lr"]

    model2 = Regressor()
    ckpt2 = ModelCheckpoint(dirpath=tmp_path / "ck", monitor="val_loss", save_top_k=2, save_last=True)
    es2 = EarlyStopping(monitor="val_loss", patience=50)
    t2 = _trainer(tmp_path / "b", 2, [ckpt2, es2])
    t2.fit(model2, train, val, ckpt_path="last")  # max_epochs already reached: nothing to train
    assert t2.ckpt_path == ckpt.last_model_path
    assert t2.current_epoch == 2 and t2.global_step == 20
    assert ckpt2.best_model_path == best_before
    assert set(ckpt2.best_k_models) == set(ckpt.best_k_models)
    assert es2.best_score == es.best_score and es2.wait_count == es.wait_count
    assert t2.optimizers[0].param_groups[0]["lr"] == pytest.approx(lr_before)
    assert t2.lr_scheduler_configs[0].scheduler.last_epoch == t1.lr_scheduler_configs[0].scheduler.last_epoch
    assert torch.equal(
        t2.optimizers[0].state_dict()["state"][0]["momentum_buffer"],
        t1.optimizers[0].state_dict()["state"][0]["momentum_buffer"],
    )


def test_resume_from_weights_only_checkpoint_fails_clearly(tmp_path):
    model = Regressor()
    train, _ = _loaders()
    ckpt = ModelCheckpoint(dirpath=tmp_path, save_weights_only=True)
    _trainer(tmp_path, 1, [ckpt]).fit(model, train)
    with pytest.raises(KeyError, match="save_weights_only"):
        _trainer(tmp_path / "b", 2).fit(Regressor(), train, ckpt_path=ckpt.best_model_path)


def test_ckpt_path_last_without_checkpoints_warns_and_trains(tmp_path):
    train, _ = _loaders()
    trainer = _trainer(tmp_path, 1)
    with pytest.warns(UserWarning, match="no last checkpoint"):
        trainer.fit(Regressor(), train, ckpt_path="last")
    assert trainer.global_step == 10


def test_resume_from_last_batch_checkpoint_runs_the_pending_validation(tmp_path):
    ref = _reference(tmp_path / "ref", 2)

    L.seed_everything(7)
    model = Regressor()
    train, val = _loaders()
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ck", every_n_train_steps=10, save_top_k=-1)
    with pytest.raises(SystemExit):  # a KeyboardInterrupt in fit ends it with SystemExit(1), as Lightning
        _trainer(tmp_path / "a", 2, [ckpt, _StopAt(11)]).fit(model, train, val)
    path = os.path.join(tmp_path / "ck", "epoch=0-step=10.ckpt")  # written before epoch 0's validation ran

    events = []

    class Spy(L.Callback):
        def on_validation_end(self, trainer, pl_module):
            events.append(("val", trainer.current_epoch, trainer.global_step))

        def on_train_epoch_end(self, trainer, pl_module):
            events.append(("epoch_end", trainer.current_epoch, trainer.global_step))

    model2 = Regressor()
    train2, val2 = _loaders()
    trainer = _trainer(tmp_path / "b", 2, [Spy()])
    trainer.fit(model2, train2, val2, ckpt_path=path)
    assert events == [("val", 0, 10), ("epoch_end", 0, 10), ("val", 1, 20), ("epoch_end", 1, 20)]
    assert "val_loss" in trainer.callback_metrics
    for (name, a), b in zip(ref.state_dict().items(), model2.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


@pytest.mark.parametrize("save_at_batch", [0, 3])
def test_resume_from_checkpoint_saved_at_batch_start(tmp_path, save_at_batch):
    """A checkpoint taken in on_train_batch_start (before that batch trains) resumes with that batch."""
    ref = _reference(tmp_path / "ref", 3)
    path = str(tmp_path / "start.ckpt")

    class SaveAtStart(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if trainer.current_epoch == 1 and batch_idx == save_at_batch:
                trainer.save_checkpoint(path)
                raise KeyboardInterrupt

    L.seed_everything(7)
    model = Regressor()
    train, val = _loaders()
    with pytest.raises(SystemExit):  # a KeyboardInterrupt in fit ends it with SystemExit(1), as Lightning
        _trainer(tmp_path / "a", 3, [SaveAtStart()]).fit(model, train, val)

    torch.manual_seed(4321)
    model2 = Regressor()
    train2, val2 = _loaders()
    trainer = _trainer(tmp_path / "b", 3)
    trainer.fit(model2, train2, val2, ckpt_path=path)
    assert trainer.global_step == 30
    progress = trainer.fit_loop.epoch_progress.current
    assert progress.completed == 3 and progress.ready == 3 and progress.started == 3
    for (name, a), b in zip(ref.state_dict().items(), model2.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_resume_from_lightning_style_checkpoint_without_our_extras(tmp_path):
    """A checkpoint written by Lightning has the same loop counters but none of our RNG/sampler state."""
    model = Regressor()
    train, val = _loaders()
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ck", every_n_train_steps=13, save_top_k=-1)
    with pytest.raises(SystemExit):  # a KeyboardInterrupt in fit ends it with SystemExit(1), as Lightning
        _trainer(tmp_path / "a", 3, [ckpt, _StopAt(14)]).fit(model, train, val)
    path = tmp_path / "ck" / "epoch=1-step=13.ckpt"
    state = torch.load(path, weights_only=True)
    del state["loops"]["fit_loop"]["state_dict"]["trainer_core"]
    del state["trainer_core_version"]
    torch.save(state, tmp_path / "lightning.ckpt")

    seen = []

    class Spy(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            seen.append((trainer.current_epoch, batch_idx))

    trainer = _trainer(tmp_path / "b", 3, [Spy()])
    trainer.fit(Regressor(), train, val, ckpt_path=str(tmp_path / "lightning.ckpt"))
    assert seen[0] == (1, 3) and trainer.global_step == 30 and trainer.current_epoch == 3


class _Pair(Regressor):
    """Trains on a dict of two shuffled loaders (Lightning's CombinedLoader), with dropout drawing from the RNG."""

    def training_step(self, batch, batch_idx):
        loss = sum(F.mse_loss(F.dropout(self.net(x), 0.2), y) for x, y in (v for v in batch.values() if v is not None))
        return loss


def _pair_loaders(mode):
    from trainer_core.utilities import CombinedLoader

    ds = _data()
    small = TensorDataset(*(t[:12] for t in ds.tensors))
    loaders = {"a": DataLoader(ds, batch_size=4, shuffle=True), "b": DataLoader(small, batch_size=4, shuffle=True)}
    return loaders if mode == "dict" else CombinedLoader(loaders, mode)


@pytest.mark.parametrize("mode", ["dict", "max_size"])
def test_resume_mid_epoch_with_several_train_loaders_equals_uninterrupted(tmp_path, mode):
    """Several train loaders: each shuffling sampler's permutations of the epoch (the short loader's too, drawn
    again each time it cycles) are in the checkpoint, so a mid-epoch resume replays them; 10 + 10 batches, the
    crash at epoch 1 batch 7 (after b cycled twice)."""
    L.seed_everything(3)
    ref = _Pair()
    _trainer(tmp_path / "ref", 2).fit(ref, _pair_loaders(mode))

    L.seed_everything(3)
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ck", every_n_train_steps=1, save_top_k=-1)
    with pytest.raises(SystemExit):
        _trainer(tmp_path / "a", 2, [ckpt, _StopAt(18)]).fit(_Pair(), _pair_loaders(mode))
    torch.manual_seed(5)
    model2 = _Pair()
    trainer = _trainer(tmp_path / "b", 2)
    trainer.fit(model2, _pair_loaders(mode), ckpt_path=str(tmp_path / "ck" / "epoch=1-step=17.ckpt"))
    assert trainer.global_step == 20
    for (name, a), b in zip(ref.state_dict().items(), model2.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
