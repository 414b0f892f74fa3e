"""The main job: the whole continual-learning loop on simulated traffic, in embedded SQLite.

:func:`run_demo` does what a team would do in its first weeks, in about a minute:

1. registers the example graph's starting router and index as version 1 in production;
2. serves simulated users through the graph (which follows the registry's ``production`` alias) with
   capture on; half-way the query mix and wording drift (:data:`cl_plugin.graphs.traffic.OPS_DRIFT`);
3. runs a maintenance cycle: drift check, failure analysis, selection, labels from feedback, retraining,
   evaluation against production, and an A/B test of the candidate;
4. serves further traffic split between production and candidate, recording each rated answer in the test;
5. runs a second cycle, which reads the test and promotes the candidate if it won;
6. serves more traffic with whatever is in production now, and writes the HTML report.

Every figure in the before/after table is measured on the traffic of its phase.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cl_plugin.graphs.maintenance import register_starting_models, run_maintenance
from cl_plugin.graphs.mcts_agents import build_mcts_agent_graph
from cl_plugin.graphs.traffic import OPS_DRIFT, DriftSchedule, TrafficReport, run_ab_traffic, run_traffic

from cl_plugin.capture import CaptureHandler
from cl_plugin.learning.registry import ModelRegistry
from cl_plugin.store import Store

__all__ = ["DemoResult", "run_demo"]

#: The deployment's budget: one agent per request, one round. Real agents answer in seconds and cost tokens,
#: so many deployments run neither all agents on an unsure route nor a second round; a routing mistake then
#: reaches the user instead of being rescued by slower, costlier work.
BUDGET = {"max_iterations": 1, "allow_parallel": False}
OLD = DriftSchedule((OPS_DRIFT.phases[0],))
NEW = DriftSchedule(((0.0, OPS_DRIFT.phases[-1][1]),), phrasing=((0.0, OPS_DRIFT.phrasing[-1][1]),))


@dataclass
class DemoResult:
    """What the demo did and measured.

    Attributes:
        store_url: the database.
        storage: the folder holding the database, models and report.
        phases: ``(name, production version serving it, traffic report)`` in order.
        cycles: the final state of each maintenance cycle.
        ab_test: the A/B test's last status (None when no test was started).
        report_path: the HTML report, if one was written.
        elapsed_s: wall time.
    """

    store_url: str
    storage: str
    phases: list[tuple[str, str, TrafficReport]] = field(default_factory=list)
    cycles: list[dict[str, Any]] = field(default_factory=list)
    ab_test: dict[str, Any] | None = None
    report_path: str | None = None
    elapsed_s: float = 0.0


def run_demo(
    *,
    store_url: str | None = None,
    storage: str | None = None,
    interactions: int = 600,
    seed: int = 0,
    progress: Callable[[str, int], Callable[[], None] | None] = lambda message, total: None,
) -> DemoResult:
    """Run the loop end to end.

    Args:
        store_url: database URL; SQLite inside ``storage`` by default.
        storage: folder for the database, journal, models and report; a new temp dir by default.
        interactions: queries before the first cycle; the A/B phase serves twice as many (enough rated answers
            to tell a real difference from noise), the last phase half.
        seed: seed of every simulated query and user.
        progress: called as each phase starts with a line of text and the number of queries it will serve
            (0 for a maintenance cycle); it may return a function the phase calls after each query.

    Returns:
        The measurements.
    """
    start = time.perf_counter()
    storage = storage or tempfile.mkdtemp(prefix="cl-plugin-demo-")
    os.makedirs(storage, exist_ok=True)
    url = store_url or f"sqlite:///{os.path.abspath(os.path.join(storage, 'interactions.db'))}"
    store = Store.from_url(url).setup()
    models = Path(storage) / "models"
    registry = ModelRegistry(store, models / "artifacts")
    result = DemoResult(store_url=url, storage=storage)
    config = {
        "maintenance": {"model_dir": str(models), "annotation": "feedback", "min_interactions": 50},
        "retraining": {"min_new_samples": 50},
        # an even split and an always-valid interval tuned to the few hundred results the demo collects
        "ab_testing": {"traffic_split": 0.5, "min_samples": 100, "sequential_tuning": interactions},
    }

    register_starting_models(registry, actor="demo")
    graph = build_mcts_agent_graph(
        router=registry.watch("router", refresh_seconds=0.2),
        rag=registry.watch("rag_index", refresh_seconds=0.2),
        **BUDGET,
    ).compile()
    handler = CaptureHandler(store, journal_dir=os.path.join(storage, "journal"))
    half = max(interactions // 2, 1)

    def production() -> str:
        current = registry.get_alias("router", "production")
        return f"v{current.version}" if current else "none"

    tick = progress(f"serving {half} queries in the classic mix", half)
    before = run_traffic(graph, handler, half, seed=seed, drift=OLD, on_query=tick)
    result.phases.append(("before the drift", production(), before))
    tick = progress(f"serving {half} queries after the drift in mix and wording", half)
    after = run_traffic(graph, handler, half, seed=seed + 1, drift=NEW, on_query=tick)
    result.phases.append(("after the drift", production(), after))
    handler.flush()

    progress("maintenance cycle 1: analyse, select, label from feedback, retrain, evaluate, A/B test", 0)
    cycle = run_maintenance(store, config=config, registry=registry)
    result.cycles.append(cycle)
    test_id = cycle.get("steps", {}).get("ab_test", {}).get("test_id")
    if test_id is not None:
        from cl_plugin.abtest import ABTestFramework

        candidate = cycle["retrain"]["versions"]
        candidate_graph = build_mcts_agent_graph(
            router=registry.load("router", candidate["router"]),
            rag=registry.load("rag_index", candidate["rag_index"]),
            **BUDGET,
        ).compile()
        framework = ABTestFramework(config["ab_testing"], store=store)
        tick = progress(
            f"serving {2 * interactions} queries split between production and the candidate", 2 * interactions
        )
        groups = run_ab_traffic(
            {"A": graph, "B": candidate_graph},
            framework,
            test_id,
            handler,
            2 * interactions,
            seed=seed + 2,
            drift=NEW,
            on_query=tick,
        )
        framework.flush()
        result.phases.append(("A/B test: production", production(), groups["A"]))
        result.phases.append(("A/B test: candidate", f"v{candidate['router']}", groups["B"]))
        handler.flush()
        progress("maintenance cycle 2: read the A/B test, promote the winner", 0)
        result.cycles.append(run_maintenance(store, config=config, registry=registry))
        result.ab_test = framework.get_test_status(test_id)
        framework.close()

    time.sleep(0.25)  # let the graph's registry handles see a promotion
    tick = progress(f"serving {half} queries with production {production()}", half)
    final = run_traffic(graph, handler, half, seed=seed + 3, drift=NEW, on_query=tick)
    result.phases.append(("after the loop", production(), final))
    handler.close()
    from cl_plugin.report import build_report

    progress("writing the HTML report", 0)
    result.report_path = str(build_report(store, Path(storage) / "report.html"))
    store.close()
    result.elapsed_s = time.perf_counter() - start
    return result
