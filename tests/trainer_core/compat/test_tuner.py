"""Compatibility (issue 12, point 4): the Tuner as Lightning 2.6 (``tuner/tuning.py``, ``tuner/lr_finder.py``,
``tuner/batch_size_scaling.py``, ``callbacks/lr_finder.py``, ``callbacks/batch_size_finder.py``).

Each scenario ``_scenario_*(L, root)`` runs under both ``trainer_core`` and ``lightning.pytorch`` and returns plain
values; the tests compare trainer_core's with literals recorded from real Lightning 2.6.6 (torch 2.14, CPU) by the
same functions. Out-of-memory errors are simulated on the CPU: the model raises ``torch.OutOfMemoryError`` with
CUDA's message when a training batch is larger than its ``oom_above``. Re-record with (repository root)::

    python -c "import sys,tempfile,pprint,lightning.pytorch as L; sys.path.insert(0,'.'); \
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
        default_root_dir=root,
        accelerator="cpu",
        devices=1,
        enable_progress_bar=False,
        enable_model_summary=False,
        **kw,
    )


def _data(n: int = 64) -> TensorDataset:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, 3, generator=g)
    return TensorDataset(x, x @ torch.tensor([[1.0], [-2.0], [0.5]]) + 0.1 * torch.randn(n, 1, generator=g))


def _model(
    L: Any, *, lr: float = 0.01, batch_size: int | None = 2, hparams: bool = True, oom_above: int = 0
) -> Any:
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
    except Exception as exc:  # the type name and message are the result
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
    found = _tuner(L)(trainer).scale_batch_size(
        model, datamodule=dm, init_val=4, max_trials=3, steps_per_trial=1
    )
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
        _tuner(L)(_trainer(L, root)).scale_batch_size(
            _model(L), train_dataloaders=DataLoader(_data(), batch_size=2)
        )

    def dataloaders_with_fit() -> None:
        _tuner(L)(_trainer(L, root)).scale_batch_size(
            _model(L), dataloaders=DataLoader(_data(), batch_size=2)
        )

    def bad_method() -> None:
        _tuner(L)(_trainer(L, root)).scale_batch_size(_model(L), method="tune")

    def already_configured() -> None:
        trainer = _trainer(L, root, callbacks=[L.callbacks.BatchSizeFinder()])
        _tuner(L)(trainer).scale_batch_size(_model(L))

    def bad_mode() -> None:
        L.callbacks.BatchSizeFinder(mode="linear")

    return {
        f.__name__: _error(f)
        for f in (
            missing,
            other_name,
            direct_loader,
            dataloaders_with_fit,
            bad_method,
            already_configured,
            bad_mode,
        )
    }


def _scenario_batch_size_validate(L: Any, root: str) -> dict:
    model = _model(L)
    trainer = _trainer(L, root)
    found = _tuner(L)(trainer).scale_batch_size(model, method="validate", max_trials=3, steps_per_trial=1)
    return {
        "found": found,
        "val_batches": model.val_seen,
        "train_batches": model.seen,
        "status": str(trainer.state.status.value),
    }


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
    finder = _tuner(L)(trainer).lr_find(
        model, min_lr=1e-3, max_lr=0.5, num_training=25, early_stop_threshold=None
    )
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
    out["learning_rate_updated"] = (
        model.learning_rate == finder.suggestion(),
        finder.suggestion() is not None,
    )

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


def _scenario_loaders_and_linear(L: Any, root: str) -> dict:
    L.seed_everything(0)
    model = _model(L, batch_size=16)
    train, val = DataLoader(_data(), batch_size=16), DataLoader(_data(16), batch_size=4)
    kw: dict[str, Any] = {"num_training": 20, "early_stop_threshold": None}
    finder = _tuner(L)(_trainer(L, root, max_epochs=10)).lr_find(model, train, val, **kw)
    out: dict[str, Any] = {
        "direct": (len(finder.results["lr"]), round(finder.suggestion(), 6), len(model.val_seen))
    }
    L.seed_everything(0)
    model = _model(L, batch_size=16)
    finder = _tuner(L)(_trainer(L, root, max_epochs=10)).lr_find(model, mode="linear", **kw)
    out["linear"] = ([round(x, 5) for x in finder.results["lr"][:4]], round(finder.suggestion(), 6))
    model = _model(L)
    found = _tuner(L)(_trainer(L, root)).scale_batch_size(
        model, val_dataloaders=val, max_trials=3, steps_per_trial=2
    )
    out["batch_size_with_val_loader"] = (found, model.seen, model.val_seen)
    return out


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
        "loaders_and_linear": _scenario_loaders_and_linear(L, sub("ll")),
    }


# ------------------------------------------------------------------------------------------------------- tests
@pytest.mark.parametrize(
    ("case", "mode", "oom_above", "kw"),
    [
        ("power_no_oom", "power", 0, {"init_val": 2, "max_trials": 4}),
        ("power_oom", "power", 10, {"init_val": 2, "max_trials": 10}),
        ("power_oom_first", "power", 10, {"init_val": 16, "max_trials": 10}),
        ("binsearch_oom", "binsearch", 10, {"init_val": 2, "max_trials": 10}),
        ("binsearch_no_margin", "binsearch", 10, {"init_val": 2, "margin": 0.0}),
        ("binsearch_max_trials", "binsearch", 0, {"init_val": 2, "max_trials": 3}),
        ("max_val", "power", 0, {"init_val": 2, "max_val": 8}),
        ("dataset_length", "power", 0, {"init_val": 16, "max_trials": 10}),
    ],
)
def test_scale_batch_size(tmp_path, case, mode, oom_above, kw):
    """Lightning 2.6 (tuner/batch_size_scaling.py): one trial of ``steps_per_trial`` steps per size. "power" doubles
    until an OOM (``torch.OutOfMemoryError`` / CUDA's message) and then halves once; "binsearch" doubles, then bisects
    between the last success and the failure and takes ``margin`` (5%) off. ``max_trials``, ``max_val`` and the
    dataset's length end the search; the result is written to ``model.batch_size`` and ``model.hparams.batch_size``.
    As Lightning, the first trial runs with the loader built before ``init_val`` is set (so ``[2, 32]`` for
    ``init_val=16``). Weights, ``global_step``, ``current_epoch`` are restored, the temporary checkpoint deleted, and
    a user callback sees only setup, its checkpoint save/restore and teardown."""
    expected = dict(LIGHTNING_BATCH_SIZE[case])
    found = expected["found"]
    expected.update(LIGHTNING_BATCH_SIZE_COMMON, **{"model.batch_size": found, "hparams.batch_size": found})
    assert _scenario_batch_size(_L(), str(tmp_path), mode, oom_above, **kw) == expected


def test_scale_batch_size_datamodule(tmp_path):
    """Lightning 2.6 (utilities/parsing.py lightning_setattr): the batch size is found on the datamodule."""
    assert _scenario_batch_size_datamodule(_L(), str(tmp_path)) == LIGHTNING["datamodule"]


def test_scale_batch_size_hparams_only(tmp_path):
    """Lightning 2.6: a batch size only in ``model.hparams`` is updated there (no ``model.batch_size`` is created,
    and no "mutually exclusive" warning)."""
    assert _scenario_batch_size_hparams_only(_L(), str(tmp_path)) == LIGHTNING["hparams_only"]


def test_scale_batch_size_errors(tmp_path):
    """Lightning 2.6 (callbacks/batch_size_finder.py setup, tuner/tuning.py checks): a missing attribute, loaders
    passed to fit, ``dataloaders`` with method fit, an unknown method or mode, and a second BatchSizeFinder raise
    Lightning's errors."""
    assert _scenario_batch_size_errors(_L(), str(tmp_path)) == LIGHTNING["batch_size_errors"]


def test_scale_batch_size_validate(tmp_path):
    """Lightning 2.6 (BatchSizeFinder.on_validation_start): ``method="validate"`` tries validation batches only."""
    assert _scenario_batch_size_validate(_L(), str(tmp_path)) == LIGHTNING["validate"]


def test_batch_size_finder_callback_in_fit(tmp_path):
    """Lightning 2.6: as a Trainer callback, BatchSizeFinder searches at fit start, then the fit trains a full epoch
    with the batch size found (8 here: 16 runs out of memory)."""
    assert _scenario_batch_size_callback_in_fit(_L(), str(tmp_path)) == LIGHTNING["batch_size_callback"]


def test_lr_find(tmp_path):
    """Lightning 2.6 (tuner/lr_finder.py): ``num_training`` lrs growing exponentially from ``min_lr`` to ``max_lr``,
    the smoothed losses (beta 0.98), the suggestion at the steepest descent set on ``model.lr`` and
    ``model.hparams.lr``; weights, global_step, current_epoch, callbacks and loggers as before, the run 'finished'."""
    got = _scenario_lr_find(_L(), str(tmp_path))
    expected = dict(LIGHTNING["lr_find"])
    assert got.pop("loss") == pytest.approx(expected.pop("loss"), abs=2e-5)
    assert got == expected


def test_lr_find_then_fit(tmp_path):
    """Lightning 2.6: a fit after the Tuner starts from step 0 with the suggested lr in the optimizer."""
    assert _scenario_lr_find_then_fit(_L(), str(tmp_path)) == LIGHTNING["lr_find_then_fit"]


def test_lr_find_update_attr(tmp_path):
    """Lightning 2.6 (_determine_lr_attr_name, lightning_setattr): ``update_attr=False`` leaves the lr alone;
    ``learning_rate``, a custom ``attr_name`` and an hparams-only ``lr`` are updated."""
    assert _scenario_lr_find_update_attr(_L(), str(tmp_path)) == LIGHTNING["update_attr"]


def test_lr_find_early_stop_on_diverging_loss(tmp_path):
    """Lightning 2.6 (_LRCallback): the search stops once the smoothed loss exceeds 4x the best, logging
    'LR finder stopped early after N steps due to diverging loss.'; the results hold those N points."""
    assert _scenario_lr_find_early_stop(_L(), str(tmp_path)) == LIGHTNING["early_stop"]


def test_lr_find_errors(tmp_path):
    """Lightning 2.6: no lr attribute / a wrong ``attr_name`` (AttributeError), two optimizers, a method other than
    fit, a second LearningRateFinder, an unknown mode raise Lightning's errors."""
    assert _scenario_lr_find_errors(_L(), str(tmp_path)) == LIGHTNING["lr_find_errors"]


def test_learning_rate_finder_callback_in_fit(tmp_path):
    """Lightning 2.6: as a Trainer callback, LearningRateFinder searches at fit start, then the fit trains its epoch
    from the restored weights with the suggested lr."""
    assert _scenario_lr_finder_callback_in_fit(_L(), str(tmp_path)) == LIGHTNING["lr_callback"]


def test_suggestion_too_few_points_and_fast_dev_run(tmp_path):
    """Lightning 2.6: ``suggestion()`` is None with fewer than 2 points after skipping 10 + 1; with ``fast_dev_run``
    both searches are skipped with a warning and return None."""
    assert _scenario_suggestion_and_fast_dev_run(_L(), str(tmp_path)) == LIGHTNING["suggestion"]


def test_loaders_passed_to_the_tuner_and_linear_mode(tmp_path):
    """Lightning 2.6: lr_find trains on loaders passed to it (and validates on the val loader passed); "linear" mode
    grows the lr linearly (the first step keeps ``min_lr``, then ``r = (step + 1) / num_training``); the batch size
    search accepts a val loader passed directly (validation does not run within a 2-step trial)."""
    assert _scenario_loaders_and_linear(_L(), str(tmp_path)) == LIGHTNING["loaders_and_linear"]


def test_plot_without_matplotlib_raises(tmp_path, monkeypatch):
    """Lightning 2.6 (_LRFinder.plot): matplotlib is optional and imported by ``plot()`` only."""
    from trainer_core.tuner.lr_finder import _LRFinder
    from trainer_core.utilities.exceptions import MisconfigurationException

    finder = _LRFinder("exponential", 1e-3, 1.0, 3)
    finder.results = {"lr": [1e-3, 1e-2, 1e-1], "loss": [1.0, 0.5, 0.7]}
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    loaded = {m for m in sys.modules if m.split(".")[0] == "matplotlib" and sys.modules[m] is not None}
    with pytest.raises(MisconfigurationException, match="you must have Matplotlib installed"):
        finder.plot()
    # plot() is the only place that imports it, and it got no further (another library may have loaded
    # parts of matplotlib before this test: those stay as they were)
    assert {m for m in sys.modules if m.split(".")[0] == "matplotlib" and sys.modules[m] is not None} == loaded


def test_plot_with_matplotlib():
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    from trainer_core.tuner.lr_finder import _LRFinder

    finder = _LRFinder("exponential", 1e-3, 1.0, 14)
    finder.results = {
        "lr": [10 ** (-3 + i / 5) for i in range(14)],
        "loss": [1.0 - 0.05 * i for i in range(14)],
    }
    fig = finder.plot(suggest=True)
    assert fig.axes[0].get_xscale() == "log"


# ---------------------------------------------------------------------------------------------------------------
# Literals recorded from Lightning 2.6.6 with record_all(lightning.pytorch, tmpdir) (see the module docstring);
# the batch size cases share LIGHTNING_BATCH_SIZE_COMMON (the restored state, the user callback's calls, warnings).
# fmt: off
LIGHTNING_BATCH_SIZE_COMMON = {'ckpts': [],
 'current_epoch': 0,
 'global_step': 0,
 'recorder': ['setup(fit)', 'state_dict', 'on_save_checkpoint', 'on_load_checkpoint', "load_state_dict({'n': 1})",
              'teardown(fit)'],
 'warnings': ['Field `model.batch_size` and `model.hparams.batch_size` are mutually exclusive! `model.batch_size` '
              'will be used as the initial batch size for scaling. If this is not the intended behavior, please '
              'remove either one.'],
 'weights_restored': True}
LIGHTNING_BATCH_SIZE = {'binsearch_max_trials': {'found': 7,
                          'logs': ['Batch size 2 succeeded, trying batch size 4',
                                   'Batch size 4 succeeded, trying batch size 8',
                                   'Applying margin of 5.0%, reducing batch size from 8 to 7',
                                   'Finished batch size finder, will continue with full run using batch size 7'],
                          'train_batches': [2, 4, 8]},
 'binsearch_no_margin': {'found': 10,
                         'logs': ['Batch size 2 succeeded, trying batch size 4',
                                  'Batch size 4 succeeded, trying batch size 8',
                                  'Batch size 8 succeeded, trying batch size 16',
                                  'Batch size 16 failed, trying batch size 12',
                                  'Batch size 12 failed, trying batch size 10',
                                  'Batch size 10 succeeded, trying batch size 11',
                                  'Batch size 11 failed, trying batch size 10',
                                  'Finished batch size finder, will continue with full run using batch size 10'],
                         'train_batches': [2, 4, 8, 16, 12, 10, 11]},
 'binsearch_oom': {'found': 9,
                   'logs': ['Batch size 2 succeeded, trying batch size 4',
                            'Batch size 4 succeeded, trying batch size 8',
                            'Batch size 8 succeeded, trying batch size 16',
                            'Batch size 16 failed, trying batch size 12',
                            'Batch size 12 failed, trying batch size 10',
                            'Batch size 10 succeeded, trying batch size 11',
                            'Batch size 11 failed, trying batch size 10',
                            'Applying margin of 5.0%, reducing batch size from 10 to 9',
                            'Finished batch size finder, will continue with full run using batch size 9'],
                   'train_batches': [2, 4, 8, 16, 12, 10, 11]},
 'dataset_length': {'found': 64,
                    'logs': ['Batch size 16 succeeded, trying batch size 32',
                             'Batch size 32 succeeded, trying batch size 64',
                             'The batch size 64 is greater or equal than the length of your dataset: 64.',
                             'Finished batch size finder, will continue with full run using batch size 64'],
                    'train_batches': [2, 32, 64]},
 'max_val': {'found': 8,
             'logs': ['Batch size 2 succeeded, trying batch size 4', 'Batch size 4 succeeded, trying batch size 8',
                      'Reached the maximum batch size limit of 8. Stopping search.',
                      'Finished batch size finder, will continue with full run using batch size 8'],
             'train_batches': [2, 4]},
 'power_no_oom': {'found': 16,
                  'logs': ['Batch size 2 succeeded, trying batch size 4',
                           'Batch size 4 succeeded, trying batch size 8',
                           'Batch size 8 succeeded, trying batch size 16',
                           'Finished batch size finder, will continue with full run using batch size 16'],
                  'train_batches': [2, 4, 8, 16]},
 'power_oom': {'found': 8,
               'logs': ['Batch size 2 succeeded, trying batch size 4',
                        'Batch size 4 succeeded, trying batch size 8',
                        'Batch size 8 succeeded, trying batch size 16', 'Batch size 16 failed, trying batch size 8',
                        'Finished batch size finder, will continue with full run using batch size 8'],
               'train_batches': [2, 4, 8, 16]},
 'power_oom_first': {'found': 16,
                     'logs': ['Batch size 16 succeeded, trying batch size 32',
                              'Batch size 32 failed, trying batch size 16',
                              'Finished batch size finder, will continue with full run using batch size 16'],
                     'train_batches': [2, 32]}}
LIGHTNING = {'batch_size_callback': {'batches': [2, 4, 8, 16, 8, 8, 8, 8, 8, 8, 8, 8],
                         'callbacks': ['BatchSizeFinder'],
                         'global_step': 8,
                         'optimal': 8},
 'batch_size_errors': {'already_configured': ('ValueError',
                                              'Trainer is already configured with a `BatchSizeFinder` '
                                              'callback.Please remove it if you want to use the Tuner.'),
                       'bad_method': ('ValueError',
                                      "method 'tune' is invalid. Should be one of ('fit', 'validate', 'test', "
                                      "'predict')."),
                       'bad_mode': ('ValueError', "`mode` should be either of ('power', 'binsearch')"),
                       'dataloaders_with_fit': ('MisconfigurationException',
                                                "In tuner with method='fit', `dataloaders` argument should be "
                                                'None, please consider setting `train_dataloaders` and '
                                                '`val_dataloaders` instead.'),
                       'direct_loader': ('MisconfigurationException',
                                         'The Batch size finder cannot be used with dataloaders passed directly to '
                                         '`.fit()`. Please disable the feature or incorporate the dataloader into '
                                         'your LightningModule or LightningDataModule.'),
                       'missing': ('MisconfigurationException',
                                   'Field batch_size not found in `model`, `datamodule`, nor their `hparams` '
                                   'attributes.'),
                       'other_name': ('MisconfigurationException',
                                      'Field bs not found in `model`, `datamodule`, nor their `hparams` '
                                      'attributes.')},
 'datamodule': {'dm.batch_size': 16, 'found': 16, 'has_attr': False},
 'early_stop': {'global_step': 0,
                'last_loss_over_best': True,
                'logs': ['LR finder stopped early after 36 steps due to diverging loss.'],
                'n': 36},
 'hparams_only': {'found': 16, 'has_attr': False, 'hparams.batch_size': 16, 'warnings': []},
 'loaders_and_linear': {'batch_size_with_val_loader': (8, [2, 2, 4, 4, 8, 8], []),
                        'direct': (20, 0.001585, 20),
                        'linear': ([0.0, 0.1, 0.15, 0.2], 0.55)},
 'lr_callback': {'differs_from_plain_run': True,
                 'global_step': 32,
                 'model.lr_is_suggestion': True,
                 'n_results': 20,
                 'optimizer_lr_is_suggestion': True,
                 'train_batches': 52},
 'lr_find': {'callbacks_same': [True],
             'ckpts': [],
             'current_epoch': 0,
             'global_step': 0,
             'hparams.lr': 0.02532004,
             'loggers_same': [True],
             'loss': [0.54726, 2.42179, 3.47279, 3.79447, 3.38723, 3.12, 2.73247, 4.21006, 3.95649, 4.04672,
                      3.74376, 3.97595, 3.68452, 3.88315, 3.6251, 3.69146, 3.80264, 3.62066, 3.4478, 3.25244, 3.709,
                      3.66207, 3.67948, 3.50918, 3.34039],
             'lr': [0.001, 0.00164406, 0.00210803, 0.00270293, 0.00346572, 0.00444378, 0.00569786, 0.00730584,
                    0.00936762, 0.01201124, 0.01540092, 0.0197472, 0.02532004, 0.03246558, 0.04162766, 0.05337536,
                    0.06843836, 0.08775228, 0.11251676, 0.14426999, 0.18498427, 0.23718849, 0.3041252, 0.38995205,
                    0.5],
             'model.lr': 0.02532004,
             'recorder': ['setup(fit)', 'state_dict', 'on_save_checkpoint', 'on_load_checkpoint',
                          "load_state_dict({'n': 1})", 'teardown(fit)'],
             'stage': None,
             'status': 'finished',
             'suggestion': 0.02532004,
             'weights_restored': True},
 'lr_find_errors': {'already_configured': ('ValueError',
                                           'Trainer is already configured with a `LearningRateFinder` '
                                           'callback.Please remove it if you want to use the Tuner.'),
                    'bad_mode': ('ValueError', "`mode` should be either of ('linear', 'exponential')"),
                    'no_lr_attr': ('AttributeError',
                                   'When using the learning rate finder, either `model` or `model.hparams` should '
                                   "have one of these fields: ('lr', 'learning_rate'). If your model has a "
                                   'different name for the learning rate, set it with `.lr_find(attr_name=...)`.'),
                    'two_optimizers': ('MisconfigurationException',
                                       '`model.configure_optimizers()` returned 2, but learning rate finder only '
                                       'works with single optimizer'),
                    'validate_method': ('MisconfigurationException',
                                        "method='fit' is the only valid configuration to run lr finder."),
                    'wrong_attr_name': ('AttributeError',
                                        'The attribute name for the learning rate was set to missing_lr, but could '
                                        'not find this as a field in `model` or `model.hparams`.')},
 'lr_find_then_fit': {'global_step': 32,
                      'optimizer_lr_is_model_lr': True,
                      'suggestion_is_lr': True,
                      'train_batches': 52},
 'suggestion': {'fast_dev_run': (None, None),
                'n': 11,
                'too_few': None,
                'warnings': ['Skipping batch size scaler since `fast_dev_run` is enabled.',
                             'Skipping learning rate finder since `fast_dev_run` is enabled.']},
 'update_attr': {'attr_name_updated': (True, 0.01, True),
                 'hparams_updated': (True, False),
                 'learning_rate_updated': (True, True),
                 'no_update': (0.01, 0.01, True)},
 'validate': {'found': 8, 'status': 'finished', 'train_batches': [], 'val_batches': [2, 4, 8]}}
# fmt: on
