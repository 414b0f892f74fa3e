"""Recording feedback: the one path the store, the capture handler and the logger share.

Each of them checks and sanitizes the feedback the same way (:func:`~cl_plugin.store.rows.feedback_row`:
PII redacted, an id holding PII hashed, a clear error naming the bad field), refuses an interaction it does
not know, and only then hands the row on: the store writes it at once (:class:`Feedback`, reached as
``store.feedback``, which also reads an interaction's feedback history), the handler and the logger queue it
behind the interaction it rates.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any
from uuid import UUID

import orjson
from sqlalchemy import Table, select

from cl_plugin.errors import UnknownInteractionError
from cl_plugin.privacy import Sanitizer, default_redactor, hash_identifier
from cl_plugin.store.batch import Batch
from cl_plugin.store.rows import feedback_row
from cl_plugin.store.tables import Feedback as FeedbackRow

if TYPE_CHECKING:
    from cl_plugin.store.store import Store

__all__ = ["Feedback", "default_sanitizer", "record_feedback"]

_FEEDBACK: Table = FeedbackRow.__table__  # type: ignore[assignment]


def record_feedback(
    interaction_id: str | UUID,
    sanitizer: Sanitizer,
    *,
    exists: Callable[[str], bool],
    deliver: Callable[[dict[str, Any]], None],
    score: float | None,
    thumbs: str | None,
    correction: str | None,
    comment: str | None,
    value: Any,
    source: str,
    key: str,
    min_score: float = 1.0,
    max_score: float = 5.0,
) -> dict[str, Any]:
    """Check and sanitize one feedback, make sure its interaction exists, and hand the row on.

    Args:
        interaction_id: the interaction's id (a captured run's id may be given as a UUID).
        sanitizer: redacts the texts and hashes an id that holds PII, as the interaction's id was.
        exists: whether an interaction with this id (as stored) exists or is on its way to the store.
        deliver: stores or queues the row.
        score, thumbs, correction, comment, value, source, key: the feedback (see
            :meth:`Feedback.record`).
        min_score: lowest score user feedback may give.
        max_score: highest score user feedback may give.

    Returns:
        The feedback row as it is stored.

    Raises:
        InvalidRecordError: a field cannot be stored as given (the error names it).
        UnknownInteractionError: ``exists`` does not know the interaction.
    """
    row = feedback_row(
        str(interaction_id) if isinstance(interaction_id, UUID) else interaction_id,
        sanitizer,
        score=score,
        thumbs=thumbs,
        correction=correction,
        comment=comment,
        value=value,
        source=source,
        key=key,
        min_score=min_score,
        max_score=max_score,
    )
    if not exists(row["interaction_id"]):
        raise UnknownInteractionError(row["interaction_id"])
    deliver(row)
    return row


def default_sanitizer(max_text_length: int = 10_000, *, hash_key: str | None = None) -> Sanitizer:
    """The sanitizer of a handler or logger with default privacy settings: PII redacted, an id holding PII
    stored as its keyed hash (``hash_key``, else ``CL_PLUGIN_HASH_KEY``, else the generated key of
    :func:`cl_plugin.privacy.id_hash_key`), so feedback finds the interaction those stored."""
    return Sanitizer(
        redact=default_redactor().redact,
        max_text_length=max_text_length,
        hash_pii_id=None if hash_key is None else partial(hash_identifier, key=hash_key),
    )


class Feedback:
    """The store's feedback: record one (``store.feedback.record``) and read an interaction's history.

    Args:
        store: the store whose ``feedback`` table this reads and writes.
    """

    def __init__(self, store: Store) -> None:
        self._store = store
        # Built on the first record: it loads the PII redactor, which a store may never need.
        self._sanitizer: Sanitizer | None = None

    def record(
        self,
        interaction_id: str | UUID,
        *,
        score: float | None = None,
        thumbs: str | None = None,
        correction: str | None = None,
        comment: str | None = None,
        value: Any = None,
        source: str = "user",
        key: str = "user_feedback",
        hash_key: str | None = None,
    ) -> dict[str, Any]:
        """Attach feedback to a stored interaction, as :meth:`CaptureHandler.record_feedback` does.

        For a process that holds a store but no handler, such as a feedback web endpoint. The feedback is
        checked, redacted and its interaction id hashed when it holds PII exactly as a handler or logger with
        default privacy settings does (``CL_PLUGIN_HASH_KEY``, else the generated key file), and written
        at once. Feedback is append-only history; the latest user score and thumbs are copied to the
        interaction and corrections are added to its ``corrections``.

        Args:
            interaction_id: the interaction's id (a captured run's root run id, or the id you logged).
            score: a rating (for ``source="user"``, in [1, 5]).
            thumbs: ``"up"`` or ``"down"``.
            correction: the answer the user expected.
            comment: free text.
            value: any JSON-like value (for annotators and judges).
            source: who gave it: ``"user"``, ``"annotator"``, ``"llm_judge"``, ...
            key: what was rated.
            hash_key: the privacy key the handler or logger was given explicitly (``privacy.hash_key``),
                when the environment of this process does not hold it: an id holding PII is then found
                under the hash that handler stored it as.

        Returns:
            The feedback row as stored.

        Raises:
            InvalidRecordError: a field cannot be stored as given (the error names it).
            UnknownInteractionError: no interaction with this id is stored.
        """
        if hash_key is not None:
            sanitizer = default_sanitizer(hash_key=hash_key)
        else:
            if self._sanitizer is None:
                self._sanitizer = default_sanitizer()
            sanitizer = self._sanitizer
        return record_feedback(
            interaction_id,
            sanitizer,
            exists=self._store.has_interaction,
            deliver=self._write,
            score=score,
            thumbs=thumbs,
            correction=correction,
            comment=comment,
            value=value,
            source=source,
            key=key,
        )

    def _write(self, row: dict[str, Any]) -> None:
        """Write one checked, sanitized feedback row (see :func:`cl_plugin.store.rows.feedback_row`) and
        apply it to its interaction; the row may come before its interaction, which it then waits for."""
        self._store.write(Batch({"feedback": [row]}))

    def history(self, interaction_id: str) -> list[dict[str, Any]]:
        """Every feedback row of an interaction, oldest first (``value`` decoded from JSON)."""
        f = _FEEDBACK.c
        stmt = (
            select(_FEEDBACK).where(f.interaction_id == interaction_id).order_by(f.created_at, f.feedback_id)
        )
        with self._store.read_connection() as conn:
            res = conn.execute(stmt)
            out = [dict(zip(res.keys(), r, strict=True)) for r in res]
        for row in out:
            row["value"] = orjson.loads(row["value"]) if row["value"] else None
        return out
