"""Compatibility (issue 12, point 4): the Tuner as Lightning 2.6 (``tuner/tuning.py``, ``tuner/lr_finder.py``,
``tuner/batch_size_scaling.py``, ``callbacks/lr_finder.py``, ``callbacks/batch_size_finder.py``).

Each scenario ``_scenario_*(L, root)`` runs under both ``trainer_core`` and ``lightning.pytorch`` and returns plain
values; the tests compare trainer_core's with literals recorded from real Lightning 2.6.6 (torch 2.14, CPU) by the
same functions. Out-of-memory errors are simulated on the CPU: the model raises ``torch.OutOfMemoryError`` with
CUDA's message when a training batch is larger than its ``oom_above``. Re-record with (repository root)::

    /tmp/lref/bin/python -c "import sys,tempfile,pprint,lightning.pytorch as L; sys.path.insert(0,'.'); \
from tests.trainer_core.compat import test_tuner as m; pprint.pprint(m.record_all(L, tempfile.mkdtemp()))"
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
import warnings
from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset


def _L() -> Any:
    import trainer_core

    return trainer_core


def _tuner(L: Any) -> Any:
    return importlib.import_module(f"{L.__name__}.tuner").Tuner


def _trainer(L: Any, root: str, **kw: Any) -> Any:
    kw.setdefault("max_epochs", 2)
    kw.setdefault("num_sanity_val_steps", 0)
    kw.setdefault("logger", False)
    kw.setdefault("enable_checkpointing", False)
    return L.Trainer(
        default_root_dir=root, accelerator="cpu", devices=1, enable_progress_bar=False, enable_model_summary=False, **kw
    )


def _data(n: int = 64) -> TensorDataset:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, 3, generator=g)
    return TensorDataset(x, x @ torch.tensor([[1.0], [-2.0], [0.5]]) + 0.1 * torch.randn(n, 1, generator=g))


def _model(L: Any, *, lr: float = 0.01, batch_size: int | None = 2, hparams: bool = True, oom_above: int = 0) -> Any:
    """A linear regression; ``batch_size`` None: no such attribute (only the datamodule's); ``hparams``: also in
    ``self.hparams``; ``oom_above`` > 0: training batches larger than that raise CUDA's out-of-memory error."""

    class M(L.LightningModule):
        def __init__(self, lr: float = lr, batch_size: int | None = batch_size):
            super().__init__()
            if hparams:
                self.save_hyperparameters()
            self.lr = lr
            if batch_size is not None and not hparams:
                self.batch_size = batch_size
            elif batch_size is not None:
                self.batch_size = batch_size
            self.net = torch.nn.Linear(3, 1)
            self.seen: list[int] = []
            self.val_seen: list[int] = []

        def training_step(self, batch, batch_idx):
            x, y = batch
            self.seen.append(len(x))
            if oom_above and len(x) > oom_above:
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
            return torch.nn.functional.mse_loss(self.net(x), y)

        def validation_step(self, batch, batch_idx):
            self.val_seen.append(len(batch[0]))

        def train_dataloader(self):
            return DataLoader(_data(), batch_size=self._bs())

        def val_dataloader(self):
            return DataLoader(_data(16), batch_size=self._bs())

        def _bs(self) -> int:
            if hasattr(self, "batch_size"):
                return self.batch_size
            if "batch_size" in self.hparams:
                return self.hparams.batch_size
            return self.trainer.datamodule.batch_size

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=self.lr)

    return M()


def _weights(model: Any) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


def _same(a: list[torch.Tensor], b: Any) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b.parameters(), strict=True))


def _ckpts(root: str) -> list[str]:
    return sorted(f for _, _, files in os.walk(root) for f in files if f.endswith(".ckpt"))


class _Logs(logging.Handler):
    def __init__(self, *needles: str) -> None:
        super().__init__(logging.INFO)
        self.needles, self.lines = needles, []

    def emit(self, record: logging.LogRecord) -> None:
        msg = record.getMessage()
        if any(n in msg for n in self.needles):
            self.lines.append(msg)


def _logs(L: Any, *needles: str) -> _Logs:
    """Captures matching log lines of ``L``'s loggers (Lightning's do not propagate to the root logger)."""
    handler = _Logs(*needles)
    for name in (L.__name__, L.__name__.split(".")[0]):
        logger = logging.getLogger(name)
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    return handler


def _unlog(L: Any, handler: _Logs) -> None:
    for name in (L.__name__, L.__name__.split(".")[0]):
        logging.getLogger(name).removeHandler(handler)


def _error(fn: Any) -> tuple[str, str] | None:
    try:
        fn()
    except Exception as exc:  # noqa: BLE001 - the type name and message are the result
        return type(exc).__name__, str(exc)
    return None


# --------------------------------------------------------------------------------------------- scale_batch_size
def _scenario_batch_size(L: Any, root: str, mode: str, oom_above: int, **kw: Any) -> dict:
    L.seed_everything(0)
    model = _model(L, oom_above=oom_above)
    before = _weights(model)
    recorder = _recorder(L)
    trainer = _trainer(L, root, callbacks=[recorder])
    logs = _logs(L, "Batch size", "batch size", "margin")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            found = _tuner(L)(trainer).scale_batch_size(model, mode=mode, steps_per_trial=1, **kw)
    finally:
        _unlog(L, logs)
    return {
        "found": found,
        "model.batch_size": model.batch_size,
        "hparams.batch_size": model.hparams.batch_size,
        "train_batches": model.seen,
        "logs": logs.lines,
        "recorder": recorder.calls,
        "current_epoch": trainer.current_epoch,
        "warnings": sorted({str(w.message) for w in caught if "mutually" in str(w.message)}),
        "weights_restored": _same(before, model),
        "global_step": trainer.global_step,
        "ckpts": _ckpts(root),
    }


def _scenario_batch_size_datamodule(L: Any, root: str) -> dict:
    class DM(L.LightningDataModule):
        def __init__(self) -> None:
            super().__init__()
            self.batch_size = 2

        def train_dataloader(self):
            return DataLoader(_data(), batch_size=self.batch_size)

        def val_dataloader(self):
            return DataLoader(_data(16), batch_size=self.batch_size)

    model = _model(L, batch_size=None, hparams=False)
    dm = DM()
    trainer = _trainer(L, root)
    found = _tuner(L)(trainer).scale_batch_size(model, datamodule=dm, init_val=4, max_trials=3, steps_per_trial=1)
    return {"found": found, "dm.batch_size": dm.batch_size, "has_attr": "batch_size" in vars(model)}


def _scenario_batch_size_hparams_only(L: Any, root: str) -> dict:
    model = _model(L, hparams=True)
    del model.batch_size
    trainer = _trainer(L, root)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        found = _tuner(L)(trainer).scale_batch_size(model, max_trials=4, steps_per_trial=1)
    return {
        "found": found,
        "hparams.batch_size": model.hparams.batch_size,
        "has_attr": "batch_size" in vars(model),
        "warnings": sorted({str(w.message) for w in caught if "mutually" in str(w.message)}),
    }


def _scenario_batch_size_errors(L: Any, root: str) -> dict:
    def missing() -> None:
        model = _model(L, batch_size=None, hparams=False)
        model._bs = lambda: 2
        _tuner(L)(_trainer(L, root)).scale_batch_size(model, batch_arg_name="batch_size")

    def other_name() -> None:
        _tuner(L)(_trainer(L, root)).scale_batch_size(_model(L), batch_arg_name="bs")

    def direct_loader() -> None:
        _tuner(L)(_trainer(L, root)).scale_batch_size(_model(L), train_dataloaders=DataLoader(_data(), batch_size=2))

    def dataloaders_with_fit() -> None:
        _tuner(L)(_trainer(L, root)).scale_batch_size(_model(L), dataloaders=DataLoader(_data(), batch_size=2))

    def bad_method() -> None:
        _tuner(L)(_trainer(L, root)).scale_batch_size(_model(L), method="tune")

    def already_configured() -> None:
        trainer = _trainer(L, root, callbacks=[L.callbacks.BatchSizeFinder()])
        _tuner(L)(trainer).scale_batch_size(_model(L))

    def bad_mode() -> None:
        L.callbacks.BatchSizeFinder(mode="linear")

    return {
        f.__name__: _error(f)
        for f in (missing, other_name, direct_loader, dataloaders_with_fit, bad_method, already_configured, bad_mode)
    }


def _scenario_batch_size_validate(L: Any, root: str) -> dict:
    model = _model(L)
    trainer = _trainer(L, root)
    found = _tuner(L)(trainer).scale_batch_size(model, method="validate", max_trials=3, steps_per_trial=1)
    return {"found": found, "val_batches": model.val_seen, "train_batches": model.seen, "status": str(trainer.state.status.value)}


def _scenario_batch_size_callback_in_fit(L: Any, root: str) -> dict:
    L.seed_everything(0)
    model = _model(L, oom_above=8)
    finder = L.callbacks.BatchSizeFinder(max_trials=5, steps_per_trial=1)
    trainer = _trainer(L, root, max_epochs=1, callbacks=[finder])
    trainer.fit(model)
    return {
        "optimal": finder.optimal_batch_size,
        "batches": model.seen,
        "global_step": trainer.global_step,
        "callbacks": [type(cb).__name__ for cb in trainer.callbacks],
    }


# ---------------------------------------------------------------------------------------------------- lr_find
def _recorder(L: Any) -> Any:
    """A user callback that records which of its hooks a tuner run calls."""

    class Recorder(L.Callback):
        def __init__(self) -> None:
            self.calls: list[str] = []

        def setup(self, trainer, pl_module, stage):
            self.calls.append(f"setup({getattr(stage, 'value', stage)})")

        def on_fit_start(self, trainer, pl_module):
            self.calls.append("on_fit_start")

        def on_train_start(self, trainer, pl_module):
            self.calls.append("on_train_start")

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            self.calls.append("on_train_batch_start")

        def on_fit_end(self, trainer, pl_module):
            self.calls.append("on_fit_end")

        def state_dict(self):
            self.calls.append("state_dict")
            return {"n": 1}

        def load_state_dict(self, state_dict):
            self.calls.append(f"load_state_dict({state_dict})")

        def on_save_checkpoint(self, trainer, pl_module, checkpoint):
            self.calls.append("on_save_checkpoint")

        def on_load_checkpoint(self, trainer, pl_module, checkpoint):
            self.calls.append("on_load_checkpoint")

        def on_exception(self, trainer, pl_module, exception):
            self.calls.append(f"on_exception({type(exception).__name__})")

        def teardown(self, trainer, pl_module, stage):
            self.calls.append(f"teardown({getattr(stage, 'value', stage)})")

    return Recorder()


def _scenario_lr_find(L: Any, root: str) -> dict:
    L.seed_everything(0)
    model = _model(L, lr=0.01)
    before = _weights(model)
    recorder = _recorder(L)
    trainer = _trainer(L, root, logger=True, callbacks=[recorder])
    callbacks, loggers = list(trainer.callbacks), list(trainer.loggers)
    finder = _tuner(L)(trainer).lr_find(model, min_lr=1e-3, max_lr=0.5, num_training=25, early_stop_threshold=None)
    suggestion = finder.suggestion()
    return {
        "lr": [round(v, 8) for v in finder.results["lr"]],
        "loss": [round(v, 5) for v in finder.results["loss"]],
        "suggestion": round(suggestion, 8),
        "model.lr": round(model.lr, 8),
        "hparams.lr": round(model.hparams.lr, 8),
        "weights_restored": _same(before, model),
        "global_step": trainer.global_step,
        "current_epoch": trainer.current_epoch,
        "callbacks_same": [a is b for a, b in zip(callbacks, trainer.callbacks, strict=True)],
        "recorder": recorder.calls,
        "loggers_same": [a is b for a, b in zip(loggers, trainer.loggers, strict=True)],
        "status": str(trainer.state.status.value),
        "stage": trainer.state.stage,
        "ckpts": _ckpts(root),
    }


def _scenario_lr_find_then_fit(L: Any, root: str) -> dict:
    L.seed_everything(0)
    model = _model(L, lr=0.01)
    trainer = _trainer(L, root, max_epochs=1)
    finder = _tuner(L)(trainer).lr_find(model, num_training=20, early_stop_threshold=None)
    trainer.fit(model)
    return {
        "suggestion_is_lr": finder.suggestion() == model.lr,
        "optimizer_lr_is_model_lr": trainer.optimizers[0].param_groups[0]["lr"] == model.lr,
        "global_step": trainer.global_step,
        "train_batches": len(model.seen),
    }


def _scenario_lr_find_update_attr(L: Any, root: str) -> dict:
    out = {}
    kw: dict[str, Any] = {"num_training": 20, "early_stop_threshold": None}
    L.seed_everything(0)
    model = _model(L, lr=0.01, batch_size=16)
    finder = _tuner(L)(_trainer(L, root, max_epochs=10)).lr_find(model, update_attr=False, **kw)
    out["no_update"] = (model.lr, model.hparams.lr, finder.suggestion() is not None)

    model = _model(L, lr=0.01, batch_size=16, hparams=False)
    model.learning_rate = 0.5
    del model.lr
    model.configure_optimizers = lambda: torch.optim.SGD(model.parameters(), lr=model.learning_rate)
    finder = _tuner(L)(_trainer(L, root, max_epochs=10)).lr_find(model, **kw)
    out["learning_rate_updated"] = (model.learning_rate == finder.suggestion(), finder.suggestion() is not None)

    model = _model(L, lr=0.01, batch_size=16)
    model.my_lr = 0.5
    finder = _tuner(L)(_trainer(L, root, max_epochs=10)).lr_find(model, attr_name="my_lr", **kw)
    out["attr_name_updated"] = (model.my_lr == finder.suggestion(), model.lr, finder.suggestion() is not None)

    model = _model(L, lr=0.01, batch_size=16, hparams=True)
    del model.lr
    model.configure_optimizers = lambda: torch.optim.SGD(model.parameters(), lr=model.hparams.lr)
    finder = _tuner(L)(_trainer(L, root, max_epochs=10)).lr_find(model, **kw)
    out["hparams_updated"] = (model.hparams.lr == finder.suggestion(), "lr" in vars(model))
    return out


def _scenario_lr_find_early_stop(L: Any, root: str) -> dict:
    L.seed_everything(0)
    model = _model(L, lr=0.01, batch_size=16)
    trainer = _trainer(L, root, max_epochs=20)
    logs = _logs(L, "LR finder stopped early")
    try:
        finder = _tuner(L)(trainer).lr_find(model, min_lr=1e-3, max_lr=1e3, num_training=60)
    finally:
        _unlog(L, logs)
    return {
        "n": len(finder.results["lr"]),
        "logs": logs.lines,
        "last_loss_over_best": finder.results["loss"][-1] > 4 * min(finder.results["loss"]),
        "global_step": trainer.global_step,
    }


def _scenario_lr_find_errors(L: Any, root: str) -> dict:
    def no_lr_attr() -> None:
        model = _model(L, hparams=False)
        del model.lr
        model.configure_optimizers = lambda: torch.optim.SGD(model.parameters(), lr=0.1)
        _tuner(L)(_trainer(L, root)).lr_find(model, num_training=5)

    def wrong_attr_name() -> None:
        _tuner(L)(_trainer(L, root)).lr_find(_model(L), attr_name="missing_lr", num_training=5)

    def two_optimizers() -> None:
        model = _model(L)
        model.automatic_optimization = False
        model.training_step = lambda batch, batch_idx: None
        model.configure_optimizers = lambda: [torch.optim.SGD(model.parameters(), lr=0.1)] * 2
        _tuner(L)(_trainer(L, root)).lr_find(model, num_training=5)

    def validate_method() -> None:
        _tuner(L)(_trainer(L, root)).lr_find(_model(L), method="validate")

    def already_configured() -> None:
        trainer = _trainer(L, root, callbacks=[L.callbacks.LearningRateFinder()])
        _tuner(L)(trainer).lr_find(_model(L))

    def bad_mode() -> None:
        L.callbacks.LearningRateFinder(mode="cosine")

    return {
        f.__name__: _error(f)
        for f in (no_lr_attr, wrong_attr_name, two_optimizers, validate_method, already_configured, bad_mode)
    }


def _scenario_lr_finder_callback_in_fit(L: Any, root: str) -> dict:
    L.seed_everything(0)
    model = _model(L, lr=0.01)
    finder = L.callbacks.LearningRateFinder(num_training_steps=20, early_stop_threshold=None)
    trainer = _trainer(L, root, max_epochs=1)
    trainer.fit(model)  # the first fit: no callback (reference weights of a plain run)
    plain = _weights(model)
    L.seed_everything(0)
    model = _model(L, lr=0.01)
    trainer = _trainer(L, root, max_epochs=1, callbacks=[finder])
    trainer.fit(model)
    return {
        "n_results": len(finder.optimal_lr.results["lr"]),
        "model.lr_is_suggestion": model.lr == finder.optimal_lr.suggestion(),
        "optimizer_lr_is_suggestion": trainer.optimizers[0].param_groups[0]["lr"] == model.lr,
        "train_batches": len(model.seen),
        "global_step": trainer.global_step,
        "differs_from_plain_run": not _same(plain, model),
    }


def _scenario_suggestion_and_fast_dev_run(L: Any, root: str) -> dict:
    finder = _tuner(L)(_trainer(L, root)).lr_find(_model(L), num_training=11, early_stop_threshold=None)
    too_few = finder.suggestion()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fast = _tuner(L)(_trainer(L, root, fast_dev_run=True)).lr_find(_model(L))
        fast_bs = _tuner(L)(_trainer(L, root, fast_dev_run=True)).scale_batch_size(_model(L))
    return {
        "too_few": too_few,
        "n": len(finder.results["loss"]),
        "fast_dev_run": (fast, fast_bs),
        "warnings": sorted({str(w.message) for w in caught if "Skipping" in str(w.message)}),
    }


def record_all(L: Any, root: str) -> dict:
    sub = lambda name: os.path.join(root, name)  # noqa: E731
    return {
        "power_no_oom": _scenario_batch_size(L, sub("p0"), "power", 0, init_val=2, max_trials=4),
        "power_oom": _scenario_batch_size(L, sub("p1"), "power", 10, init_val=2, max_trials=10),
        "power_oom_first": _scenario_batch_size(L, sub("p2"), "power", 10, init_val=16, max_trials=10),
        "binsearch_oom": _scenario_batch_size(L, sub("b1"), "binsearch", 10, init_val=2, max_trials=10),
        "binsearch_no_margin": _scenario_batch_size(L, sub("b2"), "binsearch", 10, init_val=2, margin=0.0),
        "binsearch_max_trials": _scenario_batch_size(L, sub("b3"), "binsearch", 0, init_val=2, max_trials=3),
        "max_val": _scenario_batch_size(L, sub("b4"), "power", 0, init_val=2, max_val=8),
        "dataset_length": _scenario_batch_size(L, sub("b5"), "power", 0, init_val=16, max_trials=10),
        "datamodule": _scenario_batch_size_datamodule(L, sub("dm")),
        "hparams_only": _scenario_batch_size_hparams_only(L, sub("hp")),
        "batch_size_errors": _scenario_batch_size_errors(L, sub("be")),
        "validate": _scenario_batch_size_validate(L, sub("val")),
        "batch_size_callback": _scenario_batch_size_callback_in_fit(L, sub("bcb")),
        "lr_find": _scenario_lr_find(L, sub("lr")),
        "lr_find_then_fit": _scenario_lr_find_then_fit(L, sub("lrf")),
        "update_attr": _scenario_lr_find_update_attr(L, sub("ua")),
        "early_stop": _scenario_lr_find_early_stop(L, sub("es")),
        "lr_find_errors": _scenario_lr_find_errors(L, sub("le")),
        "lr_callback": _scenario_lr_finder_callback_in_fit(L, sub("lcb")),
        "suggestion": _scenario_suggestion_and_fast_dev_run(L, sub("sg")),
    }
