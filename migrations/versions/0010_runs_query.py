"""Querying runs at scale (issue 14): flattened params (``run_params``), per-run metric summaries
(``run_metric_summaries``), tags, a project's keys, notes, saved views and panel layouts; with a
backfill of the existing runs.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02
"""

from __future__ import annotations

import json
import math
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

MAX_PARAM_KEYS = 500


def _flatten(value: Any, prefix: str, out: dict[str, Any]) -> dict[str, Any]:
    if isinstance(value, dict):
        for key, item in value.items():
            if len(out) >= MAX_PARAM_KEYS:
                break
            name = f"{prefix}.{key}" if prefix else str(key)
            if isinstance(item, dict) and item:
                _flatten(item, name, out)
            elif len(name) <= 250:
                out[name] = item
    return out


def _row(run_id: int, kind: str, key: str, value: Any) -> dict[str, Any]:
    num: float | None = None
    text: str | None = None
    if isinstance(value, bool):
        num, text = float(value), "true" if value else "false"
    elif isinstance(value, int | float):
        num = float(value) if math.isfinite(float(value)) else None
        text = str(value)
    elif value is not None:
        text = value if isinstance(value, str) else json.dumps(value, default=str)
    return {"run_id": run_id, "kind": kind, "key": key, "num": num, "text": None if text is None else text[:500]}


def upgrade() -> None:
    op.add_column("runs", sa.Column("note", sa.Text(), nullable=True))
    op.create_index("ix_runs_created_at_id", "runs", ["created_at", "id"])
    op.create_index("ix_runs_project_created_id", "runs", ["project_id", "created_at", "id"])
    params = op.create_table(
        "run_params",
        sa.Column("run_id", sa.Integer(), sa.ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("kind", sa.String(1), primary_key=True),
        sa.Column("key", sa.String(250), primary_key=True),
        sa.Column("num", sa.Float(precision=53), nullable=True),
        sa.Column("text", sa.String(500), nullable=True),
        sqlite_with_rowid=False,
    )
    op.create_index("ix_run_params_kind_key_num", "run_params", ["kind", "key", "num", "run_id"])
    op.create_index("ix_run_params_kind_key_text", "run_params", ["kind", "key", "text", "run_id"])
    op.create_table(
        "run_metric_summaries",
        sa.Column("run_id", sa.Integer(), sa.ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("key", sa.String(250), primary_key=True),
        sa.Column("last_id", sa.BigInteger(), nullable=False),
        sa.Column("last_step", sa.BigInteger(), nullable=False),
        sa.Column("last_value", sa.Float(precision=53), nullable=True),
        sa.Column("min_value", sa.Float(precision=53), nullable=True),
        sa.Column("max_value", sa.Float(precision=53), nullable=True),
        sqlite_with_rowid=False,
    )
    for stat in ("last", "min", "max"):
        op.create_index(f"ix_run_metric_summaries_key_{stat}", "run_metric_summaries",
                        ["key", f"{stat}_value", "run_id"])
    op.create_table(
        "run_tags",
        sa.Column("run_id", sa.Integer(), sa.ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("tag", sa.String(64), primary_key=True),
        sqlite_with_rowid=False,
    )
    op.create_index("ix_run_tags_tag", "run_tags", ["tag", "run_id"])
    keys = op.create_table(
        "project_keys",
        sa.Column("project_id", sa.Integer(), sa.ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("kind", sa.String(1), primary_key=True),
        sa.Column("key", sa.String(250), primary_key=True),
    )
    op.create_table(
        "saved_views",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("project_id", sa.Integer(), sa.ForeignKey("projects.id", ondelete="CASCADE"), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("query", sa.Text(), nullable=False),
        sa.Column("columns", sa.JSON(), nullable=False),
        sa.Column("sort", sa.String(300), nullable=False),
        sa.Column("group_by", sa.String(300), nullable=False),
        sa.Column("created_by", sa.Integer(), sa.ForeignKey("users.id", ondelete="SET NULL"), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
    )
    op.create_index("ix_saved_views_project_id", "saved_views", ["project_id"])
    op.create_table(
        "project_layouts",
        sa.Column("project_id", sa.Integer(), sa.ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("layout", sa.JSON(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
    )
    _backfill(params, keys)


def _backfill(params: sa.Table, keys: sa.Table) -> None:
    """The existing runs' params, hyperparameters and metric summaries."""
    bind = op.get_bind()
    runs = sa.table("runs", sa.column("id", sa.Integer()), sa.column("project_id", sa.Integer()),
                    sa.column("params", sa.JSON()), sa.column("hyperparameters", sa.JSON()))
    seen: set[tuple[int, str, str]] = set()
    rows: list[dict[str, Any]] = []
    for run_id, project_id, run_params, hyper in bind.execute(sa.select(runs.c.id, runs.c.project_id, runs.c.params,
                                                                        runs.c.hyperparameters)):
        for kind, source in (("p", run_params), ("h", hyper)):
            for key, value in _flatten(source or {}, "", {}).items():
                rows.append(_row(run_id, kind, key, value))
                seen.add((project_id, kind, key))
        if len(rows) > 5000:
            bind.execute(params.insert(), rows)
            rows = []
    if rows:
        bind.execute(params.insert(), rows)
    bind.execute(sa.text(
        "INSERT INTO run_metric_summaries (run_id, key, last_id, last_step, last_value, min_value, max_value) "
        "SELECT a.run_id, a.key, a.last_id, p.step, p.value, a.lo, a.hi FROM (SELECT run_id, key, max(id) AS last_id, "
        "min(value) AS lo, max(value) AS hi FROM metric_points GROUP BY run_id, key) a "
        "JOIN metric_points p ON p.id = a.last_id"))
    for project_id, key in bind.execute(sa.text(
            "SELECT DISTINCT r.project_id, s.key FROM run_metric_summaries s JOIN runs r ON r.id = s.run_id")):
        seen.add((project_id, "m", key))
    if seen:
        bind.execute(keys.insert(), [{"project_id": p, "kind": k, "key": key} for p, k, key in sorted(seen)])


def downgrade() -> None:
    op.drop_table("project_layouts")
    op.drop_index("ix_saved_views_project_id", table_name="saved_views")
    op.drop_table("saved_views")
    op.drop_table("project_keys")
    op.drop_index("ix_run_tags_tag", table_name="run_tags")
    op.drop_table("run_tags")
    for stat in ("last", "min", "max"):
        op.drop_index(f"ix_run_metric_summaries_key_{stat}", table_name="run_metric_summaries")
    op.drop_table("run_metric_summaries")
    op.drop_index("ix_run_params_kind_key_text", table_name="run_params")
    op.drop_index("ix_run_params_kind_key_num", table_name="run_params")
    op.drop_table("run_params")
    op.drop_index("ix_runs_project_created_id", table_name="runs")
    op.drop_index("ix_runs_created_at_id", table_name="runs")
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("note")
