"""KSWIN: a Kolmogorov-Smirnov test inside a sliding window (Raab et al., 2020), with river's defaults."""

from __future__ import annotations

import random
import warnings
from collections import deque
from itertools import islice

from scipy import stats

from cl_plugin.drift.base import StreamingDetector, check_param, check_value
from cl_plugin.errors import DriftInputError

__all__ = ["KSWIN"]


class KSWIN(StreamingDetector):
    """Kolmogorov-Smirnov windowing: the newest ``stat_size`` values against as many drawn from the rest.

    Once the window is full, each update compares its last ``stat_size`` values with ``stat_size`` values
    drawn uniformly (seeded) from the older part; a KS p-value at most ``alpha`` with a statistic above 0.1
    is a drift.

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
        self._window: deque[float] = deque(maxlen=self.window_size)
        self._rng = random.Random(self.seed)

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
        with warnings.catch_warnings():  # ties make scipy fall back to the asymptotic p-value, and say so
            warnings.simplefilter("ignore", RuntimeWarning)
            statistic, self.p_value = stats.ks_2samp(drawn, recent, method="auto")
        self._drift_detected = bool(self.p_value <= self.alpha and statistic > 0.1)
        return self
