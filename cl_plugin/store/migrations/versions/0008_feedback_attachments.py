"""Feedback attachments and idempotency keys: the sanitized bytes of code, text and image attachments
addressed by their SHA-256, the links from each feedback to them, and the keys retried feedback requests
are recognised by.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def _real() -> sa.types.TypeEngine:
    return sa.REAL().with_variant(sa.Double(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "attachments",
        sa.Column("sha256", sa.Text, primary_key=True),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("media_type", sa.Text, nullable=False),
        sa.Column("size", sa.Integer, nullable=False),
        sa.Column("created_at", _real(), nullable=False),
        sa.Column("content", sa.LargeBinary, nullable=False),
    )
    op.create_table(
        "feedback_attachments",
        sa.Column("feedback_id", sa.Text, primary_key=True),
        sa.Column("position", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("interaction_id", sa.Text, nullable=False),
        sa.Column("sha256", sa.Text, nullable=False),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("filename", sa.Text),
        sa.Column("language", sa.Text),
        sa.Column("created_at", _real(), nullable=False),
    )
    op.create_index("ix_feedback_attachments_interaction_id", "feedback_attachments", ["interaction_id"])
    op.create_index("ix_feedback_attachments_sha256", "feedback_attachments", ["sha256"])
    op.create_table(
        "feedback_requests",
        sa.Column("idempotency_key", sa.Text, primary_key=True),
        sa.Column("feedback_id", sa.Text, nullable=False),
        sa.Column("interaction_id", sa.Text, nullable=False),
        sa.Column("fingerprint", sa.Text, nullable=False),
        sa.Column("created_at", _real(), nullable=False),
    )
    op.create_index("ix_feedback_requests_interaction_id", "feedback_requests", ["interaction_id"])


def downgrade() -> None:
    op.drop_table("feedback_requests")
    op.drop_table("feedback_attachments")
    op.drop_table("attachments")
