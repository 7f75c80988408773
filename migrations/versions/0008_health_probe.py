"""Storage health (issue 11, point 6): the one-row table that ``/healthz`` updates to prove the
database can still be written (``server/health.py``).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    table = op.create_table(
        "health_probe",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("checked_at", sa.DateTime(), nullable=False),
        sa.Column("writes", sa.Integer(), nullable=False),
    )
    now = datetime.now(UTC).replace(tzinfo=None)
    op.bulk_insert(table, [{"id": 1, "checked_at": now, "writes": 0}])


def downgrade() -> None:
    op.drop_table("health_probe")
