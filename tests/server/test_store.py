"""Store functions workers use: claim, heartbeat, requeue, cancel, delete-after (both backends)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import update

from server import store
from server.db import get_engine, session_scope
from server.models import Run, utcnow


@pytest.fixture
def session(app_settings, client):  # client: the app has migrated the database
    with session_scope(get_engine(app_settings.database_url)) as s:
        yield s


def test_claim_is_atomic_and_counts_attempts(session):
    run = store.create_run(session, recipe="digits")
    claimed = store.claim_run(session, run.id, "host-a", "cpu")
    assert claimed.status == "running" and claimed.attempt == 1 and claimed.worker_host == "host-a"
    assert store.claim_run(session, run.id, "host-b", "cpu") is None  # duplicate delivery
    assert store.claim_run(session, 10**9, "host-b", "cpu") is None
    assert store.heartbeat(session, run.id) is False
    store.request_cancel(session, run.id)
    assert store.heartbeat(session, run.id) is True and store.is_cancel_requested(session, run.id)
    assert store.set_status(session, run.id, "cancelled").status == "cancelled"
    with pytest.raises(store.Conflict):
        store.set_status(session, run.id, "running")
    cancelled = store.create_run(session, recipe="digits")
    store.request_cancel(session, cancelled.id)
    assert store.claim_run(session, cancelled.id, "h", "cpu") is None


def test_requeue_stale_runs(session):
    stale = store.create_run(session, recipe="digits", max_attempts=2)
    store.claim_run(session, stale.id, "h", "cpu")
    fresh = store.create_run(session, recipe="digits")
    store.claim_run(session, fresh.id, "h", "cpu")
    old = utcnow() - timedelta(seconds=120)
    session.execute(update(Run).where(Run.id == stale.id).values(heartbeat_at=old))
    session.commit()
    requeued = store.requeue_stale_runs(session, timeout=30)
    assert [r.id for r in requeued] == [stale.id] and requeued[0].status == "queued" and requeued[0].task_id
    assert store.get_run(session, fresh.id).status == "running"
    store.claim_run(session, stale.id, "h2", "cpu")
    session.execute(update(Run).where(Run.id == stale.id).values(heartbeat_at=old))
    session.commit()
    assert store.requeue_stale_runs(session, timeout=30) == []
    failed = store.get_run(session, stale.id)
    assert failed.status == "failed" and "2 attempts" in failed.error


def test_delete_points_after_step_keeps_rollups_right(session):
    run = store.create_run(session, recipe="external", status="running")
    store.add_metric_points(session, run.id, [("loss", i, float(i), 0, 0.0) for i in range(1000)])
    assert store.delete_metric_points_after(session, run.id, 499) == 500
    store.add_metric_points(session, run.id, [("loss", i, -1.0, 1, 0.0) for i in range(500, 1000)])
    series = store.read_metrics(session, run.id, ["loss"], max_points=10)["loss"]
    assert series["total_points"] == 1000 and series["steps"][0] == 0 and series["steps"][-1] == 999
    assert min(series["values"]) == -1.0 and max(series["values"]) == 499.0
    keys = store.metric_keys(session, run.id)
    assert keys[0]["count"] == 1000


def test_rollups_survive_deletes_by_other_code(session):
    """A worker deleting points with its own SQL (not through the store) must not leave stale
    rollups behind: the delete trigger marks blocks and the next read recomputes them."""
    from sqlalchemy import delete

    from server.models import MetricPoint

    run = store.create_run(session, recipe="external", status="running")
    store.add_metric_points(session, run.id, [("loss", i, float(i % 97), 0, 0.0) for i in range(5000)])
    store.add_metric_points(session, run.id, [("loss", 4000, 1000.0, 0, 0.0)])  # the max, about to go
    session.execute(delete(MetricPoint).where(MetricPoint.run_id == run.id, MetricPoint.step >= 3000))
    session.commit()
    store.add_metric_points(session, run.id, [("loss", i, -1.0, 1, 0.0) for i in range(3000, 3500)])
    series = store.read_metrics(session, run.id, ["loss"], max_points=50)["loss"]
    assert series["total_points"] == 3500 and series["steps"][-1] == 3499
    assert max(series["values"]) == 96.0 and min(series["values"]) == -1.0
