"""Retention: delete everything derived from interactions older than a cut-off, in short transactions.

Reached as ``store.retention``; ``cl-plugin purge --older-than-days N`` runs it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import Table, delete, select, text

from cl_plugin.store.attachments import ATTACHMENT_LOCK
from cl_plugin.store.tables import (
    ABTestGroup,
    ABTestRow,
    AnnotationItem,
    AttachmentRow,
    Decision,
    DriftEvent,
    Feedback,
    FeedbackAttachment,
    FeedbackRequest,
    Interaction,
    InteractionEmbedding,
    InteractionRevision,
    MaintenanceRun,
    NodeRun,
)

if TYPE_CHECKING:
    from cl_plugin.store.store import Store

__all__ = ["Retention"]

_INTERACTIONS: Table = Interaction.__table__  # type: ignore[assignment]
# Tables whose rows hang off an interaction and go with it on purge.
_TABLES: dict[str, Table] = {
    "node_runs": NodeRun.__table__,  # type: ignore[dict-item]
    "decisions": Decision.__table__,  # type: ignore[dict-item]
    "feedback": Feedback.__table__,  # type: ignore[dict-item]
    "interaction_revisions": InteractionRevision.__table__,  # type: ignore[dict-item]
    "annotation_queue": AnnotationItem.__table__,  # type: ignore[dict-item]
    "interaction_embeddings": InteractionEmbedding.__table__,  # type: ignore[dict-item]
    "feedback_attachments": FeedbackAttachment.__table__,  # type: ignore[dict-item]
    "feedback_requests": FeedbackRequest.__table__,  # type: ignore[dict-item]
}
_CHILD_TABLES = tuple(_TABLES)
_ATTACHMENTS: Table = AttachmentRow.__table__  # type: ignore[assignment]
_DRIFT_EVENTS: Table = DriftEvent.__table__  # type: ignore[assignment]
_MAINTENANCE_RUNS: Table = MaintenanceRun.__table__  # type: ignore[assignment]
_AB_TESTS: Table = ABTestRow.__table__  # type: ignore[assignment]
_AB_GROUPS: Table = ABTestGroup.__table__  # type: ignore[assignment]


class Retention:
    """Purges old records from every table that holds interaction-derived data.

    Args:
        store: the store to purge.
    """

    def __init__(self, store: Store) -> None:
        self._store = store

    def purge(self, older_than: float, *, batch_size: int = 1000) -> dict[str, int]:
        """Delete every record derived from interactions older than a unix time (retention).

        What expires, per table:

        * ``interactions``: ``timestamp`` before the cut-off; with each go its ``node_runs``, ``decisions``,
          ``feedback``, ``interaction_revisions`` (earlier versions of it), ``annotation_queue`` item,
          ``interaction_embeddings`` row, ``feedback_attachments`` links and ``feedback_requests``
          (idempotency keys). Node runs, decisions, feedback, embeddings, links and keys older than the
          cut-off whose interaction was never stored go too.
        * ``attachments``: every attachment no remaining feedback names any more, whatever its age (the
          same bytes attached to newer feedback stay).
        * ``drift_events``: ``detected_at`` before the cut-off (the alarm's window statistics and features).
        * ``maintenance_runs``: finished runs whose last update is before the cut-off (their step reports
          summarise the window's interactions); a run still ``running`` is kept, so a paused run can resume.
        * ``ab_tests`` and their ``ab_test_groups``: tests that ended before the cut-off (a running test is
          kept whatever its age: its groups are aggregates, and its decision is still to come).

        Model versions, aliases and their history are not interaction data (artifacts are trained on
        redacted text) and are kept; so are leases.

        Works in transactions of at most ``batch_size`` rows, so a large purge never holds the write lock for
        long and a killed purge leaves a consistent store. SQLite overwrites deleted content
        (``secure_delete``), so purged text does not linger in the database file's free pages.

        Args:
            older_than: unix time; rows strictly older are deleted.
            batch_size: rows per transaction.

        Returns:
            Rows deleted per table.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1 (got {batch_size})")
        deleted = dict.fromkeys(("interactions", *_CHILD_TABLES), 0)
        c = _INTERACTIONS.c
        while True:
            with self._store.transaction() as conn:
                ids = list(
                    conn.execute(
                        select(c.interaction_id).where(c.timestamp < older_than).limit(batch_size)
                    ).scalars()
                )
                if not ids:
                    break
                for name in _CHILD_TABLES:
                    table = _TABLES[name]
                    res = conn.execute(delete(table).where(table.c.interaction_id.in_(ids)))
                    deleted[name] += res.rowcount
                deleted["interactions"] += conn.execute(
                    delete(_INTERACTIONS).where(c.interaction_id.in_(ids))
                ).rowcount
        orphans = (
            ("node_runs", _TABLES["node_runs"].c.start_time),
            ("decisions", _TABLES["decisions"].c.timestamp),
            ("feedback", _TABLES["feedback"].c.created_at),
            ("interaction_embeddings", _TABLES["interaction_embeddings"].c.created_at),
            ("feedback_attachments", _TABLES["feedback_attachments"].c.created_at),
            ("feedback_requests", _TABLES["feedback_requests"].c.created_at),
        )
        for name, time_col in orphans:
            table = _TABLES[name]
            while True:
                with self._store.transaction() as conn:
                    pk = next(iter(table.primary_key.columns))
                    ids = list(
                        conn.execute(select(pk).where(time_col < older_than).limit(batch_size)).scalars()
                    )
                    if not ids:
                        break
                    deleted[name] += conn.execute(delete(table).where(pk.in_(ids))).rowcount
        deleted["attachments"] = self._sweep_attachments(batch_size)
        m = _MAINTENANCE_RUNS.c
        expired = (
            ("drift_events", _DRIFT_EVENTS, _DRIFT_EVENTS.c.detected_at < older_than),
            ("maintenance_runs", _MAINTENANCE_RUNS, (m.updated_at < older_than) & (m.status != "running")),
        )
        for name, table, condition in expired:
            deleted[name] = self._delete_in_batches(table, condition, batch_size)
        deleted["ab_tests"] = deleted["ab_test_groups"] = 0
        a = _AB_TESTS.c
        while True:
            with self._store.transaction() as conn:
                ids = list(
                    conn.execute(
                        select(a.test_id)
                        .where(a.ended_at.is_not(None), a.ended_at < older_than)
                        .limit(batch_size)
                    ).scalars()
                )
                if not ids:
                    break
                groups = delete(_AB_GROUPS).where(_AB_GROUPS.c.test_id.in_(ids))
                deleted["ab_test_groups"] += conn.execute(groups).rowcount
                deleted["ab_tests"] += conn.execute(delete(_AB_TESTS).where(a.test_id.in_(ids))).rowcount
        return deleted

    def _sweep_attachments(self, batch_size: int) -> int:
        """Delete the attachments no ``feedback_attachments`` row names, ``batch_size`` per transaction.

        On PostgreSQL the sweep holds the attachment lock exclusively while writers of attachments hold it
        shared (see :meth:`Store.write`), so it never deletes the bytes of a link being committed; on
        SQLite every write transaction holds the database's write lock anyway.
        """
        a, links = _ATTACHMENTS.c, _TABLES["feedback_attachments"]
        unreferenced = ~select(links.c.sha256).where(links.c.sha256 == a.sha256).exists()
        deleted = 0
        while True:
            with self._store.transaction() as conn:
                if self._store.dialect == "postgresql":
                    conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": ATTACHMENT_LOCK})
                ids = list(conn.execute(select(a.sha256).where(unreferenced).limit(batch_size)).scalars())
                if not ids:
                    return deleted
                deleted += conn.execute(delete(_ATTACHMENTS).where(a.sha256.in_(ids), unreferenced)).rowcount

    def _delete_in_batches(self, table: Table, condition: Any, batch_size: int) -> int:
        """Delete the rows of a single-key table that match ``condition``, ``batch_size`` per transaction."""
        pk = next(iter(table.primary_key.columns))
        deleted = 0
        while True:
            with self._store.transaction() as conn:
                ids = list(conn.execute(select(pk).where(condition).limit(batch_size)).scalars())
                if not ids:
                    return deleted
                deleted += conn.execute(delete(table).where(pk.in_(ids))).rowcount
