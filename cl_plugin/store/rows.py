"""Turning records into storable rows and back, with every text field made safe on the way in.

Each row builder takes a :class:`~cl_plugin.privacy.Sanitizer`, the privacy layer's single boundary, and
passes every text, id and JSON value of the record through it: nothing reaches a row as given.
"""

from __future__ import annotations

import base64
import logging
import sys
import time
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

import orjson

from cl_plugin.errors import InvalidRecordError
from cl_plugin.privacy.sanitize import Sanitizer, dumps, repair_text
from cl_plugin.records import SPEC_FIELDS, ProductionInteraction, embedding_vector, is_finite_number, is_key

__all__ = [
    "INTERACTION_COLUMNS",
    "dumps",
    "feedback_row",
    "feedback_rows",
    "interaction_from_row",
    "interaction_rows",
    "row_from_interaction",
    "rows_to_interactions",
]

log = logging.getLogger("cl_plugin.store")

_FLOAT_MAX = sys.float_info.max
INTERACTION_COLUMNS: tuple[str, ...] = (*SPEC_FIELDS, "run_id", "graph_name", "user_id", "corrections")
_FLAG_COLUMNS = ("hallucination_detected", "retrieval_failed", "error_occurred")


def _num(value: Any) -> float | None:
    """Plain floats only (numpy and Decimal scalars are not adapted by every driver)."""
    return None if value is None else float(value)


def _flag(value: Any) -> int | None:
    return None if value is None else int(bool(value))


#: Retrieved passages kept per interaction, and characters kept of each passage's text.
MAX_CHUNKS, MAX_CHUNK_CHARS = 20, 1000


def _extras(item: ProductionInteraction) -> bool:
    """Whether the record fills any field of the reference record beyond the design's columns."""
    return bool(
        item.retrieved_chunks
        or item.retrieval_scores
        or item.response_metadata
        or item.error_message
        or item.routing_decision
        or item.user_feedback_text
        or item.user_corrections
        or item.query_embedding is not None
    )


def _chunk(chunk: Any, s: Sanitizer) -> Any:
    """One retrieved passage, redacted, its text cut to :data:`MAX_CHUNK_CHARS`."""
    if isinstance(chunk, str):
        return s.text(chunk[:MAX_CHUNK_CHARS])
    if isinstance(chunk, dict):
        chunk = {k: v[:MAX_CHUNK_CHARS] if isinstance(v, str) else v for k, v in chunk.items()}
    return s.value(chunk)


def _best_score(scores: Sequence[float]) -> float | None:
    """The best retrieval score as a quality in [0, 1], or None when the scores are not on that scale."""
    if not scores or not all(0.0 <= x <= 1.0 for x in scores):
        return None
    return float(max(scores))


def interaction_rows(item: ProductionInteraction, s: Sanitizer) -> list[tuple[str, dict[str, Any]]]:
    """Every sanitized row a logged interaction makes, as the writer's ``(table, row)`` pairs.

    The ``interactions`` row, and for the reference record's extra fields: ``routing_decision`` as a
    ``decisions`` row, ``user_feedback_text`` and ``user_corrections`` as one ``feedback`` row (comment and
    correction), ``query_embedding`` as an ``interaction_embeddings`` row; the retrieved chunks and their
    scores, the response metadata and the error message go into the metadata (see
    :class:`~cl_plugin.records.ProductionInteraction`). Ids of the derived rows are derived from the
    interaction's, so logging it again writes no second copy.
    """
    row = row_from_interaction(item, s)
    if not _extras(item):
        return [("interactions", row)]
    iid = row["interaction_id"]
    out = [("interactions", row)]
    if item.routing_decision:
        out.append(("decisions", _routing_row(item, iid, s)))
    if item.user_feedback_text is not None or item.user_corrections is not None:
        fid = str(uuid.uuid5(uuid.NAMESPACE_URL, f"cl_plugin:logged-feedback:{iid}"))
        out.append(
            (
                "feedback",
                {
                    "feedback_id": fid,
                    "interaction_id": iid,
                    "key": "user_feedback",
                    "score": None,
                    "value": None,
                    "thumbs_up_down": None,
                    "comment": None if item.user_feedback_text is None else s.text(item.user_feedback_text),
                    "correction": None if item.user_corrections is None else s.text(item.user_corrections),
                    "source": "user",
                    "created_at": float(item.timestamp),
                },
            )
        )
    if item.query_embedding is not None:
        vector = embedding_vector(item.query_embedding).astype("<f4", copy=False)
        out.append(
            (
                "interaction_embeddings",
                {
                    "interaction_id": iid,
                    "dim": int(vector.size),
                    "vector": base64.b64encode(vector.tobytes()).decode("ascii"),
                    "created_at": float(item.timestamp),
                },
            )
        )
    return out


def _routing_row(item: ProductionInteraction, iid: str, s: Sanitizer) -> dict[str, Any]:
    """The ``decisions`` row of a logged ``routing_decision``."""
    decision = item.routing_decision
    chosen = next(
        (decision[k] for k in ("agent", "chosen", "selected", "route") if decision.get(k) is not None),
        item.agent_selected,
    )
    confidence = decision.get("confidence", item.agent_confidence)
    alternatives = next(
        (decision[k] for k in ("probabilities", "alternatives", "scores") if decision.get(k) is not None),
        None,
    )
    features = decision.get("features")
    used = {"agent", "chosen", "selected", "route", "confidence", "probabilities", "alternatives", "scores"}
    rest = {k: v for k, v in decision.items() if k not in used and k != "features"}
    return {
        "decision_id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"cl_plugin:routing-decision:{iid}")),
        "interaction_id": iid,
        "run_id": None,
        "node": None if decision.get("node") is None else s.text(str(decision["node"])),
        "kind": "route",
        "chosen": None if chosen is None else s.text(str(chosen)),
        "confidence": float(confidence) if is_finite_number(confidence) else None,
        "alternatives": None if alternatives is None else dumps(s.value(alternatives)),
        "features": None if features is None else dumps(s.value(features)),
        "statistics": dumps(s.value(rest)) if rest else None,
        "timestamp": float(item.timestamp),
    }


def row_from_interaction(item: ProductionInteraction, s: Sanitizer) -> dict[str, Any]:
    """The sanitized ``interactions`` row of an interaction (metadata and corrections as JSON text).

    The reference record's retrieved chunks (redacted, truncated) and scores, response metadata and error
    message are added to the metadata under those names, unless the metadata has a key of that name
    already; the best of the retrieval scores is the retrieval quality when none is given.
    """
    metadata = s.value(item.metadata) if item.metadata else None
    quality = item.retrieval_quality
    if _extras(item):
        # Each extra is sanitized once, here; the names it is filed under are the module's own.
        if not isinstance(metadata, dict):  # none, or cut whole ("<too large>"): the extras still go in
            metadata = {} if metadata is None else {"metadata": metadata}
        if item.retrieved_chunks and "retrieved_chunks" not in metadata:
            metadata["retrieved_chunks"] = [_chunk(c, s) for c in item.retrieved_chunks[:MAX_CHUNKS]]
        if item.retrieval_scores:
            metadata.setdefault("retrieval_scores", [float(x) for x in item.retrieval_scores[:MAX_CHUNKS]])
            if quality is None:
                quality = _best_score(item.retrieval_scores)
        if item.response_metadata and "response_metadata" not in metadata:
            metadata["response_metadata"] = s.value(item.response_metadata)
        if item.error_message and "error_message" not in metadata:
            metadata["error_message"] = s.text(item.error_message)
        metadata = metadata or None
    given = list(item.corrections)
    if item.user_corrections is not None and item.user_corrections not in given:
        given.append(item.user_corrections)  # also a feedback row: written here so it is not applied twice
    corrections = s.value(given) if given else None
    return {
        "interaction_id": s.key(repair_text(str(item.interaction_id))),
        "timestamp": float(item.timestamp),
        "session_id": s.identifier(item.session_id, s.hash_sessions) or "",
        "user_query": s.text(item.user_query),
        "agent_selected": None if item.agent_selected is None else s.text(str(item.agent_selected)),
        "agent_confidence": _num(item.agent_confidence),
        "response": s.text(item.response),
        "user_feedback_score": _num(item.user_feedback_score),
        "thumbs_up_down": None if item.thumbs_up_down == "none" else item.thumbs_up_down,
        "latency_ms": _num(item.latency_ms),
        "tokens_used": None if item.tokens_used is None else int(item.tokens_used),
        "cost": _num(item.cost),
        "hallucination_detected": _flag(item.hallucination_detected),
        "retrieval_failed": _flag(item.retrieval_failed),
        "error_occurred": _flag(item.error_occurred),
        "retrieval_quality": _num(quality),
        "metadata": None if metadata is None else dumps(metadata),
        "run_id": None if item.run_id is None else s.key(repair_text(str(item.run_id))),
        "graph_name": None if item.graph_name is None else s.text(item.graph_name),
        "user_id": s.identifier(item.user_id, s.hash_users),
        "corrections": None if corrections is None else dumps(corrections),
    }


def interaction_from_row(row: dict[str, Any]) -> dict[str, Any]:
    """Turn one stored row (a dict by column) into the classic API's dict.

    Flags become booleans (None stays None: unknown), ``metadata`` a dict and ``corrections`` a list.
    """
    return rows_to_interactions(tuple(row), [tuple(row.values())])[0]


def rows_to_interactions(keys: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[dict[str, Any]]:
    """Many stored rows (tuples in ``keys`` order) as classic API dicts; same result as
    :func:`interaction_from_row` on each, in one loop (reads of thousands of rows spend their time here).
    """
    flags = [(keys.index(f), f) for f in _FLAG_COLUMNS if f in keys]
    im = keys.index("metadata") if "metadata" in keys else None
    ic = keys.index("corrections") if "corrections" in keys else None
    loads = orjson.loads
    out: list[dict[str, Any]] = []
    append = out.append
    for row in rows:
        d = dict(zip(keys, row, strict=True))
        for i, name in flags:
            v = row[i]
            if v is not None:
                d[name] = v == 1
        if im is not None:
            v = row[im]
            d["metadata"] = loads(v) if type(v) is str and v else (v or {})
        if ic is not None:
            v = row[ic]
            d["corrections"] = loads(v) if type(v) is str and v else (v or [])
        append(d)
    return out


def feedback_row(
    interaction_id: str,
    s: Sanitizer,
    *,
    score: float | None = None,
    thumbs: str | None = None,
    correction: str | None = None,
    comment: str | None = None,
    value: Any = None,
    source: str = "user",
    key: str = "user_feedback",
    min_score: float = 1.0,
    max_score: float = 5.0,
    feedback_id: str | None = None,
    created_at: float | None = None,
    has_attachments: bool = False,
) -> dict[str, Any]:
    """A checked, sanitized ``feedback`` row (``has_attachments``: the feedback carries attachments, which
    are feedback enough without a score or text).

    Raises:
        InvalidRecordError: a field cannot be stored as given; the error names it.
    """

    def bad(name: str, message: str) -> InvalidRecordError:
        # the id as stored (hashed if it holds PII): an error message ends up in logs
        shown = s.key(repair_text(interaction_id)) if isinstance(interaction_id, str) else "?"
        return InvalidRecordError(
            f"feedback for {shown!r}: {name} {message}", field=name, interaction_id=shown
        )

    if not isinstance(interaction_id, str) or not interaction_id or not is_key(interaction_id):
        length = len(interaction_id) if isinstance(interaction_id, str) else "-"
        raise bad(
            "interaction_id",
            "must be a non-empty string without NUL or lone surrogates "
            f"(got {type(interaction_id).__name__} of length {length})",
        )
    if score is not None and not (
        # A comparison, not math.isfinite: that raises OverflowError on an int beyond a float's range.
        isinstance(score, int | float) and not isinstance(score, bool) and -_FLOAT_MAX <= score <= _FLOAT_MAX
    ):
        raise bad("score", f"must be a finite number or None (got {score!r})")
    if score is not None and source == "user" and not min_score <= score <= max_score:
        raise bad("score", f"must be in [{min_score}, {max_score}] for user feedback (got {score!r})")
    if thumbs not in (None, "up", "down"):
        raise bad("thumbs", f"must be 'up', 'down' or None (got {thumbs!r})")
    for name, text in (("correction", correction), ("comment", comment)):
        if text is not None and not isinstance(text, str):
            raise bad(name, f"must be a string or None (got {type(text).__name__})")
    if not isinstance(source, str) or not source:
        raise bad("source", f"must be a non-empty string such as 'user' or 'annotator' (got {source!r})")
    if not isinstance(key, str) or not key:
        raise bad("key", f"must be a non-empty string (got {key!r})")
    if (
        score is None
        and thumbs is None
        and correction is None
        and comment is None
        and value is None
        and not has_attachments
    ):
        raise bad(
            "score",
            "is missing: give at least one of score, thumbs, correction, comment, value or attachments",
        )
    return {
        "feedback_id": feedback_id or str(uuid.uuid4()),
        "interaction_id": s.key(repair_text(interaction_id)),
        "key": s.text(key),
        "score": None if score is None else float(score),
        "value": None if value is None else dumps(s.value(value)),
        "thumbs_up_down": thumbs,
        "comment": None if comment is None else s.text(comment),
        "correction": None if correction is None else s.text(correction),
        "source": s.text(source),
        "created_at": time.time() if created_at is None else float(created_at),
    }


def feedback_rows(row: dict[str, Any], attachments: Sequence[Any] = ()) -> list[tuple[str, dict[str, Any]]]:
    """A feedback row and its attachments as the writer's ``(table, row)`` pairs.

    Args:
        row: a row made by :func:`feedback_row`.
        attachments: its :class:`~cl_plugin.privacy.attachments.CleanAttachment` objects, in order: each
            makes an ``attachments`` row (bytes as base64 text, as the journal and backups are JSON; the
            store decodes them) and a ``feedback_attachments`` row linking it to the feedback.
    """
    out: list[tuple[str, dict[str, Any]]] = [("feedback", row)]
    at = row["created_at"]
    for position, att in enumerate(attachments):
        out.append(
            (
                "attachments",
                {
                    "sha256": att.sha256,
                    "kind": att.kind,
                    "media_type": att.media_type,
                    "size": att.size,
                    "created_at": at,
                    "content": base64.b64encode(att.data).decode("ascii"),
                },
            )
        )
        out.append(
            (
                "feedback_attachments",
                {
                    "feedback_id": row["feedback_id"],
                    "position": position,
                    "interaction_id": row["interaction_id"],
                    "sha256": att.sha256,
                    "kind": att.kind,
                    "filename": att.filename,
                    "language": att.language,
                    "created_at": at,
                },
            )
        )
    return out
