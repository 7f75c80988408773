"""Limits and quotas (issue 11): per-project quotas set by an admin, and a tombstone per deleted
run so that live streams learn of deletions from new rows only (O(changes), not O(runs)).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

UTC_DT = sa.DateTime()


def upgrade() -> None:
    op.create_table(
        "project_quotas",
        sa.Column("project_id", sa.Integer(), sa.ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("checkpoint_bytes", sa.BigInteger(), nullable=True),
        sa.Column("keep_best", sa.Integer(), nullable=True),
        sa.Column("keep_last", sa.Integer(), nullable=True),
        sa.Column("keep_every", sa.Integer(), nullable=True),
        sa.Column("metric_keys_per_run", sa.Integer(), nullable=True),
        sa.Column("points_per_run", sa.BigInteger(), nullable=True),
        sa.Column("max_run_seconds", sa.Float(precision=53), nullable=True),
        sa.Column("updated_at", UTC_DT, nullable=False),
        sa.Column("updated_by", sa.Integer(), sa.ForeignKey("users.id", ondelete="SET NULL"), nullable=True),
    )
    op.create_table(
        "run_deletions",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("deleted_at", UTC_DT, nullable=False),
    )
    op.create_index("ix_run_deletions_deleted_at", "run_deletions", ["deleted_at"])


def downgrade() -> None:
    op.drop_index("ix_run_deletions_deleted_at", table_name="run_deletions")
    op.drop_table("run_deletions")
    op.drop_table("project_quotas")
