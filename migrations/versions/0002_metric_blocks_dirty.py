"""metric_blocks_dirty and the delete trigger that fills it

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

BLOCK_STEPS = 128  # server.models.BLOCK_STEPS at the time of this revision


def upgrade() -> None:
    op.create_table(
        "metric_blocks_dirty",
        sa.Column("run_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("key", sa.String(length=250), nullable=False),
        sa.Column("block", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.PrimaryKeyConstraint("run_id", "key", "block"),
    )
    if op.get_bind().dialect.name == "postgresql":
        # Statement-level: one INSERT per DELETE statement, however many rows it removes.
        op.execute(f"""
            CREATE FUNCTION metric_points_mark_dirty() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                INSERT INTO metric_blocks_dirty (run_id, key, block)
                SELECT DISTINCT run_id, key, floor(step / {BLOCK_STEPS}.0)::bigint FROM old_rows
                WHERE EXISTS (SELECT 1 FROM runs WHERE runs.id = old_rows.run_id)
                ON CONFLICT DO NOTHING;
                RETURN NULL;
            END $$""")
        op.execute("""
            CREATE TRIGGER metric_points_deleted AFTER DELETE ON metric_points
            REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION metric_points_mark_dirty()""")
    else:
        op.execute(f"""
            CREATE TRIGGER metric_points_deleted AFTER DELETE ON metric_points
            BEGIN
                INSERT OR IGNORE INTO metric_blocks_dirty (run_id, key, block)
                VALUES (old.run_id, old.key, old.step / {BLOCK_STEPS});
            END""")


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS metric_points_deleted" +
               (" ON metric_points" if op.get_bind().dialect.name == "postgresql" else ""))
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS metric_points_mark_dirty()")
    op.drop_table("metric_blocks_dirty")
