"""``review_ab_tests``: conclude the A/B tests that earlier runs started (``Deploy B`` promotes)."""

from __future__ import annotations

from typing import Any

from langgraph.runtime import Runtime

from ..context import TEST_PREFIX, MaintenanceContext, MaintenanceState, Outcome, earlier, record
from ..models import point_names, promote_versions, versions_of


def review_ab_tests(state: MaintenanceState, runtime: Runtime[MaintenanceContext]) -> Outcome:
    """Decide each running maintenance A/B test, record the verdicts, then act on them."""
    from cl_plugin.abtest import ABTestFramework

    ctx = runtime.context
    framework = ABTestFramework(ctx.config.ab_testing, store=ctx.store)
    # The verdicts are recorded before they are acted on, and acting on one twice changes nothing: an
    # attempt interrupted part-way is finished by the next as it was decided (tests it ended are no
    # longer running, so deciding again would forget them and any promotion still to do).
    planned = earlier(ctx, state, "review_ab_tests")
    if planned is None:
        reviewed = []
        for test in ctx.store.ab.list(status="running"):
            if not test["name"].startswith(TEST_PREFIX):
                continue
            names = point_names(test["name"])
            if names is not None:  # a decision point's test: its results are the served decisions' outcomes
                outcomes = ctx.store.ab.outcomes(
                    test["test_id"],
                    low_rating_threshold=ctx.config.failure_analysis.low_rating_threshold,
                )
                framework.sync_results(test["test_id"], {g: _summary(v) for g, v in outcomes.items()})
            status = framework.get_test_status(test["test_id"])
            decision = status["recommendation"]
            entry = {"test_id": test["test_id"], "recommendation": decision, "reason": status.get("reason")}
            if decision == "Deploy B":
                entry["promoted"] = versions_of(test["model_b"])
                if names is not None:
                    entry["names"] = names
            reviewed.append(entry)
        update = record(ctx, state, "review_ab_tests", {"tests": reviewed})  # before acting on them
    else:
        reviewed, update = planned["tests"], {"steps": {"review_ab_tests": planned}}
    for entry in reviewed:
        if "promoted" in entry:  # before the test ends, so that no ended test waits for its promotion
            promote_versions(
                ctx.registry, entry["promoted"], f"A/B test {entry['test_id']}", names=entry.get("names")
            )
        if entry["recommendation"] != "Continue":
            framework.end_test(entry["test_id"])
    framework.close()
    return Outcome(None, update)


def _summary(outcomes: list[float]) -> Any:
    from cl_plugin.abtest.stats import GroupStats

    stats = GroupStats()
    for x in outcomes:
        stats.add(x)
    return stats
