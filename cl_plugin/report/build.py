"""One self-contained HTML report of what the store holds.

:func:`build_report` writes a single HTML file with inline CSS and inline SVG plots (no script, no network):
satisfaction and failure rates over time, the latency distribution, the agent mix over time with drift
alarms marked, the router's reliability diagram, each decision point's figures, A/B test estimates, and tables of failure patterns, the
annotation queue, model versions and drift events. Every number comes from the store, read by :class:`~cl_plugin.report.data.ReportData`; memory does not grow
with the store.

The store holds redacted text only; every string the report writes goes through the PII redactor anyway,
so the rule that PII never reaches a report holds even for text stored unredacted (a selection reason, a
model's notes) and for text the report composes.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from cl_plugin.analysis import FailurePatternAnalyzer
from cl_plugin.analysis.metrics.measures import Window
from cl_plugin.errors import ConfigError
from cl_plugin.report import html as page
from cl_plugin.report.data import ReportData, _period
from cl_plugin.report.html import MIN_LABELED, SECTIONS
from cl_plugin.store import Store

__all__ = ["MIN_LABELED", "SECTIONS", "build_report"]


def build_report(
    store: Store | str,
    path: str | os.PathLike[str],
    *,
    window: Window | None = None,
    end_time: float | None = None,
    bucket: Window | None = None,
    analyzer: FailurePatternAnalyzer | None = None,
    title: str = "cl_plugin report",
    max_points: int = 5000,
    max_rows: int = 20,
    chunk_size: int = 5000,
) -> Path:
    """Write one self-contained HTML report of the store.

    Args:
        store: a set-up :class:`~cl_plugin.store.Store`, or a store URL (opened, set up and closed here).
        path: the HTML file to write (its directory is created; the file is replaced atomically).
        window: the period covered: ``"hour"``, ``"day"``, ``"week"`` or seconds, ending at ``end_time``;
            None covers every interaction up to ``end_time``.
        end_time: end of the period (unix time, excluded); default now when ``window`` is given, else open.
        bucket: width of the time buckets of the plots over time (same values as ``window``); None picks
            one that gives at most 48 buckets.
        analyzer: the failure analyzer (its config sets the thresholds); None uses the defaults.
        title: the page title.
        max_points: most latencies drawn in the histogram and labeled annotations read for calibration.
        max_rows: most rows per table.
        chunk_size: interactions per read of the scan.

    Returns:
        The path of the written file.

    Raises:
        ConfigError: ``window`` or ``bucket`` is not a known period, or a limit is below 1.
    """
    for key, value in (("max_points", max_points), ("max_rows", max_rows), ("chunk_size", chunk_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{key} must be an integer >= 1 (got {value!r})", key=key)
    if isinstance(store, str):
        with _opened(store) as opened:
            return build_report(
                opened,
                path,
                window=window,
                end_time=end_time,
                bucket=bucket,
                analyzer=analyzer,
                title=title,
                max_points=max_points,
                max_rows=max_rows,
                chunk_size=chunk_size,
            )
    start = None
    if window is not None:
        end_time = time.time() if end_time is None else end_time
        start = end_time - _period(window, "window")[0]
    report = ReportData(
        store, start, end_time, bucket, analyzer or FailurePatternAnalyzer(), max_points, max_rows, chunk_size
    )
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.partial")
    partial.write_text(_render(report, title), encoding="utf-8")
    partial.replace(target)
    return target


class _opened:
    """A store opened from a URL for one report, closed afterwards."""

    def __init__(self, url: str) -> None:
        self.store = Store.from_url(url)

    def __enter__(self) -> Store:
        return self.store  # a report only reads: a database that is behind raises with the fix

    def __exit__(self, *exc: object) -> None:
        self.store.close()


def _render(data: ReportData, title: str) -> str:
    bodies = {
        "summary": page.summary(data),
        "quality": page.quality(data),
        "latency": page.latency(data),
        "agents": page.agents(data),
        "calibration": page.calibration(data),
        "points": page.points(data),
        "abtests": page.abtests(data),
        "failures": page.failures(data),
        "queue": page.queue(data),
        "models": page.models(data),
        "drift": page.drift_events(data),
    }
    return page.document(data, title, bodies)
