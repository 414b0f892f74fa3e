"""``drift_check``: the window against the one before it (or its older half against its newer half)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from langgraph.runtime import Runtime

from cl_plugin.config import ContinualLearningConfig
from cl_plugin.store import Store

from ..context import MaintenanceContext, MaintenanceState, Outcome, rows

_MIN_DRIFT_ROWS = 30


def drift_check(state: MaintenanceState, runtime: Runtime[MaintenanceContext]) -> Outcome:
    """Compare the window's columns with the reference's; a drift is recorded as a drift event."""
    ctx = runtime.context
    return Outcome(drift(ctx.store, ctx.config, state["window"], rows(ctx, state), state["run_id"]))


def drift(
    store: Store, cfg: ContinualLearningConfig, window: Mapping[str, Any], current: list[dict], run_id: str
) -> dict[str, Any]:
    """Compare the window with the one before it (or, without one, its older half with its newer half) on
    latency, router confidence, retrieval quality (of the interactions that retrieved, when each side has
    enough of them), query length and the agent mix."""
    from cl_plugin.drift import compare_columns

    span = window["end"] - window["start"]
    reference = store.query_interactions(
        start_time=window["start"] - span, end_time=window["start"], limit=max(len(current), 1)
    )
    against = "previous window"
    if len(reference) < _MIN_DRIFT_ROWS:
        ordered = sorted(current, key=lambda r: r["timestamp"])
        reference, current = ordered[: len(ordered) // 2], ordered[len(ordered) // 2 :]
        against = "older half of the window"
    if len(reference) < _MIN_DRIFT_ROWS or len(current) < _MIN_DRIFT_ROWS:
        return {"status": "not_run", "reason": f"fewer than {_MIN_DRIFT_ROWS} interactions to compare"}

    def columns(rows: list[dict]) -> dict[str, list[Any]]:
        def number(row: dict, key: str) -> float:
            return float(row[key]) if row[key] is not None else 0.0

        return {
            "latency_ms": [number(r, "latency_ms") for r in rows],
            "agent_confidence": [number(r, "agent_confidence") for r in rows],
            # the quality of the retrievals that ran: a query that needed none is not a retrieval scoring 0
            "retrieval_quality": [
                float(r["retrieval_quality"]) for r in rows if r["retrieval_quality"] is not None
            ],
            "query_length": [float(len(r["user_query"] or "")) for r in rows],
            "agent_selected": [r["agent_selected"] or "none" for r in rows],
        }

    before, after = columns(reference), columns(current)
    if min(len(before["retrieval_quality"]), len(after["retrieval_quality"])) < _MIN_DRIFT_ROWS:
        del before["retrieval_quality"], after["retrieval_quality"]  # too few retrievals to compare
    result = compare_columns(before, after, threshold=cfg.drift_detection.threshold)
    if result.drifted:
        drifted = [c for c in result.columns if c.drifted]
        worst = max(drifted, key=lambda c: c.statistic / c.threshold)
        store.drift.add_event(
            {
                "event_id": f"maintenance:{run_id}",
                "detector": "maintenance",
                "method": worst.method,
                "severity": "high" if len(drifted) > len(result.columns) / 2 else "medium",
                "statistic": worst.statistic,
                "p_value": worst.adjusted_p_value,
                "threshold": worst.threshold,
                "features": orjson.dumps(result.drifted_features).decode(),
                "details": orjson.dumps({c.feature: c.statistic for c in result.columns}).decode(),
                "window_size": len(current),
                "samples_seen": len(reference) + len(current),
                "window_start": window["start"],
                "window_end": window["end"],
                "detected_at": window["end"],
            }
        )
    return {
        "status": "completed",
        "against": against,
        "drifted": result.drifted,
        "drifted_features": result.drifted_features,
        "columns": {
            c.feature: {"method": c.method, "statistic": round(c.statistic, 4), "drifted": c.drifted}
            for c in result.columns
        },
        "reference": len(reference),
        "current": len(current),
    }
