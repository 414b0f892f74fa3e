"""Maintenance runs and leases: every run of the maintenance graph with its steps, and the lease that keeps
two replicas from running it at once.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def _real() -> sa.types.TypeEngine:
    return sa.REAL().with_variant(sa.Double(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "leases",
        sa.Column("name", sa.Text, primary_key=True),
        sa.Column("owner", sa.Text, nullable=False),
        sa.Column("acquired_at", _real(), nullable=False),
        sa.Column("expires_at", _real(), nullable=False),
    )
    op.create_table(
        "maintenance_runs",
        sa.Column("run_id", sa.Text, primary_key=True),
        sa.Column("thread_id", sa.Text, nullable=False),
        sa.Column("started_at", _real(), nullable=False),
        sa.Column("updated_at", _real(), nullable=False),
        sa.Column("finished_at", _real()),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("steps", sa.Text),
        sa.Column("summary", sa.Text),
        sa.Column("error", sa.Text),
    )
    op.create_index("ix_maintenance_runs_started_at", "maintenance_runs", ["started_at"])


def downgrade() -> None:
    op.drop_table("maintenance_runs")
    op.drop_table("leases")
