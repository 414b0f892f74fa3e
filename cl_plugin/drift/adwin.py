"""ADWIN: adaptive windowing (Bifet & Gavaldà, 2007), with river's defaults and alarm points."""

from __future__ import annotations

import math

from cl_plugin.drift.base import StreamingDetector, check_param, check_value

__all__ = ["ADWIN"]


class _Row:
    """Buckets of one size (2**level values each), oldest first, as running (total, variance) pairs."""

    __slots__ = ("totals", "variances")

    def __init__(self) -> None:
        self.totals: list[float] = []
        self.variances: list[float] = []


class ADWIN(StreamingDetector):
    """Adaptive windowing: drift when two sub-windows of the recent window have different means.

    The window is summarised by an exponential histogram: at most ``max_buckets + 1`` buckets of each size
    1, 2, 4, ...; two full buckets merge into one of the next size. Every ``clock`` updates each cut of the
    window into an older part W0 and a newer part W1 is tested with the Hoeffding-style bound of ADWIN2;
    a cut whose means differ by more than the bound is a drift.

    Args:
        delta: significance of the cut test; smaller means fewer false alarms and later detection.
        clock: test the cuts every this many updates.
        max_buckets: buckets of one size kept before two are merged.
        min_window_length: sub-windows shorter than this are not tested.
        grace_period: no test before the window holds this many values.

    Examples:
        >>> import random
        >>> from cl_plugin.drift import ADWIN
        >>> rng = random.Random(12345)
        >>> adwin = ADWIN()
        >>> stream = rng.choices([0, 1], k=1000) + rng.choices(range(4, 8), k=1000)
        >>> for i, x in enumerate(stream):
        ...     if adwin.update(x).drift_detected:
        ...         print(f"Change detected at index {i}, input value: {x}")
        Change detected at index 1023, input value: 4
    """

    def __init__(
        self,
        delta: float = 0.002,
        clock: int = 32,
        max_buckets: int = 5,
        min_window_length: int = 5,
        grace_period: int = 10,
    ) -> None:
        check_param("delta", delta, low=1e-12, high=1.0, detector="ADWIN")
        check_param("clock", clock, low=1, high=math.inf, detector="ADWIN")
        check_param("max_buckets", max_buckets, low=2, high=math.inf, detector="ADWIN")
        check_param("min_window_length", min_window_length, low=1, high=math.inf, detector="ADWIN")
        self.delta = delta
        self.clock = clock
        self.max_buckets = max_buckets
        self.min_window_length = min_window_length
        self.grace_period = grace_period
        super().__init__()

    def _reset(self) -> None:
        super()._reset()
        self._rows: list[_Row] = [_Row()]
        self._width = 0.0
        self._total = 0.0
        self._variance = 0.0  # sum of squared deviations from the window mean
        self._tick = 0
        self._cut = (0.0, math.inf)  # the last cut tested or found: |mean difference|, bound

    @property
    def evidence(self) -> tuple[float, float]:
        """The gap between the two sub-windows' means at the last cut found, and ADWIN's bound there."""
        return self._cut

    @property
    def width(self) -> int:
        """How many values the window holds."""
        return int(self._width)

    @property
    def estimation(self) -> float:
        """The mean of the window (0 when it is empty)."""
        return self._total / self._width if self._width else 0.0

    def update(self, x: float) -> ADWIN:
        """Add one value and test the window's cuts when the clock ticks.

        Args:
            x: the next value (a 0/1 error indicator or any real number).

        Returns:
            The detector itself.

        Raises:
            DriftInputError: ``x`` is not a finite number.
        """
        x = check_value(x, "ADWIN")
        if self._drift_detected:
            self._reset()
        self._insert(x)
        self._tick += 1
        self._drift_detected = False
        if self._tick % self.clock == 0 and self._width > self.grace_period:
            while self._cut_found():
                self._drift_detected = True
                self._drop_oldest()
        return self

    def _insert(self, x: float) -> None:
        if self._width > 0:
            dev = x - self._total / self._width
            self._variance += self._width * dev * dev / (self._width + 1)
        self._width += 1
        self._total += x
        row = self._rows[0]
        row.totals.append(x)
        row.variances.append(0.0)
        level = 0
        while len(self._rows[level].totals) > self.max_buckets:
            row = self._rows[level]
            size = float(2**level)
            t0, t1 = row.totals[0], row.totals[1]
            diff = t0 / size - t1 / size
            merged_var = row.variances[0] + row.variances[1] + size * 0.5 * diff * diff
            del row.totals[:2], row.variances[:2]
            if level + 1 == len(self._rows):
                self._rows.append(_Row())
            self._rows[level + 1].totals.append(t0 + t1)
            self._rows[level + 1].variances.append(merged_var)
            level += 1

    def _cut_found(self) -> bool:
        """Whether some cut W0 | W1 (W0 older) has means farther apart than ADWIN's bound."""
        n0 = u0 = 0.0
        n1, u1 = self._width, self._total
        min_len = self.min_window_length
        log_term = math.log(2 * math.log(self._width) / self.delta)
        var_in_window = self._variance / self._width
        for level in range(len(self._rows) - 1, -1, -1):
            size = float(2**level)
            totals = self._rows[level].totals
            for k, total in enumerate(totals):
                n0 += size
                n1 -= size
                u0 += total
                u1 -= total
                if level == 0 and k == len(totals) - 1:
                    return False
                if n0 >= min_len and n1 >= min_len:
                    m_recip = 1.0 / (n0 - min_len + 1) + 1.0 / (n1 - min_len + 1)
                    epsilon = (
                        math.sqrt(2 * m_recip * var_in_window * log_term) + 2.0 / 3.0 * log_term * m_recip
                    )
                    if abs(u0 / n0 - u1 / n1) > epsilon:
                        self._cut = (abs(u0 / n0 - u1 / n1), epsilon)
                        return True
        return False

    def _drop_oldest(self) -> None:
        """Remove the oldest bucket from the window, keeping the totals and the variance exact."""
        level = len(self._rows) - 1
        row = self._rows[level]
        size = float(2**level)
        total, var = row.totals.pop(0), row.variances.pop(0)
        self._width -= size
        self._total -= total
        if self._width > 0:
            diff = total / size - self._total / self._width
            self._variance -= var + size * self._width * diff * diff / (size + self._width)
        else:
            self._variance = 0.0
        if not row.totals and level > 0:
            self._rows.pop()
