"""Batch column tests: agreement with scipy, the effect floor at large n, multiple-testing control."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from cl_plugin.drift import adjust_p_values, choose_method, compare_columns
from cl_plugin.drift.stattests import psi_test
from cl_plugin.errors import DriftInputError

AGENTS = ["hrm", "trm", "mcts"]


def test_kolmogorov_smirnov_matches_scipy() -> None:
    rng = np.random.default_rng(0)
    ref, cur = rng.normal(size=800), rng.normal(0.3, 1, size=500)
    [col] = compare_columns({"a": ref}, {"a": cur}, method="kolmogorov_smirnov").columns
    expected = stats.ks_2samp(ref, cur)
    assert col.statistic == pytest.approx(expected.statistic) and col.p_value == pytest.approx(
        expected.pvalue
    )


def test_psi_is_zero_on_identical_data_and_grows_with_the_shift() -> None:
    rng = np.random.default_rng(1)
    ref = rng.normal(size=5000)
    assert psi_test(ref, ref)[0] == pytest.approx(0.0)
    small, large = psi_test(ref, ref + 0.2)[0], psi_test(ref, ref + 0.5)[0]
    assert 0 < small < large


def test_chi_square_flags_a_changed_agent_mix_and_reports_the_share_that_moved() -> None:
    rng = np.random.default_rng(2)
    ref = rng.choice(AGENTS, 2000, p=[0.5, 0.3, 0.2]).tolist()
    cur = rng.choice(AGENTS, 1000, p=[0.3, 0.3, 0.4]).tolist()
    [col] = compare_columns({"agent": ref}, {"agent": cur}, method="auto").columns
    counts_ref = [ref.count(a) / len(ref) for a in AGENTS]
    counts_cur = [cur.count(a) / len(cur) for a in AGENTS]
    assert col.method == "jensen_shannon"  # more than 1000 reference rows
    [chi] = compare_columns({"agent": ref}, {"agent": cur}, method="chi_square").columns
    assert chi.drifted and chi.statistic == pytest.approx(
        0.5 * np.abs(np.subtract(counts_ref, counts_cur)).sum()
    )


def test_the_effect_floor_keeps_a_negligible_shift_on_a_large_sample_from_drifting() -> None:
    rng = np.random.default_rng(3)
    ref, cur = rng.normal(size=100_000), rng.normal(0.03, 1, size=100_000)
    [col] = compare_columns({"a": ref}, {"a": cur}, method="kolmogorov_smirnov").columns
    assert col.adjusted_p_value < 1e-6 and not col.drifted


@pytest.mark.parametrize(
    ("values", "n", "method"),
    [
        (list(np.arange(100.0)), 500, "kolmogorov_smirnov"),
        (list(np.arange(100.0)), 5000, "wasserstein"),
        (["a", "b"] * 50, 500, "chi_square"),
        ([0, 1, 2] * 50, 5000, "jensen_shannon"),
    ],
)
def test_methods_are_chosen_by_column_type_and_size_like_evidently(values, n, method) -> None:
    assert choose_method(values, n) == method


def test_corrections_bound_the_chance_of_any_false_alarm_over_many_columns() -> None:
    p = [0.001, 0.01, 0.02, 0.5]
    assert adjust_p_values(p, "bonferroni").tolist() == pytest.approx([0.004, 0.04, 0.08, 1.0])
    assert adjust_p_values(p, "benjamini_hochberg").tolist() == pytest.approx(
        [0.004, 0.01 * 4 / 2, 0.02 * 4 / 3, 0.5]
    )
    rng = np.random.default_rng(4)
    false_alarms = 0
    for _ in range(200):
        ref = {f"c{j}": rng.normal(size=300) for j in range(20)}
        cur = {f"c{j}": rng.normal(size=300) for j in range(20)}
        result = compare_columns(ref, cur, method="kolmogorov_smirnov", threshold=1e-9, alpha=0.05)
        false_alarms += bool(result.drifted_features)
    assert false_alarms / 200 <= 0.05 + 3 * np.sqrt(0.05 * 0.95 / 200)


def test_a_dataset_drifts_when_half_its_columns_do() -> None:
    rng = np.random.default_rng(5)
    ref = {c: rng.normal(size=500) for c in "abcd"}
    cur = {c: rng.normal(1.0 if c in "ab" else 0.0, 1, size=500) for c in "abcd"}
    result = compare_columns(ref, cur)
    assert result.drifted_features == ["a", "b"] and result.drifted


def test_bad_input_names_the_column_and_the_fix() -> None:
    with pytest.raises(DriftInputError, match="'b' is in the reference but not in the current") as info:
        compare_columns({"a": [1.0] * 20, "b": [2.0] * 20}, {"a": [1.0] * 20})
    assert info.value.field == "b"
    with pytest.raises(DriftInputError, match="use method='chi_square'"):
        compare_columns({"a": ["x", "y"] * 10}, {"a": ["x"] * 10}, method="kolmogorov_smirnov")
    with pytest.raises(DriftInputError, match="use one of: auto, kolmogorov_smirnov") as info:
        compare_columns({"a": [1.0] * 20}, {"a": [1.0] * 20}, method="ks")
    assert info.value.field == "method"
