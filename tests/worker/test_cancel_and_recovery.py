"""Cancel (queued and running) and recovery from a SIGKILLed worker, with real processes."""

from __future__ import annotations

import signal
import time

import pytest

from tests.worker.stack import Stack
from tests.worker.test_e2e import queued_messages

pytestmark = pytest.mark.slow


def test_cancel_queued_and_running_runs(sqlite_stack: Stack) -> None:
    client = sqlite_stack.client
    long = sqlite_stack.submit("slow_regression", {"step_delay": 0.02, "n": 100_000},
                               {"max_epochs": 1, "log_every_n_steps": 1, "limit_val_batches": 0})["id"]
    sqlite_stack.wait_status(long, "running", timeout=60)
    sqlite_stack.wait_metric(long, "train_loss", 5)

    # The worker is busy: this one waits in the queue, and is cancelled there.
    queued = sqlite_stack.submit("slow_regression", {}, {"max_epochs": 1})["id"]
    assert sqlite_stack.run(queued)["status"] == "queued"
    # The broker message carries the run id only (everything else is read from the database).
    [message] = [m for m in queued_messages(sqlite_stack) if m["args"] == [queued]]
    assert message["task"] == "runyard.execute_run" and message["kwargs"] == {}
    assert message["content_type"] == "application/json"
    response = client.post(f"/api/v1/runs/{queued}/cancel", json={})
    assert response.status_code == 200 and response.json()["status"] == "cancelled"

    started = time.monotonic()
    response = client.post(f"/api/v1/runs/{long}/cancel", json={})
    assert response.status_code == 200 and response.json()["cancel_requested"] is True
    run = sqlite_stack.wait_status(long, "cancelled", timeout=20)
    assert time.monotonic() - started < 10, "a running run must stop within a few seconds"
    assert run["ended_at"] and run["error"] is None

    steps = sqlite_stack.metrics(long, "train_loss")["train_loss"]["steps"]
    checkpoints = client.get(f"/api/v1/runs/{long}/checkpoints").json()
    last = [c for c in checkpoints if c["is_last"]]
    # saved where the run stopped: at the start of the batch that was running
    assert len(last) == 1 and last[0]["step"] == max(steps), (last, steps[-3:])
    assert client.post(f"/api/v1/runs/{long}/cancel", json={}).status_code == 409

    # The cancelled message is skipped, and the worker goes on with the next run.
    after = sqlite_stack.submit("slow_regression", {"n": 64}, {"max_epochs": 1})["id"]
    sqlite_stack.wait_status(after, "succeeded", timeout=60)
    assert sqlite_stack.run(queued)["status"] == "cancelled" and sqlite_stack.run(queued)["attempt"] == 0
    # its message was taken off the queue (skipped and acknowledged), never run
    assert not [m for m in queued_messages(sqlite_stack) if m["args"] == [queued]]
    logs = client.get(f"/api/v1/runs/{queued}/logs?tail=10").json()["lines"]
    assert logs == []


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres_redis", marks=[pytest.mark.postgres,
                                                                                       pytest.mark.redis])])
def test_sigkilled_worker_run_resumes_from_last_checkpoint(backend: str, request: pytest.FixtureRequest) -> None:
    stack: Stack = request.getfixturevalue("sqlite_stack" if backend == "sqlite" else "pg_redis_stack")
    client = stack.client
    total = 150
    run_id = stack.submit(
        "slow_regression", {"step_delay": 0.03, "n": total * 8},
        {"max_epochs": 1, "log_every_n_steps": 1, "checkpoint_every_n_train_steps": 20, "limit_val_batches": 1},
    )["id"]
    stack.wait_status(run_id, "running", timeout=60)
    last = stack.wait_last_checkpoint(run_id, 40)
    stack.wait_metric(run_id, "train_loss", last["step"] + 5)
    stack.kill_workers()  # SIGKILL: no cleanup, no ack, no final status
    assert stack.run(run_id)["status"] == "running"

    stack.start_worker("worker2")
    run = stack.wait_status(run_id, "succeeded", timeout=90)
    assert run["attempt"] == 2
    steps = stack.metrics(run_id, "train_loss")["train_loss"]["steps"]
    assert steps == list(range(total)), f"duplicates or gaps: {len(steps)} points, {sorted(set(range(total)) - set(steps))[:10]}"
    logs = client.get(f"/api/v1/runs/{run_id}/logs?tail=500").json()["lines"]
    assert any("attempt 2: resuming from" in line["text"] for line in logs)


def test_sigterm_stops_the_run_at_a_checkpoint_and_requeues_it(sqlite_stack: Stack) -> None:
    client = sqlite_stack.client
    total = 120
    run_id = sqlite_stack.submit("slow_regression", {"step_delay": 0.03, "n": total * 8},
                                 {"max_epochs": 1, "log_every_n_steps": 1, "limit_val_batches": 1})["id"]
    sqlite_stack.wait_status(run_id, "running", timeout=60)
    sqlite_stack.wait_metric(run_id, "train_loss", 20)
    sqlite_stack.kill_workers(signal.SIGTERM)  # warm shutdown: the worker exits by itself
    run = sqlite_stack.run(run_id)
    assert run["status"] == "queued" and run["attempt"] == 0, run  # a clean stop costs no attempt
    last = [c for c in client.get(f"/api/v1/runs/{run_id}/checkpoints").json() if c["is_last"]]
    assert len(last) == 1 and last[0]["step"] >= 20

    sqlite_stack.start_worker("worker4")
    run = sqlite_stack.wait_status(run_id, "succeeded", timeout=90)
    assert run["attempt"] == 1
    steps = sqlite_stack.metrics(run_id, "train_loss")["train_loss"]["steps"]
    assert steps == sorted(set(steps)) and steps[0] == 0 and steps[-1] == total - 1
