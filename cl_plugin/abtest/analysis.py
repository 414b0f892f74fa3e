"""The analysis of an A/B test from its two groups' summaries, and the decision it supports.

The decision rests on the always-valid test alone (:func:`~cl_plugin.abtest.stats.mixture_sprt`), so it
may be asked for after every result. In order:

1. fewer than ``min_samples`` results in a group: ``Continue``;
2. the group counts do not match the split (sample ratio mismatch: the sequential test's always-valid
   p-value is at most 0.001): ``Keep A``, since the comparison cannot be trusted until the assignment or
   the logging is fixed;
3. the confidence sequence of B's improvement over A lies above zero: ``Deploy B``; below zero: ``Keep A``;
4. a ``minimum_detectable_effect`` is set and the sequence lies below it: ``Keep A`` (B cannot be better
   by the planned effect, so running on is futile);
5. otherwise ``Continue``.

"Improvement" is ``mean(B) - mean(A)``, or its negative when lower metric values are better.

The sample-ratio check is computed from the two counts at each analysis (see
:func:`~cl_plugin.abtest.stats.sample_ratio_mismatch`). The store keeps only the groups' sufficient
statistics, not the path they took, so the running maximum of the Bayes factor over earlier analyses is not
available: the reported p-value is the always-valid one *at this look*. It can rise again as counts come
back into line, but the chance that an A/A test ever alerts, at any look, stays at most 0.001.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

from cl_plugin.abtest.stats import (
    GroupStats,
    SampleRatio,
    fixed_test,
    mixture_sprt,
    required_sample_size,
    sample_ratio_mismatch,
    statistical_power,
)
from cl_plugin.config import ABTestingConfig

__all__ = ["RECOMMENDATIONS", "ABTestSettings", "analyse"]

#: What :func:`analyse` may recommend.
RECOMMENDATIONS = ("Deploy B", "Keep A", "Continue")


@dataclass(frozen=True)
class ABTestSettings:
    """The settings a test's analysis uses, fixed when the test is created and stored with it.

    Attributes mirror the keys of :class:`~cl_plugin.config.ABTestingConfig` of the same names.
    """

    traffic_split: float
    min_samples: int
    confidence_level: float
    metric_type: Literal["auto", "continuous", "binary"]
    higher_is_better: bool
    minimum_detectable_effect: float | None
    power: float
    sequential_tuning: int

    @classmethod
    def from_config(cls, config: ABTestingConfig) -> ABTestSettings:
        """Take the analysis settings out of a config section."""
        return cls(**{name: getattr(config, name) for name in cls.__dataclass_fields__})

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ABTestSettings:
        """Read settings stored by :meth:`to_dict` (keys added later take their config defaults)."""
        defaults = ABTestingConfig()
        return cls(**{name: data.get(name, getattr(defaults, name)) for name in cls.__dataclass_fields__})

    def to_dict(self) -> dict[str, Any]:
        """The settings as a JSON-ready dict."""
        return asdict(self)


def _finite(x: float) -> float | None:
    """JSON has no infinities: an unbounded end of an interval is None."""
    return x if math.isfinite(x) else None


def _kind(settings: ABTestSettings, a: GroupStats, b: GroupStats) -> Literal["continuous", "binary"]:
    if settings.metric_type != "auto":
        return settings.metric_type
    return "binary" if a.non_binary == 0 and b.non_binary == 0 and a.n + b.n > 0 else "continuous"


def _group(stats: GroupStats, kind: Literal["continuous", "binary"]) -> dict[str, Any]:
    return {"n": stats.n, "mean": stats.mean if stats.n else None, "std": math.sqrt(stats.variance(kind))}


def analyse(settings: ABTestSettings, a: GroupStats, b: GroupStats) -> dict[str, Any]:
    """Compare group B with group A and recommend what to do.

    Args:
        settings: the test's settings.
        a: group A's summary.
        b: group B's summary.

    Returns:
        A JSON-ready dict: ``recommendation`` (one of :data:`RECOMMENDATIONS`) and ``reason``; ``metric_type``;
        ``groups`` (``n``, ``mean``, ``std`` of A and B); ``effect`` (``mean(B) - mean(A)``),
        ``relative_effect`` (over ``mean(A)``); the always-valid ``p_value``, ``confidence_interval`` (a
        confidence sequence) and ``significant``; ``fixed_horizon`` (Welch or two-proportion test, valid
        only at a sample size fixed in advance); ``sample_ratio``, the sample-ratio-mismatch check:
        ``expected_b_share``, ``observed_b_share``, the sequential test's ``bayes_factor``, its always-valid
        ``p_value`` at this look and ``alert`` (which blocks a decision), and ``fixed_horizon`` (the
        chi-square ``chi2`` and ``p_value``, for reference only); and ``plan`` (required sample size and
        current power for ``minimum_detectable_effect``, or None).
    """
    kind = _kind(settings, a, b)
    alpha = 1.0 - settings.confidence_level
    srm = sample_ratio_mismatch(a.n, b.n, settings.traffic_split)
    out: dict[str, Any] = {
        "metric_type": kind,
        "groups": {"A": _group(a, kind), "B": _group(b, kind)},
        "effect": None,
        "relative_effect": None,
        "p_value": None,
        "confidence_interval": None,
        "significant": False,
        "fixed_horizon": None,
        "sample_ratio": {
            "expected_b_share": srm.expected_b_share,
            "observed_b_share": _finite(srm.observed_b_share),
            "bayes_factor": srm.bayes_factor,
            "p_value": srm.p_value,
            "alert": srm.alert,
            "fixed_horizon": {"chi2": srm.chi2, "p_value": srm.chi2_p_value},
        },
        "plan": None,
    }
    if a.n < 2 or b.n < 2:
        return out | _decision("Continue", f"collecting results: {a.n} in A and {b.n} in B so far")
    var_a, var_b = a.variance(kind), b.variance(kind)
    effect = b.mean - a.mean
    seq = mixture_sprt(effect, var_a / a.n + var_b / b.n, a.n + b.n, alpha, settings.sequential_tuning)
    fixed = fixed_test(a, b, kind, alpha)
    out |= {
        "effect": effect,
        "relative_effect": effect / abs(a.mean) if a.mean else None,
        "p_value": seq.p_value,
        "confidence_interval": [_finite(seq.ci_low), _finite(seq.ci_high)],
        "significant": seq.significant,
        "fixed_horizon": {
            "p_value": fixed.p_value,
            "confidence_interval": [_finite(fixed.ci_low), _finite(fixed.ci_high)],
            "statistic": _finite(fixed.statistic),
            "df": _finite(fixed.df),
        },
    }
    mde = settings.minimum_detectable_effect
    if mde is not None:
        sds = {"sd_a": math.sqrt(var_a), "sd_b": math.sqrt(var_b)}
        plan = {"b_share": settings.traffic_split, "alpha": alpha, "tuning": settings.sequential_tuning}
        needed = required_sample_size(mde, **sds, power=settings.power, **plan)
        out["plan"] = {
            "minimum_detectable_effect": mde,
            "power": settings.power,
            "required_samples": needed,
            "power_now": statistical_power(mde, a.n + b.n, **sds, **plan),
        }
    return out | _recommend(settings, a, b, seq.ci_low, seq.ci_high, srm)


def _recommend(
    settings: ABTestSettings,
    a: GroupStats,
    b: GroupStats,
    ci_low: float,
    ci_high: float,
    srm: SampleRatio,
) -> dict[str, str]:
    if min(a.n, b.n) < settings.min_samples:
        return _decision(
            "Continue",
            f"each group needs min_samples={settings.min_samples} results before a decision "
            f"(A has {a.n}, B has {b.n})",
        )
    if srm.alert:
        return _decision(
            "Keep A",
            f"sample ratio mismatch: {srm.observed_b_share:.4f} of results are in B where "
            f"{settings.traffic_split} were expected (always-valid p={srm.p_value:.2g}, Bayes factor "
            f"{srm.bayes_factor:.3g}; chi-square p={srm.chi2_p_value:.2g}); the comparison is not "
            "trustworthy until the assignment or the result logging is fixed",
        )
    sign = 1.0 if settings.higher_is_better else -1.0
    low, high = sorted((sign * ci_low, sign * ci_high))
    level = f"{settings.confidence_level:.0%}"
    if low > 0:
        return _decision("Deploy B", f"B is better than A (the {level} always-valid interval excludes 0)")
    if high < 0:
        return _decision("Keep A", f"B is worse than A (the {level} always-valid interval excludes 0)")
    mde = settings.minimum_detectable_effect
    if mde is not None and high < mde:
        return _decision(
            "Keep A",
            f"B is not better than A by the planned effect {mde} (the {level} always-valid interval of "
            f"its improvement ends at {high:.4g})",
        )
    return _decision("Continue", "no significant difference yet; keep collecting results")


def _decision(recommendation: str, reason: str) -> dict[str, str]:
    return {"recommendation": recommendation, "reason": reason}
