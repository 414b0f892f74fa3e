"""``select``: active selection of the window's interactions into the annotation queue."""

from __future__ import annotations

from typing import Any

from langgraph.runtime import Runtime

from cl_plugin.records import PointRef
from cl_plugin.store.points import point_decisions

from ..context import MaintenanceContext, MaintenanceState, Outcome, rows
from ..models import production_router
from ..points import learning


def select(state: MaintenanceState, runtime: Runtime[MaintenanceContext]) -> Outcome:
    """Queue the most informative interactions for labels; each selected item says, for the decision
    points learned, which point it is labeled at and among which options."""
    from cl_plugin.analysis.selection import ActiveLearningSelector

    ctx = runtime.context
    store = ctx.store
    started = (store.runs.get(state["run_id"]) or {}).get("started_at")

    def queued_by_this_run() -> list[dict[str, Any]]:
        return [i for i in store.queue.items() if started is not None and i["created_at"] >= started]

    # What an interrupted attempt queued is this run's selection: selecting again would pass those
    # items over as queued already and queue as many others.
    if not queued_by_this_run():
        selector = ActiveLearningSelector(ctx.config.active_learning, router=production_router(ctx.registry))
        picks = selector.select_for_annotation(
            rows(ctx, state), budget=ctx.budget, exclude_ids=store.queue.queued_ids()
        )
        store.queue.enqueue(picks)
    points = learning(ctx, state)
    decided: list[tuple[dict[str, Any], dict[str, Any]]] = []
    w = state["window"]
    for point in points or ():
        ref = PointRef.parse(point["point"])
        decided.append((point, point_decisions(store, *ref.key, start_time=w["start"], end_time=w["end"])))
    selected = []
    for item in queued_by_this_run():
        row = store.get_interaction(item["interaction_id"]) or {}
        entry = {
            "item_id": item["item_id"],
            "interaction_id": item["interaction_id"],
            "query": row.get("user_query"),
            "agent_selected": row.get("agent_selected"),
            "reason": item["selection_reason"],
        }
        # An interaction is labeled among the options of the first learned point it decided at (as
        # `cl-plugin annotate` offers them); a label naming an option of a later one counts for that one.
        made = sorted(
            (decisions[item["interaction_id"]]["timestamp"], k)
            for k, (_, decisions) in enumerate(decided)
            if item["interaction_id"] in decisions
        )
        for n, (_, k) in enumerate(made):
            point, decisions = decided[k]
            if n == 0:
                entry["point"] = point["name"]
                entry["chosen"] = decisions[item["interaction_id"]]["chosen"]
                entry["options"] = point["options"]
                entry["docs"] = point["docs"]
                entry["other_points"] = []
            else:
                entry["other_points"].append({"point": point["name"], "options": point["options"]})
        selected.append(entry)
    return Outcome({"selected": len(selected)}, {"selected": selected})
