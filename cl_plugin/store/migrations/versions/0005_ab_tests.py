"""A/B tests: each test's definition, settings and final result, and per-group sufficient statistics.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def _real() -> sa.types.TypeEngine:
    return sa.REAL().with_variant(sa.Double(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "ab_tests",
        sa.Column("test_id", sa.Text, primary_key=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("model_a", sa.Text, nullable=False),
        sa.Column("model_b", sa.Text, nullable=False),
        sa.Column("settings", sa.Text, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("created_at", _real(), nullable=False),
        sa.Column("ended_at", _real()),
        sa.Column("result", sa.Text),
    )
    op.create_index("ix_ab_tests_name_status", "ab_tests", ["name", "status"])
    op.create_table(
        "ab_test_groups",
        sa.Column("test_id", sa.Text, primary_key=True),
        sa.Column("variant", sa.Text, primary_key=True),
        sa.Column("n", sa.BigInteger, nullable=False),
        sa.Column("mean", _real(), nullable=False),
        sa.Column("m2", _real(), nullable=False),
        sa.Column("non_binary", sa.BigInteger, nullable=False),
        sa.Column("updated_at", _real(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("ab_test_groups")
    op.drop_table("ab_tests")
