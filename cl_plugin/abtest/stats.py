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
* Sample ratio mismatch (SRM): the Dirichlet-multinomial mixture test of Lindon and Malek, "Anytime-valid
  inference for multinomial count data" (NeurIPS 2022), here with two groups (a beta-binomial mixture).
  Its Bayes factor against the configured split is a nonnegative martingale under the split, so by
  Ville's inequality an A/A test alerts at *any* look with probability at most ``SRM_ALERT_P``; it is
  computed from the two counts alone. The chi-square test of the counts is kept beside it as the
  fixed-horizon figure: re-run at every look, it alerts far more often than its level says.
* Power and required sample size for a planned effect, for either kind of test.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Integral, Real
from statistics import NormalDist
from typing import Literal

from scipy.special import betaln, stdtr, stdtrit

from cl_plugin.errors import ABTestError

__all__ = [
    "SRM_ALERT_P",
    "SRM_PRIOR_CONCENTRATION",
    "FixedTest",
    "GroupStats",
    "SampleRatio",
    "SequentialTest",
    "fixed_test",
    "mixture_sprt",
    "required_sample_size",
    "sample_ratio_mismatch",
    "srm_log_bayes_factor",
    "statistical_power",
]

MetricKind = Literal["continuous", "binary"]

#: The SRM alert level (Statsig's and GrowthBook's red alert): the sequential test alerts when its Bayes
#: factor reaches ``1 / SRM_ALERT_P``, that is when its always-valid p-value is at most this.
SRM_ALERT_P = 0.001

#: The SRM test's default prior weight, in units. Ten times more finds mismatches of a point or two 5-15%
#: sooner but a large one (B's share 0.4 where 0.5 was planned) half as fast (tests/bench/bench_abtest.py).
SRM_PRIOR_CONCENTRATION = 100.0

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

    def minus(self, part: GroupStats) -> GroupStats:
        """The summary of the values this one holds beyond ``part``, a summary of some of them (the inverse
        of :meth:`merge`): ``part.merge(whole.minus(part))`` gives ``whole`` back, to rounding.

        Raises:
            ValueError: ``part`` holds more values than this summary.
        """
        if part.n > self.n:
            raise ValueError(f"part holds {part.n} values, more than the {self.n} of the whole")
        n = self.n - part.n
        if n == 0:
            return GroupStats()
        mean = (self.n * self.mean - part.n * part.mean) / n
        delta = mean - part.mean
        m2 = self.m2 - part.m2 - delta * delta * part.n * n / self.n
        return GroupStats(n, mean, max(m2, 0.0), max(self.non_binary - part.non_binary, 0))

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
    """Whether the group counts match the configured split: the sequential test, and the chi-square figure.

    Attributes:
        expected_b_share: the configured share of group B.
        observed_b_share: the observed share (NaN with no results).
        bayes_factor: the mixture Bayes factor of the counts now against the configured split.
        max_bayes_factor: the largest Bayes factor seen so far: this one, or a larger one passed in from
            earlier looks.
        p_value: the always-valid p-value, ``min(1, 1 / max_bayes_factor)``. Without earlier looks passed
            in it is the always-valid p-value at this look; carried from look to look it never rises.
        alert: ``max_bayes_factor >= 1 / SRM_ALERT_P``: the assignment or the result logging is broken, and
            the comparison is not trustworthy until the cause is found. Under the configured split the
            chance that this is ever true, however often it is read, is at most ``SRM_ALERT_P``.
        chi2: the chi-square statistic (one degree of freedom), for reference.
        chi2_p_value: its p-value, valid only when read once at a sample size fixed in advance.
    """

    expected_b_share: float
    observed_b_share: float
    bayes_factor: float
    max_bayes_factor: float
    p_value: float
    alert: bool
    chi2: float
    chi2_p_value: float


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


def srm_log_bayes_factor(
    n_a: int, n_b: int, b_share: float, concentration: float = SRM_PRIOR_CONCENTRATION
) -> float:
    """The log Bayes factor of the group counts against the configured split (Lindon and Malek 2022).

    The alternative draws B's share from ``Beta(c * b_share, c * (1 - b_share))``, a prior of weight ``c``
    (``concentration``) centred on the split; the null is the split itself. With two groups the
    Dirichlet-multinomial Bayes factor is the beta-binomial over the binomial likelihood (the binomial
    coefficients cancel)::

        BF = B(c s + n_b, c (1 - s) + n_a) / B(c s, c (1 - s)) / (s ** n_b * (1 - s) ** n_a)

    It depends on the counts alone, so it costs O(1) at any sample size. Arguments are not checked here;
    :func:`sample_ratio_mismatch` checks them.

    Args:
        n_a: results in group A.
        n_b: results in group B.
        b_share: the configured share of group B, ``s``.
        concentration: the prior's weight ``c``, in units.

    Returns:
        ``log BF`` (0 with no results).
    """
    prior_b, prior_a = concentration * b_share, concentration * (1.0 - b_share)
    return float(
        betaln(prior_b + n_b, prior_a + n_a)
        - betaln(prior_b, prior_a)
        - n_b * math.log(b_share)
        - n_a * math.log1p(-b_share)
    )


def _count(value: object, name: str) -> int:
    if type(value) is int or (isinstance(value, Integral) and not isinstance(value, bool)):
        count = int(value)
        if count >= 0:
            return count
    raise ABTestError(f"{name} must be a count, an integer >= 0 (got {value!r})", field=name)


def _real(value: object) -> float:
    """The value as a float; NaN (which fails every range check) when it is not a real number."""
    if type(value) is float or type(value) is int:
        return float(value)
    return float(value) if isinstance(value, Real) and not isinstance(value, bool) else math.nan


def _check_srm_inputs(
    n_a: object, n_b: object, b_share: object, concentration: object, max_bayes_factor: object
) -> tuple[int, int, float, float, float]:
    """The arguments as ints and floats, or an error that names the bad one and what it accepts."""
    counts = _count(n_a, "n_a"), _count(n_b, "n_b")
    share, weight, carried = _real(b_share), _real(concentration), _real(max_bayes_factor)
    if not 0.0 < share < 1.0:
        raise ABTestError(
            f"b_share must be the configured share of group B, a number strictly between 0 and 1 "
            f"(got {b_share!r}); pass the test's traffic_split",
            field="b_share",
        )
    if not 0.0 < weight < math.inf:
        raise ABTestError(
            f"concentration must be a finite number > 0, the prior's weight in units (got {concentration!r}); "
            f"the default is {SRM_PRIOR_CONCENTRATION:g}",
            field="concentration",
        )
    if not carried >= 1.0:
        raise ABTestError(
            f"max_bayes_factor must be >= 1, the largest Bayes factor of earlier looks (got "
            f"{max_bayes_factor!r}); pass 1.0 before the first look, then the previous result's "
            "max_bayes_factor",
            field="max_bayes_factor",
        )
    return (*counts, share, weight, carried)


def sample_ratio_mismatch(
    n_a: int,
    n_b: int,
    b_share: float,
    *,
    concentration: float = SRM_PRIOR_CONCENTRATION,
    max_bayes_factor: float = 1.0,
) -> SampleRatio:
    """Check the group counts against the configured split, sequentially (and by chi-square, for reference).

    The alert rests on the sequential test (:func:`srm_log_bayes_factor`), valid however often it is
    read. Its p-value is monotone only across looks whose running maximum is carried: pass the previous
    result's ``max_bayes_factor`` back in. Called with counts alone it gives the always-valid p-value at
    this look, which may rise again later; the chance that it is ever below ``SRM_ALERT_P`` under the
    split is still at most ``SRM_ALERT_P``.

    Args:
        n_a: results in group A.
        n_b: results in group B.
        b_share: the configured share of group B (``traffic_split``).
        concentration: the weight of the test's prior on B's share, in units.
        max_bayes_factor: the largest Bayes factor of earlier looks at the same test; 1 when there were
            none.

    Returns:
        The check; with no results at all, Bayes factor and p-value 1, chi-square 0 and no alert (unless an
        earlier look passed in had alerted).

    Raises:
        ABTestError: a count is negative or not an integer, ``b_share`` is not strictly between 0 and 1,
            ``concentration`` is not a finite positive number, or ``max_bayes_factor`` is below 1 (its
            ``field`` names the argument).
    """
    n_a, n_b, b_share, concentration, max_bayes_factor = _check_srm_inputs(
        n_a, n_b, b_share, concentration, max_bayes_factor
    )
    log_bf = srm_log_bayes_factor(n_a, n_b, b_share, concentration)
    log_max = max(log_bf, math.log(max_bayes_factor))
    n = n_a + n_b
    if n == 0:
        chi2, chi2_p, observed = 0.0, 1.0, math.nan
    else:
        exp_a, exp_b = n * (1.0 - b_share), n * b_share
        chi2 = (n_a - exp_a) ** 2 / exp_a + (n_b - exp_b) ** 2 / exp_b
        chi2_p, observed = math.erfc(math.sqrt(chi2 / 2.0)), n_b / n
    return SampleRatio(
        expected_b_share=b_share,
        observed_b_share=observed,
        bayes_factor=math.exp(min(log_bf, 700.0)),
        max_bayes_factor=math.exp(min(log_max, 700.0)),
        p_value=min(1.0, math.exp(-log_max)),
        alert=log_max >= math.log(1.0 / SRM_ALERT_P),
        chi2=chi2,
        chi2_p_value=chi2_p,
    )


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
