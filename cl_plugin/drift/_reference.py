"""A reference distribution prepared once, so that testing a window costs a few vectorised passes.

Numeric features keep their sorted values (Kolmogorov-Smirnov, Wasserstein) or their quantile bins with the
reference's counts (PSI, binned chi-square and Jensen-Shannon); categorical features keep their category
counts. Features that get the same test are tested together, as columns of one array.

A window is tested at several scales: its full length and its most recent half and quarter (so a recent
shift is not diluted by older samples). Every test has a p-value, and all p-values of one check (features
times scales) are corrected together, so that a check on a stationary stream flags anything with a chance
of at most ``alpha`` (Benjamini-Hochberg is Simes' test when nothing drifted; it holds for the positively
dependent tests of nested windows):

=====================  ===============================================  ==========================================
method                 effect measure                                   p-value
=====================  ===============================================  ==========================================
``kolmogorov_smirnov``  largest gap between the two empirical CDFs       Kolmogorov distribution (Stephens)
``psi``                population stability index                       ``PSI / (1/n + 1/m)`` ~ chi-square
``chi_square``         total variation distance of the frequencies      Pearson homogeneity chi-square
``wasserstein``        earth mover's distance / reference std            the KS test on the same samples
``jensen_shannon``     Jensen-Shannon distance of the frequencies       likelihood-ratio (G) homogeneity test
=====================  ===============================================  ==========================================

Wasserstein's own null distribution depends on the data's distribution, and its usual approximations are
too optimistic for heavy-tailed features (latencies), so whether a window differs beyond noise is left to
the distribution-free KS test, and whether the difference matters to the Wasserstein threshold. The G
statistic is ``2 N`` times the Jensen-Shannon divergence weighted by the two sample sizes, which makes it
Jensen-Shannon's own likelihood-ratio test.
"""

from __future__ import annotations

import numpy as np
from scipy import special, stats

from cl_plugin.drift.stattests import _PSI_FLOOR, ColumnDrift, adjust_p_values, quantile_edges

__all__ = ["PreparedReference", "feature_method", "window_lengths"]

_SORTED = ("kolmogorov_smirnov", "wasserstein")


def feature_method(method: str, categorical: bool) -> str:
    """The test a feature gets: categorical features get chi-square (or Jensen-Shannon when asked)."""
    if categorical:
        return "jensen_shannon" if method == "jensen_shannon" else "chi_square"
    return "kolmogorov_smirnov" if method == "auto" else method


def window_lengths(n: int, min_samples: int) -> list[int]:
    """The scales a window of ``n`` samples is tested at: ``n``, ``n // 2`` and ``n // 4``, each at least
    ``min_samples`` (just ``n`` when none is)."""
    return sorted({s for s in (n, n // 2, n // 4) if s >= min_samples}, reverse=True) or [n]


def _ks_p_value(d: np.ndarray, n_eff: float) -> np.ndarray:
    """Two-sample KS p-values from the Kolmogorov distribution with Stephens' small-sample correction.

    Within a few percent of scipy's ``kstwo.sf`` for effective sizes from 50 up, at a thousandth of the cost.
    """
    root = np.sqrt(n_eff)
    return special.kolmogorov((root + 0.12 + 0.11 / root) * d)


def _tie_ranks(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For rows sorted ascending: how many values of the row are below each value, and how many at most it."""
    s = values.shape[1]
    idx = np.arange(s)
    starts = np.ones(values.shape, dtype=bool)
    starts[:, 1:] = values[:, 1:] != values[:, :-1]
    if starts.all():
        return np.broadcast_to(idx, values.shape), np.broadcast_to(idx + 1, values.shape)
    below = np.maximum.accumulate(np.where(starts, idx, 0), axis=1)
    ends = np.ones(values.shape, dtype=bool)
    ends[:, :-1] = starts[:, 1:]
    last = np.minimum.accumulate(np.where(ends, idx, s - 1)[:, ::-1], axis=1)[:, ::-1]
    return below, last + 1


class _SortedFeatures:
    """Kolmogorov-Smirnov or Wasserstein on a group of numeric features (one column each)."""

    def __init__(self, method: str, columns: list[np.ndarray]) -> None:
        self.method = method
        self.ref = np.sort(np.vstack(columns), axis=1)  # features x m
        self.m = self.ref.shape[1]
        self.scale = np.array([float(np.std(c)) or 1.0 for c in columns])
        # The reference quantile function's integral at the knots k/m: P(k/m) = sum(ref[:k]) / m.
        self.cum = np.zeros((len(columns), self.m + 1))
        np.cumsum(self.ref / self.m, axis=1, out=self.cum[:, 1:])
        self.cum_flat = self.cum.ravel()
        self.cum_offsets = (np.arange(len(columns)) * (self.m + 1))[:, None]
        self._grids: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = {}

    width = 3  # encoded rows per feature: the values, then the reference values below them, then at most them

    def encode(self, rows: np.ndarray) -> np.ndarray:
        """Each value with its ranks in the reference, shape (3 x features, rows): done once per sample."""
        k = len(self.ref)
        out = np.empty((3 * k, len(rows)))
        out[:k] = rows.T
        for j, ref in enumerate(self.ref):
            out[k + j] = np.searchsorted(ref, rows[:, j], side="left")
            out[2 * k + j] = np.searchsorted(ref, rows[:, j], side="right")
        return out

    def test(self, window: np.ndarray, lengths: list[int]) -> list[tuple[np.ndarray, np.ndarray]]:
        """(statistic, p-value) per feature at each length, for an encoded window (oldest sample first)."""
        k, n = len(self.ref), window.shape[1]
        # One sort of the full window; each shorter scale keeps its samples in that order.
        order = np.argsort(window[:k], axis=1)
        flat = (order + (np.arange(k) * n)[:, None]).ravel()
        values = window[:k].ravel()[flat].reshape(k, n)
        left = window[k : 2 * k].ravel()[flat].reshape(k, n).astype(np.int64)
        right = window[2 * k :].ravel()[flat].reshape(k, n)
        out = []
        for s in lengths:
            if s == n:
                cur, ref_below, ref_upto = values, left, right
            else:
                recent = np.flatnonzero(order >= n - s)  # flat positions: take() beats a 2-D boolean mask
                cur = values.ravel().take(recent).reshape(k, s)
                ref_below = left.ravel().take(recent).reshape(k, s)
                ref_upto = right.ravel().take(recent).reshape(k, s)
            d = self._ks(cur, ref_below, ref_upto)
            p = _ks_p_value(d, s * self.m / (s + self.m))
            statistic = d if self.method == "kolmogorov_smirnov" else self._wasserstein(cur, ref_below)
            out.append((statistic, p))
        return out

    def _ks(self, cur: np.ndarray, ref_below: np.ndarray, ref_upto: np.ndarray) -> np.ndarray:
        # The largest CDF gap is at a window value or just before one: compare both CDFs there.
        s = cur.shape[1]
        below, upto = _tie_ranks(cur)
        after = np.abs(ref_upto / self.m - upto / s).max(axis=1)
        before = np.abs(ref_below / self.m - below / s).max(axis=1)
        return np.maximum(after, before)

    def _grid(self, s: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """For a window of s values: the levels a = i/s and b = (i+1)/s, and P(a), P(b), where P(u) is the
        integral of the reference quantile function from 0 to u (cached: a check uses three lengths)."""
        if s not in self._grids:
            u = np.arange(s + 1) / s
            j = np.minimum((u * self.m).astype(np.int64), self.m - 1)
            knots = self.cum[:, j] + (u - j / self.m) * self.ref[:, j]
            self._grids[s] = (u[:-1], u[1:], knots[:, :-1], knots[:, 1:])
        return self._grids[s]

    def _wasserstein(self, cur: np.ndarray, ref_below: np.ndarray) -> np.ndarray:
        """W1 = integral over u of |Q_ref(u) - Q_cur(u)|, divided by the reference's standard deviation.

        On [a, b) = [i/s, (i+1)/s) the window's quantile is its i-th smallest value c. The reference's
        quantile is below c up to u* = (reference values below c) / m, clipped to [a, b], and at least c
        after, so the integral there is c (2 u* - a - b) - 2 P(u*) + P(a) + P(b), where P(u*) is a knot
        of the cumulated reference when u* is not clipped.
        """
        a, b, p_a, p_b = self._grid(cur.shape[1])
        u_raw = ref_below / self.m
        u_star = np.minimum(np.maximum(u_raw, a), b)
        p_raw = np.take(self.cum_flat, ref_below + self.cum_offsets)
        p_star = np.where(u_raw < a, p_a, np.where(u_raw > b, p_b, p_raw))
        pieces = cur * (2 * u_star - a - b) - 2 * p_star + p_a + p_b
        return pieces.sum(axis=1) / self.scale


class _BinnedFeatures:
    """PSI, chi-square or Jensen-Shannon on a group of binned features (categories are bins too)."""

    def __init__(self, method: str, columns: list[np.ndarray], edges: list[np.ndarray]) -> None:
        self.method = method
        self.edges = edges
        self.bins_max = max(len(e) for e in edges) + 1  # bins of the widest feature; others are padded
        self.m = len(columns[0])
        self.ref = np.vstack(
            [
                np.bincount(np.searchsorted(e, c), minlength=self.bins_max)
                for e, c in zip(edges, columns, strict=True)
            ]
        ).astype(float)
        self.bins = np.array([len(e) + 1 for e in edges])

    width = 1  # encoded columns per feature: the bin, offset so that every feature has its own bins

    def encode(self, rows: np.ndarray) -> np.ndarray:
        """Each value's bin, shape (features, rows): done once per sample."""
        out = np.empty((len(self.edges), len(rows)))
        for j, e in enumerate(self.edges):
            out[j] = np.searchsorted(e, rows[:, j]) + j * self.bins_max
        return out

    def test(self, window: np.ndarray, lengths: list[int]) -> list[tuple[np.ndarray, np.ndarray]]:
        """(statistic, p-value) per feature at each length, for an encoded window (oldest sample first)."""
        k, n = len(self.edges), window.shape[1]
        codes = window.astype(np.int64)
        out = []
        for s in lengths:
            cur = np.bincount(codes[:, n - s :].ravel(), minlength=k * self.bins_max)
            out.append(self._one(cur.reshape(k, self.bins_max).astype(float), s))
        return out

    def _one(self, cur: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        ref, m = self.ref, self.m
        if self.method == "psi":
            r = np.maximum(ref / m, _PSI_FLOOR)
            c = np.maximum(cur / n, _PSI_FLOOR)
            psi = ((c - r) * np.log(c / r)).sum(axis=1)
            return psi, stats.chi2.sf(psi / (1.0 / m + 1.0 / n), np.maximum(self.bins - 1, 1))
        both = ref + cur
        dof = np.maximum((both > 0).sum(axis=1) - 1, 1)
        expected_ref, expected_cur = both * (m / (m + n)), both * (n / (m + n))
        if self.method == "chi_square":
            with np.errstate(invalid="ignore", divide="ignore"):
                terms = (ref - expected_ref) ** 2 / expected_ref + (cur - expected_cur) ** 2 / expected_cur
            chi2 = np.where(both > 0, terms, 0.0).sum(axis=1)
            tvd = 0.5 * np.abs(ref / m - cur / n).sum(axis=1)
            return tvd, stats.chi2.sf(chi2, dof)
        g = 2.0 * (special.rel_entr(ref, expected_ref) + special.rel_entr(cur, expected_cur)).sum(axis=1)
        p, q = ref / m, cur / n
        mix = 0.5 * (p + q)
        jsd = 0.5 * (special.rel_entr(p, mix) + special.rel_entr(q, mix)).sum(axis=1) / np.log(2)
        return np.sqrt(np.maximum(jsd, 0.0)), stats.chi2.sf(g, dof)


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
        self._groups: list[tuple[np.ndarray, slice, _SortedFeatures | _BinnedFeatures]] = []
        start = 0
        for m in dict.fromkeys(self.methods):
            index = [j for j, fm in enumerate(self.methods) if fm == m]
            cols = [columns[self.names[j]] for j in index]
            if m in _SORTED:
                group: _SortedFeatures | _BinnedFeatures = _SortedFeatures(m, cols)
            else:
                edges = [
                    np.arange(len(categories[self.names[j]]), dtype=float) + 0.5
                    if self.names[j] in categories
                    else quantile_edges(c, bins)
                    for j, c in zip(index, cols, strict=True)
                ]
                group = _BinnedFeatures(m, cols, edges)
            end = start + group.width * len(index)
            self._groups.append((np.array(index), slice(start, end), group))  # features, their rows, test
            start = end
        self.width = start

    def encode(self, rows: np.ndarray) -> np.ndarray:
        """What the tests need of each sample (ranks in the reference, bins), one column per row.

        Args:
            rows: samples, shape (rows, features).

        Returns:
            An array of shape (``width``, rows); a window of such columns, oldest first, is what
            :meth:`test` takes.
        """
        out = np.empty((self.width, len(rows)))
        for index, part, group in self._groups:
            out[part] = group.encode(rows[:, index])
        return out

    def test(
        self, window: np.ndarray, *, min_samples: int, threshold: float, alpha: float, correction: str
    ) -> tuple[list[ColumnDrift], int]:
        """Test an encoded window (oldest sample first) against the reference, at every scale, with one
        correction.

        Returns:
            One result per feature (at the scale where its evidence is strongest), and the window length of
            the most significant drifted feature (the full length when none drifted).
        """
        n = window.shape[1]
        lengths = window_lengths(n, min_samples)
        features = len(self.names)
        statistic = np.empty((len(lengths), features))
        p_value = np.empty((len(lengths), features))
        for index, part, group in self._groups:
            for i, (stat, p) in enumerate(group.test(window[part], lengths)):
                statistic[i, index], p_value[i, index] = stat, p
        adjusted = adjust_p_values(p_value.ravel(), correction).reshape(p_value.shape)
        drifted = (statistic >= threshold) & (adjusted < alpha)
        # A feature's scales ranked: drifted first, then by adjusted p-value, then by effect.
        best = np.lexsort((-statistic, adjusted, ~drifted), axis=0)[0]
        cols = np.arange(features)
        results = [
            ColumnDrift(
                self.names[j],
                self.methods[j],
                float(statistic[best[j], j]),
                float(p_value[best[j], j]),
                float(adjusted[best[j], j]),
                threshold,
                bool(drifted[best[j], j]),
            )
            for j in cols
        ]
        hits = cols[drifted[best, cols]]
        if len(hits) == 0:
            return results, n
        top = hits[np.lexsort((-statistic[best[hits], hits], adjusted[best[hits], hits]))[0]]
        return results, lengths[best[top]]
