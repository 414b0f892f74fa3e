"""The decision points a run learns (``maintenance.points``), and their options: seen in traffic and
declared by the graphs' conditional edges."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from cl_plugin.learning.points import MAX_OPTIONS, declared_options
from cl_plugin.records import PointRef

from .context import MODEL_NAMES, MaintenanceContext, MaintenanceState


def learning(ctx: MaintenanceContext, state: MaintenanceState) -> list[dict[str, Any]] | None:
    """The decision points this run learns, each ``{"point", "name", "options", "docs"}``; None for the
    classic router (see ``maintenance.points``)."""
    m = ctx.m
    if m.points is None and ctx.registry.get_alias(MODEL_NAMES["router"], "production") is not None:
        return None
    w = state["window"]
    seen = {p.key: p for p in ctx.store.decision_points(start_time=w["start"], end_time=w["end"])}
    if m.points is None or m.points == "auto":
        refs = [
            PointRef(*p.key)
            for p in seen.values()
            if p.kind != "send" and 2 <= len(options(p, ctx.declared)) <= MAX_OPTIONS
        ]
        if not refs and m.points is None:  # interactions logged without decisions (the classic logger)
            return None
    else:
        refs = [PointRef.parse(spec) for spec in m.points]
    out = []
    for ref in refs:
        entry = ctx.declared.get(ref.key) or ctx.declared.get((None, ref.node, ref.kind)) or {}
        out.append(
            {
                "point": str(ref),
                "name": ref.model_name,
                "options": options(seen.get(ref.key), ctx.declared, ref),
                "docs": entry.get("docs", {}),
            }
        )
    return out


def declared(graphs: Sequence[Any]) -> dict[tuple[str | None, str | None, str], dict[str, Any]]:
    """Declared options of the given graphs' conditional edges, by point; also by ``(None, node, kind)``."""
    found: dict[tuple[str | None, str | None, str], dict[str, Any]] = {}
    for graph in graphs:
        name = getattr(graph, "name", None)
        for (node, kind), entry in declared_options(graph).items():
            found[(name, node, kind)] = entry
            found.setdefault((None, node, kind), entry)
    return found


def options(point: Any, declared: Mapping[tuple, dict[str, Any]], ref: PointRef | None = None) -> list[str]:
    """A point's options: those seen in traffic (chosen or named as alternatives), then the declared ones."""
    key = ref.key if ref is not None else point.key
    seen = list(point.all_options) if point is not None else []
    entry = declared.get(key) or declared.get((None, key[1], key[2])) or {}
    return list(dict.fromkeys([*seen, *entry.get("options", ())]))


def exploration(point_data: list[dict[str, Any]]) -> dict[str, Any]:
    """What exploring cost: the good-rating rate of explored decisions against the others, of those rated
    good or bad (as the labels read a rating, :func:`~cl_plugin.records.rating_outcome`)."""
    from cl_plugin.records import rating_outcome

    explored = [r for r in point_data if r["point_decision"].get("explored")]
    if not explored:
        return {"explored": 0}

    def good_rate(group: list[dict[str, Any]]) -> float | None:
        outcomes = [
            rating_outcome(r.get("user_feedback_score"), r.get("thumbs_up_down"), r.get("corrections"))
            for r in group
        ]
        rated = [o for o in outcomes if o is not None]
        return round(rated.count("good") / len(rated), 4) if rated else None

    served = [r for r in point_data if r["point_decision"].get("served_by")]
    return {
        "explored": len(explored),
        "served": len(served),
        "rate": round(len(explored) / len(served), 4) if served else None,
        "good_rate_explored": good_rate(explored),
        "good_rate_not_explored": good_rate([r for r in served if not r["point_decision"].get("explored")]),
    }
