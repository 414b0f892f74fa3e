"""Turning records into storable rows and back, with every text field made safe on the way in.

:class:`Sanitizer` is the single boundary the architecture asks for: it redacts PII, hashes ids, repairs
text the database would reject (lone surrogates, NUL), truncates huge text and serializes metadata. It runs
on the writer thread, never on the caller's. When redaction of a field fails, the field becomes
``[REDACTED]``: the raw text is never kept.
"""

from __future__ import annotations

import base64
import logging
import math
import re
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from cl_plugin.errors import InvalidRecordError
from cl_plugin.records import SPEC_FIELDS, ProductionInteraction, embedding_vector, is_finite_number, is_key

__all__ = [
    "INTERACTION_COLUMNS",
    "Sanitizer",
    "feedback_row",
    "feedback_rows",
    "interaction_from_row",
    "interaction_rows",
    "row_from_interaction",
    "rows_to_interactions",
]

log = logging.getLogger("cl_plugin.store")

REDACTED = "[REDACTED]"
# A UUID (a captured run's id) or an id hashed already: no PII, and the common case, so no redactor call.
_PLAIN_ID = re.compile(r"h:[0-9a-f]{32}|[0-9a-fA-F]{8}(?:-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}")
# Ids glue a prefix to the value ("user-555-123-4567", "cust_4111111111111111"), which the redactor reads as
# one token and leaves alone in prose; for an id, such a separator after a letter is read as a space.
_ID_GLUE = re.compile(r"(?<=[A-Za-z])[-_:#/|=]")
_SURROGATES = re.compile("[\ud800-\udfff]")
_FLOAT_MAX = sys.float_info.max

#: Items (containers and their members) copied from one JSON-like value; the rest become "<too large>".
MAX_VALUE_ITEMS = 100_000

INTERACTION_COLUMNS: tuple[str, ...] = (*SPEC_FIELDS, "run_id", "graph_name", "user_id", "corrections")
_FLAG_COLUMNS = ("hallucination_detected", "retrieval_failed", "error_occurred")


def repair_text(text: str) -> str:
    """Replace what a database rejects: lone surrogates (not UTF-8) and NUL (refused by PostgreSQL)."""
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            text = _SURROGATES.sub("\ufffd", text)
    if "\x00" in text:
        text = text.replace("\x00", "\ufffd")
    return text


def _json_default(obj: Any) -> Any:
    if isinstance(obj, set | frozenset):
        return list(obj)
    return f"<unserializable {type(obj).__name__}>"


def _plain(obj: Any, depth: int = 0, walk: _Walk | None = None) -> Any:
    """A JSON-safe copy of ``obj``: cycles and depth over 32 are cut, unknown objects become their type."""
    if depth > 32:
        return "<too deep>"
    if isinstance(obj, str | bool) or obj is None:
        return obj
    if isinstance(obj, int):
        return int(obj) if -(2**63) <= obj < 2**64 else str(obj)
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if not isinstance(obj, dict | list | tuple | set | frozenset):
        return _json_default(obj)
    walk = walk or _Walk()
    cut = walk.enter(obj)
    if cut is not None:
        return cut
    try:
        if isinstance(obj, dict):
            return {str(k): _plain(v, depth + 1, walk) for k, v in obj.items()}
        return [_plain(v, depth + 1, walk) for v in obj]
    finally:
        walk.leave(obj)


class _Walk:
    """The containers on the path of one copy, and how many items it may still copy.

    A container that holds itself is a cycle (cut as too deep), and one shared at many places is copied once
    per place: without these checks, ``d = {}; d["a"] = d["b"] = d`` would take 2**32 steps before the depth
    limit cut it.
    """

    __slots__ = ("budget", "path")

    def __init__(self, budget: int = MAX_VALUE_ITEMS) -> None:
        self.budget = budget
        self.path: set[int] = set()

    def enter(self, obj: Any) -> str | None:
        """None when ``obj`` may be copied, else the placeholder that replaces it."""
        if id(obj) in self.path:
            return "<too deep>"  # a cycle is infinitely deep
        self.budget -= len(obj) + 1
        if self.budget < 0:
            return "<too large>"
        self.path.add(id(obj))
        return None

    def leave(self, obj: Any) -> None:
        self.path.discard(id(obj))


def dumps(obj: Any) -> str:
    """Serialize to compact JSON; never raises (cycles, huge nesting and odd objects degrade to text)."""
    try:
        return orjson.dumps(obj, default=_json_default, option=orjson.OPT_NON_STR_KEYS).decode()
    except (TypeError, orjson.JSONEncodeError):
        return orjson.dumps(_plain(obj)).decode()


_CLEAN_SIZE, _CLEAN_MAX_CHARS = 8192, 1000


@dataclass(frozen=True, slots=True)
class Sanitizer:
    """Makes a record safe to store.

    Args:
        redact: text -> redacted text (a PII redactor's ``redact``), or None to keep text as is.
        max_text_length: longer text is cut to this many characters and marked.
        hash_id: id -> keyed hash, or None.
        hash_sessions: hash ``session_id`` with ``hash_id``.
        hash_users: hash ``user_id`` with ``hash_id``.
        hash_pii_id: id -> keyed hash for an id that holds PII (see :meth:`key`); None means ``hash_id``, or
            when that is None too, the privacy layer's default key
            (:func:`cl_plugin.privacy.id_hash_key`).

    With ``redact`` set, no id reaches a row as given if it holds PII: interaction, run, session and user
    ids that the redactor would change are stored as their keyed hash (:meth:`key`).
    """

    redact: Callable[[str], str] | None = None
    max_text_length: int = 100_000
    hash_id: Callable[[str], str] | None = None
    hash_sessions: bool = False
    hash_users: bool = False
    hash_pii_id: Callable[[str], str] | None = None
    # Texts the redactor left unchanged: metadata keys, agent and model names and retrieved passages repeat
    # from record to record, and redacting each again was most of the cost of the reference record's fields.
    # Only PII-free texts of at most _CLEAN_MAX_CHARS are kept, and at most _CLEAN_SIZE of them.
    _clean: dict[str, None] = field(default_factory=dict, compare=False, repr=False)

    def text(self, value: str) -> str:
        """A safe copy of one text field."""
        limit = self.max_text_length
        if len(value) <= limit and value.isascii() and "\x00" not in value:  # the common case, kept cheap
            if self.redact is None or len(value) < 6:  # the shortest PII ("a@b.co") has six characters
                return value
            if value in self._clean:
                return value
            try:
                out = self.redact(value)
            except Exception:
                log.exception("redaction failed; the field is stored as %s", REDACTED)
                return REDACTED
            if out == value and len(value) <= _CLEAN_MAX_CHARS:
                if len(self._clean) >= _CLEAN_SIZE:
                    self._clean.clear()
                self._clean[value] = None
            return out if len(out) <= limit else f"{out[:limit]}…[truncated {len(out) - limit} chars]"
        return self._text(value)

    def _text(self, value: str) -> str:
        limit = self.max_text_length
        # Cut far beyond the limit first so redaction cost stays bounded, then redact, then cut to the limit:
        # a PII value split by the first cut lies beyond the limit and is dropped with it.
        original_length = len(value)
        if original_length > 2 * limit:
            value = value[: 2 * limit]
        value = repair_text(value)
        if self.redact is not None:
            try:
                value = self.redact(value)
            except Exception:
                log.exception("redaction failed; the field is stored as %s", REDACTED)
                return REDACTED
        if len(value) > limit:
            value = f"{value[:limit]}…[truncated {original_length - limit} chars]"
        return value

    def value(self, obj: Any, depth: int = 0, walk: _Walk | None = None) -> Any:
        """A safe copy of a JSON-like value: every string in it (keys included) goes through :meth:`text`.

        Cycles and nesting deeper than 32 become ``"<too deep>"``, and whatever lies beyond
        :data:`MAX_VALUE_ITEMS` items (counting shared containers once per place) ``"<too large>"``.
        """
        if isinstance(obj, str):
            return self.text(obj)
        if obj is None or isinstance(obj, bool):
            return obj
        if isinstance(
            obj, int
        ):  # JSON readers (and orjson) take 64-bit integers; larger ones stay exact as text
            return int(obj) if -(2**63) <= obj < 2**64 else str(obj)
        if isinstance(obj, float):
            return float(obj) if math.isfinite(obj) else None
        if depth > 32:
            return "<too deep>"
        if not isinstance(obj, dict | list | tuple | set | frozenset):
            return f"<unserializable {type(obj).__name__}>"
        walk = walk or _Walk()
        cut = walk.enter(obj)
        if cut is not None:
            return cut
        try:
            if isinstance(obj, dict):
                out = {}
                for k, v in obj.items():
                    # Flat str -> str/number metadata is the usual shape: no recursion for it.
                    key = self.text(k if type(k) is str else str(k))
                    t = type(v)
                    out[key] = (
                        self.text(v)
                        if t is str
                        else v
                        if t is int or v is None
                        else self.value(v, depth + 1, walk)
                    )
                return out
            return [self.value(v, depth + 1, walk) for v in obj]
        finally:
            walk.leave(obj)

    def identifier(self, value: str | None, hashed: bool) -> str | None:
        """A user or session id as stored: its keyed hash when ``hashed``, else as :meth:`key` keeps it."""
        if value is None:
            return None
        value = repair_text(str(value))
        if hashed and self.hash_id is not None:
            return self.hash_id(value)
        out = self.key(value)
        return out if out is not value or len(out) <= self.max_text_length else self.text(out)

    def key(self, value: str) -> str:
        """An id as stored: as given, unless redaction is on and the id holds PII; then its keyed hash.

        PII glued to a prefix counts (``user-555-123-4567``, ``cust_4111111111111111``): a letter followed by
        one of ``-_:#/|=`` is read as a word break.

        A placeholder would merge every user whose id is an address into one; the hash keeps them apart, and
        the same id always gets the same hash, so a lookup by the raw id can hash it alike
        (:func:`cl_plugin.privacy.safe_identifier`). If redaction fails on the id, the id is hashed.
        """
        if self.redact is None or len(value) < 6 or _PLAIN_ID.fullmatch(value):
            return value
        try:
            spaced = _ID_GLUE.sub(" ", value)
            if self.redact(value) == value and (spaced is value or self.redact(spaced) == spaced):
                return value
        except Exception as exc:
            log.error("redacting an id failed (%s); the id is stored hashed", type(exc).__name__)
        hasher = self.hash_pii_id or self.hash_id
        try:
            if hasher is None:
                # privacy sits above the store; imported when used
                from cl_plugin.privacy import hash_identifier, id_hash_key

                return hash_identifier(value, id_hash_key())
            return hasher(value)
        except Exception as exc:
            log.error(
                "hashing an id that holds PII failed (%s); the id is stored as %s",
                type(exc).__name__,
                REDACTED,
            )
            return REDACTED


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
) -> dict[str, Any]:
    """A checked, sanitized ``feedback`` row.

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
    if score is None and thumbs is None and correction is None and comment is None and value is None:
        raise bad("score", "is missing: give at least one of score, thumbs, correction, comment or value")
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


def feedback_rows(row: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """A feedback row as the writer's ``(table, row)`` pairs."""
    return [("feedback", row)]
