"""The spec's DriftDetector: its snippet, configuration, alarms once per change, errors, persistence."""

from __future__ import annotations

import doctest

import numpy as np
import pytest
from scipy import stats
from scipy.spatial.distance import jensenshannon

from cl_plugin.config import DriftDetectionConfig
from cl_plugin.drift import DriftDetector, DriftReport
from cl_plugin.drift import detector as detector_module
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

    assert capsys.readouterr().out == "Drift detected: medium\n"


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
        ("jensen_shannon", 500),
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


@pytest.mark.parametrize(
    ("method", "expected"),
    [
        ("wasserstein", lambda ref, cur: stats.wasserstein_distance(ref, cur) / np.std(ref)),
        ("jensen_shannon", None),
    ],
)
def test_wasserstein_and_jensen_shannon_statistics_match_scipy_and_have_p_values(method, expected) -> None:
    ref = _reference()
    detector = DriftDetector(detection_method=method, check_every=1000, min_samples=1000)
    detector.set_reference_distribution(ref)
    window = _shifted_stream(seed=8, before=600, after=400, shift=0.3)
    for row in window:
        detector.add_sample(row)
    for j, feature in enumerate(detector.get_drift_summary()["features"]):
        if expected is None:  # Jensen-Shannon distance of the reference-decile counts
            edges = np.unique(np.quantile(ref[:, j], np.linspace(0, 1, 11)[1:-1]))
            counts = [np.bincount(np.searchsorted(edges, x), minlength=10) for x in (ref[:, j], window[:, j])]
            want = jensenshannon(*counts, base=2)
            g_test = stats.chi2_contingency(np.vstack(counts), correction=False, lambda_="log-likelihood")
            assert feature["p_value"] == pytest.approx(g_test.pvalue)
        else:
            want = expected(ref[:, j], window[:, j])
            assert feature["p_value"] == pytest.approx(
                stats.ks_2samp(ref[:, j], window[:, j]).pvalue, rel=0.1
            )
        assert feature["statistic"] == pytest.approx(want)


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


@pytest.mark.parametrize(
    "method", ["kolmogorov_smirnov", "psi", "chi_square", "wasserstein", "jensen_shannon"]
)
def test_false_alarms_stay_below_one_percent_of_checks_on_a_stationary_stream(method: str) -> None:
    checks = alarms = 0
    for seed in range(10):
        detector = DriftDetector(detection_method=method)
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
    # One feature: a false alarm on another feature would start a cooldown of its own.
    detector = DriftDetector(cooldown=3000)
    detector.set_reference_distribution(list(_reference()[:, 1]))
    rng = np.random.default_rng(10)
    stream = rng.normal(size=(9000, FEATURES))[:, 1]
    stream[1000:2000] += 1.0  # drift, recovery, then the same drift twice more
    stream[3000:3300] += 1.0
    stream[6000:7000] += 1.0
    alarm_at = [i for i, x in enumerate(stream) if detector.add_sample(float(x))]
    # The blip inside the cooldown kept the first drift going: it ends after a window of clean checks.
    assert alarm_at == [1099, 6099]


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
    [row] = store.drift.events("router_features")
    assert row["event_id"] == report.event_id and row["features"] == ["x2"]
    assert row["severity"] == report.severity and row["method"] == "kolmogorov_smirnov"
    assert row["statistic"] == pytest.approx(report.statistic) and row["p_value"] == pytest.approx(
        report.p_value
    )
    assert row["window_end"] == 1_700_000_000.0 + report.samples_seen - 1
    assert row["details"]["alpha"] == 0.001 and len(row["details"]["features"]) == FEATURES
    assert store.drift.add_event(report.to_row()) == report.event_id  # the same alarm again: a no-op
    assert len(store.drift.events()) == 1
    assert store.drift.events("other") == [] and store.drift.events(since=report.detected_at + 1) == []


def test_the_docstring_example_prints_its_alarm() -> None:
    assert doctest.testmod(detector_module).failed == 0


STREAMING_ALARMS = [
    # (method, alarm index, statistic, alarm level) on the half-sigma shift of x2 at 3000
    ("adwin", 3095, 0.6086, 0.6022),
    ("page_hinkley", 3101, 50.0175, 50.0),
]


@pytest.mark.parametrize(("method", "at", "statistic", "level"), STREAMING_ALARMS)
def test_a_streaming_method_runs_one_detector_per_feature_on_every_sample(
    method, at, statistic, level, store
):
    detector = DriftDetector(detection_method=method, store=store, name="stream")
    detector.set_reference_distribution(_reference())
    stream = _shifted_stream(seed=7, before=3000, after=2000, shift=0.5)
    reports = [(i, r) for i, row in enumerate(stream) if (r := detector.add_sample(row, timestamp=float(i)))]
    [(i, report)] = reports
    assert i == at and report.drifted_features == ["x2"] and report.method == method
    assert report.statistic == pytest.approx(statistic, abs=1e-4) and report.threshold == pytest.approx(
        level, abs=1e-4
    )
    assert report.p_value is None and report.alpha is None and report.severity == "low"
    assert (
        report.window_size == 1000 and report.window_end == float(i) and report.window_start == float(i - 999)
    )
    summary = detector.get_drift_summary()
    assert summary["checks"] == summary["samples_seen"] == 5000 and summary["alarms"] == 1
    assert [f["feature"] for f in summary["features"]] == ["x0", "x1", "x2", "x3", "x4"]
    [row] = store.drift.events("stream")
    assert row["event_id"] == report.event_id and row["method"] == method and row["features"] == ["x2"]


def test_kswin_alarms_carry_its_p_value_and_refire_only_after_the_cooldown() -> None:
    detector = DriftDetector(detection_method="kswin")
    detector.set_reference_distribution(_reference())
    stream = _shifted_stream(seed=7, before=3000, after=2000, shift=0.5)
    reports = [(i, r) for i, row in enumerate(stream) if (r := detector.add_sample(row))]
    # Thirty values against thirty, every sample of five features: false alarms, and a 0.5-sigma shift
    # that falls inside the cooldown of the last one is not news.
    assert [(i, r.drifted_features) for i, r in reports] == [(1593, ["x0"]), (2599, ["x2"])]
    assert all(
        r.p_value is not None and r.p_value <= 0.0001 and r.statistic > r.threshold for _, r in reports
    )


@pytest.mark.parametrize(
    ("method", "expected"),
    [
        ("ddm", [(2513, ["error"])]),
        # EDDM reacts to errors coming closer together, so a rare-error stream alarms by chance too.
        (
            "eddm",
            [
                (10, ["error"]),
                (750, ["timeout"]),
                (1285, ["error"]),
                (2038, ["timeout"]),
                (2310, ["error"]),
                (3292, ["timeout"]),
            ],
        ),
    ],
)
def test_ddm_and_eddm_watch_0_1_error_features(method: str, expected: list) -> None:
    rng = np.random.default_rng(4)
    reference = [
        {"error": int(e), "timeout": bool(t)}
        for e, t in zip(rng.random(3000) < 0.1, rng.random(3000) < 0.05, strict=True)
    ]
    detector = DriftDetector(detection_method=method)
    detector.set_reference_distribution(reference)
    rates = [0.1] * 2000 + [0.3] * 2000
    alarms = [
        (i, r.drifted_features)
        for i, p in enumerate(rates)
        if (r := detector.add_sample({"error": int(rng.random() < p), "timeout": bool(rng.random() < 0.05)}))
    ]
    assert alarms == expected  # the error rate triples at 2000
    with pytest.raises(DriftInputError, match="must be 0 or 1") as info:
        detector.add_sample({"error": 0.5, "timeout": False})
    assert info.value.field == "error"


@pytest.mark.parametrize("method", ["ddm", "eddm"])
def test_ddm_and_eddm_refuse_features_that_are_not_0_1_naming_the_valid_methods(method: str) -> None:
    detector = DriftDetector(detection_method=method)
    with pytest.raises(DriftInputError, match=r"feature 'x0' is not 0/1.*kolmogorov_smirnov.*adwin") as info:
        detector.set_reference_distribution(_reference())
    assert info.value.field == "detection_method"


@pytest.mark.parametrize(
    ("config", "key"),
    [
        (
            {"detection_method": "adwin", "detector_params": {"delta_": 0.1}},
            "drift_detection.detector_params.delta_",
        ),
        (
            {"detection_method": "adwin", "detector_params": {"delta": 5}},
            "drift_detection.detector_params.delta",
        ),
        ({"detection_method": "psi", "detector_params": {"delta": 0.1}}, "drift_detection.detector_params"),
    ],
)
def test_detector_params_are_checked_against_the_streaming_detector(config, key) -> None:
    with pytest.raises(ConfigError) as info:
        DriftDetector(config)
    assert info.value.key == key
