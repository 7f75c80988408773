"""Issue 13, point 2 (callbacks, logging, loggers under DDP).

First the single-process (identity) path of each behaviour, with the strategy's collectives replaced by
recording fakes where the behaviour is the call itself; then 2-process CPU (gloo) runs of the scripts in
``ddp_scripts/`` (``strategy="ddp"`` re-runs the script for rank 1, which pytest cannot be), each printing one
JSON line per rank.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import trainer_core as L
from trainer_core.callbacks import EarlyStopping, ModelCheckpoint, TQDMProgressBar
from trainer_core.loggers import CSVLogger
from trainer_core.loggers.logger import DummyExperiment
from trainer_core.trainer.results import ResultCollection
from trainer_core.utilities import warnings as tc_warnings
from trainer_core.utilities.rank_zero import rank_zero_only

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = Path(__file__).resolve().parent / "ddp_scripts"


# ---------------------------------------------------------------------------------------------- helpers
def _data(n: int = 8) -> DataLoader:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 2, generator=g)
    return DataLoader(TensorDataset(x, x.sum(1, keepdim=True)), batch_size=2)


class _Regressor(L.LightningModule):
    def __init__(self, val_values: list[float] | None = None) -> None:
        super().__init__()
        self.layer = nn.Linear(2, 1)
        self.val_values = val_values or [1.0]
        self.val_runs = 0

    def training_step(self, batch: Any, batch_idx: int) -> Any:
        x, y = batch
        loss = nn.functional.mse_loss(self.layer(x), y)
        self.log("train_loss", loss, sync_dist=True)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self.log("val_loss", self.val_values[min(self.val_runs, len(self.val_values) - 1)], sync_dist=True)

    def on_validation_epoch_end(self) -> None:
        self.val_runs += 1

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.parameters(), lr=0.01)


def _trainer(tmp_path: Path, **kw: Any) -> L.Trainer:
    kw.setdefault("max_epochs", 3)
    kw.setdefault("logger", False)
    kw.setdefault("enable_checkpointing", False)
    return L.Trainer(
        default_root_dir=tmp_path, accelerator="cpu", devices=1, enable_progress_bar=False,
        enable_model_summary=False, num_sanity_val_steps=0, **kw,
    )


class _Patch(L.Callback):
    """Replace strategy methods at ``setup`` (the strategy exists by then) with recording fakes."""

    def __init__(self, **fakes: Any) -> None:
        self.fakes = fakes

    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        for name, fake in self.fakes.items():
            setattr(trainer.strategy, name, fake)


# ---------------------------------------------------------------------------------------------- self.log(sync_dist)
def test_result_collection_reduces_step_values_at_log_time_and_epoch_values_like_lightning() -> None:
    calls: list[tuple[str | None, Any, float]] = []

    def fake_reduce(tensor: torch.Tensor, group: Any = None, reduce_op: str | None = "mean") -> torch.Tensor:
        # stands for a second process that logged 3x this process's value / batch size
        calls.append((reduce_op, group, float(tensor)))
        return tensor * 4 if reduce_op == "sum" else tensor * 2

    results = ResultCollection(training=True)
    results.fx = "training_step"
    group = object()
    for value, bs in ((1.0, 2), (3.0, 6)):
        results.log("m", torch.tensor(value), on_step=True, on_epoch=True, batch_size=bs, fx="training_step",
                    sync_dist=True, sync_dist_fn=fake_reduce, sync_dist_group=group)
    # the step value is reduced when logged, with reduce_fx's op and the group given
    assert calls == [("mean", group, 1.0), ("mean", group, 3.0)]
    assert float(results.metrics(on_step=True).log["m_step"]) == 6.0
    calls.clear()
    epoch = results.metrics(on_step=False).callback["m_epoch"]
    # mean: the weighted sum (1*2 + 3*6 = 20) and the batch sizes (8) are each reduced with "sum", then divided
    assert [(op, v) for op, _, v in calls] == [("sum", 20.0), ("sum", 8.0)]
    assert float(epoch) == pytest.approx(80.0 / 32.0)
    for reduce_fx, expected in (("max", 3.0), ("min", 1.0), ("sum", 4.0)):
        calls.clear()
        results = ResultCollection(training=True)
        for value in (1.0, 3.0):
            results.log("k", torch.tensor(value), on_step=False, on_epoch=True, reduce_fx=reduce_fx,
                        fx="training_step", sync_dist=True, sync_dist_fn=fake_reduce)
        assert calls == []  # nothing on step
        value = results.metrics(on_step=False).callback["k"]
        assert [op for op, _, _ in calls] == [reduce_fx]
        factor = 4 if reduce_fx == "sum" else 2
        assert float(value) == expected * factor


def test_result_collection_rank_zero_only_and_no_sync_skip_the_reduction() -> None:
    def fail(*_: Any, **__: Any) -> torch.Tensor:
        raise AssertionError("reduced")

    results = ResultCollection(training=True)
    results.log("a", torch.tensor(2.0), on_step=True, on_epoch=True, fx="training_step", sync_dist=True,
                sync_dist_fn=fail, rank_zero_only=True)
    results.log("b", torch.tensor(2.0), on_step=True, on_epoch=True, fx="training_step", sync_dist=False,
                sync_dist_fn=fail)
    assert float(results.metrics(on_step=False).callback["a_epoch"]) == 2.0
    assert float(results.metrics(on_step=False).callback["b_epoch"]) == 2.0
    # the same key logged again with a different sync_dist is Lightning's "different arguments" error
    with pytest.raises(L.utilities.exceptions.MisconfigurationException, match="different arguments"):
        results.log("b", torch.tensor(2.0), on_step=True, on_epoch=True, fx="training_step", sync_dist=True,
                    sync_dist_fn=fail)


def test_sync_dist_on_one_process_logs_the_plain_values_without_reducing_or_warning(tmp_path: Path) -> None:
    def fail(*_: Any, **__: Any) -> torch.Tensor:
        raise AssertionError("reduce called on one process")

    model = _Regressor([0.5])
    trainer = _trainer(tmp_path, max_epochs=1, callbacks=[_Patch(reduce=fail)])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(model, _data(), _data(4))
    assert float(trainer.callback_metrics["val_loss"]) == 0.5
    assert not [w for w in caught if "sync_dist=True" in str(w.message)]


# ---------------------------------------------------------------------------------------------- callbacks
def test_early_stopping_stops_when_another_process_decides_to(tmp_path: Path) -> None:
    decisions: list[tuple[bool, bool]] = []

    def any_rank_says_stop(decision: bool, all: bool = True) -> bool:
        decisions.append((decision, all))
        return True  # the other rank's metric says stop

    es = EarlyStopping(monitor="val_loss", patience=5)
    model = _Regressor([1.0, 0.9, 0.8, 0.7])  # always improving: this process alone would not stop
    trainer = _trainer(tmp_path, max_epochs=5, callbacks=[es, _Patch(reduce_boolean_decision=any_rank_says_stop)])
    trainer.fit(model, _data(), _data(4))
    assert decisions == [(False, False)]  # Lightning's reduce_boolean_decision(should_stop, all=False)
    assert trainer.should_stop and trainer.current_epoch == 1 and es.stopped_epoch == 0


def test_model_checkpoint_takes_rank_zeros_dir_and_removes_through_the_strategy(tmp_path: Path) -> None:
    rank0_dir = str(tmp_path / "rank0_ckpts")
    broadcasts: list[Any] = []
    removed: list[str] = []

    def broadcast(obj: Any, src: int = 0) -> Any:
        broadcasts.append(obj)
        if isinstance(obj, str) and obj.endswith("checkpoints"):
            return rank0_dir  # what rank 0 resolved
        return obj

    def remove_checkpoint(path: str) -> None:
        removed.append(path)
        os.remove(path)

    ckpt = ModelCheckpoint(monitor="val_loss", save_top_k=1)
    model = _Regressor([1.0, 0.5, 0.2])
    trainer = _trainer(tmp_path, enable_checkpointing=True,
                       callbacks=[ckpt, _Patch(broadcast=broadcast, remove_checkpoint=remove_checkpoint)])
    trainer.fit(model, _data(), _data(4))
    assert ckpt.dirpath == rank0_dir
    assert os.path.dirname(ckpt.best_model_path) == rank0_dir
    assert sorted(os.listdir(rank0_dir)) == [os.path.basename(ckpt.best_model_path)]
    # the two older best files were removed by strategy.remove_checkpoint (rank 0 only under DDP)
    assert len(removed) == 2 and all(p.startswith(rank0_dir) for p in removed)
    # the existence checks that pick a file's version are rank 0's answers (booleans broadcast)
    assert any(isinstance(b, bool) for b in broadcasts)


def test_timer_stops_every_process_on_rank_zeros_clock(tmp_path: Path) -> None:
    from datetime import timedelta

    from trainer_core.callbacks import Timer

    asked: list[Any] = []

    def rank0_says_time_is_up(obj: Any, src: int = 0) -> Any:
        if isinstance(obj, bool):
            asked.append(obj)
            return len(asked) > 1  # rank 0's clock ran out after fit start
        return obj

    timer = Timer(duration=timedelta(hours=1), interval="epoch")  # this process's clock has time left
    trainer = _trainer(tmp_path, max_epochs=5, callbacks=[timer, _Patch(broadcast=rank0_says_time_is_up)])
    trainer.fit(_Regressor(), _data(), _data(4))
    assert asked and not asked[-1]
    assert trainer.current_epoch == 1


def test_progress_bar_is_disabled_off_global_rank_zero() -> None:
    bar = TQDMProgressBar()
    bar.setup(SimpleNamespace(is_global_zero=False), None, "fit")
    assert not bar.is_enabled
    bar = TQDMProgressBar()
    bar.setup(SimpleNamespace(is_global_zero=True), None, "fit")
    assert bar.is_enabled


def test_model_summary_prints_on_rank_zero_only(capsys: pytest.CaptureFixture[str]) -> None:
    from trainer_core.callbacks import ModelSummary

    model = _Regressor()
    ModelSummary().on_fit_start(SimpleNamespace(is_global_zero=False), model)
    assert "Linear" not in capsys.readouterr().out
    ModelSummary().on_fit_start(SimpleNamespace(is_global_zero=True), model)
    assert "Linear" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------- loggers
@pytest.fixture
def rank_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rank_zero_only, "rank", 1)


def test_csv_logger_writes_nothing_off_rank_zero(tmp_path: Path, rank_one: None) -> None:
    logger = CSVLogger(tmp_path, name="runs", version=0)
    assert isinstance(logger.experiment, DummyExperiment)
    logger.log_hyperparams({"lr": 0.1})
    logger.log_metrics({"loss": 1.0}, step=0)
    logger.save()
    logger.finalize("success")
    assert logger.log_dir == str(tmp_path / "runs" / "version_0")  # the same name as rank 0's
    assert not (tmp_path / "runs").exists()


def test_csv_logger_writes_on_rank_zero(tmp_path: Path) -> None:
    assert rank_zero_only.rank == 0
    logger = CSVLogger(tmp_path, name="runs", version=0)
    logger.log_metrics({"loss": 1.0}, step=0)
    logger.finalize("success")
    assert (tmp_path / "runs" / "version_0" / "metrics.csv").is_file()


def test_tensorboard_logger_writes_nothing_off_rank_zero(tmp_path: Path, rank_one: None) -> None:
    from trainer_core.loggers.tensorboard import TensorBoardLogger, tensorboard_available

    if not tensorboard_available():
        pytest.skip("tensorboard is not installed")
    logger = TensorBoardLogger(tmp_path, name="tb")
    assert isinstance(logger.experiment, DummyExperiment)
    logger.log_hyperparams({"lr": 0.1})
    logger.log_metrics({"loss": 1.0}, step=0)
    logger.log_graph(_Regressor())
    logger.save()
    logger.finalize("success")
    assert not (tmp_path / "tb").exists()


def test_mlflow_logger_off_rank_zero_creates_no_experiment(
    tmp_path: Path, rank_one: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("mlflow")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    from trainer_core.loggers import MLFlowLogger

    logger = MLFlowLogger(tracking_uri=f"file:{tmp_path / 'mlruns'}")
    assert isinstance(logger.experiment, DummyExperiment)
    logger.log_hyperparams({"lr": 0.1})
    logger.log_metrics({"loss": 1.0}, step=0)
    logger.finalize("success")
    assert logger.run_id is None
    assert not (tmp_path / "mlruns").exists()


def test_wandb_logger_off_rank_zero_starts_no_run(
    tmp_path: Path, rank_one: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    wandb = pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_MODE", "offline")
    from trainer_core.loggers import WandbLogger

    logger = WandbLogger(save_dir=tmp_path, offline=True, project="proj")
    assert isinstance(logger.experiment, DummyExperiment)
    logger.log_hyperparams({"lr": 0.1})
    logger.log_metrics({"loss": 1.0}, step=0)
    logger.finalize("success")
    assert wandb.run is None
    assert not (tmp_path / "wandb").exists()


def test_trainer_with_csv_logger_off_rank_zero_creates_no_files(tmp_path: Path, rank_one: None) -> None:
    logger = CSVLogger(tmp_path / "logs", name="runs", version=0)
    trainer = _trainer(tmp_path, max_epochs=1, logger=logger, log_every_n_steps=1)
    trainer.fit(_Regressor(), _data(), _data(4))
    assert not (tmp_path / "logs").exists()


# ---------------------------------------------------------------------------------------------- module
def test_all_gather_applies_the_strategy_to_every_tensor_of_a_collection(tmp_path: Path) -> None:
    model = _Regressor()
    trainer = _trainer(tmp_path, max_epochs=1)
    trainer.fit(model, _data(), _data(4))
    data = {"a": torch.ones(3), "b": [torch.zeros(2, 2), 5], "c": "text"}
    out = model.all_gather(data)  # one process: identity
    assert out["a"].shape == (3,) and out["b"][0].shape == (2, 2) and out["c"] == "text"
    assert isinstance(out["b"][1], torch.Tensor) and int(out["b"][1]) == 5
    seen: list[tuple[tuple[int, ...], Any, bool]] = []

    def fake_gather(tensor: torch.Tensor, group: Any = None, sync_grads: bool = False) -> torch.Tensor:
        seen.append((tuple(tensor.shape), group, sync_grads))
        return torch.stack([tensor, tensor])

    trainer.strategy.all_gather = fake_gather  # type: ignore[method-assign]
    group = object()
    out = model.all_gather(data, group=group, sync_grads=True)
    assert out["a"].shape == (2, 3) and out["b"][0].shape == (2, 2, 2) and out["b"][1].shape == (2,)
    assert sorted(s for s, _, _ in seen) == [(), (2, 2), (3,)]
    assert all(g is group and sync for _, g, sync in seen)


def test_all_gather_with_sync_grads_keeps_the_graph(tmp_path: Path) -> None:
    model = _Regressor()
    trainer = _trainer(tmp_path, max_epochs=1)
    trainer.fit(model, _data(), _data(4))
    x = torch.ones(2, requires_grad=True)
    out = model.all_gather(x * 2, sync_grads=True)
    out.sum().backward()
    assert x.grad is not None and torch.equal(x.grad, torch.full((2,), 2.0))


def test_print_only_on_local_rank_zero(capsys: pytest.CaptureFixture[str]) -> None:
    model = _Regressor()
    fake = SimpleNamespace(strategy=SimpleNamespace(local_rank=1), progress_bar_callback=None, global_rank=3,
                           local_rank=1)
    model._trainer = fake
    model.print("hidden")
    assert capsys.readouterr().out == ""
    assert model.global_rank == 3 and model.local_rank == 1
    fake.strategy.local_rank = 0
    model.print("shown")
    assert capsys.readouterr().out == "shown\n"


def test_worker_check_suggests_cpus_per_local_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tc_warnings, "_num_cpus_available", lambda: 8)
    loader = DataLoader(TensorDataset(torch.zeros(4, 1)))
    for devices, suggested in ((1, 7), (2, 3), (4, 1)):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            tc_warnings._worker_check(loader, "train_dataloader", devices)
        messages = [str(w.message) for w in caught]
        if suggested > 1:
            assert any(f"num_workers={suggested}" in m for m in messages), messages
        else:
            assert not any("num_workers=" in m for m in messages), messages


# ---------------------------------------------------------------------------------------------- 2 processes
def _run_script(name: str, tmp_path: Path, *args: str) -> dict[int, dict[str, Any]]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    for key in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_WORLD_SIZE"):
        env.pop(key, None)
    proc = subprocess.run(
        [sys.executable, str(SCRIPTS / name), str(tmp_path), *args],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    out: dict[int, dict[str, Any]] = {}
    for line in proc.stdout.splitlines():
        start = line.find('{"rank"')  # a progress bar may share the line
        if start >= 0:
            record = json.loads(line[start:])
            out[record["rank"]] = record
    assert sorted(out) == [0, 1], proc.stdout[-3000:] + proc.stderr[-3000:]
    return out


@pytest.mark.parametrize("strategy", ["ddp", "ddp_spawn"])
def test_ddp_sync_dist_metrics_agree_on_both_ranks_and_all_gather_shapes(tmp_path: Path, strategy: str) -> None:
    res = _run_script("sync_metrics.py", tmp_path, strategy)
    r0, r1 = res[0], res[1]
    for rec in (r0, r1):
        cb = rec["callback"]
        assert cb["r_step"] == pytest.approx(1.5)  # rank r logs r+1: the mean over ranks
        # weighted by batch size (rank r has batches of r+1): (1*1 + 2*2) / (1 + 2)
        assert cb["r_epoch"] == pytest.approx(5 / 3)
        assert cb["rmax"] == 2.0 and cb["rmin"] == 1.0 and cb["rsum"] == pytest.approx(3.0 * rec["train_batches"])
        assert cb["val_r"] == pytest.approx(5 / 3)  # the validation batches are sized the same way
        assert rec["gather_shapes"] == {"vec": [2, 3], "scalar": [2], "nested": [2, 2, 1]}
        assert rec["gathered_ranks"] == [0.0, 1.0]
        assert rec["world_size"] == 2
    # the synced values are equal on both ranks; the unsynced one is each rank's own
    for key in ("r_step", "r_epoch", "rmax", "rmin", "rsum", "val_r"):
        assert r0["callback"][key] == r1["callback"][key]
        assert r0["logged"][key] == r1["logged"][key]
    assert r0["pbar"]["r_step"] == r1["pbar"]["r_step"] == pytest.approx(1.5)
    assert (r0["callback"]["val_own"], r1["callback"]["val_own"]) == (1.0, 2.0)
    # Lightning's PossibleUserWarning for the unsynced epoch value (rank 0 warns; rank_zero_warn)
    assert r0["sync_warning"] and not r1["sync_warning"]
    assert r0["bar_enabled"] and not r1["bar_enabled"]
    if strategy == "ddp_spawn":
        return
    # trainer.validate: each rank's own results, the synced values equal
    assert r0["validated"][0]["val_r"] == r1["validated"][0]["val_r"] == pytest.approx(5 / 3)
    assert (r0["validated"][0]["val_own"], r1["validated"][0]["val_own"]) == (1.0, 2.0)
    assert r0["printed"] and not r1["printed"]


def test_ddp_early_stopping_checkpoints_and_csv_files_only_from_rank_zero(tmp_path: Path) -> None:
    res = _run_script("stop_and_files.py", tmp_path)
    r0, r1 = res[0], res[1]
    # only rank 1's metric stops improving (patience 1 -> stop after epoch 1); both ranks stop together
    assert r0["current_epoch"] == r1["current_epoch"] == 2
    assert r0["stopped_epoch"] == r1["stopped_epoch"] == 1
    assert r0["global_step"] == r1["global_step"]
    # the same checkpoint bookkeeping on both ranks, in rank 0's logger version directory
    assert r0["best_model_path"] == r1["best_model_path"] and r0["best_model_path"]
    assert r0["best_k_models"] == r1["best_k_models"] and len(r0["best_k_models"]) == 2
    assert r0["last_model_path"] == r1["last_model_path"]
    assert r0["dirpath"] == r1["dirpath"] == str(tmp_path / "logs" / "lightning_logs" / "version_0" / "checkpoints")
    files = sorted(os.listdir(r0["dirpath"]))
    assert files == sorted(os.path.basename(p) for p in [*r0["best_k_models"], r0["last_model_path"]])
    # every file under the run's folders was opened for writing by rank 0 only
    assert r1["written"] == [], r1["written"]
    assert any(".ckpt" in p for p in r0["written"]) and any(p.endswith("metrics.csv") for p in r0["written"])
    assert r0["logger_version"] == r1["logger_version"] == 0
    assert os.listdir(tmp_path / "logs" / "lightning_logs") == ["version_0"]
    assert r0["log_dir"] == r1["log_dir"]
