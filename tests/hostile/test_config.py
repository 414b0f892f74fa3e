"""Hostile configuration: every spec class and load_config answer arbitrary input with a ConfigError."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cl_plugin import (
    ABTestFramework,
    ActiveLearningSelector,
    ConfigError,
    DataQualityValidator,
    DriftDetector,
    FailurePatternAnalyzer,
    IncrementalRetrainingPipeline,
    load_config,
)
from cl_plugin.config import ContinualLearningConfig

CLASSES = {
    "validation": DataQualityValidator,
    "failure_analysis": FailurePatternAnalyzer,
    "active_learning": ActiveLearningSelector,
    "retraining": IncrementalRetrainingPipeline,
    "drift_detection": DriftDetector,
    "ab_testing": ABTestFramework,
}
KEYS = {
    name: sorted(ContinualLearningConfig.model_fields[name].annotation.model_fields)
    for name in ("failure_analysis", "active_learning", "retraining", "drift_detection", "ab_testing")
}
KEYS["validation"] = sorted(ContinualLearningConfig.model_fields["validation"].annotation.model_fields)

values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.sampled_from([10**5000, -1, 0, 1]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
)


@pytest.mark.parametrize("section", sorted(CLASSES))
@settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_a_spec_class_takes_its_config_or_names_the_bad_key(section: str, data: st.DataObject) -> None:
    keys = st.one_of(st.sampled_from(KEYS[section]), st.text(min_size=1, max_size=12))
    config = data.draw(st.dictionaries(keys, values, max_size=4))
    try:
        obj = CLASSES[section](config)
    except ConfigError as exc:
        assert exc.key is None or isinstance(exc.key, str)
        assert str(exc)  # says something
        return
    # accepted: every numeric setting it kept is a real number
    settings_ = getattr(obj, "config", None)
    if settings_ is not None:
        for value in settings_.model_dump().values():
            if isinstance(value, float):
                assert math.isfinite(value)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(content=st.one_of(st.binary(max_size=200), st.text(max_size=200).map(str.encode)))
def test_load_config_reads_any_file_or_says_what_is_wrong(tmp_path_factory: Any, content: bytes) -> None:
    path = Path(tmp_path_factory.mktemp("cfg")) / "config.yaml"
    path.write_bytes(content)
    try:
        load_config(path)
    except ConfigError as exc:
        assert str(path) in str(exc) or exc.key


def test_load_config_names_a_directory_a_non_utf8_file_and_an_oversized_value(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot be read"):
        load_config(tmp_path)
    latin = tmp_path / "latin.yaml"
    latin.write_bytes("continual_learning:\n  logging:\n    storage: caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(latin)
    listed = tmp_path / "listed.yaml"
    listed.write_text("continual_learning:\n  logging: [1, 2]\n")
    with pytest.raises(ConfigError, match="logging"):
        load_config(listed)  # and an override still replaces the section whole:
    assert load_config(listed, logging={"buffer_size": 10}).logging.buffer_size == 10
    with pytest.raises(ConfigError, match="buffer_size"):
        load_config(None, logging={"buffer_size": 10**5000})
    with pytest.raises(ConfigError, match="threshold"):
        DriftDetector({"threshold": float("inf")})
