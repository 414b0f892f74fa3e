"""Per-node figures from the captured node runs: how often each node raises, what failures it accounts
for, and how long it takes.

These figures need the ``node_runs`` detail, which capture sampling keeps for a share of the runs only
(:mod:`cl_plugin.capture.sampling`). They are therefore computed over the interactions of the unbiased sample and
carry its size (:class:`~cl_plugin.capture.sampling.DetailSample`); runs kept in full because they raised are left
out, as they would inflate every node's error rate. Interaction-level figures (failure rates, feedback,
end-to-end latency) come from :mod:`cl_plugin.analysis.metrics` over every row.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import Table as SATable
from sqlalchemy import select

from cl_plugin.analysis.metrics.measures import Latency, Rate, latency_summary
from cl_plugin.capture.sampling import DetailSample, detail_sample, in_detail_sample
from cl_plugin.store.tables import NodeRun

if TYPE_CHECKING:
    from cl_plugin.store import Store

__all__ = ["NodeFigures", "NodeMetrics", "node_figures", "node_metrics"]

_NODE_RUNS: SATable = NodeRun.__table__  # type: ignore[assignment]


@dataclass(frozen=True, slots=True)
class NodeFigures:
    """One graph node, over the sampled interactions that ran it.

    Attributes:
        node: the node's name.
        interactions: sampled interactions that ran the node.
        errors: its runs (attempts: a retried node runs more than once) that raised, of all its runs.
        failures: failed sampled interactions in which this node raised, of all failed sampled interactions
            (the node's share of the failures; shares can add up past 1 when several nodes raise in one run).
        latency: duration of its runs, in ms.
    """

    node: str
    interactions: int
    errors: Rate
    failures: Rate
    latency: Latency


@dataclass(frozen=True, slots=True)
class NodeMetrics:
    """Per-node figures and the sample they come from.

    Attributes:
        nodes: figures by node, the node accounting for most failures first.
        sample: the interactions looked at and how many of them the figures use.
        failed: failed interactions in the sample (``error_occurred``).
    """

    nodes: dict[str, NodeFigures]
    sample: DetailSample
    failed: int

    def describe(self) -> str:
        """Where the figures come from, for a report: ``"node figures from a 10% sample: 12 of 120 ..."``."""
        return f"node figures from {self.sample.describe()}"


class _Tally:
    def __init__(self) -> None:
        self.failed_ids: set[str] = set()
        self.runs: Counter[str] = Counter()
        self.raised: Counter[str] = Counter()
        self.seen: defaultdict[str, set[str]] = defaultdict(set)
        self.blamed: defaultdict[str, set[str]] = defaultdict(set)
        self.durations: defaultdict[str, list[float]] = defaultdict(list)
        self.n = self.sampled = self.kept = 0
        self.rate: float | None = None

    def interactions(self, rows: Iterable[Any]) -> list[str]:
        """Count a chunk of interactions; returns the ids of those in the sample."""
        chunk = list(rows)
        part = detail_sample(chunk)
        self.n += part.interactions
        self.sampled += part.sampled
        self.kept += part.kept_errors
        self.rate = part.rate if part.rate is not None else self.rate
        ids = []
        for row in chunk:
            iid = _get(row, "interaction_id")
            if isinstance(iid, str) and in_detail_sample(row):
                ids.append(iid)
                if _get(row, "error_occurred"):
                    self.failed_ids.add(iid)
        return ids

    def run(self, iid: str, node: Any, status: Any, duration_ms: Any) -> None:
        if not isinstance(node, str):
            return
        self.runs[node] += 1
        self.seen[node].add(iid)
        if status == "error":
            self.raised[node] += 1
            if iid in self.failed_ids:
                self.blamed[node].add(iid)
        if isinstance(duration_ms, int | float):
            self.durations[node].append(float(duration_ms))

    def result(self) -> NodeMetrics:
        failed = len(self.failed_ids)
        nodes = {
            node: NodeFigures(
                node=node,
                interactions=len(self.seen[node]),
                errors=Rate.of(self.raised[node], self.runs[node]),
                failures=Rate.of(len(self.blamed[node]), failed),
                latency=latency_summary(self.durations[node]),
            )
            for node in self.runs
        }
        order = sorted(nodes.values(), key=lambda f: (-f.failures.count, -f.errors.count, f.node))
        sample = DetailSample(self.n, self.sampled, self.kept, self.rate)
        return NodeMetrics({f.node: f for f in order}, sample, failed)


def _get(row: Any, key: str) -> Any:
    return row.get(key) if isinstance(row, Mapping) else getattr(row, key, None)


def node_figures(interactions: Iterable[Any], node_runs: Iterable[Mapping[str, Any]]) -> NodeMetrics:
    """Per-node figures from interaction rows and their node runs (as the store returns them); no I/O.

    Args:
        interactions: interaction dicts or records; their sampling marks decide which node runs count.
        node_runs: ``node_runs`` rows (``interaction_id``, ``kind``, ``node``, ``status``, ``duration_ms``);
            rows of other interactions, or of kinds other than ``node`` (models, tools), are ignored.

    Returns:
        The :class:`NodeMetrics`.
    """
    tally = _Tally()
    ids = set(tally.interactions(interactions))
    for run in node_runs:
        iid = run.get("interaction_id")
        if iid in ids and run.get("kind") == "node":
            tally.run(iid, run.get("node"), run.get("status"), run.get("duration_ms"))
    return tally.result()


def has_node_runs(store: Store) -> bool:
    """Whether the store holds any captured node run (a store fed by the logger alone has none)."""
    with store.read_connection() as conn:
        return conn.execute(select(_NODE_RUNS.c.interaction_id).limit(1)).first() is not None


def node_metrics(store: Store, *, chunk_size: int = 5000, **filters: Any) -> NodeMetrics:
    """Per-node figures of the stored interactions matching ``filters``, over the capture sample.

    Interactions are scanned in chunks (``Store.iter_interactions``) and the node runs of each chunk's
    sampled interactions read with one query per 500 of them; memory holds per-node counts, the ids of
    failed sampled interactions and the node durations.

    Args:
        store: the store.
        chunk_size: interactions per read.
        **filters: the filters of :meth:`Store.query_interactions`.

    Returns:
        The :class:`NodeMetrics`.

    Example:
        >>> from typing import TypedDict
        >>> from langgraph.graph import StateGraph
        >>> from cl_plugin import CaptureHandler
        >>> class State(TypedDict):
        ...     query: str
        >>> builder = StateGraph(State)
        >>> _ = builder.add_node("lookup", lambda s: {"query": s["query"]})
        >>> _ = builder.set_entry_point("lookup")
        >>> graph = builder.compile()
        >>> with CaptureHandler("sqlite://") as handler:
        ...     for _ in range(3):
        ...         _ = graph.invoke({"query": "hi"}, config={"callbacks": [handler]})
        ...     _ = handler.flush()
        ...     figures = node_metrics(handler.store)
        >>> figures.describe(), figures.nodes["lookup"].errors
        ('node figures from all 3 interactions', Rate(count=0, n=3, rate=0.0))
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1 (got {chunk_size})")
    n = _NODE_RUNS.c
    tally = _Tally()
    for chunk in store.iter_interactions(chunk_size=chunk_size, **filters):
        ids = tally.interactions(chunk)
        for start in range(0, len(ids), 500):
            stmt = select(n.interaction_id, n.node, n.status, n.duration_ms).where(
                n.kind == "node", n.interaction_id.in_(ids[start : start + 500])
            )
            with store._lock, store.engine.connect() as conn:
                rows = conn.execute(stmt).all()
            for row in rows:
                tally.run(*row)
    return tally.result()
