"""Decision points as units of learning: naming one, reading its labeled traffic, finding its declared options.

A decision point is one ``(graph_name, node, kind)`` of a captured graph (see
:mod:`cl_plugin.store.points`, which lists them). This module is what the learning half needs on top:

* :class:`PointRef` names a point (``"support/triage/route"``) and derives its registry names, so the
  maintenance graph that trains a point's model and the :class:`~cl_plugin.serving.LearnedRouter` that
  serves it agree without configuration;
* :func:`point_rows` turns the interactions that decided at a point into rows the label and training code
  reads (:func:`cl_plugin.learning.training_data.prepare_training_data`): the option chosen there stands where the
  interaction's routed agent stands for the classic router, with the decision's propensity;
* :func:`declared_options` reads a compiled LangGraph graph for what each conditional edge may return (its
  path map, or its path function's ``Literal`` return annotation) and the docstrings of the nodes the
  options lead to, for annotators and the LLM judge;
* :func:`label_point` says at which point a queued interaction is labeled, and with which options.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from cl_plugin.records import PointRef, is_finite_number

if TYPE_CHECKING:
    from cl_plugin.store import Store

__all__ = ["MAX_OPTIONS", "choice_label", "declared_options", "label_point", "point_rows"]

#: A point with more options than this is not a choice a classifier learns (e.g. search moves).
MAX_OPTIONS = 20


def point_rows(
    store: Store,
    point: PointRef,
    rows: Iterable[Mapping[str, Any]],
) -> list[dict[str, Any]]:
    """The rows of the interactions that decided at ``point``, shaped for the label code.

    Each row is a copy of its interaction with ``agent_selected`` set to the option chosen at the point (the
    label code credits or blames the chosen option as it does the routed agent), ``answered_by`` dropped
    from its metadata (it names the classic router's agents), and two more keys: ``propensity`` (the
    probability the serving policy gave the chosen option, 1.0 when the decision was not served by a
    :class:`~cl_plugin.serving.LearnedRouter`), ``policy_choice`` (what the policy picked before it explored:
    the incumbent's choice) and ``point_decision`` (the decision's statistics: model version, A/B group,
    whether it fell back or explored).

    Args:
        store: the store holding the decisions.
        point: the point.
        rows: interaction rows (``store.query_interactions(...)``); the decisions are read for their window.

    Returns:
        One row per interaction of ``rows`` with a decision at the point, in the order of ``rows``.
    """
    from cl_plugin.store.points import point_decisions

    rows = list(rows)
    stamps = [r["timestamp"] for r in rows if is_finite_number(r.get("timestamp"))]
    if not stamps:
        return []
    # the store's end time is exclusive: just past the newest row, so that row's decision is read too
    end = math.nextafter(max(stamps), math.inf)
    decided = point_decisions(
        store, point.graph_name, point.node, point.kind, start_time=min(stamps), end_time=end
    )
    out = []
    for row in rows:
        decision = decided.get(row.get("interaction_id"))
        if decision is None:
            continue
        statistics = decision["statistics"] if isinstance(decision["statistics"], Mapping) else {}
        metadata = row.get("metadata") if isinstance(row.get("metadata"), Mapping) else {}
        propensity = statistics.get("propensity")
        out.append(
            {
                **row,
                "agent_selected": decision["chosen"],
                "agent_confidence": decision["confidence"],
                "metadata": {k: v for k, v in metadata.items() if k != "answered_by"},
                "propensity": float(propensity) if is_finite_number(propensity) and propensity > 0 else 1.0,
                "policy_choice": statistics.get("policy_choice") or decision["chosen"],
                "point_decision": dict(statistics),
            }
        )
    return out


def declared_options(graph: Any) -> dict[tuple[str, str], dict[str, Any]]:
    """What each conditional edge of a compiled (or uncompiled) LangGraph graph may choose.

    Args:
        graph: a ``CompiledStateGraph`` or ``StateGraph``.

    Returns:
        ``(node, "route")`` -> ``{"options": [...], "docs": {option: docstring of the node it leads to}}``
        for every conditional edge whose options are declared (a path map, or a ``Literal`` return
        annotation of its path function); an edge that may go anywhere is left out. Subgraphs are not
        searched.
    """
    builder = getattr(graph, "builder", graph)
    branches = getattr(builder, "branches", None) or {}
    nodes = getattr(builder, "nodes", None) or {}
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for source, specs in branches.items():
        for spec in specs.values():
            ends = getattr(spec, "ends", None)
            if not ends:
                continue
            entry = found.setdefault((str(source), "route"), {"options": [], "docs": {}})
            for option, target in ends.items():
                name = str(option)
                if name not in entry["options"]:
                    entry["options"].append(name)
                doc = _node_doc(nodes.get(target))
                if doc and name not in entry["docs"]:
                    entry["docs"][name] = doc
    return found


def _node_doc(node: Any) -> str | None:
    runnable = getattr(node, "runnable", None)
    func = getattr(runnable, "func", None) or getattr(runnable, "afunc", None)
    doc = getattr(func, "__doc__", None)
    if not isinstance(doc, str) or not doc.strip():
        return None
    return " ".join(doc.strip().split())[:500]


def label_point(
    store: Store, row: Mapping[str, Any], points: Mapping[tuple[Any, ...], Any], only: PointRef | None = None
) -> tuple[Any, str] | None:
    """The decision point an interaction is labeled at, with the option chosen there, or None (label the
    agent instead).

    Args:
        store: the store holding the interaction's decisions.
        row: the interaction (as :meth:`~cl_plugin.store.Store.get_interaction` returns it; empty for none).
        points: the store's decision points by key (``{p.key: p for p in store.decision_points()}``).
        only: the one point to label at; None for the first point the interaction decided at that
            maintenance learns by default (any kind but a ``Send`` fan-out, with 2 to ``MAX_OPTIONS`` options).

    Returns:
        ``(point, chosen)``, or None.
    """
    if not row:
        return None
    for decision in store.decisions(row["interaction_id"]):
        key = (row.get("graph_name"), decision["node"], decision["kind"])
        point = points.get(key)
        if point is None or decision["chosen"] is None:
            continue
        if only is not None:
            if key == only.key:
                return point, decision["chosen"]
        elif key[2] != "send" and point.learnable and len(point.all_options) <= MAX_OPTIONS:
            return point, decision["chosen"]
    return None


def choice_label(point: Any, choice: str) -> dict[str, str]:
    """The annotation queue's label for a human's choice: an option of the decision point found by
    :func:`label_point`, or an agent when the interaction has no such point (``point`` None)."""
    if point is None:
        return {"agent": choice}
    return {"option": choice, "point": PointRef.parse(point).model_name}
