"""What counts as a failure: outcomes, apart from the diagnostics that may explain them.

An **outcome** says that an answer failed the person or the run:

- ``low_rating``: stars below the low-rating threshold (default 3);
- ``thumbs_down``;
- ``correction``: the user typed the right answer (the answer was wrong);
- ``error``: the run raised (``error_occurred``, or a ``failed_node`` in its metadata);
- ``hallucination``: a checker flagged the answer (``hallucination_detected``).

A **diagnostic** is a fact about how the run went. It may explain an outcome, and it is not one itself:

- ``poor_retrieval``: ``retrieval_failed``, or ``retrieval_quality`` below :data:`POOR_RETRIEVAL_QUALITY`;
- ``slow``: ``latency_ms`` above the slow threshold (default 5000);
- ``low_confidence``: the router chose with ``agent_confidence`` below :data:`LOW_CONFIDENCE`.

A system whose retriever scores 0.2 on arithmetic questions it answers right has not failed; a headline
that counts it would bury the answers that did fail. So the failure rate, the A/B test's default metric and
the selection's ``failure`` strategy read outcomes only, and the diagnostics are reported beside them as
candidate causes: how much more often a failed answer shows one than a good answer does
(:class:`~cl_plugin.analysis.FailurePatternAnalyzer`).

**The failure rate.** Errors are observed on every run, hallucination checks where a checker ran, and a
user's verdict (stars or thumbs) on the answers someone rated. :class:`OutcomeRate` chains them, each
estimated where it can be seen::

    rate = P(error) + P(no error) * P(hallucination | no error)
           + P(neither) * P(bad verdict | neither, a verdict was given)

A bad verdict is a low rating, a thumbs down, or a rating or thumb on an answer the user also corrected.
Unrated answers are assumed to fail like the rated ones (missing at random among the runs that neither
raised nor were flagged). Without any verdict the rate holds only what machines saw, and says it is a
lower bound. A correction on an unrated answer counts among the failures but not in the rate: it is only
ever given to a wrong answer, so counting it would bias the rate up.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

__all__ = [
    "DIAGNOSTICS",
    "LOW_CONFIDENCE",
    "OUTCOMES",
    "POOR_RETRIEVAL_QUALITY",
    "OutcomeCounter",
    "OutcomeRate",
    "corrected",
    "diagnostic_signals",
    "outcome_failures",
    "outcome_value",
]

#: Outcome failures, the signals that an answer failed.
OUTCOMES = ("low_rating", "thumbs_down", "correction", "error", "hallucination")
#: Diagnostic signals: facts about a run that may explain an outcome.
DIAGNOSTICS = ("poor_retrieval", "slow", "low_confidence")
#: Retrieval quality below this is poor.
POOR_RETRIEVAL_QUALITY = 0.3
#: Router confidence below this is low.
LOW_CONFIDENCE = 0.5


def corrected(value: Any) -> bool:
    """Whether an interaction's ``corrections`` (a list, its JSON text, or None) holds a correction."""
    if value is None:
        return False
    if isinstance(value, str | bytes):
        if not value or value in ("[]", "null", b"[]", b"null"):
            return False
        try:
            value = orjson.loads(value)
        except orjson.JSONDecodeError:
            return bool(value.strip())
    return bool(value)


def _get(item: Any) -> Any:
    if isinstance(item, Mapping):
        return item.get
    return lambda key, default=None: getattr(item, key, default)


def as_number(value: Any) -> float | None:
    """A stored number as a float; None for a missing, NaN, boolean or non-numeric value."""
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
        return None
    return float(value)


def _failed_node(get: Any) -> bool:
    meta = get("metadata")
    if isinstance(meta, str | bytes) and meta:
        try:
            meta = orjson.loads(meta)
        except orjson.JSONDecodeError:
            return False
    return isinstance(meta, Mapping) and bool(meta.get("failed_node"))


def outcome_failures(item: Any, *, low_rating_threshold: float = 3.0) -> tuple[str, ...]:
    """The outcome failures of one interaction (a store dict or a record), in :data:`OUTCOMES` order.

    Example:
        >>> outcome_failures({"user_feedback_score": 2.0, "latency_ms": 9000.0, "retrieval_quality": 0.1})
        ('low_rating',)
    """
    get = _get(item)
    score = as_number(get("user_feedback_score"))
    found = (
        score is not None and score < low_rating_threshold,
        get("thumbs_up_down") == "down",
        corrected(get("corrections")),
        bool(get("error_occurred")) or _failed_node(get),
        bool(get("hallucination_detected")),
    )
    return tuple(name for name, hit in zip(OUTCOMES, found, strict=True) if hit)


def diagnostic_signals(
    item: Any,
    *,
    slow_response_ms: float = 5000.0,
    poor_retrieval_quality: float = POOR_RETRIEVAL_QUALITY,
    low_confidence: float = LOW_CONFIDENCE,
) -> tuple[str, ...]:
    """The diagnostic signals of one interaction, in :data:`DIAGNOSTICS` order.

    Example:
        >>> diagnostic_signals({"retrieval_quality": 0.1, "latency_ms": 900.0, "agent_confidence": 0.4})
        ('poor_retrieval', 'low_confidence')
    """
    get = _get(item)
    quality, latency = as_number(get("retrieval_quality")), as_number(get("latency_ms"))
    confidence = as_number(get("agent_confidence"))
    found = (
        bool(get("retrieval_failed")) or (quality is not None and quality < poor_retrieval_quality),
        latency is not None and latency > slow_response_ms,
        confidence is not None and confidence < low_confidence,
    )
    return tuple(name for name, hit in zip(DIAGNOSTICS, found, strict=True) if hit)


def outcome_value(item: Any, *, low_rating_threshold: float = 3.0) -> float | None:
    """An interaction's outcome as a success metric: the A/B test's default.

    0.0 when it shows an outcome failure (an error, a hallucination, a low rating, a thumbs down or a
    correction), 1.0 when a user rated it (stars or thumbs) and nothing failed, None when nobody judged it.
    Diagnostics (slow, poor retrieval, an unsure router) do not count: a slow right answer is a success.

    Example:
        >>> [outcome_value({"user_feedback_score": 5.0}), outcome_value({"error_occurred": True}),
        ...  outcome_value({"latency_ms": 9000.0})]
        [1.0, 0.0, None]
    """
    if outcome_failures(item, low_rating_threshold=low_rating_threshold):
        return 0.0
    get = _get(item)
    if as_number(get("user_feedback_score")) is not None or get("thumbs_up_down") in ("up", "down"):
        return 1.0
    return None


@dataclass(frozen=True, slots=True)
class OutcomeRate:
    """The estimated share of interactions whose outcome failed (see the module docstring).

    Attributes:
        rate: the estimate; None when no outcome could be seen at all.
        failures: interactions with at least one observed outcome failure.
        interactions: interactions looked at.
        errors: runs that raised, of ``error_known`` whose error flag is known.
        hallucinations: answers flagged, of ``hallucination_checked`` checked runs that did not raise.
        bad_verdicts: bad user verdicts, of ``verdicts`` rated runs that neither raised nor were flagged.
        lower_bound: no user verdict was available, so ``rate`` counts only what machines saw.
    """

    rate: float | None
    failures: int
    interactions: int
    errors: int
    error_known: int
    hallucinations: int
    hallucination_checked: int
    bad_verdicts: int
    verdicts: int
    lower_bound: bool

    @classmethod
    def estimate(
        cls,
        *,
        interactions: int,
        failures: int,
        errors: int = 0,
        error_known: int = 0,
        hallucinations: int = 0,
        hallucination_checked: int = 0,
        bad_verdicts: int = 0,
        verdicts: int = 0,
    ) -> OutcomeRate:
        """Chain the stages' rates into one estimate (counts as in the attributes)."""
        rate, alive = None, 1.0
        for k, n in (
            (errors, error_known),
            (hallucinations, hallucination_checked),
            (bad_verdicts, verdicts),
        ):
            if n:
                rate = (rate or 0.0) + alive * k / n
                alive *= 1.0 - k / n
        return cls(
            rate,
            int(failures),
            int(interactions),
            int(errors),
            int(error_known),
            int(hallucinations),
            int(hallucination_checked),
            int(bad_verdicts),
            int(verdicts),
            lower_bound=not verdicts,
        )

    def describe(self) -> str:
        """What the estimate rests on, in one line (for reports and the CLI)."""
        if self.rate is None:
            return "no outcome observed: no ratings, thumbs, error flags or hallucination checks"
        parts = []
        if self.verdicts:
            parts.append(f"{self.bad_verdicts:,} bad of {self.verdicts:,} rated")
        if self.error_known:
            parts.append(f"{self.errors:,} errors of {self.error_known:,} runs")
        if self.hallucination_checked:
            parts.append(f"{self.hallucinations:,} flagged of {self.hallucination_checked:,} checked")
        text = "; ".join(parts)
        if self.lower_bound:
            text += " (no user ratings: a lower bound)"
        return text


class OutcomeCounter:
    """Counts the stages of :class:`OutcomeRate` over rows, one :meth:`add` per interaction."""

    __slots__ = (
        "bad_verdicts",
        "error_known",
        "errors",
        "failures",
        "hallucination_checked",
        "hallucinations",
        "interactions",
        "low",
        "verdicts",
    )

    def __init__(self, low_rating_threshold: float = 3.0) -> None:
        self.low = low_rating_threshold
        self.interactions = self.failures = self.errors = self.error_known = 0
        self.hallucinations = self.hallucination_checked = self.bad_verdicts = self.verdicts = 0

    def add(
        self,
        score: float | None,
        thumbs: Any,
        correction: bool,
        error: bool | None,
        hallucination: bool | None,
    ) -> bool:
        """Count one interaction; returns whether it shows an outcome failure.

        ``error`` and ``hallucination`` are None when not known; ``score`` None when unrated.
        """
        self.interactions += 1
        low = score is not None and score < self.low
        down = thumbs == "down"
        failed = bool(error or hallucination or low or down or correction)
        self.failures += failed
        if error is not None:
            self.error_known += 1
            self.errors += bool(error)
        if error:
            return failed
        if hallucination is not None:
            self.hallucination_checked += 1
            self.hallucinations += bool(hallucination)
        if hallucination:
            return failed
        if score is not None or thumbs in ("up", "down"):
            self.verdicts += 1
            self.bad_verdicts += low or down or correction
        return failed

    def result(self) -> OutcomeRate:
        """The estimate over everything added so far."""
        return OutcomeRate.estimate(
            interactions=self.interactions,
            failures=self.failures,
            errors=self.errors,
            error_known=self.error_known,
            hallucinations=self.hallucinations,
            hallucination_checked=self.hallucination_checked,
            bad_verdicts=self.bad_verdicts,
            verdicts=self.verdicts,
        )
