"""SQLAlchemy 2 declarative models: the data model of docs/architecture.md.

NaN metric values are stored as SQL NULL on every backend (SQLite turns a REAL NaN into
NULL anyway), so ``value IS NULL`` means NaN; ±inf are stored as themselves.
Times are stored as naive UTC and returned as aware UTC datetimes.
"""

from __future__ import annotations

from datetime import UTC, datetime
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
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

BLOCK_STEPS = 128  # steps per metric_blocks row
RUN_STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
FINISHED_STATUSES = frozenset({"succeeded", "failed", "cancelled"})

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

    project: Mapped[Project] = relationship(back_populates="runs", lazy="joined")


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
