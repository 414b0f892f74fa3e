"""Batch drift tests on one column at a time, chosen by column type, with multiple-testing control.

Every test returns an effect measure (compared with a threshold, so that large samples do not flag
negligible shifts) and, where the test has one, a p-value (compared with ``alpha`` after correction for the
number of columns, so that many columns do not flag by chance):

=====================  =================  ====================================================  ===========
method                 columns            effect measure                                        p-value
=====================  =================  ====================================================  ===========
``kolmogorov_smirnov``  numeric            largest gap between the two empirical CDFs (0..1)     exact/asymp
``psi``                numeric            population stability index on reference-quantile bins  chi-square
``chi_square``         categorical        total variation distance of the frequencies (0..1)    chi-square
``wasserstein``        numeric            earth mover's distance / reference standard deviation  none
``jensen_shannon``     numeric, category  Jensen-Shannon distance of the frequencies (0..1)     none
=====================  =================  ====================================================  ===========

The PSI p-value uses the known approximation ``PSI / (1/n + 1/m) ~ chi2(bins - 1)`` under no drift.
:func:`choose_method` picks a test the way Evidently does: chi-square (small) or Jensen-Shannon (large) for
categorical columns, Kolmogorov-Smirnov (small) or Wasserstein (large) for numeric ones.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from scipy import stats
from scipy.spatial.distance import jensenshannon

from cl_plugin.errors import DriftInputError

__all__ = [
    "CORRECTIONS",
    "METHODS",
    "ColumnDrift",
    "DatasetDrift",
    "adjust_p_values",
    "choose_method",
    "compare_columns",
    "ks_test",
    "psi_test",
]

Method = Literal["kolmogorov_smirnov", "psi", "chi_square", "wasserstein", "jensen_shannon"]
METHODS: tuple[str, ...] = ("kolmogorov_smirnov", "psi", "chi_square", "wasserstein", "jensen_shannon")
CORRECTIONS: tuple[str, ...] = ("benjamini_hochberg", "bonferroni", "none")
#: Per-method default threshold on the effect measure (Evidently's, and the usual PSI "moderate shift").
DEFAULT_THRESHOLDS: dict[str, float] = dict.fromkeys(METHODS, 0.1)
_CATEGORICAL_METHODS = ("chi_square", "jensen_shannon")
_PSI_FLOOR = 1e-4  # share given to an empty bin, so that PSI stays finite


@dataclass(frozen=True)
class ColumnDrift:
    """The result of one test on one column.

    Attributes:
        feature: the column's name.
        method: the test.
        statistic: its effect measure (see the module's table).
        p_value: the raw p-value, or None for tests without one.
        adjusted_p_value: the p-value after the multiple-testing correction, or None.
        threshold: the effect the statistic had to reach.
        drifted: whether the effect reached the threshold and, when there is a p-value, the adjusted
            p-value is below ``alpha``.
    """

    feature: str
    method: str
    statistic: float
    p_value: float | None
    adjusted_p_value: float | None
    threshold: float
    drifted: bool


@dataclass(frozen=True)
class DatasetDrift:
    """The results on every column, and whether enough of them drifted.

    Attributes:
        columns: one result per column, in the order given.
        drift_share: the share of drifted columns that makes the data set drifted.
    """

    columns: list[ColumnDrift]
    drift_share: float

    @property
    def drifted_features(self) -> list[str]:
        """Names of the drifted columns."""
        return [c.feature for c in self.columns if c.drifted]

    @property
    def drifted(self) -> bool:
        """Whether at least ``drift_share`` of the columns drifted (and at least one did)."""
        n = len(self.drifted_features)
        return n > 0 and n >= self.drift_share * len(self.columns)


def ks_test(reference: np.ndarray, current: np.ndarray) -> tuple[float, float]:
    """Two-sample Kolmogorov-Smirnov test.

    Returns:
        The statistic (largest CDF gap) and the two-sided p-value.
    """
    result = stats.ks_2samp(reference, current)
    return float(result.statistic), float(result.pvalue)


def quantile_edges(reference: np.ndarray, bins: int) -> np.ndarray:
    """Inner bin edges at the reference's quantiles (repeated quantiles merged, so no bin is empty)."""
    qs = np.quantile(reference, np.linspace(0, 1, bins + 1)[1:-1])
    return np.unique(qs)


def binned_shares(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Share of values in each bin; bin ``i`` holds values in ``(edges[i-1], edges[i]]``."""
    counts = np.bincount(np.searchsorted(edges, values, side="left"), minlength=len(edges) + 1)
    return counts / max(len(values), 1)


def psi_from_shares(ref: np.ndarray, cur: np.ndarray) -> float:
    """Population stability index of two histograms given as shares."""
    r = np.maximum(ref, _PSI_FLOOR)
    c = np.maximum(cur, _PSI_FLOOR)
    return float(np.sum((c - r) * np.log(c / r)))


def psi_p_value(psi: float, n_bins: int, n_ref: int, n_cur: int) -> float:
    """Approximate p-value of a PSI under no drift: ``PSI / (1/n + 1/m)`` is chi-square with bins-1 dof."""
    return float(stats.chi2.sf(psi / (1.0 / n_ref + 1.0 / n_cur), max(n_bins - 1, 1)))


def psi_test(reference: np.ndarray, current: np.ndarray, *, bins: int = 10) -> tuple[float, float]:
    """Population stability index on ``bins`` reference-quantile bins.

    Returns:
        The PSI (0.1 is the usual "moderate shift", 0.25 "major") and its approximate p-value.
    """
    edges = quantile_edges(reference, bins)
    value = psi_from_shares(binned_shares(reference, edges), binned_shares(current, edges))
    return value, psi_p_value(value, len(edges) + 1, len(reference), len(current))


def _category_counts(reference: Sequence[Any], current: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
    categories = sorted({*map(str, reference), *map(str, current)})
    index = {c: i for i, c in enumerate(categories)}
    ref = np.bincount([index[str(v)] for v in reference], minlength=len(categories))
    cur = np.bincount([index[str(v)] for v in current], minlength=len(categories))
    return ref, cur


def chi_square_from_counts(ref: np.ndarray, cur: np.ndarray) -> tuple[float, float]:
    """Total variation distance and chi-square homogeneity p-value of two count vectors."""
    keep = (ref + cur) > 0
    ref, cur = ref[keep], cur[keep]
    tvd = 0.5 * float(np.abs(ref / ref.sum() - cur / cur.sum()).sum())
    if len(ref) < 2:
        return tvd, 1.0
    _, p, _, _ = stats.chi2_contingency(np.vstack([ref, cur]), correction=False)
    return tvd, float(p)


def _numeric(values: Any, feature: str) -> np.ndarray:
    try:
        arr = np.asarray(values, dtype=float)
    except (TypeError, ValueError):
        raise DriftInputError(
            f"column {feature!r} holds values that are not numbers; use method='chi_square' or "
            "'jensen_shannon' for categorical columns",
            field=feature,
        ) from None
    if arr.ndim != 1 or len(arr) < 2 or not np.isfinite(arr).all():
        raise DriftInputError(
            f"column {feature!r} must be a flat list of at least 2 finite numbers; drop missing values first",
            field=feature,
        )
    return arr


def _is_categorical(values: Sequence[Any]) -> bool:
    return any(isinstance(v, str | bool) for v in values[:100])


def choose_method(values: Sequence[Any], n_reference: int | None = None) -> str:
    """Pick a test for a column the way Evidently does.

    Categorical columns (strings, booleans, or at most 5 distinct values) get chi-square up to 1000 reference
    rows and Jensen-Shannon above; numeric columns get Kolmogorov-Smirnov up to 1000 rows and Wasserstein
    above, where any p-value-based test would flag negligible shifts.

    Args:
        values: the reference column.
        n_reference: rows in the reference (defaults to ``len(values)``).

    Returns:
        One of :data:`METHODS`.
    """
    n = len(values) if n_reference is None else n_reference
    large = n > 1000
    if _is_categorical(values) or len(set(values[:5000])) <= 5:
        return "jensen_shannon" if large else "chi_square"
    return "wasserstein" if large else "kolmogorov_smirnov"


def adjust_p_values(p_values: Sequence[float], correction: str = "benjamini_hochberg") -> np.ndarray:
    """Correct p-values for testing several columns at once.

    Args:
        p_values: raw p-values.
        correction: ``benjamini_hochberg`` (controls the false discovery rate, and the chance of any false
            alarm when nothing drifted), ``bonferroni`` (controls the chance of any false alarm), or ``none``.

    Returns:
        Adjusted p-values, in the order given.

    Raises:
        DriftInputError: the correction is unknown.
    """
    p = np.asarray(p_values, dtype=float)
    if correction == "none" or len(p) == 0:
        return p
    if correction == "bonferroni":
        return np.minimum(p * len(p), 1.0)
    if correction == "benjamini_hochberg":
        # scipy's false_discovery_control, without its input checks: this runs on every drift check.
        order = np.argsort(p)
        scaled = p[order] * len(p) / np.arange(1, len(p) + 1)
        adjusted = np.empty_like(p)
        adjusted[order] = np.minimum(np.minimum.accumulate(scaled[::-1])[::-1], 1.0)
        return adjusted
    raise DriftInputError(
        f"unknown correction {correction!r}; use one of: {', '.join(CORRECTIONS)}", field="correction"
    )


def _column_test(
    method: str, ref: Sequence[Any], cur: Sequence[Any], feature: str, bins: int
) -> tuple[float, float | None]:
    if method in _CATEGORICAL_METHODS and (method == "chi_square" or _is_categorical(ref)):
        ref_counts, cur_counts = _category_counts(ref, cur)
        if method == "chi_square":
            return chi_square_from_counts(ref_counts, cur_counts)
        return float(jensenshannon(ref_counts, cur_counts, base=2)), None
    r, c = _numeric(ref, feature), _numeric(cur, feature)
    if method == "kolmogorov_smirnov":
        return ks_test(r, c)
    if method == "psi":
        return psi_test(r, c, bins=bins)
    if method == "wasserstein":
        scale = float(np.std(r)) or 1.0
        return float(stats.wasserstein_distance(r, c)) / scale, None
    edges = quantile_edges(r, bins)
    return float(jensenshannon(binned_shares(r, edges), binned_shares(c, edges), base=2)), None


def compare_columns(
    reference: Mapping[str, Sequence[Any]],
    current: Mapping[str, Sequence[Any]],
    *,
    method: str | Mapping[str, str] = "auto",
    threshold: float | None = None,
    alpha: float = 0.05,
    correction: str = "benjamini_hochberg",
    bins: int = 10,
    drift_share: float = 0.5,
) -> DatasetDrift:
    """Test every column of ``current`` against the same column of ``reference``.

    Args:
        reference: columns by name (lists or arrays), for example the training data.
        current: the same columns from production.
        method: one of :data:`METHODS`, ``"auto"`` (:func:`choose_method` per column), or a method per column.
        threshold: the effect a column must reach; None uses each method's default (0.1).
        alpha: the level of the corrected p-values.
        correction: one of :data:`CORRECTIONS`.
        bins: histogram bins for PSI and Jensen-Shannon on numeric columns.
        drift_share: share of drifted columns that makes the data set drifted (Evidently's is 0.5).

    Returns:
        The per-column results.

    Raises:
        DriftInputError: a column is missing from ``current``, a method is unknown, or a numeric test got
            values that are not numbers.
    """
    for arg, data in (("reference", reference), ("current", current)):
        if not isinstance(data, Mapping):
            raise DriftInputError(
                f"{arg} must be a dict of columns, name -> values (got {type(data).__name__})", field=arg
            )
    names = list(reference)
    results: list[tuple[str, str, float, float | None]] = []
    for name in names:
        if name not in current:
            raise DriftInputError(
                f"column {name!r} is in the reference but not in the current data; pass the same columns",
                field=name,
            )
        columns_of = {}
        for arg, data in (("reference", reference), ("current", current)):
            column = data[name]
            if isinstance(column, str | bytes | Mapping) or not isinstance(column, Iterable):
                raise DriftInputError(
                    f"column {name!r} of {arg} must be a list of values (got {type(column).__name__})",
                    field=name,
                )
            columns_of[arg] = list(column)
            if any(not isinstance(v, Hashable) for v in columns_of[arg]):
                raise DriftInputError(
                    f"column {name!r} of {arg} holds a value that is neither a number nor a category "
                    "(a list or a dict); pass one scalar per row",
                    field=name,
                )
        m = method.get(name, "auto") if isinstance(method, Mapping) else method
        if m == "auto":
            m = choose_method(columns_of["reference"])
        if m not in METHODS:
            raise DriftInputError(
                f"unknown drift method {m!r} for column {name!r}; use one of: auto, {', '.join(METHODS)}",
                field="method",
            )
        results.append(
            (name, m, *_column_test(m, columns_of["reference"], columns_of["current"], name, bins))
        )
    tested = [i for i, r in enumerate(results) if r[3] is not None]
    adjusted = adjust_p_values([results[i][3] for i in tested], correction)  # type: ignore[misc]
    adjusted_by_index = dict(zip(tested, adjusted.tolist(), strict=True))
    columns = []
    for i, (name, m, statistic, p) in enumerate(results):
        floor = DEFAULT_THRESHOLDS[m] if threshold is None else threshold
        adj = adjusted_by_index.get(i)
        drifted = statistic >= floor and (adj is None or adj < alpha)
        columns.append(ColumnDrift(name, m, statistic, p, adj, floor, drifted))
    return DatasetDrift(columns, drift_share)
