"""``promote``: move ``production`` to the candidate (A/B testing off and ``auto_promote`` on)."""

from __future__ import annotations

from langgraph.runtime import Runtime

from cl_plugin.records import PointRef

from ..context import MaintenanceContext, MaintenanceState, Outcome
from ..models import promote_versions


def promote(state: MaintenanceState, runtime: Runtime[MaintenanceContext]) -> Outcome:
    """Promote the candidate that passed the gate (each decision point's that passed without needing an
    A/B test)."""
    ctx = runtime.context
    reason = f"maintenance run {state['run_id']}: gate passed"
    if "points" in state["retrain"]:
        promoted_points = {}
        for name, gate in state["gate"]["points"].items():
            if gate.get("needs_ab_test"):
                promoted_points[name] = {"not_promoted": "only an A/B test can show it is better"}
            elif gate["passed"]:
                trained = state["retrain"]["points"][name]
                promoted_points[name] = promote_versions(
                    ctx.registry,
                    trained["versions"],
                    reason,
                    names=PointRef.parse(trained["point"]).model_names(),
                )
        return Outcome({"points": promoted_points})
    return Outcome({"promoted": promote_versions(ctx.registry, state["retrain"]["versions"], reason)})
