"""KSWIN: a Kolmogorov-Smirnov test inside a sliding window (Raab et al., 2020), with river's defaults."""

from __future__ import annotations

import random
from collections import deque
from functools import cache
from itertools import islice

from scipy import stats

from cl_plugin.drift.base import StreamingDetector, check_param, check_value
from cl_plugin.errors import DriftInputError

__all__ = ["KSWIN"]


class KSWIN(StreamingDetector):
    """Kolmogorov-Smirnov windowing: the newest ``stat_size`` values against as many drawn from the rest.

    Once the window is full, each update compares its last ``stat_size`` values with ``stat_size`` values
    drawn uniformly (seeded) from the older part; a KS p-value at most ``alpha`` with a statistic above 0.1
    is a drift. The statistic is computed here and the p-value is scipy's exact two-sample one, which
    depends on the statistic alone and is cached per value, so an update costs a few microseconds instead
    of a ``ks_2samp`` call.

    Args:
        alpha: significance of the KS test (keep it small: the test runs on every update).
        window_size: values kept in the sliding window.
        stat_size: values in each of the two compared samples.
        seed: seed of the draws from the older part.

    Examples:
        >>> import random
        >>> from cl_plugin.drift import KSWIN
        >>> rng = random.Random(12345)
        >>> kswin = KSWIN(alpha=0.0001, seed=42)
        >>> stream = rng.choices([0, 1], k=1000) + rng.choices(range(4, 8), k=1000)
        >>> for i, x in enumerate(stream):
        ...     if kswin.update(x).drift_detected:
        ...         print(f"Change detected at index {i}, input value: {x}")
        Change detected at index 1016, input value: 6
    """

    def __init__(
        self, alpha: float = 0.005, window_size: int = 100, stat_size: int = 30, seed: int | None = None
    ) -> None:
        check_param("alpha", alpha, low=0.0, high=1.0, detector="KSWIN")
        if not 0 < stat_size < window_size:
            raise DriftInputError(
                f"KSWIN(window_size={window_size}, stat_size={stat_size}): stat_size must be positive and "
                "smaller than window_size",
                field="stat_size",
            )
        self.alpha = alpha
        self.window_size = window_size
        self.stat_size = stat_size
        self.seed = seed
        super().__init__()

    def _reset(self) -> None:
        super()._reset()
        self.p_value = 1.0
        self.statistic = 0.0
        self._window: deque[float] = deque(maxlen=self.window_size)
        self._rng = random.Random(self.seed)

    @property
    def evidence(self) -> tuple[float, float]:
        """The last KS statistic and 0.1, the statistic a drift must exceed (``p_value`` must also be at most
        ``alpha``)."""
        return self.statistic, 0.1

    def update(self, x: float) -> KSWIN:
        """Add one value and, once the window is full, run the KS test.

        Args:
            x: the next value.

        Returns:
            The detector itself.

        Raises:
            DriftInputError: ``x`` is not a finite number.
        """
        x = check_value(x, "KSWIN")
        if self._drift_detected:
            self._reset()
        self._window.append(x)
        if len(self._window) < self.window_size:
            return self
        older = self.window_size - self.stat_size
        drawn = [self._window[i] for i in self._rng.sample(range(older), self.stat_size)]
        recent = list(islice(self._window, older, self.window_size))
        # scipy's exact method rounds the statistic to a multiple of 1 / stat_size, and so does this.
        gap = round(_ks_statistic(sorted(drawn), sorted(recent)) * self.stat_size)
        self.statistic = gap / self.stat_size
        self.p_value = _exact_p_value(self.stat_size, gap)
        self._drift_detected = bool(self.p_value <= self.alpha and self.statistic > 0.1)
        return self


def _ks_statistic(a: list[float], b: list[float]) -> float:
    """The two-sample KS statistic of two sorted samples, with the same float operations as scipy's."""
    n1, n2 = len(a), len(b)
    i = j = 0
    high = low = 0.0
    while i < n1 or j < n2:
        v = a[i] if j == n2 or (i < n1 and a[i] <= b[j]) else b[j]
        while i < n1 and a[i] == v:
            i += 1
        while j < n2 and b[j] == v:
            j += 1
        diff = i / n1 - j / n2
        high, low = max(high, diff), min(low, diff)
    return min(-low, 1.0) if -low > high else high


@cache
def _exact_p_value(n: int, gap: int) -> float:
    """scipy's exact two-sided p-value for two samples of ``n`` values whose CDFs differ by ``gap / n``."""
    if gap == 0:
        return 1.0
    # Two samples with exactly that statistic: the p-value depends on nothing else.
    return float(stats.ks_2samp(range(n), [x + gap - 0.5 for x in range(n)], method="exact").pvalue)
