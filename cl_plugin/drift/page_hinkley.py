"""Page-Hinkley: a cumulative-sum test on the deviation from the running mean, with river's defaults."""

from __future__ import annotations

import math
from typing import Literal

from cl_plugin.drift.base import StreamingDetector, check_param, check_value
from cl_plugin.errors import DriftInputError

__all__ = ["PageHinkley"]

_MODES = ("up", "down", "both")


class PageHinkley(StreamingDetector):
    """Page-Hinkley test: drift when the faded cumulative deviation from the mean exceeds ``threshold``.

    Args:
        min_instances: values seen before any test.
        delta: the magnitude of change tolerated without alarm.
        threshold: the alarm level (lambda) of the cumulative sum.
        alpha: forgetting factor of the cumulative sums.
        mode: watch increases (``"up"``), decreases (``"down"``) or both.

    Examples:
        >>> import random
        >>> from cl_plugin.drift import PageHinkley
        >>> rng = random.Random(12345)
        >>> ph = PageHinkley()
        >>> stream = rng.choices([0, 1], k=1000) + rng.choices(range(4, 8), k=1000)
        >>> for i, x in enumerate(stream):
        ...     if ph.update(x).drift_detected:
        ...         print(f"Change detected at index {i}, input value: {x}")
        Change detected at index 1006, input value: 5
    """

    def __init__(
        self,
        min_instances: int = 30,
        delta: float = 0.005,
        threshold: float = 50.0,
        alpha: float = 1 - 0.0001,
        mode: Literal["up", "down", "both"] = "both",
    ) -> None:
        check_param("alpha", alpha, low=0.0, high=1.0, detector="PageHinkley")
        check_param("threshold", threshold, low=0.0, high=math.inf, detector="PageHinkley")
        if mode not in _MODES:
            raise DriftInputError(
                f"PageHinkley(mode={mode!r}): mode must be one of {', '.join(_MODES)}", field="mode"
            )
        self.min_instances = min_instances
        self.delta = delta
        self.threshold = threshold
        self.alpha = alpha
        self.mode = mode
        super().__init__()

    def _reset(self) -> None:
        super()._reset()
        self._n = 0
        self._mean = 0.0
        self._sum_up = 0.0
        self._sum_down = 0.0
        self._min_up = math.inf
        self._max_down = -1.0
        self._excess = 0.0

    @property
    def evidence(self) -> tuple[float, float]:
        """The cumulative deviation in the watched direction(s), and ``threshold``."""
        return self._excess, self.threshold

    def update(self, x: float) -> PageHinkley:
        """Add one value and test the cumulative sums.

        Args:
            x: the next value.

        Returns:
            The detector itself.

        Raises:
            DriftInputError: ``x`` is not a finite number.
        """
        x = check_value(x, "PageHinkley")
        if self._drift_detected:
            self._reset()
        self._n += 1
        self._mean += (1.0 / self._n) * (x - self._mean)
        dev = x - self._mean
        self._sum_up = self.alpha * self._sum_up + dev - self.delta
        self._sum_down = self.alpha * self._sum_down + dev + self.delta
        self._min_up = min(self._min_up, self._sum_up)
        self._max_down = max(self._max_down, self._sum_down)
        if self._n >= self.min_instances:
            rise, fall = self._sum_up - self._min_up, self._max_down - self._sum_down
            self._excess = {"up": rise, "down": fall, "both": max(rise, fall)}[self.mode]
            self._drift_detected = self._excess > self.threshold
        return self
