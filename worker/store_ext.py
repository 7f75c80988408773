"""Store functions only workers need, written over ``server.models`` (server/store.py has the rest).

Every write that ends or renews a run is guarded by the run's ``attempt``: a worker that lost
its run (the reaper requeued it and another worker claimed it) can neither heartbeat it nor
give it a final status.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from server.models import Checkpoint, MetricPoint, Run, utcnow

OK, CANCEL, LOST = "ok", "cancel", "lost"


def heartbeat_attempt(session: Session, run_id: int, attempt: int) -> str:
    """Renew the heartbeat of ``run_id`` held at ``attempt``: ``"ok"``, ``"cancel"`` (a cancel was
    requested) or ``"lost"`` (the run is no longer this attempt's: requeued, finished, deleted)."""
    result = session.execute(
        update(Run)
        .where(Run.id == run_id, Run.status == "running", Run.attempt == attempt)
        .values(heartbeat_at=utcnow(), updated_at=Run.updated_at)
    )
    session.commit()
    if result.rowcount != 1:
        return LOST
    cancel = session.scalar(select(Run.cancel_requested).where(Run.id == run_id))
    return CANCEL if cancel else OK


def owns_run(session: Session, run_id: int, attempt: int) -> bool:
    """True while ``run_id`` is running as ``attempt``. Locks the run row (PostgreSQL) until the
    caller's transaction ends, so the next attempt cannot claim it between this check and the
    caller's write; on SQLite the write itself fails if a claim committed in between."""
    row = session.execute(
        select(Run.status, Run.attempt).where(Run.id == run_id).with_for_update()
    ).first()
    return row is not None and row.status == "running" and row.attempt == attempt


def finish_run(session: Session, run_id: int, attempt: int, status: str, error: str | None = None) -> bool:
    """``running -> status`` for this attempt only (False when the run is no longer ours)."""
    now = utcnow()
    values: dict = {"status": status, "ended_at": now, "updated_at": now, "error": error}
    if status == "queued":
        values = {"status": "queued", "heartbeat_at": None, "updated_at": now, "error": error}
    result = session.execute(
        update(Run).where(Run.id == run_id, Run.status == "running", Run.attempt == attempt).values(**values)
    )
    session.commit()
    return result.rowcount == 1


def set_task_id_if_queued(session: Session, run_id: int, task_id: str) -> None:
    session.execute(update(Run).where(Run.id == run_id, Run.status == "queued").values(task_id=task_id))
    session.commit()


def delete_metric_points_from(session: Session, run_id: int, step: int) -> int:
    """Delete the run's points at ``step`` and later (what a resumed run logs again)."""
    result = session.execute(delete(MetricPoint).where(MetricPoint.run_id == run_id, MetricPoint.step >= step))
    session.commit()
    return result.rowcount


def upsert_checkpoint(
    session: Session,
    run_id: int,
    path: str,
    *,
    epoch: int | None,
    step: int | None,
    monitor: str | None,
    score: float | None,
    size: int,
    sha256: str,
) -> Checkpoint:
    """Register ``path`` (relative to the artifact root) or refresh its row when the file was rewritten."""
    row = session.scalar(select(Checkpoint).where(Checkpoint.run_id == run_id, Checkpoint.path == path))
    if row is None:
        row = Checkpoint(run_id=run_id, path=path, created_at=utcnow())
        session.add(row)
    row.epoch, row.step, row.monitor, row.score, row.size, row.sha256 = epoch, step, monitor, score, size, sha256
    session.commit()
    return row


def set_checkpoint_flags(session: Session, run_id: int, best_path: str | None, last_path: str | None) -> None:
    """Exactly the checkpoint at ``best_path`` is best and the one at ``last_path`` is last."""
    session.execute(
        update(Checkpoint).where(Checkpoint.run_id == run_id).values(
            is_best=(Checkpoint.path == best_path) if best_path else False,
            is_last=(Checkpoint.path == last_path) if last_path else False,
        )
    )
    session.commit()


def checkpoint_paths(session: Session, run_id: int) -> list[str]:
    return list(session.scalars(select(Checkpoint.path).where(Checkpoint.run_id == run_id)))


def forget_checkpoints(session: Session, run_id: int, paths: list[str]) -> None:
    if paths:
        session.execute(delete(Checkpoint).where(Checkpoint.run_id == run_id, Checkpoint.path.in_(paths)))
        session.commit()


def resumable_checkpoint(session: Session, run_id: int, artifact_root: Path) -> Checkpoint | None:
    """The run's newest registered resume checkpoint (``last-*.ckpt``, see worker/control.py)
    whose file is still there. ModelCheckpoint files are not used to resume: one saved at a
    batch end precedes that step's metrics, so it is not a clean cut of the history."""
    rows = session.scalars(
        select(Checkpoint)
        .where(Checkpoint.run_id == run_id)
        .order_by(Checkpoint.is_last.desc(), Checkpoint.step.desc().nulls_last(), Checkpoint.id.desc())
    ).all()
    for row in rows:
        if Path(row.path).name.startswith("last-") and (artifact_root / row.path).is_file():
            return row
    return None


def current_flags(session: Session, run_id: int) -> tuple[str | None, str | None]:
    """Paths of the run's best and last checkpoints (None when none is flagged)."""
    best = session.scalar(select(Checkpoint.path).where(Checkpoint.run_id == run_id, Checkpoint.is_best.is_(True)).limit(1))
    last = session.scalar(select(Checkpoint.path).where(Checkpoint.run_id == run_id, Checkpoint.is_last.is_(True)).limit(1))
    return best, last


def reset_run_records(session: Session, run_id: int) -> None:
    """A run starting over with no checkpoint to resume from: its old points and checkpoint rows go."""
    session.execute(delete(MetricPoint).where(MetricPoint.run_id == run_id))
    session.execute(delete(Checkpoint).where(Checkpoint.run_id == run_id))
    session.commit()


def requeue_after_shutdown(session: Session, run_id: int, attempt: int, task_id: str) -> bool:
    """Give a run back to the queue because its worker shut down cleanly; the attempt is not counted."""
    result = session.execute(
        update(Run)
        .where(Run.id == run_id, Run.status == "running", Run.attempt == attempt)
        .values(status="queued", attempt=Run.attempt - 1, heartbeat_at=None, task_id=task_id, updated_at=utcnow())
    )
    session.commit()
    return result.rowcount == 1
