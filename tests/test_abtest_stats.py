"""A/B statistics: summaries, fixed-horizon tests against scipy, the sequential SRM test against direct
computations, sample size, and seeded simulations showing that the always-valid tests keep their
false-positive rates under continuous monitoring."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import stats as sps

from cl_plugin.abtest import ABTestFramework, GroupStats, required_sample_size, sample_ratio_mismatch
from cl_plugin.abtest.stats import (
    SRM_ALERT_P,
    fixed_test,
    mixture_sprt,
    srm_log_bayes_factor,
    statistical_power,
)
from cl_plugin.errors import ABTestError


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


def test_the_srm_chi_square_figure_matches_scipy_chisquare() -> None:
    for n_a, n_b, split in ((5000, 5200, 0.5), (9000, 1100, 0.1), (4000, 4400, 0.5)):
        ours = sample_ratio_mismatch(n_a, n_b, split)
        n = n_a + n_b
        ref = sps.chisquare([n_a, n_b], [n * (1 - split), n * split])
        assert ours.chi2 == pytest.approx(ref.statistic, rel=1e-12)
        assert ours.chi2_p_value == pytest.approx(ref.pvalue, rel=1e-9)


@pytest.mark.parametrize(
    ("n_a", "n_b", "split", "concentration"),
    [(0, 0, 0.5, 100.0), (3, 1, 0.5, 100.0), (7, 0, 0.5, 2.0), (40, 9, 0.1, 100.0), (12, 30, 0.3, 1.0)],
)
def test_the_srm_bayes_factor_is_the_beta_binomial_over_the_binomial(
    n_a: int, n_b: int, split: float, concentration: float
) -> None:
    n = n_a + n_b
    beta_binomial = sps.betabinom.pmf(n_b, n, concentration * split, concentration * (1 - split))
    expected = beta_binomial / sps.binom.pmf(n_b, n, split)
    assert math.exp(srm_log_bayes_factor(n_a, n_b, split, concentration)) == pytest.approx(expected, rel=1e-9)
    ours = sample_ratio_mismatch(n_a, n_b, split, concentration=concentration)
    assert ours.bayes_factor == pytest.approx(expected, rel=1e-9)
    assert ours.p_value == pytest.approx(min(1.0, 1.0 / expected), rel=1e-9)


def test_the_srm_bayes_factor_is_the_product_of_polya_urn_predictions_over_the_split() -> None:
    # Unit by unit, the mixture predicts B with (prior_b + B so far) / (prior + units so far); the Bayes
    # factor is the product of those predictions over the split's, whatever the order of the units.
    rng = np.random.default_rng(9)
    split, concentration = 0.2, 100.0
    in_b = rng.random(300) < 0.3
    bf, n_b = 1.0, 0
    for i, b in enumerate(in_b):
        p_b = (concentration * split + n_b) / (concentration + i)
        bf *= p_b / split if b else (1 - p_b) / (1 - split)
        n_b += int(b)
    assert srm_log_bayes_factor(len(in_b) - n_b, n_b, split, concentration) == pytest.approx(math.log(bf))


def test_srm_p_values_carried_from_look_to_look_never_rise() -> None:
    # B gets 60 of every 100 units for 20 looks, then 45 for 40 looks, which brings the counts back in
    # line, then 50: the p-value at each look falls and rises again, the carried one only falls.
    n_a = n_b = 0
    carried = 1.0
    at_looks, running_p = [], []
    for look in range(100):
        step_b = 60 if look < 20 else 45 if look < 60 else 50
        n_a, n_b = n_a + 100 - step_b, n_b + step_b
        at_look = sample_ratio_mismatch(n_a, n_b, 0.5)
        running = sample_ratio_mismatch(n_a, n_b, 0.5, max_bayes_factor=carried)
        carried = running.max_bayes_factor
        assert running.bayes_factor == at_look.bayes_factor
        assert running.p_value == pytest.approx(min(1.0, 1.0 / carried))
        at_looks.append(at_look.p_value)
        running_p.append(running.p_value)
    assert all(later <= earlier for earlier, later in itertools.pairwise(running_p))
    assert running_p[-1] < SRM_ALERT_P
    assert any(later > earlier for earlier, later in itertools.pairwise(at_looks))
    assert n_a == n_b
    assert at_looks[-1] == 1.0


def _srm_looks(rng: np.random.Generator, split: float, true_share: float, looks: int) -> tuple[int, int]:
    """One test's counts read every 100 units: the first look at which the chi-square rule (p < 0.001)
    and the sequential rule alert, 0 when they never do."""
    n_a = n_b = 0
    chi_first = seq_first = 0
    carried = 1.0
    for look in range(1, looks + 1):
        step_b = int(rng.binomial(100, true_share))
        n_a, n_b = n_a + 100 - step_b, n_b + step_b
        srm = sample_ratio_mismatch(n_a, n_b, split, max_bayes_factor=carried)
        carried = srm.max_bayes_factor
        chi_first = chi_first or (look if srm.chi2_p_value < SRM_ALERT_P else 0)
        seq_first = seq_first or (look if srm.alert else 0)
    return chi_first, seq_first


@pytest.mark.parametrize("split", [0.5, 0.1])
def test_aa_tests_read_every_100_units_do_not_raise_a_sequential_srm_alert(split: float) -> None:
    rng = np.random.default_rng(31 + int(split * 10))
    runs = [_srm_looks(rng, split, split, looks=100) for _ in range(300)]
    sequential = sum(seq > 0 for _, seq in runs)
    chi_square = sum(chi > 0 for chi, _ in runs)
    # Ville's inequality bounds the sequential rule at 0.1% over every look (0.3 expected at most here);
    # the chi-square rule re-run at 100 looks is not bounded by its level.
    assert sequential <= 1
    assert chi_square > sequential


def test_a_seeded_mismatch_is_found_by_the_sequential_srm_test() -> None:
    rng = np.random.default_rng(5)
    # 10% of B's units lost at a 50/50 split: B's share of what arrives is 0.45 / 0.95 = 0.474.
    runs = [_srm_looks(rng, 0.5, 0.45 / 0.95, looks=200) for _ in range(40)]
    first_alerts = sorted(seq for _, seq in runs)
    assert all(first_alerts), "every test should alert within 20,000 units"
    assert first_alerts[len(first_alerts) // 2] <= 100  # median delay at most 10,000 units


def test_bad_srm_input_names_the_field() -> None:
    cases = [
        ({"n_a": -1}, "n_a"),
        ({"n_b": 2.5}, "n_b"),
        ({"n_b": True}, "n_b"),
        ({"b_share": 1.0}, "b_share"),
        ({"b_share": math.nan}, "b_share"),
        ({"concentration": 0.0}, "concentration"),
        ({"concentration": math.inf}, "concentration"),
        ({"max_bayes_factor": 0.5}, "max_bayes_factor"),
    ]
    for override, field in cases:
        args = {"n_a": 10, "n_b": 10, "b_share": 0.5} | override
        with pytest.raises(ABTestError, match=field) as err:
            sample_ratio_mismatch(**args)
        assert err.value.field == field


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
