"""``ab_test``: start an A/B test of production (or of a decision point's incumbent) against the candidate."""

from __future__ import annotations

from typing import Any

from langgraph.runtime import Runtime

from cl_plugin.records import PointRef
from cl_plugin.serving import point_test_prefix

from ..context import RECORDED_POLICY, TEST_PREFIX, MaintenanceContext, MaintenanceState, Outcome
from ..models import describe


def ab_test(state: MaintenanceState, runtime: Runtime[MaintenanceContext]) -> Outcome:
    """One experiment at a time (per decision point): a candidate waits while another's test runs; a test
    of this candidate is the one an interrupted attempt of this step started."""
    from cl_plugin.abtest import ABTestFramework

    ctx = runtime.context
    if "points" in state["retrain"]:
        return _ab_test_points(ctx, state)
    candidate, production = state["retrain"]["versions"], state["retrain"]["production"]
    running = [  # a test of this candidate is the one an interrupted attempt of this step started
        t["test_id"]
        for t in ctx.store.ab.list(status="running")
        if t["name"].startswith(TEST_PREFIX) and t["model_b"] != describe(candidate)
    ]
    if running:  # one experiment at a time: the candidate waits for the running test's verdict
        return Outcome({"status": "skipped", "reason": f"test {running[0]} is still running"})
    framework = ABTestFramework(ctx.config.ab_testing, store=ctx.store)
    test_id = framework.create_test(  # the running test of that name, if there is one
        f"{TEST_PREFIX}router v{production['router']} vs v{candidate['router']}",
        model_a=describe(production),
        model_b=describe(candidate),
    )
    framework.close()
    return Outcome({"test_id": test_id, "model_a": production, "model_b": candidate})


def _ab_test_points(ctx: MaintenanceContext, state: MaintenanceState) -> Outcome:
    from cl_plugin.abtest import ABTestFramework

    framework = ABTestFramework(ctx.config.ab_testing, store=ctx.store)
    running = ctx.store.ab.list(status="running")
    report: dict[str, Any] = {}
    for name, gate in state["gate"]["points"].items():
        if not gate["passed"]:
            continue
        trained = state["retrain"]["points"][name]
        ref = PointRef.parse(trained["point"])
        prefix = point_test_prefix(ref)
        candidate = describe(trained["versions"])
        # a test of this candidate is the one an interrupted attempt of this step started
        other = [t["test_id"] for t in running if t["name"].startswith(prefix) and t["model_b"] != candidate]
        if other:  # one experiment per point at a time: the candidate waits for the running test's verdict
            report[name] = {"status": "skipped", "reason": f"test {other[0]} is still running"}
            continue
        incumbent = describe(trained["production"]) if trained.get("production") else RECORDED_POLICY
        test_id = framework.create_test(
            f"{prefix}{incumbent} vs {candidate}", model_a=incumbent, model_b=candidate
        )
        report[name] = {"test_id": test_id, "model_a": incumbent, "model_b": candidate}
    framework.close()
    return Outcome({"points": report})
