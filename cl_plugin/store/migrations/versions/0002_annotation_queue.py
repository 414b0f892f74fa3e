"""Annotation queue: interactions picked for a human's label, their status and label.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def _real() -> sa.types.TypeEngine:
    return sa.REAL().with_variant(sa.Double(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "annotation_queue",
        sa.Column("item_id", sa.Text, primary_key=True),
        sa.Column("interaction_id", sa.Text, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("priority", _real(), nullable=False),
        sa.Column("strategy", sa.Text, nullable=False),
        sa.Column("selection_reason", sa.Text, nullable=False),
        sa.Column("created_at", _real(), nullable=False),
        sa.Column("updated_at", _real(), nullable=False),
        sa.Column("label", sa.Text),
        sa.Column("annotator", sa.Text),
    )
    op.create_index("ux_annotation_queue_interaction_id", "annotation_queue", ["interaction_id"], unique=True)
    op.create_index("ix_annotation_queue_status_created", "annotation_queue", ["status", "created_at"])


def downgrade() -> None:
    op.drop_table("annotation_queue")
