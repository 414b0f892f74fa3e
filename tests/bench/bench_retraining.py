"""Does retraining learn from production, and how long does it take?

    python tests/bench/bench_retraining.py [--traffic 2000] [--seeds 1 2 3] [--size 10000] [--runs 3]

Learning under drift, per seed: the example graph serves ``--traffic`` queries of
:data:`cl_plugin.graphs.traffic.OPS_DRIFT` (half-way the mix turns refinement- and search-heavy and 80% of queries
arrive in a wording the starting router never saw) with capture on and simulated users rating and
correcting. :class:`~cl_plugin.analysis.selection.ActiveLearningSelector` (hybrid, with the production router's
probabilities) picks 100 interactions, which an oracle labels with the best agent of their task. The
pipeline then retrains from

* ``feedback``: the logged interactions alone (ratings and what the graph says answered them);
* ``annotations``: the 100 annotated interactions alone;
* ``feedback+100``: both,

and each router is scored on fresh held-out tasks with ground truth: the old mix in the classic wording and
the new mix with 80% in the new wording (1,000 each, seed apart from the traffic). Routing accuracy is the
share of queries whose most likely agent is the family's best agent, with the routing context computed by
the model set's own index, as the graph computes it (only the queries it looks up retrieve:
:func:`cl_plugin.graphs.mcts_agents.needs_retrieval`). Target: ``feedback+100`` gains >= 15 points on the new mix
over the stale router and loses <= 3 points on the old mix (medians over seeds).

Speed: ``retrain_sync`` over ``--size`` interactions, median of ``--runs``: interactions read back from a
SQLite store (:func:`cl_plugin.graphs.traffic.synthetic_interactions`: every one labeled, 60% rated, many queries
repeated, so deduplication leaves fewer labels), and interactions of distinct tasks in both wordings (every
one a label: the router is fitted on all of them). Target: <= 30 s for 10k.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import numpy as np
from cl_plugin.graphs.mcts_agents import (
    build_mcts_agent_graph,
    needs_retrieval,
    starting_model_set,
)
from cl_plugin.graphs.tasks import BEST_AGENT, parse_problem, sample_tasks
from cl_plugin.graphs.traffic import (
    OPS_DRIFT,
    DriftSchedule,
    production_queries,
    run_traffic,
    synthetic_interactions,
)

from cl_plugin import CaptureHandler, ProductionInteractionLogger
from cl_plugin.analysis.selection import ActiveLearningSelector
from cl_plugin.learning.modelset import ModelSet
from cl_plugin.learning.retraining import IncrementalRetrainingPipeline
from cl_plugin.store import Store

OLD_MIX, NEW_MIX = OPS_DRIFT.phases[0][1], OPS_DRIFT.phases[1][1]
NEW_OPS_SHARE = OPS_DRIFT.phrasing[-1][1]
HELD_OUT_SEED = 10_007
VARIANTS = ("feedback", "annotations", "feedback+100")


def routing_accuracy(model_set: ModelSet, mix: dict[str, float], ops_share: float, n: int = 1000) -> float:
    schedule = DriftSchedule(((0.0, mix),), phrasing=((0.0, ops_share),))
    queries = list(production_queries(n, seed=HELD_OUT_SEED, drift=schedule, pii_rate=0.0))
    texts = [q.text for q in queries]
    contexts = []
    for text in texts:
        problem = parse_problem(text)
        if not needs_retrieval({"family": problem[0]} if problem else None):
            contexts.append({"retrieval_quality": None, "retrieved": False})  # the graph does not look it up
            continue
        hits = model_set.rag.search(text, 1) if model_set.rag is not None else []
        contexts.append({"retrieval_quality": round(hits[0][2], 4) if hits else 0.0, "retrieved": bool(hits)})
    predicted = model_set.router.predict(texts, contexts=contexts)
    return float(np.mean([p == BEST_AGENT[q.task.family] for p, q in zip(predicted, queries, strict=True)]))


def learning_run(seed: int, traffic: int, workdir: Path) -> dict[str, dict[str, float]]:
    stale = starting_model_set()
    stale.save(workdir / "v1")
    store = Store.from_url(f"sqlite:///{workdir / 'traffic.db'}").setup()
    handler = CaptureHandler(store)
    graph = build_mcts_agent_graph(router=stale.router, rag=stale.rag).compile()
    report = run_traffic(graph, handler, traffic, seed=seed, drift=OPS_DRIFT)
    handler.close()
    tasks = {
        iid: q.task
        for iid, q in zip(
            report.interaction_ids, production_queries(traffic, seed=seed, drift=OPS_DRIFT), strict=True
        )
    }
    rows = store.query_interactions(limit=traffic)
    picks = ActiveLearningSelector(
        {"selection_strategy": "hybrid"}, router=stale.router
    ).select_for_annotation(rows, budget=100)
    annotations = [
        {
            "interaction_id": c.interaction_id,
            "status": "labeled",
            "label": {"agent": BEST_AGENT[tasks[c.interaction_id].family]},
        }
        for c in picks
    ]
    picked = {c.interaction_id for c in picks}
    unrated = [
        dict(r, user_feedback_score=None, thumbs_up_down=None, metadata={})
        for r in rows
        if r["interaction_id"] in picked
    ]
    data = {"feedback": rows, "annotations": unrated + annotations, "feedback+100": rows + annotations}
    out = {
        "stale": {
            "old": routing_accuracy(stale, OLD_MIX, 0.0),
            "new": routing_accuracy(stale, NEW_MIX, NEW_OPS_SHARE),
        },
        "_traffic": {
            "answer_accuracy": report.accuracy or 0.0,
            "rated": report.rated,
            "corrections": report.corrections,
        },
    }
    for variant in VARIANTS:
        pipeline = IncrementalRetrainingPipeline({"min_new_samples": 50}, seed=seed)
        result = pipeline.retrain_sync(data[variant], workdir / "v1", workdir / variant)
        if result["status"] != "completed":
            raise SystemExit(
                f"seed {seed}, {variant}: retraining {result['status']}: {result.get('reason') or result.get('error')}"
            )
        trained = ModelSet.load(workdir / variant)
        out[variant] = {
            "old": routing_accuracy(trained, OLD_MIX, 0.0),
            "new": routing_accuracy(trained, NEW_MIX, NEW_OPS_SHARE),
            "labels": result["steps"]["data_preparation"]["labels"],
            "seconds": result["duration_s"],
            "gate_gain": result["steps"]["evaluation"]["gate"].get("accuracy_gain", float("nan")),
        }
    return out


def learning_table(seeds: list[int], traffic: int) -> list[str]:
    runs = {}
    for seed in seeds:
        with tempfile.TemporaryDirectory() as tmp:
            runs[seed] = learning_run(seed, traffic, Path(tmp))
    lines = [
        f"Learning under drift: {traffic} queries of OPS_DRIFT per seed; routing accuracy on 1,000 held-out tasks",
        f"{'seed':>5} {'router':<14} {'labels':>7} {'old mix':>8} {'new mix':>8} {'d old':>7} {'d new':>7} {'held-out gain':>14}",
    ]
    for seed, run in runs.items():
        stale = run["stale"]
        t = run["_traffic"]
        lines.append(
            f"{seed:>5} {'stale':<14} {'':>7} {stale['old']:>8.3f} {stale['new']:>8.3f} {'':>7} {'':>7} {'':>14}"
            f"   (answers right {t['answer_accuracy']:.3f}, {t['rated']} rated, {t['corrections']} corrected)"
        )
        for variant in VARIANTS:
            r = run[variant]
            lines.append(
                f"{seed:>5} {variant:<14} {r['labels']:>7} {r['old']:>8.3f} {r['new']:>8.3f} "
                f"{100 * (r['old'] - stale['old']):>+7.1f} {100 * (r['new'] - stale['new']):>+7.1f} {r['gate_gain']:>+14.3f}"
            )
    lines.append("medians over seeds (points vs stale):")
    for variant in VARIANTS:
        d_old = statistics.median(100 * (run[variant]["old"] - run["stale"]["old"]) for run in runs.values())
        d_new = statistics.median(100 * (run[variant]["new"] - run["stale"]["new"]) for run in runs.values())
        secs = statistics.median(run[variant]["seconds"] for run in runs.values())
        lines.append(f"  {variant:<14} old mix {d_old:+.1f}  new mix {d_new:+.1f}  retrain {secs:.2f} s")
    return lines


def _distinct_task_rows(size: int) -> list[dict]:
    """``size`` interactions of distinct tasks (both wordings), each with its best agent in metadata."""
    rows = []
    for phrasing in ("classic", "ops"):
        for i, task in enumerate(sample_tasks(size // 2, seed=8, phrasing=phrasing)):
            rows.append(
                {
                    "interaction_id": f"{phrasing}-{i}",
                    "timestamp": 1_700_000_000.0 + len(rows),
                    "session_id": f"session-{len(rows) // 4}",
                    "user_query": task.query,
                    "response": f"Answer: {task.answer}",
                    "agent_selected": "HRM",
                    "retrieval_quality": 0.5,
                    "metadata": {"best_agent": BEST_AGENT[task.family]},
                }
            )
    return rows


def _timed_retrain(rows: list, workdir: Path, runs: int) -> tuple[list[float], dict]:
    times, result = [], {}
    for _ in range(runs):
        start = time.perf_counter()
        result = IncrementalRetrainingPipeline({"min_new_samples": 100}).retrain_sync(
            rows, workdir / "v1", workdir / "v2"
        )
        times.append(time.perf_counter() - start)
        assert result["status"] == "completed", result
    return times, result


def speed_table(size: int, runs: int) -> list[str]:
    lines = [f"Retrain time over {size} interactions, median of {runs} runs (target <= 30 s)"]
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        starting_model_set().save(workdir / "v1")
        logger = ProductionInteractionLogger({"storage": str(workdir), "use_compression": False})
        for record in synthetic_interactions(size, seed=5, pii_rate=0.02):
            logger.log_interaction_sync(record)
        logger.flush()
        stored = logger.query_interactions(limit=size)
        logger.close()
        for name, rows in (
            ("stored synthetic traffic", stored),
            ("distinct tasks", _distinct_task_rows(size)),
        ):
            times, result = _timed_retrain(rows, workdir, runs)
            prep = result["steps"]["data_preparation"]
            lines.append(
                f"  {name:<25} {len(rows):>6} interactions -> {prep['labels']:>6} labels "
                f"({prep['train_samples']} train / {prep['validation_samples']} held out): "
                f"median {statistics.median(times):.2f} s (min {min(times):.2f}, max {max(times):.2f})"
            )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--traffic", type=int, default=2000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--size", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    for line in speed_table(args.size, args.runs):
        print(line, flush=True)
    print()
    for line in learning_table(args.seeds, args.traffic):
        print(line, flush=True)


if __name__ == "__main__":
    main()
