"""Drift events: every alarm a drift detector raised, with the window statistics behind it.

:class:`~cl_plugin.drift.DriftDetector` and the maintenance graph's drift step record them, the report and
the CLI read them, as ``store.drift``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from sqlalchemy import Table, select

from cl_plugin.store.engine import insert_for
from cl_plugin.store.tables import DriftEvent

if TYPE_CHECKING:
    from cl_plugin.store.store import Store

__all__ = ["DriftEvents"]

_DRIFT_EVENTS: Table = DriftEvent.__table__  # type: ignore[assignment]


class DriftEvents:
    """The store's ``drift_events`` table.

    Args:
        store: the store that holds the events.
    """

    def __init__(self, store: Store) -> None:
        self._store = store

    def add_event(self, row: Mapping[str, Any]) -> str:
        """Record one drift alarm; recording the same ``event_id`` again is a no-op.

        Args:
            row: the ``drift_events`` columns (``features`` and ``details`` as JSON text), as built by
                :meth:`cl_plugin.drift.DriftReport.to_row`.

        Returns:
            The event id.
        """
        insert = insert_for(self._store.dialect)
        stmt = insert(_DRIFT_EVENTS).values(**row).on_conflict_do_nothing(index_elements=["event_id"])
        with self._store.transaction() as conn:
            conn.execute(stmt)
        return str(row["event_id"])

    def events(
        self, detector: str | None = None, *, since: float | None = None, limit: int | None = None
    ) -> list[dict[str, Any]]:
        """Drift alarms, newest first, as ``drift_events`` rows with ``features`` and ``details`` decoded.

        Args:
            detector: only this detector's alarms.
            since: only alarms raised at or after this unix time.
            limit: at most this many.
        """
        t = _DRIFT_EVENTS
        stmt = select(t).order_by(t.c.detected_at.desc(), t.c.event_id)
        if detector is not None:
            stmt = stmt.where(t.c.detector == detector)
        if since is not None:
            stmt = stmt.where(t.c.detected_at >= since)
        if limit is not None:
            stmt = stmt.limit(limit)
        return self._store.read_rows(stmt, ("features", "details"))
