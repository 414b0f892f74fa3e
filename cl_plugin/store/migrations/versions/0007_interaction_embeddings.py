"""Query embeddings: the vector an application computed for an interaction's query, kept compactly so that
clustering and selection use it instead of computing their own.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "interaction_embeddings",
        sa.Column("interaction_id", sa.Text, primary_key=True),
        sa.Column("dim", sa.Integer, nullable=False),
        sa.Column("vector", sa.LargeBinary, nullable=False),
        sa.Column("created_at", sa.REAL().with_variant(sa.Double(), "postgresql"), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("interaction_embeddings")
