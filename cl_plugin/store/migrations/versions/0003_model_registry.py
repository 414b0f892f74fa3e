"""Model registry: versions of named models, their current aliases and the append-only alias history.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def _real() -> sa.types.TypeEngine:
    return sa.REAL().with_variant(sa.Double(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "model_versions",
        sa.Column("model_name", sa.Text, primary_key=True),
        sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("sha256", sa.Text, nullable=False),
        sa.Column("artifact", sa.Text, nullable=False),
        sa.Column("metrics", sa.Text),
        sa.Column("parent_version", sa.Integer),
        sa.Column("data_start", _real()),
        sa.Column("data_end", _real()),
        sa.Column("data_count", sa.Integer),
        sa.Column("created_at", _real(), nullable=False),
        sa.Column("created_by", sa.Text),
        sa.Column("notes", sa.Text),
    )
    op.create_table(
        "model_aliases",
        sa.Column("model_name", sa.Text, primary_key=True),
        sa.Column("alias", sa.Text, primary_key=True),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("updated_at", _real(), nullable=False),
    )
    op.create_table(
        "model_alias_history",
        sa.Column("move_id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("model_name", sa.Text, nullable=False),
        sa.Column("alias", sa.Text, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("previous_version", sa.Integer),
        sa.Column("action", sa.Text, nullable=False),
        sa.Column("moved_at", _real(), nullable=False),
        sa.Column("reason", sa.Text),
        sa.Column("actor", sa.Text),
    )
    op.create_index(
        "ix_model_alias_history_model_alias", "model_alias_history", ["model_name", "alias", "move_id"]
    )


def downgrade() -> None:
    op.drop_table("model_alias_history")
    op.drop_table("model_aliases")
    op.drop_table("model_versions")
