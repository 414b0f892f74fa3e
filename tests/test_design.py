"""The original design's snippets, run as written, against the classic API imported from ``cl_plugin``.

Each block between ``# fmt: off`` and ``# fmt: on`` is the design's text; only its import line names
``cl_plugin`` instead of ``training.continual_learning``. What the snippets leave undefined
(``interactions``, ``production_stream``, ``send_for_annotation``, ...) is defined around them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from cl_plugin import *  # the design's workflow imports every classic name this way
from cl_plugin.graphs.tasks import BEST_AGENT, sample_tasks

DESIGN_YAML = textwrap.dedent(
    """
    continual_learning:
      # Production interaction logging
      logging:
        enabled: true
        storage: "./cache/production_logs"
        use_sqlite: true
        use_compression: true
        buffer_size: 1000
        sanitize_pii: true
        use_langsmith: false
        langsmith_project: "production-feedback"

      # Failure pattern analysis
      failure_analysis:
        enabled: true
        min_cluster_size: 5
        similarity_threshold: 0.7
        analyze_frequency: "daily"

      # Active learning
      active_learning:
        enabled: true
        budget_per_cycle: 50
        selection_strategy: "hybrid"  # uncertainty, diversity, hybrid, failure

      # Incremental retraining
      retraining:
        schedule: "weekly"  # daily, weekly, monthly
        min_new_samples: 100
        validation_split: 0.2
        enable_ab_test: true

      # Data drift detection
      drift_detection:
        enabled: true
        window_size: 1000
        threshold: 0.1
        detection_method: "kolmogorov_smirnov"

      # A/B testing
      ab_testing:
        enabled: false
        traffic_split: 0.1
        min_samples: 1000
        confidence_level: 0.95

      # Privacy and security
      privacy:
        anonymize_user_ids: true
        hash_session_ids: true
        redact_sensitive_fields: true
        retention_days: 90
    """
)


def stream(n: int, seed: int = 0) -> list[Any]:
    """Production interactions of the example domain whose metadata names the agent that fits best."""
    from cl_plugin import ProductionInteraction

    rng = random.Random(seed)
    out = []
    for i, task in enumerate(sample_tasks(n, seed=seed)):
        right = rng.random() < 0.7
        out.append(
            ProductionInteraction(
                interaction_id=f"i-{seed}-{i}",
                timestamp=time.time() - (n - i),
                session_id=f"s-{rng.randrange(40)}",
                user_query=task.query,
                agent_selected=BEST_AGENT[task.family] if right else "HRM",
                agent_confidence=round(rng.uniform(0.3, 0.95), 2),
                response=f"Answer: {task.answer}" if right else "I am not sure.",
                user_feedback_score=float(rng.choice((4, 5)) if right else rng.choice((1, 2))),
                latency_ms=rng.uniform(200, 6000),
                metadata={"best_agent": BEST_AGENT[task.family]},
            )
        )
    return out


def test_the_logger_snippet(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)

    async def main() -> list[dict]:
        # fmt: off
        from cl_plugin import ProductionInteractionLogger, ProductionInteraction

        # Initialize logger
        config = {
            "enabled": True,
            "storage": "./cache/production_logs",
            "use_sqlite": True,
            "sanitize_pii": True,
        }
        logger = ProductionInteractionLogger(config)

        # Log interaction
        interaction = ProductionInteraction(
            interaction_id="unique_id",
            timestamp=time.time(),
            session_id="session_123",
            user_query="What is MCTS?",
            agent_selected="HRM",
            agent_confidence=0.85,
            response="MCTS is...",
            user_feedback_score=4.5,
            latency_ms=1200.0,
        )

        await logger.log_interaction(interaction)

        # Query interactions
        recent_failures = logger.query_interactions(
            max_feedback_score=3.0,
            limit=100
        )
        # fmt: on
        assert recent_failures == []  # the only interaction was rated 4.5
        everything = logger.query_interactions(limit=None)
        failed = dataclasses.replace(interaction, interaction_id="failed_id", user_feedback_score=2.0)
        assert await logger.log_interaction(failed) is True
        failures = logger.query_interactions(max_feedback_score=3.0, limit=100)
        assert [r["interaction_id"] for r in failures] == ["failed_id"]
        logger.close()
        for name in ("session_id", "user_query", "agent_selected", "response", "latency_ms"):
            assert everything[0][name] == getattr(interaction, name), name
        return everything

    [row] = asyncio.run(main())
    assert (row["interaction_id"], row["user_feedback_score"]) == ("unique_id", 4.5)
    assert row["agent_confidence"] == pytest.approx(0.85)
    assert (tmp_path / "cache" / "production_logs" / "interactions.db").exists()


def test_the_validator_snippet_takes_the_loggers_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CL_PLUGIN_HASH_KEY", raising=False)
    from cl_plugin import ProductionInteraction

    config = {"enabled": True, "storage": "./cache/production_logs", "use_sqlite": True, "sanitize_pii": True}
    interaction = ProductionInteraction(
        interaction_id="unique_id",
        timestamp=time.time(),
        session_id="session_123",
        user_query="What is MCTS? Write to ana.lima@example.com",
        response="MCTS is a tree search.",
    )
    # fmt: off
    from cl_plugin import DataQualityValidator

    validator = DataQualityValidator(config)

    # Validate interaction
    is_valid, issues = validator.validate_interaction(interaction)

    # Sanitize PII
    sanitized = validator.sanitize_interaction(interaction)
    # fmt: on
    assert (is_valid, issues) == (False, ["user_query: contains PII (EMAIL)"])
    assert sanitized.user_query == "What is MCTS? Write to [EMAIL]"
    # sanitize_pii: false in the same dict turns redaction off
    kept = DataQualityValidator({**config, "sanitize_pii": False}).sanitize_interaction(interaction)
    assert kept.user_query == interaction.user_query


def test_the_analyzer_and_selector_snippets(capsys: pytest.CaptureFixture[str]) -> None:
    interactions = [i.to_dict() for i in stream(400)]
    # fmt: off
    from cl_plugin import FailurePatternAnalyzer

    analyzer = FailurePatternAnalyzer({
        "min_cluster_size": 5,
        "similarity_threshold": 0.7
    })

    # Analyze failures
    patterns = analyzer.analyze_failures(interactions)

    for pattern in patterns:
        print(f"{pattern.pattern_type}: {pattern.description}")
        print(f"Suggested fix: {pattern.suggested_fix}")
    from cl_plugin import ActiveLearningSelector

    selector = ActiveLearningSelector({
        "selection_strategy": "hybrid",
        "diversity_weight": 0.3
    })

    # Select top candidates for annotation
    candidates = selector.select_for_annotation(
        interactions,
        budget=50
    )

    for candidate in candidates:
        print(f"{candidate.interaction_id}: {candidate.selection_reason}")
    # fmt: on
    out = capsys.readouterr().out
    assert "low_rating:" in out and "Suggested fix:" in out
    assert len(candidates) == 50 and len({c.interaction_id for c in candidates}) == 50
    assert all(len(c.selection_reason) > 20 for c in candidates)  # each says why it was picked


def test_the_drift_snippet(capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(0)
    training_data = rng.normal(size=(5000, 3))
    production_stream = np.vstack([rng.normal(size=(1500, 3)), rng.normal(1.0, 1.0, size=(1500, 3))])
    # fmt: off
    from cl_plugin import DriftDetector

    detector = DriftDetector({
        "window_size": 1000,
        "threshold": 0.1,
        "detection_method": "kolmogorov_smirnov"
    })

    # Set reference distribution
    detector.set_reference_distribution(training_data)

    # Monitor production data
    for sample in production_stream:
        drift_report = detector.add_sample(sample)
        if drift_report:
            print(f"Drift detected: {drift_report.severity}")
    # fmt: on
    alarms = capsys.readouterr().out.splitlines()
    assert alarms and all(
        a in ("Drift detected: low", "Drift detected: medium", "Drift detected: high") for a in alarms
    )
    assert detector.get_drift_summary()["total_drifts"] == len(alarms)


def test_the_pipeline_snippet(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from cl_plugin.learning.modelset import ModelSet
    from tests.test_retraining import rows

    monkeypatch.chdir(tmp_path)
    last_retrain_time = time.time() - 8 * 86_400
    interactions = rows(300, seed=1)
    num_new_samples = len(interactions)

    async def main() -> dict:
        result: dict = {}
        # fmt: off
        from cl_plugin import IncrementalRetrainingPipeline

        pipeline = IncrementalRetrainingPipeline({
            "schedule": "weekly",
            "min_new_samples": 100,
            "validation_split": 0.2,
            "enable_ab_test": True
        })

        # Check if should retrain
        if pipeline.should_retrain(last_retrain_time, num_new_samples):
            result = await pipeline.retrain(
                new_data=interactions,
                old_model_path="models/v1",
                output_path="models/v2"
            )
        # fmt: on
        return result

    result = asyncio.run(main())
    assert result["status"] == "completed", result
    assert result["steps"]["load_production"]["status"] == "not_found"  # the first model: no baseline
    assert result["metrics"]["production"] is None and result["metrics"]["candidate"]["accuracy"] > 0.9
    assert result["steps"]["ab_test"]["status"] == "skipped"
    router = ModelSet.load(tmp_path / "models" / "v2").router
    assert router.predict(["square root of 20 to 3 decimals"])[0] == "TRM"


def test_the_ab_test_snippet(capsys: pytest.CaptureFixture[str]) -> None:
    class Model:
        def __init__(self, name: str) -> None:
            self.name = name

        def __call__(self, query: str) -> str:
            return f"{self.name}: answer to {query}"

    def calculate_success_metric(inp: dict[str, Any], out: str) -> float:
        return 1.0 if inp["query"] in out else 0.0

    old_model, new_model = Model("v1"), Model("v2")
    request_id = "req-0001"
    input_data = {"query": "what is the port of the billing service"}
    output = None
    metric = None  # computed by metric_fn from input_data and output
    # fmt: off
    from cl_plugin import ABTestFramework

    framework = ABTestFramework({
        "traffic_split": 0.1,  # 10% to new model
        "min_samples": 1000,
        "confidence_level": 0.95
    })

    # Create test
    test_id = framework.create_test(
        "model_v2_test",
        model_a=old_model,
        model_b=new_model,
        metric_fn=lambda inp, out: calculate_success_metric(inp, out)
    )

    # Route traffic
    group = framework.assign_group(test_id, request_id)
    model = new_model if group == "B" else old_model
    # fmt: on
    output = model(input_data["query"])
    # fmt: off

    # Record result
    framework.record_result(test_id, group, input_data, output, metric)

    # Get recommendation
    result = framework.end_test(test_id)
    print(result["recommendation"])  # "Deploy B" or "Keep A"
    # fmt: on
    assert capsys.readouterr().out == "Continue\n"  # one result is no evidence either way
    assert result["groups"][group]["n"] == 1
    assert result["groups"][group]["mean"] == calculate_success_metric(input_data, output)
    assert result["model_a"].startswith("v1 (") and result["status"] == "ended"


def test_the_configuration_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The design's YAML, added to ``training/config.yaml`` as it says, loads and configures every component."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CL_PLUGIN_HASH_KEY", "config-test-key")
    (tmp_path / "training").mkdir()
    (tmp_path / "training" / "config.yaml").write_text("other_tool:\n  x: 1\n" + DESIGN_YAML)
    config = load_config("training/config.yaml")
    assert config.failure_analysis.similarity_threshold == 0.7
    assert config.drift_detection.detection_method == "kolmogorov_smirnov"
    assert config.privacy.retention_days == 90
    assert FailurePatternAnalyzer(config).config == config.failure_analysis
    assert DriftDetector(config.drift_detection).config == config.drift_detection
    # a misspelt key in the file stays an error, with the nearest key suggested
    (tmp_path / "training" / "config.yaml").write_text(
        DESIGN_YAML.replace("similarity_threshold", "similarity_treshold")
    )
    with pytest.raises(ConfigError, match=r"similarity_treshold.*did you mean 'similarity_threshold'"):
        load_config("training/config.yaml")


def test_the_langsmith_snippet(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With ``use_langsmith`` the logger mirrors feedback to LangSmith (a local server here), redacted."""
    import uuid

    from tests.langsmith_server import LangSmithServer

    for var in ("LANGSMITH_TRACING", "LANGCHAIN_TRACING_V2", "LANGCHAIN_ENDPOINT"):
        monkeypatch.delenv(var, raising=False)
    config = yaml.safe_load(DESIGN_YAML)["continual_learning"]
    config["logging"]["storage"] = str(tmp_path)
    with LangSmithServer() as server:
        monkeypatch.setenv("LANGSMITH_ENDPOINT", server.url)
        monkeypatch.setenv("LANGSMITH_API_KEY", "fake")
        server._project("production-feedback")
        # fmt: off
        # Enable LangSmith tracing
        config["logging"]["use_langsmith"] = True
        config["logging"]["langsmith_project"] = "production-feedback"

        # Interactions automatically logged to LangSmith
        # fmt: on
        logger = ProductionInteractionLogger(config["logging"])
        run_id = str(uuid.uuid4())
        logger.log_interaction_sync(
            ProductionInteraction(run_id, time.time(), "s-1", "What is MCTS?", thumbs_up_down="none")
        )
        logger.record_feedback(run_id, score=2.0, comment="call me on 555-123-4567")
        assert logger.feedback_mirror.flush(10)
        assert server.wait_for(lambda: len(server.feedback) == 1)
        [sent] = server.feedback.values()
        assert sent["run_id"] == run_id and sent["score"] == 2.0
        assert "555-123-4567" not in str(sent)
        logger.close()


def test_the_complete_workflow_example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    """The design's "Complete Workflow Example" with the design's YAML configuration."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CL_PLUGIN_HASH_KEY", "workflow-test-key")
    config = yaml.safe_load(DESIGN_YAML)["continual_learning"]
    config["retraining"]["min_new_samples"] = 40  # one annotation batch of 50 is enough here
    production_stream = stream(600, seed=1)
    by_id = {i.interaction_id: i for i in production_stream}
    last_retrain_time = None  # never retrained
    outcome: dict[str, Any] = {}

    async def send_for_annotation(candidates: list) -> list[dict]:
        """The annotation platform: each candidate comes back with the agent that should have answered."""
        labeled = []
        for c in candidates:
            record = by_id[c.interaction_id].to_dict()
            record["metadata"] = {"correct_agent": record["metadata"]["best_agent"]}
            labeled.append(record)
        return labeled

    def success_metric(inp: Any, out: Any) -> float:
        return 1.0

    # fmt: off
    async def continual_learning_loop():
        """Complete continual learning workflow."""

        # 1. Initialize components
        logger = ProductionInteractionLogger(config["logging"])
        analyzer = FailurePatternAnalyzer(config["failure_analysis"])
        selector = ActiveLearningSelector(config["active_learning"])
        pipeline = IncrementalRetrainingPipeline(config["retraining"])

        # 2. Log production interactions
        for interaction in production_stream:
            await logger.log_interaction(interaction)

        # 3. Analyze failures (daily)
        interactions = logger.query_interactions(limit=10000)
        patterns = analyzer.analyze_failures(interactions)

        print(f"Identified {len(patterns)} failure patterns")
        for pattern in patterns:
            print(f"- {pattern.pattern_type}: {pattern.suggested_fix}")

        # 4. Select samples for annotation (weekly)
        candidates = selector.select_for_annotation(
            interactions,
            budget=50
        )

        # Send to annotation platform
        annotated_samples = await send_for_annotation(candidates)

        # 5. Retrain models (when enough data)
        if pipeline.should_retrain(last_retrain_time, len(annotated_samples)):
            result = await pipeline.retrain(
                new_data=annotated_samples,
                old_model_path="models/production",
                output_path="models/candidate"
            )

            if result["status"] == "completed":
                print("Retraining successful!")

                # 6. A/B test new model
                ab_framework = ABTestFramework(config["ab_testing"])
                test_id = ab_framework.create_test(
                    "retrain_test",
                    model_a="production",
                    model_b="candidate",
                    metric_fn=success_metric
                )

                # Monitor test...
                # Deploy winner if significant improvement
                outcome["test"] = ab_framework.get_test_status(test_id)
            outcome["retrain"] = result
        outcome["logged"] = logger.get_statistics()
        logger.close()

    # Run loop
    asyncio.run(continual_learning_loop())
    # fmt: on
    out = capsys.readouterr().out
    assert outcome["logged"]["total_interactions"] == 600 and outcome["logged"]["refused"] == 0
    assert "Identified" in out and "- low_rating:" in out
    assert outcome["retrain"]["status"] == "completed", outcome["retrain"]
    assert "Retraining successful!" in out
    assert outcome["test"]["status"] == "running"
    assert (tmp_path / "models" / "candidate").is_dir()
