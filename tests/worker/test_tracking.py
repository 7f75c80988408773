"""The tracking logger, the heartbeat and the reaper against a real SQLite database (in process)."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import update
from sqlalchemy.orm import Session

from server import store
from server.db import get_engine, upgrade_database
from server.models import Run, utcnow
from server.settings import Settings
from worker import store_ext
from worker.capture import capture_output
from worker.heartbeat import RunHeartbeat, reap_stale_runs
from worker.tracking import TrackingLogger, sha256_of


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    settings = Settings(home=tmp_path / "home", heartbeat_timeout=1.0)
    settings.ensure_dirs()
    upgrade_database(settings.database_url)
    return settings


def running_run(settings: Settings, **values) -> tuple[object, int, int]:
    engine = get_engine(settings.database_url)
    with Session(engine) as s:
        run = store.create_run(s, recipe="digits_classifier", max_attempts=values.pop("max_attempts", 3))
        run = store.claim_run(s, run.id, "test", "cpu")
        return engine, run.id, run.attempt


def test_metrics_are_buffered_and_written_by_the_thread(settings: Settings) -> None:
    engine, run_id, _ = running_run(settings)
    logger = TrackingLogger(engine, run_id, settings.artifact_root, flush_interval=0.2)
    started = time.perf_counter()
    for step in range(2000):
        logger.log_metrics({"loss": 1.0 / (step + 1), "acc": float("nan"), "epoch": step // 1000}, step)
    per_call = (time.perf_counter() - started) / 4000
    assert per_call < 1e-3  # the loop never waits on the database
    logger.log_hyperparams({"lr": 0.1, "nested": {"a": 1}})
    logger.log_model_summary({"total_params": 10, "layers": []})
    with capture_output(logger.log_lines):
        print("hello from the run")
        print("progress 10%\rprogress 100%")
    assert logger.flush(timeout=30)
    with Session(engine) as s:
        series = store.read_metrics(s, run_id, ["loss", "acc"], max_points=100000)
        assert series["loss"]["steps"] == list(range(2000)) and series["loss"]["epochs"][-1] == 1
        assert series["acc"]["total_points"] == 2000
        assert store.get_summary(s, run_id)["total_params"] == 10
        assert store.require_run(s, run_id).hyperparameters["lr"] == 0.1
        texts = [line.text for line in store.get_log_lines(s, run_id, tail=10)[0]]
        assert "hello from the run" in texts and "progress 100%" in texts and "progress 10%" not in texts
    logger.close()


def test_checkpoints_are_registered_after_the_points_before_them(settings: Settings, tmp_path: Path) -> None:
    engine, run_id, _ = running_run(settings)
    logger = TrackingLogger(engine, run_id, settings.artifact_root, flush_interval=10)  # only explicit wakes
    ckpt_dir = settings.artifact_root / str(run_id) / "checkpoints"
    ckpt_dir.mkdir(parents=True)
    for step in range(10):
        logger.log_metrics({"loss": 1.0}, step)
    first = ckpt_dir / "last-epoch=0-step=10.ckpt"
    first.write_bytes(b"a" * 100)
    logger.register_checkpoint(first, step=10, epoch=0)
    assert logger.flush(timeout=30)
    with Session(engine) as s:
        rows = store.list_checkpoints(s, run_id)
        assert len(rows) == 1 and rows[0].is_last and rows[0].step == 10 and rows[0].size == 100
        assert rows[0].sha256 == sha256_of(first) and rows[0].path == f"{run_id}/checkpoints/{first.name}"
        assert store.read_metrics(s, run_id, ["loss"])["loss"]["total_points"] == 10

    class FakeTopK:  # what a ModelCheckpoint exposes after saving (plain attributes, not a mock of ours)
        monitor = "val_loss"
        best_k_models = {}
        best_model_path = ""
        best_model_score = None

    best = ckpt_dir / "epoch=0-step=12.ckpt"
    best.write_bytes(b"b" * 50)
    callback = FakeTopK()
    callback.best_k_models = {str(best): 0.25}
    callback.best_model_path, callback.best_model_score = str(best), 0.25
    logger.after_save_checkpoint(callback)
    second = ckpt_dir / "last-epoch=0-step=20.ckpt"
    second.write_bytes(b"c" * 10)
    logger.register_checkpoint(second, step=20, epoch=0)
    assert logger.flush(timeout=30)
    with Session(engine) as s:
        rows = {Path(r.path).name: r for r in store.list_checkpoints(s, run_id)}
    assert set(rows) == {best.name, second.name}  # the older resume checkpoint is pruned, file and row
    assert not first.exists()
    assert rows[best.name].is_best and rows[best.name].score == 0.25 and rows[best.name].monitor == "val_loss"
    assert rows[second.name].is_last and not rows[second.name].is_best
    logger.close()


def test_heartbeat_reports_cancel_and_loss(settings: Settings) -> None:
    engine, run_id, attempt = running_run(settings)
    beat = RunHeartbeat(engine, run_id, attempt, interval=0.05).start()
    try:
        time.sleep(0.2)
        assert not beat.stop_requested.is_set()
        with Session(engine) as s:
            store.request_cancel(s, run_id)
        assert beat.stop_requested.wait(5) and beat.cancel.is_set() and not beat.lost.is_set()
    finally:
        beat.close()
    # another attempt owns the run now: this worker's heartbeat learns it lost it
    with Session(engine) as s:
        s.execute(update(Run).where(Run.id == run_id).values(attempt=attempt + 1, cancel_requested=False))
        s.commit()
        assert store_ext.heartbeat_attempt(s, run_id, attempt) == store_ext.LOST
        assert not store_ext.finish_run(s, run_id, attempt, "succeeded")


def test_reaper_requeues_stale_runs_and_fails_them_after_max_attempts(settings: Settings) -> None:
    from server.queue import make_celery

    engine, run_id, attempt = running_run(settings, max_attempts=2)
    with Session(engine) as s:
        s.execute(update(Run).where(Run.id == run_id).values(heartbeat_at=utcnow() - timedelta(seconds=5)))
        s.commit()
    assert reap_stale_runs(settings, engine) == [run_id]
    with Session(engine) as s:
        run = store.require_run(s, run_id)
        assert run.status == "queued" and run.task_id
    # the new task is really on the broker
    app = make_celery(settings)
    with app.connection_for_read() as conn:
        message = conn.SimpleQueue("runyard").get(timeout=5)
        assert message.headers["id"] == run.task_id and message.headers["task"] == "runyard.execute_run"
        message.ack()
    # second attempt dies too: out of attempts -> failed with a sentence
    with Session(engine) as s:
        assert store.claim_run(s, run_id, "w", "cpu").attempt == 2
        s.execute(update(Run).where(Run.id == run_id).values(heartbeat_at=utcnow() - timedelta(seconds=5)))
        s.commit()
    assert reap_stale_runs(settings, engine) == []
    with Session(engine) as s:
        run = store.require_run(s, run_id)
        assert run.status == "failed" and "2 attempts" in run.error


def test_a_logger_whose_run_moved_to_another_attempt_writes_nothing(settings: Settings) -> None:
    engine, run_id, attempt = running_run(settings)
    logger = TrackingLogger(engine, run_id, settings.artifact_root, flush_interval=0.05, attempt=attempt)
    logger.log_metrics({"loss": 1.0}, 0)
    assert logger.flush(timeout=30) and not logger.lost
    # the reaper requeued the run and another worker claimed it (attempt 2)
    with Session(engine) as s:
        s.execute(update(Run).where(Run.id == run_id).values(status="queued"))
        s.commit()
        assert store.claim_run(s, run_id, "other", "cpu").attempt == attempt + 1
    logger.log_metrics({"loss": 2.0}, 1)
    assert logger.flush(timeout=30)
    assert logger.lost
    with Session(engine) as s:
        assert store.read_metrics(s, run_id, ["loss"])["loss"]["steps"] == [0]
    logger.close()
