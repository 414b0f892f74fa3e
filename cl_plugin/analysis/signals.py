"""What one interaction shows: its outcome failures and diagnostics, as bits of a mask.

See :mod:`cl_plugin.analysis.failures` for what each signal means; :func:`failure_signals` names them.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson

from cl_plugin.outcomes import LOW_CONFIDENCE, POOR_RETRIEVAL_QUALITY, corrected
from cl_plugin.outcomes import as_number as _number
from cl_plugin.privacy import default_redactor
from cl_plugin.records import ProductionInteraction

if TYPE_CHECKING:
    pass


__all__ = [
    "DIAGNOSTIC_SIGNALS",
    "LOW_CONFIDENCE",
    "OUTCOME_SIGNALS",
    "POOR_RETRIEVAL_QUALITY",
    "SIGNALS",
    "UBIQUITOUS",
    "failure_signals",
]


#: Outcome signals, in bit order: an interaction showing one of them failed.
OUTCOME_SIGNALS = ("low_rating", "error", "hallucination", "correction")
#: Diagnostic signals, in bit order: facts about a run that may explain a failure.
DIAGNOSTIC_SIGNALS = ("poor_retrieval", "slow", "low_confidence")
#: Every signal the analyzer tracks, outcomes first.
SIGNALS = OUTCOME_SIGNALS + DIAGNOSTIC_SIGNALS
_ALPHA = 0.05
_LOW, _ERROR, _HALLU, _CORR, _RETR, _SLOW, _UNSURE = 1, 2, 4, 8, 16, 32, 64
_OUTCOME = _LOW | _ERROR | _HALLU | _CORR
_ROUTING = 128
#: A diagnostic seen on at least this share of the interactions that could show it cannot tell them apart.
UBIQUITOUS = 0.9
_MIN_GROUP = 5
_BEST_KEYS = ("best_agent", "correct_agent", "expected_agent")
_EXAMPLES = 5
_NO_NODE = "(unknown node)"
_WORDS = {
    "low_rating": "low ratings",
    "error": "errors",
    "hallucination": "hallucinations",
    "correction": "corrections",
    "poor_retrieval": "poor retrieval",
    "slow": "slow responses",
    "low_confidence": "an unsure router",
}
_RETRIEVAL_BINS = ((0.3, "<0.3"), (0.5, "0.3-0.5"), (0.7, "0.5-0.7"), (0.9, "0.7-0.9"), (math.inf, ">=0.9"))
_LATENCY_BINS = ((1000, "<1s"), (2000, "1-2s"), (5000, "2-5s"), (10000, "5-10s"), (math.inf, ">=10s"))
_CONFIDENCE_BINS = ((0.5, "<0.5"), (0.7, "0.5-0.7"), (0.9, "0.7-0.9"), (math.inf, ">=0.9"))


def failure_signals(
    item: Mapping[str, Any] | ProductionInteraction,
    *,
    low_rating_threshold: float = 3.0,
    slow_response_ms: float = 5000.0,
    diagnostics: bool = False,
) -> tuple[str, ...]:
    """The outcome failures an interaction shows (empty: it did not fail). See the module docstring.

    Args:
        item: an interaction dict (as from ``query_interactions``) or record.
        low_rating_threshold: stars below this are a low rating.
        slow_response_ms: latency above this is slow.
        diagnostics: also name the diagnostic signals it shows (which are not failures).

    Returns:
        The names of the signals, in :data:`SIGNALS` order.

    Example:
        >>> failure_signals({"user_feedback_score": 2.0, "latency_ms": 6000.0, "retrieval_quality": None})
        ('low_rating',)
        >>> failure_signals({"user_feedback_score": 2.0, "latency_ms": 6000.0}, diagnostics=True)
        ('low_rating', 'slow')
    """
    row = _Row(item)
    mask = _signals(row, low_rating_threshold, slow_response_ms)[0]
    if not diagnostics:
        mask &= _OUTCOME
    return tuple(name for bit, name in enumerate(SIGNALS) if mask >> bit & 1)


class _Row:
    """Uniform read access to a dict row or a record; missing keys read as None."""

    __slots__ = ("get", "meta")

    def __init__(self, item: Any) -> None:
        if isinstance(item, Mapping):
            self.get = item.get
        elif isinstance(item, ProductionInteraction):
            self.get = lambda key, default=None: getattr(item, key, default)
        else:
            raise TypeError(
                f"interactions must be dicts (as from query_interactions) or ProductionInteraction records, "
                f"got {type(item).__name__} (analyze_stream takes chunks: lists of interactions)"
            )
        meta = self.get("metadata")
        if isinstance(meta, str | bytes):
            try:
                meta = orjson.loads(meta) if meta else None
            except orjson.JSONDecodeError:
                meta = None
        self.meta: Mapping[str, Any] = meta if isinstance(meta, Mapping) else {}


_ERROR_CLASS = re.compile(r"\b([A-Z][A-Za-z0-9_]*(?:Error|Exception|Timeout|Exceeded|Refused))\b")
_VARYING = re.compile(r"0x[0-9a-fA-F]+|\d+(?:\.\d+)?|'[^']*'|\"[^\"]*\"")


def _error_kind(message: Any) -> str | None:
    """What kind of error a (redacted) error message reports, so that messages of one cause count together.

    The exception class it names (``TimeoutError: read timed out after 30s`` -> ``TimeoutError``), else its
    first words with numbers and quoted values masked (``rate limit hit, retry in 20 s`` ->
    ``rate limit hit, retry in # s``).
    """
    if not isinstance(message, str) or not message.strip():
        return None
    named = _ERROR_CLASS.search(message)
    if named:
        return named.group(1)
    # Records given straight to the analyzer were never sanitized: the kind is redacted before it is shown.
    words = default_redactor().safe_redact(" ".join(message.split()[:12]))
    return _VARYING.sub("#", words)[:60]


def _vector(value: Any) -> np.ndarray | None:
    """A logged query embedding as a float32 vector, or None when there is none or it is unusable."""
    if value is None:
        return None
    try:
        vector = np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError, OverflowError):
        return None
    return vector if vector.ndim == 1 and vector.size and np.isfinite(vector).all() else None


def _stack(vectors: list[np.ndarray | None]) -> np.ndarray | None:
    """The vectors as one matrix, or None unless every one is there and all have one size."""
    if not vectors or any(v is None for v in vectors) or len({v.size for v in vectors}) != 1:  # type: ignore[union-attr]
        return None
    return np.stack(vectors)  # type: ignore[arg-type]


def _signals(row: _Row, low_threshold: float, slow_ms: float) -> tuple[int, int, float, tuple[float, ...]]:
    """(signal bits, observable bits, severity 0-1 of the worst outcome, severities of the diagnostics)."""
    get = row.get
    mask = seen = 0
    severity = 0.0
    score = _number(get("user_feedback_score"))
    thumbs = get("thumbs_up_down")
    if score is not None or thumbs is not None:
        seen |= _LOW
        sev = (low_threshold - score) / max(low_threshold - 1.0, 1.0) if score is not None else 0.0
        if thumbs == "down":
            sev = max(sev, 0.6)
        if (score is not None and score < low_threshold) or thumbs == "down":
            mask |= _LOW
            severity = max(severity, min(1.0, max(sev, 0.25)))
    error = get("error_occurred")
    if error is not None or "failed_node" in row.meta:
        seen |= _ERROR
        if error or row.meta.get("failed_node"):
            mask |= _ERROR
            severity = 1.0
    hallucination = get("hallucination_detected")
    if hallucination is not None:
        seen |= _HALLU
        if hallucination:
            mask |= _HALLU
            severity = max(severity, 0.9)
    seen |= _CORR
    if corrected(get("corrections")):
        mask |= _CORR
        severity = max(severity, 0.8)
    retrieval = slow = unsure = 0.0
    quality = _number(get("retrieval_quality"))
    failed = get("retrieval_failed")
    if quality is not None or failed is not None:
        seen |= _RETR
        retrieval = 0.8 if failed else 0.0
        if quality is not None and quality < POOR_RETRIEVAL_QUALITY:
            retrieval = max(retrieval, 0.5 + 0.5 * (1.0 - quality / POOR_RETRIEVAL_QUALITY))
        if retrieval:
            mask |= _RETR
    latency = _number(get("latency_ms"))
    if latency is not None:
        seen |= _SLOW
        if latency > slow_ms:
            mask |= _SLOW
            slow = min(1.0, 0.3 + 0.7 * (latency - slow_ms) / (3.0 * slow_ms))
    confidence = _number(get("agent_confidence"))
    if confidence is not None:
        seen |= _UNSURE
        if confidence < LOW_CONFIDENCE:
            mask |= _UNSURE
            unsure = 0.3 + 0.4 * (1.0 - max(confidence, 0.0) / LOW_CONFIDENCE)
    return mask, seen, severity, (retrieval, slow, unsure)


def _bucket(value: float | None, bins: tuple[tuple[float, str], ...]) -> str | None:
    if value is None:
        return None
    for upper, name in bins:
        if value < upper:
            return name
    return bins[-1][1]
