"""A reference distribution prepared once, so that testing a window costs a few sorts and searches.

Numeric features keep their sorted values (Kolmogorov-Smirnov, Wasserstein) and their quantile bins with
the reference's shares (PSI, binned chi-square and Jensen-Shannon); categorical features keep their
category counts. A window is tested on its full length and, for tests with a p-value, on its most recent
half and quarter too (so a recent shift is not diluted by older samples); all p-values of one check are
corrected together.
"""

from __future__ import annotations

import numpy as np
from scipy import special, stats
from scipy.spatial.distance import jensenshannon

from cl_plugin.drift.stattests import ColumnDrift, adjust_p_values, psi_from_shares, quantile_edges

__all__ = ["PreparedReference", "feature_method"]

_WITH_P_VALUE = ("kolmogorov_smirnov", "psi", "chi_square")


def feature_method(method: str, categorical: bool) -> str:
    """The test a feature gets: categorical features get chi-square (or Jensen-Shannon when asked)."""
    if categorical:
        return "jensen_shannon" if method == "jensen_shannon" else "chi_square"
    return "kolmogorov_smirnov" if method == "auto" else method


def _ks_p_value(d: np.ndarray, n_eff: np.ndarray) -> np.ndarray:
    """Two-sample KS p-values from the Kolmogorov distribution with Stephens' small-sample correction.

    Within a few percent of scipy's ``kstwo.sf`` for effective sizes from 50 up, at a thousandth of the cost.
    """
    root = np.sqrt(n_eff)
    return special.kolmogorov((root + 0.12 + 0.11 / root) * d)


class PreparedReference:
    """Per-feature summaries of the reference, and the window test on top of them.

    Args:
        columns: the reference's columns (categorical ones as codes).
        categories: the categories of each categorical column.
        method: the configured method (``auto`` resolves per feature).
        bins: reference-quantile bins for PSI and the binned tests.
    """

    def __init__(
        self, columns: dict[str, np.ndarray], categories: dict[str, list[str]], method: str, bins: int
    ) -> None:
        self.names = list(columns)
        self.size = len(next(iter(columns.values())))
        self.methods = [feature_method(method, name in categories) for name in self.names]
        self._sorted: list[np.ndarray] = []
        self._scale: list[float] = []
        self._edges: list[np.ndarray] = []
        self._counts: list[np.ndarray] = []
        for name in self.names:
            values = columns[name]
            ordered = np.sort(values)
            self._sorted.append(ordered)
            self._scale.append(float(np.std(values)) or 1.0)
            if name in categories:
                edges = np.arange(len(categories[name]), dtype=float) + 0.5
            else:
                edges = quantile_edges(values, bins)
            self._edges.append(edges)
            self._counts.append(np.bincount(np.searchsorted(edges, values), minlength=len(edges) + 1))

    def test(
        self, window: np.ndarray, *, min_samples: int, threshold: float, alpha: float, correction: str
    ) -> tuple[list[ColumnDrift], int]:
        """Test a window (oldest row first) against the reference.

        Returns:
            One result per feature (at the window length where its evidence is strongest), and the window
            length of the most significant drifted feature (the full length when none drifted).
        """
        n = len(window)
        lengths = sorted({s for s in (n, n // 2, n // 4) if s >= min_samples}, reverse=True) or [n]
        trials: list[tuple[int, int, float]] = []  # (feature, length, statistic)
        ks_trials: list[tuple[int, float, float]] = []  # (trial, D, effective n)
        chi2_trials: list[tuple[int, float, int]] = []  # (trial, chi-square statistic, degrees of freedom)
        for j, m in enumerate(self.methods):
            for s in lengths if m in _WITH_P_VALUE else [n]:
                statistic, test_stat, dof = self._one(j, m, window[n - s :, j])
                if m == "kolmogorov_smirnov":
                    ks_trials.append((len(trials), statistic, s * self.size / (s + self.size)))
                elif test_stat is not None:
                    chi2_trials.append((len(trials), test_stat, dof))
                trials.append((j, s, statistic))
        # One vectorised call per distribution: scipy's per-call overhead dominates otherwise.
        p_values: dict[int, float] = {}
        if ks_trials:
            idx, d, n_eff = (np.array(v) for v in zip(*ks_trials, strict=True))
            p_values.update(zip(idx.tolist(), _ks_p_value(d, n_eff).tolist(), strict=True))
        if chi2_trials:
            idx, chi2, dof = zip(*chi2_trials, strict=True)
            p_values.update(zip(idx, stats.chi2.sf(chi2, dof).tolist(), strict=True))
        order = sorted(p_values)
        adjusted = dict(
            zip(order, adjust_p_values([p_values[i] for i in order], correction).tolist(), strict=True)
        )
        best: dict[int, tuple[tuple[float, float], ColumnDrift, int]] = {}
        for i, (j, s, statistic) in enumerate(trials):
            adj = adjusted.get(i)
            drifted = bool(statistic >= threshold and (adj is None or adj < alpha))
            result = ColumnDrift(
                self.names[j], self.methods[j], statistic, p_values.get(i), adj, threshold, drifted
            )
            # Rank a feature's trials: drifted first, then by adjusted p-value, then by effect.
            rank = (0.0 if drifted else 1.0, (adj if adj is not None else 0.0) - statistic * 1e-9)
            if j not in best or rank < best[j][0]:
                best[j] = (rank, result, s)
        results = [best[j][1] for j in range(len(self.names))]
        drifted_ranks = [(best[j][0], best[j][2]) for j in best if best[j][1].drifted]
        length = min(drifted_ranks)[1] if drifted_ranks else n
        return results, length

    def _one(self, j: int, method: str, current: np.ndarray) -> tuple[float, float | None, int]:
        """The effect statistic, the chi-square statistic behind the p-value (if any) and its dof."""
        if method == "kolmogorov_smirnov":
            return self._ks(j, current), None, 0
        if method == "wasserstein":
            return float(stats.wasserstein_distance(self._sorted[j], current)) / self._scale[j], None, 0
        edges, ref_counts = self._edges[j], self._counts[j]
        cur_counts = np.bincount(np.searchsorted(edges, current), minlength=len(edges) + 1)
        n, m = len(current), self.size
        if method == "psi":
            value = psi_from_shares(ref_counts / m, cur_counts / n)
            return value, value / (1.0 / m + 1.0 / n), len(edges)
        if method == "chi_square":
            seen = (ref_counts + cur_counts) > 0
            ref, cur = ref_counts[seen], cur_counts[seen]
            tvd = 0.5 * float(np.abs(ref / m - cur / n).sum())
            # Homogeneity chi-square of the 2 x k table [ref; cur].
            expected_ref = (ref + cur) * (m / (m + n))
            expected_cur = (ref + cur) * (n / (m + n))
            chi2 = float(
                ((ref - expected_ref) ** 2 / expected_ref + (cur - expected_cur) ** 2 / expected_cur).sum()
            )
            return tvd, chi2, max(len(ref) - 1, 1)
        return float(jensenshannon(ref_counts, cur_counts, base=2)), None, 0

    def _ks(self, j: int, current: np.ndarray) -> float:
        ref = self._sorted[j]
        cur = np.sort(current)
        n, m = len(cur), len(ref)
        # Between two consecutive current values the current ECDF is flat and the reference ECDF rises, so
        # the largest gap is at a current value or just before one: O(n log m), whatever the reference size.
        after = np.abs(
            np.searchsorted(ref, cur, side="right") / m - np.searchsorted(cur, cur, side="right") / n
        )
        before = np.abs(
            np.searchsorted(ref, cur, side="left") / m - np.searchsorted(cur, cur, side="left") / n
        )
        return float(max(after.max(), before.max()))
