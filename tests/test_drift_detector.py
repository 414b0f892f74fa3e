"""The spec's DriftDetector: its snippet, configuration, alarms once per change, errors, persistence."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from cl_plugin.config import DriftDetectionConfig
from cl_plugin.drift import DriftDetector, DriftReport
from cl_plugin.errors import ConfigError, DriftInputError

FEATURES = 5


def _shifted_stream(seed: int, before: int, after: int, shift: float, feature: int = 2) -> np.ndarray:
    rng = np.random.default_rng(seed)
    stream = rng.normal(size=(before + after, FEATURES))
    stream[before:, feature] += shift
    return stream


def _reference(seed: int = 100, n: int = 5000) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, FEATURES))


def test_the_spec_snippet_runs_as_written(capsys: pytest.CaptureFixture[str]) -> None:
    from cl_plugin import DriftDetector  # the spec imports it from the package

    training_data = list(np.random.default_rng(0).normal(size=5000))
    production_stream = list(np.random.default_rng(1).normal(size=2000)) + list(
        np.random.default_rng(2).normal(1.0, 1, size=2000)
    )

    detector = DriftDetector(
        {"window_size": 1000, "threshold": 0.1, "detection_method": "kolmogorov_smirnov"}
    )

    # Set reference distribution
    detector.set_reference_distribution(training_data)

    # Monitor production data
    for sample in production_stream:
        drift_report = detector.add_sample(sample)
        if drift_report:
            print(f"Drift detected: {drift_report.severity}")

    assert capsys.readouterr().out == "Drift detected: high\n"


def test_dict_and_keyword_configuration_go_through_the_same_validated_model() -> None:
    from_dict = DriftDetector({"window_size": 500, "detection_method": "psi", "psi_bins": 20})
    from_kwargs = DriftDetector(window_size=500, detection_method="psi", psi_bins=20)
    assert (
        from_dict.config
        == from_kwargs.config
        == DriftDetectionConfig(window_size=500, detection_method="psi", psi_bins=20)
    )
    assert from_dict.detection_method == "psi"
    assert DriftDetector({"window_size": 500}, threshold=0.2).config.threshold == 0.2


def test_unknown_or_ill_typed_keys_name_the_key_and_what_is_allowed() -> None:
    with pytest.raises(ConfigError, match=r"unknown key 'drift_detection.windowsize'.*window_size") as info:
        DriftDetector({"windowsize": 1000})
    assert info.value.key == "drift_detection.windowsize"
    with pytest.raises(ConfigError, match=r"drift_detection.detection_method.*'kolmogorov_smirnov'.*'psi'"):
        DriftDetector(detection_method="ks")


@pytest.mark.parametrize(
    ("method", "within"),
    [
        ("kolmogorov_smirnov", 500),
        ("psi", 500),
        ("chi_square", 500),
        ("wasserstein", 500),
        ("jensen_shannon", 1000),
    ],
)
def test_a_half_sigma_shift_of_one_feature_in_five_is_found_quickly(method: str, within: int) -> None:
    detector = DriftDetector(detection_method=method)
    detector.set_reference_distribution(_reference())
    reports = []
    for i, row in enumerate(_shifted_stream(seed=7, before=3000, after=2000, shift=0.5)):
        report = detector.add_sample(row, timestamp=float(i))
        if report:
            reports.append((i, report))
    assert len(reports) == 1
    i, report = reports[0]
    assert 3000 < i < 3000 + within
    assert report.drifted_features == ["x2"] and report.method == method
    assert report.window_end == float(i) and report.window_start == float(i - report.window_size + 1)
    assert report.statistic >= report.threshold


def test_the_window_statistic_is_the_two_sample_ks_of_scipy() -> None:
    ref = _reference()
    detector = DriftDetector(window_size=1000, check_every=1000, min_samples=1000)
    detector.set_reference_distribution(ref)
    window = _shifted_stream(seed=8, before=600, after=400, shift=0.3)
    for row in window:
        detector.add_sample(row)
    summary = detector.get_drift_summary()
    for j, feature in enumerate(summary["features"]):
        expected = stats.ks_2samp(ref[:, j], window[:, j])
        assert feature["statistic"] == pytest.approx(expected.statistic)
        assert feature["p_value"] == pytest.approx(expected.pvalue, rel=0.1)


def test_false_alarms_stay_below_one_percent_of_checks_on_a_stationary_stream() -> None:
    checks = alarms = 0
    for seed in range(10):
        detector = DriftDetector()
        detector.set_reference_distribution(_reference(seed=1000 + seed))
        for row in np.random.default_rng(seed).normal(size=(10_000, FEATURES)):
            alarms += detector.add_sample(row) is not None
        checks += detector.get_drift_summary()["checks"]
    assert checks == 10 * (10_000 // 100 - 1)
    assert alarms / checks <= 0.01


def test_a_lasting_drift_alarms_once_and_a_further_drifting_feature_alarms_again() -> None:
    detector = DriftDetector()
    detector.set_reference_distribution(_reference())
    stream = _shifted_stream(seed=9, before=2000, after=6000, shift=0.8, feature=0)
    stream[5000:, 3] += 0.8
    alarms = [(i, r.drifted_features) for i, row in enumerate(stream) if (r := detector.add_sample(row))]
    assert [features for _, features in alarms] == [["x0"], ["x0", "x3"]]
    assert 2000 < alarms[0][0] < 2500 and 5000 < alarms[1][0] < 5500
    summary = detector.get_drift_summary()
    assert summary["in_drift"] and summary["drifted_features"] == ["x0", "x3"] and summary["alarms"] == 2


def test_after_recovery_the_same_change_alarms_again_but_not_within_the_cooldown() -> None:
    detector = DriftDetector(cooldown=3000)
    detector.set_reference_distribution(_reference())
    rng = np.random.default_rng(10)
    stream = rng.normal(size=(9000, FEATURES))
    stream[1000:2000, 1] += 1.0  # drift, recovery, then the same drift twice more
    stream[3000:3300, 1] += 1.0
    stream[6000:7000, 1] += 1.0
    alarm_at = [i for i, row in enumerate(stream) if detector.add_sample(row)]
    assert len(alarm_at) == 2
    assert 1000 < alarm_at[0] < 1500 and 6000 < alarm_at[1] < 6500


def test_dict_samples_with_a_categorical_agent_detect_a_changed_agent_mix() -> None:
    rng = np.random.default_rng(11)
    agents = ["hrm", "trm", "mcts"]
    reference = [
        {"agent": str(a), "latency_ms": float(x)}
        for a, x in zip(rng.choice(agents, 4000, p=[0.5, 0.3, 0.2]), rng.gamma(2, 100, 4000), strict=True)
    ]
    detector = DriftDetector(detection_method="auto")
    detector.set_reference_distribution(reference)
    mix = [[0.5, 0.3, 0.2]] * 2000 + [[0.3, 0.3, 0.4]] * 1000
    reports = [
        r
        for p in mix
        if (
            r := detector.add_sample({"agent": str(rng.choice(agents, p=p)), "latency_ms": rng.gamma(2, 100)})
        )
    ]
    assert [r.drifted_features for r in reports] == [["agent"]]
    assert reports[0].method == "chi_square"
    assert detector.add_sample({"agent": "new-agent", "latency_ms": 5.0, "extra": 1}) is None


@pytest.mark.parametrize(
    ("reference", "sample", "field", "fix"),
    [
        (list(range(100)), [1.0, 2.0], "sample", "one number"),
        (list(range(100)), float("nan"), "value", "impute"),
        (np.zeros((100, 3)), [1.0, 2.0], "sample", "a vector of 3 numbers"),
        ([{"a": 1.0, "b": 2.0}] * 20, {"a": 1.0}, "b", "every sample needs the reference's features"),
        ([{"a": 1.0}] * 20, {"a": "high"}, "sample", "a dict with the features a"),
    ],
)
def test_bad_samples_name_the_field_and_the_fix(reference, sample, field, fix) -> None:
    detector = DriftDetector()
    detector.set_reference_distribution(reference)
    with pytest.raises(DriftInputError, match=fix) as info:
        detector.add_sample(sample)
    assert info.value.field == field


def test_a_sample_before_any_reference_says_to_set_one() -> None:
    with pytest.raises(DriftInputError, match=r"call set_reference_distribution\(training_data\)"):
        DriftDetector().add_sample(1.0)


@pytest.mark.parametrize(
    ("data", "field"), [([1.0] * 5, "value"), ([1.0, float("inf")] * 10, "value"), ("text", "data")]
)
def test_bad_references_name_the_field(data, field) -> None:
    with pytest.raises(DriftInputError) as info:
        DriftDetector().set_reference_distribution(data)
    assert info.value.field == field


def test_a_disabled_detector_tests_nothing() -> None:
    detector = DriftDetector(enabled=False)
    detector.set_reference_distribution(_reference())
    assert all(detector.add_sample(row) is None for row in _shifted_stream(1, 0, 3000, 2.0))
    assert detector.get_drift_summary()["checks"] == 0


def test_alarms_are_stored_and_read_back_on_every_backend(store) -> None:
    detector = DriftDetector(store=store, name="router_features")
    detector.set_reference_distribution(_reference())
    reports: list[DriftReport] = [
        r
        for i, row in enumerate(_shifted_stream(seed=12, before=1500, after=1500, shift=1.0))
        if (r := detector.add_sample(row, timestamp=1_700_000_000.0 + i))
    ]
    [report] = reports
    [row] = store.drift_events("router_features")
    assert row["event_id"] == report.event_id and row["features"] == ["x2"]
    assert row["severity"] == report.severity and row["method"] == "kolmogorov_smirnov"
    assert row["statistic"] == pytest.approx(report.statistic) and row["p_value"] == pytest.approx(
        report.p_value
    )
    assert row["window_end"] == 1_700_000_000.0 + report.samples_seen - 1
    assert row["details"]["alpha"] == 0.01 and len(row["details"]["features"]) == FEATURES
    assert store.add_drift_event(report.to_row()) == report.event_id  # the same alarm again: a no-op
    assert len(store.drift_events()) == 1
    assert store.drift_events("other") == [] and store.drift_events(since=report.detected_at + 1) == []
