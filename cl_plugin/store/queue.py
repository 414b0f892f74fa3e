"""The annotation queue: interactions chosen for a label, their status and the label they got.

Selection queues items (:meth:`AnnotationQueue.enqueue`, idempotent per interaction, also between processes);
people, the judge and feedback move them on (:meth:`AnnotationQueue.update`). Labels, reasons and annotator
names are written by people, so they are stored with PII redacted. Reached as ``store.queue``.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import orjson
from sqlalchemy import Table, select

from cl_plugin.errors import InvalidRecordError, StoreError
from cl_plugin.privacy import default_redactor, repair_text
from cl_plugin.records import ActiveLearningCandidate
from cl_plugin.store.engine import insert_for
from cl_plugin.store.tables import AnnotationItem

if TYPE_CHECKING:
    from cl_plugin.store.store import Store

__all__ = ["ANNOTATION_STATUSES", "AnnotationQueue"]

_ANNOTATION_QUEUE: Table = AnnotationItem.__table__  # type: ignore[assignment]


class AnnotationQueue:
    """The store's ``annotation_queue`` table: enqueue candidates, list items, record their outcome.

    Args:
        store: the store that holds the queue.
    """

    def __init__(self, store: Store) -> None:
        self._store = store

    def enqueue(self, candidates: Iterable[ActiveLearningCandidate | Mapping[str, Any]]) -> int:
        """Queue interactions for a human's label, as ``pending`` items.

        An interaction that is queued already, in any status, is skipped: enqueueing is idempotent, also
        between processes (the queue holds one item per interaction).

        Args:
            candidates: :class:`~cl_plugin.records.ActiveLearningCandidate` objects (or dicts with their
                ``interaction_id``, ``priority``, ``strategy`` and ``selection_reason``). Reasons are
                stored with PII redacted.

        Returns:
            How many items were queued.

        Raises:
            InvalidRecordError: a candidate has no interaction id or a priority that is not a finite number.
        """
        now = time.time()
        rows: dict[str, dict[str, Any]] = {}
        for candidate in candidates:
            row = _queue_row(candidate, now)
            rows.setdefault(row["interaction_id"], row)
        if not rows:
            return 0
        table = _ANNOTATION_QUEUE
        insert = insert_for(self._store.dialect)
        queued = 0
        values = list(rows.values())
        with self._store.transaction() as conn:
            for start in range(0, len(values), 90):  # 10 columns: within SQLite's 999 bound parameters
                stmt = (
                    insert(table)
                    .values(values[start : start + 90])
                    .on_conflict_do_nothing(index_elements=["interaction_id"])
                    .returning(table.c.item_id)
                )
                queued += len(conn.execute(stmt).all())
        return queued

    def items(self, status: str | None = None, limit: int | None = None) -> list[dict[str, Any]]:
        """Queued items, oldest first (and, among those queued together, highest priority first).

        Args:
            status: only items in this status (``pending``, ``labeled`` or ``skipped``); None for all.
            limit: most items to return (None for all).

        Returns:
            One dict per item with every column of ``annotation_queue``; ``label`` decoded from JSON.

        Raises:
            InvalidRecordError: an unknown status.
            ValueError: a negative ``limit``.
        """
        t = _ANNOTATION_QUEUE
        stmt = select(t).order_by(t.c.created_at, t.c.priority.desc(), t.c.item_id)
        if status is not None:
            stmt = stmt.where(t.c.status == _check_status(status))
        if limit is not None:
            if limit < 0:
                raise ValueError(f"limit must be >= 0 (got {limit})")
            stmt = stmt.limit(limit)
        return self._store.read_rows(stmt, ("label",))

    def update(
        self, item_id: str, *, status: str, label: Any = None, annotator: str | None = None
    ) -> dict[str, Any]:
        """Record the outcome of a queued item: its label, a skip, or a return to the queue.

        Transitions: ``pending`` to ``labeled`` or ``skipped``; ``skipped`` to ``pending`` or ``labeled``;
        ``labeled`` to ``labeled`` again (a corrected label). Repeating a status is allowed.

        Args:
            item_id: the item's id (from :meth:`items`).
            status: the new status.
            label: the label, any JSON-serializable value; required for ``labeled`` and only allowed there.
                Its strings are stored with PII redacted, as every text written by people is.
            annotator: who labeled or skipped it (redacted too: an address is not kept as a name).

        Returns:
            The updated item, as :meth:`items` returns it.

        Raises:
            InvalidRecordError: an unknown status, a transition that is not allowed, a missing or misplaced
                label, or a label that is not JSON-serializable.
            StoreError: no item has this id.
        """
        _check_status(status)
        if (label is None) == (status == "labeled"):
            raise InvalidRecordError(
                "a label is required with status 'labeled' and only allowed with it "
                f"(got status {status!r} and a label of type {type(label).__name__})",
                field="label",
            )
        try:
            encoded = None if label is None else orjson.dumps(_redacted(label)).decode()
        except TypeError as exc:
            raise InvalidRecordError(f"the label must be JSON-serializable: {exc}", field="label") from None
        annotator = None if annotator is None else _redacted(str(annotator))
        t = _ANNOTATION_QUEUE
        with self._store.transaction() as conn:
            current = conn.execute(
                select(t.c.status, t.c.interaction_id).where(t.c.item_id == item_id).with_for_update()
            ).first()
            if current is None:
                raise StoreError(
                    f"no annotation queue item with id {item_id!r}; take the ids from store.queue.items()"
                )
            if status not in _QUEUE_TRANSITIONS[current.status]:
                allowed = ", ".join(sorted(_QUEUE_TRANSITIONS[current.status]))
                raise InvalidRecordError(
                    f"annotation item {item_id!r} (interaction {current.interaction_id!r}) is "
                    f"{current.status!r} and cannot become {status!r}; it can become: {allowed}",
                    field="status",
                    interaction_id=current.interaction_id,
                )
            conn.execute(
                t.update()
                .where(t.c.item_id == item_id)
                .values(status=status, label=encoded, annotator=annotator, updated_at=time.time())
            )
        [item] = self._store.read_rows(select(t).where(t.c.item_id == item_id), ("label",))
        return item

    def queued_ids(self) -> set[str]:
        """Ids of every interaction in the annotation queue, in any status (for ``exclude_ids``)."""
        with self._store.read_connection() as conn:
            return set(conn.execute(select(_ANNOTATION_QUEUE.c.interaction_id)).scalars())


ANNOTATION_STATUSES = ("pending", "labeled", "skipped")
_QUEUE_TRANSITIONS = {
    "pending": {"pending", "labeled", "skipped"},
    "skipped": {"skipped", "pending", "labeled"},
    "labeled": {"labeled"},
}


def _check_status(status: str) -> str:
    if status not in ANNOTATION_STATUSES:
        raise InvalidRecordError(
            f"unknown annotation status {status!r}; use one of: {', '.join(ANNOTATION_STATUSES)}",
            field="status",
        )
    return status


def _redacted(value: Any) -> Any:
    """``value`` with PII redacted from every string in it: annotation labels and reasons do not go through
    the writer's sanitizer, and people write addresses and numbers into them."""
    return default_redactor().redact_value(value)


def _queue_row(candidate: ActiveLearningCandidate | Mapping[str, Any], now: float) -> dict[str, Any]:
    """A pending ``annotation_queue`` row for one candidate (its reason is stored with PII redacted)."""
    get = candidate.get if isinstance(candidate, Mapping) else lambda k: getattr(candidate, k, None)
    iid, priority = get("interaction_id"), get("priority")
    if not isinstance(iid, str) or not iid:
        raise InvalidRecordError(f"a candidate has no interaction_id (got {iid!r})", field="interaction_id")
    if isinstance(priority, bool) or not isinstance(priority, int | float) or not math.isfinite(priority):
        raise InvalidRecordError(
            f"priority must be a finite number (got {priority!r})", field="priority", interaction_id=iid
        )
    return {
        "item_id": str(uuid.uuid4()),
        "interaction_id": iid,
        "status": "pending",
        "priority": float(priority),
        "strategy": str(get("strategy") or ""),
        "selection_reason": _redacted(repair_text(str(get("selection_reason") or ""))),
        "created_at": now,
        "updated_at": now,
        "label": None,
        "annotator": None,
    }
