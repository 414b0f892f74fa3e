"""Recording feedback: the one path the store, the capture handler and the logger share.

Each of them checks and sanitizes the feedback the same way (:func:`~cl_plugin.store.rows.feedback_row`:
PII redacted, an id holding PII hashed, a clear error naming the bad field; attachments through
:func:`~cl_plugin.privacy.attachments.clean_attachments`), refuses an interaction it does not know, and only
then hands the rows on: the store writes them at once (:class:`Feedback`, reached as ``store.feedback``,
which also reads an interaction's feedback history and remembers idempotency keys), the handler and the
logger queue them behind the interaction they rate.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any
from uuid import UUID

import orjson
from sqlalchemy import Table, select, text

from cl_plugin.config import FeedbackConfig
from cl_plugin.errors import InvalidRecordError, UnknownInteractionError
from cl_plugin.privacy import Sanitizer, default_redactor, hash_identifier, id_hash_key
from cl_plugin.privacy.attachments import CleanAttachment, clean_attachments
from cl_plugin.store.batch import Batch
from cl_plugin.store.rows import dumps, feedback_row, feedback_rows
from cl_plugin.store.tables import Feedback as FeedbackRow
from cl_plugin.store.tables import FeedbackRequest

if TYPE_CHECKING:
    from cl_plugin.store.store import Store

__all__ = ["Feedback", "correction_document", "default_sanitizer", "record_feedback"]

_FEEDBACK: Table = FeedbackRow.__table__  # type: ignore[assignment]
_REQUESTS: Table = FeedbackRequest.__table__  # type: ignore[assignment]
#: The longest idempotency key accepted (as sent; it is stored as its keyed hash).
MAX_IDEMPOTENCY_KEY = 255


def record_feedback(
    interaction_id: str | UUID,
    sanitizer: Sanitizer,
    *,
    exists: Callable[[str], bool],
    deliver: Callable[[list[tuple[str, dict[str, Any]]]], None],
    score: float | None,
    thumbs: str | None,
    correction: str | None,
    comment: str | None,
    value: Any,
    source: str,
    key: str,
    min_score: float = 1.0,
    max_score: float = 5.0,
    attachments: Sequence[Any] | None = None,
    limits: FeedbackConfig | None = None,
) -> dict[str, Any]:
    """Check and sanitize one feedback, make sure its interaction exists, and hand the rows on.

    Args:
        interaction_id: the interaction's id (a captured run's id may be given as a UUID).
        sanitizer: redacts the texts and hashes an id that holds PII, as the interaction's id was.
        exists: whether an interaction with this id (as stored) exists or is on its way to the store.
        deliver: stores or queues the rows (:func:`~cl_plugin.store.rows.feedback_rows`: the feedback row
            first, then its attachments).
        score, thumbs, correction, comment, value, source, key: the feedback (see
            :meth:`Feedback.record`).
        min_score: lowest score user feedback may give.
        max_score: highest score user feedback may give.
        attachments: :class:`~cl_plugin.records.Attachment` objects or equivalent dicts.
        limits: attachment counts and sizes (``continual_learning.feedback``); the defaults if None.

    Returns:
        The feedback row as it is stored; with attachments, plus ``attachments``: their metadata
        (``sha256``, ``kind``, ``media_type``, ``size``, ``filename``, ``language``).

    Raises:
        InvalidRecordError: a field cannot be stored as given (the error names it); its subclasses
            :class:`~cl_plugin.errors.AttachmentTooLargeError` and
            :class:`~cl_plugin.errors.UnsupportedAttachmentError` for attachments over the limits or of a
            type not stored.
        MissingDependencyError: an image attachment without Pillow (``pip install 'cl-plugin[web]'``).
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
        has_attachments=bool(attachments),
    )
    if not exists(row["interaction_id"]):  # before decoding and re-encoding any image for nothing
        raise UnknownInteractionError(row["interaction_id"])
    clean = clean_attachments(attachments, sanitizer, limits)
    if row["correction"] is not None:
        row["correction"] = correction_document(row["correction"], clean)
    deliver(feedback_rows(row, clean))
    return {**row, "attachments": [a.meta() for a in clean]} if clean else row


def correction_document(correction: str, attachments: Sequence[CleanAttachment]) -> str:
    """A correction with its code and text attachments appended (code fenced, with its language).

    The feedback's ``correction`` is stored so: a code or text attachment on a correction is part of the
    correction, and so of the interaction's ``corrections`` that retraining turns into retrieval documents.
    Images are left out (retrieval documents are text).
    """
    pieces = [correction]
    for att in attachments:
        if att.kind == "code":
            pieces.append(f"```{att.language or ''}\n{att.data.decode('utf-8')}\n```")
        elif att.kind == "text":
            pieces.append(att.data.decode("utf-8"))
    return "\n\n".join(pieces)


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
        attachments: Sequence[Any] | None = None,
        idempotency_key: str | None = None,
        limits: FeedbackConfig | None = None,
    ) -> dict[str, Any]:
        """Attach feedback to a stored interaction, as :meth:`CaptureHandler.record_feedback` does.

        For a process that holds a store but no handler, such as a feedback web endpoint. The feedback is
        checked, redacted and its interaction id hashed when it holds PII exactly as a handler or logger with
        default privacy settings does (``CL_PLUGIN_HASH_KEY``, else the generated key file), and written
        at once, with its attachments, in one transaction. Feedback is append-only history; the latest user
        score and thumbs are copied to the interaction and corrections are added to its ``corrections``
        (with the correction's code and text attachments appended, for retrieval).

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
            attachments: code snippets, images and text files (:class:`~cl_plugin.records.Attachment` or
                equivalent dicts); images are re-encoded without metadata, code and text redacted.
            idempotency_key: a key the caller sends again when it retries (such as an HTTP
                ``Idempotency-Key``): the first feedback recorded under it is stored once, and a retry gets
                that feedback back instead of storing another. Kept as its keyed hash.
            limits: attachment counts and sizes; the defaults of :class:`~cl_plugin.config.FeedbackConfig`.

        Returns:
            The feedback row as stored (for a retry under an idempotency key, the first one), with
            ``attachments`` (their metadata) when it has any.

        Raises:
            InvalidRecordError: a field cannot be stored as given (the error names it), or the idempotency
                key was used for another feedback (``field="idempotency_key"``).
            AttachmentTooLargeError: an attachment over the limits (a subclass of InvalidRecordError).
            UnsupportedAttachmentError: an image that is not PNG, JPEG or WebP (likewise).
            MissingDependencyError: an image attachment without Pillow (``pip install 'cl-plugin[web]'``).
            UnknownInteractionError: no interaction with this id is stored.
        """
        if hash_key is not None:
            sanitizer = default_sanitizer(hash_key=hash_key)
        else:
            if self._sanitizer is None:
                self._sanitizer = default_sanitizer()
            sanitizer = self._sanitizer
        if idempotency_key is not None and (
            not isinstance(idempotency_key, str) or not 0 < len(idempotency_key) <= MAX_IDEMPOTENCY_KEY
        ):
            raise InvalidRecordError(
                f"idempotency_key must be a string of 1 to {MAX_IDEMPOTENCY_KEY} characters (got "
                f"{type(idempotency_key).__name__})",
                field="idempotency_key",
            )
        first: list[dict[str, Any]] = []

        def deliver(rows: list[tuple[str, dict[str, Any]]]) -> None:
            if idempotency_key is None:
                self._store.write(_batch(rows))
            else:
                first.extend(self._write_once(rows, idempotency_key, hash_key))

        row = record_feedback(
            interaction_id,
            sanitizer,
            exists=self._store.has_interaction,
            deliver=deliver,
            score=score,
            thumbs=thumbs,
            correction=correction,
            comment=comment,
            value=value,
            source=source,
            key=key,
            attachments=attachments,
            limits=limits,
        )
        return first[0] if first else row

    def _write_once(
        self, rows: list[tuple[str, dict[str, Any]]], idempotency_key: str, hash_key: str | None
    ) -> list[dict[str, Any]]:
        """Write the rows unless a feedback was recorded under this key; then return that one instead.

        The key goes in with the rows in one transaction, so of two requests racing with one key (from any
        process), one stores its feedback and the other waits for it and finds it.
        """
        feedback = rows[0][1]
        stored_key = hash_identifier(idempotency_key, hash_key or id_hash_key())
        fingerprint = _fingerprint(rows)
        with self._store.transaction() as conn:
            inserted = conn.execute(
                text(
                    "INSERT INTO feedback_requests "
                    "(idempotency_key, feedback_id, interaction_id, fingerprint, created_at) "
                    "VALUES (:k, :f, :i, :p, :t) ON CONFLICT (idempotency_key) DO NOTHING"
                ),
                {
                    "k": stored_key,
                    "f": feedback["feedback_id"],
                    "i": feedback["interaction_id"],
                    "p": fingerprint,
                    "t": feedback["created_at"],
                },
            ).rowcount
            if inserted == 1:
                self._store.write(_batch(rows), conn=conn)
                return []
        r = _REQUESTS.c
        found = self._store.read_rows(
            select(r.feedback_id, r.fingerprint).where(r.idempotency_key == stored_key)
        )
        if found[0]["fingerprint"] != fingerprint:
            raise InvalidRecordError(
                "idempotency_key was used already for a different feedback; use a new key for new feedback "
                "(a retry must send the same feedback as the first request)",
                field="idempotency_key",
            )
        stored = self.get(found[0]["feedback_id"])
        assert stored is not None  # the key and its feedback are written and purged together
        return [stored]

    def get(self, feedback_id: str) -> dict[str, Any] | None:
        """One feedback row by id, as :meth:`record` returned it (``value`` as JSON text, ``attachments``
        when it has any), or None."""
        rows = self._store.read_rows(select(_FEEDBACK).where(_FEEDBACK.c.feedback_id == feedback_id))
        if not rows:
            return None
        row = rows[0]
        metas = [
            {k: a[k] for k in ("sha256", "kind", "media_type", "size", "filename", "language")}
            for a in self._store.attachments.for_interaction(row["interaction_id"])
            if a["feedback_id"] == feedback_id
        ]
        return {**row, "attachments": metas} if metas else row

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


def _batch(rows: list[tuple[str, dict[str, Any]]]) -> Batch:
    batch = Batch()
    for table, row in rows:
        batch.add(table, row)
    return batch


def _fingerprint(rows: list[tuple[str, dict[str, Any]]]) -> str:
    """What makes two requests the same feedback: the sanitized rows without their fresh id and time."""
    fresh = {"feedback_id", "created_at", "content"}  # content: the attachment's sha256 stands for it
    same = [(table, {k: v for k, v in row.items() if k not in fresh}) for table, row in rows]
    return hashlib.sha256(dumps(same).encode()).hexdigest()
