"""Run the maintenance graph over captured traffic: once with labels from feedback, once pausing for a human.

    python examples/run_maintenance.py [database-url]

The example graph serves 400 simulated queries whose mix and wording drift half-way
(:data:`cl_plugin.graphs.traffic.OPS_DRIFT`), with capture on. The first cycle (``annotation="feedback"``) checks
the window, tests it for drift, analyses failures, selects interactions, labels them from their ratings,
retrains, gates the candidate and starts an A/B test of it; each step's report is printed. Then 300 more
queries arrive, and the second cycle (``annotation="human"``) pauses in ``annotate`` with ``interrupt()``.
The script plays the annotator, who knows each task's best agent, and resumes the paused run with
``Command(resume={interaction_id: agent})``.
"""

from __future__ import annotations

import sys
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cl_plugin.graphs.maintenance import build_maintenance_graph, register_starting_models, run_maintenance
from cl_plugin.graphs.mcts_agents import build_mcts_agent_graph
from cl_plugin.graphs.tasks import BEST_AGENT, Task
from cl_plugin.graphs.traffic import OPS_DRIFT, production_queries, run_traffic
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.types import Command

from cl_plugin import CaptureHandler, ModelRegistry, Store

SUMMARIES: dict[str, Callable[[dict[str, Any]], str]] = {
    "review_ab_tests": lambda r: (
        "; ".join(f"{t['test_id']}: {t['recommendation']}" for t in r["tests"]) or "no A/B test running"
    ),
    "load_window": lambda r: f"{r['count']} interactions since the last completed run",
    "validate": lambda r: f"{r['valid']} valid, {r['invalid']} invalid",
    "drift_check": lambda r: (
        f"against the {r['against']}: drifted {r['drifted_features'] or 'nothing'}"
        if r["status"] == "completed"
        else r["reason"]
    ),
    "analyze_failures": lambda r: (
        (
            f"failure rate {r['failure_rate']:.1%} ({r['failure_rate_basis']}); "
            if r.get("failure_rate") is not None
            else "no outcome observed; "
        )
        + f"{r['patterns']} patterns"
        + (f", first {r['top'][0]['type']}: {r['top'][0]['fix']}" if r["top"] else "")
    ),
    "select": lambda r: f"{r['selected']} interactions queued for annotation",
    "annotate": lambda r: f"{r['mode']}: {r['labeled']} labeled, {r['skipped']} left unlabeled",
    "retrain": lambda r: (
        f"{r['status']}, {r['data']['labels']} labels; " + _accuracies(r["metrics"])
        if r["status"] == "completed"
        else f"{r['status']}: {r['reason']}"
    ),
    "evaluate": lambda r: ("passed: " if r["passed"] else "not passed: ") + r["reason"],
    "ab_test": lambda r: f"started {r['test_id']}" if "test_id" in r else f"{r['status']}: {r['reason']}",
    "promote": lambda r: f"promoted {r['promoted']}",
}


def _accuracies(metrics: dict[str, Any]) -> str:
    shown = [
        f"{who} {metrics[who]['accuracy']:.3f}"
        for who in ("production", "candidate")
        if metrics.get(who) is not None
    ]
    return f"held-out routing accuracy {', '.join(shown)} on {metrics['validation_samples']} labels"


def print_run(title: str, state: dict[str, Any]) -> None:
    print(f"\n{title}: {state['status']}" + (f" ({state['reason']})" if state.get("reason") else ""))
    for name, report in state["steps"].items():
        print(f"  {name:<17} {SUMMARIES.get(name, str)(report)}")


def serve(graph: Any, handler: CaptureHandler, n: int, seed: int) -> dict[str, Task]:
    """Send ``n`` drifting queries through ``graph``; return each interaction's task (its ground truth)."""
    report = run_traffic(graph, handler, n, seed=seed, drift=OPS_DRIFT)
    handler.flush()
    print(f"served {report.invocations} queries, {report.rated} rated, {report.corrections} corrected")
    queries = production_queries(n, seed=seed, drift=OPS_DRIFT)
    return {iid: q.task for iid, q in zip(report.interaction_ids, queries, strict=True)}


def main(url: str = "sqlite://") -> None:
    workdir = Path(tempfile.mkdtemp())
    store = Store.from_url(url).setup()
    registry = ModelRegistry(store, workdir / "models" / "artifacts")
    register_starting_models(registry)

    graph = build_mcts_agent_graph(
        router=registry.watch("router", refresh_seconds=0),
        rag=registry.watch("rag_index", refresh_seconds=0),
    ).compile()
    handler = CaptureHandler(store)
    serve(graph, handler, 400, seed=11)

    config = {
        "maintenance": {"model_dir": str(workdir / "models"), "annotation": "feedback"},
        "retraining": {"min_new_samples": 50},
        "active_learning": {"budget_per_cycle": 30},
    }
    first = run_maintenance(store, config=config, registry=registry)
    print_run("cycle 1, labels from feedback", first)

    tasks = serve(graph, handler, 300, seed=12)
    human = {**config, "maintenance": {**config["maintenance"], "annotation": "human"}}
    maintenance = build_maintenance_graph(store, config=human, registry=registry).compile(
        checkpointer=InMemorySaver()
    )
    thread = {"configurable": {"thread_id": str(uuid.uuid4())}}
    paused = maintenance.invoke({}, thread)
    [request] = paused["__interrupt__"]
    items = request.value["items"]
    print(f"\ncycle 2 paused in annotate: {len(items)} interactions to label, for example")
    for item in items[:3]:
        print(f"  {item['query'][:70]!r}: {item['reason']}")
    labels = {item["interaction_id"]: BEST_AGENT[tasks[item["interaction_id"]].family] for item in items}
    second = maintenance.invoke(Command(resume=labels), thread)
    print_run("cycle 2, labels from a human", second)

    print("\nrecorded runs:")
    for run in store.runs.list():
        print(f"  {run['run_id'][:8]} {run['status']:<10} {len(run['steps'])} steps")
    handler.close()
    store.close()


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "sqlite://")
