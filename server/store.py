"""The store layer: plain functions over a SQLAlchemy ``Session``.

Used by the API routers and by workers in other processes (workers write to the database
directly). Every function that writes commits before it returns, so each call is one short
transaction (what SQLite with several writer processes wants). Errors are
:class:`NotFound` (unknown id), :class:`Conflict` (wrong state) and :class:`Invalid` (bad
value, with ``field``); each carries a sentence in ``message``.

Projects and runs
    ``get_or_create_project(s, name)``, ``list_projects(s, project_ids)`` -> [(id, name, run_count)],
    ``create_run(s, recipe=, name=, project=, params=, trainer=, hyperparameters=, status="queued",
    max_attempts=, task_id=, resumed_from_id=, resume_checkpoint_id=)`` (``status="running"`` for
    external runs), ``get_run(s, id)`` -> Run | None, ``require_run(s, id)`` -> Run or NotFound,
    ``list_runs(s, project=, status=, recipe=, q=, sort=, limit=, offset=)`` -> (runs, total),
    ``update_run(s, id, name=, hyperparameters=, error=)``, ``set_hyperparameters(s, id, dict, merge=False)``,
    ``delete_run(s, id, artifacts, uploads_dir=)`` (rows, the run's folder in the artifact store and its
    staged uploads; Conflict while running),
    ``resume_run(s, id, checkpoint_id=None, task_id=None)`` -> new queued Run,
    ``set_task_id(s, id, task_id)``.
Status and workers
    ``claim_run(s, id, worker_host, device)`` -> Run | None (atomic queued -> running, attempt + 1),
    ``set_status(s, id, status, error=None)`` (transition checked; same status again is a no-op),
    ``heartbeat(s, id)`` -> bool "the worker should stop" (cancel requested or no longer running),
    ``is_cancel_requested(s, id)``, ``request_cancel(s, id)`` -> Run (queued: cancelled at once;
    running: ``cancel_requested``; finished: Conflict), ``requeue_stale_runs(s, timeout)`` -> [Run]
    (each requeued run gets a new ``task_id`` the caller enqueues; out of attempts -> failed).
Metrics
    ``add_metric_points(s, run_id, points)`` (tuples ``(key, step, value, epoch, wall_time)`` or dicts;
    NaN stored as NULL, ±inf as is), ``delete_metric_points_after(s, run_id, step)``,
    ``read_metrics(s, run_id, keys=, min_step=, max_step=, max_points=)`` (server-side downsampling, see
    ``server/downsample.py``), ``metric_keys(s, run_id)``, ``last_metric_values(s, run_ids, keys)``,
    ``metric_points_after(s, run_id, after_id, limit)``.
Summary, logs, checkpoints
    ``set_summary`` / ``get_summary``, ``add_log_lines(s, run_id, lines)``,
    ``get_log_lines(s, run_id, tail=, after=, limit=)`` -> (lines, cursor), ``log_lines_after``,
    ``add_checkpoint(s, run_id, path, ..., attempt=, resumable=, exclusive=, retain=)`` (the project's
    checkpoint quota; ``retain``: its retention policy, ``server/quotas.py``), ``list_checkpoints``,
    ``get_checkpoint``, ``checkpoint_named(s, run_id, filename)``, ``checkpoint_filename(path)``,
    ``set_checkpoint_flags(s, id, is_best=, is_last=)``, ``delete_checkpoint(s, id)`` -> key to delete | None,
    ``last_checkpoint``, ``checkpoints_after``.
Events
    ``event_cursors(s, run_id)`` -> (metric id, log id, checkpoint id), ``runs_changed_since(s, when)``,
    ``run_ids(s)``; for the change feed (``server/feed.py``): ``feed_marks(s)``, ``feed_new_rows(s,
    marks)`` -> {table: {run id: newest id}}, ``runs_touched_since(s, when)``, ``run_deletions_after(s,
    after_id, project_ids)`` (tombstones ``delete_run`` writes), ``sweep_run_deletions(s)``.
Code snapshots, code schemas, run environments (code runs: ``create_run(..., recipe="code",
snapshot_id=, entry=)``)
    ``snapshot_key(sha256)`` (the blob's artifact key), ``get_snapshot``, ``require_snapshot`` (NotFound
    ``missing_snapshot``), ``snapshot_in_project(s, project_id, sha256)``, ``add_snapshot(s, project_id=,
    sha256=, size=, unpacked_bytes=, files=, git=, created_by=)`` -> (snapshot, created),
    ``list_snapshots(s, project_ids=, project=, sha256=, limit=)``, ``snapshot_files(s, id)``,
    ``set_code_schema(s, snapshot_id, entry_key, params_schema, trainer_schema)`` (upsert),
    ``get_code_schema(s, snapshot_id, entry_key)``, ``code_schema_of_run(s, run)``,
    ``set_run_environment(s, run_id, record)``, ``get_run_environment(s, run_id)``.
"""

from __future__ import annotations

import math
import shutil
import time
import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, cast

import numpy as np
from sqlalchemy import CursorResult, and_, bindparam, case, delete, func, insert, or_, select, update
from sqlalchemy.orm import Session

from server.downsample import block_rollups, read_series, rebuild_blocks, upsert_blocks
from server.models import (
    BLOCK_STEPS,
    FINISHED_STATUSES,
    RUN_STATUSES,
    Checkpoint,
    CodeSchema,
    CodeSnapshot,
    IngestBatch,
    LogLine,
    MetricBlock,
    MetricBlockDirty,
    MetricPoint,
    ModelSummary,
    Project,
    Recipe,
    Run,
    RunEnvironment,
    RunStatus,
    UTCDateTime,
    Worker,
    utcnow,
)

EXTERNAL_RECIPE = "external"
CODE_RECIPE = "code"  # a run of a project's own code (a snapshot and an entry point)
INT64_MAX = 2**63 - 1
INT32_MAX = 2**31 - 1

# Allowed moves of a run's status (docs/architecture.md, "Statuses").
# queued -> running (a claim) | cancelled; running -> succeeded | failed | cancelled, or back to
# queued (its worker died, or shut down and handed it back). Finished runs never move again
# (resuming makes a new run).
TRANSITIONS: dict[str, frozenset[str]] = {
    RunStatus.QUEUED.value: frozenset({RunStatus.RUNNING.value, RunStatus.CANCELLED.value}),
    RunStatus.RUNNING.value: frozenset({RunStatus.SUCCEEDED.value, RunStatus.FAILED.value,
                                        RunStatus.CANCELLED.value, RunStatus.QUEUED.value}),
    RunStatus.SUCCEEDED.value: frozenset(),
    RunStatus.FAILED.value: frozenset(),
    RunStatus.CANCELLED.value: frozenset(),
}

RUN_SORT_FIELDS = {
    "id": Run.id,
    "name": Run.name,
    "created_at": Run.created_at,
    "updated_at": Run.updated_at,
    "started_at": Run.started_at,
    "ended_at": Run.ended_at,
    "status": Run.status,
    "recipe": Run.recipe,
}
# computed in list_runs: the project's name, and the run's duration in seconds as the API shows
# it (ended_at, or now while running, minus started_at; NULL without a start), NULLs last
RUN_SORT_COMPUTED = ("project", "duration")


class StoreError(Exception):
    status_code = 400

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class NotFound(StoreError):
    status_code = 404


class Conflict(StoreError):
    status_code = 409


class Invalid(StoreError):
    status_code = 422


def missing_run(run_id: int) -> NotFound:
    """The one answer for a run that does not exist, or that the caller may not see."""
    return NotFound(f"Run {run_id} does not exist; list runs with GET /api/v1/runs.")


def missing_project(project_id: int) -> NotFound:
    """The one answer for a project that does not exist, or that the caller may not see."""
    return NotFound(f"Project {project_id} does not exist; list projects with GET /api/v1/projects.")


def missing_upload(upload_id: str) -> NotFound:
    """The one answer for an upload that does not exist, or that the caller may not see."""
    return NotFound(f"Upload {upload_id!r} does not exist (finished runs' uploads go with the run, and a newer "
                    "upload of the same file name replaces an unfinished one); start one with "
                    "POST /api/v1/runs/{id}/checkpoints/uploads.")


def missing_snapshot(snapshot_id: int) -> NotFound:
    """The one answer for a snapshot that does not exist, or that the caller may not see."""
    return NotFound(f"Snapshot {snapshot_id} does not exist; list snapshots with GET /api/v1/snapshots.")


def missing_checkpoint(checkpoint_id: int) -> NotFound:
    """The one answer for a checkpoint that does not exist, or that the caller may not see."""
    return NotFound(f"Checkpoint {checkpoint_id} does not exist; list a run's checkpoints with "
                    "GET /api/v1/runs/{id}/checkpoints.")


# --------------------------------------------------------------------------- helpers


def json_safe(value: Any, field: str | None = None) -> Any:
    """A copy of ``value`` that every JSON column accepts (PostgreSQL refuses NaN tokens):
    non-finite floats become "NaN"/"Infinity"/"-Infinity", tuples lists, unknown objects str.

    Strings that are not valid Unicode (lone surrogates such as ``"\\ud800"``, which
    ``json.loads`` lets through) cannot be written as UTF-8: with ``field`` (a value about to
    be stored) they are :class:`Invalid`, without it (a value read back) they are repaired."""
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, str):
        return _valid_text(value, field)
    if isinstance(value, float):
        return encode_float(value)
    if isinstance(value, dict):
        return {_valid_text(str(k), field): json_safe(v, field) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [json_safe(v, field) for v in value]
    item = getattr(value, "item", None)  # numpy / torch scalars
    if callable(item):
        try:
            return json_safe(item(), field)
        except (TypeError, ValueError):
            pass
    return _valid_text(str(value), field)


def is_valid_text(text: str) -> bool:
    """True when ``text`` can be encoded as UTF-8 (no lone surrogates)."""
    if text.isascii():
        return True
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def _valid_text(text: str, field: str | None) -> str:
    if is_valid_text(text):
        return text
    if field is not None:
        raise Invalid(f"{field} holds a string that is not valid Unicode (a lone surrogate such as \\ud800); "
                      "send UTF-8 text.", field)
    return text.encode("utf-8", "replace").decode()


def encode_float(value: float | None) -> float | str | None:
    if value is None:
        return None
    if math.isfinite(value):
        return value
    if math.isnan(value):
        return "NaN"
    return "Infinity" if value > 0 else "-Infinity"


def _project_id(session: Session, name: str) -> int:
    project = get_or_create_project(session, name)
    return project.id


def require_run(session: Session, run_id: int) -> Run:
    run = session.get(Run, run_id, populate_existing=True)
    if run is None:
        raise missing_run(run_id)
    return run


def get_run(session: Session, run_id: int) -> Run | None:
    return session.get(Run, run_id, populate_existing=True)


def _check_run_exists(session: Session, run_id: int) -> None:
    if session.scalar(select(Run.id).where(Run.id == run_id)) is None:
        raise missing_run(run_id)


APPEND_LOCK_SPACE = 0x52594431  # "RYD1": the first key of the per-run advisory locks below


def lock_run_for_append(session: Session, run_id: int) -> None:
    """On PostgreSQL, serialise the writers that append rows to one run until they commit.

    Live streams follow a run's points, log lines and checkpoints by id. PostgreSQL hands out
    ids when a row is inserted, not when it commits, so two writers of one run could commit
    out of id order and a stream that already moved past the later id would never send the
    earlier rows. Holding a transaction-level advisory lock per run while ids are taken makes
    commit order follow id order. (SQLite has one writer at a time: nothing to do.)"""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(select(func.pg_advisory_xact_lock(APPEND_LOCK_SPACE, run_id)))


# --------------------------------------------------------------------------- projects and runs


def project_by_name(session: Session, name: str) -> Project | None:
    name = (name or "default").strip() or "default"
    return session.scalar(select(Project).where(Project.name == name))


def get_or_create_project(session: Session, name: str) -> Project:
    name = (name or "default").strip() or "default"
    project = session.scalar(select(Project).where(Project.name == name))
    if project is not None:
        return project
    try:
        with session.begin_nested():
            project = Project(name=name)
            session.add(project)
            session.flush()
    except Exception:  # lost a race with another creator: read theirs
        project = session.scalar(select(Project).where(Project.name == name))
        if project is None:
            raise
    return project


def list_projects(session: Session, project_ids: set[int] | None = None) -> list[tuple[int, str, int]]:
    """(id, name, run count) of every project, or of ``project_ids`` only."""
    query = (
        select(Project.id, Project.name, func.count(Run.id))
        .select_from(Project)
        .outerjoin(Run, Run.project_id == Project.id)
        .group_by(Project.id, Project.name)
        .order_by(Project.name)
    )
    if project_ids is not None:
        query = query.where(Project.id.in_(project_ids or {-1}))
    return [(pid, name, count) for pid, name, count in session.execute(query).all()]


def create_run(
    session: Session,
    *,
    recipe: str,
    name: str | None = None,
    project: str = "default",
    params: dict | None = None,
    trainer: dict | None = None,
    hyperparameters: dict | None = None,
    status: str = "queued",
    max_attempts: int = 3,
    task_id: str | None = None,
    resumed_from_id: int | None = None,
    resume_checkpoint_id: int | None = None,
    queue: str = "runyard",
    client_key: str | None = None,
    owner_id: int | None = None,
    snapshot_id: int | None = None,
    entry: dict | None = None,
    tags: Sequence[str] | None = None,
) -> Run:
    if status not in ("queued", "running"):
        raise Invalid(f"A new run starts as queued or running, not {status!r}.", "status")
    now = utcnow()
    run = Run(
        name=name or "",
        project_id=_project_id(session, project),
        recipe=recipe,
        params=json_safe(params or {}, "params"),
        trainer=json_safe(trainer or {}, "trainer"),
        hyperparameters=json_safe(hyperparameters or {}, "hyperparameters"),
        status=status,
        created_at=now,
        updated_at=now,
        started_at=now if status == "running" else None,
        heartbeat_at=None,
        attempt=1 if status == "running" else 0,
        max_attempts=max_attempts,
        task_id=task_id,
        resumed_from_id=resumed_from_id,
        resume_checkpoint_id=resume_checkpoint_id,
        cancel_requested=False,
        queue=queue,
        client_key=client_key,
        owner_id=owner_id,
        snapshot_id=snapshot_id,
        entry=json_safe(entry, "entry") if entry is not None else None,
    )
    session.add(run)
    session.flush()
    if not run.name:
        run.name = f"{recipe}-{run.id}"
    from server import runs_query

    runs_query.sync_params(session, run)  # the query language's rows (issue 14)
    if tags:
        runs_query.add_tags(session, run, tags, commit=False)
    session.commit()
    return run


def run_by_client_key(session: Session, client_key: str) -> Run | None:
    run_id = session.scalar(select(Run.id).where(Run.client_key == client_key))
    return None if run_id is None else require_run(session, run_id)


def set_task_id(session: Session, run_id: int, task_id: str) -> None:
    session.execute(update(Run).where(Run.id == run_id).values(task_id=task_id, updated_at=Run.updated_at))
    session.commit()


def list_runs(
    session: Session,
    *,
    project: str | None = None,
    status: str | None = None,
    recipe: str | None = None,
    q: str | None = None,
    sort: str = "-created_at",
    limit: int = 50,
    offset: int = 0,
    project_ids: set[int] | None = None,
) -> tuple[list[Run], int]:
    """A page of runs; ``project_ids`` (None: all) limits them to the projects the caller may see."""
    query = select(Run)
    if project_ids is not None:
        query = query.where(Run.project_id.in_(project_ids or {-1}))
    if project:
        query = query.join(Project, Project.id == Run.project_id).where(Project.name == project)
    if status:
        statuses = [s.strip() for s in status.split(",") if s.strip()]
        for s in statuses:
            if s not in RUN_STATUSES:
                raise Invalid(f"Unknown status {s!r}; use one of {', '.join(RUN_STATUSES)}.", "status")
        query = query.where(Run.status.in_(statuses))
    if recipe:
        query = query.where(Run.recipe == recipe)
    if q:
        escaped = q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        query = query.where(Run.name.ilike(f"%{escaped}%", escape="\\"))
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0

    descending = sort.startswith("-")
    field = sort.lstrip("-+")
    if field.startswith("metric:"):
        key = field.removeprefix("metric:")
        if not key:
            raise Invalid("sort=metric:<key> needs a metric key, e.g. sort=-metric:val_loss.", "sort")
        last_id = (
            select(MetricPoint.run_id.label("run_id"), func.max(MetricPoint.id).label("mid"))
            .where(MetricPoint.key == key)
            .group_by(MetricPoint.run_id)
            .subquery()
        )
        last_value = (
            select(last_id.c.run_id, MetricPoint.value.label("value"))
            .join(MetricPoint, MetricPoint.id == last_id.c.mid)
            .subquery()
        )
        query = query.outerjoin(last_value, last_value.c.run_id == Run.id)
        order = last_value.c.value.desc() if descending else last_value.c.value.asc()
        query = query.order_by(order.nulls_last(), Run.id.desc())
    elif field == "project":
        name = select(Project.name).where(Project.id == Run.project_id).scalar_subquery()
        query = query.order_by(name.desc() if descending else name.asc(), Run.id.desc())
    elif field == "duration":
        duration = _duration_seconds(session)
        order = duration.desc() if descending else duration.asc()
        query = query.order_by(order.nulls_last(), Run.id.desc())
    else:
        column = RUN_SORT_FIELDS.get(field)
        if column is None:
            fields = ", ".join([*RUN_SORT_FIELDS, *RUN_SORT_COMPUTED])
            raise Invalid(
                f"Cannot sort by {field!r}; use one of {fields} or metric:<key>, "
                "with a leading '-' for descending.",
                "sort",
            )
        # NULLs (a queued run's started_at/ended_at) last in both directions, on SQLite as on PostgreSQL
        query = query.order_by((column.desc() if descending else column.asc()).nulls_last(), Run.id.desc())
    runs = list(session.scalars(query.limit(limit).offset(offset)).unique())
    return runs, total


def _duration_seconds(session: Session) -> Any:
    """SQL for a run's duration in seconds, the same as ``duration_s`` in the API (schemas.run_out):
    ``ended_at``, or now while running, minus ``started_at``; NULL when either end is missing."""
    now = bindparam("duration_now", utcnow(), type_=UTCDateTime())
    end = case((Run.ended_at.is_not(None), Run.ended_at), (Run.status == "running", now), else_=None)
    if session.get_bind().dialect.name == "postgresql":
        return func.extract("epoch", end - Run.started_at)
    # SQLite keeps datetimes as ISO text, which julianday() reads (days, as a float)
    return (func.julianday(end) - func.julianday(Run.started_at)) * 86400.0


def update_run(
    session: Session,
    run_id: int,
    *,
    name: str | None = None,
    hyperparameters: dict | None = None,
    error: str | None = None,
) -> Run:
    run = require_run(session, run_id)
    if name is not None:
        run.name = name
    if hyperparameters is not None:
        run.hyperparameters = json_safe(hyperparameters, "hyperparameters")
        from server import runs_query

        runs_query.sync_params(session, run, params=False)
    if error is not None:
        run.error = error
    run.updated_at = utcnow()
    session.commit()
    return run


def set_hyperparameters(session: Session, run_id: int, hyperparameters: dict, merge: bool = False) -> Run:
    run = require_run(session, run_id)
    values = json_safe(hyperparameters, "hyperparameters")
    run.hyperparameters = {**(run.hyperparameters or {}), **values} if merge else values
    run.updated_at = utcnow()
    from server import runs_query

    runs_query.sync_params(session, run, params=False)
    session.commit()
    return run


def delete_run(session: Session, run_id: int, artifacts: Any, *, uploads_dir: Path | str | None = None) -> None:
    """Delete a run's rows and files. ``artifacts``: the artifact store (``app.state.artifacts``)
    or a local artifact root. Only the run's own folder ``"<run_id>/"`` is removed from the store
    (a row naming a file elsewhere, e.g. another run's, never deletes that file), and the run's
    staged uploads under ``uploads_dir``."""
    run = require_run(session, run_id)
    if run.status == "running":
        raise Conflict(f"Run {run_id} is running; cancel it first (POST /api/v1/runs/{run_id}/cancel), then delete it.")
    session.execute(update(Run).where(Run.resumed_from_id == run_id).values(resumed_from_id=None,
                                                                             updated_at=Run.updated_at))
    session.execute(delete(MetricBlock).where(MetricBlock.run_id == run_id))
    session.execute(delete(MetricPoint).where(MetricPoint.run_id == run_id))
    session.execute(delete(MetricBlockDirty).where(MetricBlockDirty.run_id == run_id))
    session.execute(delete(LogLine).where(LogLine.run_id == run_id))
    session.execute(delete(Checkpoint).where(Checkpoint.run_id == run_id))
    session.execute(delete(ModelSummary).where(ModelSummary.run_id == run_id))
    session.execute(delete(RunEnvironment).where(RunEnvironment.run_id == run_id))
    from server.models import RunMetricSummary, RunParam, RunTag

    for model in (RunParam, RunMetricSummary, RunTag):
        session.execute(delete(model).where(model.run_id == run_id))
    session.execute(delete(Run).where(Run.id == run_id))
    _add_run_deletion(session, run_id, run.project_id)  # the tombstone live streams learn it from
    session.commit()
    session.expunge_all()
    _delete_run_files(run_id, artifacts, uploads_dir)


def _delete_run_files(run_id: int, artifacts: Any, uploads_dir: Path | str | None) -> None:
    import logging

    from server.artifacts import ArtifactError, ArtifactStore, LocalArtifactStore

    log = logging.getLogger(__name__)
    store = artifacts if isinstance(artifacts, ArtifactStore) else LocalArtifactStore(artifacts)
    try:
        store.delete_prefix(f"{run_id}/")
    except ArtifactError as exc:
        log.warning("run %s: its files in %s were not deleted: %s", run_id, store.url, exc)
    except Exception:  # the rows are gone; a store outage must not turn that into a 500
        log.exception("run %s: its files in %s were not deleted", run_id, store.url)
    if uploads_dir is not None:
        root = Path(uploads_dir).resolve()
        staged = root / str(run_id)
        if staged.is_symlink():
            staged.unlink(missing_ok=True)
        elif staged.resolve().is_relative_to(root) and staged.resolve() != root:
            shutil.rmtree(staged, ignore_errors=True)


def resume_run(session: Session, run_id: int, checkpoint_id: int | None = None,
               task_id: str | None = None, queue: str | None = None, owner_id: int | None = None) -> Run:
    """A new queued run that continues ``run_id`` from a checkpoint.

    The old run's metric points up to the checkpoint's step are copied into the new run, so
    the new run's history is complete on its own (and survives deleting the old run).
    """
    source = require_run(session, run_id)
    if source.recipe == EXTERNAL_RECIPE:
        raise Conflict(f"Run {run_id} was trained by an external script; resume it from that script.")
    if source.status not in FINISHED_STATUSES:
        raise Conflict(f"Run {run_id} is {source.status}; only a finished run can be resumed (cancel it first).")
    if checkpoint_id is None:
        checkpoint = last_checkpoint(session, run_id, own_only=True)
        if checkpoint is None:
            raise Conflict(f"Run {run_id} has no checkpoint to resume from; start a new run instead.")
    else:
        checkpoint = session.get(Checkpoint, checkpoint_id)
        if checkpoint is None or checkpoint.run_id != run_id:
            raise Invalid(f"Checkpoint {checkpoint_id} does not belong to run {run_id}; list its "
                          f"checkpoints with GET /api/v1/runs/{run_id}/checkpoints.", "checkpoint_id")
        if checkpoint.attempt is None:
            raise Invalid(f"Checkpoint {checkpoint_id} was uploaded from outside run {run_id}'s training, so it "
                          "cannot be a resume point; pick one the run saved itself.", "checkpoint_id")
    base_name = source.name.split(" (resumed")[0]
    new = create_run(
        session,
        recipe=source.recipe,
        name=f"{base_name} (resumed)",
        project=source.project.name,
        params=source.params,
        trainer=source.trainer,
        hyperparameters=source.hyperparameters,
        max_attempts=source.max_attempts,
        task_id=task_id,
        resumed_from_id=source.id,
        resume_checkpoint_id=checkpoint.id,
        queue=queue or source.queue,
        owner_id=owner_id if owner_id is not None else source.owner_id,
        snapshot_id=source.snapshot_id,
        entry=source.entry,
    )
    cols = [MetricPoint.key, MetricPoint.step, MetricPoint.epoch, MetricPoint.value, MetricPoint.wall_time]
    copied = select(
        func.cast(new.id, MetricPoint.run_id.type).label("run_id"),  # type: ignore[arg-type]  # an int bound
        *cols,
    ).where(MetricPoint.run_id == source.id)
    if checkpoint.step is not None:
        copied = copied.where(MetricPoint.step < history_cut(checkpoint))
    session.execute(
        insert(MetricPoint).from_select(["run_id", "key", "step", "epoch", "value", "wall_time"],
                                        copied.order_by(MetricPoint.id))
    )
    rebuild_blocks(session, new.id)
    session.commit()
    return new


# --------------------------------------------------------------------------- status: the one state machine
#
# Every change of a run's status goes through move(): one UPDATE whose WHERE clause holds the
# allowed source statuses (TRANSITIONS) and, for a worker's or run process's write, the attempt,
# so two writers can never both win and a process that lost its run changes nothing.


def _status_values(status: str, error: str | None) -> dict[str, Any]:
    now = utcnow()
    values: dict[str, Any] = {"status": status, "updated_at": now}
    if status == RunStatus.RUNNING:
        values["started_at"] = func.coalesce(Run.started_at, now)
        values["heartbeat_at"] = now
    if status in FINISHED_STATUSES:
        values["ended_at"] = now
    if status == RunStatus.QUEUED:
        values["heartbeat_at"] = None
    if error is not None:
        values["error"] = error
    return values


def move(session: Session, run_id: int, status: str, *, attempt: int | None = None, error: str | None = None,
         where: Any = None, commit: bool = True, values: dict[str, Any] | None = None) -> bool:
    """Move ``run_id`` to ``status`` if TRANSITIONS allow it from its current status (and it
    runs as ``attempt`` when given); True when it moved. Leaving ``running`` ends the run's
    tokens."""
    if status not in RUN_STATUSES:
        raise Invalid(f"Unknown status {status!r}; use one of {', '.join(RUN_STATUSES)}.", "status")
    sources = [s for s, targets in TRANSITIONS.items() if status in targets]
    query = update(Run).where(Run.id == run_id, Run.status.in_(sources))
    if attempt is not None:
        query = query.where(Run.attempt == attempt)
    if where is not None:
        query = query.where(where)
    result = session.execute(query.values(**{**_status_values(status, error), **(values or {})}))
    moved = cast("CursorResult[Any]", result).rowcount == 1
    if moved and status != RunStatus.RUNNING:
        from server.auth import revoke_run_tokens

        revoke_run_tokens(session, run_id)
    if commit:
        session.commit()
    return moved


def set_status(session: Session, run_id: int, status: str, error: str | None = None) -> Run:
    """The status of an external run (PATCH /runs/{id}); a queued run's status is the workers'."""
    run = require_run(session, run_id)
    if run.recipe != EXTERNAL_RECIPE:
        raise Conflict(f"Run {run_id} is trained by a worker; its status follows the worker. Cancel it with "
                       f"POST /api/v1/runs/{run_id}/cancel.", "status")
    if not move(session, run_id, status, error=error):
        run = require_run(session, run_id)
        if run.status != status:
            raise Conflict(f"Run {run_id} is {run.status} and cannot become {status}.", "status")
    return require_run(session, run_id)


def finish_run(session: Session, run_id: int, status: str, *, error: str | None = None,
               attempt: int | None = None) -> Run:
    """``running -> succeeded|failed|cancelled`` (for ``attempt`` when given); Conflict when the
    run is not running (already finished, requeued, or another attempt's now)."""
    if status not in FINISHED_STATUSES:
        raise Invalid(f"A run finishes as succeeded, failed or cancelled, not {status!r}.", "status")
    if not move(session, run_id, status, attempt=attempt, error=error, where=Run.status == RunStatus.RUNNING):
        run = require_run(session, run_id)
        raise Conflict(f"Run {run_id} is {run.status} (attempt {run.attempt}); only a running run can finish"
                       + (f" and attempt {attempt} no longer holds it." if attempt is not None else "."), "status")
    return require_run(session, run_id)


def history_cut(checkpoint: Checkpoint | None) -> int:
    """The first step a run resumed from ``checkpoint`` logs again. A resume checkpoint (saved
    at a batch start) holds what was logged below its step; any other checkpoint holds its step."""
    if checkpoint is None or checkpoint.step is None:
        return 0
    return checkpoint.step if checkpoint.resumable else checkpoint.step + 1


def resume_point(session: Session, run: Run) -> Checkpoint | None:
    """The one rule for where a run (re)starts: its own newest resume checkpoint that one of its
    own attempts registered, else the checkpoint it was resumed from (another run's), else None."""
    own = session.scalar(
        select(Checkpoint)
        .where(Checkpoint.run_id == run.id, Checkpoint.resumable.is_(True), Checkpoint.attempt.is_not(None))
        .order_by(Checkpoint.step.desc().nulls_last(), Checkpoint.id.desc()).limit(1)
    )
    if own is not None:
        return own
    if run.resume_checkpoint_id is not None:
        return session.get(Checkpoint, run.resume_checkpoint_id)
    return None


def claim_run(session: Session, run_id: int, worker_host: str, device: str) -> tuple[Run, Checkpoint | None,
                                                                                     list[str]] | None:
    """Atomically move a queued run to running (attempt + 1) and cut its history back to its
    resume point; None when it is not claimable (gone, claimed by a duplicate delivery,
    cancelled or cancel requested). Returns the run, its resume checkpoint, and the artifact
    keys of checkpoints the cut dropped (the caller deletes the files)."""
    now = utcnow()
    result = session.execute(
        update(Run)
        .where(Run.id == run_id, Run.status == RunStatus.QUEUED, Run.cancel_requested.is_(False))
        .values(status=RunStatus.RUNNING.value, attempt=Run.attempt + 1,
                started_at=func.coalesce(Run.started_at, now), heartbeat_at=now, worker_host=worker_host[:255],
                device=device[:100], updated_at=now, ended_at=None, error=None)
    )
    if cast("CursorResult[Any]", result).rowcount != 1:
        session.commit()
        return None
    from server.auth import revoke_run_tokens

    revoke_run_tokens(session, run_id)
    run = require_run(session, run_id)
    checkpoint = resume_point(session, run)
    cut = history_cut(checkpoint)
    # What an earlier attempt logged or saved after the resume point is redone: drop it.
    lock_run_for_append(session, run_id)
    session.execute(delete(MetricPoint).where(MetricPoint.run_id == run_id, MetricPoint.step >= cut))
    rebuild_blocks(session, run_id, min_block=cut // BLOCK_STEPS)
    from server.runs_query import rebuild_metric_summaries

    rebuild_metric_summaries(session, run_id)
    dropped_query = select(Checkpoint).where(Checkpoint.run_id == run_id)
    if checkpoint is not None and checkpoint.run_id == run_id:
        # after the cut, and the older resume checkpoints (only the newest is kept)
        dropped_query = dropped_query.where(Checkpoint.id != checkpoint.id,
                                            or_(Checkpoint.step.is_(None), Checkpoint.step >= cut,
                                                Checkpoint.resumable.is_(True)))
    dropped = list(session.scalars(dropped_query))
    keys = [c.path for c in dropped]
    if dropped:
        session.execute(delete(Checkpoint).where(Checkpoint.id.in_([c.id for c in dropped])))
    session.commit()
    return run, checkpoint, keys


def heartbeat_run(session: Session, run_id: int, attempt: int | None = None) -> dict[str, Any]:
    """Record that the run's process is alive; Conflict when the run is no longer running (as
    ``attempt``): the process must stop."""
    query = update(Run).where(Run.id == run_id, Run.status == RunStatus.RUNNING)
    if attempt is not None:
        query = query.where(Run.attempt == attempt)
    result = session.execute(query.values(heartbeat_at=utcnow(), updated_at=Run.updated_at))
    session.commit()
    run = require_run(session, run_id)
    if cast("CursorResult[Any]", result).rowcount != 1:
        raise Conflict(f"Run {run_id} is {run.status} (attempt {run.attempt}); stop training it.", "status")
    return {"status": run.status, "cancel_requested": bool(run.cancel_requested),
            "stop": bool(run.cancel_requested)}


def requeue_after_shutdown(session: Session, run_id: int, attempt: int) -> Run | None:
    """Give a run back to the queue because its worker shut down cleanly; the attempt is not
    counted. The caller enqueues it (the new ``task_id`` is on the run)."""
    moved = move(session, run_id, RunStatus.QUEUED, attempt=attempt, where=Run.status == RunStatus.RUNNING,
                 values={"task_id": uuid.uuid4().hex, "enqueued_at": None, "attempt": Run.attempt - 1})
    return require_run(session, run_id) if moved else None


def requeue_after_crash(session: Session, run_id: int, attempt: int, error: str) -> Run | None:
    """A worker saw ``attempt`` of a run crash (e.g. one rank of a multi-process run died): like the
    reaper, the run goes back to the queue (counted; it resumes from its last checkpoint) with the
    reason in ``error``, or fails with it after ``max_attempts`` (cancelled when a cancel was pending)."""
    run = session.get(Run, run_id)
    if run is None or run.status != RunStatus.RUNNING or run.attempt != attempt:
        return None
    if run.cancel_requested:
        moved = move(session, run_id, RunStatus.CANCELLED, attempt=attempt)
    elif attempt >= run.max_attempts:
        moved = move(session, run_id, RunStatus.FAILED, attempt=attempt,
                     error=f"{error} Giving up after {run.max_attempts} attempt(s).")
    else:
        moved = move(session, run_id, RunStatus.QUEUED, attempt=attempt,
                     values={"task_id": uuid.uuid4().hex, "enqueued_at": None,
                             "error": f"{error} Retrying from the last checkpoint (attempt {attempt} of "
                                      f"{run.max_attempts} ended)."})
    if not moved:
        return None
    session.expire_all()
    return require_run(session, run_id)


def is_cancel_requested(session: Session, run_id: int) -> bool:
    return bool(session.scalar(select(Run.cancel_requested).where(Run.id == run_id)))


def request_cancel(session: Session, run_id: int) -> Run:
    run = require_run(session, run_id)
    if run.status in FINISHED_STATUSES:
        raise Conflict(f"Run {run_id} already finished ({run.status}); there is nothing to cancel.", "status")
    if not move(session, run_id, RunStatus.CANCELLED, where=Run.status == RunStatus.QUEUED,
                values={"cancel_requested": True}):
        session.execute(update(Run).where(Run.id == run_id, Run.status == RunStatus.RUNNING)
                        .values(cancel_requested=True, updated_at=utcnow()))
        session.commit()
    return require_run(session, run_id)


def mark_enqueued(session: Session, run_id: int, task_id: str) -> None:
    session.execute(update(Run).where(Run.id == run_id, Run.status == RunStatus.QUEUED, Run.task_id == task_id)
                    .values(enqueued_at=utcnow(), updated_at=Run.updated_at))
    session.commit()


def reap(session: Session, timeout: float, resend_after: float) -> dict[str, list[Run]]:
    """The one reaper pass (the server runs it; see docs/architecture.md):

    - ``requeued``: running queued-runs whose heartbeat is older than ``timeout`` (their worker
      or run process died) go back to the queue with a new task id; out of attempts they fail,
      with a pending cancel they are cancelled.
    - ``crashed``: external runs (scripts) whose heartbeat stopped are failed.
    - ``resend``: queued runs whose broker message was never sent (``enqueued_at`` NULL) or is
      presumed lost (sent over ``resend_after`` seconds ago while a live worker of that queue is
      idle); sending again is harmless, the claim skips duplicates.
    The caller enqueues ``requeued`` and ``resend``."""
    now = utcnow()
    cutoff = now - timedelta(seconds=timeout)
    stale = session.execute(
        select(Run.id, Run.attempt, Run.max_attempts, Run.cancel_requested, Run.recipe).where(
            Run.status == RunStatus.RUNNING,
            or_(Run.heartbeat_at < cutoff,
                and_(Run.heartbeat_at.is_(None), Run.started_at < cutoff, Run.recipe != EXTERNAL_RECIPE)),
        )
    ).all()
    requeued: list[int] = []
    crashed: list[int] = []
    for run_id, attempt, max_attempts, cancel_requested, recipe in stale:
        guard = or_(Run.heartbeat_at < cutoff, Run.heartbeat_at.is_(None))
        if recipe == EXTERNAL_RECIPE:
            if move(session, run_id, RunStatus.FAILED, attempt=attempt, where=guard, commit=False,
                    error=f"crashed: the script stopped sending heartbeats (none for {timeout:g} s); it was "
                          "killed or lost its connection to the server."):
                crashed.append(run_id)
        elif cancel_requested:
            move(session, run_id, RunStatus.CANCELLED, attempt=attempt, where=guard, commit=False)
        elif attempt >= max_attempts:
            move(session, run_id, RunStatus.FAILED, attempt=attempt, where=guard, commit=False,
                 error=f"The worker running this run stopped answering {attempt} time(s) (no heartbeat for "
                       f"{timeout:g} s); giving up after {max_attempts} attempts.")
        elif move(session, run_id, RunStatus.QUEUED, attempt=attempt, where=guard, commit=False,
                  values={"task_id": uuid.uuid4().hex, "enqueued_at": None}):
            requeued.append(run_id)
    session.commit()
    resend: list[int] = list(session.scalars(
        select(Run.id).where(Run.status == RunStatus.QUEUED, Run.enqueued_at.is_(None),
                             Run.updated_at < now - timedelta(seconds=2), Run.id.not_in(requeued or [0]))
    ))
    idle_queues: set[str] = set()
    if math.isfinite(resend_after):
        lost_before = now - timedelta(seconds=resend_after)
        live_after = now - timedelta(seconds=max(timeout, 3.0))
        for queues, busy in session.execute(select(Worker.queues, Worker.run_id)
                                            .where(Worker.last_seen_at > live_after)):
            if busy is None:
                idle_queues.update(queues or [])
    if idle_queues:
        resend += list(session.scalars(
            select(Run.id).where(Run.status == RunStatus.QUEUED, Run.enqueued_at < lost_before,
                                 Run.queue.in_(sorted(idle_queues)), Run.cancel_requested.is_(False))
        ))
        session.execute(update(Run).where(Run.id.in_(resend), Run.enqueued_at < lost_before)
                        .values(enqueued_at=None))
        session.commit()
    return {
        "requeued": [require_run(session, i) for i in requeued],
        "crashed": [require_run(session, i) for i in crashed],
        "resend": [require_run(session, i) for i in dict.fromkeys(resend)],
    }


def requeue_stale_runs(session: Session, timeout: float) -> list[Run]:
    """The requeue part of :func:`reap` (kept for callers that only want that)."""
    return reap(session, timeout, resend_after=float("inf"))["requeued"]


# --------------------------------------------------------------------------- workers and recipes


def register_worker(session: Session, name: str, queues: list[str], recipes: list[dict[str, Any]],
                    token_id: int | None, gpus: list[str] | None = None) -> Worker:
    """A worker (re)registers: its queues and the recipes it serves; each recipe's published
    schema replaces the stored one."""
    now = utcnow()
    worker = session.scalar(select(Worker).where(Worker.name == name))
    if worker is None:
        worker = Worker(name=name, registered_at=now)
        session.add(worker)
    worker.queues, worker.recipes, worker.gpus = list(queues), [r["name"] for r in recipes], list(gpus or [])
    worker.token_id, worker.last_seen_at, worker.run_id = token_id, now, None
    for item in recipes:
        recipe = session.get(Recipe, item["name"])
        if recipe is None:
            recipe = Recipe(name=item["name"])
            session.add(recipe)
        recipe.description = item.get("description") or ""
        recipe.params_schema = json_safe(item.get("params_schema") or {}, "recipes.params_schema")
        recipe.trainer_schema = json_safe(item.get("trainer_schema") or {}, "recipes.trainer_schema")
        recipe.updated_at = now
    session.commit()
    return worker


def worker_heartbeat(session: Session, worker_id: int, run_id: int | None, token_id: int | None) -> Worker:
    worker = session.get(Worker, worker_id)
    if worker is None or (token_id is not None and worker.token_id not in (None, token_id)):
        raise NotFound(f"Worker {worker_id} is not registered; register it with POST /api/v1/workers.")
    worker.last_seen_at, worker.run_id = utcnow(), run_id
    session.commit()
    return worker


def live_workers(session: Session, timeout: float) -> list[Worker]:
    since = utcnow() - timedelta(seconds=max(timeout, 3.0))
    return list(session.scalars(select(Worker).where(Worker.last_seen_at > since).order_by(Worker.name)))


def gpus_asked(trainer: dict[str, Any] | None, have_gpus: bool) -> int:
    """GPUs a run reserves (``worker/gpus.py`` says the same for the worker): its devices when more
    than one with a DDP strategy or 'auto', on GPUs ('gpu'/'cuda', or 'auto' where workers have GPUs)."""
    trainer = trainer or {}
    accelerator = str(trainer.get("accelerator") or "auto")
    if accelerator not in ("gpu", "cuda") and not (accelerator == "auto" and have_gpus):
        return 0
    if str(trainer.get("strategy") or "auto") not in ("auto", "ddp", "ddp_spawn", "ddp_find_unused_parameters_true"):
        return 1
    devices = trainer.get("devices", "auto")
    if isinstance(devices, list):
        return max(1, len(devices))
    if isinstance(devices, int) and not isinstance(devices, bool) and devices > 1:
        return devices
    return 1


def refuse_too_many_gpus(session: Session, trainer: dict[str, Any] | None, timeout: float) -> None:
    """422 naming trainer.devices when a run asks for more GPUs than any live worker has (a CPU run
    with devices=N is not refused; nor is anything while no worker is live: it waits in the queue)."""
    live = live_workers(session, timeout)
    if not live:
        return
    largest = max(len(w.gpus or []) for w in live)
    asked = gpus_asked(trainer, largest > 0)
    if asked > max(largest, 1):  # one GPU on a CPU-only farm: the trainer's own error says it
        raise Invalid(f"The run asks for {asked} GPU(s) (trainer.devices), more than any live worker has: the largest "
                      f"has {largest}. Ask for at most {largest}, or start a worker with more "
                      "(runyard worker --gpus 0,1,...).", "trainer.devices")


def list_recipes(session: Session, timeout: float) -> list[tuple[Recipe, list[str], bool]]:
    """Every published recipe with the queues live workers serve it on, and whether one does."""
    live = live_workers(session, timeout)
    out = []
    for recipe in session.scalars(select(Recipe).order_by(Recipe.name)):
        queues = sorted({q for w in live if recipe.name in (w.recipes or []) for q in (w.queues or [])})
        out.append((recipe, queues, bool(queues)))
    return out


def get_recipe(session: Session, name: str) -> Recipe | None:
    return session.get(Recipe, name)


# --------------------------------------------------------------------------- metrics

MetricTuple = tuple[str, int, float | None, int | None, float]


def _normalise_point(point: Any, now: float) -> MetricTuple:
    if isinstance(point, dict):
        key, step, value = point["key"], point["step"], point.get("value")
        epoch, wall_time = point.get("epoch"), point.get("wall_time")
    else:
        key, step, value, epoch, wall_time = point
    if value is not None:
        value = float(value)
        if value != value:  # NaN is NULL in the database
            value = None
    return (str(key), int(step), value, None if epoch is None else int(epoch),
            now if wall_time is None else float(wall_time))


def seen_batch(session: Session, run_id: int, batch_key: str | None) -> int | None:
    """How many rows the batch ``batch_key`` of ``run_id`` stored, when it was stored before."""
    if batch_key is None:
        return None
    return session.scalar(select(IngestBatch.accepted).where(IngestBatch.run_id == run_id,
                                                              IngestBatch.key == batch_key))


def _record_batch(session: Session, run_id: int, batch_key: str | None, n: int) -> None:
    """Remember ``batch_key`` in the transaction that stores its rows (a retry finds it)."""
    if batch_key is not None:
        session.add(IngestBatch(run_id=run_id, key=batch_key, accepted=n, created_at=utcnow()))
        session.flush()


def add_metric_points(session: Session, run_id: int, points: Iterable[Any], *, check_run: bool = True,
                      batch_key: str | None = None) -> int:
    """Insert points ``(key, step, value, epoch, wall_time)`` (or dicts with those keys) in one
    executemany (COPY on PostgreSQL). NaN -> NULL; ``wall_time`` None -> now. With
    ``batch_key`` the batch is stored once: the key is recorded in the same transaction."""
    if check_run:
        _check_run_exists(session, run_id)
    now = time.time()
    rows = [(run_id, *_normalise_point(p, now)) for p in points]
    if not rows:
        return 0
    if min(r[2] for r in rows) < 0:
        raise Invalid("Metric steps must be 0 or more.", "step")
    from server.quotas import check_metric_points

    lock_run_for_append(session, run_id)  # PostgreSQL: the count and the insert under one lock
    try:
        check_metric_points(session, run_id, rows)  # points_per_run, metric_keys_per_run: 413
    except Exception:
        session.rollback()
        raise
    connection = session.connection()
    n = len(rows)
    if connection.dialect.name == "postgresql":
        lock_run_for_append(session, run_id)
        # Reserve the ids first: the rollups need them, and COPY is the fastest way in.
        ids = list(connection.exec_driver_sql(
            "SELECT nextval(pg_get_serial_sequence('metric_points', 'id')) FROM generate_series(1, %(n)s)",
            {"n": n},
        ).scalars())
        raw = cast(Any, connection.connection.driver_connection)
        try:
            with raw.cursor() as cursor, cursor.copy(
                "COPY metric_points (id, run_id, key, step, value, epoch, wall_time) FROM STDIN"
            ) as copy:
                for point_id, row in zip(ids, rows, strict=True):
                    copy.write_row((point_id, *row))
        except Exception as exc:  # psycopg.DataError & co. arrive unwrapped from COPY
            session.rollback()
            if str(getattr(exc, "sqlstate", "") or "").startswith("53") or getattr(exc, "sqlstate", "") == "25006":
                # disk full, out of memory, read-only: not the points' fault (507/503, server/errors.py)
                from sqlalchemy.exc import OperationalError

                raise OperationalError("COPY metric_points", None, exc) from exc
            raise Invalid(f"PostgreSQL refused the points ({type(exc).__name__}: {exc}); check keys and "
                          "numbers.", "points") from exc
        id_array = np.array(ids, dtype=np.int64)
    else:
        connection.exec_driver_sql(
            "INSERT INTO metric_points (run_id, key, step, value, epoch, wall_time) VALUES (?, ?, ?, ?, ?, ?)",
            rows,
        )
        # SQLite has one writer at a time and hands out max(rowid) + 1: our ids are contiguous.
        last = int(connection.exec_driver_sql("SELECT max(id) FROM metric_points").scalar_one())
        id_array = np.arange(last - n + 1, last + 1, dtype=np.int64)
    _record_batch(session, run_id, batch_key, n)
    from server.runs_query import update_metric_summaries

    keys = [r[1] for r in rows]
    steps = np.fromiter((r[2] for r in rows), dtype=np.int64, count=n)
    values = np.fromiter((np.nan if r[3] is None else r[3] for r in rows), dtype=np.float64, count=n)
    update_metric_summaries(session, run_id, keys, steps, values, id_array)  # server/runs_query.py (issue 14)
    upsert_blocks(session, block_rollups(run_id, keys, steps, values, id_array))
    session.commit()
    return n


def delete_metric_points_after(session: Session, run_id: int, step: int) -> int:
    result = session.execute(delete(MetricPoint).where(MetricPoint.run_id == run_id, MetricPoint.step > step))
    rebuild_blocks(session, run_id, min_block=step // BLOCK_STEPS)
    from server.runs_query import rebuild_metric_summaries

    rebuild_metric_summaries(session, run_id)
    session.commit()
    return int(cast("CursorResult[Any]", result).rowcount)


def read_metrics(session: Session, run_id: int, keys: Sequence[str] | None = None,
                 min_step: int | None = None, max_step: int | None = None,
                 max_points: int = 2000) -> dict[str, dict[str, Any]]:
    _check_run_exists(session, run_id)
    if not keys:
        keys = list(session.scalars(
            select(MetricPoint.key).where(MetricPoint.run_id == run_id).distinct().order_by(MetricPoint.key)
        ))
    return {key: read_series(session, run_id, key, min_step, max_step, max_points) for key in keys}


def metric_keys(session: Session, run_id: int) -> list[dict[str, Any]]:
    _check_run_exists(session, run_id)
    groups = session.execute(
        select(MetricPoint.key, func.count(), func.max(MetricPoint.id))
        .where(MetricPoint.run_id == run_id).group_by(MetricPoint.key).order_by(MetricPoint.key)
    ).all()
    last = {
        row.id: row
        for row in session.execute(
            select(MetricPoint.id, MetricPoint.step, MetricPoint.value).where(
                MetricPoint.id.in_([g[2] for g in groups])
            )
        )
    } if groups else {}
    return [
        {"key": key, "count": count, "last_step": last[mid].step, "last_value": last[mid].value}
        for key, count, mid in groups
    ]


def last_metric_values(session: Session, run_ids: Sequence[int], keys: Sequence[str]) -> dict[int, dict[str, Any]]:
    """``{run_id: {key: last value}}`` (last = most recently logged point)."""
    if not run_ids or not keys:
        return {}
    last_ids = select(func.max(MetricPoint.id)).where(
        MetricPoint.run_id.in_(run_ids), MetricPoint.key.in_(keys)
    ).group_by(MetricPoint.run_id, MetricPoint.key)
    out: dict[int, dict[str, Any]] = {}
    for run_id, key, value in session.execute(
        select(MetricPoint.run_id, MetricPoint.key, MetricPoint.value).where(MetricPoint.id.in_(last_ids))
    ):
        out.setdefault(run_id, {})[key] = value
    return out


def metric_points_after(session: Session, run_id: int, after_id: int, limit: int = 5000) -> list[Any]:
    return list(session.execute(
        select(MetricPoint.id, MetricPoint.key, MetricPoint.step, MetricPoint.epoch, MetricPoint.value,
               MetricPoint.wall_time)
        .where(MetricPoint.run_id == run_id, MetricPoint.id > after_id).order_by(MetricPoint.id).limit(limit)
    ))


# --------------------------------------------------------------------------- summary, logs, checkpoints


def set_summary(session: Session, run_id: int, summary: dict) -> None:
    _check_run_exists(session, run_id)
    row = session.get(ModelSummary, run_id)
    if row is None:
        session.add(ModelSummary(run_id=run_id, summary=json_safe(summary, "summary")))
    else:
        row.summary = json_safe(summary, "summary")
    session.commit()


def get_summary(session: Session, run_id: int) -> dict | None:
    _check_run_exists(session, run_id)
    return session.scalar(select(ModelSummary.summary).where(ModelSummary.run_id == run_id))


def add_log_lines(session: Session, run_id: int, lines: Iterable[Any], *, check_run: bool = True,
                  batch_key: str | None = None) -> int:
    """Lines as ``(stream, text)``, ``(stream, text, time)`` or dicts with those keys."""
    if check_run:
        _check_run_exists(session, run_id)
    now = utcnow()
    rows = []
    for line in lines:
        if isinstance(line, dict):
            stream, text, when = line.get("stream", "stdout"), line["text"], line.get("time")
        else:
            stream, text, when = (*line, None)[:3]
        rows.append({"run_id": run_id, "stream": str(stream)[:16], "text": str(text), "time": when or now})
    if rows:
        lock_run_for_append(session, run_id)
        session.execute(insert(LogLine), rows)
        _record_batch(session, run_id, batch_key, len(rows))
        session.commit()
    return len(rows)


def get_log_lines(session: Session, run_id: int, tail: int | None = None, after: int | None = None,
                  limit: int = 1000) -> tuple[list[LogLine], int]:
    """The last ``tail`` lines, or up to ``limit`` lines after cursor ``after``; the cursor
    returned is the last line id to pass as ``after`` next time."""
    _check_run_exists(session, run_id)
    query = select(LogLine).where(LogLine.run_id == run_id)
    if after is not None:
        lines = list(session.scalars(query.where(LogLine.id > after).order_by(LogLine.id).limit(limit)))
    else:
        lines = list(session.scalars(query.order_by(LogLine.id.desc()).limit(tail or limit)))[::-1]
    cursor = lines[-1].id if lines else (after or 0)
    return lines, cursor


def log_lines_after(session: Session, run_id: int, after_id: int, limit: int = 1000) -> list[LogLine]:
    return list(session.scalars(
        select(LogLine).where(LogLine.run_id == run_id, LogLine.id > after_id).order_by(LogLine.id).limit(limit)
    ))


def add_checkpoint(
    session: Session,
    run_id: int,
    path: str,
    *,
    epoch: int | None = None,
    step: int | None = None,
    monitor: str | None = None,
    score: float | None = None,
    size: int | None = None,
    sha256: str | None = None,
    is_best: bool = False,
    is_last: bool = False,
    attempt: int | None = None,
    resumable: bool = False,
    exclusive: bool = False,
    retain: bool = False,
) -> Checkpoint:
    """Register a checkpoint file (``path``: its artifact key, relative to the artifact root). A new
    best/last checkpoint takes the flag from the run's previous one. ``attempt``: the run attempt
    that registered it (None: from outside the run). ``exclusive``: Conflict when the run already
    has a checkpoint of that file name (checked under the run's append lock).

    Quotas (``server/quotas.py``): a ``size`` past the project's ``checkpoint_bytes`` is
    :class:`~server.quotas.QuotaExceeded` (413, nothing registered); then (``retain``, what the API's
    registrations pass) the run's retention policy is applied in the same transaction, and the dropped
    checkpoints' files are deleted from ``session.info["artifacts"]`` when set; their keys are on
    ``checkpoint.pruned_keys``."""
    _check_run_exists(session, run_id)
    if score is not None and not math.isfinite(score):
        score = None if math.isnan(score) else score
    lock_run_for_append(session, run_id)
    if exclusive:
        existing = checkpoint_named(session, run_id, checkpoint_filename(path))
        if existing is not None:
            session.rollback()
            raise Conflict(f"Run {run_id} already has a checkpoint named {checkpoint_filename(path)!r} "
                           f"(id {existing.id}); checkpoints are immutable: use another file name.", "filename")
    if is_best:
        session.execute(update(Checkpoint).where(Checkpoint.run_id == run_id).values(is_best=False))
    if is_last:
        session.execute(update(Checkpoint).where(Checkpoint.run_id == run_id).values(is_last=False))
    if size:
        from server.quotas import check_checkpoint_bytes

        try:  # checkpoint_bytes: 413 (callers that stored the file first take it out again)
            check_checkpoint_bytes(session, run_id, size, what="This checkpoint", lock=True)
        except Exception:
            session.rollback()
            raise
    checkpoint = Checkpoint(run_id=run_id, path=path, epoch=epoch, step=step, monitor=monitor, score=score,
                            size=size, sha256=sha256, is_best=is_best, is_last=is_last, attempt=attempt,
                            resumable=resumable, created_at=utcnow())
    session.add(checkpoint)
    session.flush()
    pruned = _apply_retention(session, run_id) if retain else []
    session.commit()
    checkpoint.pruned_keys = _delete_pruned_files(session, pruned)  # type: ignore[attr-defined]
    return checkpoint


def _apply_retention(session: Session, run_id: int) -> list[str]:
    """Delete the rows of the run's checkpoints its project's retention policy drops
    (``server/quotas.py``), in this transaction; returns the artifact keys whose files go with them
    (under the run's folder and named by no other row)."""
    from server.quotas import retention_victims

    victims = retention_victims(session, run_id)
    if not victims:
        return []
    dropped = {c.path for c in victims if c.path.startswith(f"{run_id}/")}
    session.execute(delete(Checkpoint).where(Checkpoint.id.in_([c.id for c in victims])))
    for c in victims:
        session.expunge(c)  # gone: a later get() in this session must not find the stale object
    shared = set(session.scalars(select(Checkpoint.path).where(Checkpoint.path.in_(sorted(dropped))))) if dropped else set()
    return sorted(dropped - shared)


def _delete_pruned_files(session: Session, keys: list[str]) -> list[str]:
    """Delete the files of pruned checkpoints from the app's artifact store when the session knows
    it (``session.info["artifacts"]``); returns the keys."""
    if not keys:
        return keys
    artifacts = session.info.get("artifacts")
    artifacts = artifacts() if callable(artifacts) else artifacts
    if artifacts is not None:
        import logging

        for key in keys:
            try:
                artifacts.delete(key)
            except Exception:  # the orphan sweep removes it later
                logging.getLogger(__name__).warning("retention: could not delete %s", key, exc_info=True)
    return keys


def checkpoint_filename(path: str) -> str:
    """The file name of a checkpoint's artifact key (``"3/checkpoints/last.ckpt"`` -> ``"last.ckpt"``)."""
    return path.rsplit("/", 1)[-1]


def checkpoint_named(session: Session, run_id: int, filename: str) -> Checkpoint | None:
    """The run's checkpoint whose file is called ``filename`` (the newest if several), else None."""
    rows = session.scalars(select(Checkpoint).where(Checkpoint.run_id == run_id).order_by(Checkpoint.id.desc()))
    return next((c for c in rows if checkpoint_filename(c.path) == filename), None)


def set_checkpoint_flags(session: Session, checkpoint_id: int, *, is_best: bool | None = None,
                         is_last: bool | None = None) -> Checkpoint:
    """Set or clear ``is_best`` / ``is_last``; setting one clears it on the run's other checkpoints."""
    checkpoint = session.get(Checkpoint, checkpoint_id)
    if checkpoint is None:
        raise missing_checkpoint(checkpoint_id)
    lock_run_for_append(session, checkpoint.run_id)
    others = update(Checkpoint).where(Checkpoint.run_id == checkpoint.run_id, Checkpoint.id != checkpoint_id)
    if is_best:
        session.execute(others.values(is_best=False))
    if is_last:
        session.execute(others.values(is_last=False))
    if is_best is not None:
        checkpoint.is_best = is_best
    if is_last is not None:
        checkpoint.is_last = is_last
    session.commit()
    return checkpoint


def delete_checkpoint(session: Session, checkpoint_id: int) -> str | None:
    """Remove a checkpoint's row. Returns the artifact key whose file the caller should delete: the
    checkpoint's path when it lies under its own run's folder and no other row names it, else None.
    Conflict while a queued or running run is to resume from it."""
    checkpoint = session.get(Checkpoint, checkpoint_id)
    if checkpoint is None:
        raise missing_checkpoint(checkpoint_id)
    waiting = session.scalar(select(Run.id).where(Run.resume_checkpoint_id == checkpoint_id,
                                                  Run.id != checkpoint.run_id,
                                                  Run.status.in_(("queued", "running"))).limit(1))
    if waiting is not None:
        raise Conflict(f"Run {waiting} resumes from checkpoint {checkpoint_id}; delete it when that run has "
                       "finished.")
    path, run_id = checkpoint.path, checkpoint.run_id
    session.delete(checkpoint)
    session.flush()
    shared = session.scalar(select(Checkpoint.id).where(Checkpoint.path == path).limit(1))
    session.commit()
    if shared is not None or not path.startswith(f"{run_id}/"):
        return None
    return path


def list_checkpoints(session: Session, run_id: int) -> list[Checkpoint]:
    _check_run_exists(session, run_id)
    return list(session.scalars(select(Checkpoint).where(Checkpoint.run_id == run_id).order_by(Checkpoint.id)))


def get_checkpoint(session: Session, checkpoint_id: int) -> Checkpoint | None:
    return session.get(Checkpoint, checkpoint_id)


def last_checkpoint(session: Session, run_id: int, own_only: bool = False) -> Checkpoint | None:
    """The flagged last checkpoint, else the one with the highest step (newest on ties);
    ``own_only``: only checkpoints the run's own attempts registered (resume points)."""
    base = select(Checkpoint).where(Checkpoint.run_id == run_id)
    if own_only:
        base = base.where(Checkpoint.attempt.is_not(None))
    flagged = session.scalar(base.where(Checkpoint.is_last.is_(True)).order_by(Checkpoint.id.desc()).limit(1))
    if flagged is not None:
        return flagged
    return session.scalar(base.order_by(Checkpoint.step.desc().nulls_last(), Checkpoint.id.desc()).limit(1))


def best_or_last_checkpoint(session: Session, run_id: int) -> Checkpoint | None:
    return session.scalar(
        select(Checkpoint).where(Checkpoint.run_id == run_id)
        .order_by(Checkpoint.is_best.desc(), Checkpoint.is_last.desc(), Checkpoint.id.desc()).limit(1)
    )


def checkpoints_after(session: Session, run_id: int, after_id: int) -> list[Checkpoint]:
    return list(session.scalars(
        select(Checkpoint).where(Checkpoint.run_id == run_id, Checkpoint.id > after_id).order_by(Checkpoint.id)
    ))


# --------------------------------------------------------------------------- events


def event_cursors(session: Session, run_id: int) -> tuple[int, int, int]:
    return (
        session.scalar(select(func.max(MetricPoint.id)).where(MetricPoint.run_id == run_id)) or 0,
        session.scalar(select(func.max(LogLine.id)).where(LogLine.run_id == run_id)) or 0,
        session.scalar(select(func.max(Checkpoint.id)).where(Checkpoint.run_id == run_id)) or 0,
    )


def runs_changed_since(session: Session, when: datetime, project_ids: set[int] | None = None) -> list[Run]:
    query = select(Run).where(Run.updated_at > when).order_by(Run.updated_at)
    if project_ids is not None:
        query = query.where(Run.project_id.in_(project_ids or {-1}))
    return list(session.scalars(query).unique())


def run_ids(session: Session, project_ids: set[int] | None = None) -> set[int]:
    query = select(Run.id)
    if project_ids is not None:
        query = query.where(Run.project_id.in_(project_ids or {-1}))
    return set(session.scalars(query))


# --------------------------------------------------------------------------- change feed (server/feed.py)

FEED_BATCH = 50_000  # rows per table and poll the change feed looks at (the rest: next poll)


def _add_run_deletion(session: Session, run_id: int, project_id: int) -> None:
    from server.models import RunDeletion

    session.add(RunDeletion(run_id=run_id, project_id=project_id, deleted_at=utcnow()))


def feed_marks(session: Session) -> dict[str, int]:
    """The newest id of each table the change feed follows (``metrics``, ``logs``, ``checkpoints``,
    ``deletions``): where a feed starts."""
    from server.models import RunDeletion

    return {name: session.scalar(select(func.max(column))) or 0 for name, column in (
        ("metrics", MetricPoint.id), ("logs", LogLine.id), ("checkpoints", Checkpoint.id),
        ("deletions", RunDeletion.id))}


def feed_new_rows(session: Session, marks: dict[str, int], limit: int = FEED_BATCH) -> dict[str, dict[int, int]]:
    """For ``metrics``, ``logs`` and ``checkpoints``: run id -> newest id among the (at most
    ``limit``) rows with an id above the mark. A range of the primary key (the subquery's ORDER BY
    keeps SQLite from scanning the whole ``(run_id, id)`` index for the GROUP BY)."""
    out: dict[str, dict[int, int]] = {}
    for name, table in (("metrics", MetricPoint), ("logs", LogLine), ("checkpoints", Checkpoint)):
        recent = (select(table.run_id.label("run_id"), table.id.label("id")).where(table.id > marks[name])
                  .order_by(table.id).limit(limit).subquery())
        out[name] = {run_id: newest for run_id, newest in session.execute(
            select(recent.c.run_id, func.max(recent.c.id)).group_by(recent.c.run_id))}
    return out


def runs_touched_since(session: Session, when: datetime) -> list[tuple[int, int, datetime]]:
    """(id, project id, updated_at) of the runs changed after ``when`` (the ``updated_at`` index)."""
    return cast("list[tuple[int, int, datetime]]", [tuple(row) for row in session.execute(
        select(Run.id, Run.project_id, Run.updated_at).where(Run.updated_at > when))])


def run_deletions_after(session: Session, after_id: int, project_ids: set[int] | None = None,
                        limit: int = FEED_BATCH) -> list[Any]:
    """Tombstones of deleted runs with an id above ``after_id``: rows (id, run_id, project_id)."""
    from server.models import RunDeletion

    query = (select(RunDeletion.id, RunDeletion.run_id, RunDeletion.project_id)
             .where(RunDeletion.id > after_id).order_by(RunDeletion.id).limit(limit))
    if project_ids is not None:
        query = query.where(RunDeletion.project_id.in_(project_ids or {-1}))
    return list(session.execute(query))


def run_deletions_since(session: Session, when: datetime) -> list[Any]:
    """Tombstones (id, run_id, project_id) of the runs deleted after ``when``, oldest first."""
    from server.models import RunDeletion

    return list(session.execute(select(RunDeletion.id, RunDeletion.run_id, RunDeletion.project_id)
                                .where(RunDeletion.deleted_at > when).order_by(RunDeletion.id)))


def newest_run_id(session: Session) -> int:
    return session.scalar(select(func.max(Run.id))) or 0


def newest_run_deletion_id(session: Session) -> int:
    from server.models import RunDeletion

    return session.scalar(select(func.max(RunDeletion.id))) or 0


def project_ids(session: Session) -> set[int]:
    return set(session.scalars(select(Project.id)))


def sweep_run_deletions(session: Session, older_than: timedelta = timedelta(days=1)) -> int:
    """Drop the tombstones of runs deleted longer ago than ``older_than``; returns how many."""
    from server.models import RunDeletion

    result = session.execute(delete(RunDeletion).where(RunDeletion.deleted_at < utcnow() - older_than))
    session.commit()
    return cast("CursorResult[Any]", result).rowcount or 0


# --------------------------------------------------------------------------- code snapshots

SNAPSHOT_LIST_LIMIT = 1000


def snapshot_key(sha256: str) -> str:
    """The artifact-store key of a snapshot's blob (one per sha256, shared by the projects that have it)."""
    if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
        raise Invalid(f"{sha256!r} is not a sha256 (64 lowercase hex digits).", "sha256")
    return f"snapshots/{sha256[:2]}/{sha256}.tar.gz"


def get_snapshot(session: Session, snapshot_id: int) -> CodeSnapshot | None:
    return session.get(CodeSnapshot, snapshot_id, populate_existing=True)


def require_snapshot(session: Session, snapshot_id: int) -> CodeSnapshot:
    snapshot = get_snapshot(session, snapshot_id)
    if snapshot is None:
        raise missing_snapshot(snapshot_id)
    return snapshot


def snapshot_in_project(session: Session, project_id: int, sha256: str) -> CodeSnapshot | None:
    return session.scalar(select(CodeSnapshot).where(CodeSnapshot.project_id == project_id,
                                                     CodeSnapshot.sha256 == sha256))


def snapshot_files(session: Session, snapshot_id: int) -> list[dict]:
    """A snapshot's file list ``[{"path", "size"}]`` (the column is not loaded with the row)."""
    files = session.scalar(select(CodeSnapshot.files).where(CodeSnapshot.id == snapshot_id))
    if files is None:
        raise missing_snapshot(snapshot_id)
    return list(files)


def add_snapshot(session: Session, *, project_id: int, sha256: str, size: int, unpacked_bytes: int,
                 files: list[dict], git: dict | None, created_by: int | None = None) -> tuple[CodeSnapshot, bool]:
    """The project's row for this sha256: (new row, True), or (the row it already had, False)."""
    existing = snapshot_in_project(session, project_id, sha256)
    if existing is not None:
        return existing, False
    snapshot = CodeSnapshot(project_id=project_id, sha256=sha256, size=size, unpacked_bytes=unpacked_bytes,
                            file_count=len(files), files=json_safe(files, "files"),
                            git=json_safe(git, "git") if git is not None else None, created_at=utcnow(),
                            created_by=created_by)
    try:
        with session.begin_nested():
            session.add(snapshot)
            session.flush()
    except Exception:  # a concurrent upload of the same bytes to this project won
        existing = snapshot_in_project(session, project_id, sha256)
        if existing is None:
            raise
        session.commit()
        return existing, False
    session.commit()
    return snapshot, True


def list_snapshots(session: Session, *, project_ids: set[int] | None = None, project: str | None = None,
                   sha256: str | None = None, limit: int = 100) -> list[CodeSnapshot]:
    """Snapshots, newest first, of ``project_ids`` (None: every project), optionally of one project
    (by name) and/or one sha256."""
    query = select(CodeSnapshot).order_by(CodeSnapshot.id.desc()).limit(min(limit, SNAPSHOT_LIST_LIMIT))
    if project_ids is not None:
        query = query.where(CodeSnapshot.project_id.in_(project_ids or {-1}))
    if project is not None:
        query = query.join(Project, Project.id == CodeSnapshot.project_id).where(Project.name == project)
    if sha256 is not None:
        query = query.where(CodeSnapshot.sha256 == sha256.lower())
    return list(session.scalars(query).unique())


def set_code_schema(session: Session, snapshot_id: int, entry_key: str, params_schema: dict,
                    trainer_schema: dict | None) -> CodeSchema:
    """Record (or replace) the schema of one entry point of a snapshot."""
    params_schema = json_safe(params_schema, "params_schema")
    trainer_schema = json_safe(trainer_schema, "trainer_schema") if trainer_schema is not None else None
    row = session.scalar(select(CodeSchema).where(CodeSchema.snapshot_id == snapshot_id,
                                                  CodeSchema.entry_key == entry_key))
    if row is None:
        try:
            with session.begin_nested():
                row = CodeSchema(snapshot_id=snapshot_id, entry_key=entry_key, params_schema=params_schema,
                                 trainer_schema=trainer_schema, created_at=utcnow())
                session.add(row)
                session.flush()
            session.commit()
            return row
        except Exception:  # a concurrent recording won: replace theirs below
            row = session.scalar(select(CodeSchema).where(CodeSchema.snapshot_id == snapshot_id,
                                                          CodeSchema.entry_key == entry_key))
            if row is None:
                raise
    row.params_schema = params_schema
    row.trainer_schema = trainer_schema
    row.created_at = utcnow()
    session.commit()
    return row


def get_code_schema(session: Session, snapshot_id: int, entry_key: str) -> CodeSchema | None:
    return session.scalar(select(CodeSchema).where(CodeSchema.snapshot_id == snapshot_id,
                                                   CodeSchema.entry_key == entry_key))


def code_schema_of_run(session: Session, run: Run) -> CodeSchema | None:
    """The schema recorded for the run's snapshot and entry point (None: not a code run, or none yet)."""
    from server.snapshots import entry_key

    if run.snapshot_id is None or run.entry is None:
        return None
    return get_code_schema(session, run.snapshot_id, entry_key(run.entry))


def set_run_environment(session: Session, run_id: int, record: dict) -> RunEnvironment:
    """Store (replace) a run's reproducibility record."""
    _check_run_exists(session, run_id)
    record = json_safe(record, "record")
    row = session.get(RunEnvironment, run_id)
    if row is None:
        try:
            with session.begin_nested():
                row = RunEnvironment(run_id=run_id, record=record, updated_at=utcnow())
                session.add(row)
                session.flush()
            session.commit()
            return row
        except Exception:  # a concurrent first write won: replace it below
            row = session.get(RunEnvironment, run_id, populate_existing=True)
            if row is None:
                raise
    row.record = record
    row.updated_at = utcnow()
    session.commit()
    return row


def get_run_environment(session: Session, run_id: int) -> RunEnvironment | None:
    return session.get(RunEnvironment, run_id, populate_existing=True)
