"""The record types of the classic API.

``ProductionInteraction`` carries exactly the columns of the ``interactions`` table of the original design
(same names, same meaning), plus the few the plugin needs: the LangChain/LangSmith run id, the graph name,
the (hashed) user id and user corrections. Flags and scores are ``None`` when unknown: a run without
retrieval has ``retrieval_failed=None``, not ``False``.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

import numpy as np
import orjson

from cl_plugin.errors import InvalidRecordError

__all__ = [
    "ATTACHMENT_KINDS",
    "SPEC_FIELDS",
    "ActiveLearningCandidate",
    "Attachment",
    "FailurePattern",
    "PointRef",
    "ProductionInteraction",
    "embedding_vector",
    "interaction_problems",
    "is_finite_number",
    "is_key",
    "rating_outcome",
]

Thumbs = Literal["up", "down", "none"]
AttachmentKind = Literal["code", "image", "text"]
#: The kinds of attachment a feedback may carry.
ATTACHMENT_KINDS: tuple[str, ...] = ("code", "image", "text")

# The interactions columns of the original schema, in its order.
SPEC_FIELDS: tuple[str, ...] = (
    "interaction_id",
    "timestamp",
    "session_id",
    "user_query",
    "agent_selected",
    "agent_confidence",
    "response",
    "user_feedback_score",
    "thumbs_up_down",
    "latency_ms",
    "tokens_used",
    "cost",
    "hallucination_detected",
    "retrieval_failed",
    "error_occurred",
    "retrieval_quality",
    "metadata",
)

_FLAGS = ("hallucination_detected", "retrieval_failed", "error_occurred")
# Ids and indexed text: at most 512 characters (2 KB of UTF-8) fit in a PostgreSQL index key (2.7 KB).
MAX_KEY_LENGTH = 512
# The largest value of a 64-bit integer column.
MAX_INT64 = 2**63 - 1
# 9999-12-31: a later "timestamp" is not unix seconds (often milliseconds) and has no calendar day.
MAX_TIMESTAMP = 253_402_300_799.0
# The longest query embedding stored (the largest common models have 4,096 dimensions).
MAX_EMBEDDING_DIM = 16_384


@dataclass(slots=True)
class ProductionInteraction:
    """One production interaction: a query, the agent that answered it, the answer and its outcome.

    The fields come in the order of the original design's reference record, so code that builds it
    positionally or fills its extra fields runs unchanged; the stored ``interactions`` row keeps exactly the
    design's columns, and the extra fields go where they are used (see ``Args``).

    Args:
        interaction_id: unique id; for captured graph runs, the root run id. An id that holds PII is stored
            as its keyed hash; feedback given by the raw id is hashed alike.
        timestamp: unix time in seconds.
        session_id: conversation or thread id; stored as a keyed hash when the privacy config asks for it,
            or when it holds PII (see :func:`cl_plugin.privacy.safe_identifier`).
        user_query: the user's query.
        query_embedding: the query's embedding as computed by the application (any sequence of finite
            numbers). Stored compactly as float32 in ``interaction_embeddings``; clustering and selection use
            it instead of computing their own vectors (``Store.query_interactions(with_embeddings=True)``).
        agent_selected: the agent the router chose (``"billing"``, ``"search"``, ...).
        agent_confidence: the router's confidence in that choice, in [0, 1].
        routing_decision: the router's decision as a dict (``agent``/``chosen``, ``probabilities``,
            ``features``, anything else); stored as a ``decisions`` row of kind ``route``.
        retrieved_chunks: the retrieved passages (dicts with ``text``/``content``, ``id``, ``score``, ...,
            or plain strings); kept redacted and truncated in the metadata (``retrieved_chunks``) for
            retrieval evaluation.
        retrieval_scores: the retriever's scores of those passages; the best one is ``retrieval_quality``
            when that is not given and every score is in [0, 1].
        retrieval_quality: relevance of retrieved context, in [0, 1].
        response: the system's answer.
        response_metadata: anything about the response (model, finish reason, ...); kept redacted in the
            metadata (``response_metadata``).
        user_feedback_score: star rating (1 to 5 by default).
        user_feedback_text: the user's comment; stored as a feedback comment in the feedback history.
        user_corrections: the answer the user expected; stored as a correction in the feedback history (and
            so in the interaction's ``corrections``, which retraining turns into retrieval documents).
        thumbs_up_down: ``"up"`` or ``"down"``; ``"none"`` (the reference's default) means no thumbs.
        latency_ms: end-to-end latency in milliseconds.
        tokens_used: tokens summed over model calls.
        cost: cost in the user's currency unit.
        hallucination_detected: whether a hallucination was detected (``None``: not checked).
        retrieval_failed: whether retrieval failed (``None``: no retrieval happened).
        error_occurred: whether the run raised.
        error_message: what was raised; kept redacted in the metadata (``error_message``), where failure
            analysis groups errors by it.
        metadata: JSON-serializable extra data.
        run_id: the LangChain root run id (also the LangSmith run id).
        graph_name: the name of the graph that produced the interaction.
        user_id: the end user's id; stored as a keyed hash when the privacy config asks for it, or when it
            holds PII (an e-mail address or phone number as user id is never stored as given).
        corrections: user-provided corrections of the response.
    """

    interaction_id: str
    timestamp: float
    session_id: str
    user_query: str
    query_embedding: Sequence[float] | None = None
    agent_selected: str | None = None
    agent_confidence: float | None = None
    routing_decision: dict[str, Any] = field(default_factory=dict)
    retrieved_chunks: list[Any] = field(default_factory=list)
    retrieval_scores: list[float] = field(default_factory=list)
    retrieval_quality: float | None = None
    response: str = ""
    response_metadata: dict[str, Any] = field(default_factory=dict)
    user_feedback_score: float | None = None
    user_feedback_text: str | None = None
    user_corrections: str | None = None
    thumbs_up_down: Thumbs | None = None
    latency_ms: float | None = None
    tokens_used: int | None = None
    cost: float | None = None
    hallucination_detected: bool | None = None
    retrieval_failed: bool | None = None
    error_occurred: bool | None = None
    error_message: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    run_id: str | None = None
    graph_name: str | None = None
    user_id: str | None = None
    corrections: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Return a plain dict of every field (a deep copy of metadata and corrections)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ProductionInteraction:
        """Build an interaction from a dict such as a row of ``query_interactions``.

        Integer flags (``0``/``1``) become booleans and a JSON ``metadata`` string is parsed. Keys that are
        not fields of the record are ignored, so store rows with extra columns are accepted.
        """
        known = _FIELD_NAMES
        values = {k: v for k, v in data.items() if k in known}
        for flag in _FLAGS:
            if values.get(flag) is not None:
                values[flag] = bool(values[flag])
        for key in ("metadata", "corrections"):
            raw = values.get(key)
            if isinstance(raw, str | bytes):
                try:
                    values[key] = orjson.loads(raw) if raw else None
                except orjson.JSONDecodeError as exc:
                    raise InvalidRecordError(
                        f"{key} is text that is not JSON ({exc}); pass a {'dict' if key == 'metadata' else 'list'} "
                        "or its JSON text",
                        field=key,
                        interaction_id=str(values.get("interaction_id")),
                    ) from None
            if values.get(key) is None:
                values.pop(key, None)
        return cls(**values)


_FIELD_NAMES = frozenset(f.name for f in fields(ProductionInteraction))


@dataclass(kw_only=True, slots=True)
class FailurePattern:
    """A systematic failure mode found in production interactions.

    Attributes:
        pattern_type: ``"low_rating"``, ``"poor_retrieval"``, ``"routing_mistake"``, ``"hallucination"``,
            ``"slow_response"``, ``"node_errors"`` or ``"failure_cluster"``.
        description: one sentence on what was found, with its numbers.
        frequency: how many interactions show it.
        rate: ``frequency`` over the interactions where it could be observed (missing values excluded).
        severity: 0 (harmless) to 1 (every affected user badly served).
        example_ids: a few interaction ids showing it.
        affected_agents: agent -> interactions with the failure.
        affected_nodes: graph node -> interactions with the failure.
        suggested_fix: what to change, naming the concrete agent, node, query cluster or threshold.
        details: what the pattern's own analysis found (cluster terms and representative queries,
            thresholds, attribution rows).
    """

    pattern_type: str
    description: str
    frequency: int
    rate: float
    severity: float
    example_ids: list[str] = field(default_factory=list)
    affected_agents: dict[str, int] = field(default_factory=dict)
    affected_nodes: dict[str, int] = field(default_factory=dict)
    suggested_fix: str = ""
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(kw_only=True, slots=True)
class ActiveLearningCandidate:
    """An interaction worth a human's label.

    Attributes:
        interaction_id: the interaction.
        user_query: its query (already redacted in the store).
        agent_selected: the agent the router chose.
        priority: the selection score that ranked it (higher first).
        selection_reason: why it was picked, in words a reviewer understands.
        strategy: the strategy that picked it.
        uncertainty: the router's uncertainty on it, when known (0 to 1).
        diversity: its distance to what is already selected or labeled (0 to 1), when computed.
        failure_score: how badly it failed (0 to 1), when known.
    """

    interaction_id: str
    user_query: str
    agent_selected: str | None
    priority: float
    selection_reason: str
    strategy: str
    uncertainty: float | None = None
    diversity: float | None = None
    failure_score: float | None = None


def is_finite_number(value: object) -> bool:
    """True for ints and finite floats (bools excluded)."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    return isinstance(value, float) and math.isfinite(value)


def rating_outcome(
    score: object,
    thumbs: object,
    corrections: object = None,
    *,
    min_score: float = 4.0,
    max_score: float = 2.0,
) -> str | None:
    """``"good"``, ``"bad"``, or None when an interaction is unrated or its signals contradict each other.

    A score at or above ``min_score`` or a thumbs up is good; a score at or below ``max_score``, a thumbs
    down or a correction (the user said the answer was wrong) is bad.

    Example:
        >>> [rating_outcome(5, None), rating_outcome(None, "down"), rating_outcome(5, "down")]
        ['good', 'bad', None]
    """
    has_score = is_finite_number(score)
    corrected = bool(corrections) and corrections not in ("[]", "null")
    good = (has_score and score >= min_score) or thumbs == "up"  # type: ignore[operator]
    bad = (has_score and score <= max_score) or thumbs == "down" or corrected  # type: ignore[operator]
    if good == bad:
        return None
    return "good" if good else "bad"


def is_key(text: str) -> bool:
    """Whether a string can be a key as given: no NUL and no lone surrogates (repairing them could merge ids)."""
    if "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def embedding_vector(value: Any) -> np.ndarray:
    """A query embedding as a float32 vector.

    Raises:
        InvalidRecordError: it is not a flat sequence of 1 to 16,384 finite numbers within float32's range.
    """
    try:
        vector = np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError, OverflowError):
        vector = None
    if vector is None or vector.ndim != 1 or not 0 < vector.size <= MAX_EMBEDDING_DIM:
        shape = "-" if vector is None else vector.shape
        raise InvalidRecordError(
            f"query_embedding must be a flat list of 1 to {MAX_EMBEDDING_DIM} numbers (got "
            f"{type(value).__name__} of shape {shape})",
            field="query_embedding",
        )
    if not np.isfinite(vector).all():
        raise InvalidRecordError(
            "query_embedding must hold finite numbers within float32's range (got NaN or infinity, or a "
            "value beyond 3.4e38)",
            field="query_embedding",
        )
    return vector


def _embedding_problem(value: Any) -> str | None:
    if value is None:
        return None
    try:
        embedding_vector(value)
    except InvalidRecordError as exc:
        return str(exc).removeprefix("query_embedding ")
    return None


def _finite_scores(scores: Any) -> bool:
    return type(scores) is list and all(type(x) in (float, int) and -_BIG <= x <= _BIG for x in scores)


def _looks_like_ms(value: object) -> bool:
    return is_finite_number(value) and MAX_TIMESTAMP < value <= MAX_TIMESTAMP * 1000  # type: ignore[operator]


def _optional_number(v: object, low: float, high: float) -> bool:
    return v is None or (type(v) in (float, int) and low <= v <= high)  # NaN fails both comparisons


_BIG = sys.float_info.max  # an upper bound that rejects inf (and NaN, which fails every comparison)


def _quick_ok(item: ProductionInteraction, min_score: float, max_score: float) -> bool:
    """The common case in one expression; :func:`interaction_problems` explains when it is False."""
    big = _BIG
    return (
        type(item.interaction_id) is str
        and 0 < len(item.interaction_id) <= MAX_KEY_LENGTH
        and is_key(item.interaction_id)
        and type(item.timestamp) in (float, int)
        and 0 <= item.timestamp <= MAX_TIMESTAMP
        and type(item.session_id) is str
        and len(item.session_id) <= MAX_KEY_LENGTH
        and type(item.user_query) is str
        and type(item.response) is str
        and _optional_number(item.agent_confidence, 0, 1)
        and _optional_number(item.retrieval_quality, 0, 1)
        and _optional_number(item.latency_ms, 0, big)
        and _optional_number(item.cost, 0, big)
        and _optional_number(item.user_feedback_score, min_score, max_score)
        and (
            item.tokens_used is None or (type(item.tokens_used) is int and 0 <= item.tokens_used <= MAX_INT64)
        )
        and item.thumbs_up_down in (None, "up", "down", "none")
        and item.hallucination_detected in (None, True, False)
        and item.retrieval_failed in (None, True, False)
        and item.error_occurred in (None, True, False)
        and (
            item.agent_selected is None
            or (type(item.agent_selected) is str and len(item.agent_selected) <= MAX_KEY_LENGTH)
        )
        and (item.run_id is None or type(item.run_id) is str)
        and (item.graph_name is None or type(item.graph_name) is str)
        and (item.user_id is None or type(item.user_id) is str)
        and type(item.metadata) is dict
        and type(item.corrections) is list
        and all(type(c) is str for c in item.corrections)
        and type(item.routing_decision) is dict
        and type(item.response_metadata) is dict
        and type(item.retrieved_chunks) is list
        and (not item.retrieval_scores or _finite_scores(item.retrieval_scores))
        and (item.user_feedback_text is None or type(item.user_feedback_text) is str)
        and (item.user_corrections is None or type(item.user_corrections) is str)
        and (item.error_message is None or type(item.error_message) is str)
        and (item.query_embedding is None or _embedding_problem(item.query_embedding) is None)
    )


def interaction_problems(
    item: ProductionInteraction, *, min_score: float = 1.0, max_score: float = 5.0
) -> list[tuple[str, str]]:
    """Problems that make an interaction unstorable as given, as ``(field, message)`` pairs.

    These are hard errors (wrong types, NaN or infinite numbers, values out of range). Text that is too
    long, holds lone surrogates or PII is not a problem here: the writer repairs, truncates and redacts it.
    """
    if _quick_ok(item, min_score, max_score):
        return []
    problems: list[tuple[str, str]] = []

    def need(ok: bool, name: str, message: str) -> None:
        if not ok:
            problems.append((name, message))

    iid = item.interaction_id
    need(
        isinstance(iid, str) and 0 < len(iid) <= MAX_KEY_LENGTH and is_key(iid),
        "interaction_id",
        f"must be a non-empty string of at most {MAX_KEY_LENGTH} characters without NUL or lone surrogates "
        f"(got {type(iid).__name__} of length {len(iid) if isinstance(iid, str) else '-'})",
    )
    ts_ok = is_finite_number(item.timestamp) and 0 <= item.timestamp <= MAX_TIMESTAMP
    hint = (
        " (it looks like milliseconds: divide by 1000)"
        if ts_ok is False and _looks_like_ms(item.timestamp)
        else ""
    )
    need(
        ts_ok,
        "timestamp",
        f"must be a unix time in seconds between 0 and year 9999 (got {item.timestamp!r}){hint}",
    )
    for name in ("session_id", "user_query", "response"):
        need(
            isinstance(getattr(item, name), str),
            name,
            f"must be a string (got {type(getattr(item, name)).__name__})",
        )
    for name in ("session_id", "agent_selected"):
        v = getattr(item, name)
        need(
            not isinstance(v, str) or len(v) <= MAX_KEY_LENGTH,
            name,
            f"must be at most {MAX_KEY_LENGTH} characters, to fit an index key (got {len(v) if isinstance(v, str) else '-'})",
        )
    for name in ("agent_confidence", "retrieval_quality"):
        v = getattr(item, name)
        need(
            v is None or (is_finite_number(v) and 0 <= v <= 1),
            name,
            f"must be a number in [0, 1] or None (got {v!r})",
        )
    for name in ("latency_ms", "cost"):
        v = getattr(item, name)
        need(
            v is None or (is_finite_number(v) and v >= 0),
            name,
            f"must be a finite number >= 0 or None (got {v!r})",
        )
    v = item.tokens_used
    need(
        v is None or (isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= MAX_INT64),
        "tokens_used",
        f"must be an int from 0 to 2**63 - 1 or None (got {v!r})",
    )
    v = item.user_feedback_score
    need(
        v is None or (is_finite_number(v) and min_score <= v <= max_score),
        "user_feedback_score",
        f"must be a number in [{min_score}, {max_score}] or None (got {v!r})",
    )
    need(
        item.thumbs_up_down in (None, "up", "down", "none"),
        "thumbs_up_down",
        f"must be 'up', 'down', 'none' or None (got {item.thumbs_up_down!r})",
    )
    for name in _FLAGS:
        v = getattr(item, name)
        need(
            v is None or isinstance(v, bool) or v in (0, 1), name, f"must be True, False or None (got {v!r})"
        )
    for name in ("agent_selected", "run_id", "graph_name", "user_id"):
        v = getattr(item, name)
        need(v is None or isinstance(v, str), name, f"must be a string or None (got {type(v).__name__})")
    need(isinstance(item.metadata, dict), "metadata", f"must be a dict (got {type(item.metadata).__name__})")
    need(
        isinstance(item.corrections, list | tuple) and all(isinstance(c, str) for c in item.corrections),
        "corrections",
        "must be a list of strings",
    )
    for name in ("routing_decision", "response_metadata"):
        v = getattr(item, name)
        need(isinstance(v, dict), name, f"must be a dict (got {type(v).__name__})")
    need(
        isinstance(item.retrieved_chunks, list | tuple),
        "retrieved_chunks",
        f"must be a list of passages (dicts or strings) (got {type(item.retrieved_chunks).__name__})",
    )
    need(
        isinstance(item.retrieval_scores, list | tuple)
        and all(is_finite_number(x) and -_BIG <= x <= _BIG for x in item.retrieval_scores),
        "retrieval_scores",
        "must be a list of finite numbers",
    )
    for name in ("user_feedback_text", "user_corrections", "error_message"):
        v = getattr(item, name)
        need(v is None or isinstance(v, str), name, f"must be a string or None (got {type(v).__name__})")
    problem = _embedding_problem(item.query_embedding)
    need(problem is None, "query_embedding", problem or "")
    return problems


_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


@dataclass(frozen=True)
class PointRef:
    """The name of one decision point: ``(graph_name, node, kind)``.

    Args:
        graph_name: the graph, as capture records it (the root run's name: ``LangGraph`` unless the graph
            was compiled with ``name=`` or the handler was given ``graph_name=``).
        node: the node that decides (for a conditional edge, the node the edge leaves).
        kind: the decision kind (``"route"`` for conditional edges and routing).

    Example:
        >>> PointRef.parse("support/triage").model_names()
        {'router': 'support.triage.route', 'replay': 'support.triage.route-replay'}
    """

    graph_name: str | None
    node: str | None
    kind: str = "route"

    @classmethod
    def parse(cls, spec: str | Sequence[Any] | PointRef | Any) -> PointRef:
        """A point from ``"graph/node/kind"``, ``"graph/node"`` (kind ``route``), a 2- or 3-tuple, or a
        :class:`~cl_plugin.store.points.DecisionPoint` (anything with ``key`` and ``options``).

        Raises:
            ValueError: the spec is none of these; the message shows the forms it takes.
        """
        if isinstance(spec, PointRef):
            return spec
        if hasattr(spec, "key") and hasattr(spec, "options"):
            return cls(*spec.key)
        parts: Sequence[Any]
        if isinstance(spec, str):
            parts = spec.split("/")
        elif isinstance(spec, Sequence):
            parts = spec
        else:
            parts = ()
        if len(parts) not in (2, 3) or not all(isinstance(p, str) and p for p in parts[1:]):
            raise ValueError(
                f"a decision point is 'graph/node/kind' or 'graph/node' (kind 'route'), e.g. "
                f"'support/triage/route'; got {spec!r}. `cl-plugin stats` lists the store's points"
            )
        graph = parts[0] or None
        return cls(graph, parts[1], parts[2] if len(parts) == 3 else "route")

    def __str__(self) -> str:
        return f"{self.graph_name or ''}/{self.node or ''}/{self.kind}"

    @property
    def key(self) -> tuple[str | None, str | None, str]:
        return (self.graph_name, self.node, self.kind)

    @property
    def model_name(self) -> str:
        """The registry name of the point's router: ``graph.node.kind`` with unsafe characters as ``-``."""
        parts = [p for p in (self.graph_name, self.node, self.kind) if p]
        name = ".".join(_UNSAFE.sub("-", p) for p in parts).strip(".-")
        return name[:120] or "point"

    def model_names(self) -> dict[str, str]:
        """Registry names of the point's model set: the router and its replay sample."""
        return {"router": self.model_name, "replay": f"{self.model_name}-replay"}


@dataclass(frozen=True, slots=True)
class Attachment:
    """A file given with a feedback: a code snippet, an image or a text file.

    Nothing of it is trusted: an image's type is read from its bytes (PNG, JPEG or WebP) and it is re-encoded
    without any metadata; code and text must be UTF-8 and are redacted like every other text.

    Args:
        kind: ``"code"``, ``"image"`` or ``"text"``.
        content: the bytes (or, for code and text, a string).
        filename: the file's name, if it had one (only its last path part is kept, redacted).
        language: the programming language of a code snippet (``"python"``), for display.
    """

    kind: AttachmentKind
    content: bytes | str
    filename: str | None = None
    language: str | None = None

    @classmethod
    def coerce(cls, value: Any, index: int) -> Attachment:
        """An :class:`Attachment` from itself or an equivalent dict (``content`` or ``content_base64``).

        Args:
            value: the attachment as given.
            index: its position in the feedback's ``attachments``, for error messages.

        Raises:
            InvalidRecordError: a field is missing or of the wrong type (the error names it, e.g.
                ``attachments[0].kind``).
        """
        where = f"attachments[{index}]"
        if isinstance(value, dict):
            unknown = set(value) - {"kind", "content", "content_base64", "filename", "language"}
            if unknown:
                raise InvalidRecordError(
                    f"{where} has unknown keys {sorted(unknown)}; an attachment has kind, content (or "
                    "content_base64), filename and language",
                    field=f"{where}.{sorted(unknown)[0]}",
                )
            content = value.get("content")
            if "content_base64" in value:
                if content is not None:
                    raise InvalidRecordError(
                        f"{where} has both content and content_base64; give one", field=f"{where}.content"
                    )
                content = _base64(value["content_base64"], f"{where}.content_base64")
            value = cls(
                kind=value.get("kind"),  # type: ignore[arg-type]
                content=content,  # type: ignore[arg-type]
                filename=value.get("filename"),
                language=value.get("language"),
            )
        if not isinstance(value, cls):
            raise InvalidRecordError(
                f"{where} must be a cl_plugin.records.Attachment or a dict with kind and content "
                f"(got {type(value).__name__})",
                field=where,
            )
        if value.kind not in ATTACHMENT_KINDS:
            raise InvalidRecordError(
                f"{where}.kind must be one of {', '.join(ATTACHMENT_KINDS)} (got {value.kind!r})",
                field=f"{where}.kind",
            )
        if not isinstance(value.content, bytes | bytearray | memoryview | str) or not value.content:
            raise InvalidRecordError(
                f"{where}.content must be non-empty bytes (or a string for code and text), got "
                f"{'empty ' if isinstance(value.content, bytes | str) else ''}{type(value.content).__name__}",
                field=f"{where}.content",
            )
        if isinstance(value.content, str) and value.kind == "image":
            raise InvalidRecordError(
                f"{where}.content of an image must be bytes (or content_base64 in a dict), not a string",
                field=f"{where}.content",
            )
        for name in ("filename", "language"):
            text = getattr(value, name)
            if text is not None and (not isinstance(text, str) or not 0 < len(text) <= _NAME_CHARS):
                raise InvalidRecordError(
                    f"{where}.{name} must be a string of 1 to {_NAME_CHARS} characters or None (got "
                    f"{type(text).__name__}{f' of length {len(text)}' if isinstance(text, str) else ''})",
                    field=f"{where}.{name}",
                )
        if value.language is not None and not _LANGUAGE.fullmatch(value.language):
            raise InvalidRecordError(
                f"{where}.language must be a language name such as 'python' or 'c++' (letters, digits and "
                f"+#._- only, got {value.language!r})",
                field=f"{where}.language",
            )
        return value


_NAME_CHARS = 255
_LANGUAGE = re.compile(r"[A-Za-z0-9_+#.\-]{1,32}")


def _base64(text: Any, name: str) -> bytes:
    """Decode standard base64 strictly, with an error naming the field."""
    if not isinstance(text, str):
        raise InvalidRecordError(f"{name} must be a base64 string (got {type(text).__name__})", field=name)
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRecordError(
            f"{name} is not valid base64; encode the file's bytes with standard base64 (RFC 4648)", field=name
        ) from None
