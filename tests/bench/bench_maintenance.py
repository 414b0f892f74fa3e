"""The closed loop against a system that never learns, and the time of one maintenance cycle.

    python tests/bench/bench_maintenance.py [--seeds 1 2 3] [--period 600] [--size 10000]

Closed loop, per seed: two copies of the example graph serve the same seeded simulated users, on the budget
of one agent per request (:data:`cl_plugin.graphs.demo.BUDGET`, where a routing mistake reaches the user). Period 0 is
:data:`cl_plugin.graphs.traffic.OPS_DRIFT` (the mix and wording drift half-way); periods 1 to 3 stay in the new mix
and wording. After each of periods 0, 1 and 2 the learning system runs one maintenance cycle (feedback
labels, retraining, the gate, and promotion of a candidate that passes it, with A/B testing off so the
cycle's effect shows in the next period); the baseline keeps its starting router. The table gives, for each
period, routing accuracy (first route is the task's best agent), mean stars and failure rate (share of rated
answers with 1-2 stars) of both systems, medians over seeds. Target: from period 1 (after the first cycle)
the learning system is ahead on all three.

Speed: one cycle over ``--size`` interactions (:func:`cl_plugin.graphs.traffic.synthetic_interactions` in SQLite, with
a production model set registered), per step, median of 3. Target: <= 60 s for 10k.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from cl_plugin.graphs.demo import BUDGET, NEW
from cl_plugin.graphs.maintenance import register_starting_models, run_maintenance
from cl_plugin.graphs.mcts_agents import build_mcts_agent_graph
from cl_plugin.graphs.traffic import OPS_DRIFT, TrafficReport, run_traffic, synthetic_interactions

from cl_plugin import CaptureHandler, ProductionInteractionLogger
from cl_plugin.learning.registry import ModelRegistry
from cl_plugin.store import Store

PERIODS = 4
METRICS = (("routing", "routing_accuracy"), ("stars", "mean_stars"), ("failures", "failure_rate"))


def _system(root: Path) -> tuple[Store, ModelRegistry, object, CaptureHandler]:
    store = Store.from_url(f"sqlite:///{root / 'store.db'}").setup()
    registry = ModelRegistry(store, root / "models" / "artifacts")
    register_starting_models(registry)
    graph = build_mcts_agent_graph(
        router=registry.watch("router", refresh_seconds=0),
        rag=registry.watch("rag_index", refresh_seconds=0),
        **BUDGET,
    ).compile()
    return store, registry, graph, CaptureHandler(store)


def closed_loop(seed: int, period: int, root: Path) -> dict[str, list[TrafficReport]]:
    config = {
        "maintenance": {
            "model_dir": str(root / "learning" / "models"),
            "annotation": "feedback",
            "auto_promote": True,
        },
        "retraining": {"min_new_samples": 50, "enable_ab_test": False},
    }
    out: dict[str, list[TrafficReport]] = {"learning": [], "baseline": []}
    systems = {}
    for name in out:
        (root / name).mkdir()
        systems[name] = _system(root / name)
    for p in range(PERIODS):
        drift = OPS_DRIFT if p == 0 else NEW
        for name, (store, registry, graph, handler) in systems.items():
            out[name].append(run_traffic(graph, handler, period, seed=seed * 100 + p, drift=drift))
            handler.flush()
            if name == "learning" and p < PERIODS - 1:
                run_maintenance(store, config=config, registry=registry)
    for store, _, _, handler in systems.values():
        handler.close()
        store.close()
    return out


def closed_loop_table(seeds: list[int], period: int) -> list[str]:
    runs = []
    for seed in seeds:
        with tempfile.TemporaryDirectory() as tmp:
            runs.append(closed_loop(seed, period, Path(tmp)))
    lines = [
        f"Closed loop: {period} queries per period, {len(seeds)} seeds (medians); a cycle runs after periods 0-2",
        f"{'period':<8} {'system':<9} " + " ".join(f"{m:>9}" for m, _ in METRICS) + "   ahead on",
    ]
    for p in range(PERIODS):
        medians = {
            name: {m: statistics.median(getattr(run[name][p], attr) for run in runs) for m, attr in METRICS}
            for name in ("learning", "baseline")
        }
        learning, baseline = medians["learning"], medians["baseline"]
        ahead = [
            m
            for m, _ in METRICS
            if (learning[m] < baseline[m] if m == "failures" else learning[m] > baseline[m])
        ]
        for name in ("baseline", "learning"):
            row = " ".join(f"{medians[name][m]:>9.3f}" for m, _ in METRICS)
            lines.append(
                f"{p:<8} {name:<9} {row}"
                + (f"   {', '.join(ahead) or 'nothing'}" if name == "learning" else "")
            )
    per_seed = [
        all(
            (run["learning"][p].failure_rate < run["baseline"][p].failure_rate)
            and (run["learning"][p].mean_stars > run["baseline"][p].mean_stars)
            and (run["learning"][p].routing_accuracy > run["baseline"][p].routing_accuracy)
            for p in range(1, PERIODS)
        )
        for run in runs
    ]
    lines.append(
        f"seeds where learning is ahead on all three in every period after the first cycle: {sum(per_seed)}/{len(runs)}"
    )
    return lines


def cycle_speed(size: int, runs: int) -> list[str]:
    times: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        logger = ProductionInteractionLogger({"storage": str(root), "use_compression": False})
        for record in synthetic_interactions(size, seed=2, start_time=time.time() - size):
            logger.log_interaction_sync(record)
        logger.close()
        url = f"sqlite:///{root / 'interactions.db'}"
        for _ in range(runs):
            store = Store.from_url(url).setup()
            registry = ModelRegistry(store, root / "models" / "artifacts")
            register_starting_models(registry)  # once: later rounds find version 1 in production
            config = {
                "maintenance": {"model_dir": str(root / "models"), "max_interactions": size},
                "retraining": {"min_new_samples": 50},
            }
            start = time.perf_counter()
            state = run_maintenance(store, config=config, registry=registry)
            times.setdefault("total", []).append(time.perf_counter() - start)
            assert state["status"] == "completed", state.get("reason")
            assert state["steps"]["load_window"]["count"] == size
            for name, report in state["steps"].items():
                times.setdefault(name, []).append(report.get("seconds", 0.0))
            store.close()
            _forget_runs(url)  # the next round reads the same window again
    lines = [f"One maintenance cycle over {size} interactions (median of {runs}; target <= 60 s)"]
    for name, values in times.items():
        lines.append(f"  {name:<17} {statistics.median(values):>7.2f} s")
    return lines


def _forget_runs(url: str) -> None:
    """Delete recorded runs, annotation items and A/B tests so the next round starts from the same store."""
    from sqlalchemy import text

    store = Store.from_url(url)
    with store.transaction() as conn:
        for table in ("maintenance_runs", "annotation_queue", "ab_test_groups", "ab_tests", "leases"):
            conn.execute(text(f"DELETE FROM {table}"))
    store.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--period", type=int, default=600)
    parser.add_argument("--size", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    for line in cycle_speed(args.size, args.runs):
        print(line, flush=True)
    print()
    for line in closed_loop_table(args.seeds, args.period):
        print(line, flush=True)


if __name__ == "__main__":
    main()
