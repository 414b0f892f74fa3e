"""The original design's demo with its classic API: log, analyse, select, retrain, detect drift, A/B test.

    python examples/continual_learning_demo.py [database-url]

The example multi-agent graph serves 400 simulated production queries (:mod:`cl_plugin.graphs.traffic`) whose mix
and wording drift half-way (:data:`cl_plugin.graphs.traffic.OPS_DRIFT`), and the script walks the design's
"Complete Workflow Example":

1. each interaction is logged with ``await logger.log_interaction(...)``, and the simulated user's rating
   or correction arrives afterwards with ``logger.record_feedback(...)``;
2. ``FailurePatternAnalyzer`` estimates the failure rate from the outcomes (printed beside the share of
   wrong answers), says which diagnostics go with the failures, and finds the failure patterns;
3. ``ActiveLearningSelector`` picks what is worth a label, and a simulated annotator who knows each task's
   best agent labels it;
4. ``IncrementalRetrainingPipeline`` checks that a retrain is due and retrains the router and the index;
5. ``DriftDetector`` watches the second half of the traffic against the first;
6. ``ABTestFramework`` splits 300 more requests between the production and the candidate router and
   recommends one.

Every number printed is measured in this run. The store is the given database URL (a SQLite file in a
temporary folder by default).
"""

from __future__ import annotations

import asyncio
import random
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from cl_plugin.graphs.mcts_agents import (
    build_mcts_agent_graph,
    new_thread_config,
    starting_model_set,
)
from cl_plugin.graphs.tasks import BEST_AGENT, check_answer
from cl_plugin.graphs.traffic import (
    OPS_DRIFT,
    DriftSchedule,
    ProductionQuery,
    production_queries,
    simulated_feedback,
)

from cl_plugin import (
    ABTestFramework,
    ActiveLearningSelector,
    DriftDetector,
    FailurePatternAnalyzer,
    IncrementalRetrainingPipeline,
    ModelSet,
    ProductionInteraction,
    ProductionInteractionLogger,
)

#: After the drift: the new family mix, 80% of it in the on-call engineers' wording.
AFTER_DRIFT = DriftSchedule(((0.0, OPS_DRIFT.phases[-1][1]),), phrasing=((0.0, OPS_DRIFT.phrasing[-1][1]),))


def make_config(workdir: Path, url: str) -> dict[str, dict[str, Any]]:
    """The ``continual_learning`` sections of the design, as dicts (``load_config`` reads the same from YAML)."""
    return {
        "logging": {"storage": str(workdir / "logs"), "database_url": url, "sanitize_pii": True},
        "failure_analysis": {"min_cluster_size": 5, "similarity_threshold": 0.7},
        "active_learning": {"budget_per_cycle": 60, "selection_strategy": "hybrid", "diversity_weight": 0.3},
        "retraining": {"schedule": "weekly", "min_new_samples": 50, "validation_split": 0.2},
        "drift_detection": {
            "window_size": 200,
            "threshold": 0.1,
            "detection_method": "kolmogorov_smirnov",
            "check_every": 50,
            "min_samples": 100,
        },
        "ab_testing": {"traffic_split": 0.5, "min_samples": 100, "confidence_level": 0.95},
    }


def starting_models(path: Path) -> ModelSet:
    """The production model set the graph starts with: the default router, index and their labels."""
    models = starting_model_set()
    models.save(path)
    return models


def answer(graph: Any, query: ProductionQuery) -> tuple[dict[str, Any], float]:
    """The graph's output for one query and its latency in milliseconds."""
    start = time.perf_counter()
    out = graph.invoke({"query": query.text}, config=new_thread_config(query.session_id))
    return out, (time.perf_counter() - start) * 1000.0


def routed_right(query: ProductionQuery, output: dict[str, Any]) -> float:
    """The A/B test's success metric: 1.0 when the router sent the query to its task's best agent."""
    return float(output["agent_selected"] == BEST_AGENT[query.task.family])


async def main(url: str | None = None) -> None:
    workdir = Path(tempfile.mkdtemp())
    config = make_config(workdir, url or f"sqlite:///{workdir / 'interactions.db'}")
    production = starting_models(workdir / "models" / "production")
    graph = build_mcts_agent_graph(router=production.router, rag=production.rag).compile()

    print("1. Production interaction logging")
    logger = ProductionInteractionLogger(config["logging"])
    rng = random.Random(1)
    tasks = {}
    wrong = 0
    for query in production_queries(400, seed=21, drift=OPS_DRIFT):
        out, latency_ms = answer(graph, query)
        interaction = ProductionInteraction(
            interaction_id=str(uuid.uuid4()),
            timestamp=time.time(),
            session_id=query.session_id,
            user_query=query.text,
            agent_selected=out["agent_selected"],
            agent_confidence=out["agent_confidence"],
            response=out["response"],
            latency_ms=latency_ms,
            retrieval_quality=out["retrieval_quality"],
            user_id=query.user.user_id,
            graph_name="mcts_agents",
            metadata={"answered_by": out["answered_by"]},
        )
        await logger.log_interaction(interaction)
        tasks[interaction.interaction_id] = query.task
        correct = check_answer(query.task, out["response"])
        wrong += not correct
        feedback = simulated_feedback(query.user, query.task, correct, latency_ms, rng)
        if feedback:
            logger.record_feedback(interaction.interaction_id, **feedback)
    stats = logger.get_statistics()
    print(
        f"   logged {stats['total_interactions']} interactions (mean rating {stats['avg_feedback_score']:.2f}), "
        f"redacted, with a {stats['writer']['backup_bytes']:,}-byte gzip backup"
    )

    print("\n2. Failure pattern identification")
    interactions = logger.query_interactions(limit=10_000)
    analysis = FailurePatternAnalyzer(config["failure_analysis"]).analyze(interactions)
    patterns = analysis.patterns  # what analyze_failures(interactions) returns
    print(
        f"   estimated failure rate {analysis.outcome.rate:.1%} from the outcomes ({analysis.outcome.describe()}); "
        f"{wrong / len(tasks):.1%} of the answers were wrong"
    )
    for diagnostic in analysis.diagnostics:
        print(f"   diagnostic {diagnostic.signal} [{diagnostic.verdict}]: {diagnostic.describe()}")
    print(f"   identified {len(patterns)} failure patterns")
    for pattern in patterns[:4]:
        print(f"   - {pattern.pattern_type} ({pattern.frequency} interactions): {pattern.suggested_fix}")

    print("\n3. Active learning selection")
    selector = ActiveLearningSelector(config["active_learning"], router=production.router)
    candidates = selector.select_for_annotation(interactions, budget=60)
    for candidate in candidates[:3]:
        print(f"   {candidate.user_query[:60]!r}: {candidate.selection_reason}")
    annotated = [  # the annotation platform: an annotator who knows each task's best agent
        {
            "interaction_id": c.interaction_id,
            "status": "labeled",
            "label": {"agent": BEST_AGENT[tasks[c.interaction_id].family]},
        }
        for c in candidates
    ]
    print(f"   {len(annotated)} selected and labeled")

    print("\n4. Incremental retraining")
    pipeline = IncrementalRetrainingPipeline(config["retraining"])
    last_retrain_time = None  # the starting router was never retrained
    due = pipeline.should_retrain(last_retrain_time, len(annotated))
    print(f"   retrain due with {len(annotated)} new labels: {due}")
    result = {"status": "not due"}
    if due:
        result = await pipeline.retrain(
            new_data=interactions + annotated,
            old_model_path=workdir / "models" / "production",
            output_path=workdir / "models" / "candidate",
        )
        print(f"   status {result['status']} in {result['duration_s']:.1f} s")
    if result["status"] == "completed":
        data = result["steps"]["data_preparation"]
        print(
            f"   {data['labels']} labels: {data['train_samples']} to train, {data['validation_samples']} held out"
        )
        for who in ("production", "candidate"):
            m = result["metrics"][who]
            print(
                f"   {who:<10} accuracy {m['accuracy']:.3f}  macro-F1 {m['macro_f1']:.3f}  ECE {m['ece']:.3f}"
            )
        print(f"   gate: {result['steps']['evaluation']['gate']['reason']}")

    print("\n5. Drift detection")
    oldest_first = sorted(interactions, key=lambda r: r["timestamp"])
    half = len(oldest_first) // 2

    def features(row: dict[str, Any]) -> dict[str, Any]:
        return {
            "agent_confidence": row["agent_confidence"],
            "latency_ms": row["latency_ms"],
            "query_length": float(len(row["user_query"])),
            "agent_selected": row["agent_selected"],
        }

    detector = DriftDetector(config["drift_detection"])
    detector.set_reference_distribution([features(r) for r in oldest_first[:half]])
    for i, row in enumerate(oldest_first[half:], start=1):
        drift_report = detector.add_sample(features(row), timestamp=row["timestamp"])
        if drift_report:
            print(
                f"   drift detected after {i} samples: {drift_report.severity}, "
                f"{drift_report.drifted_features} ({drift_report.method})"
            )
    summary = detector.get_drift_summary()
    print(f"   {summary['checks']} checks, {summary['alarms']} alarm(s), in drift now: {summary['in_drift']}")

    print("\n6. A/B testing")
    if result["status"] != "completed":
        print("   no candidate to test")
    else:
        candidate = ModelSet.load(workdir / "models" / "candidate")
        graphs = {
            "A": graph,
            "B": build_mcts_agent_graph(router=candidate.router, rag=candidate.rag).compile(),
        }
        framework = ABTestFramework(config["ab_testing"])
        test_id = framework.create_test(
            "retrain_test", model_a="production", model_b="candidate", metric_fn=routed_right
        )
        for query in production_queries(300, seed=22, drift=AFTER_DRIFT):
            group = framework.assign_group(test_id, f"request-{query.index}")
            out, _ = answer(graphs[group], query)
            framework.record_result(test_id, group, query, out)
        ab = framework.end_test(test_id)
        for group in ("A", "B"):
            g = ab["groups"][group]
            print(f"   group {group}: {g['n']} requests, routed right {g['mean']:.3f}")
        print(f"   recommendation: {ab['recommendation']} ({ab['reason']})")
        framework.close()
    logger.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else None))
