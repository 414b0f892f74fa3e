"""Project-level promises: the public API, and the README's commands being what CI runs."""

from __future__ import annotations

import re
from pathlib import Path

import cl_plugin

ROOT = Path(__file__).resolve().parents[1]


def test_public_names_are_pinned() -> None:
    assert sorted(cl_plugin.__all__) == [
        "ABTestEndedError",
        "ABTestError",
        "ABTestFramework",
        "ADWIN",
        "ActiveLearningCandidate",
        "ActiveLearningSelector",
        "ArtifactIntegrityError",
        "Attribution",
        "CaptureHandler",
        "ClPluginError",
        "ConfigError",
        "ContinualLearningConfig",
        "DDM",
        "DataQualityValidator",
        "DriftDetector",
        "DriftInputError",
        "DriftReport",
        "EDDM",
        "ExportResult",
        "FailureAnalysis",
        "FailurePattern",
        "FailurePatternAnalyzer",
        "FeedbackMirror",
        "FeedbackMirrorStats",
        "IncrementalRetrainingPipeline",
        "InvalidRecordError",
        "KSWIN",
        "LearnedRouter",
        "MetaRouter",
        "MetricOptions",
        "MissingDependencyError",
        "ModelRegistry",
        "ModelSet",
        "PIIRedactor",
        "PageHinkley",
        "PointRef",
        "PrivacyConfigError",
        "ProductionInteraction",
        "ProductionInteractionLogger",
        "RagIndex",
        "RegistryError",
        "ReplayBuffer",
        "RoutingDecision",
        "RoutingLabel",
        "Store",
        "StoreError",
        "StoreSchemaError",
        "StoreUnavailableError",
        "UnknownABTestError",
        "UnknownInteractionError",
        "UntrustedArtifactError",
        "arecord_decision",
        "build_report",
        "compare_columns",
        "export_to_dataset",
        "interaction_metrics",
        "load_config",
        "metrics_by_window",
        "point_metrics",
        "probabilities_from_decisions",
        "record_decision",
        "required_sample_size",
        "router_metrics",
        "routing_labels",
        "sanitizing_client",
        "sanitizing_tracer",
        "statistical_power",
        "store_metrics",
        "store_metrics_by_window",
        "text_drift",
    ]
    for name in cl_plugin.__all__:
        assert getattr(cl_plugin, name) is not None


def readme_commands() -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
    return [line.strip() for block in blocks for line in block.splitlines() if line.strip()]


def test_readme_has_two_setup_commands_and_ci_runs_the_tests_as_written() -> None:
    commands = readme_commands()
    assert len(commands) == 2, commands
    main_job, tests = commands
    assert main_job == "python3 -m venv .venv && .venv/bin/pip install -e . && .venv/bin/cl-plugin demo"
    assert tests.endswith("python -m pytest")
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert tests in ci  # CI runs the README's test command, as written, in a fresh virtualenv
    # The main job runs in tests/test_cli.py with the runtime dependencies only (what `pip install -e .` gives).
    from tests import test_cli

    assert hasattr(test_cli, "test_demo_runs_the_whole_loop_into_sqlite_with_the_runtime_dependencies_only")
