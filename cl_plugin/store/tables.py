"""The store's tables, as SQLModel models.

``interactions`` keeps the original design's columns with their names and SQL types (``REAL`` columns are
``DOUBLE PRECISION`` on PostgreSQL, whose ``REAL`` is single precision and would round unix timestamps to
two minutes). Flags stay ``INTEGER`` (0/1, NULL when unknown), ``metadata`` stays JSON text.

Models are for schema and reads; bulk writes go through SQLAlchemy Core on ``Model.__table__``.
Schema changes are Alembic migrations under ``store/migrations`` (see ``Store.setup``).
"""

from __future__ import annotations

from sqlalchemy import REAL, BigInteger, Column, Double, Index, Integer, LargeBinary, Text
from sqlmodel import Field, SQLModel

__all__ = [
    "ABTestGroup",
    "ABTestRow",
    "AnnotationItem",
    "AttachmentRow",
    "Decision",
    "DriftEvent",
    "Feedback",
    "FeedbackAttachment",
    "FeedbackRequest",
    "Interaction",
    "InteractionEmbedding",
    "InteractionRevision",
    "Lease",
    "MaintenanceRun",
    "ModelAlias",
    "ModelAliasMove",
    "ModelVersionRow",
    "NodeRun",
    "metadata",
]

metadata = SQLModel.metadata


def _real(name: str, *, nullable: bool = True) -> Column:
    return Column(name, REAL().with_variant(Double(), "postgresql"), nullable=nullable)


class Interaction(SQLModel, table=True):
    """One top-level graph invocation or logged interaction."""

    __tablename__ = "interactions"
    __table_args__ = (
        # Time order with the id as tie-break (keyset scans) and the score (the classic "recent failures"
        # query filters on it while reading this index, without touching the table for rows it skips).
        Index("ix_interactions_timestamp", "timestamp", "interaction_id", "user_feedback_score"),
        Index("ix_interactions_session_id", "session_id"),
        Index("ix_interactions_agent_selected", "agent_selected", "timestamp"),
        Index("ix_interactions_user_feedback_score", "user_feedback_score"),
    )

    interaction_id: str = Field(sa_column=Column("interaction_id", Text, primary_key=True))
    timestamp: float = Field(sa_column=_real("timestamp", nullable=False))
    session_id: str = Field(sa_column=Column("session_id", Text, nullable=False))
    user_query: str = Field(sa_column=Column("user_query", Text, nullable=False))
    agent_selected: str | None = Field(default=None, sa_column=Column("agent_selected", Text))
    agent_confidence: float | None = Field(default=None, sa_column=_real("agent_confidence"))
    response: str = Field(sa_column=Column("response", Text, nullable=False))
    user_feedback_score: float | None = Field(default=None, sa_column=_real("user_feedback_score"))
    thumbs_up_down: str | None = Field(default=None, sa_column=Column("thumbs_up_down", Text))
    latency_ms: float | None = Field(default=None, sa_column=_real("latency_ms"))
    tokens_used: int | None = Field(default=None, sa_column=Column("tokens_used", Integer))
    cost: float | None = Field(default=None, sa_column=_real("cost"))
    hallucination_detected: int | None = Field(
        default=None, sa_column=Column("hallucination_detected", Integer)
    )
    retrieval_failed: int | None = Field(default=None, sa_column=Column("retrieval_failed", Integer))
    error_occurred: int | None = Field(default=None, sa_column=Column("error_occurred", Integer))
    retrieval_quality: float | None = Field(default=None, sa_column=_real("retrieval_quality"))
    # ``metadata`` is reserved on declarative classes, hence the attribute name.
    metadata_: str | None = Field(default=None, sa_column=Column("metadata", Text))
    # Plugin columns.
    run_id: str | None = Field(default=None, sa_column=Column("run_id", Text))
    graph_name: str | None = Field(default=None, sa_column=Column("graph_name", Text))
    user_id: str | None = Field(default=None, sa_column=Column("user_id", Text))
    corrections: str | None = Field(default=None, sa_column=Column("corrections", Text))


class InteractionRevision(SQLModel, table=True):
    """The earlier content of an interaction that was logged again with different data."""

    __tablename__ = "interaction_revisions"
    __table_args__ = (Index("ix_interaction_revisions_interaction_id", "interaction_id"),)

    id: int | None = Field(
        default=None, sa_column=Column("id", Integer, primary_key=True, autoincrement=True)
    )
    interaction_id: str = Field(sa_column=Column("interaction_id", Text, nullable=False))
    revised_at: float = Field(sa_column=_real("revised_at", nullable=False))
    previous: str = Field(sa_column=Column("previous", Text, nullable=False))


class InteractionEmbedding(SQLModel, table=True):
    """The embedding of an interaction's query, as given by the application (migration 0007).

    ``vector`` holds ``dim`` little-endian float32 values (1.5 kB for 384 dimensions, a fifth of the same
    numbers as JSON text); ``created_at`` is the interaction's time, for backups and retention.
    """

    __tablename__ = "interaction_embeddings"

    interaction_id: str = Field(sa_column=Column("interaction_id", Text, primary_key=True))
    dim: int = Field(sa_column=Column("dim", Integer, nullable=False))
    vector: bytes = Field(sa_column=Column("vector", LargeBinary, nullable=False))
    created_at: float = Field(sa_column=_real("created_at", nullable=False))


class NodeRun(SQLModel, table=True):
    """One node, model, tool or retriever run inside a graph invocation."""

    __tablename__ = "node_runs"
    __table_args__ = (
        Index("ix_node_runs_interaction_id", "interaction_id"),
        Index("ix_node_runs_parent_run_id", "parent_run_id"),
        Index("ix_node_runs_node_start", "node", "start_time"),
    )

    run_id: str = Field(sa_column=Column("run_id", Text, primary_key=True))
    parent_run_id: str | None = Field(default=None, sa_column=Column("parent_run_id", Text))
    interaction_id: str = Field(sa_column=Column("interaction_id", Text, nullable=False))
    kind: str = Field(sa_column=Column("kind", Text, nullable=False))
    name: str | None = Field(default=None, sa_column=Column("name", Text))
    node: str | None = Field(default=None, sa_column=Column("node", Text))
    step: int | None = Field(default=None, sa_column=Column("step", Integer))
    triggers: str | None = Field(default=None, sa_column=Column("triggers", Text))
    checkpoint_ns: str | None = Field(default=None, sa_column=Column("checkpoint_ns", Text))
    start_time: float = Field(sa_column=_real("start_time", nullable=False))
    duration_ms: float | None = Field(default=None, sa_column=_real("duration_ms"))
    status: str = Field(sa_column=Column("status", Text, nullable=False))
    error_type: str | None = Field(default=None, sa_column=Column("error_type", Text))
    error_message: str | None = Field(default=None, sa_column=Column("error_message", Text))
    inputs: str | None = Field(default=None, sa_column=Column("inputs", Text))
    outputs: str | None = Field(default=None, sa_column=Column("outputs", Text))
    tokens_used: int | None = Field(default=None, sa_column=Column("tokens_used", Integer))
    cost: float | None = Field(default=None, sa_column=_real("cost"))


class Decision(SQLModel, table=True):
    """One agent decision: a route, an MCTS move, a tool choice, a consensus verdict, or a custom one."""

    __tablename__ = "decisions"
    __table_args__ = (
        Index("ix_decisions_interaction_id", "interaction_id"),
        Index("ix_decisions_kind_time", "kind", "timestamp"),
    )

    decision_id: str = Field(sa_column=Column("decision_id", Text, primary_key=True))
    interaction_id: str = Field(sa_column=Column("interaction_id", Text, nullable=False))
    run_id: str | None = Field(default=None, sa_column=Column("run_id", Text))
    node: str | None = Field(default=None, sa_column=Column("node", Text))
    kind: str = Field(sa_column=Column("kind", Text, nullable=False))
    chosen: str | None = Field(default=None, sa_column=Column("chosen", Text))
    confidence: float | None = Field(default=None, sa_column=_real("confidence"))
    alternatives: str | None = Field(default=None, sa_column=Column("alternatives", Text))
    features: str | None = Field(default=None, sa_column=Column("features", Text))
    statistics: str | None = Field(default=None, sa_column=Column("statistics", Text))
    timestamp: float = Field(sa_column=_real("timestamp", nullable=False))


class Feedback(SQLModel, table=True):
    """Append-only feedback history: users, annotators, LLM judges, LangSmith."""

    __tablename__ = "feedback"
    __table_args__ = (
        Index("ix_feedback_interaction_id", "interaction_id", "created_at"),
        Index("ix_feedback_created_at", "created_at"),
    )

    feedback_id: str = Field(sa_column=Column("feedback_id", Text, primary_key=True))
    interaction_id: str = Field(sa_column=Column("interaction_id", Text, nullable=False))
    key: str = Field(sa_column=Column("key", Text, nullable=False))
    score: float | None = Field(default=None, sa_column=_real("score"))
    value: str | None = Field(default=None, sa_column=Column("value", Text))
    thumbs_up_down: str | None = Field(default=None, sa_column=Column("thumbs_up_down", Text))
    comment: str | None = Field(default=None, sa_column=Column("comment", Text))
    correction: str | None = Field(default=None, sa_column=Column("correction", Text))
    source: str = Field(sa_column=Column("source", Text, nullable=False))
    created_at: float = Field(sa_column=_real("created_at", nullable=False))


class AttachmentRow(SQLModel, table=True):
    """A feedback attachment's stored bytes, addressed by their SHA-256 (migration 0008).

    The bytes are sanitized before they get here (see :mod:`cl_plugin.privacy.attachments`): an image
    re-encoded without metadata, code and text redacted UTF-8. The same bytes attached twice are one row;
    ``kind`` and ``created_at`` are those of the first. A row no ``feedback_attachments`` row names any more
    is deleted by retention.
    """

    __tablename__ = "attachments"

    sha256: str = Field(sa_column=Column("sha256", Text, primary_key=True))
    kind: str = Field(sa_column=Column("kind", Text, nullable=False))
    media_type: str = Field(sa_column=Column("media_type", Text, nullable=False))
    size: int = Field(sa_column=Column("size", Integer, nullable=False))
    created_at: float = Field(sa_column=_real("created_at", nullable=False))
    content: bytes = Field(sa_column=Column("content", LargeBinary, nullable=False))


class FeedbackAttachment(SQLModel, table=True):
    """Which attachments a feedback carries, in order (migration 0008).

    A link table rather than a JSON list on the feedback row: reading an interaction's attachments and
    finding the attachments no feedback names any more (retention) are then indexed queries, and the
    ``feedback`` table keeps its shape. ``interaction_id`` is the feedback's, so purging an interaction
    removes its links as it removes its other rows.
    """

    __tablename__ = "feedback_attachments"
    __table_args__ = (
        Index("ix_feedback_attachments_interaction_id", "interaction_id"),
        Index("ix_feedback_attachments_sha256", "sha256"),
    )

    feedback_id: str = Field(sa_column=Column("feedback_id", Text, primary_key=True))
    position: int = Field(sa_column=Column("position", Integer, primary_key=True, autoincrement=False))
    interaction_id: str = Field(sa_column=Column("interaction_id", Text, nullable=False))
    sha256: str = Field(sa_column=Column("sha256", Text, nullable=False))
    kind: str = Field(sa_column=Column("kind", Text, nullable=False))
    filename: str | None = Field(default=None, sa_column=Column("filename", Text))
    language: str | None = Field(default=None, sa_column=Column("language", Text))
    created_at: float = Field(sa_column=_real("created_at", nullable=False))


class FeedbackRequest(SQLModel, table=True):
    """An idempotency key a feedback was recorded under, so a retried request is stored once (0008).

    ``idempotency_key`` is the keyed hash of the client's key; ``fingerprint`` the SHA-256 of the sanitized
    feedback it brought, so the same key with another feedback is told apart from a retry.
    """

    __tablename__ = "feedback_requests"
    __table_args__ = (Index("ix_feedback_requests_interaction_id", "interaction_id"),)

    idempotency_key: str = Field(sa_column=Column("idempotency_key", Text, primary_key=True))
    feedback_id: str = Field(sa_column=Column("feedback_id", Text, nullable=False))
    interaction_id: str = Field(sa_column=Column("interaction_id", Text, nullable=False))
    fingerprint: str = Field(sa_column=Column("fingerprint", Text, nullable=False))
    created_at: float = Field(sa_column=_real("created_at", nullable=False))


class AnnotationItem(SQLModel, table=True):
    """An interaction queued for a human's label, with why it was picked and, once labeled, the label.

    One item per interaction, whatever its status (``pending``, ``labeled`` or ``skipped``): queueing the
    same interaction again is a no-op. ``label`` is JSON text.
    """

    __tablename__ = "annotation_queue"
    __table_args__ = (
        Index("ux_annotation_queue_interaction_id", "interaction_id", unique=True),
        Index("ix_annotation_queue_status_created", "status", "created_at"),
    )

    item_id: str = Field(sa_column=Column("item_id", Text, primary_key=True))
    interaction_id: str = Field(sa_column=Column("interaction_id", Text, nullable=False))
    status: str = Field(sa_column=Column("status", Text, nullable=False))
    priority: float = Field(sa_column=_real("priority", nullable=False))
    strategy: str = Field(sa_column=Column("strategy", Text, nullable=False))
    selection_reason: str = Field(sa_column=Column("selection_reason", Text, nullable=False))
    created_at: float = Field(sa_column=_real("created_at", nullable=False))
    updated_at: float = Field(sa_column=_real("updated_at", nullable=False))
    label: str | None = Field(default=None, sa_column=Column("label", Text))
    annotator: str | None = Field(default=None, sa_column=Column("annotator", Text))


class ModelVersionRow(SQLModel, table=True):
    """One registered version of a named model (migration 0003).

    Versions count 1, 2, 3... per model name. ``artifact`` is the serialized model's path relative to the
    registry's artifact directory and ``sha256`` its digest; ``metrics`` is JSON text; ``data_start``,
    ``data_end`` and ``data_count`` describe the training data window.
    """

    __tablename__ = "model_versions"

    model_name: str = Field(sa_column=Column("model_name", Text, primary_key=True))
    version: int = Field(sa_column=Column("version", Integer, primary_key=True, autoincrement=False))
    sha256: str = Field(sa_column=Column("sha256", Text, nullable=False))
    artifact: str = Field(sa_column=Column("artifact", Text, nullable=False))
    metrics: str | None = Field(default=None, sa_column=Column("metrics", Text))
    parent_version: int | None = Field(default=None, sa_column=Column("parent_version", Integer))
    data_start: float | None = Field(default=None, sa_column=_real("data_start"))
    data_end: float | None = Field(default=None, sa_column=_real("data_end"))
    data_count: int | None = Field(default=None, sa_column=Column("data_count", Integer))
    created_at: float = Field(sa_column=_real("created_at", nullable=False))
    created_by: str | None = Field(default=None, sa_column=Column("created_by", Text))
    notes: str | None = Field(default=None, sa_column=Column("notes", Text))


class ModelAlias(SQLModel, table=True):
    """Where an alias of a model (``production``, ``candidate``, ...) points now."""

    __tablename__ = "model_aliases"

    model_name: str = Field(sa_column=Column("model_name", Text, primary_key=True))
    alias: str = Field(sa_column=Column("alias", Text, primary_key=True))
    version: int = Field(sa_column=Column("version", Integer, nullable=False))
    updated_at: float = Field(sa_column=_real("updated_at", nullable=False))


class ModelAliasMove(SQLModel, table=True):
    """Append-only audit trail of alias moves: every ``set``, ``promote`` and ``rollback``."""

    __tablename__ = "model_alias_history"
    __table_args__ = (Index("ix_model_alias_history_model_alias", "model_name", "alias", "move_id"),)

    move_id: int | None = Field(
        default=None, sa_column=Column("move_id", Integer, primary_key=True, autoincrement=True)
    )
    model_name: str = Field(sa_column=Column("model_name", Text, nullable=False))
    alias: str = Field(sa_column=Column("alias", Text, nullable=False))
    version: int = Field(sa_column=Column("version", Integer, nullable=False))
    previous_version: int | None = Field(default=None, sa_column=Column("previous_version", Integer))
    action: str = Field(sa_column=Column("action", Text, nullable=False))
    moved_at: float = Field(sa_column=_real("moved_at", nullable=False))
    reason: str | None = Field(default=None, sa_column=Column("reason", Text))
    actor: str | None = Field(default=None, sa_column=Column("actor", Text))


class DriftEvent(SQLModel, table=True):
    """One drift alarm raised by a detector (migration 0004).

    ``detector`` names the monitored stream (``"router_features"``, say); ``method`` is the test that fired
    (``kolmogorov_smirnov``, ``psi``, ``adwin``, ...). ``statistic`` is the test's effect measure and
    ``threshold`` the value it was compared with; ``p_value`` is set by tests that have one. ``features``
    is a JSON list of the drifted features and ``details`` JSON with the per-feature results.
    ``window_start`` and ``window_end`` are the unix times of the oldest and newest sample in the window.
    """

    __tablename__ = "drift_events"
    __table_args__ = (Index("ix_drift_events_detector_time", "detector", "detected_at"),)

    event_id: str = Field(sa_column=Column("event_id", Text, primary_key=True))
    detector: str = Field(sa_column=Column("detector", Text, nullable=False))
    method: str = Field(sa_column=Column("method", Text, nullable=False))
    severity: str = Field(sa_column=Column("severity", Text, nullable=False))
    statistic: float = Field(sa_column=_real("statistic", nullable=False))
    p_value: float | None = Field(default=None, sa_column=_real("p_value"))
    threshold: float = Field(sa_column=_real("threshold", nullable=False))
    features: str = Field(sa_column=Column("features", Text, nullable=False))
    details: str | None = Field(default=None, sa_column=Column("details", Text))
    window_size: int = Field(sa_column=Column("window_size", Integer, nullable=False))
    samples_seen: int = Field(sa_column=Column("samples_seen", Integer, nullable=False))
    window_start: float | None = Field(default=None, sa_column=_real("window_start"))
    window_end: float | None = Field(default=None, sa_column=_real("window_end"))
    detected_at: float = Field(sa_column=_real("detected_at", nullable=False))


class ABTestRow(SQLModel, table=True):
    """One A/B test: what it compares, the settings its analysis uses, its status and final result (0005).

    ``model_a`` and ``model_b`` describe the models (a registry alias, a name, a class name); the models
    themselves stay with the application. ``settings`` is JSON with the analysis settings fixed at creation
    (split, minimum samples, confidence level, metric type, ...), so every replica analyses the test alike.
    ``status`` is ``running`` or ``ended``; ``result`` is the final analysis as JSON, set by ``end_test``.
    """

    __tablename__ = "ab_tests"
    __table_args__ = (Index("ix_ab_tests_name_status", "name", "status"),)

    test_id: str = Field(sa_column=Column("test_id", Text, primary_key=True))
    name: str = Field(sa_column=Column("name", Text, nullable=False))
    model_a: str = Field(sa_column=Column("model_a", Text, nullable=False))
    model_b: str = Field(sa_column=Column("model_b", Text, nullable=False))
    settings: str = Field(sa_column=Column("settings", Text, nullable=False))
    status: str = Field(sa_column=Column("status", Text, nullable=False))
    created_at: float = Field(sa_column=_real("created_at", nullable=False))
    ended_at: float | None = Field(default=None, sa_column=_real("ended_at"))
    result: str | None = Field(default=None, sa_column=Column("result", Text))


class ABTestGroup(SQLModel, table=True):
    """The sufficient statistics of one group (``A`` or ``B``) of an A/B test (migration 0005).

    ``n``, ``mean`` and ``m2`` (the sum of squared deviations from the mean) are Welford's summary:
    recording results merges a batch's summary into the row with one ``UPDATE`` (Chan's formula, exact and
    order-free), so concurrent writers never lose an update and a row's size never grows. Unlike a sum of
    squares, ``m2`` does not lose the variance to cancellation when the mean is large. ``non_binary``
    counts results other than 0 and 1 (zero means a binary metric).
    """

    __tablename__ = "ab_test_groups"

    test_id: str = Field(sa_column=Column("test_id", Text, primary_key=True))
    variant: str = Field(sa_column=Column("variant", Text, primary_key=True))
    n: int = Field(sa_column=Column("n", BigInteger, nullable=False))
    mean: float = Field(sa_column=_real("mean", nullable=False))
    m2: float = Field(sa_column=_real("m2", nullable=False))
    non_binary: int = Field(sa_column=Column("non_binary", BigInteger, nullable=False))
    updated_at: float = Field(sa_column=_real("updated_at", nullable=False))


class Lease(SQLModel, table=True):
    """Who holds a named lease (the maintenance graph's, say) and until when."""

    __tablename__ = "leases"

    name: str = Field(sa_column=Column("name", Text, primary_key=True))
    owner: str = Field(sa_column=Column("owner", Text, nullable=False))
    acquired_at: float = Field(sa_column=_real("acquired_at", nullable=False))
    expires_at: float = Field(sa_column=_real("expires_at", nullable=False))


class MaintenanceRun(SQLModel, table=True):
    """One run of the maintenance graph: its status and what each step did (JSON)."""

    __tablename__ = "maintenance_runs"
    __table_args__ = (Index("ix_maintenance_runs_started_at", "started_at"),)

    run_id: str = Field(sa_column=Column("run_id", Text, primary_key=True))
    thread_id: str = Field(sa_column=Column("thread_id", Text, nullable=False))
    started_at: float = Field(sa_column=_real("started_at", nullable=False))
    updated_at: float = Field(sa_column=_real("updated_at", nullable=False))
    finished_at: float | None = Field(default=None, sa_column=_real("finished_at"))
    status: str = Field(sa_column=Column("status", Text, nullable=False))
    steps: str | None = Field(default=None, sa_column=Column("steps", Text))
    summary: str | None = Field(default=None, sa_column=Column("summary", Text))
    error: str | None = Field(default=None, sa_column=Column("error", Text))
