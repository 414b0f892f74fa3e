"""The one pass over the interactions: exact counts per signal and factor level, and two bounded
uniform samples (failures for clustering, all traffic for per-cluster rates by agent)."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cl_plugin.analysis.signals import (
    _BEST_KEYS,
    _CONFIDENCE_BINS,
    _CORR,
    _ERROR,
    _EXAMPLES,
    _HALLU,
    _LATENCY_BINS,
    _NO_NODE,
    _OUTCOME,
    _RETRIEVAL_BINS,
    _ROUTING,
    _SLOW,
    DIAGNOSTIC_SIGNALS,
    OUTCOME_SIGNALS,
    SIGNALS,
    _bucket,
    _error_kind,
    _Row,
    _signals,
    _vector,
)
from cl_plugin.config import FailureAnalysisConfig
from cl_plugin.outcomes import LOW_CONFIDENCE, OutcomeCounter
from cl_plugin.outcomes import as_number as _number

if TYPE_CHECKING:
    pass

__all__ = ["Tally", "Tracked"]


@dataclass(slots=True)
class Tracked:
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


class Tally:
    """Everything :class:`FailurePatternAnalyzer` needs from a stream, in memory bounded by the samples."""

    def __init__(self, config: FailureAnalysisConfig, sample_size: int) -> None:
        self.low, self.slow_ms = config.low_rating_threshold, config.slow_response_ms
        self.n = self.failures = 0
        self.detail_sample = self.detail_kept_errors = 0
        self.outcome = OutcomeCounter(config.low_rating_threshold)
        # per diagnostic, over the interactions that could show it: [failed, failed with it, rated good,
        # rated good with it, not failed, not failed with it]
        self.split = {name: [0, 0, 0, 0, 0, 0] for name in DIAGNOSTIC_SIGNALS}
        self.signals = {name: Tracked() for name in SIGNALS}
        self.routing = Tracked()
        self.better: Counter[tuple[str, str]] = Counter()
        self.low_confidence_failures = 0
        self.node_errors: dict[str, Tracked] = {}
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
            self.node_errors.setdefault(node, Tracked()).hit(iid, severity, agent, node)
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
