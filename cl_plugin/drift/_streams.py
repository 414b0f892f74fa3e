"""Streaming detectors behind ``DriftDetector``: one detector per feature, fed every sample.

ADWIN, Page-Hinkley and KSWIN watch any numeric feature; they are fed the feature standardised by the
reference (``(x - mean) / std``), so that their parameters are in reference standard deviations whatever
the feature's unit. DDM and EDDM watch 0/1 error streams, so they take only references whose every feature
is 0/1 (numbers or booleans). Each detector is first fed the reference (KSWIN only its last window), so
that it starts from "no drift" as the reference defines it.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from cl_plugin.drift.adwin import ADWIN
from cl_plugin.drift.base import StreamingDetector
from cl_plugin.drift.binary import DDM, EDDM
from cl_plugin.drift.kswin import KSWIN
from cl_plugin.drift.page_hinkley import PageHinkley
from cl_plugin.errors import ConfigError, DriftInputError

__all__ = ["STREAMING_METHODS", "FeatureStreams", "check_params"]

_CLASSES: dict[str, type[StreamingDetector]] = {
    "adwin": ADWIN,
    "page_hinkley": PageHinkley,
    "kswin": KSWIN,
    "ddm": DDM,
    "eddm": EDDM,
}
STREAMING_METHODS: tuple[str, ...] = tuple(_CLASSES)
_BINARY = ("ddm", "eddm")

#: Settings that differ from the class's own defaults, for standardised features. Page-Hinkley's delta
#: (0.005) suits a small-variance stream such as an error rate; on a unit-variance feature its cumulative sum
#: wanders past the threshold within a few thousand stationary samples. As a CUSUM its delta is half the
#: smallest shift worth finding: 0.25 for 0.5 sigma, which then adds 0.25 a sample to the sum and crosses
#: the threshold (50) within about 200 samples. KSWIN tests every sample of every feature: at its default
#: alpha (0.005) five stationary features raise an alarm about every 1000 samples, so it gets the level of
#: its own documentation's example, 0.0001. Its 30-sample statistic window makes it weak on small shifts:
#: on a 0.5-sigma shift of one feature in five it missed half of the benchmark's seeds within 3000 samples
#: (tests/bench/bench_drift.py); prefer adwin or page_hinkley for mean shifts.
_DEFAULTS: dict[str, dict[str, Any]] = {"page_hinkley": {"delta": 0.25}, "kswin": {"alpha": 0.0001}}


def check_params(method: str, params: Mapping[str, Any] | None) -> None:
    """Raise a :class:`ConfigError` naming ``drift_detection.detector_params`` when the parameters do not fit
    the streaming method (or a batch method was given parameters)."""
    if not params:
        return
    if method not in _CLASSES:
        raise ConfigError(
            f"drift_detection.detector_params is for the streaming methods ({', '.join(STREAMING_METHODS)}); "
            f"detection_method {method!r} takes threshold, alpha and the other drift_detection keys",
            key="drift_detection.detector_params",
        )
    allowed = list(inspect.signature(_CLASSES[method]).parameters)
    for key in params:
        if key not in allowed:
            raise ConfigError(
                f"unknown key 'drift_detection.detector_params.{key}' for {method}; use one of: "
                f"{', '.join(allowed)}",
                key=f"drift_detection.detector_params.{key}",
            )
    try:
        _CLASSES[method](**params)
    except DriftInputError as exc:
        raise ConfigError(
            f"drift_detection.detector_params.{exc.field}: {exc}",
            key=f"drift_detection.detector_params.{exc.field}",
        ) from None


def _binary_codes(name: str, values: np.ndarray, categories: list[str] | None) -> list[float] | None:
    """For a 0/1 feature: the bit of each code (categorical) or None (numeric); else a DriftInputError."""
    if categories is None:
        if np.isin(values, (0.0, 1.0)).all():
            return None
    elif set(categories) <= {"True", "False"}:
        return [1.0 if c == "True" else 0.0 for c in categories]
    raise DriftInputError(
        f"detection_method ddm and eddm watch 0/1 error streams, and feature {name!r} is not 0/1; for this "
        f"data use one of: kolmogorov_smirnov, psi, chi_square, wasserstein, jensen_shannon, auto, adwin, "
        "page_hinkley, kswin",
        field="detection_method",
    )


class FeatureStreams:
    """One streaming detector per feature.

    Args:
        method: ``adwin``, ``page_hinkley``, ``kswin``, ``ddm`` or ``eddm``.
        columns: the reference's columns (categorical ones as codes).
        categories: the categories of each categorical column.
        params: keyword arguments of the detector class (see :func:`check_params`).

    Raises:
        DriftInputError: ``ddm`` or ``eddm`` on a feature that is not 0/1.
    """

    def __init__(
        self,
        method: str,
        columns: dict[str, np.ndarray],
        categories: dict[str, list[str]],
        params: Mapping[str, Any] | None,
    ) -> None:
        self.method = method
        self.names = list(columns)
        settings = {**_DEFAULTS.get(method, {}), **(params or {})}
        cls = _CLASSES[method]
        self._bits: list[list[float] | None] = []
        self._center: list[float] = []
        self._scale: list[float] = []
        self.detectors: list[StreamingDetector] = []
        for j, (name, values) in enumerate(columns.items()):
            if method in _BINARY:
                self._bits.append(_binary_codes(name, values, categories.get(name)))
                self._center.append(0.0)
                self._scale.append(1.0)
            else:
                self._bits.append(None)
                self._center.append(float(np.mean(values)))
                self._scale.append(float(np.std(values)) or 1.0)
            seeded = {"seed": j} if method == "kswin" and "seed" not in settings else {}
            detector = cls(**settings, **seeded)
            warm = values[-detector.window_size :] if isinstance(detector, KSWIN) else values
            self._feed(detector, [self._transform(j, v) for v in warm.tolist()])
            self.detectors.append(detector)

    @staticmethod
    def _feed(detector: StreamingDetector, values: list[float]) -> None:
        # A drift found inside the reference is not reported: the detector starts afresh on the next value.
        update: Callable[[float], Any] = detector.update
        for v in values:
            update(v)

    def _transform(self, j: int, value: float) -> float:
        bits = self._bits[j]
        if bits is not None:  # a boolean feature's category code
            code = int(value)
            if code >= len(bits):
                raise DriftInputError(
                    f"feature {self.names[j]!r} must be True or False for detection_method {self.method}",
                    field=self.names[j],
                )
            return bits[code]
        return (value - self._center[j]) / self._scale[j]

    def check(self, values: list[float]) -> None:
        """Raise a :class:`DriftInputError` naming the feature when a value does not suit its detector
        (a value other than 0 or 1 for ``ddm`` and ``eddm``), before any detector is updated."""
        if self.method not in _BINARY:
            return
        for j, v in enumerate(values):
            if self._bits[j] is None and v not in (0.0, 1.0):
                raise DriftInputError(
                    f"feature {self.names[j]!r} must be 0 or 1 for detection_method {self.method} (got {v!r}); "
                    "pass whether the prediction was wrong, for example int(prediction != label)",
                    field=self.names[j],
                )
            self._transform(j, v)

    def update(self, values: list[float]) -> list[int]:
        """Feed one sample's values (checked by :meth:`check`); return the features whose detector
        signalled a drift."""
        hits = []
        for j, detector in enumerate(self.detectors):
            detector.update(self._transform(j, values[j]))
            if detector.drift_detected:
                hits.append(j)
        return hits

    def evidence(self, j: int) -> tuple[float, float, float | None]:
        """Feature ``j``'s last statistic, the level it had to exceed, and its p-value (KSWIN only)."""
        detector = self.detectors[j]
        statistic, level = detector.evidence
        p_value = detector.p_value if isinstance(detector, KSWIN) else None
        return float(statistic), float(level) if math.isfinite(level) else math.inf, p_value
