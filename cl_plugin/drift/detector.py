"""The spec's ``DriftDetector``: production samples tested against a reference, alarm by alarm.

With a batch method (``kolmogorov_smirnov``, ``psi``, ``chi_square``, ``wasserstein``, ``jensen_shannon``,
``auto``) samples go into a ring buffer and every ``check_every`` samples the window is tested feature by
feature at several scales (the whole window, its newest half and quarter; see
:mod:`cl_plugin.drift._reference`), all p-values of a check corrected together: a check on a stationary
stream flags anything with a chance of at most ``alpha``. A drifted feature must also reach the effect
``threshold``. One change raises one alarm: an alarm needs ``persistence`` drifted checks in a row (1 by
default, since the correction already bounds false alarms per check), and while the drift lasts no new
alarm is raised unless features outside it drift, and a feature never alarms within ``cooldown`` samples of
its own last alarm (a drift still found after the cooldown alarms then). The drift ends once clean checks in a row
have covered a whole window (and numbered at least ``persistence``), so a borderline check does not end it
and re-raise it.

With a streaming method (``adwin``, ``page_hinkley``, ``kswin``; ``ddm`` and ``eddm`` for 0/1 features)
each feature has its own detector, fed every sample (see :mod:`cl_plugin.drift._streams`); a feature whose
detector signals a drift raises an alarm of the same shape, under the same cooldown, and a feature's drift ends
``cooldown`` samples after its last alarm.
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson

from cl_plugin.config import DriftDetectionConfig, resolve_section
from cl_plugin.drift._reference import PreparedReference
from cl_plugin.drift._schema import Schema, reference_columns
from cl_plugin.drift._streams import STREAMING_METHODS, FeatureStreams, check_params
from cl_plugin.drift.stattests import ColumnDrift
from cl_plugin.errors import DriftInputError, StoreError

if TYPE_CHECKING:
    from cl_plugin.store import Store

__all__ = ["DriftDetector", "DriftReport"]

log = logging.getLogger("cl_plugin.drift")


def severity_of(statistic: float, threshold: float) -> str:
    """``low`` below 1.5 times the threshold, ``medium`` below 2.5 times (PSI 0.25 with the default 0.1),
    ``high`` above."""
    ratio = statistic / threshold if 0 < threshold < math.inf else 1.0
    return "low" if ratio < 1.5 else "medium" if ratio < 2.5 else "high"


@dataclass(frozen=True)
class DriftReport:
    """One drift alarm.

    Attributes:
        severity: ``low``, ``medium`` or ``high`` (the strongest drifted feature's effect over the threshold).
        method: the test that found the strongest drift (or the streaming detector).
        statistic: that feature's effect measure (a streaming detector's own statistic, see its
            ``evidence``).
        p_value: its corrected p-value, or None for detectors without one.
        threshold: the effect a feature had to reach (a streaming detector's alarm level).
        alpha: the level the corrected p-values had to be below (None for streaming detectors).
        drifted_features: names of the drifted features.
        features: every feature's result at this test.
        window_size: samples in the (most recent part of the) window where the drift was found; for a
            streaming detector, the samples it saw since its last drift, at most ``window_size``.
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
    alpha: float | None
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
        self.config = resolve_section(DriftDetectionConfig, config, component="DriftDetector", **kwargs)
        check_params(self.config.detection_method, self.config.detector_params)
        self.store = store
        self.name = name
        self._reference: PreparedReference | None = None
        self._streams: FeatureStreams | None = None
        self._schema: Schema | None = None
        self._reports: list[DriftReport] = []

    @property
    def detection_method(self) -> str:
        """The configured method (``kolmogorov_smirnov``, ``psi``, ``chi_square``, ``wasserstein``,
        ``jensen_shannon``, ``auto``, or a streaming one: ``adwin``, ``page_hinkley``, ``kswin``, ``ddm``,
        ``eddm``)."""
        return self.config.detection_method

    @property
    def cooldown(self) -> int:
        """Samples after a feature's alarm before that feature can raise another."""
        return self.config.window_size if self.config.cooldown is None else self.config.cooldown

    def set_reference_distribution(self, data: Any) -> None:
        """Set what "no drift" looks like, and start a new window.

        Args:
            data: a list of numbers, of vectors or of dicts, a 2-D array, a dict of columns, or a pandas
                DataFrame; later samples must have the same layout.

        Raises:
            DriftInputError: the data has fewer than 10 rows, an unsupported layout, or missing values; or
                the method is ``ddm`` or ``eddm`` and a feature is not 0/1 (field ``detection_method``).
        """
        layout, columns, categories = reference_columns(data)
        cfg = self.config
        if cfg.detection_method in STREAMING_METHODS:
            self._streams = FeatureStreams(cfg.detection_method, columns, categories, cfg.detector_params)
            self._reference = None
            self._stream_times: deque[float] = deque(maxlen=cfg.window_size)
            self._restarted = [0] * len(columns)  # samples seen when each feature's detector last restarted
        else:
            self._reference = PreparedReference(columns, categories, cfg.detection_method, cfg.psi_bins)
            self._streams = None
        self._reference_size = len(next(iter(columns.values())))
        self._schema = Schema(layout, list(columns), categories)
        self._buffer = np.zeros((cfg.window_size, len(columns)))
        # Samples wait in a list until the next check, which copies them into the ring buffer at once and
        # works out what the tests need of each (ranks, bins) once per sample.
        self._pending: list[list[float]] = []
        self._pending_times: list[float] = []
        self._encoded = np.zeros((0 if self._reference is None else self._reference.width, cfg.window_size))
        self._times = np.zeros(cfg.window_size)
        self._pos = 0
        self._count = 0
        self._seen = 0
        self._checks = 0
        self._drift_streak = 0
        self._clean_streak = 0
        self._episode: set[str] = set()
        self._alarmed: dict[str, int] = {}  # samples seen at each feature's last alarm
        self._last_results: list[ColumnDrift] = []

    def add_sample(self, sample: Any, *, timestamp: float | None = None) -> DriftReport | None:
        """Add one production sample; with a batch method the window is tested every ``check_every``
        samples, with a streaming method every sample updates every feature's detector.

        Args:
            sample: a number, vector or dict, laid out like the reference.
            timestamp: the sample's unix time (defaults to now).

        Returns:
            A :class:`DriftReport` when this sample raised an alarm, else None.

        Raises:
            DriftInputError: no reference was set, or the sample does not match the reference.
        """
        schema = self._schema
        if schema is None:
            raise DriftInputError(
                "no reference distribution: call set_reference_distribution(training_data) before add_sample",
                field="reference",
            )
        if not self.config.enabled:
            return None
        values = schema.values(sample)
        when = time.time() if timestamp is None else timestamp
        if self._streams is not None:
            return self._stream_update(values, when)
        self._pending.append(values)
        self._pending_times.append(when)
        self._seen += 1
        cfg = self.config
        if len(self._pending) == len(self._times):
            self._flush()
        if self._seen % cfg.check_every or self._count + len(self._pending) < cfg.min_samples:
            return None
        return self._check()

    def _flush(self) -> None:
        """Copy the waiting samples into the ring buffer and encode them for the tests."""
        if not self._pending:
            return
        assert self._reference is not None
        size = len(self._times)
        rows = np.array(self._pending, dtype=float)
        at = (self._pos + np.arange(len(rows))) % size
        self._buffer[at] = rows
        self._encoded[:, at] = self._reference.encode(rows)
        self._times[at] = self._pending_times
        self._pos = int(at[-1] + 1) % size
        self._count = min(self._count + len(rows), size)
        self._pending, self._pending_times = [], []

    def _window(self) -> tuple[np.ndarray, np.ndarray]:
        """The window's encoded samples (one column each) and their times, oldest first."""
        self._flush()
        if self._count < len(self._times):
            return self._encoded[:, : self._count], self._times[: self._count]
        p = self._pos
        return np.concatenate((self._encoded[:, p:], self._encoded[:, :p]), axis=1), np.concatenate(
            (self._times[p:], self._times[:p])
        )

    def _check(self) -> DriftReport | None:
        assert self._reference is not None
        cfg = self.config
        encoded, times = self._window()
        results, length = self._reference.test(
            encoded,
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
            # Recovered once clean checks have covered a whole window: a borderline check does not end it.
            if (
                self._clean_streak * cfg.check_every >= cfg.window_size
                and self._clean_streak >= cfg.persistence
            ):
                self._episode = set()
            return None
        self._drift_streak, self._clean_streak = self._drift_streak + 1, 0
        if self._drift_streak < cfg.persistence or not self._news(drifted):
            return None
        self._episode |= drifted
        hits = [r for r in results if r.drifted]
        top = max(hits, key=lambda r: r.statistic / r.threshold)
        return self._alarm(results, top, length, float(times[-length]), float(times[-1]), cfg.alpha)

    def _news(self, drifted: set[str]) -> bool:
        """Whether a feature drifted outside the drift in progress, and not within the cooldown of its own
        last alarm (a false alarm on one feature must not hide a real change of another)."""
        return any(
            f not in self._episode and self._seen - self._alarmed.get(f, -self.cooldown) >= self.cooldown
            for f in drifted
        )

    def _stream_update(self, values: list[float], when: float) -> DriftReport | None:
        streams = self._streams
        assert streams is not None
        streams.check(values)
        self._seen += 1
        self._checks += 1
        self._stream_times.append(when)
        hits = streams.update(values)
        if self._episode:  # a streaming drift ends when its cooldown does
            self._episode = {f for f in self._episode if self._seen - self._alarmed[f] < self.cooldown}
        if not hits:
            return None
        results = self._stream_results(hits)
        spans = [self._seen - self._restarted[j] for j in hits]
        for j in hits:
            self._restarted[j] = self._seen
        drifted = {streams.names[j] for j in hits}
        if not self._news(drifted):
            return None
        self._episode |= drifted
        top = max((results[j] for j in hits), key=lambda r: r.statistic / r.threshold if r.threshold else 0.0)
        length = min(max(spans), len(self._stream_times))
        times = self._stream_times
        return self._alarm(results, top, length, times[-length], times[-1], None)

    def _alarm(
        self,
        results: list[ColumnDrift],
        top: ColumnDrift,
        length: int,
        window_start: float,
        window_end: float,
        alpha: float | None,
    ) -> DriftReport:
        for r in results:
            if r.drifted:
                self._alarmed[r.feature] = self._seen
        report = DriftReport(
            severity=severity_of(top.statistic, top.threshold),
            method=top.method,
            statistic=top.statistic,
            p_value=top.adjusted_p_value if top.adjusted_p_value is not None else top.p_value,
            threshold=top.threshold,
            alpha=alpha,
            drifted_features=[r.feature for r in results if r.drifted],
            features=results,
            window_size=length,
            samples_seen=self._seen,
            window_start=window_start,
            window_end=window_end,
            detected_at=time.time(),
            detector=self.name,
        )
        self._reports.append(report)
        if self.store is not None:
            self._persist(report)
        return report

    def _persist(self, report: DriftReport) -> None:
        assert self.store is not None
        try:
            self.store.drift.add_event(report.to_row())
        except StoreError:
            # Monitoring must not break the caller: the report is returned and kept in memory regardless.
            log.warning("drift event %s could not be stored", report.event_id, exc_info=True)

    def get_drift_summary(self) -> dict[str, Any]:
        """What the detector knows: its settings, counts, the drift in progress, and the latest results.

        Returns:
            A dict with ``detection_method``, ``threshold``, ``window_size``, ``samples_seen``, ``checks``
            (window tests; with a streaming method, samples fed to the detectors), ``alarms`` (also under the
            reference implementation's name ``total_drifts``), ``in_drift``, ``drifted_features`` (of the drift
            in progress), ``last_report`` (a dict, or None) and ``features`` (each feature's latest statistic,
            p-value and verdict).
        """
        ready = self._schema is not None
        last = self._reports[-1] if self._reports else None
        if not ready:
            fill, features = 0, []
        elif self._streams is not None:
            fill = len(self._stream_times)
            features = [asdict(r) for r in self._stream_results()]
        else:
            fill = min(self._count + len(self._pending), len(self._times))
            features = [asdict(r) for r in self._last_results]
        return {
            "detector": self.name,
            "enabled": self.config.enabled,
            "detection_method": self.detection_method,
            "threshold": self.config.threshold,
            "alpha": self.config.alpha,
            "window_size": self.config.window_size,
            "reference_size": self._reference_size if ready else 0,
            "samples_seen": self._seen if ready else 0,
            "window_fill": fill,
            "checks": self._checks if ready else 0,
            "alarms": len(self._reports),
            "total_drifts": len(self._reports),
            "in_drift": bool(ready and self._episode),
            "drifted_features": sorted(self._episode) if ready else [],
            "last_report": None if last is None else {**asdict(last), "features": None},
            "features": features,
        }

    def _stream_results(self, hits: Sequence[int] = ()) -> list[ColumnDrift]:
        """Each feature's streaming detector as a result: its last statistic, level and p-value."""
        streams = self._streams
        assert streams is not None
        results = []
        for j, name in enumerate(streams.names):
            statistic, level, p_value = streams.evidence(j)
            results.append(ColumnDrift(name, streams.method, statistic, p_value, None, level, j in hits))
        return results
