"""Code runs: project code snapshots, the schemas their entry points recorded, run environments,
and a run's snapshot and entry point.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-20
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

UTC_DT = sa.DateTime()


def upgrade() -> None:
    op.create_table(
        "code_snapshots",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("project_id", sa.Integer(), sa.ForeignKey("projects.id"), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("unpacked_bytes", sa.BigInteger(), nullable=False),
        sa.Column("file_count", sa.Integer(), nullable=False),
        sa.Column("files", sa.JSON(), nullable=False),
        sa.Column("git", sa.JSON(), nullable=True),
        sa.Column("created_at", UTC_DT, nullable=False),
        sa.Column("created_by", sa.Integer(), sa.ForeignKey("users.id", ondelete="SET NULL"), nullable=True),
        sa.UniqueConstraint("project_id", "sha256", name="uq_code_snapshots_project_sha256"),
    )
    op.create_index("ix_code_snapshots_project_id", "code_snapshots", ["project_id"])
    op.create_index("ix_code_snapshots_sha256", "code_snapshots", ["sha256"])
    op.create_table(
        "code_schemas",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column(
            "snapshot_id",
            sa.Integer(),
            sa.ForeignKey("code_snapshots.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("entry_key", sa.String(length=64), nullable=False),
        sa.Column("params_schema", sa.JSON(), nullable=False),
        sa.Column("trainer_schema", sa.JSON(), nullable=True),
        sa.Column("created_at", UTC_DT, nullable=False),
        sa.UniqueConstraint("snapshot_id", "entry_key", name="uq_code_schemas_snapshot_entry"),
    )
    op.create_table(
        "run_environments",
        sa.Column("run_id", sa.Integer(), sa.ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("record", sa.JSON(), nullable=False),
        sa.Column("updated_at", UTC_DT, nullable=False),
    )
    if op.get_bind().dialect.name == "sqlite":
        # Not batch mode: that copies and drops ``runs``, and with foreign keys on, dropping it
        # cascades to the rows of every table that references runs. SQLite adds a nullable
        # column with an inline REFERENCES clause in place.
        # (no ON DELETE: NO ACTION refuses to delete a snapshot in use, and SQLite reflects no
        # options of an inline REFERENCES, which would make the models and the schema differ)
        op.execute("ALTER TABLE runs ADD COLUMN snapshot_id INTEGER REFERENCES code_snapshots (id)")
    else:
        op.add_column("runs", sa.Column("snapshot_id", sa.Integer(), nullable=True))
        op.create_foreign_key(
            "fk_runs_snapshot_id_code_snapshots", "runs", "code_snapshots", ["snapshot_id"], ["id"]
        )
    op.add_column("runs", sa.Column("entry", sa.JSON(), nullable=True))
    op.create_index("ix_runs_snapshot_id", "runs", ["snapshot_id"])


def downgrade() -> None:
    op.drop_index("ix_runs_snapshot_id", table_name="runs")
    if op.get_bind().dialect.name == "sqlite":
        # SQLite cannot drop a column that has a foreign key; batch mode copies the table
        with op.batch_alter_table("runs") as batch:
            batch.drop_column("entry")
            batch.drop_column("snapshot_id")
    else:
        op.drop_constraint("fk_runs_snapshot_id_code_snapshots", "runs", type_="foreignkey")
        op.drop_column("runs", "entry")
        op.drop_column("runs", "snapshot_id")
    op.drop_table("run_environments")
    op.drop_table("code_schemas")
    op.drop_index("ix_code_snapshots_sha256", table_name="code_snapshots")
    op.drop_index("ix_code_snapshots_project_id", table_name="code_snapshots")
    op.drop_table("code_snapshots")
