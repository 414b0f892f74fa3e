"""The continual_learning section: every documented key and default, and clear errors."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from cl_plugin.config import SECTIONS, ContinualLearningConfig, LoggingConfig, load_config, parse_section
from cl_plugin.errors import ConfigError
from tests.test_design import DESIGN_YAML

SPEC_YAML = DESIGN_YAML  # the design's YAML, as tests/test_design.py holds it verbatim


def test_the_spec_yaml_loads_and_equals_the_defaults(tmp_path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(SPEC_YAML)
    cfg = load_config(path)
    defaults = ContinualLearningConfig()
    for section in (
        "failure_analysis",
        "active_learning",
        "retraining",
        "drift_detection",
        "ab_testing",
        "privacy",
    ):
        assert getattr(cfg, section) == getattr(defaults, section), section
    assert cfg.logging == defaults.logging
    assert cfg.logging.buffer_size == 1000
    assert cfg.logging.langsmith_project == "production-feedback"
    assert cfg.drift_detection.detection_method == "kolmogorov_smirnov"
    assert cfg.privacy.retention_days == 90


def test_other_top_level_keys_and_empty_sections_are_fine(tmp_path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("model: {name: x}\ncontinual_learning:\n  logging:\n  retraining:\n    schedule: daily\n")
    cfg = load_config(path)
    assert cfg.logging == LoggingConfig()
    assert cfg.retraining.schedule == "daily"


def test_misspelt_key_names_the_key_and_the_allowed_ones(tmp_path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("continual_learning:\n  logging:\n    bufer_size: 10\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert err.value.key == "continual_learning.logging.bufer_size"
    assert "unknown key 'continual_learning.logging.bufer_size'" in str(err.value)
    assert "buffer_size" in str(err.value)


def test_misspelt_section_lists_the_sections(tmp_path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("continual_learning:\n  loging: {}\n")
    with pytest.raises(ConfigError, match=r"unknown key 'continual_learning\.loging'.*logging"):
        load_config(path)


@pytest.mark.parametrize(
    ("section", "value", "fragment"),
    [
        (
            "active_learning",
            {"selection_strategy": "random"},
            "'uncertainty', 'diversity', 'hybrid' or 'failure'",
        ),
        ("retraining", {"schedule": "hourly"}, "'daily', 'weekly' or 'monthly'"),
        ("logging", {"buffer_size": "lots"}, "valid integer"),
        ("logging", {"buffer_size": 0}, "greater than or equal to 1"),
        ("ab_testing", {"traffic_split": 1.5}, "less than 1"),
        ("drift_detection", {"detection_method": "magic"}, "'kolmogorov_smirnov' or 'psi'"),
    ],
)
def test_ill_typed_values_name_the_key_and_what_is_allowed(section, value, fragment) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(None, **{section: value})
    key = next(iter(value))
    assert err.value.key == f"continual_learning.{section}.{key}"
    assert fragment in str(err.value)


def test_missing_or_broken_files_are_clear(tmp_path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("continual_learning: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    other = tmp_path / "other.yaml"
    other.write_text("something_else: 1\n")
    with pytest.raises(ConfigError, match="no top-level 'continual_learning:' key"):
        load_config(other)


def test_sections_accept_dicts_models_and_keyword_overrides() -> None:
    cfg = parse_section(LoggingConfig, {"buffer_size": 10}, prefix="logging", sanitize_pii=False)
    assert (cfg.buffer_size, cfg.sanitize_pii) == (10, False)
    assert parse_section(LoggingConfig, cfg, prefix="logging") is cfg
    with pytest.raises(ConfigError, match="logging config must be a dict"):
        parse_section(LoggingConfig, ["buffer_size"], prefix="logging")


def test_zero_and_false_values_are_kept_not_replaced_by_defaults() -> None:
    cfg = parse_section(LoggingConfig, {"use_compression": False, "sanitize_pii": False})
    assert cfg.use_compression is False and cfg.sanitize_pii is False


# -- the shapes every classic constructor accepts ------------------------------------------------------------


def _classic(tmp_path: Path) -> dict[str, tuple[Any, str, str, Any]]:
    """Each classic class -> (constructor, its section, a key of that section, a value for it)."""
    from cl_plugin import (
        ABTestFramework,
        ActiveLearningSelector,
        DataQualityValidator,
        DriftDetector,
        FailurePatternAnalyzer,
        IncrementalRetrainingPipeline,
        ProductionInteractionLogger,
    )

    def logger(config: Any) -> Any:
        made = ProductionInteractionLogger(config, storage=str(tmp_path / "logs"))
        made.close()
        return made

    return {
        "ProductionInteractionLogger": (logger, "logging", "buffer_size", 77),
        "DataQualityValidator": (DataQualityValidator, "validation", "max_query_length", 777),
        "FailurePatternAnalyzer": (FailurePatternAnalyzer, "failure_analysis", "min_cluster_size", 7),
        "ActiveLearningSelector": (ActiveLearningSelector, "active_learning", "budget_per_cycle", 7),
        "IncrementalRetrainingPipeline": (IncrementalRetrainingPipeline, "retraining", "min_new_samples", 7),
        "DriftDetector": (DriftDetector, "drift_detection", "window_size", 77),
        "ABTestFramework": (ABTestFramework, "ab_testing", "min_samples", 77),
    }


def _setting(obj: Any, section: str, key: str) -> Any:
    settings = obj.validation if section == "validation" else obj.config
    return getattr(settings, key)


CLASSIC = [
    "ProductionInteractionLogger",
    "DataQualityValidator",
    "FailurePatternAnalyzer",
    "ActiveLearningSelector",
    "IncrementalRetrainingPipeline",
    "DriftDetector",
    "ABTestFramework",
]
# Keys of several other sections, as one flat dict passed to every component holds them.
OTHERS = {"storage": "./cache/x", "sanitize_pii": True, "similarity_threshold": 0.6, "traffic_split": 0.2}


@pytest.mark.parametrize("name", CLASSIC)
def test_every_classic_class_takes_every_config_shape(
    name: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    make, section, key, value = _classic(tmp_path)[name]
    flat = {**{k: v for k, v in OTHERS.items() if k not in SECTIONS[section].model_fields}, key: value}
    shapes = {
        "own section": {key: value},
        "flat, mixing sections": flat,
        "dict of sections": {section: {key: value}, "privacy": {"retention_days": 30}},
        "continual_learning mapping": {"continual_learning": {section: {key: value}}, "other_tool": {"x": 1}},
        "typed section": SECTIONS[section](**{key: value}),
        "typed whole config": ContinualLearningConfig(**{section: {key: value}}),
    }
    for shape, config in shapes.items():
        with caplog.at_level(logging.DEBUG, logger="cl_plugin"):
            obj = make(config)
        assert _setting(obj, section, key) == value, shape
    # the keys of other sections in the flat dict were ignored, and said so at DEBUG
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="cl_plugin"):
        make(flat)
    ignored = " ".join(r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG)
    other = "similarity_threshold" if section == "ab_testing" else "traffic_split"
    assert "ignor" in ignored and other in ignored


@pytest.mark.parametrize("name", CLASSIC)
def test_every_classic_class_names_an_unknown_key_and_suggests_the_nearest(name: str, tmp_path: Path) -> None:
    make, section, key, value = _classic(tmp_path)[name]
    typo = key[:-2] + key[-1] + key[-2]  # two letters swapped
    with pytest.raises(ConfigError, match=rf"{typo}.*did you mean '{key}'") as caught:
        make({"storage": "./cache/x", typo: value})
    assert caught.value.key is not None and typo in caught.value.key
    with pytest.raises(ConfigError, match=rf"{typo}.*did you mean '{key}'"):
        make({section: {typo: value}})


@pytest.mark.parametrize("name", CLASSIC)
def test_every_classic_class_names_a_bad_value_of_a_known_key(name: str, tmp_path: Path) -> None:
    make, _, key, _ = _classic(tmp_path)[name]
    with pytest.raises(ConfigError, match=rf"{key}.*-5") as caught:
        make({**OTHERS, key: -5})
    assert caught.value.key is not None and key in caught.value.key
