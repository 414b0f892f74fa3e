"""The spec's ``DriftDetector``: a window of production samples tested against a reference, alarm by alarm.

Samples go into a ring buffer (numpy, one row per sample); every ``check_every`` samples the window is
tested feature by feature (see :mod:`cl_plugin.drift._reference`). One change raises one alarm: an alarm
needs ``persistence`` drifted tests in a row, and while the drift lasts no new alarm is raised unless more
features drift (and then not before ``cooldown`` samples after the last alarm). The drift episode ends after
``persistence`` clean tests in a row.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson

from cl_plugin.config import DriftDetectionConfig, parse_section
from cl_plugin.drift._reference import PreparedReference
from cl_plugin.drift._schema import Schema, reference_columns
from cl_plugin.drift.stattests import ColumnDrift
from cl_plugin.errors import DriftInputError, StoreError

if TYPE_CHECKING:
    from cl_plugin.store import Store

__all__ = ["DriftDetector", "DriftReport"]

log = logging.getLogger("cl_plugin.drift")

_EFFECT_ONLY = ("wasserstein", "jensen_shannon")


def severity_of(statistic: float, threshold: float) -> str:
    """``low`` below 1.5 times the threshold, ``medium`` below 2.5 times (PSI 0.25 with the default 0.1),
    ``high`` above."""
    ratio = statistic / threshold
    return "low" if ratio < 1.5 else "medium" if ratio < 2.5 else "high"


@dataclass(frozen=True)
class DriftReport:
    """One drift alarm.

    Attributes:
        severity: ``low``, ``medium`` or ``high`` (the strongest drifted feature's effect over the threshold).
        method: the test that found the strongest drift.
        statistic: that feature's effect measure.
        p_value: its corrected p-value, or None for tests without one.
        threshold: the effect a feature had to reach.
        alpha: the level the corrected p-values had to be below.
        drifted_features: names of the drifted features.
        features: every feature's result at this test.
        window_size: samples in the (most recent part of the) window where the drift was found.
        samples_seen: samples added since the reference was set.
        window_start: unix time of the oldest sample in that window.
        window_end: unix time of the newest sample.
        detected_at: unix time of the alarm.
        detector: the detector's name.
        event_id: the alarm's id (the ``drift_events`` row's key).
    """

    severity: str
    method: str
    statistic: float
    p_value: float | None
    threshold: float
    alpha: float
    drifted_features: list[str]
    features: list[ColumnDrift]
    window_size: int
    samples_seen: int
    window_start: float
    window_end: float
    detected_at: float
    detector: str
    event_id: str = field(default_factory=lambda: str(uuid.uuid4()))

    def to_row(self) -> dict[str, Any]:
        """The report as a ``drift_events`` row (JSON text for the feature lists)."""
        return {
            "event_id": self.event_id,
            "detector": self.detector,
            "method": self.method,
            "severity": self.severity,
            "statistic": self.statistic,
            "p_value": self.p_value,
            "threshold": self.threshold,
            "features": orjson.dumps(self.drifted_features).decode(),
            "details": orjson.dumps(
                {"alpha": self.alpha, "features": [asdict(f) for f in self.features]}
            ).decode(),
            "window_size": self.window_size,
            "samples_seen": self.samples_seen,
            "window_start": self.window_start,
            "window_end": self.window_end,
            "detected_at": self.detected_at,
        }


class DriftDetector:
    """Detects distribution shifts of production samples against a reference (the spec's API).

    Samples may be numbers, vectors, or dicts of features (text or boolean values are categorical, like
    the agent a router picked). Numeric features get ``detection_method``; categorical ones chi-square
    (Jensen-Shannon when that is the method). Configuration (``continual_learning.drift_detection``) comes
    as a dict, a :class:`~cl_plugin.config.DriftDetectionConfig`, or keyword arguments.

    Args:
        config: the configuration section.
        store: where alarms are recorded (table ``drift_events``); None keeps them in memory only.
        name: the monitored stream's name, stored with each alarm.
        **kwargs: configuration keys that override ``config``.

    Raises:
        ConfigError: a key is unknown or a value ill-typed or out of range.

    Example:
        >>> import random
        >>> rng = random.Random(0)
        >>> detector = DriftDetector({"window_size": 1000, "threshold": 0.1})
        >>> detector.set_reference_distribution([rng.gauss(0, 1) for _ in range(5000)])
        >>> stream = [rng.gauss(0, 1) for _ in range(3000)] + [rng.gauss(0.5, 1) for _ in range(2000)]
        >>> for i, x in enumerate(stream):
        ...     report = detector.add_sample(x, timestamp=float(i))
        ...     if report:
        ...         print(f"Drift at sample {i}: {report.severity}, {report.drifted_features}")
        Drift at sample 3199: medium, ['value']
    """

    def __init__(
        self,
        config: Mapping[str, Any] | DriftDetectionConfig | None = None,
        *,
        store: Store | None = None,
        name: str = "default",
        **kwargs: Any,
    ) -> None:
        self.config = parse_section(DriftDetectionConfig, config, prefix="drift_detection", **kwargs)
        self.store = store
        self.name = name
        self._reference: PreparedReference | None = None
        self._schema: Schema | None = None
        self._reports: list[DriftReport] = []

    @property
    def detection_method(self) -> str:
        """The configured method (``kolmogorov_smirnov``, ``psi``, ``chi_square``, ``wasserstein``,
        ``jensen_shannon`` or ``auto``)."""
        return self.config.detection_method

    @property
    def cooldown(self) -> int:
        """Samples after an alarm before another can be raised."""
        return self.config.window_size if self.config.cooldown is None else self.config.cooldown

    def set_reference_distribution(self, data: Any) -> None:
        """Set what "no drift" looks like, and start a new window.

        Args:
            data: a list of numbers, of vectors or of dicts, a 2-D array, a dict of columns, or a pandas
                DataFrame; later samples must have the same layout.

        Raises:
            DriftInputError: the data has fewer than 10 rows, an unsupported layout, or missing values.
        """
        layout, columns, categories = reference_columns(data)
        cfg = self.config
        self._reference = PreparedReference(columns, categories, cfg.detection_method, cfg.psi_bins)
        self._schema = Schema(layout, list(columns), categories)
        self._buffer = np.zeros((cfg.window_size, len(columns)))
        self._times = np.zeros(cfg.window_size)
        self._pos = 0
        self._count = 0
        self._seen = 0
        self._checks = 0
        self._drift_streak = 0
        self._clean_streak = 0
        self._episode: set[str] = set()
        self._last_alarm: int | None = None
        self._last_results: list[ColumnDrift] = []
        # Tests without a p-value have only their threshold against noise: give them a full window.
        self._min_samples = cfg.window_size if cfg.detection_method in _EFFECT_ONLY else cfg.min_samples

    def add_sample(self, sample: Any, *, timestamp: float | None = None) -> DriftReport | None:
        """Add one production sample; every ``check_every`` samples the window is tested.

        Args:
            sample: a number, vector or dict, laid out like the reference.
            timestamp: the sample's unix time (defaults to now).

        Returns:
            A :class:`DriftReport` when this sample raised an alarm, else None.

        Raises:
            DriftInputError: no reference was set, or the sample does not match the reference.
        """
        if self._schema is None:
            raise DriftInputError(
                "no reference distribution: call set_reference_distribution(training_data) before add_sample",
                field="reference",
            )
        if not self.config.enabled:
            return None
        pos = self._pos
        self._schema.write(sample, self._buffer[pos])
        self._times[pos] = time.time() if timestamp is None else timestamp
        self._pos = pos + 1 if pos + 1 < len(self._times) else 0
        self._count = min(self._count + 1, len(self._times))
        self._seen += 1
        if self._count < self._min_samples or self._seen % self.config.check_every:
            return None
        return self._check()

    def _window(self) -> tuple[np.ndarray, np.ndarray]:
        """The window's rows and times, oldest first."""
        if self._count < len(self._times):
            return self._buffer[: self._count], self._times[: self._count]
        p = self._pos
        return np.concatenate((self._buffer[p:], self._buffer[:p])), np.concatenate(
            (self._times[p:], self._times[:p])
        )

    def _check(self) -> DriftReport | None:
        assert self._reference is not None
        cfg = self.config
        rows, times = self._window()
        results, length = self._reference.test(
            rows,
            min_samples=cfg.min_samples,
            threshold=cfg.threshold,
            alpha=cfg.alpha,
            correction=cfg.correction,
        )
        self._checks += 1
        self._last_results = results
        drifted = {r.feature for r in results if r.drifted}
        if not drifted:
            self._drift_streak, self._clean_streak = 0, self._clean_streak + 1
            if self._clean_streak >= cfg.persistence:
                self._episode = set()
            return None
        self._drift_streak, self._clean_streak = self._drift_streak + 1, 0
        cooling = self._last_alarm is not None and self._seen - self._last_alarm < self.cooldown
        if self._drift_streak < cfg.persistence or drifted <= self._episode or cooling:
            return None
        self._episode |= drifted
        self._last_alarm = self._seen
        report = self._report(results, length, times)
        self._reports.append(report)
        if self.store is not None:
            self._persist(report)
        return report

    def _report(self, results: list[ColumnDrift], length: int, times: np.ndarray) -> DriftReport:
        hits = [r for r in results if r.drifted]
        top = max(hits, key=lambda r: r.statistic / r.threshold)
        return DriftReport(
            severity=severity_of(top.statistic, top.threshold),
            method=top.method,
            statistic=top.statistic,
            p_value=top.adjusted_p_value,
            threshold=top.threshold,
            alpha=self.config.alpha,
            drifted_features=[r.feature for r in hits],
            features=results,
            window_size=length,
            samples_seen=self._seen,
            window_start=float(times[-length]),
            window_end=float(times[-1]),
            detected_at=time.time(),
            detector=self.name,
        )

    def _persist(self, report: DriftReport) -> None:
        assert self.store is not None
        try:
            self.store.add_drift_event(report.to_row())
        except StoreError:
            # Monitoring must not break the caller: the report is returned and kept in memory regardless.
            log.warning("drift event %s could not be stored", report.event_id, exc_info=True)

    def get_drift_summary(self) -> dict[str, Any]:
        """What the detector knows: its settings, counts, the drift in progress, and the latest results.

        Returns:
            A dict with ``detection_method``, ``threshold``, ``window_size``, ``samples_seen``, ``checks``,
            ``alarms``, ``in_drift``, ``drifted_features`` (of the drift in progress), ``last_report`` (a
            dict, or None) and ``features`` (each feature's latest statistic, p-value and verdict).
        """
        ready = self._schema is not None
        last = self._reports[-1] if self._reports else None
        return {
            "detector": self.name,
            "enabled": self.config.enabled,
            "detection_method": self.detection_method,
            "threshold": self.config.threshold,
            "alpha": self.config.alpha,
            "window_size": self.config.window_size,
            "reference_size": self._reference.size if self._reference is not None else 0,
            "samples_seen": self._seen if ready else 0,
            "window_fill": self._count if ready else 0,
            "checks": self._checks if ready else 0,
            "alarms": len(self._reports),
            "in_drift": bool(ready and self._episode),
            "drifted_features": sorted(self._episode) if ready else [],
            "last_report": None if last is None else {**asdict(last), "features": None},
            "features": [asdict(r) for r in self._last_results] if ready else [],
        }
