"""Store functions workers use: claim, heartbeat, requeue, cancel, delete-after (both backends)."""

from __future__ import annotations

import uuid
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
    claimed, resume, dropped = store.claim_run(session, run.id, "host-a", "cpu")
    assert claimed.status == "running" and claimed.attempt == 1 and claimed.worker_host == "host-a"
    assert resume is None and dropped == []
    assert store.claim_run(session, run.id, "host-b", "cpu") is None  # duplicate delivery
    assert store.claim_run(session, 10**9, "host-b", "cpu") is None
    assert store.heartbeat_run(session, run.id, attempt=1)["stop"] is False
    with pytest.raises(store.Conflict):
        store.heartbeat_run(session, run.id, attempt=2)  # not this attempt's run
    store.request_cancel(session, run.id)
    beat = store.heartbeat_run(session, run.id, attempt=1)
    assert beat["stop"] is True and beat["cancel_requested"] and store.is_cancel_requested(session, run.id)
    with pytest.raises(store.Conflict):
        store.finish_run(session, run.id, "cancelled", attempt=2)
    assert store.finish_run(session, run.id, "cancelled", attempt=1).status == "cancelled"
    with pytest.raises(store.Conflict):
        store.finish_run(session, run.id, "succeeded")  # finished runs never move again
    with pytest.raises(store.Conflict):
        store.set_status(session, run.id, "running")
    cancelled = store.create_run(session, recipe="digits")
    store.request_cancel(session, cancelled.id)
    assert store.claim_run(session, cancelled.id, "h", "cpu") is None


def test_transitions_are_enforced_in_one_place(session):
    from server.models import RunStatus

    assert store.TRANSITIONS[RunStatus.SUCCEEDED] == frozenset()
    run = store.create_run(session, recipe="digits")
    assert not store.move(session, run.id, "succeeded")  # queued -> succeeded is not a move
    assert store.move(session, run.id, "cancelled")
    assert not store.move(session, run.id, "queued")
    with pytest.raises(store.Invalid):
        store.move(session, run.id, "paused")


def test_requeue_stale_runs(session):
    stale = store.create_run(session, recipe="digits", max_attempts=2)
    store.claim_run(session, stale.id, "h", "cpu")
    fresh = store.create_run(session, recipe="digits")
    store.claim_run(session, fresh.id, "h", "cpu")
    old = utcnow() - timedelta(seconds=120)
    session.execute(update(Run).where(Run.id == stale.id).values(heartbeat_at=old))
    session.commit()
    # the database is shared by the session's tests: look only at this test's two runs
    requeued = [r for r in store.requeue_stale_runs(session, timeout=30) if r.id in (stale.id, fresh.id)]
    assert [r.id for r in requeued] == [stale.id] and requeued[0].status == "queued" and requeued[0].task_id
    assert store.get_run(session, fresh.id).status == "running"
    store.claim_run(session, stale.id, "h2", "cpu")
    session.execute(update(Run).where(Run.id == stale.id).values(heartbeat_at=old))
    session.commit()
    assert [r for r in store.requeue_stale_runs(session, timeout=30) if r.id in (stale.id, fresh.id)] == []
    failed = store.get_run(session, stale.id)
    assert failed.status == "failed" and "2 attempts" in failed.error


def test_reaper_fails_a_script_that_stopped_heartbeating_and_resends_unsent_runs(session):
    script = store.create_run(session, recipe="external", status="running")
    silent = store.create_run(session, recipe="external", status="running")  # curl: never heartbeats
    store.heartbeat_run(session, script.id)
    old = utcnow() - timedelta(seconds=120)
    session.execute(update(Run).where(Run.id.in_([script.id, silent.id])).values(heartbeat_at=old))
    session.execute(update(Run).where(Run.id == silent.id).values(heartbeat_at=None))
    unsent = store.create_run(session, recipe="digits", task_id=uuid.uuid4().hex)
    session.execute(update(Run).where(Run.id == unsent.id).values(updated_at=old))
    session.commit()
    found = store.reap(session, timeout=30, resend_after=300)
    assert [r.id for r in found["crashed"]] == [script.id]
    crashed = store.get_run(session, script.id)
    assert crashed.status == "failed" and crashed.error.startswith("crashed")
    assert store.get_run(session, silent.id).status == "running"
    assert unsent.id in [r.id for r in found["resend"]]
    store.mark_enqueued(session, unsent.id, store.get_run(session, unsent.id).task_id)
    assert unsent.id not in [r.id for r in store.reap(session, timeout=30, resend_after=300)["resend"]]


def test_a_lost_message_is_resent_when_a_worker_of_its_queue_is_idle(session):
    run = store.create_run(session, recipe="digits", task_id=uuid.uuid4().hex, queue=f"q{uuid.uuid4().hex[:6]}")
    store.mark_enqueued(session, run.id, run.task_id)
    old = utcnow() - timedelta(seconds=600)
    session.execute(update(Run).where(Run.id == run.id).values(enqueued_at=old))
    session.commit()
    assert run.id not in [r.id for r in store.reap(session, 30, resend_after=300)["resend"]]  # nobody idle
    store.register_worker(session, f"w-{uuid.uuid4().hex[:6]}", [run.queue], [], None)
    assert run.id in [r.id for r in store.reap(session, 30, resend_after=300)["resend"]]


def test_history_is_cut_back_to_the_resume_point_at_each_claim(session):
    # attempt 1 logs steps 0..29, saves a resume checkpoint at step 10 and an epoch checkpoint at 20, dies
    run = store.create_run(session, recipe="digits")
    store.claim_run(session, run.id, "h", "cpu")
    store.add_metric_points(session, run.id, [("loss", i, float(i), 0, 0.0) for i in range(30)])
    store.add_checkpoint(session, run.id, f"{run.id}/checkpoints/last-epoch=0-step=10.ckpt", step=10, epoch=0,
                         attempt=1, resumable=True, is_last=True)
    store.add_checkpoint(session, run.id, f"{run.id}/checkpoints/epoch=1-step=20.ckpt", step=20, epoch=1, attempt=1)
    session.execute(update(Run).where(Run.id == run.id).values(status="queued"))
    session.commit()
    _, resume, dropped = store.claim_run(session, run.id, "h2", "cpu")
    assert resume.step == 10 and dropped == [f"{run.id}/checkpoints/epoch=1-step=20.ckpt"]
    series = store.read_metrics(session, run.id, ["loss"], max_points=1000)["loss"]
    assert series["steps"] == list(range(10))  # redone from step 10 on


def test_a_run_killed_before_it_saved_anything_restarts_from_zero_with_no_stale_points(session):
    run = store.create_run(session, recipe="digits")
    store.claim_run(session, run.id, "h", "cpu")
    store.add_metric_points(session, run.id, [("loss", i, float(i), 0, 0.0) for i in range(5)])
    session.execute(update(Run).where(Run.id == run.id).values(status="queued"))
    session.commit()
    _, resume, _ = store.claim_run(session, run.id, "h2", "cpu")
    assert resume is None
    assert store.read_metrics(session, run.id, ["loss"])["loss"]["steps"] == []


def test_a_resumed_run_keeps_the_copied_history_when_it_has_no_checkpoint_of_its_own(session):
    source = store.create_run(session, recipe="digits")
    store.claim_run(session, source.id, "h", "cpu")
    store.add_metric_points(session, source.id, [("loss", i, float(i), 0, 0.0) for i in range(20)])
    ckpt = store.add_checkpoint(session, source.id, f"{source.id}/checkpoints/last-epoch=1-step=12.ckpt",
                                step=12, epoch=1, attempt=1, resumable=True, is_last=True)
    store.finish_run(session, source.id, "cancelled", attempt=1)
    resumed = store.resume_run(session, source.id)
    assert resumed.resume_checkpoint_id == ckpt.id
    assert store.read_metrics(session, resumed.id, ["loss"])["loss"]["steps"] == list(range(12))
    # attempt 1 of the resumed run logs steps 12..15 and dies before saving: attempt 2 keeps 0..11
    store.claim_run(session, resumed.id, "h", "cpu")
    store.add_metric_points(session, resumed.id, [("loss", i, float(i), 0, 0.0) for i in range(12, 16)])
    session.execute(update(Run).where(Run.id == resumed.id).values(status="queued"))
    session.commit()
    _, resume, _ = store.claim_run(session, resumed.id, "h2", "cpu")
    assert resume.id == ckpt.id
    assert store.read_metrics(session, resumed.id, ["loss"])["loss"]["steps"] == list(range(12))


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


def test_list_runs_sorts_by_project_and_duration(session, client):
    """sort=[-]project and sort=[-]duration over the whole list (not one page), in the store and
    through the API; duration is ended_at (or now while running) minus started_at, NULLs last."""
    tag = f"sortdur-{uuid.uuid4().hex[:8]}"
    now = utcnow()
    specs = [  # (project, status, started seconds ago, ended seconds ago)
        (f"{tag}-b", "succeeded", 100, 40),  # 60 s
        (f"{tag}-a", "running", 30, None),  # ~30 s and growing
        (f"{tag}-c", "failed", 500, 495),  # 5 s
        (f"{tag}-a", "queued", None, None),  # never started: no duration
        (f"{tag}-b", "succeeded", 7200, 0),  # 2 h
    ]
    ids = []
    for project, status, started, ended in specs:
        run = store.create_run(session, recipe="external", name=tag, project=project, status="running")
        session.execute(update(Run).where(Run.id == run.id).values(
            status=status,
            started_at=None if started is None else now - timedelta(seconds=started),
            ended_at=None if ended is None else now - timedelta(seconds=ended)))
        ids.append(run.id)
    session.commit()

    def order(sort: str, limit: int = 50, offset: int = 0) -> list[int]:
        runs, total = store.list_runs(session, q=tag, sort=sort, limit=limit, offset=offset)
        assert total == 5
        return [r.id for r in runs]

    assert order("duration") == [ids[2], ids[1], ids[0], ids[4], ids[3]]
    assert order("-duration") == [ids[4], ids[0], ids[1], ids[2], ids[3]]  # NULLs last both ways
    assert order("-duration", limit=2, offset=2) == [ids[1], ids[2]]  # across pages
    assert order("project") == [ids[3], ids[1], ids[4], ids[0], ids[2]]  # ties: newest id first
    assert order("-project") == [ids[2], ids[4], ids[0], ids[3], ids[1]]
    assert order("started_at") == [ids[4], ids[2], ids[0], ids[1], ids[3]]  # never started: last
    assert order("-started_at") == [ids[1], ids[0], ids[2], ids[4], ids[3]]
    assert order("ended_at")[-2:] == [ids[3], ids[1]]  # no end yet: last, newest id first
    with pytest.raises(store.Invalid, match="project, duration"):
        store.list_runs(session, sort="durations")

    page = client.get(f"/api/v1/runs?q={tag}&sort=-duration&limit=3").json()
    assert [r["id"] for r in page["items"]] == [ids[4], ids[0], ids[1]] and page["total"] == 5
    durations = [r["duration_s"] for r in page["items"]]
    assert durations == sorted(durations, reverse=True) and 59 < durations[1] < 61
    page = client.get(f"/api/v1/runs?q={tag}&sort=project&limit=2&offset=3").json()
    assert [r["id"] for r in page["items"]] == [ids[0], ids[2]]
    assert [r["project"] for r in page["items"]] == [f"{tag}-b", f"{tag}-c"]
    r = client.get("/api/v1/runs?sort=-nope")
    assert r.status_code == 422 and "duration" in r.json()["detail"]


def test_appends_to_one_run_commit_in_id_order(session, app_settings):
    """On PostgreSQL a writer appending to a run waits for another writer of the same run to
    commit (ids then follow commit order, which the live streams rely on); other runs do not wait."""
    import threading

    from server.db import get_engine, session_scope

    run = store.create_run(session, recipe="external", status="running")
    other = store.create_run(session, recipe="external", status="running")
    engine = get_engine(app_settings.database_url)
    postgres = engine.dialect.name == "postgresql"
    done = threading.Event()

    def append():
        with session_scope(engine) as s:
            store.add_log_lines(s, run.id, [("stdout", "second")])
            store.add_metric_points(s, run.id, [("m", 2, 2.0, 0, 0.0)])
        done.set()

    with session_scope(engine) as holder:
        store.lock_run_for_append(holder, run.id)  # SQLite: nothing (its one write lock orders commits)
        if postgres:
            holder.execute(update(Run).where(Run.id == run.id).values(name=run.name))  # an open transaction
        writer = threading.Thread(target=append)
        writer.start()
        with session_scope(engine) as s:  # another run is not held up
            store.add_metric_points(s, other.id, [("m", 1, 1.0, 0, 0.0)])
        assert done.wait(0.3) is not postgres
    writer.join(10)
    assert done.is_set()
    assert [ln.text for ln in store.get_log_lines(session, run.id, tail=5)[0]] == ["second"]
