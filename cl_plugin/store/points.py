"""Decision points: where a captured graph decides, what it chose among, and how much of it is labeled.

A decision point is one ``(graph_name, node, kind)``: the node of a graph where decisions of one kind are
made (a conditional edge's route, a ``Command(goto=...)``, a ``Send`` fan-out, a tool choice, a decision
recorded with :func:`cl_plugin.record_decision`). :func:`decision_points` lists every point the store has
seen, with the options observed there and the label coverage of its interactions, computed in the database
(two grouped queries, whatever the number of decisions).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson
from sqlalchemy import and_, case, distinct, func, or_, select

from cl_plugin.store.filters import interaction_conditions
from cl_plugin.store.tables import AnnotationItem, Decision, Interaction

if TYPE_CHECKING:
    from cl_plugin.store.store import Store

__all__ = ["DecisionPoint", "decision_points", "point_decisions"]

_D = Decision.__table__.c  # type: ignore[attr-defined]
_I = Interaction.__table__.c  # type: ignore[attr-defined]
_A = AnnotationItem.__table__.c  # type: ignore[attr-defined]


@dataclass(frozen=True)
class DecisionPoint:
    """One place where a graph decides, as the store has seen it.

    Attributes:
        graph_name: the graph (the interactions' ``graph_name``; None when it was not recorded).
        node: the node that decided (None for decisions logged without one).
        kind: ``"route"``, ``"send"``, ``"tool"``, or a kind given to ``record_decision``.
        decisions: how many decisions were made there.
        interactions: how many interactions made at least one.
        options: each option chosen there -> how often, most chosen first.
        declared: options named as alternatives by the decisions there (``record_decision(alternatives=...)``,
            a served :class:`~cl_plugin.serving.LearnedRouter`) but never chosen, sorted.
        rated: interactions with a user rating (score or thumbs).
        annotated: interactions with a label from the annotation queue.
        first_seen, last_seen: unix times of the first and the last decision.
    """

    graph_name: str | None
    node: str | None
    kind: str
    decisions: int
    interactions: int
    options: dict[str, int] = field(default_factory=dict)
    declared: tuple[str, ...] = ()
    rated: int = 0
    annotated: int = 0
    first_seen: float | None = None
    last_seen: float | None = None

    @property
    def key(self) -> tuple[str | None, str | None, str]:
        """``(graph_name, node, kind)``."""
        return (self.graph_name, self.node, self.kind)

    @property
    def all_options(self) -> list[str]:
        """Every option of the point: those chosen, most chosen first, then the declared ones."""
        return [*self.options, *self.declared]

    @property
    def learnable(self) -> bool:
        """The point has at least two options: there is a choice to learn."""
        return len(self.all_options) >= 2


def decision_points(store: Store, **filters: Any) -> list[DecisionPoint]:
    """Every decision point of the interactions matching ``filters``, most decisions first.

    Args:
        store: the store.
        **filters: the filters of :meth:`Store.query_interactions` (``start_time``, ``graph_name``, ...).

    Returns:
        The :class:`DecisionPoint` list.

    Raises:
        StoreSchemaError: the database is behind the newest migration.
    """
    joined = Decision.__table__.join(Interaction.__table__, _D.interaction_id == _I.interaction_id)
    where = interaction_conditions(**filters)
    point = (_I.graph_name, _D.node, _D.kind)
    rated = or_(_I.user_feedback_score.is_not(None), _I.thumbs_up_down.is_not(None))
    totals = (
        select(
            *point,
            func.count(),
            func.count(distinct(_D.interaction_id)),
            func.count(distinct(case((rated, _D.interaction_id)))),
            func.count(distinct(_A.interaction_id)),
            func.min(_D.timestamp),
            func.max(_D.timestamp),
        )
        .select_from(
            joined.outerjoin(
                AnnotationItem.__table__,
                and_(_A.interaction_id == _D.interaction_id, _A.status == "labeled"),
            )
        )
        .where(*where)
        .group_by(*point)
    )
    chosen = (
        select(*point, _D.chosen, func.count())
        .select_from(joined)
        .where(_D.chosen.is_not(None), *where)
        .group_by(*point, _D.chosen)
    )
    alternatives = (
        select(*point, _D.alternatives)
        .select_from(joined)
        .where(_D.alternatives.is_not(None), *where)
        .group_by(*point, _D.alternatives)
    )
    with store.read_connection() as conn:
        counts = conn.execute(totals).all()
        options: dict[tuple[Any, ...], dict[str, int]] = {}
        for graph, node, kind, option, n in conn.execute(chosen):
            options.setdefault((graph, node, kind), {})[option] = n
        named: dict[tuple[Any, ...], set[str]] = {}
        for graph, node, kind, text in conn.execute(alternatives):
            named.setdefault((graph, node, kind), set()).update(_option_names(text))
    points = [
        DecisionPoint(
            graph_name=graph,
            node=node,
            kind=kind,
            decisions=n,
            interactions=runs,
            options=dict(
                sorted(options.get((graph, node, kind), {}).items(), key=lambda kv: (-kv[1], kv[0]))
            ),
            declared=tuple(
                sorted(named.get((graph, node, kind), set()) - set(options.get((graph, node, kind), {})))
            ),
            rated=rated_runs,
            annotated=labeled,
            first_seen=first,
            last_seen=last,
        )
        for graph, node, kind, n, runs, rated_runs, labeled, first, last in counts
    ]
    return sorted(points, key=lambda p: (-p.decisions, p.graph_name or "", p.node or "", p.kind))


def _option_names(text: str | None) -> list[str]:
    """The option names in a decision's stored ``alternatives``: a dict's keys or a list's strings."""
    try:
        value = orjson.loads(text) if text else None
    except orjson.JSONDecodeError:
        return []
    if isinstance(value, dict):
        return [str(k) for k in value]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, str)]
    return []


def point_decisions(
    store: Store, graph_name: str | None, node: str | None, kind: str, **filters: Any
) -> dict[str, dict[str, Any]]:
    """The first decision each interaction made at one decision point.

    Args:
        store: the store.
        graph_name, node, kind: the point (None matches decisions recorded without one).
        **filters: the filters of :meth:`Store.query_interactions` (``start_time``, ``end_time``, ...).

    Returns:
        interaction id -> ``{"chosen", "confidence", "alternatives", "statistics", "timestamp"}`` with
        ``alternatives`` and ``statistics`` parsed (None when absent or unreadable).
    """
    joined = Decision.__table__.join(Interaction.__table__, _D.interaction_id == _I.interaction_id)
    where = [
        *interaction_conditions(**filters),
        _I.graph_name.is_(None) if graph_name is None else _I.graph_name == graph_name,
        _D.node.is_(None) if node is None else _D.node == node,
        _D.kind == kind,
        _D.chosen.is_not(None),
    ]
    query = (
        select(_D.interaction_id, _D.chosen, _D.confidence, _D.alternatives, _D.statistics, _D.timestamp)
        .select_from(joined)
        .where(*where)
        .order_by(_D.timestamp, _D.decision_id)
    )
    found: dict[str, dict[str, Any]] = {}
    with store.read_connection() as conn:
        for iid, chosen, confidence, alternatives, statistics, t in conn.execute(query):
            if iid in found:
                continue
            found[iid] = {
                "chosen": chosen,
                "confidence": confidence,
                "alternatives": _parsed(alternatives),
                "statistics": _parsed(statistics),
                "timestamp": t,
            }
    return found


def _parsed(text: str | None) -> Any:
    try:
        return orjson.loads(text) if text else None
    except orjson.JSONDecodeError:
        return None
