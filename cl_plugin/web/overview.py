"""The live overview: the report's sections for a window and a graph, kept ready per view.

A view is what the URL's query names (``?window=day&graph=support&point=support/triage/route``). Its
sections are the report's own renderers (:mod:`cl_plugin.report.html`) over a
:class:`~cl_plugin.report.data.ReportData` narrowed to the view. Reading them means one pass over the
window's interactions, which takes seconds on a large store, so :class:`Overview` keeps each view's
rendered sections with the fingerprint of the store they were read from (the number of interactions in the
view and the newest one's time): a request gets the kept sections at once, and when the store has moved on
(or the sections are older than ``max_age``) one background thread per view reads them again, which the
page's script picks up on its next poll. Only the first request of a view waits for its sections, and at
most ``first`` seconds when the app is given that bound: the page then shows that the figures are being
read, and its script swaps them in when they are.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cl_plugin.analysis import FailurePatternAnalyzer
from cl_plugin.errors import ConfigError
from cl_plugin.records import PointRef
from cl_plugin.report import html as page
from cl_plugin.report.data import ReportData, _period
from cl_plugin.store import Store

__all__ = ["OVERVIEW_SECTIONS", "WINDOWS", "Overview", "Rendered", "View"]

log = logging.getLogger("cl_plugin.web")

#: The report's sections the overview shows, in page order (the A/B tests, the queue and the models have
#: pages of their own).
OVERVIEW_SECTIONS = ("summary", "quality", "latency", "agents", "calibration", "points", "failures", "drift")
#: The windows offered; ``all`` is every interaction.
WINDOWS = ("all", "hour", "day", "week")

_RENDER = {
    "summary": page.summary,
    "quality": page.quality,
    "latency": page.latency,
    "agents": page.agents,
    "calibration": page.calibration,
    "points": page.points,
    "failures": page.failures,
    "drift": page.drift_events,
}


@dataclass(frozen=True)
class View:
    """What one overview shows: a window ending now, and optionally one graph and one decision point."""

    window: str = "all"
    graph: str | None = None
    point: str | None = None

    @classmethod
    def from_query(cls, query: Mapping[str, str]) -> View:
        """The view a URL's query names; unknown windows and malformed points raise ConfigError."""
        window = query.get("window") or "all"
        if window not in WINDOWS:
            raise ConfigError(f"window must be one of {', '.join(WINDOWS)} (got {window!r})", key="window")
        point = query.get("point") or None
        if point is not None:
            try:
                PointRef.parse(point)
            except ValueError as exc:
                raise ConfigError(f"point: {exc}", key="point") from None
        return cls(window, query.get("graph") or None, point)

    def span(self, now: float) -> tuple[float | None, float | None]:
        if self.window == "all":
            return None, None
        return now - _period(self.window, "window")[0], None

    def filters(self, now: float) -> dict[str, Any]:
        start, _ = self.span(now)
        out: dict[str, Any] = {"start_time": start} if start is not None else {}
        if self.graph:
            out["graph_name"] = self.graph
        return out

    def query(self) -> dict[str, str]:
        return {k: v for k, v in (("window", self.window), ("graph", self.graph), ("point", self.point)) if v}


@dataclass(frozen=True)
class Rendered:
    """One view's sections as they were read: the fingerprint they match and when."""

    fingerprint: tuple[Any, ...]
    sections: dict[str, str]
    built_at: float
    seconds: float

    @property
    def version(self) -> str:
        """Changes with every read."""
        return f"{self.fingerprint[0]}-{self.built_at:.3f}"


class Overview:
    """The overview's sections per view, read again in the background when the store moves on.

    Args:
        store: the store.
        analyzer: the failure analyzer (its config sets the thresholds).
        max_age: seconds after which a view's sections are read again even if no interaction arrived
            (ratings, labels and A/B results change the figures without adding interactions).
        max_rows: most rows per table.
        min_interval: fewest seconds between two reads of a view, so steady traffic on a large store does
            not keep a core busy re-reading it.
    """

    def __init__(
        self,
        store: Store,
        analyzer: FailurePatternAnalyzer | None = None,
        *,
        max_age: float = 30.0,
        max_rows: int = 20,
        min_interval: float = 2.0,
    ) -> None:
        self.store, self.analyzer = store, analyzer or FailurePatternAnalyzer()
        self.max_age, self.max_rows, self.min_interval = max_age, max_rows, min_interval
        self._kept: dict[View, Rendered] = {}
        self._busy: set[View] = set()
        self._lock = threading.Lock()
        self._done = threading.Condition()

    def fingerprint(self, view: View, now: float | None = None) -> tuple[int, float | None]:
        """The number of interactions in the view and the newest one's time: what a new interaction changes."""
        stats = self.store.statistics(**view.filters(time.time() if now is None else now))
        return stats["total_interactions"], stats["last_timestamp"]

    def count(self, view: View) -> int:
        """Interactions in the view now."""
        return self.store.count_interactions(**view.filters(time.time()))

    def sections(self, view: View, *, wait: bool = False, first: float | None = None) -> Rendered | None:
        """The view's sections: the kept ones when the store has not moved on, else read again in the
        background while the caller gets the kept ones now.

        Args:
            view: the view.
            wait: read them now and wait for them, kept ones or not.
            first: when none are kept yet, the most seconds to wait for the first read (None: until it is
                done); past it the caller gets None and the read goes on in the background.

        Returns:
            The sections, or None when none are kept and the first read took longer than ``first``.
        """
        if wait:
            return self._build(view)
        kept = self._kept.get(view)
        if kept is None:
            if first is None:
                return self._build(view)
            self._start(view)
            with self._done:
                self._done.wait_for(lambda: view in self._kept, timeout=first)
            return self._kept.get(view)
        fresh = time.time() - kept.built_at < self.max_age
        if fresh and self.fingerprint(view) == kept.fingerprint:
            return kept
        if time.time() - kept.built_at >= self.min_interval:
            self._start(view)
        return kept

    def _start(self, view: View) -> None:
        """Read the view again in a thread of its own, unless one is reading it already."""
        with self._lock:
            if view in self._busy:
                return
            self._busy.add(view)
        threading.Thread(target=self._refresh, args=(view,), daemon=True).start()

    def _refresh(self, view: View) -> None:
        try:
            self._build(view)
        except Exception:  # the kept sections stay; the next poll tries again
            log.exception("reading the overview of %s failed", view)
        finally:
            with self._lock:
                self._busy.discard(view)

    def _build(self, view: View) -> Rendered:
        began = time.perf_counter()
        now = time.time()
        fingerprint = self.fingerprint(view, now)
        start, end = view.span(now)
        data = ReportData(
            self.store,
            start,
            end,
            None,
            self.analyzer,
            5000,
            self.max_rows,
            5000,
            {"graph_name": view.graph} if view.graph else None,
        )
        if view.point is not None:
            key = PointRef.parse(view.point).key
            data.points = [m for m in data.points if tuple(m.key) == key]
        sections = {name: _RENDER[name](data) for name in OVERVIEW_SECTIONS}
        rendered = Rendered(fingerprint, sections, now, time.perf_counter() - began)
        with self._done:
            self._kept[view] = rendered
            self._done.notify_all()
        return rendered
