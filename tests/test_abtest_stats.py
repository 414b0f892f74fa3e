"""A/B statistics: summaries, fixed-horizon tests against scipy, SRM, sample size, and seeded simulations
showing that the always-valid test keeps its false-positive rate under continuous monitoring."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from cl_plugin.abtest import ABTestFramework, GroupStats, required_sample_size, sample_ratio_mismatch
from cl_plugin.abtest.stats import fixed_test, mixture_sprt, statistical_power


def _summary(values: np.ndarray) -> GroupStats:
    s = GroupStats()
    for x in values:
        s.add(float(x))
    return s


def test_merged_summaries_equal_the_summary_of_all_values() -> None:
    rng = np.random.default_rng(3)
    values = rng.normal(1e6, 2.0, 3000)  # a large mean, where a raw sum of squares would cancel
    merged = GroupStats()
    for chunk in np.array_split(values, 7):
        merged.merge(_summary(chunk))
    assert merged.n == len(values)
    assert merged.mean == pytest.approx(values.mean(), rel=1e-12)
    assert merged.variance("continuous") == pytest.approx(values.var(ddof=1), rel=1e-9)
    assert merged.non_binary == len(values)


def test_welch_matches_scipy() -> None:
    rng = np.random.default_rng(5)
    a, b = rng.normal(0, 1, 400), rng.normal(0.2, 2, 150)
    ours = fixed_test(_summary(a), _summary(b), "continuous", 0.05)
    ref = sps.ttest_ind(b, a, equal_var=False)
    assert ours.statistic == pytest.approx(ref.statistic, rel=1e-9)
    assert ours.p_value == pytest.approx(ref.pvalue, rel=1e-7)
    ci = ref.confidence_interval(0.95)
    assert (ours.ci_low, ours.ci_high) == pytest.approx((ci.low, ci.high), rel=1e-7)


def test_two_proportions_match_the_pooled_z_test() -> None:
    a = np.array([1.0] * 120 + [0.0] * 280)
    b = np.array([1.0] * 150 + [0.0] * 250)
    ours = fixed_test(_summary(a), _summary(b), "binary", 0.05)
    pooled = (120 + 150) / 800
    z = (150 / 400 - 120 / 400) / math.sqrt(pooled * (1 - pooled) * (2 / 400))
    assert ours.statistic == pytest.approx(z)
    assert ours.p_value == pytest.approx(2 * sps.norm.sf(abs(z)))


def test_sample_ratio_mismatch_matches_scipy_chisquare_and_alerts_below_0_001() -> None:
    for n_a, n_b, split in ((5000, 5200, 0.5), (9000, 1100, 0.1), (4000, 4400, 0.5)):
        ours = sample_ratio_mismatch(n_a, n_b, split)
        n = n_a + n_b
        ref = sps.chisquare([n_a, n_b], [n * (1 - split), n * split])
        assert ours.p_value == pytest.approx(ref.pvalue, rel=1e-9)
        assert ours.alert == (ref.pvalue < 0.001)
    assert sample_ratio_mismatch(4000, 4400, 0.5).alert
    assert not sample_ratio_mismatch(5000, 5050, 0.5).alert


def test_fixed_sample_size_is_the_textbook_formula_and_sequential_needs_more() -> None:
    alpha, power, effect, sd, split = 0.05, 0.8, 0.1, 1.0, 0.2
    z = sps.norm.ppf(1 - alpha / 2) + sps.norm.ppf(power)
    textbook = z**2 * (sd**2 / (1 - split) + sd**2 / split) / effect**2
    fixed = required_sample_size(effect, sd, b_share=split, alpha=alpha, power=power, sequential=False)
    assert math.ceil(textbook) - 1 <= fixed <= math.ceil(textbook) + 1
    sequential = required_sample_size(effect, sd, b_share=split, alpha=alpha, power=power)
    assert sequential > fixed
    assert statistical_power(effect, sequential, sd, b_share=split, alpha=alpha) >= power


def test_the_confidence_sequence_holds_the_estimate_and_shrinks_with_data() -> None:
    wide = mixture_sprt(0.1, 0.01, 200, 0.05)
    narrow = mixture_sprt(0.1, 0.0001, 20000, 0.05)
    assert wide.ci_low < 0.1 < wide.ci_high
    assert narrow.ci_high - narrow.ci_low < wide.ci_high - wide.ci_low
    assert narrow.significant and not wide.significant
    assert narrow.p_value <= 0.05 < wide.p_value


def _peeking_trial(
    rng: np.random.Generator, horizon: int, effect: float, binary: bool, split: float
) -> tuple[set[str], bool]:
    """One experiment through the framework, read after every 100 results: the recommendations seen, and
    whether a fixed-horizon test read the same way ever reached p < 0.05."""
    fw = ABTestFramework(traffic_split=split, min_samples=100, minimum_detectable_effect=None)
    tid = fw.create_test("aa", model_a="production", model_b="production")
    in_b = rng.random(horizon) < split
    if binary:
        metric = (rng.random(horizon) < 0.3 + effect * in_b).astype(float)
    else:
        metric = rng.normal(0.0, 1.0, horizon) + effect * in_b
    seen: set[str] = set()
    fixed = False
    for i, (b, x) in enumerate(zip(in_b, metric, strict=True), start=1):
        fw.record_result(tid, "B" if b else "A", metric=float(x))
        if i % 100 == 0:
            status = fw.get_test_status(tid)
            seen.add(status["recommendation"])
            if status["fixed_horizon"] is not None:
                fixed |= status["fixed_horizon"]["p_value"] < 0.05
    return seen, fixed


@pytest.mark.parametrize(("binary", "split"), [(False, 0.5), (True, 0.2)])
def test_aa_tests_read_after_every_100_results_rarely_declare_a_winner(binary: bool, split: float) -> None:
    rng = np.random.default_rng(2024 + binary)
    runs = [_peeking_trial(rng, 2000, 0.0, binary, split) for _ in range(80)]
    sequential = sum(bool(seen & {"Deploy B", "Keep A"}) for seen, _ in runs) / len(runs)
    peeking_fixed = sum(f for _, f in runs) / len(runs)
    # 5% nominal; 80 runs put 4 sd of binomial noise at about 0.1.
    assert sequential <= 0.1
    # Reading a fixed-horizon test the same way is what the sequential test protects against.
    assert peeking_fixed > sequential
    assert peeking_fixed >= 0.1


def test_a_true_effect_of_the_planned_size_is_found_with_the_planned_power() -> None:
    rng = np.random.default_rng(11)
    effect = 0.2
    n = required_sample_size(effect, 1.0, b_share=0.5, alpha=0.05, power=0.8)
    runs = [_peeking_trial(rng, n, effect, False, 0.5)[0] for _ in range(60)]
    assert not any("Keep A" in seen for seen in runs)
    # The sample size is a lower bound on power (it counts only the last look); 0.8 minus noise.
    assert sum("Deploy B" in seen for seen in runs) / len(runs) >= 0.7
