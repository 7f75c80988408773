"""Issue points checked one by one: every listed hook on module and callback, datamodule state on resume,
Trainer defaults warnings, ``ckpt_path="best"``, trainer attributes, EarlyStopping options, worker seeding and a
checkpoint laid out by hand as Lightning 2.x writes it."""

from __future__ import annotations

import logging
import warnings
from datetime import timedelta

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

import trainer_core as L
from trainer_core.callbacks import EarlyStopping, ModelCheckpoint
from trainer_core.loggers import CSVLogger

HOOKS = [
    "setup", "teardown", "on_fit_start", "on_fit_end", "on_train_epoch_start", "on_train_epoch_end",
    "on_train_batch_start", "on_train_batch_end", "on_validation_epoch_start", "on_validation_epoch_end",
    "on_test_epoch_end", "on_save_checkpoint", "on_load_checkpoint",
]


class Net(L.LightningModule):
    def __init__(self, hidden: int = 3, lr: float = 0.1):
        super().__init__()
        self.save_hyperparameters()
        self.l1 = nn.Linear(2, hidden)
        self.l2 = nn.Linear(hidden, 1)

    def forward(self, x):
        return self.l2(self.l1(x))

    def training_step(self, batch, batch_idx):
        return self(batch).pow(2).mean()

    def validation_step(self, batch, batch_idx):
        self.log("val_loss", self(batch).pow(2).mean())

    def test_step(self, batch, batch_idx):
        self.log("test_loss", self(batch).pow(2).mean())

    def configure_optimizers(self):
        opt = torch.optim.SGD(self.parameters(), lr=self.hparams.lr, momentum=0.9)
        return [opt], [torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)]


def _data(n=4, bs=2):
    return DataLoader(torch.randn(n, 2), batch_size=bs)


def _trainer(root, **kw):
    kw.setdefault("logger", False)
    kw.setdefault("num_sanity_val_steps", 0)
    return L.Trainer(default_root_dir=root, enable_progress_bar=False, enable_model_summary=False, **kw)


def test_every_listed_hook_runs_on_callback_then_module_in_lightnings_order(tmp_path):
    calls = []

    def recorder(prefix):
        def make(hook):
            def fn(self, *args):
                if hook == "on_save_checkpoint":
                    args[-1][f"{prefix}_extra"] = 1  # what a hook writes into the checkpoint comes back on load
                if hook == "on_load_checkpoint":
                    assert args[-1][f"{prefix}_extra"] == 1
                calls.append(f"{prefix}.{hook}")
            return fn
        return {h: make(h) for h in HOOKS}

    Module = type("Module", (Net,), recorder("m"))
    Cb = type("Cb", (L.Callback,), recorder("cb"))
    first = _trainer(tmp_path, max_epochs=1, limit_train_batches=1, limit_val_batches=1, callbacks=[Cb()])
    first.fit(Module(), _data(), _data())
    epoch = [
        "cb.on_train_epoch_start", "m.on_train_epoch_start", "cb.on_train_batch_start", "m.on_train_batch_start",
        "cb.on_train_batch_end", "m.on_train_batch_end", "cb.on_validation_epoch_start",
        "m.on_validation_epoch_start", "cb.on_validation_epoch_end", "m.on_validation_epoch_end",
        "cb.on_train_epoch_end", "m.on_train_epoch_end", "cb.on_save_checkpoint", "m.on_save_checkpoint",
    ]
    assert calls == [
        "cb.setup", "m.setup", "cb.on_fit_start", "m.on_fit_start", *epoch,
        "cb.on_fit_end", "m.on_fit_end", "cb.teardown", "m.teardown",
    ]
    calls.clear()
    second = _trainer(tmp_path / "b", max_epochs=2, limit_train_batches=1, limit_val_batches=1, callbacks=[Cb()])
    second.fit(Module(), _data(), _data(), ckpt_path=first.checkpoint_callback.best_model_path)
    assert calls == [
        "cb.setup", "m.setup", "m.on_load_checkpoint", "cb.on_load_checkpoint", "cb.on_fit_start",
        "m.on_fit_start", *epoch, "cb.on_fit_end", "m.on_fit_end", "cb.teardown", "m.teardown",
    ]
    calls.clear()
    second.test(Module(), _data(), verbose=False)
    assert calls == ["cb.setup", "m.setup", "cb.on_test_epoch_end", "m.on_test_epoch_end", "cb.teardown", "m.teardown"]


class CountingDM(L.LightningDataModule):
    def __init__(self, size: int = 4):
        super().__init__()
        self.save_hyperparameters()
        self.loads = 0

    def train_dataloader(self):
        self.loads += 1
        return _data(self.hparams.size)

    def state_dict(self):
        return {"loads": self.loads}

    def load_state_dict(self, state):
        self.loads = state["loads"]


def test_datamodule_state_is_restored_when_fit_resumes(tmp_path):
    dm = CountingDM()
    first = _trainer(tmp_path, max_epochs=1)
    first.fit(Net(), datamodule=dm)
    dm2 = CountingDM()
    seen = {}

    class Look(L.Callback):
        def on_train_start(self, trainer, pl_module):
            seen["loads"] = trainer.datamodule.loads

    _trainer(tmp_path / "b", max_epochs=2, callbacks=[Look()]).fit(
        Net(), datamodule=dm2, ckpt_path=first.checkpoint_callback.best_model_path
    )
    assert seen["loads"] == 2  # the checkpoint's count (1) came back before this run's loader added one
    ck = torch.load(first.checkpoint_callback.best_model_path, weights_only=True)
    assert ck["CountingDM"] == {"loads": 1} and ck["datamodule_hyper_parameters"] == {"size": 4}
    assert ck["datamodule_hparams_name"] == "kwargs"


def test_max_epochs_not_set_warns_like_lightning(tmp_path):
    with pytest.warns(UserWarning, match="`max_epochs` was not set. Setting it to 1000 epochs"):
        trainer = _trainer(tmp_path, enable_checkpointing=False, limit_train_batches=1)
        trainer.should_stop = False

        class StopNow(Net):
            def training_step(self, batch, batch_idx):
                self.trainer.should_stop = True
                return super().training_step(batch, batch_idx)

        trainer.fit(StopNow(), _data())
    assert trainer.max_epochs == 1000 and trainer.current_epoch == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # Lightning's other PossibleUserWarnings here: few workers (on a machine with more than 2 CPUs) and
        # a validation_step without a val loader; this checks that `max_epochs` is not warned about
        warnings.filterwarnings("ignore", message=".*does not have many workers")
        warnings.filterwarnings("ignore", message="You defined a `validation_step` but have no `val_dataloader`")
        for kw in ({"max_epochs": 2}, {"max_steps": 1}, {"max_time": timedelta(milliseconds=50)}, {"fast_dev_run": True}):
            _trainer(tmp_path, enable_checkpointing=False, **kw).fit(Net(), _data(2))


def test_fit_from_best_and_last_and_trainer_attributes(tmp_path):
    ckpt = ModelCheckpoint(monitor="val_loss", save_last=True)
    logger = CSVLogger(tmp_path, name="runs")
    first = _trainer(tmp_path, max_epochs=2, callbacks=[ckpt], logger=logger)
    assert first.loggers == [logger] and first.logger is logger
    assert first.log_dir == str(tmp_path / "runs" / "version_0")
    assert first.checkpoint_callbacks == [ckpt] and first.checkpoint_callback is ckpt
    first.fit(Net(), _data(), _data())
    assert ckpt.dirpath == str(tmp_path / "runs" / "version_0" / "checkpoints")
    best, last = ckpt.best_model_path, ckpt.last_model_path
    again = _trainer(tmp_path / "last", max_epochs=3, callbacks=[ModelCheckpoint(dirpath=ckpt.dirpath)])
    again.fit(Net(), _data(), _data(), ckpt_path="last")
    assert again.ckpt_path == last and again.global_step == 6
    first.fit_loop.max_epochs = 3  # "best" is the best checkpoint of this trainer's own ModelCheckpoint
    first.fit(Net(), _data(), _data(), ckpt_path="best")
    assert first.ckpt_path == best and first.global_step == 6
    with pytest.raises(ValueError, match="ckpt_path"):
        _trainer(tmp_path / "x", max_epochs=1, enable_checkpointing=False).fit(Net(), _data(), ckpt_path="best")
    assert _trainer(tmp_path, logger=False).checkpoint_callbacks[0].__class__ is ModelCheckpoint
    assert _trainer(tmp_path, enable_checkpointing=False).checkpoint_callbacks == []


class Scripted(L.LightningModule):
    def __init__(self, values):
        super().__init__()
        self.values = values
        self.runs = 0
        self.w = nn.Parameter(torch.zeros(1))

    def training_step(self, batch, batch_idx):
        return (self.w * batch).sum()

    def validation_step(self, batch, batch_idx):
        self.log("val_loss", self.values[min(self.runs, len(self.values) - 1)])

    def on_validation_epoch_end(self):
        self.runs += 1

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


@pytest.mark.parametrize("on_train_epoch_end, runs", [(None, 2), (False, 2), (True, 4)])
def test_early_stopping_check_on_train_epoch_end(tmp_path, on_train_epoch_end, runs):
    es = EarlyStopping("val_loss", patience=1, check_on_train_epoch_end=on_train_epoch_end)
    model = Scripted([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    trainer = _trainer(tmp_path, max_epochs=5, callbacks=[es], enable_checkpointing=False, val_check_interval=0.5)
    trainer.fit(model, _data(), _data(2))
    # two validations per epoch; checked after each (default here, or False) or once at each epoch end (True)
    assert model.runs == runs and trainer.should_stop


def test_early_stopping_verbose_reports_improvements_and_the_stop(tmp_path, caplog):
    es = EarlyStopping("val_loss", patience=1, verbose=True)
    with caplog.at_level(logging.INFO, logger="trainer_core"):
        _trainer(tmp_path, max_epochs=5, callbacks=[es], enable_checkpointing=False).fit(
            Scripted([1.0, 0.5, 0.7]), _data(), _data(2)
        )
    text = caplog.text
    assert "Metric val_loss improved. New best score: 1.000" in text
    assert "Metric val_loss improved by 0.500 >= min_delta = 0.0. New best score: 0.500" in text
    assert "Monitored metric val_loss did not improve in the last 1 records. Best score: 0.500" in text


class Seeds(Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, i):
        return torch.randint(0, 2**30, (1,))


def test_seed_everything_workers_gives_reproducible_distinct_worker_seeds():
    from trainer_core.seed import pl_worker_init_function

    L.seed_everything(7, workers=True, verbose=False)
    loader = DataLoader(Seeds(), batch_size=1, num_workers=2, worker_init_fn=pl_worker_init_function)
    a = [int(b) for b in loader]
    L.seed_everything(7, workers=True, verbose=False)
    loader = DataLoader(Seeds(), batch_size=1, num_workers=2, worker_init_fn=pl_worker_init_function)
    b = [int(b) for b in loader]
    assert a == b
    assert a[0] != a[1]  # worker 0 and worker 1 draw from different seeds


def _progress(n, processed=True):
    keys = ("ready", "completed", "started", "processed") if processed else ("ready", "completed")
    return {k: n for k in keys}


def test_checkpoint_built_by_hand_in_lightning_2_layout_loads_and_resumes(tmp_path):
    """The dict Lightning 2.x writes at the end of epoch 0 (4 batches), without any trainer_core extras."""
    source = Net(hidden=5, lr=0.2)
    opt = torch.optim.SGD(source.parameters(), lr=0.2, momentum=0.9)
    source(torch.randn(2, 2)).sum().backward()
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    opt.step()
    sched.step()
    batch = {"total": _progress(4), "current": _progress(4), "is_last_batch": True}
    checkpoint = {
        "epoch": 0,
        "global_step": 4,
        "pytorch-lightning_version": "2.4.0",
        "state_dict": source.state_dict(),
        "loops": {
            "fit_loop": {
                "state_dict": {},
                "epoch_loop.state_dict": {"_batches_that_stepped": 4},
                "epoch_loop.batch_progress": batch,
                "epoch_loop.scheduler_progress": {"total": _progress(1, False), "current": _progress(1, False)},
                "epoch_loop.automatic_optimization.state_dict": {},
                "epoch_loop.automatic_optimization.optim_progress": {"optimizer": {
                    "step": {"total": _progress(4, False), "current": _progress(4, False)},
                    "zero_grad": {"total": {"ready": 4, "completed": 4, "started": 4},
                                  "current": {"ready": 4, "completed": 4, "started": 4}},
                }},
                "epoch_loop.manual_optimization.state_dict": {},
                "epoch_loop.manual_optimization.optim_step_progress": {
                    "total": _progress(0, False), "current": _progress(0, False)},
                "epoch_loop.val_loop.state_dict": {},
                "epoch_loop.val_loop.batch_progress": {"total": _progress(2), "current": _progress(2),
                                                       "is_last_batch": True},
                "epoch_progress": {"total": {"ready": 1, "completed": 0, "started": 1, "processed": 1},
                                   "current": {"ready": 1, "completed": 0, "started": 1, "processed": 1}},
            },
            "validate_loop": {"state_dict": {}, "batch_progress": {"total": _progress(0), "current": _progress(0),
                                                                    "is_last_batch": False}},
            "test_loop": {"state_dict": {}, "batch_progress": {"total": _progress(0), "current": _progress(0),
                                                                "is_last_batch": False}},
            "predict_loop": {"state_dict": {}, "batch_progress": {"total": _progress(0), "current": _progress(0)}},
        },
        "callbacks": {
            "ModelCheckpoint{'monitor': 'val_loss', 'mode': 'min', 'every_n_train_steps': 0, 'every_n_epochs': 1, "
            "'train_time_interval': None}": {
                "monitor": "val_loss", "best_model_score": torch.tensor(0.25),
                "best_model_path": str(tmp_path / "epoch=0-step=4.ckpt"), "current_score": torch.tensor(0.25),
                "dirpath": str(tmp_path), "best_k_models": {str(tmp_path / "epoch=0-step=4.ckpt"): torch.tensor(0.25)},
                "kth_best_model_path": str(tmp_path / "epoch=0-step=4.ckpt"), "kth_value": torch.tensor(0.25),
                "last_model_path": "",
            },
            "EarlyStopping{'monitor': 'val_loss', 'mode': 'min'}": {
                "wait_count": 2, "stopped_epoch": 0, "best_score": torch.tensor(0.25), "patience": 9,
            },
        },
        "optimizer_states": [opt.state_dict()],
        "lr_schedulers": [sched.state_dict()],
        "hparams_name": "kwargs",
        "hyper_parameters": {"hidden": 5, "lr": 0.2},
    }
    path = tmp_path / "lightning.ckpt"
    torch.save(checkpoint, path)

    loaded = Net.load_from_checkpoint(path, map_location="cpu")
    assert loaded.hparams == {"hidden": 5, "lr": 0.2} and loaded.l1.out_features == 5
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), source.state_dict().values(), strict=True))

    starts = []

    class Spy(L.Callback):
        def on_train_epoch_start(self, trainer, pl_module):
            starts.append((trainer.current_epoch, trainer.global_step, trainer.optimizers[0].param_groups[0]["lr"]))
            starts.append((es.wait_count, float(es.best_score), float(mc.best_model_score), mc.best_model_path))
            momentum = trainer.optimizers[0].state_dict()["state"][0]["momentum_buffer"]
            starts.append(torch.equal(momentum, opt.state_dict()["state"][0]["momentum_buffer"]))

    mc = ModelCheckpoint(dirpath=tmp_path, monitor="val_loss")
    es = EarlyStopping("val_loss", patience=9)
    trainer = _trainer(tmp_path / "run", max_epochs=2, callbacks=[Spy(), mc, es])
    trainer.fit(Net(hidden=5, lr=0.2), _data(8), _data(), ckpt_path=path)
    best = str(tmp_path / "epoch=0-step=4.ckpt")
    # epoch 1, step 4, lr after one scheduler step; callback states and optimizer momentum restored
    assert starts == [(1, 4, pytest.approx(0.1)), (2, 0.25, 0.25, best), True]
    assert trainer.global_step == 8 and trainer.current_epoch == 2


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"min_epochs": -1}, "min_epochs=-1"),
        ({"max_steps": -2}, "max_steps=-2"),
        ({"min_steps": -1}, "min_steps=-1"),
        ({"limit_test_batches": 2.0}, "limit_test_batches=2.0"),
        ({"limit_predict_batches": "a"}, "limit_predict_batches='a'"),
        ({"gradient_clip_val": -1.0}, "gradient_clip_val=-1.0"),
        ({"callbacks": 5}, "callbacks=5"),
        ({"logger": 5}, "logger=5"),
        ({"logger": [CSVLogger("x"), "tb"]}, "logger=["),
        ({"default_root_dir": 5}, "default_root_dir=5"),
        ({"enable_checkpointing": "no"}, "enable_checkpointing='no'"),
        ({"enable_progress_bar": 2}, "enable_progress_bar=2"),
        ({"enable_model_summary": "x"}, "enable_model_summary='x'"),
    ],
)
def test_more_bad_values_name_the_argument_and_allowed_values(kwargs, needle):
    with pytest.raises(ValueError, match="Allowed values") as err:
        L.Trainer(**kwargs)
    assert needle in str(err.value)


class Counting(L.LightningModule):
    """Batches are dicts (train) or (x, label) tuples (val, test): the batch size is inferred from either."""

    def __init__(self):
        super().__init__()
        self.l = nn.Linear(2, 1)
        self.counts = {"train": 0, "val": 0, "test": 0, "predict": 0}

    def training_step(self, batch, batch_idx):
        self.counts["train"] += 1
        x = batch["x"]
        self.log("per_sample", x.sum() / x.shape[0], on_epoch=True)
        return self.l(x).sum()

    def validation_step(self, batch, batch_idx):
        self.counts["val"] += 1
        self.log("val_mean", batch[0].mean())

    def test_step(self, batch, batch_idx):
        self.counts["test"] += 1

    def predict_step(self, batch, batch_idx):
        self.counts["predict"] += 1
        return batch

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


def _dict_and_tuple_loaders():
    x = torch.arange(10.0).repeat(2, 1).T  # row i is [i, i]
    return (
        DataLoader([{"x": x[i]} for i in range(10)], batch_size=4),  # batches of 4, 4, 2
        DataLoader([(x[i], 0) for i in range(5)], batch_size=2),  # batches of 2, 2, 1
    )


def test_fast_dev_run_n_runs_n_batches_of_all_four_stages(tmp_path):
    train, val = _dict_and_tuple_loaders()
    model = Counting()
    trainer = L.Trainer(default_root_dir=tmp_path, fast_dev_run=3, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=[EarlyStopping("val_mean", patience=0)])
    trainer.fit(model, train, val)
    trainer.validate(model, val, verbose=False)
    trainer.test(model, val, verbose=False)
    assert len(trainer.predict(model, train)) == 3
    assert model.counts == {"train": 3, "val": 6, "test": 3, "predict": 3}
    assert not trainer.should_stop  # early stopping is off; ModelCheckpoint stays but writes nothing
    assert list(tmp_path.iterdir()) == []


def test_batch_size_inferred_from_dict_and_tuple_batches(tmp_path):
    train, val = _dict_and_tuple_loaders()
    trainer = _trainer(tmp_path, max_epochs=1, enable_checkpointing=False)
    trainer.fit(Counting(), train, val)
    metrics = trainer.callback_metrics
    # per batch: 2 * mean(i); weighted by 4, 4, 2 samples -> 2 * 4.5; unweighted would give 2 * 3.83
    assert metrics["per_sample_epoch"].item() == pytest.approx(9.0)
    assert metrics["val_mean"].item() == pytest.approx(2.0)  # weighted by 2, 2, 1


def test_several_loggers_at_once(tmp_path):
    a, b = CSVLogger(tmp_path, name="a"), CSVLogger(tmp_path, name="b")
    trainer = _trainer(tmp_path, max_epochs=1, logger=[a, b], log_every_n_steps=1)
    assert trainer.loggers == [a, b] and trainer.logger is a and trainer.log_dir == a.log_dir
    trainer.fit(Net(), _data(), _data())
    for name in ("a", "b"):
        text = (tmp_path / name / "version_0" / "metrics.csv").read_text()
        assert "val_loss" in text.splitlines()[0]
        assert (tmp_path / name / "version_0" / "hparams.yaml").read_text().startswith("hidden: 3")
    assert trainer.checkpoint_callback.dirpath == str(tmp_path / "a" / "version_0" / "checkpoints")


def test_load_from_checkpoint_passes_map_location_to_torch_load(tmp_path):
    trainer = _trainer(tmp_path, max_epochs=1)
    trainer.fit(Net(), _data())
    seen = []

    def to_cpu(storage, location):
        seen.append(location)
        return storage

    model = Net.load_from_checkpoint(trainer.checkpoint_callback.best_model_path, map_location=to_cpu)
    assert seen and model.l1.weight.device.type == "cpu"


def test_deterministic_true_switches_torch_to_deterministic_algorithms():
    before = torch.are_deterministic_algorithms_enabled()
    try:
        L.Trainer(deterministic=True, logger=False)
        assert torch.are_deterministic_algorithms_enabled()
        L.Trainer(deterministic=False, logger=False)
        assert not torch.are_deterministic_algorithms_enabled()
    finally:
        torch.use_deterministic_algorithms(before)


def test_default_logger_is_tensorboard_when_installed_else_csv(tmp_path, monkeypatch):
    import sys

    pytest.importorskip("tensorboard")
    assert type(L.Trainer(default_root_dir=tmp_path).logger).__name__ == "TensorBoardLogger"
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # what an environment without it looks like
    logger = L.Trainer(default_root_dir=tmp_path).logger
    assert type(logger).__name__ == "CSVLogger" and logger.log_dir == str(tmp_path / "lightning_logs" / "version_0")


def test_hyperparameters_saved_from_a_dict_argument_load_back_under_its_name(tmp_path):
    class FromConfig(L.LightningModule):
        def __init__(self, config: dict, scale: float = 1.0):
            super().__init__()
            self.save_hyperparameters(config)
            self.l = nn.Linear(2, config["hidden"])

        def training_step(self, batch, batch_idx):
            self.log("peak", batch.sum(), on_epoch=True, reduce_fx=torch.max)  # a callable reducer, as Lightning
            return self.l(batch).sum()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    trainer = _trainer(tmp_path, max_epochs=1)
    trainer.fit(FromConfig({"hidden": 3}), DataLoader(torch.arange(8.0).view(4, 2), batch_size=2))
    assert trainer.callback_metrics["peak_epoch"].item() == 22.0
    path = trainer.checkpoint_callback.best_model_path
    ck = torch.load(path, weights_only=True)
    assert ck["hparams_name"] == "config" and ck["hyper_parameters"] == {"hidden": 3}
    loaded = FromConfig.load_from_checkpoint(path)
    assert loaded.hparams == {"hidden": 3} and loaded.l.out_features == 3 and loaded.hidden == 3


def test_dataloaders_are_requested_after_on_fit_start(tmp_path):
    class Resize(L.Callback):
        def on_fit_start(self, trainer, pl_module):
            trainer.datamodule.hparams.size = 8  # what a batch-size finder does before the loaders are built

    dm = CountingDM(size=4)
    trainer = _trainer(tmp_path, max_epochs=1, enable_checkpointing=False, callbacks=[Resize()])
    trainer.fit(Net(), datamodule=dm)
    assert trainer.num_training_batches == 4 and trainer.global_step == 4


def test_early_stopping_on_a_training_metric_without_validation(tmp_path):
    class TrainOnly(Scripted):
        def training_step(self, batch, batch_idx):
            self.log("train_loss", float(self.current_epoch), on_step=False, on_epoch=True)
            return super().training_step(batch, batch_idx)

    es = EarlyStopping("train_loss", patience=2, check_on_train_epoch_end=True)
    trainer = _trainer(tmp_path, max_epochs=10, callbacks=[es], enable_checkpointing=False)
    trainer.fit(TrainOnly([0.0]), _data())
    assert es.stopped_epoch == 2 and trainer.current_epoch == 3 and es.best_score.item() == 0.0
