"""Drift events: one row per drift alarm raised by a detector, with its test, statistic and drifted features.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def _real() -> sa.types.TypeEngine:
    return sa.REAL().with_variant(sa.Double(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "drift_events",
        sa.Column("event_id", sa.Text, primary_key=True),
        sa.Column("detector", sa.Text, nullable=False),
        sa.Column("method", sa.Text, nullable=False),
        sa.Column("severity", sa.Text, nullable=False),
        sa.Column("statistic", _real(), nullable=False),
        sa.Column("p_value", _real()),
        sa.Column("threshold", _real(), nullable=False),
        sa.Column("features", sa.Text, nullable=False),
        sa.Column("details", sa.Text),
        sa.Column("window_size", sa.Integer, nullable=False),
        sa.Column("samples_seen", sa.Integer, nullable=False),
        sa.Column("window_start", _real()),
        sa.Column("window_end", _real()),
        sa.Column("detected_at", _real(), nullable=False),
    )
    op.create_index("ix_drift_events_detector_time", "drift_events", ["detector", "detected_at"])


def downgrade() -> None:
    op.drop_table("drift_events")
