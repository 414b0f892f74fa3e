"""FailurePatternAnalyzer: systematic failure modes in production interactions, and what they go with.

**What a failure is.** An interaction fails when it shows an *outcome* (:mod:`cl_plugin.outcomes`):

- ``low_rating``: a star rating below ``low_rating_threshold`` (default 3), or a thumbs down;
- ``error``: ``error_occurred``, or a ``failed_node`` in its metadata;
- ``hallucination``: ``hallucination_detected``;
- ``correction``: the user corrected the answer.

*Diagnostics* say how a run went and may explain a failure, but are not failures:

- ``poor_retrieval``: ``retrieval_failed``, or ``retrieval_quality`` below :data:`POOR_RETRIEVAL_QUALITY`;
- ``slow``: ``latency_ms`` above ``slow_response_ms`` (default 5000);
- ``low_confidence``: the router chose with ``agent_confidence`` below :data:`LOW_CONFIDENCE`.

Missing is missing: an unrated interaction is neither a bad rating nor a good one, a run without retrieval
(``retrieval_quality`` and ``retrieval_failed`` both ``None``) shows no retrieval signal, and each signal's
rate is taken over the interactions where it could be seen. ``FailureAnalysis.outcome`` estimates the share
of interactions that failed (:class:`~cl_plugin.outcomes.OutcomeRate`): errors over every run, the users'
verdicts over the rated ones.

**Diagnostics as explanations.** Each diagnostic is compared between the failed interactions and the good
ones (rated well and not failed; the other interactions when too few were rated): "62% of the failed had
poor retrieval, against 8% of the good ones", with Fisher's exact test and Benjamini-Hochberg over the
diagnostics (:class:`Diagnostic`). A diagnostic is then *explains* (significantly more common among
failures), *independent* (no significant difference), *protective* (more common among good ones),
*ubiquitous* (seen on 90% or more of the interactions that could show it, so it cannot tell failures
apart) or *too_few* (under 5 failed or 5 reference interactions). Its pattern ranks by the failures it
accounts for beyond the reference share, and only an explaining diagnostic ranks among the failures; the
others are listed last and say why.

A routing mistake is a cause, not an outcome: the router chose an agent that metadata (``best_agent``,
``correct_agent`` or ``expected_agent``) says was wrong, or an interaction failed after a choice made with
confidence below :data:`LOW_CONFIDENCE`, or, within a cluster of similar queries, one agent fails
significantly more often than the cluster's other agents (Fisher's exact test, Benjamini-Hochberg over all
such comparisons).

**Attribution.** For each factor (agent, graph node, retrieval-quality bucket, latency bucket, router
confidence bucket, query cluster, time window) and each of its levels, the failure rate of the interactions
at that level is compared with the rest: Wilson 95% interval, Fisher's exact test, Benjamini-Hochberg over
every test of the run. Significant over-represented levels are quoted in the patterns and their fixes. A node
level compares the interactions that ran the node with those that did not.

**Scale.** :meth:`FailurePatternAnalyzer.analyze_stream` reads chunks (``Store.iter_interactions``) and keeps
counts plus two bounded uniform samples (failures, for clustering; all traffic, for per-cluster failure rates
by agent), so memory does not grow with the data. Counts are exact; cluster figures come from the samples
and say so (``details["estimated"]``).

**Capture sampling.** Every figure above comes from interaction rows, which a sampling
:class:`~cl_plugin.CaptureHandler` writes for every run, so they stay exact; ``counts`` says how many of the
rows also have node-level detail in the unbiased sample (``detail_sample``) and how many kept it only
because they raised (``detail_kept_errors``). Errors the rows do not tie to a node (captured runs name
none) can be attributed with the node runs: pass ``nodes=`` (from :func:`cl_plugin.analysis.metrics.node_metrics`),
whose figures are computed over the sample, and the pattern quotes them with the sample's size.
"""

from __future__ import annotations

import math
import random
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson
from scipy import stats

from cl_plugin.analysis.clustering import FailureClusterer, QueryCluster
from cl_plugin.config import ContinualLearningConfig, FailureAnalysisConfig, resolve_section
from cl_plugin.outcomes import LOW_CONFIDENCE, POOR_RETRIEVAL_QUALITY, OutcomeCounter, OutcomeRate, corrected
from cl_plugin.outcomes import as_number as _number
from cl_plugin.privacy import default_redactor
from cl_plugin.records import FailurePattern, ProductionInteraction

if TYPE_CHECKING:
    from langchain_core.embeddings import Embeddings

    from cl_plugin.analysis.metrics.nodes import NodeMetrics

__all__ = [
    "DIAGNOSTIC_SIGNALS",
    "LOW_CONFIDENCE",
    "OUTCOME_SIGNALS",
    "POOR_RETRIEVAL_QUALITY",
    "SIGNALS",
    "Attribution",
    "Diagnostic",
    "FailureAnalysis",
    "FailurePatternAnalyzer",
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


@dataclass(frozen=True, slots=True)
class Attribution:
    """How the failure rate at one level of one factor compares with the rest.

    Attributes:
        factor: ``"agent"``, ``"node"``, ``"retrieval_quality"``, ``"latency"``, ``"confidence"``,
            ``"query_cluster"`` or ``"time_window"``.
        level: the level (an agent name, a node, a bucket such as ``"5-10s"``, a cluster's terms, a window).
        n: interactions at this level (for ``query_cluster``: in the traffic sample).
        failures: failed interactions among them.
        rate: ``failures / n``.
        baseline_rate: the failure rate of the other interactions where the factor is known.
        lift: ``rate / baseline_rate`` (``inf`` when the baseline has no failure).
        ci_low: lower end of the Wilson 95% interval of ``rate``.
        ci_high: upper end of that interval.
        p_value: two-sided Fisher exact test of level against rest.
        q_value: Benjamini-Hochberg adjusted p-value over every test of the analysis.
        significant: ``q_value <= 0.05``.
    """

    factor: str
    level: str
    n: int
    failures: int
    rate: float
    baseline_rate: float
    lift: float
    ci_low: float
    ci_high: float
    p_value: float
    q_value: float
    significant: bool


@dataclass(frozen=True, slots=True)
class Diagnostic:
    """How often a diagnostic signal goes with failures: the failed interactions against a reference group.

    Attributes:
        signal: ``"poor_retrieval"``, ``"slow"`` or ``"low_confidence"``.
        observable: interactions where the signal could be seen (for ``poor_retrieval``: that retrieved).
        count: those where it was seen.
        prevalence: ``count / observable``.
        failed: failed interactions among the observable ones; ``failed_with`` of them show the signal.
        reference: ``"good"`` (rated well, nothing failed) or ``"other"`` (nothing failed; used when fewer
            than 5 observable interactions were rated well).
        reference_n: interactions of the reference group; ``reference_with`` of them show the signal.
        share_failed: ``failed_with / failed``.
        share_reference: ``reference_with / reference_n``.
        lift: ``share_failed / share_reference`` (``inf`` when no reference interaction shows it).
        p_value: two-sided Fisher exact test of the two shares.
        q_value: Benjamini-Hochberg adjusted over the diagnostics of the analysis.
        verdict: ``"explains"``, ``"independent"``, ``"protective"``, ``"ubiquitous"`` or ``"too_few"``
            (see the module docstring).
        attributable: failures showing the signal beyond what the reference share predicts
            (``failed_with - failed * share_reference``, at least 0).
    """

    signal: str
    observable: int
    count: int
    prevalence: float
    failed: int
    failed_with: int
    reference: str
    reference_n: int
    reference_with: int
    share_failed: float | None
    share_reference: float | None
    lift: float | None
    p_value: float | None
    q_value: float | None
    verdict: str
    attributable: int

    def describe(self) -> str:
        """One sentence: how the signal splits between failed and reference interactions, and the verdict."""
        word = _WORDS[self.signal]
        ref = "good ones" if self.reference == "good" else "others"
        if self.share_failed is None or self.share_reference is None:
            split = ""
        else:
            split = (
                f"{self.share_failed:.0%} of the {self.failed:,} failed interactions had {word}, against "
                f"{self.share_reference:.0%} of the {self.reference_n:,} {ref}"
            )
        q = f" (q = {self.q_value:.1g})" if self.q_value is not None else ""
        verdict = {
            "explains": f"{split}{q}: it goes with the failures",
            "independent": f"{split}{q}: it does not vary with outcomes, so it does not explain them",
            "protective": f"{split}{q}: it goes with good outcomes, not with failures",
            "ubiquitous": (
                f"seen on {self.prevalence:.0%} of the {self.observable:,} interactions that could show it, "
                f"failed or not ({split}): too common to tell failures apart; check its threshold"
            ),
            "too_few": f"too few failed or {'good' if self.reference == 'good' else 'other'} interactions to "
            "tell whether it goes with failures" + (f" ({split})" if split else ""),
        }[self.verdict]
        return verdict[0].upper() + verdict[1:] + "."


@dataclass(slots=True)
class FailureAnalysis:
    """Everything one analysis found.

    Attributes:
        patterns: failure patterns, most important first: outcome patterns and explaining diagnostics by
            severity x failures, then the diagnostics that do not explain failures.
        attribution: every level test, most significant over-represented levels first.
        clusters: clusters of similar failed queries, largest first.
        counts: ``interactions``, ``failures`` (interactions with an outcome failure), each signal's count
            and its ``observable_<signal>`` count, ``routing_mistake``, the sizes of the samples
            (``failure_sample``, ``traffic_sample``), and the interactions whose node-level detail is in the
            capture sample (``detail_sample``: all of them without sampling) or was kept only because they
            raised (``detail_kept_errors``).
        sampled: whether clustering used a sample of the failures.
        outcome: the estimated share of interactions that failed, and what it rests on.
        diagnostics: one :class:`Diagnostic` per diagnostic signal seen at least once, explaining ones first.
    """

    patterns: list[FailurePattern] = field(default_factory=list)
    attribution: list[Attribution] = field(default_factory=list)
    clusters: list[QueryCluster] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    sampled: bool = False
    outcome: OutcomeRate = field(default_factory=lambda: OutcomeCounter().result())
    diagnostics: list[Diagnostic] = field(default_factory=list)


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


@dataclass(slots=True)
class _Tracked:
    """Counts of one pattern: occurrences, where it could be seen, summed severity, examples, agents, nodes."""

    count: int = 0
    seen: int = 0
    severity: float = 0.0
    examples: list[str] = field(default_factory=list)
    agents: Counter[str] = field(default_factory=Counter)
    nodes: Counter[str] = field(default_factory=Counter)
    spare: list[str] = field(default_factory=list)

    def hit(
        self, iid: Any, severity: float, agent: str | None, node: str | None, *, example: bool = True
    ) -> None:
        """Count one occurrence; ``example=False`` keeps its id only as a spare, shown when no example is."""
        self.count += 1
        self.severity += severity
        if isinstance(iid, str):
            kept = self.examples if example else self.spare
            if len(kept) < _EXAMPLES:
                kept.append(iid)
        if agent is not None:
            self.agents[agent] += 1
        if node is not None:
            self.nodes[node] += 1

    def scale(self, factor: float) -> None:
        """Turn counts over a sample into estimates over everything the sample was drawn from."""
        self.count = round(self.count * factor)
        self.severity *= factor
        for counter in (self.agents, self.nodes):
            for key in counter:
                counter[key] = round(counter[key] * factor)


class _Reservoir:
    """A uniform sample of at most ``size`` items of a stream (Vitter's algorithm R)."""

    def __init__(self, size: int, rng: random.Random) -> None:
        self.size, self.rng = size, rng
        self.items: list[tuple] = []
        self.seen = 0

    def add(self, item: tuple) -> None:
        self.seen += 1
        if len(self.items) < self.size:
            self.items.append(item)
        else:
            j = self.rng.randrange(self.seen)
            if j < self.size:
                self.items[j] = item


_FACTORS = ("agent", "node", "retrieval_quality", "latency", "confidence")


class _Tally:
    """Everything :class:`FailurePatternAnalyzer` needs from a stream, in memory bounded by the samples."""

    def __init__(self, config: FailureAnalysisConfig, sample_size: int) -> None:
        self.low, self.slow_ms = config.low_rating_threshold, config.slow_response_ms
        self.n = self.failures = 0
        self.detail_sample = self.detail_kept_errors = 0
        self.outcome = OutcomeCounter(config.low_rating_threshold)
        # per diagnostic, over the interactions that could show it: [failed, failed with it, rated good,
        # rated good with it, not failed, not failed with it]
        self.split = {name: [0, 0, 0, 0, 0, 0] for name in DIAGNOSTIC_SIGNALS}
        self.signals = {name: _Tracked() for name in SIGNALS}
        self.routing = _Tracked()
        self.better: Counter[tuple[str, str]] = Counter()
        self.low_confidence_failures = 0
        self.node_errors: dict[str, _Tracked] = {}
        self.error_types: dict[str, Counter[str]] = {}
        self.visits: Counter[str] = Counter()
        self.levels: dict[str, dict[str, list[int]]] = {f: {} for f in _FACTORS}
        self.totals: dict[str, list[int]] = {f: [0, 0] for f in _FACTORS}
        self.hours: dict[int, list[int]] = {}
        rng = random.Random(0)
        self.slow_latencies = _Reservoir(10_000, rng)
        self.failed = _Reservoir(sample_size, rng)
        self.traffic = _Reservoir(sample_size, rng)

    def _level(self, factor: str, level: str | None, failed: int, *, total: bool = True) -> None:
        """Count one interaction at ``level`` of ``factor`` (and in the factor's total, unless told not to)."""
        if level is None:
            return
        cell = self.levels[factor].setdefault(level, [0, 0])
        cell[0] += 1
        cell[1] += failed
        if total:
            cell = self.totals[factor]
            cell[0] += 1
            cell[1] += failed

    def add(self, item: Any) -> None:
        row = _Row(item)
        get, meta = row.get, row.meta
        mask, seen, severity, diagnosed = _signals(row, self.low, self.slow_ms)
        failed = int(mask & _OUTCOME != 0)
        self.n += 1
        self.failures += failed
        score, thumbs = _number(get("user_feedback_score")), get("thumbs_up_down")
        self.outcome.add(
            score,
            thumbs,
            bool(mask & _CORR),
            bool(mask & _ERROR) if seen & _ERROR else None,
            bool(mask & _HALLU) if seen & _HALLU else None,
        )
        good = not failed and (score is not None or thumbs == "up")
        if meta.get("sampled") is False:
            self.detail_kept_errors += meta.get("detail_kept") is not None
        else:
            self.detail_sample += 1
        iid = get("interaction_id")
        agent = get("agent_selected")
        agent = agent if isinstance(agent, str) and agent else None
        failed_node = meta.get("failed_node") or (meta.get("node") if mask & _ERROR else None)
        failed_node = failed_node if isinstance(failed_node, str) else None
        slow_node = meta.get("slowest_node") or meta.get("node")
        slow_node = slow_node if isinstance(slow_node, str) else None
        for bit, name in enumerate(SIGNALS):
            if not seen >> bit & 1:
                continue
            tracked = self.signals[name]
            tracked.seen += 1
            has = mask >> bit & 1
            if bit >= len(OUTCOME_SIGNALS):
                cell = self.split[name]
                cell[0] += failed
                cell[1] += failed & has
                cell[2] += good
                cell[3] += good & has
                cell[4] += not failed
                cell[5] += (not failed) & has
            if has:
                node = failed_node if name == "error" else slow_node if name == "slow" else meta.get("node")
                node = node if isinstance(node, str) else None
                if bit < len(OUTCOME_SIGNALS):
                    tracked.hit(iid, severity, agent, node)
                else:
                    sev = diagnosed[bit - len(OUTCOME_SIGNALS)]
                    tracked.hit(iid, sev, agent, node, example=bool(failed))
        latency = _number(get("latency_ms"))
        if mask & _SLOW:
            self.slow_latencies.add((latency,))
        if mask & _ERROR:
            node = failed_node or _NO_NODE
            self.node_errors.setdefault(node, _Tracked()).hit(iid, severity, agent, node)
            kinds = (
                meta.get("node_errors")
                or meta.get("error_type")
                or _error_kind(meta.get("error_message"))
                or ()
            )
            self.error_types.setdefault(node, Counter()).update(
                [kinds] if isinstance(kinds, str) else [k for k in kinds if isinstance(k, str)]
            )
        confidence = _number(get("agent_confidence"))
        best = next((meta[k] for k in _BEST_KEYS if isinstance(meta.get(k), str)), None)
        if agent is not None and (confidence is not None or best is not None):
            self.routing.seen += 1
            wrong = best is not None and best != agent
            unsure = failed and confidence is not None and confidence < LOW_CONFIDENCE
            if wrong or unsure:
                mask |= _ROUTING
                # Mis-routed but served without a visible failure: the user was hurt less.
                self.routing.hit(iid, severity if failed else 0.3, agent, None)
                if wrong:
                    self.better[(agent, best)] += 1
                if unsure:
                    self.low_confidence_failures += 1
        self._level("agent", agent, failed)
        self._level("retrieval_quality", _bucket(_number(get("retrieval_quality")), _RETRIEVAL_BINS), failed)
        self._level("latency", _bucket(latency, _LATENCY_BINS), failed)
        self._level("confidence", _bucket(confidence, _CONFIDENCE_BINS), failed)
        path = meta.get("node_path") or meta.get("nodes") or ()
        visited = {p for p in path if isinstance(p, str)} if isinstance(path, list | tuple) else set()
        if failed_node:
            visited.add(failed_node)
        for node in visited:
            self.visits[node] += 1
            self._level("node", node, failed, total=False)
        if visited:  # an interaction visits several nodes: each node is tested against those that skipped it
            self.totals["node"][0] += 1
            self.totals["node"][1] += failed
        timestamp = _number(get("timestamp"))
        if timestamp is not None:
            cell = self.hours.setdefault(int(timestamp // 3600), [0, 0])
            cell[0] += 1
            cell[1] += failed
        query = get("user_query")
        if isinstance(query, str) and query.strip():
            vector = _vector(get("query_embedding"))
            self.traffic.add((query, failed, agent, vector))
            if failed:
                self.failed.add((query, iid, agent, mask, severity, failed_node, slow_node, vector))


class FailurePatternAnalyzer:
    """Finds systematic failure modes in production interactions and what they are associated with.

    Args:
        config: the ``failure_analysis`` section as a dict or :class:`FailureAnalysisConfig`, or a whole
            :class:`ContinualLearningConfig`. Keys: ``min_cluster_size``, ``similarity_threshold``,
            ``slow_response_ms``, ``low_rating_threshold``, and ``enabled`` and ``analyze_frequency``, which
            schedule the analysis in the maintenance graph and do not change what it finds.
        embeddings: a LangChain ``Embeddings`` used to cluster failed queries; None uses TF-IDF.
        **kwargs: keys that override ``config``.

    Raises:
        ConfigError: a key is unknown or a value is out of range; the message names the key.

    Example:
        >>> analyzer = FailurePatternAnalyzer({"min_cluster_size": 5, "similarity_threshold": 0.7})
        >>> rows = [{"interaction_id": f"i{i}", "user_query": "refund in EUR", "agent_selected": "TRM",
        ...          "user_feedback_score": 1.0 if i % 2 else 5.0} for i in range(20)]
        >>> [p.pattern_type for p in analyzer.analyze_failures(rows)]
        ['low_rating', 'failure_cluster']
    """

    def __init__(
        self,
        config: dict[str, Any] | FailureAnalysisConfig | ContinualLearningConfig | None = None,
        *,
        embeddings: Embeddings | None = None,
        **kwargs: Any,
    ) -> None:
        self.config = resolve_section(
            FailureAnalysisConfig, config, component="FailurePatternAnalyzer", **kwargs
        )
        self.embeddings = embeddings

    def analyze_failures(self, interactions: Iterable[Any]) -> list[FailurePattern]:
        """The failure patterns present in ``interactions``, most important (severity x frequency) first.

        Args:
            interactions: dicts (as from ``query_interactions``) or :class:`ProductionInteraction` records.

        Returns:
            One :class:`FailurePattern` per pattern found; an empty list when nothing failed.
        """
        return self.analyze(interactions).patterns

    def attribute_failures(self, interactions: Iterable[Any]) -> list[Attribution]:
        """Failure rate per level of each factor against the rest, significant over-represented levels first.

        Args:
            interactions: dicts or records.

        Returns:
            One :class:`Attribution` per tested level.
        """
        return self.analyze(interactions).attribution

    def analyze(
        self,
        interactions: Iterable[Any],
        *,
        sample_size: int = 20_000,
        nodes: NodeMetrics | None = None,
    ) -> FailureAnalysis:
        """Patterns, attribution, clusters and counts of ``interactions``.

        Args:
            interactions: dicts or records.
            sample_size: most failures kept for clustering (and traffic kept for per-cluster rates).
            nodes: per-node figures of the same interactions (:func:`cl_plugin.analysis.metrics.node_metrics`), which
                attribute the errors that the rows do not tie to a node.

        Returns:
            The :class:`FailureAnalysis`.
        """
        return self.analyze_stream([interactions], sample_size=sample_size, nodes=nodes)

    def analyze_stream(
        self,
        chunks: Iterable[Iterable[Any]],
        *,
        sample_size: int = 20_000,
        nodes: NodeMetrics | None = None,
    ) -> FailureAnalysis:
        """Analyse interactions that arrive in chunks, such as ``Store.iter_interactions(chunk_size=...)``.

        Memory is bounded by ``sample_size``: counts and factor tables are exact, clusters are fit on a
        uniform sample of the failures.

        Args:
            chunks: iterables of dicts or records.
            sample_size: most failures kept for clustering (and traffic kept for per-cluster rates).
            nodes: as in :meth:`analyze`.

        Returns:
            The :class:`FailureAnalysis`.
        """
        if sample_size < 1:
            raise ValueError(f"sample_size must be >= 1 (got {sample_size})")
        tally = _Tally(self.config, sample_size)
        add = tally.add
        for chunk in chunks:
            for item in chunk:
                add(item)
        return _Report(tally, self.config, self.embeddings, nodes).build()


_Z = float(stats.norm.ppf(0.975))


def _wilson(k: int, n: int) -> tuple[float, float]:
    """Wilson score 95% interval of the proportion ``k / n``."""
    p = k / n
    denom = 1.0 + _Z * _Z / n
    centre = (p + _Z * _Z / (2 * n)) / denom
    half = _Z * math.sqrt(p * (1 - p) / n + _Z * _Z / (4 * n * n)) / denom
    return max(0.0, min(p, centre - half)), min(1.0, max(p, centre + half))


def _fisher(k: int, n: int, rest_k: int, rest_n: int) -> float:
    """Two-sided Fisher exact p-value of ``k / n`` against ``rest_k / rest_n``."""
    return float(stats.fisher_exact([[k, n - k], [rest_k, rest_n - rest_k]]).pvalue)


def _bh(p_values: list[float]) -> list[float]:
    return [float(q) for q in stats.false_discovery_control(p_values, method="bh")] if p_values else []


def _share(part: int, whole: int) -> float:
    return part / whole if whole else 0.0


def _diagnostic_fix(diagnostic: Diagnostic, fix: str) -> str:
    """The fix of a diagnostic's pattern, led by what its link with the failures says about it."""
    word = _WORDS[diagnostic.signal]
    if diagnostic.verdict == "explains":
        return fix
    if diagnostic.verdict == "ubiquitous":
        return (
            f"Not a lead: {word} shows on nearly every interaction, so check its threshold, or whether the "
            f"step runs where it cannot help. If it should be rarer: {fix[0].lower()}{fix[1:]}"
        )
    why = {
        "independent": f"{word} is as common among good answers as among failed ones",
        "protective": f"{word} is more common among good answers than among failed ones",
        "too_few": "too few outcomes were seen to tie it to failures",
    }[diagnostic.verdict]
    return f"Not a lead for the failures: {why}. To improve it anyway: {fix[0].lower()}{fix[1:]}"


def _rank(pattern: FailurePattern) -> tuple[int, float]:
    """Sort key: outcome patterns and explaining diagnostics by severity x failures, then the others."""
    diagnostic = pattern.details.get("diagnostic")
    if diagnostic is None:
        return 0, -pattern.severity * pattern.frequency
    if diagnostic["verdict"] == "explains":
        return 0, -pattern.severity * diagnostic["attributable"]
    return 1, -pattern.severity * pattern.frequency


class _Report:
    """Turns a :class:`_Tally` into a :class:`FailureAnalysis`."""

    def __init__(
        self,
        tally: _Tally,
        config: FailureAnalysisConfig,
        embeddings: Embeddings | None,
        nodes: NodeMetrics | None = None,
    ) -> None:
        self.t, self.config, self.embeddings, self.nodes = tally, config, embeddings, nodes
        self.clusters: list[QueryCluster] = []
        self.names: dict[int, str] = {}

    def build(self) -> FailureAnalysis:
        t = self.t
        counts = {"interactions": t.n, "failures": t.failures}
        for name, tracked in t.signals.items():
            counts[name] = tracked.count
            counts[f"observable_{name}"] = tracked.seen
        counts |= {
            "routing_mistake": t.routing.count,
            "observable_routing_mistake": t.routing.seen,
            "failure_sample": len(t.failed.items),
            "traffic_sample": len(t.traffic.items),
            "detail_sample": t.detail_sample,
            "detail_kept_errors": t.detail_kept_errors,
        }
        self._cluster()
        self.attribution = self._attribution()
        self.findings = self._agents_within_clusters()
        self.diagnostics = self._diagnostics()
        patterns = [
            *self._signal_patterns(),
            *self._node_patterns(),
            *self._routing_patterns(),
            *self._cluster_patterns(),
        ]
        patterns.sort(key=_rank)
        return FailureAnalysis(
            patterns,
            self.attribution,
            self.clusters,
            counts,
            self.sampled,
            t.outcome.result(),
            sorted(self.diagnostics.values(), key=lambda d: (d.verdict != "explains", -d.attributable)),
        )

    def _diagnostics(self) -> dict[str, Diagnostic]:
        """Each observable diagnostic, compared between failed and reference interactions."""
        rows = []
        for name, (f, fw, g, gw, o, ow) in self.t.split.items():
            tracked = self.t.signals[name]
            if not tracked.count:  # never seen, or nowhere it could be: nothing to explain with
                continue
            reference, n, w = ("good", g, gw) if g >= _MIN_GROUP else ("other", o, ow)
            rows.append((name, tracked, f, fw, reference, n, w))
        testable = [r for r in rows if r[2] >= _MIN_GROUP and r[5] >= _MIN_GROUP]
        p_values = [_fisher(fw, f, w, n) for _, _, f, fw, _, n, w in testable]
        q_values = dict(zip([r[0] for r in testable], zip(p_values, _bh(p_values), strict=True), strict=True))
        out = {}
        for name, tracked, f, fw, reference, n, w in rows:
            share_f, share_r = (fw / f if f else None), (w / n if n else None)
            p, q = q_values.get(name, (None, None))
            prevalence = tracked.count / tracked.seen
            if prevalence >= UBIQUITOUS:
                verdict = "ubiquitous"
            elif q is None:
                verdict = "too_few"
            elif q <= _ALPHA and share_f > share_r:  # type: ignore[operator]
                verdict = "explains"
            elif q <= _ALPHA:
                verdict = "protective"
            else:
                verdict = "independent"
            lift = None
            if share_f is not None and share_r is not None:
                lift = share_f / share_r if share_r else (math.inf if share_f else 1.0)
            excess = fw - f * share_r if share_r is not None else 0.0
            out[name] = Diagnostic(
                name,
                tracked.seen,
                tracked.count,
                prevalence,
                f,
                fw,
                reference,
                n,
                w,
                share_f,
                share_r,
                lift,
                p,
                q,
                verdict,
                max(0, round(excess)),
            )
        return out

    # --- clusters and tests -----------------------------------------------------------------------------

    def _cluster(self) -> None:
        t, cfg = self.t, self.config
        # The application's own query embeddings, when every sampled query has one of the same size.
        failed_vectors = _stack([item[7] for item in t.failed.items])
        traffic_vectors = _stack([item[3] for item in t.traffic.items])
        if (
            failed_vectors is None
            or traffic_vectors is None
            or failed_vectors.shape[1] != traffic_vectors.shape[1]
        ):
            failed_vectors = traffic_vectors = None
        model = FailureClusterer(
            min_cluster_size=cfg.min_cluster_size,
            similarity_threshold=cfg.similarity_threshold,
            embeddings=self.embeddings,
        ).fit([item[0] for item in t.failed.items], failed_vectors)
        self.used_query_embeddings = failed_vectors is not None
        self.clusters = model.clusters_
        self.names = {c.cluster_id: f"{c.cluster_id}: {c.name}" for c in self.clusters}
        self.labels = model.labels_
        traffic = [item[0] for item in t.traffic.items]
        self.traffic_labels = (
            model.predict(traffic, traffic_vectors) if self.clusters else np.full(len(traffic), -1)
        )
        self.scale = _share(t.failed.seen, len(t.failed.items)) or 1.0
        self.sampled = len(t.failed.items) < t.failed.seen or model.sampled_

    def _tests(self) -> list[tuple[str, str, int, int, int, int]]:
        """(factor, level, n, failures, factor total n, factor total failures) for every level to test."""
        t = self.t
        tests = [
            (factor, level, n, f, *t.totals[factor])
            for factor in _FACTORS
            for level, (n, f) in sorted(t.levels[factor].items())
        ]
        if self.clusters:
            cells: dict[str, list[int]] = {}
            for (_, failed, _, _), label in zip(t.traffic.items, self.traffic_labels, strict=True):
                cell = cells.setdefault(self.names.get(int(label), "(no cluster)"), [0, 0])
                cell[0] += 1
                cell[1] += failed
            total = (len(t.traffic.items), sum(c[1] for c in cells.values()))
            tests += [("query_cluster", level, n, f, *total) for level, (n, f) in sorted(cells.items())]
        windows = self._windows()
        total = (sum(c[0] for c in windows.values()), sum(c[1] for c in windows.values()))
        tests += [("time_window", level, n, f, *total) for level, (n, f) in windows.items()]
        return [test for test in tests if 0 < test[2] < test[4]]

    def _windows(self) -> dict[str, list[int]]:
        """Hourly counts pooled into at most 12 equal windows."""
        hours = self.t.hours
        if len(hours) < 2:
            return {}
        low = min(hours)
        width = max(1, math.ceil((max(hours) - low + 1) / 12))
        cells: dict[int, list[int]] = {}
        for hour, (n, f) in hours.items():
            cell = cells.setdefault((hour - low) // width, [0, 0])
            cell[0] += n
            cell[1] += f
        out = {}
        for index in sorted(cells):
            start = (low + index * width) * 3600
            try:
                label = f"{datetime.fromtimestamp(start, tz=UTC):%Y-%m-%d %H:%M} UTC +{width}h"
            except (OverflowError, OSError, ValueError):
                label = f"hours {low + index * width}+{width}"
            out[label] = cells[index]
        return out

    def _attribution(self) -> list[Attribution]:
        tests = self._tests()
        p_values = [_fisher(f, n, total_f - f, total_n - n) for _, _, n, f, total_n, total_f in tests]
        rows = []
        for (factor, level, n, f, total_n, total_f), p, q in zip(tests, p_values, _bh(p_values), strict=True):
            rate, base = f / n, (total_f - f) / (total_n - n)
            low, high = _wilson(f, n)
            lift = rate / base if base else (math.inf if rate else 1.0)
            rows.append(Attribution(factor, level, n, f, rate, base, lift, low, high, p, q, q <= _ALPHA))
        rows.sort(key=lambda r: (not (r.significant and r.lift > 1), r.q_value, -r.lift))
        return rows

    def _agents_within_clusters(self) -> list[dict[str, Any]]:
        """Agents that fail a query cluster significantly more often than the cluster's other agents."""
        cells: dict[int, dict[str, list[int]]] = {}
        for (_, failed, agent, _), label in zip(self.t.traffic.items, self.traffic_labels, strict=True):
            if label >= 0 and agent is not None:
                cell = cells.setdefault(int(label), {}).setdefault(agent, [0, 0])
                cell[0] += 1
                cell[1] += failed
        tests = []
        for label, by_agent in sorted(cells.items()):
            eligible = {a: c for a, c in by_agent.items() if c[0] >= self.config.min_cluster_size}
            if len(eligible) < 2:
                continue
            n_all, f_all = sum(c[0] for c in eligible.values()), sum(c[1] for c in eligible.values())
            for agent, (n, f) in sorted(eligible.items()):
                better = min(
                    (a for a in eligible if a != agent), key=lambda a: eligible[a][1] / eligible[a][0]
                )
                rest_n, rest_f = n_all - n, f_all - f
                tests.append((label, agent, n, f, rest_n, rest_f, better, eligible[better]))
        q_values = _bh([_fisher(f, n, rf, rn) for _, _, n, f, rn, rf, _, _ in tests])
        findings = []
        for (label, agent, n, f, rest_n, rest_f, better, (bn, bf)), q in zip(tests, q_values, strict=True):
            if q <= _ALPHA and f / n > rest_f / rest_n:
                findings.append(
                    {
                        "cluster": self.names[label],
                        "cluster_id": label,
                        "agent": agent,
                        "n": n,
                        "failures": f,
                        "rate": f / n,
                        "better_agent": better,
                        "better_rate": bf / bn,
                        "q_value": q,
                    }
                )
        findings.sort(key=lambda d: d["q_value"])
        return findings

    # --- patterns ---------------------------------------------------------------------------------------

    def _focus(self, keep: Any) -> tuple[QueryCluster | None, str | None, str | None]:
        """Where the sampled failures that ``keep`` selects concentrate: cluster, agent and node.

        The cluster is the one holding most of them (at least a quarter); agent and node are the most common
        among the selected failures of that cluster, or of all selected failures when none dominates.
        """
        chosen = [
            (item, int(label))
            for item, label in zip(self.t.failed.items, self.labels, strict=True)
            if keep(item)
        ]
        counter = Counter(label for _, label in chosen if label >= 0)
        cluster = None
        if counter:
            label, k = counter.most_common(1)[0]
            if 4 * k >= len(chosen):
                cluster = self.clusters[label]
                chosen = [c for c in chosen if c[1] == label]
        agents = Counter(item[2] for item, _ in chosen if item[2] is not None)
        nodes = Counter(item[5] or item[6] for item, _ in chosen if item[5] or item[6])
        top = lambda c: c.most_common(1)[0][0] if c else None  # noqa: E731
        return cluster, top(agents), top(nodes)

    def _contributors(
        self, agents: Iterable[str], nodes: Iterable[str], cluster: QueryCluster | None
    ) -> list:
        wanted = {("agent", a) for a in agents} | {("node", n) for n in nodes}
        if cluster is not None:
            wanted.add(("query_cluster", self.names[cluster.cluster_id]))
        rows = [r for r in self.attribution if r.significant and r.lift > 1 and (r.factor, r.level) in wanted]
        rows.sort(key=lambda r: (r.q_value, -r.lift))
        return rows[:3]

    def _pattern(
        self,
        pattern_type: str,
        description: str,
        fix: str,
        details: dict[str, Any],
        tracked: _Tracked,
        rate: float,
        cluster: QueryCluster | None,
    ) -> FailurePattern:
        rows = self._contributors(tracked.agents, tracked.nodes, cluster)
        if rows:
            top = rows[0]
            fix += (
                f". Failures are over-represented at {top.factor} {top.level!r}: {top.rate:.0%} of its "
                f"interactions fail against {top.baseline_rate:.0%} elsewhere (q = {top.q_value:.1g})"
            )
        details["contributors"] = [
            {k: getattr(r, k) for k in ("factor", "level", "n", "rate", "baseline_rate", "lift", "q_value")}
            for r in rows
        ]
        if cluster is not None:
            details.setdefault("cluster", self.names[cluster.cluster_id])
        return FailurePattern(
            pattern_type=pattern_type,
            description=description,
            frequency=tracked.count,
            rate=rate,
            severity=tracked.severity / tracked.count if tracked.count else 0.0,
            example_ids=list(tracked.examples or tracked.spare),
            affected_agents=dict(tracked.agents.most_common()),
            affected_nodes=dict(tracked.nodes.most_common()),
            suggested_fix=fix + ".",
            details=details,
        )

    def _signal_patterns(self) -> list[FailurePattern]:
        t, cfg = self.t, self.config
        out = []
        for name, bit in (
            ("low_rating", _LOW),
            ("hallucination", _HALLU),
            ("correction", _CORR),
            ("poor_retrieval", _RETR),
            ("slow", _SLOW),
        ):
            s = t.signals[name]
            if not s.count:
                continue
            diagnostic = self.diagnostics.get(name)
            if diagnostic is None or diagnostic.verdict == "explains":
                cluster, agent, node = self._focus(lambda item, bit=bit: item[3] & bit)
            else:  # the failures it shows up in are no sign of what it causes
                cluster = agent = node = None
            about = f" for queries about '{cluster.name}'" if cluster else ""
            agent = agent or next(iter(s.agents.most_common(1)), (None,))[0]
            node = node or next(iter(s.nodes.most_common(1)), (None,))[0]
            rate = s.count / s.seen
            details: dict[str, Any] = {}
            if name == "low_rating":
                kind = "low_rating"
                text = f"{s.count} of {s.seen} rated interactions ({rate:.1%}) got under {cfg.low_rating_threshold:g} stars or a thumbs down"
                who = f"agent {agent}" if agent else "the agents that answered them"
                fix = f"Add the low-rated answers{about} with corrections to the training and evaluation data of {who}"
                fix += self._route_hint(cluster)
                details["threshold"] = cfg.low_rating_threshold
            elif name == "correction":
                kind = "correction"
                text = f"{s.count} of {s.seen} answers ({rate:.1%}) were corrected by their users"
                who = f"agent {agent}" if agent else "the agents that answered them"
                fix = f"Use the corrections{about} as labels: add them to the training and evaluation data of {who}"
                fix += self._route_hint(cluster)
            elif name == "hallucination":
                kind = "hallucination"
                text = f"{s.count} of {s.seen} checked answers ({rate:.1%}) were flagged as hallucinated"
                fix = f"Ground the answers of {f'agent {agent}' if agent else 'the agents'}{about} in retrieved sources and add a self-check before answering"
            elif name == "poor_retrieval":
                kind = "poor_retrieval"
                text = (
                    f"{s.count} of {s.seen} interactions with retrieval ({rate:.1%}) failed to retrieve or got "
                    f"context of quality below {POOR_RETRIEVAL_QUALITY:g}"
                )
                topic = f"'{cluster.name}'" if cluster else "the failed queries"
                fix = f"Add documents covering {topic} to the retrieval index"
                fix += f" and tune the retriever in node '{node}'" if node else ""
                details["threshold"] = POOR_RETRIEVAL_QUALITY
            else:
                kind = "slow_response"
                latencies = [x[0] for x in t.slow_latencies.items if x[0] is not None]
                p50, p95 = (float(v) for v in np.percentile(latencies, [50, 95]))
                text = (
                    f"{s.count} of {s.seen} timed interactions ({rate:.1%}) took over {cfg.slow_response_ms:g} ms "
                    f"(median of those {p50:.0f} ms, p95 {p95:.0f} ms)"
                )
                where = f"node '{node}'" if node else f"agent {agent}" if agent else "the slow path"
                fix = (
                    f"Speed up {where}{about} with a timeout, caching or a faster path so answers return within "
                    f"{cfg.slow_response_ms:g} ms"
                )
                details |= {"threshold_ms": cfg.slow_response_ms, "median_ms": p50, "p95_ms": p95}
            text += "."
            if diagnostic is not None:
                text += " " + diagnostic.describe()
                details["diagnostic"] = {
                    k: getattr(diagnostic, k)
                    for k in (
                        "verdict",
                        "reference",
                        "share_failed",
                        "share_reference",
                        "lift",
                        "q_value",
                        "attributable",
                    )
                }
                fix = _diagnostic_fix(diagnostic, fix)
            out.append(self._pattern(kind, text, fix, details, s, rate, cluster))
        return out

    def _route_hint(self, cluster: QueryCluster | None) -> str:
        finding = next((f for f in self.findings if cluster and f["cluster_id"] == cluster.cluster_id), None)
        if finding is None:
            return ""
        return (
            f", or route them from {finding['agent']} to {finding['better_agent']}, which fails "
            f"{finding['better_rate']:.0%} of them against {finding['rate']:.0%}"
        )

    def _node_patterns(self) -> list[FailurePattern]:
        t = self.t
        out = []
        for node, s in t.node_errors.items():
            cluster, _, _ = self._focus(
                lambda item, node=node: item[3] & _ERROR and (item[5] or _NO_NODE) == node
            )
            about = f" (it fails most on queries about '{cluster.name}')" if cluster else ""
            visits = t.visits[node]
            types = t.error_types.get(node, Counter())
            kinds = ", ".join(f"{k} x{v}" for k, v in types.most_common(3))
            details: dict[str, Any] = {"node": node, "error_types": dict(types.most_common()), "runs": visits}
            if node == _NO_NODE:
                rate = s.count / t.signals["error"].seen
                text = f"{s.count} interactions ({rate:.1%}) raised without naming the node that failed" + (
                    f": {kinds}." if kinds else "."
                )
                fix = (
                    "Record node runs (attach CaptureHandler) or put 'failed_node' in the metadata, so these errors "
                    "can be traced to a node"
                )
                blamed = self._blamed_nodes()
                if blamed:
                    top, sample = blamed[0], self.nodes.sample  # type: ignore[union-attr]
                    text += (
                        f" Node runs from {sample.describe()} place {top.failures.rate:.0%} of the failures "
                        f"({top.failures.count} of {top.failures.n}) in node '{top.node}'."
                    )
                    fix = f"Fix the failing call in node '{top.node}'" + (f" ({kinds})" if kinds else "")
                    fix += f" or wrap it in retries with a fallback{about}"
                    details["sampled_nodes"] = {f.node: f.failures.rate for f in blamed}
                    details["node_sample"] = {
                        "interactions": sample.interactions,
                        "sampled": sample.sampled,
                        "fraction": sample.fraction,
                        "sample_rate": sample.rate,
                    }
                    details["estimated"] = sample.is_sample
            else:
                rate = s.count / visits if visits >= s.count else s.count / t.signals["error"].seen
                text = f"Node '{node}' raised in {s.count} interactions ({rate:.1%} of its runs)" + (
                    f": {kinds}." if kinds else "."
                )
                fix = f"Fix the failing call in node '{node}'" + (f" ({kinds})" if kinds else "")
                fix += f" or wrap it in retries with a fallback{about}"
            out.append(self._pattern("node_errors", text, fix, details, s, rate, cluster))
        return out

    def _blamed_nodes(self) -> list[Any]:
        """Nodes that raised in failed interactions of the capture sample, most failures first."""
        if self.nodes is None:
            return []
        return [f for f in self.nodes.nodes.values() if f.failures.count]

    def _routing_patterns(self) -> list[FailurePattern]:
        """One pattern for direct evidence (metadata, low confidence), one per agent failing a query cluster."""
        t, r = self.t, self.t.routing
        out = []
        chosen = fallback = None
        if r.count:
            said, fixes = [], []
            cluster = None
            if t.better:
                (chosen, fallback), k = t.better.most_common(1)[0]
                cluster, _, _ = self._focus(lambda item: item[3] & _ROUTING and item[2] == chosen)
                about = f" about '{cluster.name}'" if cluster else ""
                said.append(f"{t.better.total()} went to an agent their metadata names as the wrong one")
                fixes.append(
                    f"Route queries{about} to {fallback} instead of {chosen} ({k} interactions name {fallback})"
                )
            if t.low_confidence_failures:
                said.append(
                    f"{t.low_confidence_failures} failed after a choice made with confidence below {LOW_CONFIDENCE:g}"
                )
                fixes.append(
                    f"when the router's confidence is below {LOW_CONFIDENCE:g}, send the query to "
                    f"{fallback or 'the best agent of its query cluster'} or ask a clarifying question"
                )
            details = {
                "better_agent": {f"{a} -> {b}": k for (a, b), k in t.better.most_common()},
                "low_confidence_failures": t.low_confidence_failures,
                "confidence_threshold": LOW_CONFIDENCE,
            }
            text = f"{r.count} of {r.seen} routed interactions look mis-routed: " + "; ".join(said) + "."
            fix = fixes[0][0].upper() + "; ".join(fixes)[1:]
            out.append(self._pattern("routing_mistake", text, fix, details, r, r.count / r.seen, cluster))
        scale = _share(t.traffic.seen, len(t.traffic.items))
        for f in self.findings:
            cluster = self.clusters[f["cluster_id"]]
            if f["agent"] == chosen and f["better_agent"] == fallback:
                continue  # the direct evidence above already says it
            tracked = _Tracked()
            for item, label in zip(t.failed.items, self.labels, strict=True):
                if label == cluster.cluster_id and item[2] == f["agent"]:
                    tracked.hit(item[1], item[4], item[2], None)
            tracked.scale(f["failures"] * scale / max(1, tracked.count))
            text = (
                f"Agent {f['agent']} fails {f['rate']:.0%} of {f['n']} sampled queries about '{cluster.name}', "
                f"where {f['better_agent']} fails {f['better_rate']:.0%} (q = {f['q_value']:.1g})."
            )
            fix = f"Route queries about '{cluster.name}' to {f['better_agent']} instead of {f['agent']}"
            details = {**f, "estimated": True}
            out.append(self._pattern("routing_mistake", text, fix, details, tracked, f["rate"], cluster))
        return out

    def _cluster_patterns(self) -> list[FailurePattern]:
        t = self.t
        cells: dict[int, list[int]] = {}
        for (_, failed, _, _), label in zip(t.traffic.items, self.traffic_labels, strict=True):
            cell = cells.setdefault(int(label), [0, 0])
            cell[0] += 1
            cell[1] += failed
        out = []
        for c in self.clusters:
            tracked = _Tracked()
            signals: Counter[str] = Counter()
            sampled = 0
            for i in np.flatnonzero(self.labels == c.cluster_id):
                _, iid, agent, mask, severity, failed_node, slow_node, _ = t.failed.items[i]
                tracked.hit(iid, severity, agent, failed_node or slow_node)
                signals.update(name for bit, name in enumerate(SIGNALS) if mask >> bit & 1)
                sampled += 1
            tracked.scale(self.scale)
            n, f = cells.get(c.cluster_id, (0, 0))
            rate = f / n if n else tracked.count / t.n
            dominant = max(OUTCOME_SIGNALS, key=lambda name: signals[name])
            # a diagnostic that goes with failures overall and shows on most of these is the likely cause
            lead = max(
                (
                    name
                    for name in DIAGNOSTIC_SIGNALS
                    if self.diagnostics.get(name) is not None
                    and self.diagnostics[name].verdict == "explains"
                    and 2 * signals[name] >= sampled
                ),
                key=lambda name: signals[name],
                default=None,
            )
            agent = tracked.agents.most_common(1)[0][0] if tracked.agents else None
            node = tracked.nodes.most_common(1)[0][0] if tracked.nodes else None
            who = f"agent {agent}" if agent else "the agents"
            action = {
                "low_rating": f"add corrected answers for them to the training data of {who}",
                "correction": f"add their corrections to the training data of {who}",
                "error": f"fix the failing call in node '{node}'" if node else "find where they raise",
                "hallucination": f"ground the answers of {who} in retrieved sources",
                "poor_retrieval": f"add documents about '{c.name}' to the retrieval index",
                "slow": f"speed up {f'node {node!r}' if node else who} for them",
                "low_confidence": "add labeled examples like them so the router learns where they belong",
            }
            share = f"{rate:.0%} of such queries fail" if n else f"{rate:.1%} of all interactions"
            text = (
                f"{tracked.count} failed queries about '{c.name}' ({share}), mostly with {_WORDS[dominant]}"
            )
            fix = f'Queries like "{c.representatives[0]}" fail mostly with {_WORDS[dominant]}: '
            if lead is None:
                text += "."
                fix += action[dominant]
            else:
                with_lead = f"{signals[lead] / sampled:.0%} of them with {_WORDS[lead]}"
                text += f"; {with_lead}, which goes with failures."
                fix += f"{with_lead}, so {action[lead]}"
            fix += self._route_hint(c)
            details = {
                "cluster_id": c.cluster_id,
                "top_terms": list(c.top_terms),
                "representatives": list(c.representatives),
                "cohesion": c.cohesion,
                "signals": dict(signals.most_common()),
                "lead_diagnostic": lead,
                "sampled_traffic": n,
                "estimated": self.sampled,
                # what the queries were compared as: the application's logged embeddings, or computed
                "vectors": "query_embedding"
                if self.used_query_embeddings
                else ("embeddings" if self.embeddings is not None else "tfidf"),
            }
            out.append(self._pattern("failure_cluster", text, fix, details, tracked, rate, c))
        return out
