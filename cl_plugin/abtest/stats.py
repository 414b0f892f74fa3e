"""A/B statistics on sufficient statistics: fixed-horizon tests, always-valid sequential tests, SRM, power.

Every function here works on per-group summaries (:class:`GroupStats`: count, mean and the sum of squared
deviations from the mean), so an analysis costs the same after ten results as after ten million, and
replicas can merge their summaries exactly.

* Fixed-horizon: Welch's t-test for continuous metrics, the two-proportion z-test for 0/1 metrics. Valid
  only when looked at once, at a sample size fixed in advance; reported for reference.
* Sequential: the mixture sequential probability ratio test (mSPRT) with a normal mixing distribution,
  as in Johari, Pekelis and Walsh, "Always valid inference" (Optimizely's stats engine) and GrowthBook's
  sequential mode. Its likelihood ratio is a nonnegative martingale under no difference, so by Ville's
  inequality the chance that it *ever* crosses ``1 / alpha`` is at most ``alpha``: the result may be read
  after every request without inflating the false-positive rate. The mixing variance is tuned so the
  confidence sequence is tightest at ``tuning`` results (GrowthBook's tuning parameter, default 5000).
  Variances are plug-in estimates, so the guarantee is asymptotic; the seeded A/A simulations in the
  tests and in ``tests/bench/bench_abtest.py`` check it at the sample sizes used.
* Sample ratio mismatch: chi-square test of the group counts against the configured split.
* Power and required sample size for a planned effect, for either kind of test.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import Literal

from scipy.special import stdtr, stdtrit

__all__ = [
    "SRM_ALERT_P",
    "FixedTest",
    "GroupStats",
    "SampleRatio",
    "SequentialTest",
    "fixed_test",
    "mixture_sprt",
    "required_sample_size",
    "sample_ratio_mismatch",
    "statistical_power",
]

MetricKind = Literal["continuous", "binary"]

#: Below this p-value the group counts do not match the split (Statsig's and GrowthBook's red alert).
SRM_ALERT_P = 0.001

_NORMAL = NormalDist()


@dataclass(slots=True)
class GroupStats:
    """Count, mean and sum of squared deviations of one group's metric values (Welford's summary).

    Attributes:
        n: how many results.
        mean: their mean.
        m2: the sum of squared deviations from the mean (the variance is ``m2 / (n - 1)``).
        non_binary: how many results were neither 0 nor 1 (0 means the metric looks binary).
    """

    n: int = 0
    mean: float = 0.0
    m2: float = 0.0
    non_binary: int = 0

    def add(self, x: float) -> None:
        """Add one value (Welford's update)."""
        self.n += 1
        delta = x - self.mean
        self.mean += delta / self.n
        self.m2 += delta * (x - self.mean)
        if x != 0.0 and x != 1.0:
            self.non_binary += 1

    def merge(self, other: GroupStats) -> None:
        """Add every value another summary holds (Chan's parallel update; exact, order-free)."""
        if other.n == 0:
            return
        n = self.n + other.n
        delta = other.mean - self.mean
        self.m2 += other.m2 + delta * delta * self.n * other.n / n
        self.mean += delta * other.n / n
        self.n = n
        self.non_binary += other.non_binary

    def variance(self, kind: MetricKind) -> float:
        """The per-result variance: ``p(1 - p)`` for a binary metric, the sample variance otherwise."""
        if kind == "binary":
            return self.mean * (1.0 - self.mean)
        return self.m2 / (self.n - 1) if self.n > 1 else 0.0


@dataclass(frozen=True)
class FixedTest:
    """A fixed-horizon test of ``mean(B) - mean(A)``: valid once, at a sample size planned in advance.

    Attributes:
        effect: ``mean(B) - mean(A)``.
        std_error: its standard error.
        statistic: Welch's t or the two-proportion z.
        df: Welch-Satterthwaite degrees of freedom (infinite for the z-test).
        p_value: two-sided p-value.
        ci_low: lower end of the confidence interval of the effect.
        ci_high: upper end.
    """

    effect: float
    std_error: float
    statistic: float
    df: float
    p_value: float
    ci_low: float
    ci_high: float


@dataclass(frozen=True)
class SequentialTest:
    """The mixture SPRT of ``mean(B) - mean(A) == 0``, valid whenever it is read.

    Attributes:
        likelihood_ratio: the mixture likelihood ratio (evidence against no difference).
        p_value: ``min(1, 1 / likelihood_ratio)``, an always-valid p-value at this moment.
        ci_low: lower end of the confidence sequence of the effect.
        ci_high: upper end.
        significant: whether the likelihood ratio reached ``1 / alpha`` (the sequence excludes 0).
    """

    likelihood_ratio: float
    p_value: float
    ci_low: float
    ci_high: float
    significant: bool


@dataclass(frozen=True)
class SampleRatio:
    """Chi-square check that the group counts match the configured split.

    Attributes:
        expected_b_share: the configured share of group B.
        observed_b_share: the observed share.
        chi2: the chi-square statistic (one degree of freedom).
        p_value: its p-value.
        alert: ``p_value < 0.001``: the assignment or the logging is broken, and the results are not
            trustworthy until the cause is found.
    """

    expected_b_share: float
    observed_b_share: float
    chi2: float
    p_value: float
    alert: bool


def fixed_test(a: GroupStats, b: GroupStats, kind: MetricKind, alpha: float) -> FixedTest:
    """Welch's t-test (continuous) or the two-proportion z-test (binary) of ``mean(B) - mean(A)``.

    The z-test uses the pooled proportion for its p-value and unpooled variances for its interval.

    Args:
        a: group A's summary (at least 2 results).
        b: group B's summary (at least 2 results).
        kind: ``"continuous"`` or ``"binary"``.
        alpha: one minus the confidence level.

    Returns:
        The test; a zero standard error gives p-value 1 for equal means and 0 otherwise.
    """
    effect = b.mean - a.mean
    va, vb = a.variance(kind) / a.n, b.variance(kind) / b.n
    se = math.sqrt(va + vb)
    if kind == "binary":
        pooled = (a.mean * a.n + b.mean * b.n) / (a.n + b.n)
        se_test = math.sqrt(pooled * (1.0 - pooled) * (1.0 / a.n + 1.0 / b.n))
        statistic = _ratio(effect, se_test)
        df = math.inf
        p = math.erfc(abs(statistic) / math.sqrt(2.0))
        crit = _NORMAL.inv_cdf(1.0 - alpha / 2.0)
    else:
        statistic = _ratio(effect, se)
        df = (va + vb) ** 2 / (va * va / (a.n - 1) + vb * vb / (b.n - 1)) if se > 0 else math.inf
        p = float(2.0 * stdtr(df, -abs(statistic)))
        crit = float(stdtrit(df, 1.0 - alpha / 2.0))
    return FixedTest(effect, se, statistic, df, p, effect - crit * se, effect + crit * se)


def _ratio(effect: float, se: float) -> float:
    if se > 0:
        return effect / se
    return 0.0 if effect == 0 else math.copysign(math.inf, effect)


def _mixing_ratio(n_total: float, alpha: float, tuning: int) -> float:
    """``tau^2 / V``: the mixing variance over the effect estimate's variance, after ``n_total`` results.

    The mixing variance is ``rho^2`` times the per-result variance, with ``rho`` chosen so that the
    confidence sequence is narrowest at ``tuning`` results (Howard et al. 2021; GrowthBook's ``rho``).
    """
    log_inv = -2.0 * math.log(alpha)
    rho2 = (log_inv + math.log(log_inv + 1.0)) / tuning
    return rho2 * n_total


def _sequential_critical(r: float, alpha: float) -> float:
    """The z-value the effect estimate must exceed for the mixture likelihood ratio to reach 1/alpha."""
    return math.sqrt((1.0 + r) / r * (2.0 * math.log(1.0 / alpha) + math.log1p(r)))


def mixture_sprt(
    effect: float, variance: float, n_total: int, alpha: float, tuning: int = 5000
) -> SequentialTest:
    """The two-sided normal-mixture SPRT of an effect estimate, and its confidence sequence.

    With ``z = effect / sqrt(variance)`` and ``r = tau^2 / variance``, the likelihood ratio against no
    effect under a ``N(0, tau^2)`` mixture is ``exp(z^2 r / (2 (1 + r))) / sqrt(1 + r)``.

    Args:
        effect: the estimate, ``mean(B) - mean(A)``.
        variance: its variance (``var_A / n_A + var_B / n_B``).
        n_total: results in both groups together.
        alpha: one minus the confidence level.
        tuning: the total sample size at which the confidence sequence is narrowest.

    Returns:
        The test.
    """
    if n_total < 1:
        return SequentialTest(1.0, 1.0, -math.inf, math.inf, False)
    if variance <= 0:
        # No spread at all: equal means carry no evidence, different ones carry all of it.
        ratio = 1.0 if effect == 0 else math.inf
        return SequentialTest(ratio, 1.0 / ratio, effect, effect, effect != 0)
    r = _mixing_ratio(n_total, alpha, tuning)
    z2 = effect * effect / variance
    log_ratio = z2 * r / (2.0 * (1.0 + r)) - 0.5 * math.log1p(r)
    ratio = math.exp(min(log_ratio, 700.0))
    half = _sequential_critical(r, alpha) * math.sqrt(variance)
    return SequentialTest(
        likelihood_ratio=ratio,
        p_value=min(1.0, math.exp(-log_ratio)),
        ci_low=effect - half,
        ci_high=effect + half,
        significant=log_ratio >= math.log(1.0 / alpha),
    )


def sample_ratio_mismatch(n_a: int, n_b: int, b_share: float) -> SampleRatio:
    """Chi-square test (one degree of freedom) of the group counts against the configured split.

    Args:
        n_a: results in group A.
        n_b: results in group B.
        b_share: the configured share of group B (``traffic_split``).

    Returns:
        The check; with no results at all, p-value 1 and no alert.
    """
    n = n_a + n_b
    if n == 0:
        return SampleRatio(b_share, math.nan, 0.0, 1.0, False)
    exp_a, exp_b = n * (1.0 - b_share), n * b_share
    chi2 = (n_a - exp_a) ** 2 / exp_a + (n_b - exp_b) ** 2 / exp_b
    p = math.erfc(math.sqrt(chi2 / 2.0))
    return SampleRatio(b_share, n_b / n, chi2, p, p < SRM_ALERT_P)


def statistical_power(
    effect: float,
    n_total: int,
    sd_a: float,
    sd_b: float | None = None,
    *,
    b_share: float = 0.5,
    alpha: float = 0.05,
    sequential: bool = True,
    tuning: int = 5000,
) -> float:
    """The chance that a test of ``n_total`` results declares a true effect of ``effect`` significant.

    For the sequential test this is the chance of crossing at the last look alone, a lower bound, since
    earlier looks can only add crossings. Both use the normal approximation.

    Args:
        effect: the true ``mean(B) - mean(A)`` (nonzero).
        n_total: results in both groups together.
        sd_a: the per-result standard deviation in group A (``sqrt(p (1 - p))`` for a binary metric).
        sd_b: the same in group B; None means equal to ``sd_a``.
        b_share: the share of results that go to group B.
        alpha: one minus the confidence level.
        sequential: power of the always-valid test (True) or of the fixed-horizon test.
        tuning: the sequential test's tuning sample size.

    Returns:
        The power, in [0, 1].
    """
    sd_b = sd_a if sd_b is None else sd_b
    if n_total < 2:
        return 0.0
    se = math.sqrt(sd_a**2 / ((1.0 - b_share) * n_total) + sd_b**2 / (b_share * n_total))
    if se == 0:
        return 1.0
    if sequential:
        crit = _sequential_critical(_mixing_ratio(n_total, alpha, tuning), alpha)
    else:
        crit = _NORMAL.inv_cdf(1.0 - alpha / 2.0)
    shift = abs(effect) / se
    return _NORMAL.cdf(shift - crit) + _NORMAL.cdf(-shift - crit)


def required_sample_size(
    effect: float,
    sd_a: float,
    sd_b: float | None = None,
    *,
    b_share: float = 0.5,
    alpha: float = 0.05,
    power: float = 0.8,
    sequential: bool = True,
    tuning: int = 5000,
) -> int:
    """The total number of results (both groups) a test needs to detect ``effect`` with ``power``.

    Args:
        effect: the planned ``mean(B) - mean(A)`` (nonzero).
        sd_a: the per-result standard deviation in group A (``sqrt(p (1 - p))`` for a binary metric).
        sd_b: the same in group B; None means equal to ``sd_a``.
        b_share: the share of results that go to group B.
        alpha: one minus the confidence level.
        power: the wanted chance of detecting the effect.
        sequential: size the always-valid test (True) or the fixed-horizon test.
        tuning: the sequential test's tuning sample size.

    Returns:
        The smallest total at which :func:`statistical_power` reaches ``power``.

    Raises:
        ValueError: the effect is zero or not finite, or a standard deviation is negative.
    """
    if not math.isfinite(effect) or effect == 0:
        raise ValueError(f"effect must be a nonzero finite number (got {effect!r})")
    if sd_a < 0 or (sd_b is not None and sd_b < 0):
        raise ValueError(f"standard deviations must be >= 0 (got {sd_a!r}, {sd_b!r})")
    kwargs = {"b_share": b_share, "alpha": alpha, "sequential": sequential, "tuning": tuning}

    def enough(n: int) -> bool:
        return statistical_power(effect, n, sd_a, sd_b, **kwargs) >= power

    high = 2
    while not enough(high):
        high *= 2
    low = high // 2
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (low, mid) if enough(mid) else (mid, high)
    return high
