"""``begin`` and ``finish``: the run's lease and its record in the store."""

from __future__ import annotations

import uuid
from typing import Any

from langgraph.config import get_config
from langgraph.runtime import Runtime
from langgraph.types import Overwrite

from ..context import LEASE, MaintenanceContext, MaintenanceState, save_run


def begin(state: MaintenanceState, runtime: Runtime[MaintenanceContext]) -> dict[str, Any]:
    """Take the store's ``maintenance`` lease (or stop, skipped, while another run holds it) and record
    the run; a run whose lease expired is marked abandoned."""
    ctx = runtime.context
    run_id = state.get("run_id") or str(uuid.uuid4())
    thread_id = str(get_config().get("configurable", {}).get("thread_id", run_id))
    now = ctx.clock()
    previous = ctx.store.runs.lease_holder(LEASE, now=now, expired=True)
    if not ctx.store.runs.acquire_lease(LEASE, run_id, ctx.m.lease_ttl_seconds, now=now):
        return {
            "run_id": run_id,
            "owner": False,
            "status": "skipped",
            "reason": "another run holds the lease",
        }
    if previous is not None and previous["owner"] != run_id:  # it died or stalled past its lease
        ctx.store.runs.abandon(
            previous["owner"], f"its lease expired and maintenance run {run_id} took it over"
        )
    save_run(ctx.store, {"run_id": run_id, "thread_id": thread_id, "status": "running"})
    # a thread that ran a cycle before keeps its state: start this one clean
    return {
        "run_id": run_id,
        "thread_id": thread_id,
        "owner": True,
        "steps": Overwrite({}),
        "status": "",
        "reason": "",
        "selected": [],
    }


def finish(state: MaintenanceState, runtime: Runtime[MaintenanceContext]) -> dict[str, Any]:
    """Record the run's outcome (and write the report, when ``maintenance.report_path`` is set) and
    release the lease."""
    ctx = runtime.context
    status = state.get("status") or "completed"
    summary = {
        "window": state.get("window"),
        "gate": state.get("gate"),
        "candidate": _candidates(state.get("retrain") or {}),
    }
    if not state.get("owner"):
        return {"status": status}
    report_file = None
    if ctx.m.report_path:
        from cl_plugin.report import build_report

        report_file = str(build_report(ctx.store, ctx.m.report_path))
    run = {
        "run_id": state["run_id"],
        "thread_id": state["thread_id"],
        "status": status,
        "finished_at": ctx.clock(),
        "summary": {**summary, "reason": state.get("reason"), "report": report_file},
    }
    save_run(ctx.store, run)
    ctx.store.runs.release_lease(LEASE, state["run_id"])
    return {"status": status}


def _candidates(retrain: dict[str, Any]) -> Any:
    if "points" in retrain:
        return {name: r.get("versions") for name, r in retrain["points"].items() if r.get("versions")}
    return retrain.get("versions")
