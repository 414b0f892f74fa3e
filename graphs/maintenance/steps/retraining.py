"""``retrain``: train a candidate with :class:`~cl_plugin.learning.retraining.IncrementalRetrainingPipeline`, the
classic model set or one router per learned decision point, and register it as ``candidate``."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson
from langgraph.runtime import Runtime

from cl_plugin.learning.points import point_rows
from cl_plugin.records import PointRef

from ..context import MODEL_NAMES, MaintenanceContext, MaintenanceState, Outcome, earlier, rows
from ..points import exploration, learning


def retrain(state: MaintenanceState, runtime: Runtime[MaintenanceContext]) -> Outcome:
    """Retrain against the registry's ``production`` model set; a skipped or failed retrain stops the run.
    An interrupted attempt's registered candidate is this run's (training again would register another)."""
    from cl_plugin.learning.retraining import IncrementalRetrainingPipeline

    ctx = runtime.context
    points = learning(ctx, state)
    if points is not None:
        return _retrain_points(ctx, state, points)
    m = ctx.m
    output = Path(m.model_dir) / "candidates" / state["run_id"]
    started = (ctx.store.runs.get(state["run_id"]) or {}).get("started_at")
    summary = earlier(ctx, state, "retrain") or registered_candidate(ctx.registry, output, started)
    if summary is None:
        pipeline = IncrementalRetrainingPipeline(
            ctx.config.retraining, registry=ctx.registry, enable_ab_test=False
        )
        data = [*rows(ctx, state), *ctx.store.queue.items("labeled")]
        result = pipeline.retrain_sync(data, Path(m.model_dir) / "production", output)
        summary = retrain_summary(result)
    if summary["status"] != "completed":
        reason = f"retraining {summary['status']}: {summary['reason']}"
        return Outcome(summary, {"retrain": summary, "status": summary["status"], "reason": reason})
    return Outcome(summary, {"retrain": summary})


def _retrain_points(
    ctx: MaintenanceContext, state: MaintenanceState, points: list[dict[str, Any]]
) -> Outcome:
    """A router per decision point, trained on its decisions' labels and registered under its names."""
    from cl_plugin.learning.retraining import IncrementalRetrainingPipeline

    m, store = ctx.m, ctx.store
    started = (store.runs.get(state["run_id"]) or {}).get("started_at")
    done = (earlier(ctx, state, "retrain") or {}).get("points") or {}
    window_rows = rows(ctx, state)
    labeled = store.queue.items("labeled")
    results: dict[str, dict[str, Any]] = {}
    for point in points:
        name, ref = point["name"], PointRef.parse(point["point"])
        names = ref.model_names()
        output = Path(m.model_dir) / "candidates" / state["run_id"] / name
        # An interrupted attempt's candidate of this point is this run's: training again would register another.
        summary = done.get(name) or registered_candidate(ctx.registry, output, started, names)
        if summary is None and len(point["options"]) < 2:
            summary = {"status": "skipped", "reason": f"options {point['options']}: nothing to choose"}
        if summary is None:
            point_data = point_rows(store, ref, window_rows)
            ids = {r["interaction_id"] for r in point_data}
            annotations = [
                a
                for a in labeled
                if a["interaction_id"] in ids
                and isinstance(a.get("label"), Mapping)
                and a["label"].get("point", name) == name
            ]
            pipeline = IncrementalRetrainingPipeline(
                ctx.config.retraining,
                registry=ctx.registry,
                enable_ab_test=False,
                router_name=names["router"],
                agents=point["options"],
                retrieval=False,
                complement=True,
                max_ips_weight=m.max_ips_weight,
                incumbent="recorded",
            )
            result = pipeline.retrain_sync(
                [*point_data, *annotations], Path(m.model_dir) / "points" / name / "production", output
            )
            summary = {
                **retrain_summary(result),
                "interactions": len(point_data),
                "exploration": exploration(point_data),
            }
        results[name] = {"point": point["point"], **summary}
    trained = [n for n, r in results.items() if r["status"] == "completed"]
    overall: dict[str, Any] = {
        "status": "completed" if trained else "skipped",
        "reason": None
        if trained
        else "; ".join(f"{n}: {r.get('reason')}" for n, r in results.items())
        or "no decision point with two or more options in the window",
        "points": results,
    }
    if not trained:
        reason = f"retraining skipped: {overall['reason']}"
        return Outcome(overall, {"retrain": overall, "status": "skipped", "reason": reason})
    return Outcome(overall, {"retrain": overall})


def registered_candidate(
    registry: Any, directory: Path, since: float | None, names: Mapping[str, str] | None = None
) -> dict[str, Any] | None:
    """The retrain report of the candidate that an interrupted attempt of a run's retrain step wrote to
    ``directory`` and registered, or None when that attempt did not register it.

    The directory is written before the registration, and the router is registered after the index and
    replay versions it belongs with: a router version registered since the run started (``since``) from
    the directory's training data window marks a whole registered set. Its ``candidate`` aliases are set
    again (a no-op unless the attempt stopped just before setting them). The report says ``recovered``:
    the data preparation's report and the training steps' statuses died with the attempt.
    """
    from cl_plugin.learning.modelset import MANIFEST

    try:
        manifest = orjson.loads((directory / MANIFEST).read_bytes())
    except FileNotFoundError:
        return None
    window = manifest.get("data_window")
    names = names or MODEL_NAMES
    router = next(
        (
            v
            for v in reversed(registry.versions(names["router"]))
            if since is not None
            and v.created_at >= since
            and window is not None
            and v.data_window is not None
            and vars(v.data_window) == window
        ),
        None,
    )
    if router is None:
        return None
    versions = {"router": router.version, **(router.metrics.get("model_set") or {})}
    production = {}
    for role, version in versions.items():
        registered = registry.get_version(names[role], version)
        if registered.parent is not None:
            production[role] = registered.parent
        registry.set_alias(
            names[role],
            "candidate",
            version,
            reason="retrained by a maintenance run that was interrupted",
            actor="maintenance",
        )
    return {
        "status": "completed",
        "reason": None,
        "recovered": f"the candidate in {directory.name}, registered before the run was interrupted",
        "steps": None,
        "data": window,
        "metrics": manifest.get("metrics") or {},
        "versions": versions,
        "production": production or None,
        "duration_s": None,
    }


def retrain_summary(result: Mapping[str, Any]) -> dict[str, Any]:
    """What the run keeps of a retraining pipeline's result."""
    return {
        "status": result["status"],
        "reason": result.get("reason") or result.get("error"),
        "steps": {k: v.get("status") for k, v in result["steps"].items()},
        "data": result["steps"].get("data_preparation"),
        "metrics": result["metrics"],
        "versions": (result["candidate"] or {}).get("versions"),
        "production": result["steps"].get("load_production", {}).get("versions"),
        "duration_s": result["duration_s"],
    }
