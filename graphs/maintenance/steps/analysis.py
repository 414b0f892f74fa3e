"""``analyze_failures``: the window's failure patterns and outcome failure rate."""

from __future__ import annotations

from langgraph.runtime import Runtime

from ..context import MaintenanceContext, MaintenanceState, Outcome, rows


def analyze_failures(state: MaintenanceState, runtime: Runtime[MaintenanceContext]) -> Outcome:
    """Run :class:`~cl_plugin.analysis.FailurePatternAnalyzer` over the window."""
    from cl_plugin.analysis import FailurePatternAnalyzer
    from cl_plugin.analysis.metrics import node_metrics

    ctx = runtime.context
    w = state["window"]
    # Node runs of the capture sample tie errors to the nodes that raised them (see cl_plugin.capture.sampling).
    nodes = node_metrics(ctx.store, start_time=w["start"], end_time=w["end"])
    analysis = FailurePatternAnalyzer(ctx.config.failure_analysis).analyze(rows(ctx, state), nodes=nodes)
    patterns = analysis.patterns
    summary = [
        {
            "type": p.pattern_type,
            "count": p.frequency,
            "severity": p.severity,
            "fix": p.suggested_fix,
            "diagnostic": (p.details.get("diagnostic") or {}).get("verdict"),
        }
        for p in patterns[:20]
    ]
    outcome = analysis.outcome
    return Outcome(
        {
            "patterns": len(patterns),
            "top": summary,
            "failures": analysis.counts.get("failures", 0),
            "interactions": analysis.counts.get("interactions", 0),
            "failure_rate": outcome.rate,
            "failure_rate_basis": outcome.describe(),
            "diagnostics": {d.signal: d.verdict for d in analysis.diagnostics},
        }
    )
