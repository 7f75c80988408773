"""Multi-process runs in the job queue (issue 13, points 6 and 7), on a real server and a real
Celery worker: a worker given (made-up) GPU ids reserves them for a run's ranks, each rank is a
process with torchrun's environment training with the real ``Trainer(strategy="ddp")`` on CPU
(gloo), only rank 0 reports, and a rank that dies ends the run at once, leaves no process behind
and the run is retried from its last checkpoint."""

from __future__ import annotations

import os
import re
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.worker.stack import Stack, stack_env

RECIPES = "tests.worker.recipes_for_tests,tests.worker.ddp_recipes"
DDP = {"devices": 2, "strategy": "ddp", "max_epochs": 1, "limit_val_batches": 2, "log_every_n_steps": 1}


@pytest.fixture(scope="module")
def ddp_stack(tmp_path_factory: pytest.TempPathFactory, small_mnist: Path) -> Iterator[Stack]:
    home = tmp_path_factory.mktemp("runyard-ddp")
    stack = Stack(stack_env(home, small_mnist, RUNYARD_RECIPES=RECIPES, RUNYARD_MAX_ATTEMPTS="2"), home / "logs")
    try:
        stack.start_server()
        # two slots of one host sharing the reservation file of its two (made-up) GPUs, as
        # `runyard worker --gpus 7,9` starts them
        for slot in ("slot-a", "slot-b"):
            stack.start_worker(slot, RUNYARD_WORKER_GPUS="7,9", RUNYARD_GPU_POOL=str(home / "gpu-reservations.json"),
                               RUNYARD_WORKER_GPU="7" if slot == "slot-a" else "9")
        yield stack
    finally:
        stack.close()


def logs(stack: Stack, run_id: int) -> list[str]:
    return [line["text"] for line in stack.client.get(f"/api/v1/runs/{run_id}/logs?tail=2000").json()["lines"]]


def worker_logs(stack: Stack) -> str:
    return stack.read_log("slot-a") + stack.read_log("slot-b")


def wait_for(what: str, check, timeout: float = 180):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def rank_pids(stack: Stack, run_id: int, attempt: int) -> list[int]:
    pattern = re.compile(rf"run {run_id} attempt {attempt}: 2 ranks, pids (\d+), (\d+)")
    found = wait_for(f"the ranks of run {run_id} attempt {attempt}", lambda: pattern.search(worker_logs(stack)))
    return [int(found.group(1)), int(found.group(2))]


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_a_two_rank_run_trains_on_its_reserved_gpus_and_only_rank_zero_reports(ddp_stack: Stack) -> None:
    run = ddp_stack.submit("rank_probe", {"n": 256, "batch_size": 8}, DDP, name=f"ddp-{uuid.uuid4().hex[:6]}")
    done = ddp_stack.wait_status(run["id"], ("succeeded", "failed"), timeout=240)
    assert done["status"] == "succeeded", done
    assert done["device"] == "cuda:7,9 (no CUDA driver) x2", done  # both made-up GPUs reserved
    texts = logs(ddp_stack, run["id"])
    assert any("[probe] rank=0 global_rank=0 world=2 cvd=7,9" in t for t in texts), texts
    assert not any("[probe] rank=1" in t for t in texts), texts  # rank 1 sends nothing to the server
    assert "[probe] rank=1 global_rank=1 world=2 cvd=7,9" in worker_logs(ddp_stack)
    # the DistributedSampler halves each rank's epoch: 256 / 8 / 2 = 16 steps, logged once
    steps = ddp_stack.metrics(run["id"], "train_loss")["train_loss"]["steps"]
    assert sorted(steps) == list(range(16)), steps
    for pid in rank_pids(ddp_stack, run["id"], 1):
        wait_for(f"rank process {pid} to be gone", lambda pid=pid: not alive(pid), timeout=60)
    # the GPUs are free again: a one-GPU run gets one of them
    one = ddp_stack.submit("rank_probe", {"n": 64}, {"max_epochs": 1, "limit_val_batches": 1})
    done = ddp_stack.wait_status(one["id"], ("succeeded", "failed"), timeout=180)
    assert done["status"] == "succeeded" and re.fullmatch(r"cuda:[79] \(no CUDA driver\)", done["device"]), done


def test_a_run_that_does_not_fit_waits_queued_until_the_gpus_free_up(ddp_stack: Stack) -> None:
    big = ddp_stack.submit("rank_probe", {"n": 4096, "step_delay": 0.05}, DDP)
    ddp_stack.wait_status(big["id"], "running", timeout=120)
    small = ddp_stack.submit("rank_probe", {"n": 64}, {"max_epochs": 1, "limit_val_batches": 1})
    wait_for("the small run to wait for a GPU",
             lambda: f"run {small['id']} waits for 1 free GPU(s) of 7, 9" in worker_logs(ddp_stack), timeout=120)
    assert ddp_stack.run(small["id"])["status"] == "queued"  # waiting, not failed
    ddp_stack.client.post(f"/api/v1/runs/{big['id']}/cancel", headers={"Content-Type": "application/json"})
    # the cancel reaches both ranks (they stop together at the next step)
    assert ddp_stack.wait_status(big["id"], ("cancelled",), timeout=120)["status"] == "cancelled"
    for pid in rank_pids(ddp_stack, big["id"], 1):
        wait_for(f"rank process {pid} to be gone", lambda pid=pid: not alive(pid), timeout=60)
    done = ddp_stack.wait_status(small["id"], ("succeeded", "failed"), timeout=180)
    assert done["status"] == "succeeded", done


def test_a_killed_rank_ends_the_run_leaves_no_process_and_the_retry_resumes(ddp_stack: Stack) -> None:
    trainer = {**DDP, "checkpoint_every_n_train_steps": 5}
    run = ddp_stack.submit("rank_probe", {"n": 8192, "step_delay": 0.05}, trainer)
    run_id = run["id"]
    ddp_stack.wait_status(run_id, "running", timeout=120)
    first = rank_pids(ddp_stack, run_id, 1)
    ddp_stack.wait_last_checkpoint(run_id, min_step=10, timeout=180)
    os.kill(first[1], signal.SIGKILL)  # rank 1 dies (as the OOM killer would do it)
    wait_for("attempt 1's crash", lambda: f"run {run_id} attempt 1: rank 1 of 2 was killed by SIGKILL"
             in worker_logs(ddp_stack), timeout=60)
    for pid in first:
        wait_for(f"rank process {pid} to be gone", lambda pid=pid: not alive(pid), timeout=60)
    # retried like a crashed run: attempt 2 resumes from attempt 1's last checkpoint
    second = rank_pids(ddp_stack, run_id, 2)
    wait_for("the resume", lambda: any("attempt 2: resuming from its own checkpoint" in t
                                       for t in logs(ddp_stack, run_id)), timeout=120)
    ddp_stack.wait_last_checkpoint(run_id, min_step=20, timeout=180)
    os.kill(second[1], signal.SIGKILL)  # the last attempt (RUNYARD_MAX_ATTEMPTS=2): failed with the reason
    done = ddp_stack.wait_status(run_id, ("failed",), timeout=60)
    assert "rank 1 of 2 was killed by SIGKILL" in done["error"] and done["attempt"] == 2, done
    for pid in second:
        wait_for(f"rank process {pid} to be gone", lambda pid=pid: not alive(pid), timeout=60)
    # and nothing of the run is left in the process table
    leftovers = [p.pid for p in psutil.process_iter() if p.pid in (*first, *second) and alive(p.pid)]
    assert leftovers == []


def test_a_code_run_gets_the_ranks_and_its_trainer_joins_them(ddp_stack: Stack, small_mnist: Path,
                                                               tmp_path: Path) -> None:
    """A module code run (the team's own LightningModule) with devices=2 on CPU: two ranks, the
    DistributedSampler splits the data, rank 0 alone reports."""
    from tests.worker.test_code_runs import MODULE, copy_project, submit_code, upload

    snapshot = upload(ddp_stack, copy_project(tmp_path), f"code-ddp-{uuid.uuid4().hex[:6]}")
    trainer = {"devices": 2, "accelerator": "cpu", "strategy": "ddp", "max_steps": 6, "limit_val_batches": 2,
               "limit_test_batches": 2, "log_every_n_steps": 1}
    run = submit_code(ddp_stack, snapshot, MODULE, {"hidden": 16, "data_dir": str(small_mnist)}, trainer)
    done = ddp_stack.wait_status(run["id"], ("succeeded", "failed"), timeout=240)
    assert done["status"] == "succeeded" and done["device"] == "cpu x2", done
    assert sorted(ddp_stack.metrics(run["id"], "train_loss")["train_loss"]["steps"]) == list(range(6))
    rank_pids(ddp_stack, run["id"], 1)


def test_a_warm_shutdown_stops_every_rank_and_another_slot_resumes_the_run(ddp_stack: Stack) -> None:
    """The worker's SIGTERM (warm shutdown) reaches both ranks (SIGUSR1, then they agree to stop at
    the same step); rank 0 saves a resume checkpoint, the run goes back to the queue and the other
    slot of the host resumes it. Last in this module: it stops one of the two slots."""
    trainer = {**DDP, "checkpoint_every_n_train_steps": 5}
    run = ddp_stack.submit("rank_probe", {"n": 2048, "step_delay": 0.05}, trainer)
    run_id = run["id"]
    ddp_stack.wait_status(run_id, "running", timeout=120)
    pids = rank_pids(ddp_stack, run_id, 1)
    ddp_stack.wait_last_checkpoint(run_id, min_step=5, timeout=180)
    name = next(n for n in ("slot-a", "slot-b") if f"run {run_id} attempt 1: 2 ranks" in ddp_stack.read_log(n))
    worker = ddp_stack.workers[("slot-a", "slot-b").index(name)]
    os.kill(worker.pid, signal.SIGTERM)  # the Celery process only: the ranks hear it from the agent
    wait_for("the requeue", lambda: f"run {run_id} saved and requeued" in ddp_stack.read_log(name), timeout=120)
    for pid in pids:
        wait_for(f"rank process {pid} to be gone", lambda pid=pid: not alive(pid), timeout=60)
    done = ddp_stack.wait_status(run_id, ("succeeded", "failed"), timeout=240)
    assert done["status"] == "succeeded" and done["attempt"] == 1, done  # a warm shutdown is not counted
    texts = logs(ddp_stack, run_id)
    assert any("resuming from its own checkpoint" in t for t in texts), texts
