"""A store seeded with captured traffic of the example graph, shared by the maintenance tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cl_plugin.graphs.maintenance import register_starting_models
from cl_plugin.graphs.mcts_agents import build_mcts_agent_graph
from cl_plugin.graphs.traffic import OPS_DRIFT, run_traffic

from cl_plugin import CaptureHandler
from cl_plugin.abtest import ABTestFramework
from cl_plugin.learning.registry import ModelRegistry
from cl_plugin.store import Store


def captured_store(root: Path, n: int, *, seed: int = 5) -> tuple[Store, ModelRegistry]:
    """``root/store.db`` holding ``n`` interactions of drifting traffic served by the starting model set,
    which ``root/models`` registers as production (v1).

    Returns:
        The open store and its registry.
    """
    store = Store.from_url(f"sqlite:///{root / 'store.db'}").setup()
    registry = ModelRegistry(store, root / "models" / "artifacts")
    register_starting_models(registry)
    graph = build_mcts_agent_graph(router=registry.load("router"), rag=registry.load("rag_index")).compile()
    handler = CaptureHandler(store)
    run_traffic(graph, handler, n, seed=seed, drift=OPS_DRIFT)
    handler.close()
    return store, registry


def record_a_winning_candidate(store: Store, ab_config: dict[str, Any], test_id: str) -> None:
    """600 results in the A/B test ``test_id``: the candidate (B) is right 90% of the time, A 50%."""
    framework = ABTestFramework(ab_config, store=store)
    for i in range(600):
        group = framework.assign_group(test_id, f"request-{i}")
        framework.record_result(test_id, group, None, None, float(i % 10 < (9 if group == "B" else 5)))
    framework.close()
