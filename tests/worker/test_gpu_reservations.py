"""GPU reservations of one worker host (worker/gpus.py) with made-up GPU ids, the world size a
run's trainer arguments ask for, and the server's refusal of a run no live worker can fit."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from worker.gpus import GpuPool, gpus_needed, world_size


@pytest.mark.parametrize(("trainer", "gpus", "world", "need"), [
    ({}, 0, 1, 0),
    ({}, 4, 1, 1),  # auto accelerator on a GPU worker: one GPU
    ({"devices": 2, "accelerator": "cpu"}, 4, 2, 0),  # two CPU processes, no GPU
    ({"devices": 2, "accelerator": "cpu", "strategy": "ddp"}, 0, 2, 0),
    ({"devices": 4, "strategy": "ddp"}, 4, 4, 4),
    ({"devices": [1, 3], "accelerator": "gpu"}, 4, 2, 2),
    ({"devices": -1, "accelerator": "gpu", "strategy": "ddp_spawn"}, 4, 4, 4),
    ({"devices": -1, "accelerator": "cpu"}, 0, 1, 0),
    ({"devices": 4, "strategy": "single_device"}, 4, 1, 1),
    ({"devices": "auto", "accelerator": "gpu"}, 2, 1, 1),
])
def test_world_size_and_gpus_follow_the_trainer_arguments(trainer: dict, gpus: int, world: int, need: int) -> None:
    assert world_size(trainer, gpus) == world
    assert gpus_needed(trainer, gpus) == need


def test_one_four_gpu_run_or_four_one_gpu_runs(tmp_path: Path) -> None:
    pool = GpuPool(tmp_path / "pool.json", ["0", "1", "2", "3"])
    assert pool.reserve(4, run_id=1) == ["0", "1", "2", "3"]
    assert pool.reserve(1, run_id=2) is None  # waits: nothing free
    pool.release(1)
    got = [pool.reserve(1, run_id=10 + i, prefer=str(3 - i)) for i in range(4)]
    assert got == [["3"], ["2"], ["1"], ["0"]]  # each slot's own GPU first
    assert pool.reserve(1, run_id=20) is None
    assert pool.reserve(2, run_id=21) is None
    pool.release(11)
    pool.release(12)
    assert sorted(pool.reserve(2, run_id=21) or []) == ["1", "2"]
    with pytest.raises(ValueError, match="asks for 5 GPUs; this worker has 4"):
        pool.reserve(5, run_id=30)


def test_seats_let_several_runs_share_a_gpu_and_a_multi_gpu_run_takes_distinct_ones(tmp_path: Path) -> None:
    pool = GpuPool(tmp_path / "pool.json", ["a", "b"], seats=2)
    assert pool.reserve(1, run_id=1, prefer="a") == ["a"]
    assert pool.reserve(1, run_id=2, prefer="a") == ["a"]
    assert pool.reserve(2, run_id=3) is None  # "a" is full
    assert pool.reserve(1, run_id=4, prefer="a") == ["b"]
    pool.release(1)
    assert sorted(pool.reserve(2, run_id=5) or []) == ["a", "b"]


def test_a_dead_holder_frees_its_gpus(tmp_path: Path) -> None:
    pool = GpuPool(tmp_path / "pool.json", ["0", "1"])
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        assert pool.reserve(2, run_id=1, pid=child.pid) == ["0", "1"]
        assert pool.reserve(1, run_id=2) is None
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert pool.reserve(1, run_id=2) == ["0"]  # the killed slot's reservation is gone


def _grab(path: str, run_id: int, out: multiprocessing.Queue) -> None:
    pool = GpuPool(path, [str(i) for i in range(8)])
    out.put(pool.reserve(2, run_id=run_id))
    multiprocessing.Event().wait(0.5)  # hold while the others reserve


def test_slot_processes_racing_never_share_a_gpu(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    out: multiprocessing.Queue = ctx.Queue()
    procs = [ctx.Process(target=_grab, args=(str(tmp_path / "pool.json"), i, out)) for i in range(5)]
    for p in procs:
        p.start()
    results = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=120)
    granted = [r for r in results if r is not None]
    ids = [g for r in granted for g in r]
    assert len(ids) == len(set(ids)) and len(granted) >= 1  # 8 GPUs: at most 4 runs of 2, none shared
    assert all(len(r) == 2 for r in granted)


def test_submit_refuses_more_gpus_than_any_live_worker_has(sqlite_stack) -> None:
    """A (fake) worker with 2 GPUs registers; 4 GPUs are refused naming trainer.devices and the
    largest worker's count; a CPU run with devices=4 is not."""
    token = sqlite_stack.worker_token()
    fake = httpx.post(f"{sqlite_stack.base_url}/api/v1/workers", headers={"Authorization": f"Bearer {token}"},
                      json={"name": f"fake-gpu-box-{os.getpid()}", "queues": ["nowhere"], "gpus": ["0", "1"]})
    assert fake.status_code == 200 and fake.json()["gpus"] == ["0", "1"], fake.text
    listed = sqlite_stack.client.get("/api/v1/workers").json()
    assert any(w["gpus"] == ["0", "1"] for w in listed), listed
    refused = sqlite_stack.client.post("/api/v1/runs", json={
        "recipe": "slow_regression", "trainer": {"devices": 4, "accelerator": "gpu", "max_epochs": 1}})
    assert refused.status_code == 422, refused.text
    body = refused.json()
    assert "trainer.devices" in refused.text and "the largest has 2" in refused.text, body
    bad = sqlite_stack.client.post("/api/v1/runs", json={"recipe": "slow_regression",
                                                        "trainer": {"devices": "four", "max_epochs": 1}})
    assert bad.status_code == 422 and "devices" in bad.text, bad.text
    bad = sqlite_stack.client.post("/api/v1/runs", json={"recipe": "slow_regression",
                                                        "trainer": {"strategy": "fsdp", "max_epochs": 1}})
    assert bad.status_code == 422 and "strategy" in bad.text, bad.text
    ok = sqlite_stack.client.post("/api/v1/runs", json={
        "recipe": "slow_regression", "queue": "nowhere",
        "trainer": {"devices": 4, "accelerator": "cpu", "max_epochs": 1}})
    assert ok.status_code == 201, ok.text
    sqlite_stack.client.post(f"/api/v1/runs/{ok.json()['id']}/cancel", headers={"Content-Type": "application/json"})
    bad_gpus = httpx.post(f"{sqlite_stack.base_url}/api/v1/workers", headers={"Authorization": f"Bearer {token}"},
                          json={"name": "x", "gpus": [""]})
    assert bad_gpus.status_code == 422 and "gpus" in bad_gpus.text


def test_runyard_worker_gives_every_slot_the_hosts_gpus() -> None:
    from server.cli import worker_slots

    slots = worker_slots("0,1,2,3", None)
    assert [s["CUDA_VISIBLE_DEVICES"] for s in slots] == ["0", "1", "2", "3"]
    assert {s["RUNYARD_WORKER_GPUS"] for s in slots} == {"0,1,2,3"} and {s["RUNYARD_GPU_SEATS"] for s in slots} == {"1"}
    two = worker_slots("4,5", 2)
    assert len(two) == 4 and {s["RUNYARD_GPU_SEATS"] for s in two} == {"2"}
    assert "RUNYARD_WORKER_GPUS" not in worker_slots("none", 2)[0]


def test_runyard_logger_on_a_rank_other_than_zero_sends_nothing(monkeypatch, tmp_path: Path) -> None:
    """A rank > 0 of a multi-process run: no run created, no heartbeat or sender thread, every
    call a no-op (the server named here does not exist: any request would fail or hang)."""
    import threading

    from trainer_core.loggers.runyard import RunyardLogger
    from trainer_core.utilities.rank_zero import rank_zero_only

    monkeypatch.setattr(rank_zero_only, "rank", 1)
    before = threading.active_count()
    attached = RunyardLogger(url="http://127.0.0.1:9", run_id=5, save_dir=str(tmp_path / "run"), retry_for=0)
    own = RunyardLogger(url="http://127.0.0.1:9", project="p", save_dir=str(tmp_path / "own"), retry_for=0)
    for logger in (attached, own):
        logger.log_hyperparams({"lr": 0.1})
        logger.log_metrics({"loss": 1.0}, step=0)
        logger.upload_checkpoint(tmp_path / "none.ckpt", step=1, epoch=0, resumable=True)
        assert logger.flush(timeout=1) is True and logger.finish("succeeded") is True
        logger.finalize("success")
    assert own.run_id is None  # never created on the server
    assert threading.active_count() == before
    monkeypatch.setattr(rank_zero_only, "rank", 0)
    assert RunyardLogger(url="http://127.0.0.1:9", project="p", save_dir=str(tmp_path / "zero"))._inert is False
