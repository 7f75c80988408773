"""SQLAlchemy 2 declarative models: the data model of docs/architecture.md.

NaN metric values are stored as SQL NULL on every backend (SQLite turns a REAL NaN into
NULL anyway), so ``value IS NULL`` means NaN; ±inf are stored as themselves.
Times are stored as naive UTC and returned as aware UTC datetimes.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

BLOCK_STEPS = 128  # steps per metric_blocks row


class RunStatus(StrEnum):
    """A run's status. The allowed moves between them are ``server.runstate.TRANSITIONS``."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


RUN_STATUSES = tuple(s.value for s in RunStatus)
FINISHED_STATUSES = frozenset({RunStatus.SUCCEEDED.value, RunStatus.FAILED.value, RunStatus.CANCELLED.value})

# SQLite only autoincrements an INTEGER PRIMARY KEY; PostgreSQL gets a real BIGINT.
BigId = BigInteger().with_variant(Integer(), "sqlite")


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator):
    """Naive UTC in the database, aware UTC in Python (SQLite keeps no time zone)."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is not None:
            value = value.astimezone(UTC).replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    pass


class Project(Base):
    __tablename__ = "projects"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True, nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, nullable=False)

    runs: Mapped[list[Run]] = relationship(back_populates="project")


class Run(Base):
    __tablename__ = "runs"
    # the runs page's default order (newest first, id breaking ties) straight from an index, across
    # projects and within one; the second also lists a project's run ids without reading rows (issue 14)
    __table_args__ = (Index("ix_runs_created_at_id", "created_at", "id"),
                      Index("ix_runs_project_created_id", "project_id", "created_at", "id"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), nullable=False, default="")
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"), nullable=False, index=True)
    recipe: Mapped[str] = mapped_column(String(200), nullable=False, index=True)
    params: Mapped[dict] = mapped_column(JSON, nullable=False, default=dict)
    trainer: Mapped[dict] = mapped_column(JSON, nullable=False, default=dict)
    hyperparameters: Mapped[dict] = mapped_column(JSON, nullable=False, default=dict)
    status: Mapped[str] = mapped_column(String(16), nullable=False, default="queued", index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(
        UTCDateTime, default=utcnow, onupdate=utcnow, nullable=False, index=True
    )
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    error: Mapped[str | None] = mapped_column(Text)
    worker_host: Mapped[str | None] = mapped_column(String(255))
    device: Mapped[str | None] = mapped_column(String(100))
    attempt: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=3)
    resumed_from_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id", ondelete="SET NULL"))
    # No foreign key: runs <-> checkpoints would be a cycle; the checkpoint belongs to
    # resumed_from_id's run and goes when that run is deleted.
    resume_checkpoint_id: Mapped[int | None] = mapped_column(Integer)
    task_id: Mapped[str | None] = mapped_column(String(64))
    cancel_requested: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    queue: Mapped[str] = mapped_column(String(64), nullable=False, default="runyard", server_default="runyard")
    # When the broker last took this run's message (NULL: never sent, e.g. the broker was down).
    enqueued_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # A client's own id for the run (RunyardLogger): creating with the same key again returns this run.
    client_key: Mapped[str | None] = mapped_column(String(64), unique=True)
    # The user who submitted it (NULL: before users existed, or a worker-side run).
    owner_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), index=True)
    # A code run (recipe "code"): the snapshot it runs (a snapshot in use cannot be deleted) and
    # its entry point ({"kind": "module" | "cli" | "command", ...}, docs/code-runs.md).
    # (NO ACTION: deleting a snapshot that runs use fails; SQLite reflects no ON DELETE of a column
    # added in place, so none is declared)
    snapshot_id: Mapped[int | None] = mapped_column(ForeignKey("code_snapshots.id"), index=True)
    entry: Mapped[dict | None] = mapped_column(JSON)
    # The run's markdown note (issue 14; rendered by server/runs_query.py, never as raw HTML).
    note: Mapped[str | None] = mapped_column(Text)

    project: Mapped[Project] = relationship(back_populates="runs", lazy="joined")
    owner: Mapped[User | None] = relationship(lazy="joined")
    snapshot: Mapped[CodeSnapshot | None] = relationship(lazy="joined")


class MetricPoint(Base):
    __tablename__ = "metric_points"
    __table_args__ = (
        # value is in the index so downsampled reads never touch the table (covering index).
        Index("ix_metric_points_run_key_step", "run_id", "key", "step", "value"),
        Index("ix_metric_points_run_id_id", "run_id", "id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), nullable=False)
    key: Mapped[str] = mapped_column(String(250), nullable=False)
    step: Mapped[int] = mapped_column(BigInteger, nullable=False)
    epoch: Mapped[int | None] = mapped_column(Integer)
    value: Mapped[float | None] = mapped_column(Float(precision=53))
    wall_time: Mapped[float] = mapped_column(Float(precision=53), nullable=False)


class MetricBlock(Base):
    """Rollup of one key's points in one block of BLOCK_STEPS consecutive steps, kept up to
    date at ingest, so a downsampled read of a long series reads ~N/BLOCK_STEPS rows instead
    of N points. Each of first/last (by step) and min/max (by value, NaN ignored) is kept as
    (step, value, point id)."""

    __tablename__ = "metric_blocks"

    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    key: Mapped[str] = mapped_column(String(250), primary_key=True)
    block: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    n: Mapped[int] = mapped_column(Integer, nullable=False)
    first_step: Mapped[int] = mapped_column(BigInteger, nullable=False)
    first_value: Mapped[float | None] = mapped_column(Float(precision=53))
    first_id: Mapped[int] = mapped_column(BigInteger, nullable=False)
    last_step: Mapped[int] = mapped_column(BigInteger, nullable=False)
    last_value: Mapped[float | None] = mapped_column(Float(precision=53))
    last_id: Mapped[int] = mapped_column(BigInteger, nullable=False)
    min_step: Mapped[int | None] = mapped_column(BigInteger)
    min_value: Mapped[float | None] = mapped_column(Float(precision=53))
    min_id: Mapped[int | None] = mapped_column(BigInteger)
    max_step: Mapped[int | None] = mapped_column(BigInteger)
    max_value: Mapped[float | None] = mapped_column(Float(precision=53))
    max_id: Mapped[int | None] = mapped_column(BigInteger)


class MetricBlockDirty(Base):
    """Blocks whose points were deleted by anyone (a trigger on metric_points writes these);
    the next read of the key recomputes them, so the rollups stay right whatever deletes points."""

    __tablename__ = "metric_blocks_dirty"

    run_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    key: Mapped[str] = mapped_column(String(250), primary_key=True)
    block: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)


class Checkpoint(Base):
    __tablename__ = "checkpoints"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), nullable=False, index=True)
    path: Mapped[str] = mapped_column(String(1000), nullable=False)
    epoch: Mapped[int | None] = mapped_column(Integer)
    step: Mapped[int | None] = mapped_column(BigInteger)
    monitor: Mapped[str | None] = mapped_column(String(250))
    score: Mapped[float | None] = mapped_column(Float(precision=53))
    size: Mapped[int | None] = mapped_column(BigInteger)
    sha256: Mapped[str | None] = mapped_column(String(64))
    is_best: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    is_last: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, nullable=False)
    # The attempt of the run that registered it (NULL: registered from outside the run, e.g. by a
    # user's upload); only checkpoints a run's own attempts registered can be its resume point.
    attempt: Mapped[int | None] = mapped_column(Integer)
    # A resume checkpoint (saved at a batch start, a clean cut of the metric history).
    resumable: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False, server_default="0")


class ModelSummary(Base):
    __tablename__ = "model_summaries"

    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    summary: Mapped[dict] = mapped_column(JSON, nullable=False)


class LogLine(Base):
    __tablename__ = "log_lines"
    __table_args__ = (Index("ix_log_lines_run_id_id", "run_id", "id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), nullable=False)
    stream: Mapped[str] = mapped_column(String(16), nullable=False, default="stdout")
    time: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, nullable=False)
    text: Mapped[str] = mapped_column(Text, nullable=False)


class Token(Base):
    """An API token. Only a hash of the secret is stored (the secret is shown once).

    ``kind`` is ``worker`` (claims runs, publishes recipes), ``run`` (issued when a worker claims
    a run; bound to that run and attempt, see ``server/auth.py``), ``personal`` (a user's:
    ``user_id``, ``scope`` ``read`` / ``read+write``, optionally one ``project_id``) or ``login``
    (a one-time login link for ``user_id``; used up when it is opened)."""

    __tablename__ = "tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), nullable=False)
    name: Mapped[str] = mapped_column(String(200), nullable=False, default="")
    secret_hash: Mapped[str] = mapped_column(String(64), nullable=False, unique=True)
    prefix: Mapped[str] = mapped_column(String(16), nullable=False)
    scope: Mapped[str] = mapped_column(String(32), nullable=False)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    # personal tokens: limited to this project (NULL: every project its user may reach)
    project_id: Mapped[int | None] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    attempt: Mapped[int | None] = mapped_column(Integer)
    # run tokens: checkpoint ids of other runs it may download (the claim's inputs)
    reads: Mapped[list] = mapped_column(JSON, nullable=False, default=list)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, nullable=False)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Worker(Base):
    """A worker process that registered with the server and what it serves."""

    __tablename__ = "workers"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(255), nullable=False, unique=True)
    queues: Mapped[list] = mapped_column(JSON, nullable=False, default=list)
    recipes: Mapped[list] = mapped_column(JSON, nullable=False, default=list)
    token_id: Mapped[int | None] = mapped_column(Integer)
    registered_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, nullable=False)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, nullable=False)
    run_id: Mapped[int | None] = mapped_column(Integer)  # the run it is training now
    gpus: Mapped[list] = mapped_column(JSON, nullable=False, default=list, server_default="[]")  # its host's GPU ids


class Recipe(Base):
    """A recipe as the workers published it (the newest publication wins)."""

    __tablename__ = "recipes"

    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    description: Mapped[str] = mapped_column(Text, nullable=False, default="")
    params_schema: Mapped[dict] = mapped_column(JSON, nullable=False, default=dict)
    trainer_schema: Mapped[dict] = mapped_column(JSON, nullable=False, default=dict)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, nullable=False)


class IngestBatch(Base):
    """Idempotency keys of the batches a run sent (metrics, log lines): a retry is not stored twice."""

    __tablename__ = "ingest_batches"

    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    key: Mapped[str] = mapped_column(String(100), primary_key=True)
    accepted: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, nullable=False)


class Upload(Base):
    """A checkpoint upload in progress (resumable: the client continues from ``received``)."""

    __tablename__ = "uploads"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), nullable=False, index=True)
    filename: Mapped[str] = mapped_column(String(200), nullable=False)
    size: Mapped[int] = mapped_column(BigInteger, nullable=False)
    sha256: Mapped[str] = mapped_column(String(64), nullable=False)
    received: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    meta: Mapped[dict] = mapped_column(JSON, nullable=False, default=dict)
    attempt: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, nullable=False)


class User(Base):
    """An account: a password (argon2id hash) and/or an SSO identity (issuer + subject)."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), nullable=False, unique=True)  # the login name
    display_name: Mapped[str] = mapped_column(String(200), nullable=False, default="")
    email: Mapped[str | None] = mapped_column(String(320), unique=True)
    password_hash: Mapped[str | None] = mapped_column(String(255))
    is_admin: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    oidc_issuer: Mapped[str | None] = mapped_column(String(500))
    oidc_subject: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, nullable=False)
    last_login_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    disabled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (Index("uq_users_oidc", "oidc_issuer", "oidc_subject", unique=True),)


class ProjectMember(Base):
    """A user's role in a project: ``viewer``, ``member`` or ``admin``. ``source`` is ``manual``
    (set by an admin) or ``oidc`` (from the IdP's group claim; recomputed at each SSO login)."""

    __tablename__ = "project_members"

    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True, index=True)
    role: Mapped[str] = mapped_column(String(16), nullable=False)
    source: Mapped[str] = mapped_column(String(16), nullable=False, default="manual")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, nullable=False)


class BrowserSession(Base):
    """A logged-in browser. The cookie holds a random secret; only its SHA-256 is stored."""

    __tablename__ = "sessions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    secret_hash: Mapped[str] = mapped_column(String(64), nullable=False, unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True)
    csrf_token: Mapped[str] = mapped_column(String(64), nullable=False)
    method: Mapped[str] = mapped_column(String(16), nullable=False, default="password")  # password|link|oidc
    id_token: Mapped[str | None] = mapped_column(Text)  # SSO: the ID token, as logout's id_token_hint
    address: Mapped[str | None] = mapped_column(String(64))
    user_agent: Mapped[str | None] = mapped_column(String(300))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, nullable=False)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, nullable=False)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class AuditEvent(Base):
    """Who did what and when. ``actor`` keeps the name as it was (users may be renamed)."""

    __tablename__ = "audit_events"
    __table_args__ = (Index("ix_audit_events_time", "time"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    time: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, nullable=False)
    user_id: Mapped[int | None] = mapped_column(Integer, index=True)
    actor: Mapped[str] = mapped_column(String(200), nullable=False, default="")
    action: Mapped[str] = mapped_column(String(64), nullable=False, index=True)
    target: Mapped[str] = mapped_column(String(300), nullable=False, default="")
    project_id: Mapped[int | None] = mapped_column(Integer, index=True)
    address: Mapped[str | None] = mapped_column(String(64))
    detail: Mapped[dict] = mapped_column(JSON, nullable=False, default=dict)


class CodeSnapshot(Base):
    """A project's code snapshot (``server/snapshots.py``): the deterministic tar.gz of a folder,
    content-addressed by sha256. The blob is stored once per sha256 in the artifact store
    (``snapshots/<sha[:2]>/<sha>.tar.gz``); each project that uploads it has its own row."""

    __tablename__ = "code_snapshots"
    __table_args__ = (UniqueConstraint("project_id", "sha256", name="uq_code_snapshots_project_sha256"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"), nullable=False, index=True)
    sha256: Mapped[str] = mapped_column(String(64), nullable=False, index=True)
    size: Mapped[int] = mapped_column(BigInteger, nullable=False)  # the tar.gz's bytes
    unpacked_bytes: Mapped[int] = mapped_column(BigInteger, nullable=False)
    file_count: Mapped[int] = mapped_column(Integer, nullable=False)
    # [{"path", "size"}]; deferred: runs join their snapshot, lists never need its files
    files: Mapped[list] = mapped_column(JSON, nullable=False, default=list, deferred=True)
    git: Mapped[dict | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, nullable=False)
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))

    project: Mapped[Project] = relationship(lazy="joined")
    creator: Mapped[User | None] = relationship(lazy="joined")


class CodeSchema(Base):
    """The params (and trainer) schema a code run's process recorded for a snapshot's entry point
    (``entry_key``: sha256 of the entry's canonical JSON), for the dashboard's form."""

    __tablename__ = "code_schemas"
    __table_args__ = (UniqueConstraint("snapshot_id", "entry_key", name="uq_code_schemas_snapshot_entry"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    snapshot_id: Mapped[int] = mapped_column(ForeignKey("code_snapshots.id", ondelete="CASCADE"), nullable=False)
    entry_key: Mapped[str] = mapped_column(String(64), nullable=False)
    params_schema: Mapped[dict] = mapped_column(JSON, nullable=False, default=dict)
    trainer_schema: Mapped[dict | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, nullable=False)


class RunEnvironment(Base):
    """A run's reproducibility record (``trainer_core/environment.py``: command, versions, packages...)."""

    __tablename__ = "run_environments"

    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    record: Mapped[dict] = mapped_column(JSON, nullable=False, default=dict)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, nullable=False)


class ProjectQuota(Base):
    """A project's quotas, set by a server admin (issue 11). NULL: the setting's default
    (``RUNYARD_QUOTA_*`` in ``server/settings.py``); ``server/quotas.py`` resolves and enforces them."""

    __tablename__ = "project_quotas"

    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True)
    checkpoint_bytes: Mapped[int | None] = mapped_column(BigInteger)  # all of the project's checkpoint files
    keep_best: Mapped[int | None] = mapped_column(Integer)  # retention per run: the k best by score,
    keep_last: Mapped[int | None] = mapped_column(Integer)  # the newest n,
    keep_every: Mapped[int | None] = mapped_column(Integer)  # and every Nth; the rest are deleted
    metric_keys_per_run: Mapped[int | None] = mapped_column(Integer)
    points_per_run: Mapped[int | None] = mapped_column(BigInteger)
    max_run_seconds: Mapped[float | None] = mapped_column(Float(precision=53))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow, nullable=False)
    updated_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))


class RunDeletion(Base):
    """A tombstone per deleted run, so live streams learn of deletions from new rows
    (``id > cursor``) instead of listing every run id at each poll. Swept after a day."""

    __tablename__ = "run_deletions"
    __table_args__ = (Index("ix_run_deletions_deleted_at", "deleted_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(Integer, nullable=False)
    project_id: Mapped[int] = mapped_column(Integer, nullable=False)
    deleted_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, nullable=False)


class HealthProbe(Base):
    """One row that ``/healthz`` updates (``server/health.py``): a committed write is the only
    proof that the database's disk can still be written (a rolled-back one never reaches it)."""

    __tablename__ = "health_probe"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    checked_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, nullable=False)
    writes: Mapped[int] = mapped_column(Integer, default=0, nullable=False)


# --------------------------------------------------------------------------- issue 14: querying runs


class RunParam(Base):
    """One flattened param (``kind`` "p") or hyperparameter ("h") of a run, for the query language
    (``server/query.py``): numbers in ``num`` (booleans as 0/1), everything else as text."""

    __tablename__ = "run_params"
    # covering indexes (run_id in them: a filter never reads the table); SQLite: a WITHOUT ROWID
    # table, so that a lookup by (run_id, kind, key) is one B-tree search
    __table_args__ = (
        Index("ix_run_params_kind_key_num", "kind", "key", "num", "run_id"),
        Index("ix_run_params_kind_key_text", "kind", "key", "text", "run_id"),
        {"sqlite_with_rowid": False},
    )

    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    kind: Mapped[str] = mapped_column(String(1), primary_key=True)
    key: Mapped[str] = mapped_column(String(250), primary_key=True)
    num: Mapped[float | None] = mapped_column(Float(precision=53))
    text: Mapped[str | None] = mapped_column(String(500))


class RunMetricSummary(Base):
    """Per run and metric key: the last (most recently logged) value and step, and min/max,
    kept up to date at ingest, so queries and sorts on metrics never scan metric_points."""

    __tablename__ = "run_metric_summaries"
    __table_args__ = (
        Index("ix_run_metric_summaries_key_last", "key", "last_value", "run_id"),
        Index("ix_run_metric_summaries_key_min", "key", "min_value", "run_id"),
        Index("ix_run_metric_summaries_key_max", "key", "max_value", "run_id"),
        {"sqlite_with_rowid": False},
    )

    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    key: Mapped[str] = mapped_column(String(250), primary_key=True)
    last_id: Mapped[int] = mapped_column(BigInteger, nullable=False)
    last_step: Mapped[int] = mapped_column(BigInteger, nullable=False)
    last_value: Mapped[float | None] = mapped_column(Float(precision=53))
    min_value: Mapped[float | None] = mapped_column(Float(precision=53))
    max_value: Mapped[float | None] = mapped_column(Float(precision=53))


class RunTag(Base):
    __tablename__ = "run_tags"
    __table_args__ = (Index("ix_run_tags_tag", "tag", "run_id"), {"sqlite_with_rowid": False})

    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    tag: Mapped[str] = mapped_column(String(64), primary_key=True)


class ProjectKey(Base):
    """The param / hyperparameter / metric keys a project's runs have (``kind`` p, h, m), for
    ``GET /api/v1/runs/keys`` without scanning every run."""

    __tablename__ = "project_keys"

    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True)
    kind: Mapped[str] = mapped_column(String(1), primary_key=True)
    key: Mapped[str] = mapped_column(String(250), primary_key=True)


class SavedView(Base):
    """A saved runs-table view of a project: query, columns, sort and grouping."""

    __tablename__ = "saved_views"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), nullable=False, index=True)
    name: Mapped[str] = mapped_column(String(200), nullable=False)
    query: Mapped[str] = mapped_column(Text, nullable=False, default="")
    columns: Mapped[list] = mapped_column(JSON, nullable=False, default=list)
    sort: Mapped[str] = mapped_column(String(300), nullable=False, default="")
    group_by: Mapped[str] = mapped_column(String(300), nullable=False, default="")
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, nullable=False)


class ProjectLayout(Base):
    """A project's chart panel layout: ``{"panels": [...], "hidden": [...]}``."""

    __tablename__ = "project_layouts"

    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True)
    layout: Mapped[dict] = mapped_column(JSON, nullable=False, default=dict)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, nullable=False)
