"""The figures one report holds, read from the store: :class:`ReportData`.

Every number comes from the store: the summary and the per-bucket figures from
:func:`~cl_plugin.analysis.metrics.store_metrics` and :func:`~cl_plugin.analysis.metrics.store_metrics_by_window`
(aggregated in SQL), the failure patterns from :class:`~cl_plugin.analysis.FailurePatternAnalyzer` over one
chunked scan of the window (:meth:`~cl_plugin.store.Store.iter_interactions`), which also counts the agent
mix and keeps a bounded uniform sample of latencies. Memory does not grow with the store.
"""

from __future__ import annotations

import html
import math
import random
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from functools import cached_property
from typing import Any

import numpy as np

from cl_plugin.analysis import FailurePatternAnalyzer
from cl_plugin.analysis.metrics import (
    node_metrics,
    point_metrics,
    router_metrics,
    store_metrics,
    store_metrics_by_window,
)
from cl_plugin.analysis.metrics.measures import Calibration, Window, _calibration, _width
from cl_plugin.analysis.metrics.nodes import has_node_runs
from cl_plugin.analysis.metrics.queries import _probabilities
from cl_plugin.errors import ConfigError
from cl_plugin.learning.registry import ModelRegistry
from cl_plugin.privacy import default_redactor
from cl_plugin.store import Store

__all__ = ["ReportData"]

_BUCKETS = (
    1,
    5,
    10,
    30,
    60,
    300,
    900,
    1800,
    3600,
    3 * 3600,
    6 * 3600,
    12 * 3600,
    86400,
    7 * 86400,
    28 * 86400,
)
_MAX_BUCKETS = 48
_ANNOTATION_KEYS = ("agent", "best_agent")


def _period(value: Window, key: str) -> tuple[float, float]:
    try:
        return _width(value)
    except ValueError:
        raise ConfigError(
            f"{key} must be 'hour', 'day', 'week' or a number of seconds > 0 (got {value!r})", key=key
        ) from None


class _Scan:
    """One pass over the window's interactions beside the failure analyzer: the agent mix per bucket and a
    uniform reservoir sample of latencies (Algorithm R, seeded, so a report is reproducible)."""

    def __init__(self, width: float, shift: float, max_points: int) -> None:
        self.width, self.shift, self.size = width, shift, max_points
        self.agents: Counter[tuple[int, str]] = Counter()
        self.latencies: list[float] = []
        self.seen = 0
        self._rng = random.Random(0)

    def chunks(self, source: Iterable[list[dict[str, Any]]]) -> Iterator[list[dict[str, Any]]]:
        for chunk in source:
            for row in chunk:
                b = math.floor((row["timestamp"] + self.shift) / self.width)
                self.agents[b, row["agent_selected"] or "(none)"] += 1
                ms = row["latency_ms"]
                if ms is not None and ms > 0:
                    self.seen += 1
                    if len(self.latencies) < self.size:
                        self.latencies.append(ms)
                    elif (k := self._rng.randrange(self.seen)) < self.size:
                        self.latencies[k] = ms
            yield chunk


class ReportData:
    """What each section of the report shows, read from the store when a section first asks for it: the
    failure patterns, the agent mix and the latency sample in one pass over the window, the rest in SQL.
    A page that shows some sections (the web app's) reads only what those need."""

    def __init__(
        self,
        store: Store,
        start: float | None,
        end: float | None,
        bucket: Window | None,
        analyzer: FailurePatternAnalyzer,
        max_points: int,
        max_rows: int,
        chunk_size: int,
        filters: Mapping[str, Any] | None = None,
    ) -> None:
        """Args as for :func:`~cl_plugin.report.build.build_report`; ``filters`` narrows every figure to the
        interactions matching them (the filters of :meth:`~cl_plugin.store.Store.query_interactions`, e.g.
        ``graph_name``)."""
        self.store, self.start, self.end = store, start, end
        self.max_points, self.max_rows = max_points, max_rows
        self.filters = dict(filters or {})
        self._bucket, self._analyzer, self._chunk_size = bucket, analyzer, chunk_size
        self._redactor = default_redactor()
        self._span = {"start_time": start, "end_time": end, **self.filters}

    @cached_property
    def stats(self) -> dict[str, Any]:
        return self.store.statistics(**self._span)

    @cached_property
    def summary(self) -> dict[str, Any]:
        return store_metrics(self.store, **self._span)

    @cached_property
    def _buckets(self) -> tuple[Window, float, float]:
        """The bucket of the plots over time: at most 48 over the window's interactions unless given."""
        bucket = self._bucket
        if bucket is None:
            first, last = self.stats["first_timestamp"] or 0.0, self.stats["last_timestamp"] or 0.0
            bucket = next((w for w in _BUCKETS if (last - first) / w < _MAX_BUCKETS), _BUCKETS[-1])
        return (bucket, *_period(bucket, "bucket"))

    @property
    def width(self) -> float:
        return self._buckets[1]

    @cached_property
    def series(self) -> list[dict[str, Any]]:
        if not self.stats["total_interactions"]:
            return []
        return store_metrics_by_window(self.store, self._buckets[0], **self._span)

    @cached_property
    def _scanned(self) -> tuple[_Scan, Any]:
        scan = _Scan(self.width, self._buckets[2], self.max_points)
        chunks = scan.chunks(self.store.iter_interactions(chunk_size=self._chunk_size, **self._span))
        # Node runs of the capture sample tie captured errors to the nodes that raised them; a store
        # without node runs (interactions logged, not captured) is not scanned for them.
        nodes = (
            node_metrics(self.store, chunk_size=self._chunk_size, **self._span)
            if has_node_runs(self.store)
            else None
        )
        return scan, self._analyzer.analyze_stream(chunks, nodes=nodes)

    @property
    def scan(self) -> _Scan:
        return self._scanned[0]

    @property
    def analysis(self) -> Any:
        return self._scanned[1]

    @cached_property
    def router(self) -> Any:
        return router_metrics(self.store, **self._span)

    @cached_property
    def calibration(self) -> Calibration:
        return self._calibration()

    @cached_property
    def points(self) -> list[Any]:
        return point_metrics(self.store, self._registry(), **self._span)

    @cached_property
    def drift(self) -> list[dict[str, Any]]:
        start, end = self.start, self.end
        return [e for e in self.store.drift.events(since=start) if end is None or e["detected_at"] < end]

    # -- data -----------------------------------------------------------------------------------------

    def _calibration(self) -> Calibration:
        """Route decisions against the truth: ``best_agent`` metadata (as :func:`router_metrics` reads it),
        plus labeled annotations of interactions without it, the newest ``max_points`` of them."""
        bins = self.router.calibration.bins
        count = np.array([b.count for b in bins], dtype=float)
        conf = np.array([b.count * (b.mean_confidence or 0.0) for b in bins])
        right = np.array([b.count * (b.accuracy or 0.0) for b in bins])
        labeled = self.store.queue.items("labeled")[-self.max_points :]
        for item in labeled:
            label = item["label"] if isinstance(item["label"], dict) else {}
            truth = next((label[k] for k in _ANNOTATION_KEYS if isinstance(label.get(k), str)), None)
            row = self.store.get_interaction(item["interaction_id"]) if truth else None
            if row is None or isinstance(row["metadata"].get("best_agent"), str) or not self._in_window(row):
                continue
            routes = self.store.decisions(row["interaction_id"], kind="route")
            probs = next((p for d in routes if (p := _probabilities(d["alternatives"]))), None)
            if probs:
                predicted = max(probs, key=probs.__getitem__)
                b = min(math.floor(probs[predicted] * len(bins)), len(bins) - 1)
                count[b] += 1
                conf[b] += probs[predicted]
                right[b] += predicted == truth
        return _calibration(count.astype(int), conf, right)

    def _registry(self) -> ModelRegistry | None:
        """The registry over the store's model records, to read each point's router versions (no artifact
        is loaded, so its artifact directory is never opened); None when no model is registered."""
        if not self.store.models.names():
            return None
        return ModelRegistry(self.store, "cache/models/artifacts")

    def _in_window(self, row: dict[str, Any]) -> bool:
        ts, graph = row["timestamp"], self.filters.get("graph_name")
        return (
            (self.start is None or ts >= self.start)
            and (self.end is None or ts < self.end)
            and (graph is None or row.get("graph_name") == graph)
        )

    def queries(self, interaction_ids: Iterable[str]) -> list[str]:
        """The stored (redacted) queries of some interactions, in order; unknown ids are skipped."""
        rows = (self.store.get_interaction(iid) for iid in dict.fromkeys(interaction_ids))
        return [row["user_query"] for row in rows if row is not None]

    def queue(self) -> tuple[Counter[str], list[dict[str, Any]]]:
        """Items per status, and the ``max_rows`` pending items of highest priority with their queries."""
        items = self.store.queue.items()
        pending = sorted((i for i in items if i["status"] == "pending"), key=lambda i: -i["priority"])
        top = pending[: self.max_rows]
        rows = {iid: self.store.get_interaction(iid) for iid in (i["interaction_id"] for i in top)}
        return Counter(i["status"] for i in items), [
            i | {"interaction": rows[i["interaction_id"]]} for i in top
        ]

    def models(self) -> list[dict[str, Any]]:
        """Every registered model: its versions, where its aliases point, and its newest alias moves."""
        out = []
        for name in self.store.models.names():
            history = self.store.models.alias_history(name)
            aliases = {a: self.store.models.alias(name, a) for a in sorted({m["alias"] for m in history})}
            out.append(
                {
                    "name": name,
                    "versions": self.store.models.versions(name)[-self.max_rows :],
                    "aliases": aliases,
                    "history": history[-self.max_rows :],
                }
            )
        return out

    def ab_tests(self) -> list[dict[str, Any]]:
        """Each A/B test's status and analysis, as :meth:`ABTestFramework.get_test_status` gives it."""
        from cl_plugin.abtest import ABTestFramework

        tests = self.store.ab.list()
        if not tests:
            return []
        framework = ABTestFramework(store=self.store)
        try:
            return [framework.get_test_status(t["test_id"]) for t in tests[-self.max_rows :]]
        finally:
            framework.close()

    # -- rendering ------------------------------------------------------------------------------------

    def text(self, value: Any) -> str:
        """Any text for the page: redacted, then escaped."""
        return html.escape(self._redactor.safe_redact(str(value)))
