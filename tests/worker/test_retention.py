"""Quotas with a real worker (issue 11, point 2): a run that saves a checkpoint every step with
``save_top_k=-1`` keeps only the retention policy's set, on the server and in the worker's run
folder; a run that logs past its project's points quota ends failed with a message naming the
quota and how to raise it; an external script's RunyardLogger raises that error."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.worker.stack import ROOT, Stack


def set_quota(stack: Stack, project: str, *options: str) -> str:
    """``runyard project quota PROJECT ...`` on the server's machine (it opens the database)."""
    out = subprocess.run([sys.executable, "-m", "server.cli", "project", "quota", project, *options],
                         env=stack.env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_every_step_checkpoints_keep_only_the_policy_set_on_server_and_worker(sqlite_stack: Stack) -> None:
    stack = sqlite_stack
    printed = set_quota(stack, "retention-w", "--keep-last", "2", "--keep-best", "0", "--keep-every", "0")
    assert "keep_last" in printed and "(set)" in printed
    run = stack.submit("slow_regression", {"n": 480, "step_delay": 0.05}, {
        "max_epochs": 1, "checkpoint_every_n_train_steps": 1, "checkpoint_save_top_k": -1,
        "limit_val_batches": 0, "log_every_n_steps": 1}, project="retention-w")
    assert run["trainer"]["max_time"] == "03:00:00:00"  # every queued run gets the longest run time
    work = Path(stack.env["RUNYARD_HOME"]) / "work" / f"run-{run['id']}-attempt-1" / "checkpoints"
    most_local = 0
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if work.is_dir():
            local = [p for p in work.glob("epoch=*.ckpt")]
            most_local = max(most_local, len(local))
        status = stack.run(run["id"])["status"]
        if status in ("succeeded", "failed", "cancelled"):
            break
        time.sleep(0.05)
    done = stack.wait_status(run["id"], "succeeded", timeout=30)
    stored = stack.client.get(f"/api/v1/runs/{run['id']}/checkpoints").json()
    names = [c["path"].rsplit("/", 1)[-1] for c in stored]
    every_step = sorted((c for c in stored if not c["resumable"]), key=lambda c: c["id"])
    resume = [c for c in stored if c["resumable"]]
    # 60 steps saved 60 ModelCheckpoint files and 60 resume checkpoints; the policy keeps the 2 newest
    # (by registration), the flagged best and last, and the resume point
    assert done["status"] == "succeeded"
    assert len(every_step) <= 3 and len(resume) == 1, names
    assert every_step[-1]["step"] >= 59, names
    flagged = {c["id"] for c in stored if c["is_best"] or c["is_last"]}
    newest_two = {c["id"] for c in sorted(stored, key=lambda c: c["id"])[-2:]}
    assert {c["id"] for c in stored} == flagged | newest_two | {resume[0]["id"]}, stored
    for checkpoint in stored:  # what is kept is whole and downloadable
        r = stack.client.get(f"/api/v1/checkpoints/{checkpoint['id']}/download")
        assert r.status_code == 200 and len(r.content) == checkpoint["size"]
    # the worker's run folder never held more than the policy's set plus the few uploads in flight
    assert 0 < most_local <= 6, most_local
    artifacts = Path(stack.env["RUNYARD_HOME"]) / "artifacts" / str(run["id"]) / "checkpoints"
    assert sorted(p.name for p in artifacts.glob("*.ckpt")) == sorted(names)
    reset = set_quota(stack, "retention-w", "--keep-last", "default")
    assert any(line.split()[:1] == ["keep_last"] and "(default)" in line for line in reset.splitlines()), reset


def test_a_run_past_its_points_quota_fails_naming_the_quota(sqlite_stack: Stack) -> None:
    stack = sqlite_stack
    set_quota(stack, "points-w", "--points-per-run", "60")
    run = stack.submit("slow_regression", {"n": 800, "step_delay": 0.01}, {
        "max_epochs": 1, "limit_val_batches": 0, "log_every_n_steps": 1}, project="points-w")
    done = stack.wait_status(run["id"], ("failed", "succeeded"), timeout=180)
    assert done["status"] == "failed", done
    error = done["error"] or ""
    assert error.startswith("Runyard refused this run's data: "), error
    for part in ("points_per_run", "60", "runyard project quota points-w --points-per-run N",
                 "PUT /api/v1/projects/"):
        assert part in error, (part, error)
    keys = stack.client.get(f"/api/v1/runs/{run['id']}/metric-keys").json()
    assert sum(k["count"] for k in keys) <= 60  # nothing past the quota was stored


@pytest.fixture
def tiny_points_project(sqlite_stack: Stack) -> Stack:
    set_quota(sqlite_stack, "points-script", "--points-per-run", "5")
    return sqlite_stack


def test_a_scripts_logger_raises_the_quota_error(tiny_points_project: Stack, tmp_path: Path) -> None:
    stack = tiny_points_project
    script = tmp_path / "script.py"
    script.write_text(
        "import time\n"
        "from trainer_core.loggers.runyard import QuotaExceeded, RunyardLogger\n"
        f"logger = RunyardLogger(url={stack.base_url!r}, project='points-script', save_dir={str(tmp_path)!r},\n"
        "                        heartbeat_interval=0, system_metrics=False, environment=False, capture=False)\n"
        "try:\n"
        "    for step in range(1000):\n"
        "        logger.log_metrics({'a': 1.0, 'b': 2.0}, step=step)\n"
        "        logger.flush(timeout=30)\n"
        "except QuotaExceeded as exc:\n"
        "    print('RAISED', exc.quota, str(exc))\n"
        "    logger.finalize('failed')\n"
        "    raise SystemExit(0)\n"
        "raise SystemExit('never refused')\n")
    out = subprocess.run([sys.executable, str(script)], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         env={k: v for k, v in stack.env.items() if k not in ("RUNYARD_TOKEN",)})
    assert out.returncode == 0, out.stdout + out.stderr
    line = next(x for x in out.stdout.splitlines() if x.startswith("RAISED"))
    assert line.startswith("RAISED points_per_run Runyard refused this run's data: ") and "--points-per-run N" in line


def test_a_run_ending_while_a_refusal_is_in_flight_is_failed_by_it(tiny_points_project: Stack, tmp_path: Path) -> None:
    """The points go out with the final status: the batch is refused, so the run is failed, not succeeded."""
    stack = tiny_points_project
    script = tmp_path / "burst.py"
    script.write_text(
        "from trainer_core.loggers.runyard import RunyardLogger\n"
        f"logger = RunyardLogger(url={stack.base_url!r}, project='points-script', save_dir={str(tmp_path)!r},\n"
        "                        heartbeat_interval=0, system_metrics=False, environment=False, capture=False,\n"
        "                        flush_interval=3600)\n"
        "for step in range(10):\n"
        "    logger.log_metrics({'a': 1.0}, step=step)\n"
        "logger.finalize('success')\n"
        "print('RUN', logger.run_id)\n")
    out = subprocess.run([sys.executable, str(script)], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         env={k: v for k, v in stack.env.items() if k != "RUNYARD_TOKEN"})
    assert out.returncode == 0, out.stdout + out.stderr
    run_id = int(next(x for x in out.stdout.splitlines() if x.startswith("RUN ")).split()[1])
    run = stack.run(run_id)
    assert run["status"] == "failed", run
    assert run["error"].startswith("Runyard refused this run's data: ") and "points_per_run" in run["error"], run
    assert stack.client.get(f"/api/v1/runs/{run_id}/metric-keys").json() == []  # nothing of the batch stored
