"""Initial schema: interactions (the original design's columns plus plugin columns), their revisions,
node runs, decisions and feedback.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _real() -> sa.types.TypeEngine:
    return sa.REAL().with_variant(sa.Double(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "interactions",
        sa.Column("interaction_id", sa.Text, primary_key=True),
        sa.Column("timestamp", _real(), nullable=False),
        sa.Column("session_id", sa.Text, nullable=False),
        sa.Column("user_query", sa.Text, nullable=False),
        sa.Column("agent_selected", sa.Text),
        sa.Column("agent_confidence", _real()),
        sa.Column("response", sa.Text, nullable=False),
        sa.Column("user_feedback_score", _real()),
        sa.Column("thumbs_up_down", sa.Text),
        sa.Column("latency_ms", _real()),
        sa.Column("tokens_used", sa.Integer),
        sa.Column("cost", _real()),
        sa.Column("hallucination_detected", sa.Integer),
        sa.Column("retrieval_failed", sa.Integer),
        sa.Column("error_occurred", sa.Integer),
        sa.Column("retrieval_quality", _real()),
        sa.Column("metadata", sa.Text),
        sa.Column("run_id", sa.Text),
        sa.Column("graph_name", sa.Text),
        sa.Column("user_id", sa.Text),
        sa.Column("corrections", sa.Text),
    )
    op.create_index(
        "ix_interactions_timestamp", "interactions", ["timestamp", "interaction_id", "user_feedback_score"]
    )
    op.create_index("ix_interactions_session_id", "interactions", ["session_id"])
    op.create_index("ix_interactions_agent_selected", "interactions", ["agent_selected", "timestamp"])
    op.create_index("ix_interactions_user_feedback_score", "interactions", ["user_feedback_score"])

    op.create_table(
        "interaction_revisions",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("interaction_id", sa.Text, nullable=False),
        sa.Column("revised_at", _real(), nullable=False),
        sa.Column("previous", sa.Text, nullable=False),
    )
    op.create_index("ix_interaction_revisions_interaction_id", "interaction_revisions", ["interaction_id"])

    op.create_table(
        "node_runs",
        sa.Column("run_id", sa.Text, primary_key=True),
        sa.Column("parent_run_id", sa.Text),
        sa.Column("interaction_id", sa.Text, nullable=False),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("name", sa.Text),
        sa.Column("node", sa.Text),
        sa.Column("step", sa.Integer),
        sa.Column("triggers", sa.Text),
        sa.Column("checkpoint_ns", sa.Text),
        sa.Column("start_time", _real(), nullable=False),
        sa.Column("duration_ms", _real()),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("error_type", sa.Text),
        sa.Column("error_message", sa.Text),
        sa.Column("inputs", sa.Text),
        sa.Column("outputs", sa.Text),
        sa.Column("tokens_used", sa.Integer),
        sa.Column("cost", _real()),
    )
    op.create_index("ix_node_runs_interaction_id", "node_runs", ["interaction_id"])
    op.create_index("ix_node_runs_parent_run_id", "node_runs", ["parent_run_id"])
    op.create_index("ix_node_runs_node_start", "node_runs", ["node", "start_time"])

    op.create_table(
        "decisions",
        sa.Column("decision_id", sa.Text, primary_key=True),
        sa.Column("interaction_id", sa.Text, nullable=False),
        sa.Column("run_id", sa.Text),
        sa.Column("node", sa.Text),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("chosen", sa.Text),
        sa.Column("confidence", _real()),
        sa.Column("alternatives", sa.Text),
        sa.Column("features", sa.Text),
        sa.Column("statistics", sa.Text),
        sa.Column("timestamp", _real(), nullable=False),
    )
    op.create_index("ix_decisions_interaction_id", "decisions", ["interaction_id"])
    op.create_index("ix_decisions_kind_time", "decisions", ["kind", "timestamp"])

    op.create_table(
        "feedback",
        sa.Column("feedback_id", sa.Text, primary_key=True),
        sa.Column("interaction_id", sa.Text, nullable=False),
        sa.Column("key", sa.Text, nullable=False),
        sa.Column("score", _real()),
        sa.Column("value", sa.Text),
        sa.Column("thumbs_up_down", sa.Text),
        sa.Column("comment", sa.Text),
        sa.Column("correction", sa.Text),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("created_at", _real(), nullable=False),
    )
    op.create_index("ix_feedback_interaction_id", "feedback", ["interaction_id", "created_at"])
    op.create_index("ix_feedback_created_at", "feedback", ["created_at"])


def downgrade() -> None:
    for table in ("feedback", "decisions", "node_runs", "interaction_revisions", "interactions"):
        op.drop_table(table)
