"""Per-project quotas and checkpoint retention (issue 11, point 2; docs/security.md "Quotas and retention").

A server admin sets a project's quotas (``project_quotas``: PUT /api/v1/projects/{id}/quotas or
``runyard project quota``); a NULL column is the ``RUNYARD_QUOTA_*`` default of the settings.

- ``checkpoint_bytes``: the sum of the sizes of all of the project's checkpoints. An upload that would
  pass it is refused with 413 before anything reaches the artifact store (at ``create_upload`` by its
  declared size, at every PUT of its bytes, and again when it is registered).
- ``keep_best`` / ``keep_last`` / ``keep_every``: the retention policy, applied to a run at each
  checkpoint registration (:func:`retention_victims`): a run keeps its ``keep_best`` best checkpoints by
  score (in the monitor's mode), its ``keep_last`` newest (by registration order), the first checkpoint
  of every ``keep_every`` training steps (steps 0..N-1, N..2N-1, ...; 0: off), its flagged best and last,
  its resume point (``store.resume_point``) and its current attempt's newest resume checkpoint, and every
  checkpoint another run resumes from or names as an input; every other checkpoint is deleted (row and
  file).
- ``metric_keys_per_run`` / ``points_per_run``: an ingest that would pass them is refused with 413 and
  nothing of it is stored (:func:`check_metric_points`, called by ``store.add_metric_points``); the
  run's own process fails the run with that message (``RunyardLogger`` raises :class:`QuotaExceeded`
  in the training thread).
- ``max_run_seconds``: every queued run's ``trainer.max_time`` is set to it when absent or larger
  (:func:`apply_max_time`); ``max_epochs=-1`` with no ``max_steps`` and no ``max_time`` is refused at
  submit (:func:`refuse_endless`); the reaper fails runs running longer than it plus
  ``RUNYARD_QUOTA_RUN_TIME_GRACE`` (:func:`stop_overtime_runs`).

Every refusal is a :class:`QuotaExceeded` (an ``ApiError``, 413, ``field`` = ``quota.<name>``) whose
sentence names the quota, its value, the usage and how to raise it.

:func:`sweep_orphans` (run by the server every ``RUNYARD_SWEEP_INTERVAL`` s) deletes files no row points
to: checkpoint files without a checkpoint row, snapshot blobs without a ``code_snapshots`` row, staged
uploads without an ``uploads`` row; only files untouched for ``RUNYARD_SWEEP_GRACE`` s.
"""

from __future__ import annotations

import logging
import math
import re
import shlex
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, cast

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from server.artifacts import walk_files
from server.errors import ApiError
from server.models import (
    Checkpoint,
    CodeSnapshot,
    MetricBlock,
    Project,
    ProjectQuota,
    Run,
    RunStatus,
    Upload,
    User,
    utcnow,
)
from server.settings import Settings, get_settings

log = logging.getLogger(__name__)

QUOTA_NAMES = ("checkpoint_bytes", "keep_best", "keep_last", "keep_every", "metric_keys_per_run",
               "points_per_run", "max_run_seconds")
# What each quota means, for messages and the CLI's table.
DESCRIPTION = {
    "checkpoint_bytes": "bytes of checkpoints per project",
    "keep_best": "best checkpoints kept per run (by score)",
    "keep_last": "newest checkpoints kept per run",
    "keep_every": "keep the first checkpoint of every N steps (0: off)",
    "metric_keys_per_run": "metric keys per run",
    "points_per_run": "metric points per run",
    "max_run_seconds": "longest run time, in seconds",
}
MAX_SCORE_NAMES = re.compile(r"acc|auc|f1|precision|recall|iou|map|bleu|rouge|dice|r2|ndcg|top\d|psnr|ssim",
                             re.IGNORECASE)


class QuotaExceeded(ApiError):
    """A request refused by a project's quota: 413, ``field`` = ``quota.<name>``."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(413, message, f"quota.{name}")
        self.quota = name


@dataclass(frozen=True)
class Quotas:
    """A project's effective quotas (its own where set, else the defaults)."""

    project_id: int
    project: str
    checkpoint_bytes: int
    keep_best: int
    keep_last: int
    keep_every: int
    metric_keys_per_run: int
    points_per_run: int
    max_run_seconds: float
    overrides: dict[str, Any] = field(default_factory=dict)  # what the admin set (None: the default)

    def values(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in QUOTA_NAMES}


def settings_of(session: Session) -> Settings:
    """The app's settings (the sessions of ``create_app`` carry them in ``session.info``), else the
    process's."""
    settings = session.info.get("settings")
    return settings if isinstance(settings, Settings) else get_settings()


def defaults(settings: Settings) -> dict[str, Any]:
    return {name: getattr(settings, f"quota_{name}") for name in QUOTA_NAMES}


def effective(session: Session, project_id: int, settings: Settings | None = None) -> Quotas:
    settings = settings or settings_of(session)
    name = session.scalar(select(Project.name).where(Project.id == project_id)) or str(project_id)
    row = session.get(ProjectQuota, project_id, populate_existing=True)
    overrides = {n: (getattr(row, n) if row is not None else None) for n in QUOTA_NAMES}
    base = defaults(settings)
    values: dict[str, Any] = {n: base[n] if overrides[n] is None else overrides[n] for n in QUOTA_NAMES}
    return Quotas(project_id=project_id, project=name, overrides=overrides, **values)


def effective_by_name(session: Session, project: str, settings: Settings | None = None) -> Quotas:
    """The quotas of the project named ``project``; the defaults for one that does not exist yet."""
    settings = settings or settings_of(session)
    name = (project or "default").strip() or "default"
    project_id = session.scalar(select(Project.id).where(Project.name == name))
    if project_id is not None:
        return effective(session, project_id, settings)
    return Quotas(project_id=0, project=name, overrides=dict.fromkeys(QUOTA_NAMES), **defaults(settings))


def _option(name: str) -> str:
    return "--" + name.replace("_", "-")


def how_to_raise(quotas: Quotas, name: str) -> str:
    return (f"A server admin can raise it with `runyard project quota {shlex.quote(quotas.project)} "
            f"{_option(name)} N` or PUT /api/v1/projects/{quotas.project_id}/quotas "
            f'{{"{name}": N}}.')


def human_bytes(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:,.0f} bytes" if unit == "bytes" else f"{n:,.1f} {unit}"
        n /= 1024
    return f"{n} bytes"  # pragma: no cover


def set_quotas(session: Session, project_id: int, changes: dict[str, Any], user_id: int | None) -> tuple[
        dict[str, Any], dict[str, Any]]:
    """Set (a value) or reset (None: back to the default) the quotas named in ``changes``; returns
    the overrides (before, after). Commits."""
    unknown = sorted(set(changes) - set(QUOTA_NAMES))
    if unknown:
        raise ApiError(422, f"Unknown quota {unknown[0]!r}; use one of {', '.join(QUOTA_NAMES)}.", unknown[0])
    row = session.get(ProjectQuota, project_id, populate_existing=True)
    before = {n: (getattr(row, n) if row is not None else None) for n in QUOTA_NAMES}
    if row is None:
        row = ProjectQuota(project_id=project_id, updated_at=utcnow())
        session.add(row)
    for name, value in changes.items():
        setattr(row, name, value)
    row.updated_at = utcnow()
    row.updated_by = user_id
    session.commit()
    after = {n: getattr(row, n) for n in QUOTA_NAMES}
    return before, after


def describe(session: Session, project_id: int, settings: Settings | None = None) -> dict[str, Any]:
    """What GET /api/v1/projects/{id}/quotas answers."""
    settings = settings or settings_of(session)
    quotas = effective(session, project_id, settings)
    row = session.get(ProjectQuota, project_id)
    updated_by = None
    if row is not None and row.updated_by is not None:
        updated_by = session.scalar(select(User.name).where(User.id == row.updated_by))
    used, count = checkpoint_usage(session, project_id)
    return {
        "project_id": project_id, "project": quotas.project, "quotas": quotas.values(),
        "overrides": quotas.overrides, "defaults": defaults(settings),
        "usage": {"checkpoint_bytes": used, "checkpoints": count},
        "updated_at": row.updated_at if row is not None else None, "updated_by": updated_by,
    }


# --------------------------------------------------------------------------- checkpoint bytes


def checkpoint_usage(session: Session, project_id: int) -> tuple[int, int]:
    """(bytes, count) of the project's registered checkpoints."""
    total, count = session.execute(
        select(func.coalesce(func.sum(Checkpoint.size), 0), func.count(Checkpoint.id))
        .join(Run, Run.id == Checkpoint.run_id).where(Run.project_id == project_id)
    ).one()
    return int(total or 0), int(count or 0)


def project_of_run(session: Session, run_id: int) -> int | None:
    return session.scalar(select(Run.project_id).where(Run.id == run_id))


QUOTA_LOCK_SPACE = 0x52595131  # "RYQ1": the first key of the per-project advisory lock below


def check_checkpoint_bytes(session: Session, run_id: int, adding: int, *, settings: Settings | None = None,
                           what: str = "This upload", lock: bool = False) -> int:
    """QuotaExceeded when ``adding`` more bytes would take the run's project past its checkpoint quota;
    returns the bytes still free (after ``adding``). A run that does not exist passes (its caller
    answers 404). ``lock``: on PostgreSQL, hold the project's advisory lock until the transaction
    ends, so that two registrations never both take the last free bytes (SQLite: one writer)."""
    project_id = project_of_run(session, run_id)
    if project_id is None:
        return 0
    if lock and session.get_bind().dialect.name == "postgresql":
        session.execute(select(func.pg_advisory_xact_lock(QUOTA_LOCK_SPACE, project_id)))
    quotas = effective(session, project_id, settings)
    used, _ = checkpoint_usage(session, project_id)
    if used + adding > quotas.checkpoint_bytes:
        raise QuotaExceeded("checkpoint_bytes", (
            f"{what} of {human_bytes(adding)} would take project {quotas.project!r} past its checkpoint_bytes "
            f"quota of {human_bytes(quotas.checkpoint_bytes)} ({quotas.checkpoint_bytes} bytes); its checkpoints "
            f"hold {human_bytes(used)} ({used} bytes) already. Nothing was stored. Delete runs or checkpoints "
            f"to free space. {how_to_raise(quotas, 'checkpoint_bytes')}"))
    return quotas.checkpoint_bytes - used - adding


def checkpoint_bytes_left(session: Session, run_id: int, settings: Settings | None = None) -> tuple[int, Quotas | None]:
    """(bytes the run's project may still store, its quotas); (0, None) for a run that does not exist."""
    project_id = project_of_run(session, run_id)
    if project_id is None:
        return 0, None
    quotas = effective(session, project_id, settings)
    used, _ = checkpoint_usage(session, project_id)
    return quotas.checkpoint_bytes - used, quotas


def streamed_past(quotas: Quotas, received: int, left: int) -> QuotaExceeded:
    """The refusal of a body that passed the bytes left while it streamed in."""
    return QuotaExceeded("checkpoint_bytes", (
        f"This upload passed {human_bytes(received)} while project {quotas.project!r} had "
        f"{human_bytes(max(0, left))} left of its checkpoint_bytes quota of {human_bytes(quotas.checkpoint_bytes)} "
        f"({quotas.checkpoint_bytes} bytes); nothing was stored. Delete runs or checkpoints to free space. "
        f"{how_to_raise(quotas, 'checkpoint_bytes')}"))


# --------------------------------------------------------------------------- metric points and keys


def check_metric_points(session: Session, run_id: int, rows: list[tuple], *, settings: Settings | None = None) -> None:
    """QuotaExceeded when storing ``rows`` (``(run_id, key, ...)`` tuples) would take the run past
    its project's ``points_per_run`` or ``metric_keys_per_run``. Counts come from the rollups
    (``metric_blocks``: about one row per 128 points)."""
    project_id = project_of_run(session, run_id)
    if project_id is None:
        return
    quotas = effective(session, project_id, settings)
    points, keys = session.execute(
        select(func.coalesce(func.sum(MetricBlock.n), 0), func.count(func.distinct(MetricBlock.key)))
        .where(MetricBlock.run_id == run_id)
    ).one()
    points, keys, n = int(points or 0), int(keys or 0), len(rows)
    if points + n > quotas.points_per_run:
        raise QuotaExceeded("points_per_run", (
            f"Run {run_id} holds {points:,} metric points; these {n:,} would take it past project "
            f"{quotas.project!r}'s points_per_run quota of {quotas.points_per_run:,}. Nothing of this request "
            f"was stored. Log less often (log_every_n_steps) or fewer keys. {how_to_raise(quotas, 'points_per_run')}"))
    batch_keys = {r[1] for r in rows}
    if keys + len(batch_keys) > quotas.metric_keys_per_run:
        existing = set(session.scalars(select(MetricBlock.key).where(
            MetricBlock.run_id == run_id, MetricBlock.key.in_(sorted(batch_keys))).distinct()))
        new = sorted(batch_keys - existing)
        if keys + len(new) > quotas.metric_keys_per_run:
            shown = ", ".join(repr(k) for k in new[:3]) + (", ..." if len(new) > 3 else "")
            raise QuotaExceeded("metric_keys_per_run", (
                f"Run {run_id} has {keys:,} metric keys; these {len(new):,} new ones ({shown}) would take it past "
                f"project {quotas.project!r}'s metric_keys_per_run quota of {quotas.metric_keys_per_run:,}. Nothing "
                f"of this request was stored. {how_to_raise(quotas, 'metric_keys_per_run')}"))


# --------------------------------------------------------------------------- retention


def monitor_mode(run: Run, rows: list[Checkpoint]) -> str:
    """``min`` or ``max``: the run's ``trainer.checkpoint_mode`` when it has one; else what the
    flagged best checkpoint shows (it holds the lowest or the highest score); else from the
    monitor's name (accuracy-like names are maximised, losses minimised)."""
    mode = (run.trainer or {}).get("checkpoint_mode") if isinstance(run.trainer, dict) else None
    if mode in ("min", "max"):
        return mode
    scored = [c for c in rows if c.score is not None]
    best = next((c for c in reversed(rows) if c.is_best and c.score is not None), None)
    if best is not None and len(scored) > 1:
        low, high = min(cast(float, c.score) for c in scored), max(cast(float, c.score) for c in scored)
        if best.score == high and best.score != low:
            return "max"
        if best.score == low and best.score != high:
            return "min"
    monitor = next((c.monitor for c in reversed(rows) if c.monitor), None)
    if monitor is None and isinstance(run.trainer, dict):
        monitor = run.trainer.get("checkpoint_monitor")
    return "max" if monitor and MAX_SCORE_NAMES.search(str(monitor)) else "min"


def retention_keep(session: Session, run: Run, rows: list[Checkpoint], quotas: Quotas) -> set[int]:
    """The ids of ``rows`` (the run's checkpoints, by id) the policy keeps."""
    keep: set[int] = set()
    keep.update(c.id for c in rows[-max(1, quotas.keep_last):])
    keep.update(c.id for c in rows if c.is_best or c.is_last)
    if quotas.keep_best > 0:
        scored = [c for c in rows if c.score is not None and not math.isnan(c.score)]
        sign = -1.0 if monitor_mode(run, rows) == "max" else 1.0
        scored.sort(key=lambda c: (sign * cast(float, c.score), c.id))
        keep.update(c.id for c in scored[:quotas.keep_best])
    if quotas.keep_every > 0:
        first: dict[int, Checkpoint] = {}
        for c in rows:
            if c.step is None:
                continue
            block = c.step // quotas.keep_every
            if block not in first or (c.step, c.id) < (first[block].step, first[block].id):
                first[block] = c
        keep.update(c.id for c in first.values())
    # where the run (re)starts: its resume point, and its current attempt's newest resume checkpoint
    from server.store import best_or_last_checkpoint, resume_point

    point = resume_point(session, run)
    if point is not None:
        keep.add(point.id)
    mine = [c for c in rows if c.resumable and c.attempt is not None and c.attempt == run.attempt]
    if mine:
        keep.add(mine[-1].id)
    # what other runs resume from or name as inputs
    ids = [c.id for c in rows]
    keep.update(i for i in session.scalars(select(Run.resume_checkpoint_id).where(
        Run.resume_checkpoint_id.in_(ids), Run.id != run.id)) if i is not None)
    for params in session.scalars(select(Run.params).where(
            Run.status.in_((RunStatus.QUEUED.value, RunStatus.RUNNING.value)), Run.id != run.id)):
        for name, value in (params or {}).items() if isinstance(params, dict) else ():
            if not isinstance(value, int) or isinstance(value, bool):
                continue
            if name.endswith("checkpoint_id") and value in ids:
                keep.add(value)
            elif (name == "source_run_id" or name.endswith("_source_run_id")) and value == run.id:
                named = best_or_last_checkpoint(session, run.id)
                if named is not None:
                    keep.add(named.id)
    return keep


def retention_victims(session: Session, run_id: int, settings: Settings | None = None) -> list[Checkpoint]:
    """The run's checkpoints its project's retention policy deletes now (in the session, not committed)."""
    run = session.get(Run, run_id)
    if run is None:
        return []
    quotas = effective(session, run.project_id, settings)
    rows = list(session.scalars(select(Checkpoint).where(Checkpoint.run_id == run_id).order_by(Checkpoint.id)))
    if len(rows) <= quotas.keep_last:
        return []
    keep = retention_keep(session, run, rows, quotas)
    return [c for c in rows if c.id not in keep]


# --------------------------------------------------------------------------- longest run time


def max_time_seconds(value: Any) -> float | None:
    """Seconds of a trainer ``max_time`` in the forms trainer_core takes ('DD:HH:MM:SS', a dict of
    timedelta arguments; also plain seconds); None when unset; ValueError when unreadable."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError(value)
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, dict):
        return timedelta(**{str(k): float(v) for k, v in value.items()}).total_seconds()
    if isinstance(value, str):
        parts = value.split(":")
        if len(parts) == 4 and all(p.strip().isdigit() for p in parts):
            d, h, m, s = (int(p) for p in parts)
            return timedelta(days=d, hours=h, minutes=m, seconds=s).total_seconds()
    raise ValueError(value)


def format_max_time(seconds: float) -> str:
    """'DD:HH:MM:SS' (whole seconds, rounded up; at least 1 s), the form trainer_core and Lightning take."""
    total = max(1, math.ceil(seconds))
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{days:02d}:{hours:02d}:{minutes:02d}:{secs:02d}"


def refuse_endless(trainer: dict[str, Any] | None) -> None:
    """422 naming trainer.max_epochs for a run that would train forever: ``max_epochs=-1`` with no
    ``max_steps`` limit and no ``max_time``."""
    trainer = trainer or {}
    steps = trainer.get("max_steps")
    if trainer.get("max_epochs") == -1 and steps in (None, -1) and trainer.get("max_time") is None:
        raise ApiError(422, "trainer.max_epochs=-1 with no max_steps and no max_time would train forever; set "
                            "max_epochs, max_steps or max_time (e.g. \"max_time\": \"00:12:00:00\" for 12 hours).",
                       "trainer.max_epochs")


def apply_max_time(trainer: dict[str, Any] | None, quotas: Quotas) -> dict[str, Any]:
    """The trainer arguments with ``max_time`` set to the project's longest run time when it is
    absent or larger (a copy)."""
    out = dict(trainer or {})
    try:
        current = max_time_seconds(out.get("max_time"))
    except (ValueError, TypeError):
        raise ApiError(422, "trainer.max_time must be 'DD:HH:MM:SS' or an object of timedelta arguments "
                            "(e.g. {\"hours\": 12}).", "trainer.max_time") from None
    if current is None or current > quotas.max_run_seconds:
        out["max_time"] = format_max_time(quotas.max_run_seconds)
    return out


def stop_overtime_runs(session: Session, settings: Settings | None = None) -> list[int]:
    """Fail running runs that have run (since they first started) longer than their project's
    ``max_run_seconds`` plus ``RUNYARD_QUOTA_RUN_TIME_GRACE``; the ids it failed."""
    from server.store import move

    settings = settings or settings_of(session)
    grace = settings.quota_run_time_grace
    shortest = session.scalar(select(func.min(ProjectQuota.max_run_seconds)))
    limit_floor = min(settings.quota_max_run_seconds, shortest if shortest is not None else math.inf)
    now = utcnow()
    candidates = session.execute(
        select(Run.id, Run.project_id, Run.attempt, Run.started_at).where(
            Run.status == RunStatus.RUNNING.value, Run.started_at.is_not(None),
            Run.started_at < now - timedelta(seconds=limit_floor + grace))
    ).all()
    stopped: list[int] = []
    cache: dict[int, Quotas] = {}
    for run_id, project_id, attempt, started_at in candidates:
        quotas = cache.get(project_id) or cache.setdefault(project_id, effective(session, project_id, settings))
        elapsed = (now - cast(datetime, started_at)).total_seconds()  # is_not(None) above
        if elapsed <= quotas.max_run_seconds + grace:
            continue
        message = (f"Stopped by the reaper: run {run_id} ran {elapsed:,.0f} s, past project {quotas.project!r}'s "
                   f"max_run_seconds quota of {quotas.max_run_seconds:,.0f} s (longest run time). "
                   f"{how_to_raise(quotas, 'max_run_seconds')}")
        if move(session, run_id, RunStatus.FAILED.value, attempt=attempt, error=message,
                where=Run.status == RunStatus.RUNNING.value):
            stopped.append(run_id)
    return stopped


# --------------------------------------------------------------------------- the orphan sweep


def sweep_orphans(session: Session, artifacts: Any, upload_dir: Path | str | None, grace: float) -> dict[str, int]:
    """Delete files no row points to and untouched for ``grace`` seconds: in the artifact store,
    ``<run_id>/...`` files no checkpoint row names and ``snapshots/..`` blobs no ``code_snapshots``
    row has; under ``upload_dir``, staged ``<run_id>/<upload_id>.part`` files without an ``uploads``
    row, one-shot and snapshot staging files. Returns counts by kind."""
    cutoff = time.time() - grace
    counts = {"checkpoints": 0, "snapshots": 0, "uploads": 0}
    paths = set(session.scalars(select(Checkpoint.path)))
    shas = set(session.scalars(select(CodeSnapshot.sha256).distinct()))
    uploads = set(session.scalars(select(Upload.id)))
    session.rollback()  # end the read transaction: the deletions below may take a while
    if artifacts is not None:
        for key, mtime in artifacts.iter_files():
            if mtime > cutoff:
                continue
            top = key.split("/", 1)[0]
            if top == "snapshots":
                sha = key.rsplit("/", 1)[-1].removesuffix(".tar.gz")
                if sha in shas:
                    continue
                kind = "snapshots"
            elif top.isdigit():
                if key in paths:
                    continue
                kind = "checkpoints"
            else:
                continue  # not a key Runyard writes: leave it alone
            # the rows may have changed since they were read: look again before deleting
            if kind == "checkpoints" and session.scalar(select(Checkpoint.id).where(Checkpoint.path == key).limit(1)):
                continue
            if kind == "snapshots" and session.scalar(select(CodeSnapshot.id).where(CodeSnapshot.sha256 == sha).limit(1)):
                continue
            try:
                artifacts.delete(key)
                counts[kind] += 1
                log.info("sweep: deleted %s from %s (no row points to it)", key, artifacts.url)
            except Exception:  # the next sweep tries again
                log.warning("sweep: could not delete %s", key, exc_info=True)
        session.rollback()
    if upload_dir is not None:
        root = Path(upload_dir)
        if root.is_dir():
            for rel, mtime in walk_files(root):
                if mtime > cutoff:
                    continue
                parts = rel.split("/")
                if parts[0] == "snapshots":
                    pass  # staging of a snapshot upload: finished ones were moved away
                elif len(parts) == 2 and parts[0].isdigit() and parts[1].endswith(".part"):
                    stem = parts[1].removesuffix(".part")
                    if not stem.startswith("oneshot-") and (stem in uploads or session.get(Upload, stem) is not None):
                        continue
                else:
                    continue
                (root / rel).unlink(missing_ok=True)
                counts["uploads"] += 1
            session.rollback()
    return counts
