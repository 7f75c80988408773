"""A worker run whose checkpoint does not fit its run folder (issue 11, point 6): the worker's
work folder is a 64 KiB tmpfs (root; see need_service), so a few checkpoints in, the next one
fails; the run fails with "no space left on device writing <checkpoint>" and the checkpoints it
uploaded before stay on the server, whole."""

from __future__ import annotations

import hashlib
import os
import signal

import pytest

from tests.helpers.tmpfs import mounted_tmpfs
from tests.worker.stack import Stack


@pytest.mark.slow
def test_a_run_whose_checkpoint_does_not_fit_fails_with_the_path_and_keeps_the_earlier_ones(
        _sqlite_stack_for_session: Stack, tmp_path) -> None:
    stack = _sqlite_stack_for_session
    home = tmp_path / "worker-home"
    with mounted_tmpfs(home / "work", "64k") as work:
        worker = stack.start_worker("worker-full-disk", queues="fulldisk", home=home)
        try:
            run = stack.submit("slow_regression", {"n": 512}, {
                "max_epochs": 1, "checkpoint_every_n_train_steps": 1, "checkpoint_save_top_k": -1,
                "limit_val_batches": 0}, queue="fulldisk")
            done = stack.wait_status(run["id"], ("failed", "succeeded"), timeout=120)
            error = done["error"] or ""
            assert done["status"] == "failed" and error.startswith("no space left on device writing "), done
            path = error.removeprefix("no space left on device writing ").split(";", 1)[0]
            assert path.startswith(f"{work}/run-{run['id']}-attempt-1/checkpoints/") and path.endswith(".ckpt"), error
            assert "earlier checkpoints are kept" in error
            stored = stack.client.get(f"/api/v1/runs/{run['id']}/checkpoints").json()
            assert stored and all(c["size"] > 0 and c["sha256"] for c in stored), stored
            for checkpoint in stored:  # whole: the bytes match the sha256 the server recorded
                r = stack.client.get(f"/api/v1/checkpoints/{checkpoint['id']}/download")
                assert r.status_code == 200 and r.headers["X-Checksum-SHA256"] == checkpoint["sha256"]
                assert hashlib.sha256(r.content).hexdigest() == checkpoint["sha256"]
        finally:
            if worker.poll() is None:
                os.killpg(worker.pid, signal.SIGTERM)
                worker.wait(timeout=60)
            stack.workers = [p for p in stack.workers if p is not worker]
