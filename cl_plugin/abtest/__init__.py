"""A/B tests of a candidate model against production: assignment, persistence, analysis, decision.

``framework`` holds the spec's :class:`ABTestFramework`; ``assignment`` the deterministic hash that puts
units into groups; ``stats`` the statistics (Welch and two-proportion tests, the always-valid mixture
SPRT, the sequential sample-ratio-mismatch check, power and sample size); ``analysis`` the decision rule.
"""

from cl_plugin.abtest.analysis import RECOMMENDATIONS, ABTestSettings, analyse
from cl_plugin.abtest.assignment import assign
from cl_plugin.abtest.framework import ABTestFramework, MetricFn, describe_model
from cl_plugin.abtest.stats import (
    GroupStats,
    mixture_sprt,
    required_sample_size,
    sample_ratio_mismatch,
    statistical_power,
)

__all__ = [
    "RECOMMENDATIONS",
    "ABTestFramework",
    "ABTestSettings",
    "GroupStats",
    "MetricFn",
    "analyse",
    "assign",
    "describe_model",
    "mixture_sprt",
    "required_sample_size",
    "sample_ratio_mismatch",
    "statistical_power",
]
