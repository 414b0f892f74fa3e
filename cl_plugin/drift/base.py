"""The shape every streaming drift detector shares, after river's ``river.base.DriftDetector``.

A detector's constructor only stores its parameters; ``update(x)`` feeds one value and returns the detector;
``drift_detected`` (and, for detectors with a warning zone, ``warning_detected``) says what the last update
found. After a drift the detector forgets what it saw, on the next update, so one change raises one alarm.
"""

from __future__ import annotations

import math
import sys
from abc import ABC, abstractmethod

from cl_plugin.errors import DriftInputError

__all__ = ["StreamingDetector"]


class StreamingDetector(ABC):
    """Base class of the streaming detectors: ``update(x) -> self``, ``drift_detected``, reset after drift."""

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        """Forget everything seen so far (called on the update that follows a drift)."""
        self._drift_detected = False
        self._warning_detected = False

    @property
    def drift_detected(self) -> bool:
        """Whether the last update found a drift."""
        return self._drift_detected

    @property
    def warning_detected(self) -> bool:
        """Whether the last update is in the warning zone (always False for detectors without one)."""
        return self._warning_detected

    @property
    @abstractmethod
    def evidence(self) -> tuple[float, float]:
        """What the last test found, as (statistic, alarm level): a drift is a statistic above its level."""

    @abstractmethod
    def update(self, x: float) -> StreamingDetector:
        """Feed one value.

        Args:
            x: the next value of the monitored stream.

        Returns:
            The detector itself; read ``drift_detected`` afterwards.
        """

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({params})"


def check_value(x: object, detector: str) -> float:
    """The value as a finite float, or a :class:`DriftInputError` that says what the detector accepts."""
    if isinstance(x, bool):
        return float(x)
    if isinstance(x, float) and math.isfinite(x):
        return float(x)
    if isinstance(x, int) and -sys.float_info.max <= x <= sys.float_info.max:  # isfinite overflows on 10**400
        return float(x)
    raise DriftInputError(
        f"{detector}.update(x) takes one finite number per call (got {x!r}); feed features one at a time, "
        "one detector per feature",
        field="x",
    )


def check_param(name: str, value: float, *, low: float, high: float, detector: str) -> None:
    """Raise a :class:`DriftInputError` naming the parameter when it is outside ``[low, high]``."""
    if not low <= value <= high:
        raise DriftInputError(
            f"{detector}({name}={value!r}): {name} must be between {low} and {high}", field=name
        )
