"""Issue 13, points 1, 3, 4 and 5: DDP in trainer_core on 2 CPU processes (gloo).

``strategy="ddp"`` runs the script again for rank 1, which pytest's own process cannot be; the 2-process cases run
the scripts ``ddp_scripts/core_*.py`` as subprocesses, each rank printing one JSON line. Everything that needs no
processes (argument validation, the torchrun environment's checks, loading a DDP checkpoint in one process and in
real Lightning) runs here.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from torch.utils.data import DataLoader, DistributedSampler

import trainer_core as L
from trainer_core.strategies import (
    DDPStrategy,
    LightningEnvironment,
    SLURMEnvironment,
    TorchElasticEnvironment,
)
from trainer_core.utilities.exceptions import MisconfigurationException
from trainer_core.utilities.rank_zero import rank_zero_only

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = Path(__file__).resolve().parent / "ddp_scripts"
_DIST_VARS = (
    "TORCHELASTIC_RUN_ID", "RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
    "NODE_RANK", "GROUP_RANK", "SLURM_NTASKS", "SLURM_JOB_NAME",
)


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _DIST_VARS}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = "1"
    return env


def _run(command: list[str], cwd: Path, ranks: tuple[Any, ...] = (0, 1)) -> dict[Any, dict[str, Any]]:
    proc = subprocess.run(command, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    out: dict[Any, dict[str, Any]] = {}
    for line in proc.stdout.splitlines():
        start = line.find('{"rank"')
        if start >= 0:
            record = json.loads(line[start:])
            out[record["rank"]] = record
    assert sorted(out, key=str) == sorted(ranks, key=str), proc.stdout[-3000:] + proc.stderr[-3000:]
    return out


def _script(name: str, *args: str) -> list[str]:
    return [sys.executable, str(SCRIPTS / name), *args]


def _load_script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"_ddp_{name}", SCRIPTS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    argv = sys.argv
    sys.argv = [str(SCRIPTS / f"{name}.py"), "import", "unused"]  # core_ranks reads MODE, ROOT at import
    try:
        spec.loader.exec_module(module)
    finally:
        sys.argv = argv
    return module


@pytest.fixture(autouse=True)
def _keep_rank_zero(monkeypatch: pytest.MonkeyPatch) -> None:
    """A strategy built here sets the process's rank-zero rank; put it back after each test."""
    monkeypatch.setattr(rank_zero_only, "rank", rank_zero_only.rank)


# ---------------------------------------------------------------------------------------------- no processes
@pytest.mark.parametrize(
    ("strategy", "devices", "name"),
    [("auto", 2, "ddp"), ("ddp", 2, "ddp"), ("ddp_spawn", 2, "ddp_spawn"), ("auto", [0, 1], "ddp"),
     ("ddp", "0,1", "ddp"), ("ddp_fork", 3, "ddp_fork")],
)
def test_cpu_devices_resolve_to_ddp_processes(strategy: str, devices: Any, name: str) -> None:
    trainer = L.Trainer(strategy=strategy, devices=devices, accelerator="cpu", logger=False)
    assert isinstance(trainer.strategy, DDPStrategy)
    assert trainer.strategy.strategy_name == name
    count = devices if isinstance(devices, int) else 2
    assert trainer.num_devices == count and trainer.world_size == count
    assert trainer.strategy.parallel_devices == [torch.device("cpu")] * count
    assert isinstance(trainer.strategy.cluster_environment, LightningEnvironment)
    assert trainer.global_rank == 0 and trainer.is_global_zero


def test_one_cpu_device_stays_single_process() -> None:
    trainer = L.Trainer(strategy="auto", devices=1, accelerator="cpu", logger=False)
    assert not isinstance(trainer.strategy, DDPStrategy)
    assert trainer.world_size == 1 and trainer.strategy.launcher is None
    with pytest.raises(MisconfigurationException, match="strategy='ddp'"):
        L.Trainer(strategy="single_device", devices=2, accelerator="cpu", logger=False)


@pytest.mark.parametrize(
    "strategy", ["fsdp", "fsdp_cpu_offload", "deepspeed", "deepspeed_stage_2", "dp", "xla", "model_parallel"]
)
def test_unsupported_strategies_raise_naming_strategy(strategy: str) -> None:
    with pytest.raises(MisconfigurationException) as info:
        L.Trainer(strategy=strategy, devices=2, accelerator="cpu", logger=False)
    message = str(info.value)
    assert f"strategy={strategy!r}" in message and "not supported" in message, message
    assert "'ddp'" in message  # what to use instead


def test_unknown_strategy_and_bad_num_nodes_raise_naming_the_argument() -> None:
    with pytest.raises(MisconfigurationException, match=r"strategy='horovod'"):
        L.Trainer(strategy="horovod", accelerator="cpu", logger=False)
    with pytest.raises(MisconfigurationException, match=r"num_nodes=0"):
        L.Trainer(strategy="ddp", devices=2, num_nodes=0, accelerator="cpu", logger=False)


def _torchrun_env(monkeypatch: pytest.MonkeyPatch, rank: int, local_rank: int, world: int, local_world: int,
                  group_rank: int = 0) -> None:
    for key, value in {
        "TORCHELASTIC_RUN_ID": "h3", "RANK": rank, "LOCAL_RANK": local_rank, "WORLD_SIZE": world,
        "LOCAL_WORLD_SIZE": local_world, "GROUP_RANK": group_rank, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": 29555,
    }.items():
        monkeypatch.setenv(key, str(value))


def test_torchrun_environment_is_joined_with_its_ranks(monkeypatch: pytest.MonkeyPatch) -> None:
    # the second node's second process of `torchrun --nnodes=2 --nproc-per-node=2`
    _torchrun_env(monkeypatch, rank=3, local_rank=1, world=4, local_world=2, group_rank=1)
    trainer = L.Trainer(strategy="ddp", devices=2, num_nodes=2, accelerator="cpu", logger=False)
    assert isinstance(trainer.strategy, DDPStrategy)
    assert isinstance(trainer.strategy.cluster_environment, TorchElasticEnvironment)
    assert (trainer.global_rank, trainer.local_rank, trainer.node_rank, trainer.world_size) == (3, 1, 1, 4)
    assert not trainer.is_global_zero
    assert trainer.strategy.distributed_sampler_kwargs == {"num_replicas": 4, "rank": 3}
    auto = L.Trainer(strategy="auto", devices=2, num_nodes=2, accelerator="cpu", logger=False)
    assert isinstance(auto.strategy, DDPStrategy) and auto.global_rank == 3


def test_torchrun_environment_rejects_devices_and_num_nodes_that_do_not_match(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _torchrun_env(monkeypatch, rank=0, local_rank=0, world=2, local_world=2)
    with pytest.raises(ValueError, match=r"devices=2.*num_nodes=2") as info:
        L.Trainer(strategy="ddp", devices=2, num_nodes=2, accelerator="cpu", logger=False)
    assert "world size (2)" in str(info.value)
    with pytest.raises(ValueError, match=r"devices=4.*LOCAL_WORLD_SIZE=2"):
        L.Trainer(strategy="ddp", devices=4, accelerator="cpu", logger=False)


def test_slurm_environment_is_joined_and_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(key, raising=False)  # SLURMEnvironment sets them; monkeypatch puts them back
    for key, value in {
        "SLURM_NTASKS": "4", "SLURM_PROCID": "3", "SLURM_LOCALID": "1", "SLURM_NODEID": "1", "SLURM_NNODES": "2",
        "SLURM_NTASKS_PER_NODE": "2", "SLURM_NODELIST": "gpu[007-008]", "SLURM_JOB_NAME": "train", "SLURM_JOB_ID": "4321",
    }.items():
        monkeypatch.setenv(key, value)
    trainer = L.Trainer(strategy="ddp", devices=2, num_nodes=2, accelerator="cpu", logger=False)
    assert isinstance(trainer.strategy, DDPStrategy)
    assert isinstance(trainer.strategy.cluster_environment, SLURMEnvironment)
    assert (trainer.global_rank, trainer.local_rank, trainer.node_rank, trainer.world_size) == (3, 1, 1, 4)
    assert trainer.strategy.cluster_environment.main_address == "gpu007"
    with pytest.raises(ValueError, match=r"devices=4.*ntasks-per-node=2"):
        L.Trainer(strategy="ddp", devices=4, num_nodes=2, accelerator="cpu", logger=False)
    with pytest.raises(ValueError, match=r"num_nodes=1.*nodes=2"):
        L.Trainer(strategy="ddp", devices=2, num_nodes=1, accelerator="cpu", logger=False)


# ---------------------------------------------------------------------------------------------- 2 processes
def _permutation(epoch: int) -> list[int]:
    """DistributedSampler's order for ``epoch`` (seeded with seed_everything's seed, as the Trainer does)."""
    return torch.randperm(16, generator=torch.Generator().manual_seed(7 + epoch)).tolist()


def _check_ranks(res: dict[Any, dict[str, Any]], strategy_name: str, environment: str) -> None:
    for rank in (0, 1):
        rec = res[rank]
        assert rec["global_rank"] == rank and rec["local_rank"] == rank and rec["node_rank"] == 0
        assert rec["world_size"] == 2 and rec["num_devices"] == 2
        assert rec["is_global_zero"] is (rank == 0)
        assert rec["strategy"] == "DDPStrategy" and rec["strategy_name"] == strategy_name
        assert rec["environment"] == environment and rec["backend"] == "gloo"
        assert rec["marker_after_barrier"], "rank 0 passed the barrier before rank 1 reached it"
        assert rec["broadcast"] == {"from": 0, "list": [0, 0]} and rec["broadcast_src1"] == 10
        assert rec["gather_shape"] == [2, 3] and rec["gather"] == [[0.0, 1.0, 2.0], [1.0, 2.0, 3.0]]
        assert rec["gather_scalar_shape"] == [2]
        # the DistributedSampler: one permutation per epoch (set_epoch), rank r takes every second index from r
        for epoch in (0, 1):
            assert rec["seen"][str(epoch)] == _permutation(epoch)[rank::2], (rank, epoch, rec["seen"])
    assert res[0]["seen"]["0"] != res[0]["seen"]["1"]
    assert res[0]["weights"] == res[1]["weights"]  # DDP keeps the replicas equal


def _check_results(res: dict[Any, dict[str, Any]]) -> None:
    for rank in (0, 1):
        rec = res[rank]
        assert rec["plain_seen"] == {"0": list(range(16))}  # use_distributed_sampler=False: the loader as it was
        # predict: each rank its own predictions; together every sample once (15 samples: no padding)
        assert rec["predictions"] == list(range(rank, 15, 2))
        # validate/test: each rank's own list of dicts (synced values agree, unsynced ones are the rank's)
        assert rec["validate"] == [{"val_synced": 0.5, "val_own": float(rank), "val_count": 8.0}]
        assert rec["test"] == [{"test_synced": 0.5, "test_own": float(rank), "test_count": 8.0}]


def test_ddp_two_cpu_processes_ranks_data_and_results(tmp_path: Path) -> None:
    res = _run(_script("core_ranks.py", "ddp", str(tmp_path)), tmp_path)
    _check_ranks(res, "ddp", "LightningEnvironment")
    _check_results(res)


def test_auto_strategy_with_a_device_list_runs_two_cpu_processes(tmp_path: Path) -> None:
    res = _run(_script("core_ranks.py", "auto_list", str(tmp_path)), tmp_path)
    _check_ranks(res, "ddp", "LightningEnvironment")
    _check_results(res)


def test_ranks_started_by_torchrun_join(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
               str(SCRIPTS / "core_ranks.py"), "torchrun", str(tmp_path)]
    res = _run(command, tmp_path)
    _check_ranks(res, "ddp", "TorchElasticEnvironment")
    _check_results(res)


def test_ddp_spawn_runs_ranks_and_returns_no_predictions(tmp_path: Path) -> None:
    res = _run(_script("core_ranks.py", "spawn", str(tmp_path)), tmp_path, ranks=(0, 1, "main"))
    _check_ranks(res, "ddp_spawn", "LightningEnvironment")
    main = res["main"]
    assert main["weights"] == res[0]["weights"]  # the main process took rank 0's weights over
    assert main["predict_default"] is None
    assert main["predict_true_error"] is not None and "return_predictions" in main["predict_true_error"]


# ---------------------------------------------------------------------------------------------- resume, match
@pytest.fixture(scope="module")
def resume_run(tmp_path_factory: pytest.TempPathFactory) -> dict[Any, dict[str, Any]]:
    root = tmp_path_factory.mktemp("core_resume")
    return _run(_script("core_resume.py", str(root)), root)


def test_ddp_resume_mid_epoch_is_exact(resume_run: dict[Any, dict[str, Any]]) -> None:
    mod = _load_script("core_resume")
    for rank in (0, 1):
        rec = resume_run[rank]
        assert rec["stopped_step"] == mod.STOP_STEP  # stopped inside epoch 1 (4 steps per epoch)
        assert rec["stopped"] != rec["full"]
        assert rec["resumed_step"] == 2 * 4 and rec["resumed_epoch"] == mod.EPOCHS
        full = [torch.tensor(w) for w in rec["full"]]
        resumed = [torch.tensor(w) for w in rec["resumed"]]
        assert all(torch.equal(a, b) for a, b in zip(full, resumed, strict=True)), (rank, rec["full"], rec["resumed"])
    assert resume_run[0]["resumed"] == resume_run[1]["resumed"]


def test_ddp_matches_one_process_with_the_combined_batch(resume_run: dict[Any, dict[str, Any]]) -> None:
    mod = _load_script("core_resume")
    L.seed_everything(mod.SEED)
    model = mod.Regressor()
    trainer = L.Trainer(
        accelerator="cpu", devices=1, max_epochs=mod.EPOCHS, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False,
    )
    # Under DDP the train loader gets Lightning's always-shuffling DistributedSampler (seeded by
    # seed_everything, a new permutation each epoch by set_epoch): rank r takes positions r, r + 2, ...
    # of the permutation, so one step of both ranks together is the permutation's next 2 * BATCH
    # samples, which is what the same sampler over one replica gives a single process.
    data = mod.dataset()
    sampler = DistributedSampler(data, num_replicas=1, rank=0, shuffle=True, seed=mod.SEED)
    trainer.fit(model, DataLoader(data, batch_size=2 * mod.BATCH, sampler=sampler))
    for rank in (0, 1):
        rec = resume_run[rank]
        assert len(rec["match_losses"]) == len(model.losses) == 8
        torch.testing.assert_close(torch.tensor(rec["match_losses"]), torch.tensor(model.losses), rtol=1e-5, atol=1e-6)
        for got, want in zip(rec["match"], mod.weights(model), strict=True):
            torch.testing.assert_close(torch.tensor(got), torch.tensor(want), rtol=1e-5, atol=1e-6)
    assert model.losses[-1] < model.losses[0]


class _Start(L.Callback):
    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        self.at = (trainer.global_step, trainer.current_epoch)


def test_ddp_checkpoint_loads_in_one_trainer_core_process(resume_run: dict[Any, dict[str, Any]], tmp_path: Path) -> None:
    mod = _load_script("core_resume")
    ckpt_path = resume_run[0]["ckpt"]
    checkpoint = torch.load(ckpt_path, map_location="cpu", weights_only=False)
    assert checkpoint["global_step"] == mod.STOP_STEP
    loaded = mod.Regressor.load_from_checkpoint(ckpt_path)
    assert loaded.hparams["lr"] == 0.1
    for key, value in loaded.state_dict().items():
        assert torch.equal(value, checkpoint["state_dict"][key]), key
    start = _Start()
    trainer = L.Trainer(
        accelerator="cpu", devices=1, max_epochs=3, logger=False, enable_checkpointing=False, callbacks=[start],
        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
    )
    model = mod.Regressor()
    trainer.fit(model, DataLoader(mod.dataset(), batch_size=mod.BATCH), ckpt_path=ckpt_path)
    assert start.at == (mod.STOP_STEP, 1)
    assert trainer.current_epoch == 3 and trainer.global_step > mod.STOP_STEP


def test_ddp_checkpoint_loads_in_real_lightning(resume_run: dict[Any, dict[str, Any]], tmp_path: Path) -> None:
    mod = _load_script("core_resume")

    class LightningRegressor(pl.LightningModule):
        def __init__(self, lr: float = 0.1) -> None:
            super().__init__()
            self.save_hyperparameters()
            self.net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1))

        def training_step(self, batch: Any, batch_idx: int) -> Any:
            x, y = batch
            return torch.nn.functional.mse_loss(self.net(x), y)

        def configure_optimizers(self) -> Any:
            return torch.optim.SGD(self.parameters(), lr=self.hparams["lr"], momentum=0.9)

    ckpt_path = resume_run[0]["ckpt"]
    checkpoint = torch.load(ckpt_path, map_location="cpu", weights_only=False)
    loaded = LightningRegressor.load_from_checkpoint(ckpt_path)
    assert loaded.hparams["lr"] == 0.1
    for key, value in loaded.state_dict().items():
        assert torch.equal(value, checkpoint["state_dict"][key]), key

    steps: list[int] = []

    class Record(pl.Callback):
        def on_train_start(self, trainer: Any, pl_module: Any) -> None:
            steps.append(trainer.global_step)

    trainer = pl.Trainer(
        accelerator="cpu", devices=1, max_epochs=3, logger=False, enable_checkpointing=False, callbacks=[Record()],
        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
    )
    trainer.fit(LightningRegressor(), DataLoader(mod.dataset(), batch_size=mod.BATCH), ckpt_path=ckpt_path)
    assert steps == [mod.STOP_STEP]
    assert trainer.current_epoch == 3 and trainer.global_step > mod.STOP_STEP
