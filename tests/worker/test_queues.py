"""Queue routing: a worker on queue "big" trains the runs submitted to "big" and nothing else."""

from __future__ import annotations

import signal
import subprocess
import time

import pytest

from tests.worker.stack import ROOT, Stack
from tests.worker.test_cli import RUNYARD
from tests.worker.test_e2e import TINY

pytestmark = pytest.mark.slow


def test_worker_on_big_queue_trains_only_big_runs(_sqlite_stack_for_session: Stack) -> None:
    stack = _sqlite_stack_for_session
    stack.kill_workers(signal.SIGTERM)  # no worker on the default queue for this test
    stack.start_worker("worker-big", queues="big")
    try:
        default = stack.submit("digits_classifier", {"batch_size": 32}, TINY)
        trainer = [arg for key, value in TINY.items() for arg in ("--trainer", f"{key}={value}")]
        submitted = subprocess.run([*RUNYARD, "submit", "digits_classifier", *trainer, "--queue", "big"],
                                   env={**stack.env, "RUNYARD_PUBLIC_URL": stack.base_url}, cwd=ROOT,
                                   capture_output=True, text=True, timeout=60)
        assert submitted.returncode == 0, submitted.stdout + submitted.stderr
        big = stack.run(int(submitted.stdout.split()[1]))
        assert (default["queue"], big["queue"]) == ("runyard", "big")
        done = stack.wait_status(big["id"], "succeeded", timeout=120)
        assert done["queue"] == "big" and done["worker_host"]
        time.sleep(1)  # the big worker is idle now: it never takes the default queue's run
        assert stack.run(default["id"])["status"] == "queued"
        assert stack.client.post(f"/api/v1/runs/{default['id']}/cancel", json={}).json()["status"] == "cancelled"
    finally:
        stack.kill_workers(signal.SIGTERM)  # the next test's fixture starts a default-queue worker
