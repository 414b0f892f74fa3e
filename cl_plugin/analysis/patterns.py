"""From a tally to a :class:`~cl_plugin.analysis.findings.FailureAnalysis`: the statistical tests (Wilson
intervals, Fisher's exact test, Benjamini-Hochberg), the diagnostics, the clusters and the ranked
patterns with their fixes."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import stats

from cl_plugin.analysis.clustering import FailureClusterer, QueryCluster
from cl_plugin.analysis.findings import Attribution, Diagnostic, FailureAnalysis
from cl_plugin.analysis.signals import (
    _ALPHA,
    _CORR,
    _ERROR,
    _HALLU,
    _LOW,
    _MIN_GROUP,
    _NO_NODE,
    _RETR,
    _ROUTING,
    _SLOW,
    _WORDS,
    DIAGNOSTIC_SIGNALS,
    OUTCOME_SIGNALS,
    SIGNALS,
    UBIQUITOUS,
    _stack,
)
from cl_plugin.analysis.tally import _FACTORS, Tally, Tracked
from cl_plugin.config import FailureAnalysisConfig
from cl_plugin.outcomes import LOW_CONFIDENCE, POOR_RETRIEVAL_QUALITY
from cl_plugin.records import FailurePattern

if TYPE_CHECKING:
    from langchain_core.embeddings import Embeddings

    from cl_plugin.analysis.metrics.nodes import NodeMetrics


__all__ = ["PatternReport"]


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


class PatternReport:
    """Turns a :class:`Tally` into a :class:`FailureAnalysis`."""

    def __init__(
        self,
        tally: Tally,
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
        tracked: Tracked,
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
            tracked = Tracked()
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
            tracked = Tracked()
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
