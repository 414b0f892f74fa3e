"""``load_window`` and ``validate``: the interactions since the last completed cycle, and whether enough
of them are valid to go on."""

from __future__ import annotations

from collections import Counter

from langgraph.runtime import Runtime

from ..context import MaintenanceContext, MaintenanceState, Outcome, rows


def load_window(state: MaintenanceState, runtime: Runtime[MaintenanceContext]) -> Outcome:
    """The window: the last ``window_hours``, from the end of the last completed run's window at most."""
    ctx = runtime.context
    end = ctx.clock()
    start = end - ctx.m.window_hours * 3600.0
    done = [r for r in ctx.store.runs.list(limit=50) if r["status"] == "completed" and r["summary"]]
    if done and done[0]["summary"].get("window"):
        start = max(start, done[0]["summary"]["window"]["end"])
    window = {
        "start": start,
        "end": end,
        "count": ctx.store.count_interactions(start_time=start, end_time=end),
    }
    return Outcome(dict(window), {"window": window})


def validate(state: MaintenanceState, runtime: Runtime[MaintenanceContext]) -> Outcome:
    """Count the window's valid interactions; too few skip the rest of the cycle."""
    from cl_plugin.privacy import DataQualityValidator

    ctx = runtime.context
    validator = DataQualityValidator(ctx.config)
    issues: Counter[str] = Counter()
    valid = 0
    for row in rows(ctx, state):
        ok, problems = validator.validate_interaction(row)
        valid += ok
        issues.update({p.split(":", 1)[0] for p in problems})
    report = {"valid": valid, "invalid": state["window"]["count"] - valid, "issues": dict(issues)}
    if valid < ctx.m.min_interactions:
        reason = f"{valid} valid interactions in the window; maintenance.min_interactions is {ctx.m.min_interactions}"
        return Outcome(report, {"status": "skipped", "reason": reason})
    return Outcome(report)
