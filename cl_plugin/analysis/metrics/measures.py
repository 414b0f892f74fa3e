"""Quality metrics on arrays and records, with no I/O (see :mod:`cl_plugin.analysis.metrics`).

Example:
    >>> s = satisfaction([5.0, 4.0, None, 2.0], ["up", None, None, "down"])
    >>> s.rated, s.mean_score, s.thumbs_up_rate
    (3, 3.6666666666666665, 0.5)
"""

from __future__ import annotations

import math
from collections.abc import Collection, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from statistics import NormalDist
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
from numpy.typing import ArrayLike

from cl_plugin import outcomes
from cl_plugin.capture.sampling import DetailSample
from cl_plugin.outcomes import OutcomeRate

if TYPE_CHECKING:
    from cl_plugin.records import ProductionInteraction

__all__ = [
    "Calibration",
    "CalibrationBin",
    "FailureRates",
    "Latency",
    "MetricOptions",
    "Rate",
    "RetrievalMetrics",
    "RouterAccuracy",
    "RouterMetrics",
    "Satisfaction",
    "brier_score",
    "expected_calibration_error",
    "failure_rates",
    "interaction_metrics",
    "latency_summary",
    "log_loss",
    "metrics_by_window",
    "ndcg_at_k",
    "precision_at_k",
    "recall_at_k",
    "retrieval_metrics",
    "router_accuracy",
    "satisfaction",
]

Window = Literal["hour", "day", "week"] | float
Interactions = Iterable["Mapping[str, Any] | ProductionInteraction"]
Relevance = Mapping[Hashable, float] | Collection[Hashable]

_WIDTHS = {"hour": 3600.0, "day": 86400.0, "week": 604800.0}
# 1970-01-01 was a Thursday: shifting timestamps by three days makes week buckets start on Monday (UTC).
_WEEK_SHIFT = 3 * 86400.0
_QUANTILES = (0.5, 0.95, 0.99)
_EPS = float(np.finfo(float).eps)  # log-loss clipping, as scikit-learn does


# -- results ----------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Rate:
    """``count`` of ``n`` observations where the outcome is known; ``rate`` is None when ``n`` is 0."""

    count: int
    n: int
    rate: float | None

    @classmethod
    def of(cls, count: int, n: int) -> Rate:
        return cls(int(count), int(n), count / n if n else None)


@dataclass(frozen=True, slots=True)
class Satisfaction:
    """Star ratings and thumbs.

    Attributes:
        interactions: interactions looked at.
        rated: those with a star rating; ``share_rated`` is ``rated / interactions``.
        mean_score: mean stars, with ``mean_score_ci`` its Student-t interval (None below two ratings).
        thumbs_up: thumbs up; ``thumbs_down`` likewise; ``thumbs_up_rate`` is over both, with its Wilson
            interval ``thumbs_up_ci``.
    """

    interactions: int
    rated: int
    share_rated: float | None
    mean_score: float | None
    mean_score_ci: tuple[float, float] | None
    thumbs_up: int
    thumbs_down: int
    thumbs_up_rate: float | None
    thumbs_up_ci: tuple[float, float] | None


@dataclass(frozen=True, slots=True)
class Latency:
    """Latency over the ``n`` interactions that have one (linear-interpolated percentiles, as numpy's)."""

    n: int
    mean_ms: float | None
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    max_ms: float | None


@dataclass(frozen=True, slots=True)
class FailureRates:
    """How often answers failed (outcomes), and how often runs showed what may explain it (diagnostics).

    **Outcomes** (:data:`OUTCOMES`, as :data:`cl_plugin.outcomes.OUTCOMES`) say an answer failed; ``outcome``
    chains them into one estimated failure rate (:class:`~cl_plugin.outcomes.OutcomeRate`), the figure to
    read first. **Diagnostics** (:data:`DIAGNOSTICS`, as :data:`cl_plugin.outcomes.DIAGNOSTICS`) are facts
    about a run (poor retrieval, slow, an unsure router) that may explain a failure but are not failures:
    they never enter ``outcome``. Each :class:`Rate` is over the interactions where it can be observed.

    An error is ``error_occurred`` only, here and in the store's SQL (:func:`~cl_plugin.analysis.metrics.store_metrics`),
    so both paths agree; a ``failed_node`` in the metadata without ``error_occurred`` is not counted (the
    failure analysis, which reads the metadata, counts it).

    Attributes:
        outcome: the estimated share of failed answers, each stage over the rows where it is observable.
        low_rating: star ratings below the low-rating threshold, over the rated.
        thumbs_down: thumbs down, over the thumbed.
        correction: corrected interactions, over all interactions.
        error: runs that raised, over the runs whose error flag is known.
        hallucination: answers flagged, over the checked (all checked runs, whether they raised or not).
        poor_retrieval: ``retrieval_failed`` or quality below the threshold, over runs that retrieved.
        slow: latencies above the slow threshold, over the timed.
        low_confidence: router confidence below the threshold, over the runs with a confidence.
    """

    #: The outcome fields, in :data:`cl_plugin.outcomes.OUTCOMES` order: the answer failed.
    OUTCOMES: ClassVar[tuple[str, ...]] = outcomes.OUTCOMES
    #: The diagnostic fields, in :data:`cl_plugin.outcomes.DIAGNOSTICS` order: may explain a failure.
    DIAGNOSTICS: ClassVar[tuple[str, ...]] = outcomes.DIAGNOSTICS

    outcome: OutcomeRate
    low_rating: Rate
    thumbs_down: Rate
    correction: Rate
    error: Rate
    hallucination: Rate
    poor_retrieval: Rate
    slow: Rate
    low_confidence: Rate

    def outcome_rates(self) -> dict[str, Rate]:
        """The outcome rates by name, in :data:`OUTCOMES` order."""
        return {name: getattr(self, name) for name in self.OUTCOMES}

    def diagnostic_rates(self) -> dict[str, Rate]:
        """The diagnostic rates by name, in :data:`DIAGNOSTICS` order."""
        return {name: getattr(self, name) for name in self.DIAGNOSTICS}


@dataclass(frozen=True, slots=True)
class RouterAccuracy:
    """Predictions that matched the label; ``per_label`` holds each true label's recall."""

    n: int
    correct: int
    accuracy: float | None
    per_label: dict[str, Rate]


@dataclass(frozen=True, slots=True)
class CalibrationBin:
    """One equal-width confidence bin ``[lower, upper)`` (the last one includes 1)."""

    lower: float
    upper: float
    count: int
    mean_confidence: float | None
    accuracy: float | None


@dataclass(frozen=True, slots=True)
class Calibration:
    """Expected calibration error over ``n`` predictions, with its bins (empty bins included)."""

    n: int
    ece: float | None
    bins: tuple[CalibrationBin, ...]


@dataclass(frozen=True, slots=True)
class RouterMetrics:
    """Router quality against labels.

    Attributes:
        accuracy: the top-probability agent (or the chosen one, for decisions without probabilities)
            against the label.
        calibration: expected calibration error of the top probability.
        probabilistic: decisions that carried probabilities; ``brier`` and ``log_loss`` are over them.
        sample: the labeled interactions, and how many of them the figures use: with capture sampling, only
            those whose decisions are in the unbiased sample (see :mod:`cl_plugin.capture.sampling`).
    """

    accuracy: RouterAccuracy
    calibration: Calibration
    probabilistic: int
    brier: float | None
    log_loss: float | None
    sample: DetailSample | None = None


@dataclass(frozen=True, slots=True)
class RetrievalMetrics:
    """Mean precision@k over ``queries``; mean recall@k and nDCG@k over the ``judged`` queries (those with a
    relevant document: without one, both are undefined)."""

    k: int
    queries: int
    judged: int
    precision: float | None
    recall: float | None
    ndcg: float | None


@dataclass(frozen=True, slots=True)
class MetricOptions:
    """Thresholds and settings shared by the interaction metrics.

    Attributes:
        low_rating_threshold: star ratings below it are low (the spec: below 3 stars).
        slow_response_ms: latencies above it are slow (the spec: over 5 s).
        poor_retrieval_quality: retrieval quality below it is poor (so is ``retrieval_failed``).
        low_confidence: router confidence (``agent_confidence``) below it is low.
        label_key: the ``metadata`` key holding the right agent.
        n_bins: equal-width bins of the calibration error.
        confidence: level of the confidence intervals.
    """

    low_rating_threshold: float = 3.0
    slow_response_ms: float = 5000.0
    poor_retrieval_quality: float = outcomes.POOR_RETRIEVAL_QUALITY
    low_confidence: float = outcomes.LOW_CONFIDENCE
    label_key: str = "best_agent"
    n_bins: int = 10
    confidence: float = 0.95

    def __post_init__(self) -> None:
        if not isinstance(self.n_bins, int) or self.n_bins < 1:
            raise ValueError(f"n_bins must be an int >= 1 (got {self.n_bins!r})")
        if not 0 < self.confidence < 1:
            raise ValueError(f"confidence must be in (0, 1) (got {self.confidence!r})")
        if not self.label_key or '"' in self.label_key:
            raise ValueError(f"label_key must be a non-empty string without '\"' (got {self.label_key!r})")


# -- satisfaction, latency, intervals ----------------------------------------------------------------------


def _floats(values: ArrayLike) -> np.ndarray:
    """A float array in which None is NaN (missing)."""
    return np.asarray(values if isinstance(values, np.ndarray) else list(values), dtype=float).reshape(-1)


def _wilson(count: int, n: int, confidence: float) -> tuple[float, float] | None:
    if n == 0:
        return None
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    p, z2 = count / n, z * z
    center = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return (center - half, center + half)


def _t_interval(n: int, mean: float | None, var: float, confidence: float) -> tuple[float, float] | None:
    if n < 2 or mean is None:
        return None
    from scipy.special import stdtrit  # scipy loads only when an interval is asked for

    half = float(stdtrit(n - 1, 0.5 + confidence / 2)) * math.sqrt(max(var, 0.0) / n)
    return (mean - half, mean + half)


def _satisfaction(
    total: int, rated: int, mean: float | None, var: float, up: int, down: int, confidence: float
) -> Satisfaction:
    return Satisfaction(
        interactions=total,
        rated=rated,
        share_rated=rated / total if total else None,
        mean_score=mean,
        mean_score_ci=_t_interval(rated, mean, var, confidence),
        thumbs_up=up,
        thumbs_down=down,
        thumbs_up_rate=up / (up + down) if up + down else None,
        thumbs_up_ci=_wilson(up, up + down, confidence),
    )


def satisfaction(
    scores: ArrayLike, thumbs: Sequence[str | None] | None = None, *, confidence: float = 0.95
) -> Satisfaction:
    """Mean stars with a t interval, thumbs-up rate with a Wilson interval, and the share rated.

    Args:
        scores: one star rating per interaction; None or NaN where the user gave none.
        thumbs: one ``"up"``, ``"down"`` or None per interaction, or None for no thumbs at all.
        confidence: level of both intervals.

    Returns:
        The counts, rates and intervals.

    Raises:
        ValueError: ``thumbs`` and ``scores`` differ in length.
    """
    s = _floats(scores)
    if thumbs is not None and len(thumbs) != len(s):
        raise ValueError(f"scores and thumbs differ in length ({len(s)} != {len(thumbs)})")
    rated = s[~np.isnan(s)]
    mean = float(rated.mean()) if rated.size else None
    var = float(rated.var(ddof=1)) if rated.size > 1 else 0.0
    up = sum(t == "up" for t in thumbs or ())
    down = sum(t == "down" for t in thumbs or ())
    return _satisfaction(len(s), rated.size, mean, var, up, down, confidence)


def latency_summary(latencies_ms: ArrayLike) -> Latency:
    """Mean, p50, p95, p99 and max of the known latencies (None and NaN are missing, not zero)."""
    a = _floats(latencies_ms)
    a = a[~np.isnan(a)]
    if not a.size:
        return Latency(0, None, None, None, None, None)
    p = np.percentile(a, [q * 100 for q in _QUANTILES])
    return Latency(a.size, float(a.mean()), float(p[0]), float(p[1]), float(p[2]), float(a.max()))


# -- classification: accuracy and calibration -----------------------------------------------------------


def _router_accuracy(counts: Mapping[str, tuple[int, int]]) -> RouterAccuracy:
    n = sum(v[0] for v in counts.values())
    correct = sum(v[1] for v in counts.values())
    per_label = {label: Rate.of(c, m) for label, (m, c) in sorted(counts.items())}
    return RouterAccuracy(n, correct, correct / n if n else None, per_label)


def router_accuracy(predicted: Sequence[str | None], labels: Sequence[str | None]) -> RouterAccuracy:
    """Share of predictions equal to their label; pairs with a missing prediction or label are left out.

    Raises:
        ValueError: the sequences differ in length.
    """
    if len(predicted) != len(labels):
        raise ValueError(f"predicted and labels differ in length ({len(predicted)} != {len(labels)})")
    counts: dict[str, tuple[int, int]] = {}
    for p, y in zip(predicted, labels, strict=True):
        if p is not None and y is not None:
            n, c = counts.get(y, (0, 0))
            counts[y] = (n + 1, c + (p == y))
    return _router_accuracy(counts)


def _calibration(count: np.ndarray, conf_sum: np.ndarray, correct_sum: np.ndarray) -> Calibration:
    n_bins, n = len(count), int(count.sum())
    bins = tuple(
        CalibrationBin(
            lower=i / n_bins,
            upper=(i + 1) / n_bins,
            count=int(count[i]),
            mean_confidence=float(conf_sum[i] / count[i]) if count[i] else None,
            accuracy=float(correct_sum[i] / count[i]) if count[i] else None,
        )
        for i in range(n_bins)
    )
    ece = float(np.abs(correct_sum - conf_sum).sum() / n) if n else None
    return Calibration(n, ece, bins)


def _bin_of(confidence: np.ndarray, n_bins: int) -> np.ndarray:
    return np.minimum(np.floor(confidence * n_bins), n_bins - 1).astype(int)


def expected_calibration_error(confidence: ArrayLike, correct: ArrayLike, *, n_bins: int = 10) -> Calibration:
    """Expected calibration error over equal-width bins: ``sum_b |B_b|/n * |accuracy_b - confidence_b|``.

    A prediction falls in bin ``min(floor(confidence * n_bins), n_bins - 1)``.

    Args:
        confidence: the probability given to each prediction, in [0, 1]; NaN or None where unknown.
        correct: whether each prediction was right.
        n_bins: number of bins.

    Returns:
        The error (None without predictions) and every bin, empty ones included.

    Raises:
        ValueError: lengths differ, a confidence lies outside [0, 1], or ``n_bins < 1``.
    """
    conf, ok = _floats(confidence), np.asarray(correct, dtype=float).reshape(-1)
    if conf.shape != ok.shape:
        raise ValueError(f"confidence and correct differ in length ({conf.size} != {ok.size})")
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1 (got {n_bins})")
    keep = ~np.isnan(conf)
    conf, ok = conf[keep], ok[keep]
    if ((conf < 0) | (conf > 1)).any():
        raise ValueError("confidence values must lie in [0, 1]")
    b = _bin_of(conf, n_bins)
    return _calibration(
        np.bincount(b, minlength=n_bins),
        np.bincount(b, conf, minlength=n_bins),
        np.bincount(b, ok, minlength=n_bins),
    )


def _check_probabilities(probabilities: ArrayLike, labels: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(probabilities, dtype=float)
    y = np.asarray(labels).reshape(-1)
    if p.size == 0 and y.size == 0:
        return p.reshape(0, 0), y.astype(int)
    if p.ndim != 2 or p.shape[0] != y.size:
        raise ValueError(f"probabilities must have shape (n, classes) with n = len(labels) (got {p.shape})")
    if not np.issubdtype(y.dtype, np.integer) or (y < 0).any() or (y >= p.shape[1]).any():
        raise ValueError(f"labels must be class indices in [0, {p.shape[1]})")
    if (p < 0).any() or not np.allclose(p.sum(axis=1), 1.0, atol=1e-6):
        raise ValueError("each row of probabilities must be non-negative and sum to 1")
    return p, y


def brier_score(probabilities: ArrayLike, labels: ArrayLike) -> float | None:
    """Multi-class Brier score: mean over rows of ``sum_k (p_k - [label == k])^2`` (0 is perfect, 2 worst).

    Args:
        probabilities: shape (n, classes), rows summing to 1.
        labels: the true class index of each row.

    Returns:
        The score, or None for no rows.
    """
    p, y = _check_probabilities(probabilities, labels)
    if not y.size:
        return None
    onehot = np.zeros_like(p)
    onehot[np.arange(y.size), y] = 1.0
    return float(((p - onehot) ** 2).sum(axis=1).mean())


def log_loss(probabilities: ArrayLike, labels: ArrayLike) -> float | None:
    """Mean negative log probability of the true class, clipped to [eps, 1 - eps] as scikit-learn does.

    Args:
        probabilities: shape (n, classes), rows summing to 1.
        labels: the true class index of each row.

    Returns:
        The loss, or None for no rows.
    """
    p, y = _check_probabilities(probabilities, labels)
    if not y.size:
        return None
    return float(-np.log(np.clip(p[np.arange(y.size), y], _EPS, 1 - _EPS)).mean())


# -- retrieval --------------------------------------------------------------------------------------------


def _grades(relevance: Relevance) -> dict[Hashable, float]:
    grades = (
        {d: float(g) for d, g in relevance.items()}
        if isinstance(relevance, Mapping)
        else dict.fromkeys(relevance, 1.0)
    )
    if any(g < 0 or math.isnan(g) for g in grades.values()):
        raise ValueError("relevance grades must be >= 0")
    return grades


def _first(ranked: Sequence[Hashable], k: int) -> list[Hashable]:
    """The distinct ids in rank order (a document listed twice counts once, at its first place)."""
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be an int >= 1 (got {k!r})")
    return list(dict.fromkeys(ranked))


def precision_at_k(ranked: Sequence[Hashable], relevance: Relevance, k: int) -> float:
    """Relevant documents among the first ``k`` retrieved, over ``k`` (a short list is not rewarded).

    Args:
        ranked: document ids, best first.
        relevance: the relevant ids, or ids mapped to graded relevance (relevant when > 0).
        k: cut-off.
    """
    grades = _grades(relevance)
    return sum(grades.get(d, 0.0) > 0 for d in _first(ranked, k)[:k]) / k


def recall_at_k(ranked: Sequence[Hashable], relevance: Relevance, k: int) -> float | None:
    """Share of the relevant documents found in the first ``k``; None when nothing is relevant."""
    grades = _grades(relevance)
    top = _first(ranked, k)[:k]
    relevant = sum(g > 0 for g in grades.values())
    return sum(grades.get(d, 0.0) > 0 for d in top) / relevant if relevant else None


def ndcg_at_k(
    ranked: Sequence[Hashable], relevance: Relevance, k: int, *, scores: Sequence[float] | None = None
) -> float | None:
    """Normalized discounted cumulative gain at ``k`` with linear gains (scikit-learn's ``ndcg_score``).

    Args:
        ranked: document ids, best first.
        relevance: the relevant ids, or ids mapped to graded relevance.
        k: cut-off.
        scores: the retriever's score of each ranked document. When given, documents with equal scores
            share the average gain of the places they occupy (their order among themselves is arbitrary).

    Returns:
        nDCG in [0, 1], or None when nothing is relevant (the ideal gain is 0).

    Raises:
        ValueError: ``k < 1``, a negative grade, or ``scores`` not one per ranked id.
    """
    grades = _grades(relevance)
    docs = _first(ranked, k)
    ideal_gains = np.sort([g for g in grades.values() if g > 0])[::-1][:k]
    if not ideal_gains.size:
        return None
    gains = np.array([grades.get(d, 0.0) for d in docs])
    discount = 1 / np.log2(np.arange(len(docs)) + 2)
    discount[k:] = 0
    if scores is None:
        dcg = float(gains @ discount)
    else:
        if len(scores) != len(ranked):
            raise ValueError(f"scores and ranked differ in length ({len(scores)} != {len(ranked)})")
        score_of: dict[Hashable, float] = {}
        for d, x in zip(ranked, scores, strict=True):
            score_of.setdefault(d, float(x))
        _, group, sizes = np.unique([-score_of[d] for d in docs], return_inverse=True, return_counts=True)
        mean_gain = np.bincount(group, gains) / sizes
        ends = np.cumsum(discount)[np.cumsum(sizes) - 1]
        dcg = float(mean_gain @ np.diff(ends, prepend=0.0))
    ideal = float(ideal_gains @ (1 / np.log2(np.arange(ideal_gains.size) + 2)))
    return dcg / ideal


def retrieval_metrics(results: Iterable[tuple[Sequence[Hashable], Relevance]], k: int) -> RetrievalMetrics:
    """Mean precision@k, recall@k and nDCG@k over queries, each as ``(ranked ids, relevance)``."""
    precision: list[float] = []
    recall: list[float] = []
    ndcg: list[float] = []
    for ranked, relevance in results:
        precision.append(precision_at_k(ranked, relevance, k))
        r = recall_at_k(ranked, relevance, k)
        if r is not None:
            recall.append(r)
            ndcg.append(ndcg_at_k(ranked, relevance, k))  # type: ignore[arg-type]

    def mean(xs: list[float]) -> float | None:
        return float(np.mean(xs)) if xs else None

    return RetrievalMetrics(k, len(precision), len(recall), mean(precision), mean(recall), mean(ndcg))


# -- interactions, in Python -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Columns:
    """The columns the interaction metrics read, as arrays (NaN or None where missing)."""

    timestamp: np.ndarray
    score: np.ndarray
    thumbs: np.ndarray  # 1 up, 0 down
    latency: np.ndarray
    error: np.ndarray
    hallucination: np.ndarray
    retrieval_failed: np.ndarray
    retrieval_quality: np.ndarray
    confidence: np.ndarray
    corrected: np.ndarray  # 1 corrected, 0 not
    agent: np.ndarray
    label: np.ndarray

    @classmethod
    def of(cls, interactions: Interactions, label_key: str) -> _Columns:
        thumbs_value = {"up": 1.0, "down": 0.0}
        rows = []
        for item in interactions:
            g = item.get if isinstance(item, Mapping) else item.__getattribute__
            meta = g("metadata")
            label = meta.get(label_key) if isinstance(meta, Mapping) else None
            rows.append(
                (
                    g("timestamp"),
                    g("user_feedback_score"),
                    thumbs_value.get(g("thumbs_up_down")),  # type: ignore[arg-type]
                    g("latency_ms"),
                    g("error_occurred"),
                    g("hallucination_detected"),
                    g("retrieval_failed"),
                    g("retrieval_quality"),
                    g("agent_confidence"),
                    _corrected(g),
                    g("agent_selected"),
                    label if isinstance(label, str) else None,
                )
            )
        cols = list(zip(*rows, strict=True)) or [()] * 12
        return cls(
            *(np.array(c, dtype=float) for c in cols[:10]), *(np.array(c, dtype=object) for c in cols[10:])
        )

    def take(self, index: np.ndarray) -> _Columns:
        return _Columns(*(getattr(self, f.name)[index] for f in fields(self)))


def _corrected(g: Any) -> float:
    """1.0 when the interaction holds a correction: in ``corrections`` or, on a record (or its dict),
    ``user_corrections``, which the store adds to ``corrections`` when it writes the record."""
    return float(outcomes.corrected(g("corrections")) or g("user_corrections") is not None)


def _rate(fail: np.ndarray, known: np.ndarray) -> Rate:
    return Rate.of(int((fail & known).sum()), int(known.sum()))


def _outcome_rate(c: _Columns, o: MetricOptions) -> OutcomeRate:
    """:class:`OutcomeRate` stage counts, as :class:`~cl_plugin.outcomes.OutcomeCounter` counts them."""
    error, hallucination = c.error == 1, c.hallucination == 1
    low, down, corrected = c.score < o.low_rating_threshold, c.thumbs == 0, c.corrected == 1
    bad = low | down | corrected
    checked = ~error & np.isfinite(c.hallucination)  # an unknown error flag does not stop the chain
    judged = ~error & ~hallucination & (np.isfinite(c.score) | np.isfinite(c.thumbs))
    return OutcomeRate.estimate(
        interactions=len(c.timestamp),
        failures=int((error | hallucination | bad).sum()),
        errors=int(error.sum()),
        error_known=int(np.isfinite(c.error).sum()),
        hallucinations=int((checked & hallucination).sum()),
        hallucination_checked=int(checked.sum()),
        bad_verdicts=int((judged & bad).sum()),
        verdicts=int(judged.sum()),
    )


def _failure_rates(c: _Columns, o: MetricOptions) -> FailureRates:
    known = np.isfinite
    poor = (c.retrieval_failed == 1) | (c.retrieval_quality < o.poor_retrieval_quality)
    return FailureRates(
        outcome=_outcome_rate(c, o),
        low_rating=_rate(c.score < o.low_rating_threshold, known(c.score)),
        thumbs_down=_rate(c.thumbs == 0, known(c.thumbs)),
        correction=_rate(c.corrected == 1, known(c.corrected)),
        error=_rate(c.error == 1, known(c.error)),
        hallucination=_rate(c.hallucination == 1, known(c.hallucination)),
        poor_retrieval=_rate(poor, known(c.retrieval_failed) | known(c.retrieval_quality)),
        slow=_rate(c.latency > o.slow_response_ms, known(c.latency)),
        low_confidence=_rate(c.confidence < o.low_confidence, known(c.confidence)),
    )


def failure_rates(interactions: Interactions, *, options: MetricOptions | None = None) -> FailureRates:
    """Outcome and diagnostic rates over interaction records (store dicts or ``ProductionInteraction``).

    The outcomes (low rating, thumbs down, correction, error, hallucination) say an answer failed, and
    ``outcome`` chains them into one estimated failure rate (:class:`~cl_plugin.outcomes.OutcomeRate`:
    errors over the known flags, hallucinations among the runs that did not raise, bad verdicts among the
    rated runs that neither raised nor were flagged). The diagnostics (poor retrieval, slow, low
    confidence) may explain failures and are not failures: they do not move ``outcome``.

    Each rate's denominator holds only the interactions where it is observable: low ratings over the
    rated, thumbs down over the thumbed, corrections over all, errors and hallucinations over the known
    flags, poor retrieval (``retrieval_failed`` or quality below the threshold) over runs that retrieved,
    slow over the timed, low confidence over the runs with a confidence. A run without retrieval is not a
    retrieval failure. An error is ``error_occurred`` only (see :class:`FailureRates`).
    """
    o = options or MetricOptions()
    return _failure_rates(_Columns.of(interactions, o.label_key), o)


def _summary(c: _Columns, o: MetricOptions) -> dict[str, Any]:
    s = c.score[~np.isnan(c.score)]
    mean = float(s.mean()) if s.size else None
    var = float(s.var(ddof=1)) if s.size > 1 else 0.0
    up, down = int((c.thumbs == 1).sum()), int((c.thumbs == 0).sum())
    labeled = np.flatnonzero([y is not None and a is not None for y, a in zip(c.label, c.agent, strict=True)])
    correct = c.agent[labeled] == c.label[labeled]
    counts: dict[str, tuple[int, int]] = {}
    for y, ok in zip(c.label[labeled], correct, strict=True):
        n, k = counts.get(y, (0, 0))
        counts[y] = (n + 1, k + bool(ok))
    return {
        "interactions": len(c.timestamp),
        "satisfaction": _satisfaction(len(c.timestamp), s.size, mean, var, up, down, o.confidence),
        "latency": latency_summary(c.latency),
        "failures": _failure_rates(c, o),
        "routing": _router_accuracy(counts),
        "calibration": expected_calibration_error(c.confidence[labeled], correct, n_bins=o.n_bins),
    }


def interaction_metrics(
    interactions: Interactions, *, options: MetricOptions | None = None
) -> dict[str, Any]:
    """Every interaction metric over records, in Python; :func:`store_metrics` gives the same from the store.

    Args:
        interactions: store dicts (``query_interactions``, ``iter_interactions``) or ``ProductionInteraction``.
        options: thresholds and settings.

    Returns:
        ``interactions`` (count), ``satisfaction``, ``latency``, ``failures``, ``routing`` (the selected
        agent against ``metadata[label_key]``, where both are known) and ``calibration`` (of
        ``agent_confidence`` on those routed interactions).
    """
    o = options or MetricOptions()
    return _summary(_Columns.of(interactions, o.label_key), o)


def _width(window: Window) -> tuple[float, float]:
    """Bucket width and shift of a window name or a number of seconds."""
    if isinstance(window, str):
        if window not in _WIDTHS:
            raise ValueError(f"window must be one of {sorted(_WIDTHS)} or seconds > 0 (got {window!r})")
        return _WIDTHS[window], _WEEK_SHIFT if window == "week" else 0.0
    if not window > 0:
        raise ValueError(f"window must be one of {sorted(_WIDTHS)} or seconds > 0 (got {window!r})")
    return float(window), 0.0


def _groups(keys: np.ndarray) -> dict[int, np.ndarray]:
    """Row indices by key, keys ascending (one sort, not one scan per key)."""
    order = np.argsort(keys, kind="stable")
    unique, starts = np.unique(keys[order], return_index=True)
    return (
        {int(k): rows for k, rows in zip(unique, np.split(order, starts[1:]), strict=True)}
        if keys.size
        else {}
    )


def _bounds(index: int, width: float, shift: float) -> dict[str, float]:
    return {"start_time": index * width - shift, "end_time": (index + 1) * width - shift}


def metrics_by_window(
    interactions: Interactions, window: Window = "day", *, options: MetricOptions | None = None
) -> list[dict[str, Any]]:
    """:func:`interaction_metrics` per time bucket, oldest first; buckets without interactions are absent.

    Args:
        interactions: records as for :func:`interaction_metrics`.
        window: ``"hour"``, ``"day"``, ``"week"`` (UTC; weeks start on Monday) or a bucket width in seconds
            (buckets aligned to the unix epoch).
        options: thresholds and settings.

    Returns:
        One dict per bucket: ``start_time``, ``end_time`` and the keys of :func:`interaction_metrics`.
    """
    o = options or MetricOptions()
    width, shift = _width(window)
    c = _Columns.of(interactions, o.label_key)
    index = np.floor((c.timestamp + shift) / width)
    return [{**_bounds(b, width, shift), **_summary(c.take(rows), o)} for b, rows in _groups(index).items()]
