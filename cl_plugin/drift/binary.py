"""DDM and EDDM: detectors for a 0/1 error stream (1 = the model erred), with river's defaults."""

from __future__ import annotations

import math

from cl_plugin.drift.base import StreamingDetector, check_param, check_value
from cl_plugin.errors import DriftInputError

__all__ = ["DDM", "EDDM"]


def _check_bit(x: object, detector: str) -> float:
    value = check_value(x, detector)
    if value not in (0.0, 1.0):
        raise DriftInputError(
            f"{detector}.update(x) takes 0 (correct) or 1 (error), got {x!r}; pass whether the prediction "
            "was wrong, for example int(prediction != label)",
            field="x",
        )
    return value


class DDM(StreamingDetector):
    """Drift Detection Method (Gama et al., 2004): the error rate rises above its best level.

    With ``p`` the running error rate and ``s = sqrt(p (1 - p) / n)``, the detector remembers the lowest
    ``p + s``; it warns when ``p + s`` passes ``p_min + warning_threshold * s_min`` and signals drift past
    ``p_min + drift_threshold * s_min``.

    Args:
        warm_start: updates before any test.
        warning_threshold: the warning level, in standard deviations.
        drift_threshold: the drift level, in standard deviations.

    Examples:
        >>> import random
        >>> from cl_plugin.drift import DDM
        >>> rng = random.Random(42)
        >>> ddm = DDM()
        >>> stream = rng.choices([0, 1], k=1000) + rng.choices([0, 1], k=1000, weights=[0.3, 0.7])
        >>> first_warning = None
        >>> for i, x in enumerate(stream):
        ...     _ = ddm.update(x)
        ...     if ddm.warning_detected and first_warning is None:
        ...         first_warning = i
        ...     if ddm.drift_detected:
        ...         print(f"Change detected at index {i}")
        Change detected at index 1334
        >>> first_warning
        1084
    """

    def __init__(
        self, warm_start: int = 30, warning_threshold: float = 2.0, drift_threshold: float = 3.0
    ) -> None:
        if warning_threshold > drift_threshold:
            raise DriftInputError(
                f"DDM(warning_threshold={warning_threshold}, drift_threshold={drift_threshold}): the warning "
                "level must not be above the drift level",
                field="warning_threshold",
            )
        self.warm_start = warm_start
        self.warning_threshold = warning_threshold
        self.drift_threshold = drift_threshold
        super().__init__()

    def _reset(self) -> None:
        super()._reset()
        self._n = 0
        self._p = 0.0
        self._p_min = 0.0
        self._s_min = 0.0
        self._ps_min = math.inf
        self._level = (0.0, math.inf)

    @property
    def evidence(self) -> tuple[float, float]:
        """The error rate plus its standard deviation, and the drift level above the best one seen."""
        return self._level

    def update(self, x: float) -> DDM:
        """Add one outcome.

        Args:
            x: 1 when the model erred, 0 when it was right.

        Returns:
            The detector itself.

        Raises:
            DriftInputError: ``x`` is not 0 or 1.
        """
        x = _check_bit(x, "DDM")
        if self._drift_detected:
            self._reset()
        self._n += 1
        self._p += (1.0 / self._n) * (x - self._p)
        s = math.sqrt(self._p * (1 - self._p) / self._n)
        if self._n > self.warm_start:
            if self._p + s <= self._ps_min:
                self._p_min, self._s_min, self._ps_min = self._p, s, self._p + s
            level = self._p + s
            self._level = (level, self._p_min + self.drift_threshold * self._s_min)
            self._warning_detected = level > self._p_min + self.warning_threshold * self._s_min
            if level > self._p_min + self.drift_threshold * self._s_min:
                self._drift_detected = True
                self._warning_detected = False
        return self


class EDDM(StreamingDetector):
    """Early Drift Detection Method (Baena-García et al., 2006): errors come closer together.

    Tracks the mean ``p'`` and standard deviation ``s'`` of the distance between consecutive errors and the
    largest ``p' + 2 s'`` seen; once ``warm_start`` errors were seen, a ratio ``(p' + 2 s') / max`` below
    ``alpha`` is a warning and below ``beta`` a drift. Suited to gradual drift.

    Args:
        warm_start: updates, and errors, before any test.
        alpha: the warning ratio.
        beta: the drift ratio (not above ``alpha``).

    Examples:
        >>> import random
        >>> from cl_plugin.drift import EDDM
        >>> rng = random.Random(42)
        >>> eddm = EDDM(alpha=0.8, beta=0.75)
        >>> stream = rng.choices([0, 1], k=1000) + rng.choices([0, 1], k=1000, weights=[0.3, 0.7])
        >>> for i, x in enumerate(stream):
        ...     if eddm.update(x).drift_detected:
        ...         print(f"Change detected at index {i}")
        Change detected at index 1278
    """

    def __init__(self, warm_start: int = 30, alpha: float = 0.95, beta: float = 0.9) -> None:
        check_param("alpha", alpha, low=0.0, high=1.0, detector="EDDM")
        if beta > alpha:
            raise DriftInputError(
                f"EDDM(alpha={alpha}, beta={beta}): beta (the drift ratio) must not be above alpha "
                "(the warning ratio)",
                field="beta",
            )
        self.warm_start = warm_start
        self.alpha = alpha
        self.beta = beta
        super().__init__()

    def _reset(self) -> None:
        super()._reset()
        self._n = 0
        self._last_error = 0
        self._n_errors = 0
        self._mean = 0.0  # of the distances between errors
        self._ssd = 0.0  # their sum of squared deviations
        self._max_level = -1.0
        self._fall = 0.0

    @property
    def evidence(self) -> tuple[float, float]:
        """How far the error distance level fell below its peak (1 - ratio), and ``1 - beta``."""
        return self._fall, 1.0 - self.beta

    def update(self, x: float) -> EDDM:
        """Add one outcome.

        Args:
            x: 1 when the model erred, 0 when it was right.

        Returns:
            The detector itself.

        Raises:
            DriftInputError: ``x`` is not 0 or 1.
        """
        x = _check_bit(x, "EDDM")
        if self._drift_detected:
            self._reset()
        self._n += 1
        if x != 1.0:
            return self
        self._n_errors += 1
        distance = self._n - self._last_error
        old_mean = self._mean
        self._mean += (1.0 / self._n_errors) * (distance - old_mean)
        self._ssd += (distance - old_mean) * (distance - self._mean)
        self._last_error = self._n
        if self._n > self.warm_start:
            std = math.sqrt(self._ssd / (self._n_errors - 1)) if self._n_errors > 1 else 0.0
            level = self._mean + 2 * std
            if level > self._max_level:
                self._max_level = level
            elif self._n_errors > self.warm_start:
                ratio = level / self._max_level
                self._fall = 1.0 - ratio
                if ratio < self.beta:
                    self._drift_detected = True
                elif ratio < self.alpha:
                    self._warning_detected = True
                else:
                    self._warning_detected = False
        return self
