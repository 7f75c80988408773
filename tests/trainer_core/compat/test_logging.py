"""Compatibility (issue 12, point 2): ``self.log`` and the loggers behave as in Lightning 2.6.

Two kinds of tests:

* ``test_trainer_*``: a scenario ``_scenario_*(L, root)`` runs a real ``Trainer`` under ``trainer_core`` (and,
  unchanged, under ``lightning.pytorch``) and returns plain values: every ``Logger.log_metrics`` call as
  ``(step, {name: value}, "kw" | "pos")``, and the key/value sets of ``logged_metrics`` / ``callback_metrics`` /
  ``progress_bar_metrics``. The expected literals were recorded from real Lightning 2.6.6 (torch 2.14, CPU,
  torchmetrics 1.9). Re-record one with (repository root)::

      python -c "import sys,tempfile,pprint,lightning.pytorch as L; sys.path.insert(0,'.'); \
from tests.trainer_core.compat import test_logging as m; pprint.pprint(m._scenario_keys(L, tempfile.mkdtemp()))"

* ``test_connector_*`` / ``test_results_*``: drive ``trainer_core.trainer.results`` (``ResultCollection`` and
  ``LoggerConnector``) in the order Lightning's loops call its ``_LoggerConnector``, and check that the same
  Lightning-recorded values come out. These check the logging core independently of the loops.

Data everywhere: ``x = 0..5`` in batches of 2 (batch means 0.5, 2.5, 4.5; sums 1, 5, 9; maxima 1, 3, 5), and
``x = 0..3`` (two batches) or ``x = 0..1`` in batches of 1 for evaluation loaders.
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

torchmetrics = pytest.importorskip("torchmetrics")


def _L() -> Any:
    import trainer_core as L

    return L


def _logger_base(L: Any) -> Any:
    if L.__name__.startswith("lightning"):
        from lightning.pytorch.loggers import Logger
    else:
        from trainer_core.loggers.logger import Logger
    return Logger


def _recorder(L: Any) -> Any:
    class Rec(_logger_base(L)):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.calls: list[tuple[Any, dict[str, float], str]] = []

        @property
        def name(self) -> str:
            return "rec"

        @property
        def version(self) -> int:
            return 0

        def log_metrics(self, *args: Any, **kwargs: Any) -> None:
            metrics = kwargs.get("metrics", args[0] if args else None)
            step = kwargs.get("step", args[1] if len(args) > 1 else None)
            values = {k: round(float(v), 4) for k, v in sorted(metrics.items())}
            self.calls.append((step, values, "kw" if kwargs else "pos"))

        def log_hyperparams(self, *args: Any, **kwargs: Any) -> None:
            pass

    return Rec()


def _data(n: int = 6, bs: int = 2) -> DataLoader:
    return DataLoader(TensorDataset(torch.arange(n, dtype=torch.float32).unsqueeze(1)), batch_size=bs)


def _rounded(d: Any) -> dict[str, float]:
    return {k: round(float(v), 4) for k, v in sorted(d.items())}


def _base(L: Any) -> Any:
    class Base(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def training_step(self, batch: Any, batch_idx: int) -> Any:
            (x,) = batch
            return ((x - self.w) ** 2).mean()

        def configure_optimizers(self) -> Any:
            return torch.optim.SGD(self.parameters(), lr=0.0)

    return Base


def _run(L: Any, root: str, model: Any, fn: str = "fit", loaders: Any = None, callbacks: Any = (),
         **kw: Any) -> dict[str, Any]:
    rec = _recorder(L)
    args: dict[str, Any] = dict(
        max_epochs=2, logger=rec, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, num_sanity_val_steps=0, callbacks=list(callbacks), default_root_dir=root,
        accelerator="cpu", devices=1,
    )
    args.update(kw)
    trainer = L.Trainer(**args)
    out = None
    if fn == "fit":
        trainer.fit(model, *(loaders or [_data()]))
    else:
        out = getattr(trainer, fn)(model, loaders, verbose=False)
    result: dict[str, Any] = {
        "calls": rec.calls,
        "logged": _rounded(trainer.logged_metrics),
        "callback": _rounded(trainer.callback_metrics),
        "pbar": _rounded(trainer.progress_bar_metrics),
    }
    if out is not None:
        result["out"] = [_rounded(o) for o in out]
    return result


def _error(fn: Any) -> tuple[str, str]:
    try:
        fn()
    except Exception as e:  # the scenario reports the error it got
        return type(e).__name__, str(e)
    return ("", "no error")


# ---------------------------------------------------------------- trainer scenarios (Lightning literals)


def _scenario_keys(L: Any, root: str) -> dict[str, Any]:
    class M(_base(L)):  # type: ignore[misc]
        def training_step(self, batch: Any, batch_idx: int) -> Any:
            (x,) = batch
            self.log("a", x.mean(), on_step=True, on_epoch=True)
            self.log("b", x.max(), prog_bar=True)
            self.log("c", x.sum(), on_step=False, on_epoch=True)
            self.log("d", x.min(), on_step=True, on_epoch=True, prog_bar=True, logger=False)
            return super().training_step(batch, batch_idx)

    return _run(L, root, M(), log_every_n_steps=2, limit_val_batches=0)


KEYS = {
    "calls": [
        (1, {"a_step": 2.5, "b": 3.0, "epoch": 0.0}, "kw"),
        (2, {"a_epoch": 2.5, "c": 5.0, "epoch": 0.0}, "kw"),
        (3, {"a_step": 0.5, "b": 1.0, "epoch": 1.0}, "kw"),
        (5, {"a_step": 4.5, "b": 5.0, "epoch": 1.0}, "kw"),
        (5, {"a_epoch": 2.5, "c": 5.0, "epoch": 1.0}, "kw"),
    ],
    "logged": {"a_epoch": 2.5, "a_step": 4.5, "b": 5.0, "c": 5.0},
    "callback": {"a": 2.5, "a_epoch": 2.5, "a_step": 4.5, "b": 5.0, "c": 5.0, "d": 2.0, "d_epoch": 2.0, "d_step": 4.0},
    "pbar": {"b": 5.0, "d_epoch": 2.0, "d_step": 4.0},
}


def test_trainer_logged_metrics_key_sets(tmp_path):
    """Lightning 2.6: ``logged_metrics`` holds every ``logger=True`` value whether or not this step was sent
    (``a_step``, ``b`` from the last step with ``log_every_n_steps=2``, the epoch-only ``c``), forked names get
    ``_step``/``_epoch``; ``callback_metrics`` also has the un-suffixed name and ``logger=False`` values;
    ``log_metrics`` is called with keywords, ``epoch`` added, step = batches stepped (epoch end: the last step)."""
    assert _scenario_keys(_L(), str(tmp_path)) == KEYS


def _scenario_torchmetrics(L: Any, root: str) -> dict[str, Any]:
    counts: list[tuple[int, int]] = []

    class M(_base(L)):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.m = torchmetrics.MeanMetric()
            self.s = torchmetrics.SumMetric()
            self.vm = torchmetrics.MeanMetric()

        def training_step(self, batch: Any, batch_idx: int) -> Any:
            (x,) = batch
            self.m(x.squeeze(1))
            self.log("tm_mean", self.m, on_step=True, on_epoch=True)
            self.s.update(x.squeeze(1))
            self.log("tm_sum", self.s, on_step=False, on_epoch=True, prog_bar=True)
            return super().training_step(batch, batch_idx)

        def validation_step(self, batch: Any, batch_idx: int) -> None:
            (x,) = batch
            self.vm(x.squeeze(1) * 10)
            self.log("val_tm", self.vm)

        def on_train_epoch_end(self) -> None:
            counts.append((int(self.m.update_count), int(self.s.update_count)))

    result = _run(L, root, M(), loaders=[_data(), _data(4)], log_every_n_steps=1)
    result["update_counts"] = counts
    return result


TORCHMETRICS = {
    "calls": [
        (0, {"epoch": 0.0, "tm_mean_step": 0.5}, "kw"),
        (1, {"epoch": 0.0, "tm_mean_step": 2.5}, "kw"),
        (2, {"epoch": 0.0, "tm_mean_step": 4.5}, "kw"),
        (2, {"epoch": 0.0, "val_tm": 15.0}, "kw"),
        (2, {"epoch": 0.0, "tm_mean_epoch": 2.5, "tm_sum": 15.0}, "kw"),
        (3, {"epoch": 1.0, "tm_mean_step": 0.5}, "kw"),
        (4, {"epoch": 1.0, "tm_mean_step": 2.5}, "kw"),
        (5, {"epoch": 1.0, "tm_mean_step": 4.5}, "kw"),
        (5, {"epoch": 1.0, "val_tm": 15.0}, "kw"),
        (5, {"epoch": 1.0, "tm_mean_epoch": 2.5, "tm_sum": 15.0}, "kw"),
    ],
    "logged": {"tm_mean_epoch": 2.5, "tm_mean_step": 4.5, "tm_sum": 15.0, "val_tm": 15.0},
    "callback": {"tm_mean": 2.5, "tm_mean_epoch": 2.5, "tm_mean_step": 4.5, "tm_sum": 15.0, "val_tm": 15.0},
    "pbar": {"tm_sum": 15.0},
    "update_counts": [(3, 3), (3, 3)],
}


def test_trainer_torchmetrics_values(tmp_path):
    """Lightning 2.6: a logged ``torchmetrics.Metric`` gives its ``forward`` result as the step value and
    ``compute()`` at epoch end; it is reset after each training epoch and each validation run, so epoch 1 shows
    the same values as epoch 0 (``tm_sum`` 15, not 30) and ``update_count`` is 3 at both epoch ends."""
    assert _scenario_torchmetrics(_L(), str(tmp_path)) == TORCHMETRICS


def _scenario_metric_attribute(L: Any, root: str) -> dict[str, Any]:
    Base = _base(L)

    class NotAnAttribute(Base):  # type: ignore[misc,valid-type]
        def __init__(self) -> None:
            super().__init__()
            self.m = torchmetrics.MeanMetric()

        def training_step(self, batch: Any, batch_idx: int) -> Any:
            self.log("tm", torchmetrics.MeanMetric())
            return super().training_step(batch, batch_idx)

    class NoMetrics(Base):  # type: ignore[misc,valid-type]
        def training_step(self, batch: Any, batch_idx: int) -> Any:
            self.log("tm", torchmetrics.MeanMetric())
            return super().training_step(batch, batch_idx)

    class Explicit(Base):  # type: ignore[misc,valid-type]
        def __init__(self) -> None:
            super().__init__()
            self.m = torchmetrics.MeanMetric()

        def training_step(self, batch: Any, batch_idx: int) -> Any:
            (x,) = batch
            self.m(x.squeeze(1))
            self.log("tm", self.m, metric_attribute="m", on_step=True)
            return super().training_step(batch, batch_idx)

    kw = dict(max_epochs=1, limit_val_batches=0, log_every_n_steps=1)
    return {
        "not_attribute": _error(lambda: _run(L, root, NotAnAttribute(), **kw)),
        "no_metrics": _error(lambda: _run(L, root, NoMetrics(), **kw)),
        "explicit": _run(L, root, Explicit(), **kw),
    }


METRIC_ATTRIBUTE = {
    "not_attribute": (
        "MisconfigurationException",
        "Could not find the `LightningModule` attribute for the `torchmetrics.Metric` logged. You can fix this by "
        "calling `self.log(tm, ..., metric_attribute=name)` where `name` is one of ['m']",
    ),
    "no_metrics": (
        "MisconfigurationException",
        "Could not find the `LightningModule` attribute for the `torchmetrics.Metric` logged. You can fix this by "
        "setting an attribute for the metric in your `LightningModule`.",
    ),
    "explicit": {
        "calls": [(0, {"epoch": 0.0, "tm": 0.5}, "kw"), (1, {"epoch": 0.0, "tm": 2.5}, "kw"),
                  (2, {"epoch": 0.0, "tm": 4.5}, "kw")],
        "logged": {"tm": 4.5},
        "callback": {"tm": 4.5},
        "pbar": {},
    },
}


def test_trainer_metric_attribute(tmp_path):
    """Lightning 2.6: a logged Metric must be an attribute of the module (found through ``named_modules``), else a
    MisconfigurationException names the attributes there are; ``metric_attribute=`` names it explicitly."""
    assert _scenario_metric_attribute(_L(), str(tmp_path)) == METRIC_ATTRIBUTE


def _hooks_module(L: Any) -> tuple[Any, Any]:
    class M(_base(L)):  # type: ignore[misc]
        def on_train_start(self) -> None:
            self.log("start", 5.0)

        def training_step(self, batch: Any, batch_idx: int) -> Any:
            (x,) = batch
            self.log("t", x.mean())
            return super().training_step(batch, batch_idx)

        def validation_step(self, batch: Any, batch_idx: int) -> None:
            (x,) = batch
            self.log("vs", x.mean(), on_step=True)
            self.log("vs2", x.sum(), on_step=True, on_epoch=False)

    class CB(L.Callback):
        def on_train_start(self, trainer: Any, pl_module: Any) -> None:
            pl_module.log("cb_start", 1.0)

        def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
            pl_module.log("cb_batch", float(batch_idx))

        def on_validation_epoch_end(self, trainer: Any, pl_module: Any) -> None:
            pl_module.log("cb_val", 7.0)

        def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
            pl_module.log("cb_epoch", float(trainer.current_epoch))

    return M, CB


def _scenario_hooks(L: Any, root: str, every: int) -> dict[str, Any]:
    M, CB = _hooks_module(L)
    return _run(L, root, M(), callbacks=[CB()], loaders=[_data(), _data(4)], log_every_n_steps=every)


HOOKS_FINAL = {
    "logged": {"cb_batch": 2.0, "cb_epoch": 1.0, "cb_start": 1.0, "cb_val": 7.0, "start": 5.0, "t": 4.5,
               "vs2": 5.0, "vs_epoch": 1.5, "vs_step": 2.5},
    "callback": {"cb_batch": 2.0, "cb_epoch": 1.0, "cb_start": 1.0, "cb_val": 7.0, "start": 5.0, "t": 4.5,
                 "vs": 1.5, "vs_epoch": 1.5},
    "pbar": {},
}
HOOKS_EVERY_1 = {
    "calls": [
        (0, {"cb_batch": 0.0, "epoch": 0.0, "t": 0.5}, "kw"),
        (1, {"cb_batch": 1.0, "epoch": 0.0, "t": 2.5}, "kw"),
        (2, {"cb_batch": 2.0, "epoch": 0.0, "t": 4.5}, "kw"),
        (0, {"vs2": 1.0, "vs_step": 0.5}, "kw"),
        (1, {"vs2": 5.0, "vs_step": 2.5}, "kw"),
        (2, {"cb_val": 7.0, "epoch": 0.0, "vs_epoch": 1.5}, "kw"),
        (2, {"cb_epoch": 0.0, "cb_start": 1.0, "epoch": 0.0, "start": 5.0}, "kw"),
        (3, {"cb_batch": 0.0, "epoch": 1.0, "t": 0.5}, "kw"),
        (4, {"cb_batch": 1.0, "epoch": 1.0, "t": 2.5}, "kw"),
        (5, {"cb_batch": 2.0, "epoch": 1.0, "t": 4.5}, "kw"),
        (2, {"vs2": 1.0, "vs_step": 0.5}, "kw"),
        (3, {"vs2": 5.0, "vs_step": 2.5}, "kw"),
        (5, {"cb_val": 7.0, "epoch": 1.0, "vs_epoch": 1.5}, "kw"),
        (5, {"cb_epoch": 1.0, "epoch": 1.0}, "kw"),
    ],
    **HOOKS_FINAL,
}
HOOKS_EVERY_2 = {
    "calls": [
        (1, {"cb_batch": 1.0, "epoch": 0.0, "t": 2.5}, "kw"),
        (0, {"vs2": 1.0, "vs_step": 0.5}, "kw"),
        (1, {"vs2": 5.0, "vs_step": 2.5}, "kw"),
        (2, {"cb_val": 7.0, "epoch": 0.0, "vs_epoch": 1.5}, "kw"),
        (2, {"cb_epoch": 0.0, "cb_start": 1.0, "epoch": 0.0, "start": 5.0}, "kw"),
        (3, {"cb_batch": 0.0, "epoch": 1.0, "t": 0.5}, "kw"),
        (5, {"cb_batch": 2.0, "epoch": 1.0, "t": 4.5}, "kw"),
        (2, {"vs2": 1.0, "vs_step": 0.5}, "kw"),
        (3, {"vs2": 5.0, "vs_step": 2.5}, "kw"),
        (5, {"cb_val": 7.0, "epoch": 1.0, "vs_epoch": 1.5}, "kw"),
        (5, {"cb_epoch": 1.0, "epoch": 1.0}, "kw"),
    ],
    **HOOKS_FINAL,
}


@pytest.mark.parametrize(("every", "expected"), [(1, HOOKS_EVERY_1), (2, HOOKS_EVERY_2)])
def test_trainer_hook_and_callback_logging_steps(tmp_path, every, expected):
    """Lightning 2.6: values logged in ``on_train_start`` (module and callback) reach the loggers with epoch 0's
    epoch-end metrics (step 2, the last step) and only then; ``validation_step(on_step=True)`` values are sent
    after every val batch (whatever ``log_every_n_steps``) at the val loop's own count of seen batches, which goes
    on across the validation runs of a fit (0, 1 then 2, 3) with no ``epoch`` key; callback values logged in
    ``on_train_batch_end`` / ``on_validation_epoch_end`` / ``on_train_epoch_end`` travel with the module's."""
    assert _scenario_hooks(_L(), str(tmp_path), every) == expected


def _scenario_validate_on_step(L: Any, root: str) -> dict[str, Any]:
    M, CB = _hooks_module(L)
    return _run(L, root, M(), fn="validate", callbacks=[CB()], loaders=_data(4))


VALIDATE_ON_STEP = {
    "calls": [
        (0, {"vs2": 1.0, "vs_step": 0.5}, "kw"),
        (1, {"vs2": 5.0, "vs_step": 2.5}, "kw"),
        (0, {"cb_val": 7.0, "epoch": 0.0, "vs_epoch": 1.5}, "kw"),
    ],
    "logged": {"cb_val": 7.0, "vs2": 5.0, "vs_epoch": 1.5, "vs_step": 2.5},
    "callback": {"cb_val": 7.0, "vs": 1.5, "vs_epoch": 1.5},
    "pbar": {},
    "out": [{"cb_val": 7.0, "vs_epoch": 1.5}],
}


def test_trainer_validate_on_step(tmp_path):
    """Lightning 2.6: ``trainer.validate`` sends step values at steps 0, 1 and the epoch values at step 0 (nothing
    stepped); ``callback_metrics`` has no ``_step`` values outside training; the returned dict holds epoch values."""
    assert _scenario_validate_on_step(_L(), str(tmp_path)) == VALIDATE_ON_STEP


def _multi_module(L: Any) -> Any:
    class M(_base(L)):  # type: ignore[misc]
        def validation_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
            (x,) = batch
            self.log("v", x.mean())
            self.log("vstep", x.mean(), on_step=True, on_epoch=False)

        test_step = validation_step

        def on_validation_epoch_end(self) -> None:
            self.log("ve", 1.0)

    return M


def _scenario_multi_val(L: Any, root: str) -> dict[str, Any]:
    return _run(L, root, _multi_module(L)(), loaders=[_data(), [_data(4), _data(2, 1)]], max_epochs=1,
                log_every_n_steps=1)


def _scenario_multi_test(L: Any, root: str) -> dict[str, Any]:
    return _run(L, root, _multi_module(L)(), fn="test", loaders=[_data(4), _data(2, 1)])


MULTI_STEP_CALLS = [
    (0, {"vstep/dataloader_idx_0": 0.5}, "kw"),
    (1, {"vstep/dataloader_idx_0": 2.5}, "kw"),
    (0, {"vstep/dataloader_idx_1": 0.0}, "kw"),
    (1, {"vstep/dataloader_idx_1": 1.0}, "kw"),
]
MULTI_VAL = {
    "calls": [*MULTI_STEP_CALLS,
              (2, {"epoch": 0.0, "v/dataloader_idx_0": 1.5, "v/dataloader_idx_1": 0.5, "ve": 1.0}, "kw")],
    "logged": {"v/dataloader_idx_0": 1.5, "v/dataloader_idx_1": 0.5, "ve": 1.0, "vstep/dataloader_idx_0": 2.5,
               "vstep/dataloader_idx_1": 1.0},
    "callback": {"v/dataloader_idx_0": 1.5, "v/dataloader_idx_1": 0.5, "ve": 1.0},
    "pbar": {},
}
MULTI_TEST = {
    "calls": [*MULTI_STEP_CALLS, (0, {"epoch": 0.0, "v/dataloader_idx_0": 1.5, "v/dataloader_idx_1": 0.5}, "kw")],
    "logged": {"v/dataloader_idx_0": 1.5, "v/dataloader_idx_1": 0.5, "vstep/dataloader_idx_0": 2.5,
               "vstep/dataloader_idx_1": 1.0},
    "callback": {"v/dataloader_idx_0": 1.5, "v/dataloader_idx_1": 0.5},
    "pbar": {},
    "out": [{"v/dataloader_idx_0": 1.5}, {"v/dataloader_idx_1": 0.5}],
}


def test_trainer_multiple_val_dataloaders(tmp_path):
    """Lightning 2.6: with two val loaders each key gets ``/dataloader_idx_N``; step values are sent per loader
    with only that loader's keys, each loader counting its own steps from 0; the epoch values of both loaders and
    of ``on_validation_epoch_end`` (no suffix) are sent together at the training step."""
    assert _scenario_multi_val(_L(), str(tmp_path)) == MULTI_VAL


def test_trainer_multiple_test_dataloaders(tmp_path):
    """Lightning 2.6: ``trainer.test`` with two loaders returns one dict per loader holding that loader's keys."""
    assert _scenario_multi_test(_L(), str(tmp_path)) == MULTI_TEST


def _scenario_add_dataloader_idx_false(L: Any, root: str) -> dict[str, Any]:
    Base = _base(L)

    class Distinct(Base):  # type: ignore[misc,valid-type]
        def test_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
            (x,) = batch
            self.log(f"t_{dataloader_idx}", x.mean(), add_dataloader_idx=False)

    class Shared(Base):  # type: ignore[misc,valid-type]
        def test_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
            (x,) = batch
            self.log("shared", x.mean() + dataloader_idx, add_dataloader_idx=False)

    loaders = [_data(4), _data(2, 1)]
    return {
        "distinct": _run(L, root, Distinct(), fn="test", loaders=loaders),
        "shared": _error(lambda: _run(L, root, Shared(), fn="test", loaders=[_data(4), _data(2, 1)])),
    }


ADD_DATALOADER_IDX_FALSE = {
    "distinct": {
        "calls": [(0, {"epoch": 0.0, "t_0": 1.5, "t_1": 0.5}, "kw")],
        "logged": {"t_0": 1.5, "t_1": 0.5},
        "callback": {"t_0": 1.5, "t_1": 0.5},
        "pbar": {},
        "out": [{"t_0": 1.5}, {"t_1": 0.5}],
    },
    "shared": ("MisconfigurationException",
               "You called `self.log(shared, ...)` twice in `test_step` with different arguments. This is not allowed"),
}


def test_trainer_add_dataloader_idx_false(tmp_path):
    """Lightning 2.6: ``add_dataloader_idx=False`` keeps names as given and ``trainer.test`` still returns each
    loader's own keys (``[{'t_0': ..}, {'t_1': ..}]``); the same name from two loaders is an error."""
    assert _scenario_add_dataloader_idx_false(_L(), str(tmp_path)) == ADD_DATALOADER_IDX_FALSE


def _scenario_dataloader_idx_argument(L: Any, root: str) -> dict[str, Any]:
    Base = _base(L)

    class NoArgTest(Base):  # type: ignore[misc,valid-type]
        def test_step(self, batch: Any, batch_idx: int) -> None:
            pass

    class NoArgVal(Base):  # type: ignore[misc,valid-type]
        def validation_step(self, batch: Any, batch_idx: int) -> None:
            pass

    class Required(Base):  # type: ignore[misc,valid-type]
        def test_step(self, batch: Any, batch_idx: int, dataloader_idx: int) -> None:
            self.log("x", 1.0)

    class BadName(Base):  # type: ignore[misc,valid-type]
        def validation_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
            self.log("y/dataloader_idx_0", 1.0)

    two = lambda: [_data(4), _data(2, 1)]  # noqa: E731
    return {
        "no_arg_test": _error(lambda: _run(L, root, NoArgTest(), fn="test", loaders=two())),
        "no_arg_val": _error(lambda: _run(L, root, NoArgVal(), fn="validate", loaders=two())),
        "required_single": _error(lambda: _run(L, root, Required(), fn="test", loaders=_data(4))),
        "bad_name": _error(lambda: _run(L, root, BadName(), fn="validate", loaders=two())),
    }


DATALOADER_IDX_ARGUMENT = {
    "no_arg_test": ("RuntimeError", "You provided multiple `test_dataloader`, but no `dataloader_idx` argument in "
                    "`NoArgTest.test_step()`. Try adding `dataloader_idx=0` to its signature."),
    "no_arg_val": ("RuntimeError", "You provided multiple `val_dataloader`, but no `dataloader_idx` argument in "
                   "`NoArgVal.validation_step()`. Try adding `dataloader_idx=0` to its signature."),
    "required_single": ("RuntimeError", "You provided only a single `test_dataloader`, but have included "
                        "`dataloader_idx` in `Required.test_step()`. Either remove the argument or give it a default "
                        "value i.e. `dataloader_idx=0`."),
    "bad_name": ("MisconfigurationException", "You called `self.log` with the key `y/dataloader_idx_0` but it should "
                 "not contain information about `dataloader_idx` when `add_dataloader_idx=True`"),
}


def test_trainer_dataloader_idx_argument_errors(tmp_path):
    """Lightning 2.6: several eval loaders and a step without ``dataloader_idx`` is a RuntimeError naming the hook;
    one loader and a ``dataloader_idx`` without default is one too; a logged name with ``/dataloader_idx_`` while
    ``add_dataloader_idx=True`` is a MisconfigurationException."""
    assert _scenario_dataloader_idx_argument(_L(), str(tmp_path)) == DATALOADER_IDX_ARGUMENT


def _scenario_no_batch_idx(L: Any, root: str) -> dict[str, Any]:
    class M(_base(L)):  # type: ignore[misc]
        def training_step(self, batch: Any) -> Any:  # type: ignore[override]
            (x,) = batch
            self.log("t", x.mean())
            return ((x - self.w) ** 2).mean()

        def validation_step(self, batch: Any) -> None:
            (x,) = batch
            self.log("v", x.mean())

        def test_step(self, batch: Any) -> None:
            (x,) = batch
            self.log("te", x.mean())

        def predict_step(self, batch: Any) -> Any:
            return batch[0] * 2

    fit = _run(L, root, M(), loaders=[_data(), _data(4)], max_epochs=1, log_every_n_steps=1)
    test = _run(L, root, M(), fn="test", loaders=_data(4))
    trainer = L.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False, default_root_dir=root,
                        accelerator="cpu", devices=1)
    predictions = [p.squeeze(1).tolist() for p in trainer.predict(M(), _data(4))]
    return {"fit": fit, "test": test, "predict": predictions}


NO_BATCH_IDX = {
    "fit": {
        "calls": [(0, {"epoch": 0.0, "t": 0.5}, "kw"), (1, {"epoch": 0.0, "t": 2.5}, "kw"),
                  (2, {"epoch": 0.0, "t": 4.5}, "kw"), (2, {"epoch": 0.0, "v": 1.5}, "kw")],
        "logged": {"t": 4.5, "v": 1.5},
        "callback": {"t": 4.5, "v": 1.5},
        "pbar": {},
    },
    "test": {"calls": [(0, {"epoch": 0.0, "te": 1.5}, "kw")], "logged": {"te": 1.5}, "callback": {"te": 1.5},
             "pbar": {}, "out": [{"te": 1.5}]},
    "predict": [[0.0, 2.0], [4.0, 6.0]],
}


def test_trainer_step_methods_without_batch_idx(tmp_path):
    """Lightning 2.6: ``training_step(self, batch)``, ``validation_step(self, batch)``, ``test_step(self, batch)``
    and ``predict_step(self, batch)`` are called without ``batch_idx``."""
    assert _scenario_no_batch_idx(_L(), str(tmp_path)) == NO_BATCH_IDX



def _scenario_val_check_interval(L: Any, root: str) -> dict[str, Any]:
    class M(_base(L)):  # type: ignore[misc]
        def on_train_epoch_start(self) -> None:
            self.log("es", 3.0)

        def training_step(self, batch: Any, batch_idx: int) -> Any:
            (x,) = batch
            self.log("t", x.mean(), on_step=True, on_epoch=True, prog_bar=True)
            return super().training_step(batch, batch_idx)

        def validation_step(self, batch: Any, batch_idx: int) -> None:
            (x,) = batch
            self.log("v", x.mean(), prog_bar=True)

        def on_validation_batch_end(self, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
            self.log("vb", float(batch_idx))

    return _run(L, root, M(), loaders=[_data(8), _data(4)], val_check_interval=2, log_every_n_steps=1)


def _scenario_accumulation(L: Any, root: str) -> dict[str, Any]:
    class M(_base(L)):  # type: ignore[misc]
        def training_step(self, batch: Any, batch_idx: int) -> Any:
            (x,) = batch
            self.log("t", x.mean(), on_step=True, on_epoch=True, reduce_fx="max")
            self.log("s", x.sum(), reduce_fx="sum", on_epoch=True)
            return super().training_step(batch, batch_idx)

    return _run(L, root, M(), loaders=[_data(10)], accumulate_grad_batches=2, log_every_n_steps=1,
                limit_val_batches=0)


def _scenario_callbacks_read_eval_metrics(L: Any, root: str) -> dict[str, Any]:
    seen: list[tuple[str, list[str], list[str]]] = []

    class CB(L.Callback):  # type: ignore[misc,name-defined]
        def on_sanity_check_end(self, trainer: Any, pl_module: Any) -> None:
            seen.append(("sanity_end", sorted(trainer.callback_metrics), sorted(trainer.logged_metrics)))

        def on_train_start(self, trainer: Any, pl_module: Any) -> None:
            seen.append(("train_start", sorted(trainer.callback_metrics), sorted(trainer.logged_metrics)))

        def on_validation_epoch_end(self, trainer: Any, pl_module: Any) -> None:
            seen.append(("val_epoch_end", sorted(trainer.callback_metrics), sorted(trainer.logged_metrics)))

        def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
            seen.append(("val_end", sorted(trainer.callback_metrics), sorted(trainer.logged_metrics)))

    result = _run(L, root, _multi_module(L)(), loaders=[_data(), [_data(4), _data(2, 1)]], max_epochs=1,
                  callbacks=[CB()], num_sanity_val_steps=2)
    result["seen"] = seen
    return result


def _scenario_metric_collection(L: Any, root: str) -> dict[str, Any]:
    class M(_base(L)):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.mc = torchmetrics.MetricCollection({"mean": torchmetrics.MeanMetric(), "mx": torchmetrics.MaxMetric()})
            self.vm = torch.nn.ModuleList([torchmetrics.MeanMetric(), torchmetrics.MeanMetric()])

        def training_step(self, batch: Any, batch_idx: int) -> Any:
            (x,) = batch
            self.mc(x.squeeze(1))
            self.log_dict(self.mc, on_step=True, on_epoch=True)
            return super().training_step(batch, batch_idx)

        def validation_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
            (x,) = batch
            self.vm[dataloader_idx](x.squeeze(1))
            self.log("vm", self.vm[dataloader_idx])

    return _run(L, root, M(), loaders=[_data(), [_data(4), _data(2, 1)]], max_epochs=1, log_every_n_steps=2)


def _scenario_results_table(L: Any, root: str) -> str:
    import contextlib
    import io

    trainer = L.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False, default_root_dir=root,
                        accelerator="cpu", devices=1)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        trainer.validate(_multi_module(L)(), [_data(4), _data(2, 1)])
    return out.getvalue()


VAL_CHECK_INTERVAL = {'callback': {'es': 3.0, 't': 3.5, 't_epoch': 3.5, 't_step': 6.5, 'v': 1.5, 'vb': 0.5},
 'calls': [(0, {'epoch': 0.0, 't_step': 0.5}, 'kw'), (1, {'epoch': 0.0, 't_step': 2.5}, 'kw'),
           (1, {'epoch': 0.0, 'v': 1.5, 'vb': 0.5}, 'kw'), (2, {'epoch': 0.0, 't_step': 4.5}, 'kw'),
           (3, {'epoch': 0.0, 't_step': 6.5}, 'kw'), (3, {'epoch': 0.0, 'v': 1.5, 'vb': 0.5}, 'kw'),
           (3, {'epoch': 0.0, 'es': 3.0, 't_epoch': 3.5}, 'kw'), (4, {'epoch': 1.0, 't_step': 0.5}, 'kw'),
           (5, {'epoch': 1.0, 't_step': 2.5}, 'kw'), (5, {'epoch': 1.0, 'v': 1.5, 'vb': 0.5}, 'kw'),
           (6, {'epoch': 1.0, 't_step': 4.5}, 'kw'), (7, {'epoch': 1.0, 't_step': 6.5}, 'kw'),
           (7, {'epoch': 1.0, 'v': 1.5, 'vb': 0.5}, 'kw'), (7, {'epoch': 1.0, 'es': 3.0, 't_epoch': 3.5}, 'kw')],
 'logged': {'es': 3.0, 't_epoch': 3.5, 't_step': 6.5, 'v': 1.5, 'vb': 0.5},
 'pbar': {'t_epoch': 3.5, 't_step': 6.5, 'v': 1.5}}


def test_trainer_val_check_interval_logging(tmp_path):
    """Lightning 2.6: with ``val_check_interval=2`` validation runs inside the epoch; its epoch values go out at the
    training step it ran at, ``on_validation_batch_end`` values travel with the module's (here averaged over the
    run), ``on_train_epoch_start`` values go out with the epoch-end call, and the training step values logged after
    validation still reach the loggers and ``callback_metrics``."""
    assert _scenario_val_check_interval(_L(), str(tmp_path)) == VAL_CHECK_INTERVAL


ACCUMULATION = {'callback': {'s': 45.0, 's_epoch': 45.0, 's_step': 17.0, 't': 8.5, 't_epoch': 8.5, 't_step': 8.5},
 'calls': [(0, {'epoch': 0.0, 's_step': 5.0, 't_step': 2.5}, 'kw'),
           (1, {'epoch': 0.0, 's_step': 13.0, 't_step': 6.5}, 'kw'),
           (2, {'epoch': 0.0, 's_step': 17.0, 't_step': 8.5}, 'kw'),
           (2, {'epoch': 0.0, 's_epoch': 45.0, 't_epoch': 8.5}, 'kw'),
           (3, {'epoch': 1.0, 's_step': 5.0, 't_step': 2.5}, 'kw'),
           (4, {'epoch': 1.0, 's_step': 13.0, 't_step': 6.5}, 'kw'),
           (5, {'epoch': 1.0, 's_step': 17.0, 't_step': 8.5}, 'kw'),
           (5, {'epoch': 1.0, 's_epoch': 45.0, 't_epoch': 8.5}, 'kw')],
 'logged': {'s_epoch': 45.0, 's_step': 17.0, 't_epoch': 8.5, 't_step': 8.5},
 'pbar': {}}


def test_trainer_logging_with_gradient_accumulation(tmp_path):
    """Lightning 2.6: with ``accumulate_grad_batches=2`` step values are sent only at optimizer steps (and the last
    batch), at the count of optimizer steps; ``reduce_fx="max"``/``"sum"`` epoch values cover every batch."""
    assert _scenario_accumulation(_L(), str(tmp_path)) == ACCUMULATION


CALLBACKS_READ_EVAL_METRICS = {'callback': {'v/dataloader_idx_0': 1.5, 'v/dataloader_idx_1': 0.5, 've': 1.0},
 'calls': [(0, {'vstep/dataloader_idx_0': 0.5}, 'kw'), (1, {'vstep/dataloader_idx_0': 2.5}, 'kw'),
           (0, {'vstep/dataloader_idx_1': 0.0}, 'kw'), (1, {'vstep/dataloader_idx_1': 1.0}, 'kw'),
           (2, {'epoch': 0.0, 'v/dataloader_idx_0': 1.5, 'v/dataloader_idx_1': 0.5, 've': 1.0}, 'kw')],
 'logged': {'v/dataloader_idx_0': 1.5,
            'v/dataloader_idx_1': 0.5,
            've': 1.0,
            'vstep/dataloader_idx_0': 2.5,
            'vstep/dataloader_idx_1': 1.0},
 'pbar': {},
 'seen': [('val_epoch_end', [], ['vstep/dataloader_idx_0', 'vstep/dataloader_idx_1']),
          ('val_end', ['ve'], ['ve', 'vstep/dataloader_idx_0', 'vstep/dataloader_idx_1']),
          ('sanity_end', ['ve'], ['ve', 'vstep/dataloader_idx_0', 'vstep/dataloader_idx_1']), ('train_start', [], []),
          ('val_epoch_end', ['v/dataloader_idx_0', 'v/dataloader_idx_1'],
           ['v/dataloader_idx_0', 'v/dataloader_idx_1', 'vstep/dataloader_idx_0', 'vstep/dataloader_idx_1']),
          ('val_end', ['v/dataloader_idx_0', 'v/dataloader_idx_1', 've'],
           ['v/dataloader_idx_0', 'v/dataloader_idx_1', 've', 'vstep/dataloader_idx_0', 'vstep/dataloader_idx_1'])]}


def test_trainer_callbacks_read_eval_metrics(tmp_path):
    """Lightning 2.6: what ``callback_metrics`` / ``logged_metrics`` hold in ``on_validation_epoch_end`` (the previous
    loaders' epoch values, not yet the hook's own), ``on_validation_end`` (everything) and after the sanity check
    (kept for ``on_sanity_check_end``, emptied before training starts); nothing is sent while sanity checking."""
    assert _scenario_callbacks_read_eval_metrics(_L(), str(tmp_path)) == CALLBACKS_READ_EVAL_METRICS


METRIC_COLLECTION = {'callback': {'mean': 2.5,
              'mean_epoch': 2.5,
              'mean_step': 4.5,
              'mx': 5.0,
              'mx_epoch': 5.0,
              'mx_step': 5.0,
              'vm/dataloader_idx_0': 1.5,
              'vm/dataloader_idx_1': 0.5},
 'calls': [(1, {'epoch': 0.0, 'mean_step': 2.5, 'mx_step': 3.0}, 'kw'),
           (2, {'epoch': 0.0, 'vm/dataloader_idx_0': 1.5, 'vm/dataloader_idx_1': 0.5}, 'kw'),
           (2, {'epoch': 0.0, 'mean_epoch': 2.5, 'mx_epoch': 5.0}, 'kw')],
 'logged': {'mean_epoch': 2.5,
            'mean_step': 4.5,
            'mx_epoch': 5.0,
            'mx_step': 5.0,
            'vm/dataloader_idx_0': 1.5,
            'vm/dataloader_idx_1': 0.5},
 'pbar': {}}


def test_trainer_metric_collection_and_per_loader_metrics(tmp_path):
    """Lightning 2.6: ``log_dict(MetricCollection)`` logs each metric under its key (no attribute lookup needed);
    a Metric per validation loader gets the loader suffix and is computed and reset per run."""
    assert _scenario_metric_collection(_L(), str(tmp_path)) == METRIC_COLLECTION


def test_trainer_results_table_strips_dataloader_suffix(tmp_path, monkeypatch):
    """Lightning 2.6's printed results table (without ``rich``): one column per loader, rows named without the
    ``/dataloader_idx_N`` suffix, so a key logged from two loaders is one row."""
    monkeypatch.setenv("COLUMNS", "120")
    table = _scenario_results_table(_L(), str(tmp_path))
    rows = [line.split() for line in table.splitlines() if line.strip() and set(line.strip()) != {"─"}]
    assert rows == [["Validate", "metric", "DataLoader", "0", "DataLoader", "1"], ["v", "1.5", "0.5"],
                    ["ve", "1.0", "1.0"]]


# ---------------------------------------------------------------- the logging core, driven as Lightning's loops do


class _Sink:
    """A logger whose ``log_metrics`` only takes keywords: a positional call fails."""

    def __init__(self) -> None:
        self.calls: list[tuple[int | None, dict[str, float]]] = []
        self.saves = 0

    def log_metrics(self, *, metrics: dict[str, float], step: int | None = None) -> None:
        self.calls.append((step, {k: round(float(v), 4) for k, v in sorted(metrics.items())}))

    def save(self) -> None:
        self.saves += 1


class _Loop:
    """Calls ``LoggerConnector`` in the order of Lightning 2.6's training epoch, fit and evaluation loops."""

    def __init__(self, with_logger: bool = True) -> None:
        from trainer_core.trainer.results import LoggerConnector, ResultCollection

        self.sink = _Sink()
        self.epoch = 0
        self.stepped = 0  # Lightning's fit_loop.epoch_loop._batches_that_stepped
        self.conn = LoggerConnector(lambda: [self.sink] if with_logger else [], lambda: self.epoch,
                                    lambda: self.stepped)
        self.train = ResultCollection(training=True)
        self.val = ResultCollection(training=False)
        self.seen: dict[int, int] = {}

    def log(self, fx: str, name: str, value: Any, **kw: Any) -> None:
        self.conn.results.fx = fx  # type: ignore[union-attr]
        value = torch.tensor(float(value)) if isinstance(value, (int, float)) else value
        self.conn.log(name, value, **kw)

    def fit_start(self, on_train_start: Any = None) -> None:
        self.conn.results = self.train
        if on_train_start is not None:
            on_train_start(self)

    def train_epoch(self, batches: list[Any], step: Any, every: int = 1, on_epoch_end: Any = None) -> None:
        conn = self.conn
        for i, batch in enumerate(batches):
            conn.results = self.train
            conn.on_batch_start(batch)
            step(self, batch, i)
            conn.on_batch_end()
            if (self.stepped + 1) % every == 0:
                conn.update_train_step_metrics()
            self.stepped += 1
        conn.results = self.train
        conn.epoch_end_reached()
        if on_epoch_end is not None:
            on_epoch_end(self)
        conn.on_epoch_end()
        self.stepped -= 1
        conn.update_train_epoch_metrics()
        self.stepped += 1
        self.epoch += 1

    def eval_run(self, loaders: list[list[Any]], step: Any, on_epoch_end: Any = None,
                 sanity: bool = False) -> list[dict[str, float]]:
        conn = self.conn
        saved_first = conn.first_loop_iter
        conn.results = self.val
        multi = len(loaders) > 1
        previous = 0
        for dl_idx, loader in enumerate(loaders):
            for i, batch in enumerate(loader):
                if previous != dl_idx:
                    conn.store_dataloader_outputs(sanity)
                previous = dl_idx
                conn.on_batch_start(batch, dl_idx if multi else None)
                step(self, batch, i, dl_idx)
                conn.on_batch_end()
                if not sanity:
                    conn.update_eval_step_metrics(self.seen.get(dl_idx, 0))
                    self.seen[dl_idx] = self.seen.get(dl_idx, 0) + 1
        conn.store_dataloader_outputs(sanity)
        conn.epoch_end_reached()
        conn.evaluation_epoch_end()
        if on_epoch_end is not None:
            on_epoch_end(self)
        conn.on_epoch_end()
        outputs = conn.eval_run_outputs(sanity)
        conn.reset_results()
        conn.results = self.train
        conn.first_loop_iter = saved_first
        return [_rounded(o) for o in outputs]


def _batches() -> list[torch.Tensor]:
    return [torch.tensor([[0.0], [1.0]]), torch.tensor([[2.0], [3.0]]), torch.tensor([[4.0], [5.0]])]


def test_connector_key_sets_and_steps():
    """Lightning 2.6 (same values as ``test_trainer_logged_metrics_key_sets``): with ``log_every_n_steps=2`` the
    loggers get steps 1, 2 (epoch end), 3, 5, 5 (epoch end); ``logged_metrics`` holds ``a_step``, ``a_epoch``, ``b``,
    ``c``; ``callback_metrics`` adds ``a`` and the ``logger=False`` ``d`` values; the progress bar has ``b`` and
    ``d_step``/``d_epoch``; every call is ``log_metrics(metrics=..., step=...)`` followed by ``save()``."""

    def step(loop: _Loop, x: torch.Tensor, i: int) -> None:
        loop.log("training_step", "a", x.mean(), on_step=True, on_epoch=True)
        loop.log("training_step", "b", x.max(), prog_bar=True)
        loop.log("training_step", "c", x.sum(), on_step=False, on_epoch=True)
        loop.log("training_step", "d", x.min(), on_step=True, on_epoch=True, prog_bar=True, logger=False)

    loop = _Loop()
    loop.fit_start()
    for _ in range(2):
        loop.train_epoch(_batches(), step, every=2)
    assert loop.sink.calls == [(step, metrics) for step, metrics, _ in KEYS["calls"]]
    assert loop.sink.saves == len(KEYS["calls"])
    assert _rounded(loop.conn.logged_metrics) == KEYS["logged"]
    assert _rounded(loop.conn.callback_metrics) == KEYS["callback"]
    assert _rounded(loop.conn.progress_bar_metrics) == KEYS["pbar"]


def test_connector_logged_metrics_without_loggers():
    """Lightning 2.6: ``logged_metrics`` is filled at every batch and epoch end even with no logger configured
    (only sending is skipped)."""

    def step(loop: _Loop, x: torch.Tensor, i: int) -> None:
        loop.log("training_step", "a", x.mean(), on_step=True, on_epoch=True)

    loop = _Loop(with_logger=False)
    loop.fit_start()
    loop.train_epoch(_batches(), step)
    assert loop.sink.calls == []
    assert _rounded(loop.conn.logged_metrics) == {"a_epoch": 2.5, "a_step": 4.5}


def test_connector_torchmetrics_step_epoch_reset():
    """Lightning 2.6 (values of ``test_trainer_torchmetrics_values``): a Metric's ``forward`` result is its step
    value, ``compute()`` its epoch value, and the collection's reset at the end of the training epoch and of the
    validation run calls the Metric's ``reset()``; a Metric only ``update()``d has no step value."""
    m, s, vm = torchmetrics.MeanMetric(), torchmetrics.SumMetric(), torchmetrics.MeanMetric()
    counts: list[tuple[int, int]] = []

    def step(loop: _Loop, x: torch.Tensor, i: int) -> None:
        m(x.squeeze(1))
        loop.log("training_step", "tm_mean", m, on_step=True, on_epoch=True)
        s.update(x.squeeze(1))
        loop.log("training_step", "tm_sum", s, on_step=False, on_epoch=True, prog_bar=True)

    def val_step(loop: _Loop, x: torch.Tensor, i: int, dl: int) -> None:
        vm(x.squeeze(1) * 10)
        loop.log("validation_step", "val_tm", vm)

    def epoch_end(loop: _Loop) -> None:
        counts.append((int(m.update_count), int(s.update_count)))

    loop = _Loop()
    loop.fit_start()
    val_batches = _batches()[:2]
    for _ in range(2):
        # Lightning validates at the end of the training epoch, after the last step was sent
        conn = loop.conn
        for i, batch in enumerate(_batches()):
            conn.results = loop.train
            conn.on_batch_start(batch)
            step(loop, batch, i)
            conn.on_batch_end()
            conn.update_train_step_metrics()
            if i == 2:
                loop.eval_run([val_batches], val_step)
            loop.stepped += 1
        conn.results = loop.train
        conn.epoch_end_reached()
        epoch_end(loop)
        conn.on_epoch_end()
        loop.stepped -= 1
        conn.update_train_epoch_metrics()
        loop.stepped += 1
        loop.epoch += 1
    assert loop.sink.calls == [(st, metrics) for st, metrics, _ in TORCHMETRICS["calls"]]
    assert counts == TORCHMETRICS["update_counts"]
    assert _rounded(loop.conn.logged_metrics) == TORCHMETRICS["logged"]
    assert _rounded(loop.conn.callback_metrics) == TORCHMETRICS["callback"]
    assert _rounded(loop.conn.progress_bar_metrics) == TORCHMETRICS["pbar"]
    assert m.update_count == 0 and s.update_count == 0  # reset after the last epoch too


def test_connector_on_train_start_hooks_and_val_on_step():
    """Lightning 2.6 (values of ``test_trainer_hook_and_callback_logging_steps`` with ``log_every_n_steps=1``):
    ``on_train_start`` values wait in the training collection for epoch 0's epoch-end call; validation step values
    go out at the val loop's seen-batch count (continuing across runs) without ``epoch``; ``callback_metrics`` keeps
    no validation ``_step`` values."""

    def start(loop: _Loop) -> None:
        loop.log("on_train_start", "start", 5.0)
        loop.log("on_train_start", "cb_start", 1.0)

    def step(loop: _Loop, x: torch.Tensor, i: int) -> None:
        loop.log("training_step", "t", x.mean())
        loop.log("on_train_batch_end", "cb_batch", float(i))

    def val_step(loop: _Loop, x: torch.Tensor, i: int, dl: int) -> None:
        loop.log("validation_step", "vs", x.mean(), on_step=True)
        loop.log("validation_step", "vs2", x.sum(), on_step=True, on_epoch=False)

    def val_end(loop: _Loop) -> None:
        loop.log("on_validation_epoch_end", "cb_val", 7.0)

    def train_end(loop: _Loop) -> None:
        loop.log("on_train_epoch_end", "cb_epoch", float(loop.epoch))

    loop = _Loop()
    loop.fit_start(start)
    for _ in range(2):
        conn = loop.conn
        for i, batch in enumerate(_batches()):
            conn.results = loop.train
            conn.on_batch_start(batch)
            step(loop, batch, i)
            conn.on_batch_end()
            conn.update_train_step_metrics()
            if i == 2:
                loop.eval_run([_batches()[:2]], val_step, val_end)
            loop.stepped += 1
        conn.results = loop.train
        conn.epoch_end_reached()
        train_end(loop)
        conn.on_epoch_end()
        loop.stepped -= 1
        conn.update_train_epoch_metrics()
        loop.stepped += 1
        loop.epoch += 1
    assert loop.sink.calls == [(st, metrics) for st, metrics, _ in HOOKS_EVERY_1["calls"]]
    assert _rounded(loop.conn.logged_metrics) == HOOKS_FINAL["logged"]
    assert _rounded(loop.conn.callback_metrics) == HOOKS_FINAL["callback"]


def test_connector_multiple_dataloaders():
    """Lightning 2.6 (values of ``test_trainer_multiple_test_dataloaders``): per-loader suffixes, per-loader step
    calls holding only that loader's keys, one returned dict per loader, one epoch call with the union."""

    def test_step(loop: _Loop, x: torch.Tensor, i: int, dl: int) -> None:
        loop.log("test_step", "v", x.mean())
        loop.log("test_step", "vstep", x.mean(), on_step=True, on_epoch=False)

    loop = _Loop()
    loaders = [_batches()[:2], [torch.tensor([[0.0]]), torch.tensor([[1.0]])]]
    out = loop.eval_run(loaders, test_step)
    assert out == MULTI_TEST["out"]
    assert loop.sink.calls == [(st, metrics) for st, metrics, _ in MULTI_TEST["calls"]]
    assert _rounded(loop.conn.logged_metrics) == MULTI_TEST["logged"]
    assert _rounded(loop.conn.callback_metrics) == MULTI_TEST["callback"]


def test_connector_add_dataloader_idx_false():
    """Lightning 2.6 (values of ``test_trainer_add_dataloader_idx_false``): distinct names without suffix land in
    their own loader's returned dict; the same name from two loaders raises Lightning's message."""
    from trainer_core.utilities.exceptions import MisconfigurationException

    def distinct(loop: _Loop, x: torch.Tensor, i: int, dl: int) -> None:
        loop.log("test_step", f"t_{dl}", x.mean(), add_dataloader_idx=False)

    def shared(loop: _Loop, x: torch.Tensor, i: int, dl: int) -> None:
        loop.log("test_step", "shared", x.mean() + dl, add_dataloader_idx=False)

    loaders = [_batches()[:2], [torch.tensor([[0.0]]), torch.tensor([[1.0]])]]
    loop = _Loop()
    assert loop.eval_run(loaders, distinct) == ADD_DATALOADER_IDX_FALSE["distinct"]["out"]
    assert loop.sink.calls == [(st, m) for st, m, _ in ADD_DATALOADER_IDX_FALSE["distinct"]["calls"]]
    with pytest.raises(MisconfigurationException) as err:
        _Loop().eval_run(loaders, shared)
    assert str(err.value) == ADD_DATALOADER_IDX_FALSE["shared"][1]


def test_connector_sanity_check_sends_nothing():
    """Lightning 2.6: during sanity checking nothing is sent to the loggers and no epoch values are kept."""

    def val_step(loop: _Loop, x: torch.Tensor, i: int, dl: int) -> None:
        loop.log("validation_step", "v", x.mean(), on_step=True)

    loop = _Loop()
    assert loop.eval_run([_batches()[:1]], val_step, sanity=True) == [{}]
    assert loop.sink.calls == []


def test_results_metric_attribute_lookup():
    """Lightning 2.6's messages when a logged Metric is not an attribute of the module (see
    ``METRIC_ATTRIBUTE``); the attribute path is found through ``named_modules``."""
    from trainer_core.trainer.results import find_metric_attribute
    from trainer_core.utilities.exceptions import MisconfigurationException

    module = torch.nn.Module()
    module.m = torchmetrics.MeanMetric()
    attribute, cache = find_metric_attribute(module, module.m, "tm", None)
    assert (attribute, cache) == ("m", {id(module.m): "m"})
    with pytest.raises(MisconfigurationException) as err:
        find_metric_attribute(module, torchmetrics.MeanMetric(), "tm", cache)
    assert (type(err.value).__name__, str(err.value)) == METRIC_ATTRIBUTE["not_attribute"]
    with pytest.raises(MisconfigurationException) as err:
        find_metric_attribute(torch.nn.Linear(1, 1), module.m, "tm", None)
    assert (type(err.value).__name__, str(err.value)) == METRIC_ATTRIBUTE["no_metrics"]


@pytest.mark.parametrize(
    ("fx", "kwargs", "message"),
    [
        ("on_train_epoch_end", {"on_step": True},
         "You can't `self.log(on_step=True)` inside `on_train_epoch_end`, must be one of (False,)."),
        ("on_train_epoch_start", {"on_step": True},
         "You can't `self.log(on_step=True)` inside `on_train_epoch_start`, must be one of (False,)."),
        ("lr_scheduler_step", {},
         "You can't `self.log()` inside `lr_scheduler_step`. HINT: You can still log directly to the logger by "
         "using `self.logger.experiment`."),
        ("training_step", {"on_step": False, "on_epoch": False},
         "`self.log(on_step=False, on_epoch=False)` is not useful."),
        ("training_step", {"reduce_fx": "median"},
         "Only `self.log(..., reduce_fx={min,max,mean,sum})` are supported. If you need a custom reduction, please "
         "log a `torchmetrics.Metric` instance instead. Found: median"),
    ],
)
def test_results_log_argument_errors(fx, kwargs, message):
    """Lightning 2.6's ``_FxValidator`` table and ``_Metadata`` checks: the hooks where logging is allowed, the
    allowed ``on_step``/``on_epoch`` and reductions, with Lightning's MisconfigurationException messages."""
    from trainer_core.trainer.results import ResultCollection
    from trainer_core.utilities.exceptions import MisconfigurationException

    results = ResultCollection(training=True)
    results.fx = fx
    with pytest.raises(MisconfigurationException) as err:
        results.log("x", torch.tensor(1.0), **kwargs)
    assert str(err.value) == message


def test_results_log_unknown_hook():
    """Lightning 2.6: logging from a hook its table does not know is a RuntimeError."""
    from trainer_core.trainer.results import ResultCollection

    results = ResultCollection(training=True)
    results.fx = "my_hook"
    with pytest.raises(RuntimeError, match="Logging inside `my_hook` is not implemented"):
        results.log("x", torch.tensor(1.0))


def test_results_metric_compute_must_be_tensor():
    """Lightning 2.6: an epoch value from ``compute()`` that is not a tensor is a ValueError naming the metric."""
    from trainer_core.trainer.results import ResultCollection

    class DictMetric(torchmetrics.MeanMetric):
        def compute(self) -> Any:
            return {"x": super().compute()}

    metric = DictMetric()
    metric.update(torch.tensor(1.0))
    results = ResultCollection(training=True)
    results.fx = "training_step"
    results.log("dm", metric, on_step=False, on_epoch=True)
    with pytest.raises(ValueError, match="The `.compute\\(\\)` return of the metric logged as 'dm' must be a tensor"):
        results.metrics(on_step=False)


@pytest.mark.parametrize("name", ["csv", "tensorboard"])
def test_loggers_accept_keyword_log_metrics(tmp_path, name):
    """Lightning 2.6 calls ``logger.log_metrics(metrics=..., step=...)`` with keywords; the bundled loggers take it."""
    from trainer_core.loggers import CSVLogger, TensorBoardLogger

    if name == "tensorboard":
        pytest.importorskip("tensorboard")
        logger: Any = TensorBoardLogger(str(tmp_path))
    else:
        logger = CSVLogger(str(tmp_path))
    logger.log_metrics(metrics={"a": 1.0, "epoch": 0}, step=3)
    logger.save()
    if name == "csv":
        with open(os.path.join(logger.log_dir, "metrics.csv")) as f:
            assert f.read().splitlines() == ["epoch,step,a", "0,3,1.0"]


def test_results_do_not_import_torchmetrics():
    """trainer_core imports only torch, tqdm and PyYAML: loading the logging core does not import torchmetrics."""
    code = (
        "import sys, trainer_core, trainer_core.trainer.results, trainer_core.loggers; "
        "print('torchmetrics' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
