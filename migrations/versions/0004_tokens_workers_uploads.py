"""Tokens, workers and published recipes, idempotency keys, resumable uploads; checkpoints know
the attempt that registered them; runs know when they were enqueued and a client's key.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

UTC_DT = sa.DateTime()


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("enqueued_at", UTC_DT, nullable=True))
        batch.add_column(sa.Column("client_key", sa.String(length=64), nullable=True))
        batch.create_unique_constraint("uq_runs_client_key", ["client_key"])
    with op.batch_alter_table("checkpoints") as batch:
        batch.add_column(sa.Column("attempt", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("resumable", sa.Boolean(), nullable=False, server_default="0"))
    # Checkpoints saved before this revision by a run's resume logic are named last-*.ckpt.
    op.execute("UPDATE checkpoints SET resumable = (path LIKE '%/last-%'), attempt = 1")
    op.create_table(
        "tokens",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("secret_hash", sa.String(length=64), nullable=False, unique=True),
        sa.Column("prefix", sa.String(length=16), nullable=False),
        sa.Column("scope", sa.String(length=32), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=True),
        sa.Column("run_id", sa.Integer(), sa.ForeignKey("runs.id", ondelete="CASCADE"), nullable=True),
        sa.Column("attempt", sa.Integer(), nullable=True),
        sa.Column("reads", sa.JSON(), nullable=False),
        sa.Column("created_at", UTC_DT, nullable=False),
        sa.Column("expires_at", UTC_DT, nullable=True),
        sa.Column("last_used_at", UTC_DT, nullable=True),
        sa.Column("revoked_at", UTC_DT, nullable=True),
    )
    op.create_index("ix_tokens_user_id", "tokens", ["user_id"])
    op.create_index("ix_tokens_run_id", "tokens", ["run_id"])
    op.create_table(
        "workers",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(length=255), nullable=False, unique=True),
        sa.Column("queues", sa.JSON(), nullable=False),
        sa.Column("recipes", sa.JSON(), nullable=False),
        sa.Column("token_id", sa.Integer(), nullable=True),
        sa.Column("registered_at", UTC_DT, nullable=False),
        sa.Column("last_seen_at", UTC_DT, nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=True),
    )
    op.create_table(
        "recipes",
        sa.Column("name", sa.String(length=200), primary_key=True),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("params_schema", sa.JSON(), nullable=False),
        sa.Column("trainer_schema", sa.JSON(), nullable=False),
        sa.Column("updated_at", UTC_DT, nullable=False),
    )
    op.create_table(
        "ingest_batches",
        sa.Column("run_id", sa.Integer(), sa.ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("key", sa.String(length=100), primary_key=True),
        sa.Column("accepted", sa.Integer(), nullable=False),
        sa.Column("created_at", UTC_DT, nullable=False),
    )
    op.create_table(
        "uploads",
        sa.Column("id", sa.String(length=32), primary_key=True),
        sa.Column("run_id", sa.Integer(), sa.ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("filename", sa.String(length=200), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("received", sa.BigInteger(), nullable=False),
        sa.Column("meta", sa.JSON(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=True),
        sa.Column("created_at", UTC_DT, nullable=False),
        sa.Column("updated_at", UTC_DT, nullable=False),
    )
    op.create_index("ix_uploads_run_id", "uploads", ["run_id"])


def downgrade() -> None:
    op.drop_table("uploads")
    op.drop_table("ingest_batches")
    op.drop_table("recipes")
    op.drop_table("workers")
    op.drop_table("tokens")
    with op.batch_alter_table("checkpoints") as batch:
        batch.drop_column("resumable")
        batch.drop_column("attempt")
    with op.batch_alter_table("runs") as batch:
        batch.drop_constraint("uq_runs_client_key", type_="unique")
        batch.drop_column("client_key")
        batch.drop_column("enqueued_at")
