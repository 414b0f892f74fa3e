"""Retrain the example graph's router from captured traffic, promote it, and watch the running graph pick it up.

    python examples/retrain_and_promote.py [database-url]

The example graph serves 400 simulated queries whose wording drifts half-way (:data:`cl_plugin.graphs.traffic.OPS_DRIFT`)
with capture on; users rate and sometimes correct. The pipeline retrains router and index from what was
captured, compares candidate and production on held-out sessions, and registers the candidate. The script
promotes it when it passed the gate, sends a few more queries through the same compiled graph (which
follows the registry's ``production`` alias), and rolls back to show the history.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path

from cl_plugin.graphs.maintenance import register_starting_models
from cl_plugin.graphs.mcts_agents import build_mcts_agent_graph
from cl_plugin.graphs.traffic import OPS_DRIFT, run_traffic

from cl_plugin import CaptureHandler, IncrementalRetrainingPipeline, ModelRegistry, Store

NAMES = {"router": "router", "rag_index": "rag_index", "replay": "router-replay"}


async def main(url: str = "sqlite://") -> None:
    store = Store.from_url(url).setup()
    registry = ModelRegistry(store, Path(tempfile.mkdtemp()) / "artifacts")

    # Version 1: the graph's starting router, index and the labels the router learned from.
    register_starting_models(registry)

    router = registry.watch("router", refresh_seconds=0)
    graph = build_mcts_agent_graph(
        router=router, rag=registry.watch("rag_index", refresh_seconds=0)
    ).compile()
    handler = CaptureHandler(store)
    traffic = run_traffic(graph, handler, 400, seed=3, drift=OPS_DRIFT)
    handler.flush()
    print(
        f"served {traffic.invocations} queries, {traffic.rated} rated, answers right: {traffic.accuracy:.3f}"
    )

    pipeline = IncrementalRetrainingPipeline({"min_new_samples": 50}, registry=registry)
    result = await pipeline.retrain(
        store.query_interactions(limit=10_000),
        old_model_path="models/production",
        output_path="models/candidate",
    )
    print("retraining:", result["status"], result.get("reason") or "")
    if result["status"] != "completed":
        return
    for step, report in result["steps"].items():
        print(f"  {step}: {report['status']}")
    evaluation = result["steps"]["evaluation"]
    for who in ("production", "candidate"):
        m = evaluation[who]
        print(f"  {who:<10} accuracy {m['accuracy']:.3f}  macro-F1 {m['macro_f1']:.3f}  ECE {m['ece']:.3f}")
    print("  gate:", evaluation["gate"]["reason"])

    if evaluation["gate"]["passed"]:
        for role, version in result["candidate"]["versions"].items():
            registry.promote(NAMES[role], version, reason="passed the offline gate")
        more = run_traffic(graph, handler, 50, seed=4, drift=None)
        print(
            f"after promotion the same graph routes with router v{router.version}: {more.accuracy:.3f} right"
        )
        registry.rollback("router", reason="example: one call back")
    for move in registry.alias_history("router", "production"):
        print(f"  production -> v{move.version} ({move.action}: {move.reason})")
    handler.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "sqlite://"))
