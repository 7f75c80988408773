"""Compatibility (issue 12, point 5): ``trainer_core.utilities`` and the MLflow / W&B loggers.

Expected values were recorded by running the same code under ``lightning`` 2.6.6; each test's docstring says
which Lightning behaviour it checks.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import sys
import warnings
from functools import partial
from typing import Any
from unittest.mock import Mock

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import trainer_core as L
from trainer_core.utilities import (
    AttributeDict,
    CombinedLoader,
    grad_norm,
    is_overridden,
    rank_zero_info,
    rank_zero_only,
    rank_zero_warn,
)
from trainer_core.utilities.exceptions import MisconfigurationException
from trainer_core.utilities.model_summary import LayerSummary, ModelSummary, summarize
from trainer_core.utilities.rank_zero import LightningDeprecationWarning, rank_zero_deprecation


def test_import_paths() -> None:
    """Lightning's user-facing import paths exist: ``utilities``, ``utilities.rank_zero``,
    ``utilities.model_summary``, ``utilities.exceptions``, ``utilities.combined_loader``."""
    from trainer_core.utilities.combined_loader import CombinedLoader as CL
    from trainer_core.utilities.rank_zero import rank_zero_only as rzo

    assert CL is CombinedLoader and rzo is rank_zero_only
    assert issubclass(MisconfigurationException, ValueError)
    assert AttributeDict(a=1).a == 1


# ---------------------------------------------------------------- rank zero


def test_rank_zero_only() -> None:
    """Lightning: ``@rank_zero_only`` runs the function on global rank 0 and returns ``default`` (None) on the
    others; ``rank_zero_only.rank`` holds the rank."""
    calls: list[int] = []

    @rank_zero_only
    def f(x: int) -> int:
        calls.append(x)
        return x * 2

    assert rank_zero_only.rank == 0
    assert f(3) == 6
    old = rank_zero_only.rank
    try:
        rank_zero_only.rank = 1
        assert f(4) is None
        assert rank_zero_only(lambda: 1, default=7)() == 7
    finally:
        rank_zero_only.rank = old
    assert calls == [3]


def test_rank_zero_warn_info_deprecation(caplog: pytest.LogCaptureFixture) -> None:
    """Lightning: ``rank_zero_warn`` warns (UserWarning unless ``category``), ``rank_zero_info`` logs at INFO,
    ``rank_zero_deprecation`` warns with a DeprecationWarning subclass (LightningDeprecationWarning)."""
    with pytest.warns(UserWarning, match="careful"):
        rank_zero_warn("careful")
    with pytest.warns(RuntimeWarning, match="runtime"):
        rank_zero_warn("runtime", category=RuntimeWarning)
    with pytest.warns(LightningDeprecationWarning, match="old"):
        rank_zero_deprecation("old")
    assert issubclass(LightningDeprecationWarning, DeprecationWarning)
    with caplog.at_level(logging.INFO):
        rank_zero_info("hello %s", "there")
    assert "hello there" in caplog.text


# ---------------------------------------------------------------- grad_norm, is_overridden


def test_grad_norm() -> None:
    """Lightning: ``grad_norm(module, 2)`` maps ``grad_2.0_norm/<param>`` to each gradient's norm and
    ``grad_2.0_norm_total`` to the norm over all; parameters without a gradient are left out; a non-positive
    ``norm_type`` raises ValueError."""
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(3, 2), nn.Linear(2, 1))
    m[0].bias.requires_grad_(False)
    m(torch.randn(4, 3)).sum().backward()
    norms = grad_norm(m, 2)
    assert list(norms) == ["grad_2.0_norm/0.weight", "grad_2.0_norm/1.weight", "grad_2.0_norm/1.bias", "grad_2.0_norm_total"]
    grads = [m[0].weight.grad, m[1].weight.grad, m[1].bias.grad]
    torch.testing.assert_close(norms["grad_2.0_norm/0.weight"], grads[0].norm(2))
    torch.testing.assert_close(norms["grad_2.0_norm_total"], torch.cat([g.flatten() for g in grads]).norm(2))
    assert "grad_inf_norm_total" in grad_norm(m, "inf")
    assert list(grad_norm(m, 1, group_separator="_"))[0] == "grad_1.0_norm_0.weight"
    with pytest.raises(ValueError, match="`norm_type` must be a positive number"):
        grad_norm(m, 0)
    assert grad_norm(nn.Linear(1, 1), 2) == {}


def test_is_overridden() -> None:
    """Lightning: ``is_overridden(name, instance)`` compares with LightningModule / LightningDataModule /
    Callback (or ``parent``); methods assigned on the instance, ``partial`` and ``Mock(wraps=...)`` count;
    a bare ``Mock`` attribute does not; an object of no Lightning type needs ``parent``."""

    class Model(L.LightningModule):
        def training_step(self, *args: Any, **kwargs: Any) -> Any:
            return None

    model = Model()
    assert is_overridden("training_step", model)
    assert not is_overridden("validation_step", model)
    model.validation_step = lambda *a: None  # type: ignore[method-assign]
    assert is_overridden("validation_step", model)
    model.test_step = partial(lambda self, *a: None, model)  # type: ignore[method-assign]
    assert is_overridden("test_step", model)
    model.predict_step = Mock(wraps=lambda *a: None)  # type: ignore[method-assign]
    assert is_overridden("predict_step", model)
    model.on_fit_start = Mock()  # type: ignore[method-assign]
    assert not is_overridden("on_fit_start", model)

    class CB(L.Callback):
        def on_fit_start(self, trainer: Any, pl_module: Any) -> None: ...

    assert is_overridden("on_fit_start", CB()) and not is_overridden("on_fit_end", CB())
    assert not is_overridden("train_dataloader", L.LightningDataModule())
    assert not is_overridden("x", None)
    with pytest.raises(ValueError, match="Expected a parent"):
        is_overridden("forward", nn.Linear(1, 1))
    assert is_overridden("forward", nn.Linear(1, 1), parent=nn.Module)


# ---------------------------------------------------------------- CombinedLoader


def _iterables() -> dict[str, DataLoader[Any]]:
    return {"a": DataLoader(range(6), batch_size=4), "b": DataLoader(range(15), batch_size=5)}  # type: ignore[arg-type]


def _run(mode: str) -> tuple[int, list[Any]]:
    cl = CombinedLoader(_iterables(), mode)  # type: ignore[arg-type]
    iter(cl)
    out = []
    for batch, batch_idx, dataloader_idx in cl:
        if isinstance(batch, dict):
            batch = {k: None if v is None else v.tolist() for k, v in batch.items()}
        else:
            batch = batch.tolist()
        out.append((batch, batch_idx, dataloader_idx))
    return len(cl), out


def test_combined_loader_modes() -> None:
    """Lightning (its docstring example): the four modes yield ``(batch, batch_idx, dataloader_idx)`` with
    these batches and lengths."""
    a0, a1 = [0, 1, 2, 3], [4, 5]
    b0, b1, b2 = [0, 1, 2, 3, 4], [5, 6, 7, 8, 9], [10, 11, 12, 13, 14]
    assert _run("max_size_cycle") == (3, [({"a": a0, "b": b0}, 0, 0), ({"a": a1, "b": b1}, 1, 0), ({"a": a0, "b": b2}, 2, 0)])
    assert _run("max_size") == (3, [({"a": a0, "b": b0}, 0, 0), ({"a": a1, "b": b1}, 1, 0), ({"a": None, "b": b2}, 2, 0)])
    assert _run("min_size") == (2, [({"a": a0, "b": b0}, 0, 0), ({"a": a1, "b": b1}, 1, 0)])
    assert _run("sequential") == (5, [(a0, 0, 0), (a1, 1, 0), (b0, 0, 1), (b1, 1, 1), (b2, 2, 1)])


def test_combined_loader_api() -> None:
    """Lightning: ``len`` needs ``iter`` first, unknown modes raise ValueError, lists keep their shape,
    ``flattened`` can be replaced with a list of the same length, ``limits`` cap each iterable."""
    with pytest.raises(ValueError, match="Unsupported mode"):
        CombinedLoader([], "zip")  # type: ignore[arg-type]
    cl = CombinedLoader([range(3), range(5)], "max_size_cycle")
    with pytest.raises(RuntimeError, match="Please call `iter"):
        len(cl)
    assert [b for b, _, _ in cl] == [[0, 0], [1, 1], [2, 2], [0, 3], [1, 4]]
    assert len(cl.flattened) == 2
    cl.flattened = [range(10, 12), range(20, 22)]
    assert cl.iterables == [range(10, 12), range(20, 22)]
    assert [b for b, _, _ in cl] == [[10, 20], [11, 21]]
    with pytest.raises(ValueError, match="Mismatch in flattened length"):
        cl.flattened = [range(1)]
    seq = CombinedLoader({"x": range(4), "y": range(3)}, "sequential")
    seq.limits = 2
    assert [(b, i, d) for b, i, d in seq] == [(0, 0, 0), (1, 1, 0), (0, 0, 1), (1, 1, 1)]
    assert len(seq) == 4
    single = CombinedLoader(DataLoader(TensorDataset(torch.arange(4.0)), batch_size=2))
    assert [i for _, i, _ in single] == [0, 1]
    assert isinstance(single.sampler, torch.utils.data.SequentialSampler)


# ---------------------------------------------------------------- model summary


class _SummaryNet(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Linear(4, 4)
        self.head = nn.Linear(4, 1)
        self.example_input_array = torch.randn(2, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.backbone(x)))


def test_summarize_attributes() -> None:
    """Lightning: ``summarize(model)`` returns a ``ModelSummary`` whose attributes are (recorded from Lightning
    2.6.6 for this model) layer_names ['backbone', 'head'], layer_types ['Linear', 'Linear'], in_sizes
    [[2, 4], [2, 4]], out_sizes [[2, 4], [2, 1]], param_nums [20, 5], training_modes [True, True],
    total_training_modes {'train': 2, 'eval': 0}, 25 total / trainable / layer params, model_size 0.0001 MB,
    total_flops 80."""
    s = summarize(_SummaryNet(), max_depth=1)
    assert isinstance(s, ModelSummary)
    assert s.layer_names == ["backbone", "head"]
    assert s.layer_types == ["Linear", "Linear"]
    assert s.in_sizes == [[2, 4], [2, 4]]
    assert s.out_sizes == [[2, 4], [2, 1]]
    assert s.param_nums == [20, 5]
    assert s.training_modes == [True, True]
    assert s.total_training_modes == {"train": 2, "eval": 0}
    assert (s.total_parameters, s.trainable_parameters, s.total_layer_params) == (25, 25, 25)
    assert round(s.model_size, 6) == 0.0001
    assert s.total_flops == 80
    text = str(s)
    assert "backbone" in text and "Total params" in text


def test_summarize_depth_and_frozen() -> None:
    """Lightning: ``max_depth=0`` lists no layers, ``-1`` all of them; frozen parameters are not trainable;
    without ``example_input_array`` the sizes are ``"?"``; invalid depths raise ValueError."""
    model = _SummaryNet()
    model.example_input_array = None
    model.backbone.requires_grad_(False)
    assert summarize(model, max_depth=0).layer_names == []
    full = ModelSummary(nn.Sequential(nn.Sequential(nn.Linear(2, 2)), nn.ReLU()), max_depth=-1)
    assert full.layer_names == ["0", "0.0", "1"]
    s = summarize(model)
    assert s.in_sizes == ["?", "?"] and s.trainable_parameters == 5 and s.total_parameters == 25
    with pytest.raises(ValueError, match="`max_depth` can be -1, 0 or > 0"):
        ModelSummary(model, max_depth=-2)


def test_layer_summary_records_first_forward() -> None:
    """Lightning: ``LayerSummary(module)`` reports type and parameter count, and the in/out sizes of the first
    forward pass after it was created."""
    conv = nn.Conv2d(3, 8, 3)
    ls = LayerSummary(conv)
    assert (ls.layer_type, ls.num_parameters, ls.in_size, ls.out_size) == ("Conv2d", 224, "?", "?")
    conv(torch.rand(1, 3, 5, 5))
    assert (ls.in_size, ls.out_size) == ([1, 3, 5, 5], [1, 8, 3, 3])
    conv(torch.rand(2, 3, 6, 6))
    assert ls.in_size == [1, 3, 5, 5]


# ---------------------------------------------------------------- loggers


def _hide(monkeypatch: pytest.MonkeyPatch, package: str) -> None:
    real = importlib.util.find_spec

    def find_spec(name: str, *args: Any, **kwargs: Any) -> Any:
        return None if name == package else real(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    monkeypatch.delitem(sys.modules, f"trainer_core.loggers.{package}", raising=False)


@pytest.mark.parametrize(("name", "package"), [("MLFlowLogger", "mlflow"), ("WandbLogger", "wandb")])
def test_logger_without_its_client_library(monkeypatch: pytest.MonkeyPatch, name: str, package: str) -> None:
    """The optional loggers need their client library; without it, importing them raises ModuleNotFoundError
    naming the package to install (Lightning raises the same error type, from the constructor)."""
    _hide(monkeypatch, package)
    with pytest.raises(ModuleNotFoundError, match=f"pip install {package}"):
        from trainer_core import loggers

        getattr(loggers, name)


def test_mlflow_logger_with_file_store(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Lightning: ``MLFlowLogger`` creates the experiment and a run on first use (``name`` is the experiment
    id, ``version`` the run id), logs params (flattened with ``/``) and metrics (with the step, a prefix
    joined by ``-``, names with characters MLflow rejects cleaned with a RuntimeWarning), and finalize marks
    the run FINISHED; ``save_dir`` is the ``file:`` path."""
    pytest.importorskip("mlflow")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # mlflow 3 keeps the file store behind this switch
    from mlflow.tracking import MlflowClient

    from trainer_core.loggers import MLFlowLogger

    uri = f"file:{tmp_path / 'mlruns'}"
    lg = MLFlowLogger(experiment_name="exp", run_name="r1", tracking_uri=uri, prefix="p")
    assert lg.save_dir == str(tmp_path / "mlruns")
    lg.log_hyperparams({"lr": 0.1, "opt": {"name": "sgd"}})
    lg.log_metrics({"loss": 0.5}, step=3)
    with pytest.warns(RuntimeWarning, match="Replacing p-bad#name with p-badname"):
        lg.log_metrics({"bad#name": torch.tensor(1.5)}, step=4)
    lg.finalize("success")
    client = MlflowClient(uri)
    run = client.get_run(lg.run_id)
    assert lg.name == lg.experiment_id == run.info.experiment_id
    assert lg.version == run.info.run_id
    assert run.data.params == {"lr": "0.1", "opt/name": "sgd"}
    assert run.data.tags["mlflow.runName"] == "r1"
    assert [(m.step, m.value) for m in client.get_metric_history(lg.run_id, "p-loss")] == [(3, 0.5)]
    assert [(m.step, m.value) for m in client.get_metric_history(lg.run_id, "p-badname")] == [(4, 1.5)]
    assert run.info.status == "FINISHED"


def test_mlflow_logger_in_fit(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Lightning: as a Trainer logger, MLFlowLogger receives the hyperparameters and the logged metrics."""
    pytest.importorskip("mlflow")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # mlflow 3 keeps the file store behind this switch
    from mlflow.tracking import MlflowClient

    from trainer_core.loggers import MLFlowLogger

    class Net(L.LightningModule):
        def __init__(self, lr: float = 0.1) -> None:
            super().__init__()
            self.save_hyperparameters()
            self.l = nn.Linear(2, 1)

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            loss = self.l(batch[0]).pow(2).mean()
            self.log("train_loss", loss)
            return loss

        def configure_optimizers(self) -> Any:
            return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)

    uri = f"file:{tmp_path / 'mlruns'}"
    lg = MLFlowLogger(tracking_uri=uri)
    loader = DataLoader(TensorDataset(torch.randn(8, 2)), batch_size=2)
    L.Trainer(logger=lg, max_epochs=1, log_every_n_steps=1, enable_progress_bar=False, enable_checkpointing=False,
              enable_model_summary=False, default_root_dir=tmp_path).fit(Net(), loader)
    client = MlflowClient(uri)
    run = client.get_run(lg.run_id)
    assert run.data.params == {"lr": "0.1"}
    assert [m.step for m in client.get_metric_history(lg.run_id, "train_loss")] == [0, 1, 2, 3]
    assert run.info.status == "FINISHED"


def test_wandb_logger_offline(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Lightning: ``WandbLogger(offline=True)`` starts an offline run on first use, puts hyperparameters in the
    run config (callables by name), logs metrics with ``trainer/global_step``; ``name`` is the project;
    ``offline=True`` with ``log_model`` raises MisconfigurationException."""
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_MODE", "offline")
    from trainer_core.loggers import WandbLogger

    with pytest.raises(MisconfigurationException, match="offline"):
        WandbLogger(offline=True, log_model=True)
    lg = WandbLogger(save_dir=tmp_path, offline=True, project="proj", prefix="p")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lg.log_hyperparams({"lr": 0.1, "fn": len})
        lg.log_metrics({"loss": torch.tensor(0.25)}, step=3)
        run = lg.experiment
        try:
            assert dict(run.config) == {"lr": 0.1, "fn": "len"}
            assert run.summary["p-loss"] == 0.25
            assert run.summary["trainer/global_step"] == 3
            assert lg.name == "proj" and lg.version == run.id and lg.save_dir == str(tmp_path)
        finally:
            run.finish()


# ---------------------------------------------------------------- warnings Lightning emits


def test_possible_user_warning_checks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Lightning: a DataLoader with fewer than 2 workers warns (PossibleUserWarning) when more could be used,
    naming ``num_workers = cpus - 1``; a shuffling val loader warns; an unset ``max_epochs`` becomes 1000 with a
    warning unless ``max_steps`` or a ``Timer`` bounds the run (then -1)."""
    from trainer_core.callbacks import Timer
    from trainer_core.utilities import warnings as uw

    monkeypatch.setattr(uw, "_num_cpus_available", lambda: 8)
    assert uw.suggested_max_num_workers(1) == 7 and uw.suggested_max_num_workers(4) == 1
    loader = DataLoader(TensorDataset(torch.arange(4.0)), batch_size=2)
    with pytest.warns(uw.PossibleUserWarning, match="The 'train_dataloader' does not have many workers.*num_workers=7"):
        uw._worker_check(loader, "train_dataloader")
    monkeypatch.setattr(uw, "_num_cpus_available", lambda: 2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        uw._worker_check(loader, "train_dataloader")  # one spare CPU: nothing to suggest
        uw._shuffled_eval_loader_check(loader, "val")
    with pytest.warns(uw.PossibleUserWarning, match="Your `val_dataloader`'s sampler has shuffling enabled"):
        uw._shuffled_eval_loader_check(DataLoader(TensorDataset(torch.arange(4.0)), shuffle=True), "val")
    with pytest.warns(uw.PossibleUserWarning, match="`max_epochs` was not set. Setting it to 1000 epochs"):
        assert uw._max_epochs_default(None, -1, []) == 1000
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert uw._max_epochs_default(None, 10, []) == -1
        assert uw._max_epochs_default(None, -1, [Timer()]) == -1
        assert uw._max_epochs_default(3, -1, []) == 3
    with pytest.warns(uw.PossibleUserWarning, match=r"number of training batches \(2\) is smaller than the logging"):
        uw._few_batches_check(2, 50, True, False)


class _TinyNet(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.l = nn.Linear(1, 1)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return self.l(batch[0]).pow(2).mean()

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_trainer_emits_lightnings_possible_user_warnings(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Lightning's Trainer warns (PossibleUserWarning) about an unset ``max_epochs`` (fit with neither limit),
    a train loader with few workers, and fewer batches than ``log_every_n_steps`` with a logger."""
    from trainer_core.utilities import warnings as uw

    monkeypatch.setattr(uw, "_num_cpus_available", lambda: 8)
    loader = DataLoader(TensorDataset(torch.randn(4, 1)), batch_size=2)
    trainer = L.Trainer(default_root_dir=tmp_path, max_steps=1, enable_progress_bar=False, enable_model_summary=False,
                        enable_checkpointing=False)
    with pytest.warns(uw.PossibleUserWarning) as record:
        trainer.fit(_TinyNet(), loader)
    messages = [str(w.message) for w in record if issubclass(w.category, uw.PossibleUserWarning)]
    assert any("The 'train_dataloader' does not have many workers" in m for m in messages)
    assert any("is smaller than the logging interval Trainer(log_every_n_steps=50)" in m for m in messages)
    trainer = L.Trainer(default_root_dir=tmp_path, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, enable_checkpointing=False, limit_train_batches=0)
    with pytest.warns(uw.PossibleUserWarning, match="`max_epochs` was not set"):
        trainer.fit(_TinyNet(), loader)


def test_hook_is_active_for_the_trainers_dispatch() -> None:
    """What Lightning calls: every hook reachable by attribute lookup except the inherited no-op default, so
    class overrides, hooks assigned on the instance and ``Mock(spec=Callback)`` attributes are active."""
    from trainer_core.utilities.model_helpers import hook_is_active

    class CB(L.Callback):
        def on_fit_start(self, trainer: Any, pl_module: Any) -> None: ...

    cb = CB()
    assert hook_is_active(cb, "on_fit_start", L.Callback)
    assert not hook_is_active(cb, "on_fit_end", L.Callback)
    cb.on_fit_end = lambda trainer, pl_module: None  # type: ignore[method-assign]
    assert hook_is_active(cb, "on_fit_end", L.Callback)
    assert hook_is_active(Mock(spec=L.Callback), "on_train_batch_end", L.Callback)
    model = _TinyNet()
    assert not hook_is_active(model, "on_train_epoch_end", L.LightningModule)
    model.on_train_epoch_end = lambda: None  # type: ignore[method-assign]
    assert hook_is_active(model, "on_train_epoch_end", L.LightningModule)
    assert not hook_is_active(None, "on_fit_start", L.Callback)
