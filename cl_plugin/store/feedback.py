"""Recording feedback: the one path the store, the capture handler and the logger share.

Each of them checks and sanitizes the feedback the same way (:func:`~cl_plugin.store.rows.feedback_row`:
PII redacted, an id holding PII hashed, a clear error naming the bad field), refuses an interaction it does
not know, and only then hands the row on: the store writes it at once, the handler and the logger queue it
behind the interaction it rates.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any
from uuid import UUID

from cl_plugin.errors import UnknownInteractionError
from cl_plugin.privacy import Sanitizer
from cl_plugin.store.rows import feedback_row

__all__ = ["default_sanitizer", "record_feedback"]


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
            :meth:`cl_plugin.store.Store.record_feedback`).
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
    from cl_plugin.privacy import default_redactor, hash_identifier  # privacy sits above the store

    return Sanitizer(
        redact=default_redactor().redact,
        max_text_length=max_text_length,
        hash_pii_id=None if hash_key is None else partial(hash_identifier, key=hash_key),
    )
