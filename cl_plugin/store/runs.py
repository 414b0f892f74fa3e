"""Leases and maintenance runs: the store's record of who may run the maintenance graph, and of every run.

Reached as ``store.runs``. A lease is a row (``name``, ``owner``, ``expires_at``): :meth:`Runs.acquire_lease`
takes it when it is free, expired or already the caller's, in one transaction that holds the lease's lock, so
two replicas asking at once cannot both win. Holders renew it by acquiring again and give it back with
:meth:`Runs.release_lease`; a holder that dies stops renewing and the lease frees itself after its time to
live (whoever takes it over then can still see who let it expire: :meth:`Runs.lease_holder` with
``expired=True``).

Maintenance runs are upserted as they progress (:meth:`Runs.save`) so a crashed run shows where it stopped
(and a resumed one can read what its interrupted attempt did, :meth:`Runs.get`), and listed newest first by
:meth:`Runs.list`. A run whose lease was taken over is marked failed (:meth:`Runs.abandon`) instead of
showing ``running`` forever.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import orjson
from sqlalchemy import Table, delete, select, update

from cl_plugin.store.tables import Lease, MaintenanceRun

if TYPE_CHECKING:
    from cl_plugin.store.store import Store

__all__ = ["Runs"]

_LEASES: Table = Lease.__table__  # type: ignore[assignment]
_RUNS: Table = MaintenanceRun.__table__  # type: ignore[assignment]
_JSON_COLUMNS = ("steps", "summary")


class Runs:
    """The store's ``leases`` and ``maintenance_runs`` tables.

    Args:
        store: the store that holds them.
    """

    def __init__(self, store: Store) -> None:
        self._store = store

    def acquire_lease(self, name: str, owner: str, ttl_seconds: float, *, now: float | None = None) -> bool:
        """Take or renew a lease.

        Args:
            name: the lease (e.g. ``"maintenance"``).
            owner: who asks; the same owner renews its own lease.
            ttl_seconds: how long the lease holds without renewal.
            now: the current unix time (tests); the clock by default.

        Returns:
            True if ``owner`` holds the lease now, False if someone else does.

        Raises:
            ValueError: ``ttl_seconds`` is not positive, or ``name`` / ``owner`` is empty.
        """
        if not name or not owner:
            raise ValueError("a lease needs a non-empty name and owner")
        if not ttl_seconds > 0:
            raise ValueError(f"ttl_seconds must be positive (got {ttl_seconds!r})")
        now = time.time() if now is None else now
        with self._store.transaction(f"cl_plugin.lease:{name}") as conn:
            row = conn.execute(select(_LEASES).where(_LEASES.c.name == name)).mappings().first()
            if row is None:
                conn.execute(
                    _LEASES.insert().values(
                        name=name, owner=owner, acquired_at=now, expires_at=now + ttl_seconds
                    )
                )
                return True
            if row["owner"] != owner and row["expires_at"] > now:
                return False
            acquired_at = row["acquired_at"] if row["owner"] == owner else now
            conn.execute(
                update(_LEASES)
                .where(_LEASES.c.name == name)
                .values(owner=owner, acquired_at=acquired_at, expires_at=now + ttl_seconds)
            )
            return True

    def release_lease(self, name: str, owner: str) -> bool:
        """Give a lease back; only its holder can. Returns whether ``owner`` held it."""
        with self._store.transaction(f"cl_plugin.lease:{name}") as conn:
            result = conn.execute(delete(_LEASES).where(_LEASES.c.name == name, _LEASES.c.owner == owner))
            return result.rowcount > 0

    def lease_holder(
        self, name: str, *, now: float | None = None, expired: bool = False
    ) -> dict[str, Any] | None:
        """The current holder of a lease (``owner``, ``acquired_at``, ``expires_at``), or None if it is free.

        With ``expired=True``, also the last holder of a lease that expired without being released (one that
        died or stalled): None then means that the lease was never taken or was given back.
        """
        now = time.time() if now is None else now
        with self._store.read_connection() as conn:
            row = conn.execute(select(_LEASES).where(_LEASES.c.name == name)).mappings().first()
        return dict(row) if row is not None and (expired or row["expires_at"] > now) else None

    def save(self, run: Mapping[str, Any]) -> None:
        """Insert or update one maintenance run.

        Args:
            run: ``run_id`` and ``thread_id`` and any of ``status``, ``steps`` (a JSON-ready dict),
                ``summary`` (a JSON-ready dict), ``error``, ``started_at``, ``finished_at``.
        """
        now = time.time()
        values = {k: v for k, v in run.items() if k in _RUNS.c}
        for column in _JSON_COLUMNS:
            if column in values and values[column] is not None:
                values[column] = orjson.dumps(values[column], option=orjson.OPT_SERIALIZE_NUMPY).decode()
        values["updated_at"] = now
        with self._store.transaction(f"cl_plugin.maintenance_run:{run['run_id']}") as conn:
            exists = conn.execute(select(_RUNS.c.run_id).where(_RUNS.c.run_id == run["run_id"])).first()
            if exists is None:
                conn.execute(_RUNS.insert().values({"started_at": now, "status": "running", **values}))
            else:
                conn.execute(update(_RUNS).where(_RUNS.c.run_id == run["run_id"]).values(values))

    def abandon(self, run_id: str, reason: str) -> bool:
        """Mark a run that is still ``running`` as ``failed`` with ``reason`` as its error: it lost its lease
        and will not go on. Returns whether it was running.
        """
        now = time.time()
        with self._store.transaction(f"cl_plugin.maintenance_run:{run_id}") as conn:
            result = conn.execute(
                update(_RUNS)
                .where(_RUNS.c.run_id == run_id, _RUNS.c.status == "running")
                .values(status="failed", error=reason, finished_at=now, updated_at=now)
            )
            return result.rowcount > 0

    def get(self, run_id: str) -> dict[str, Any] | None:
        """One maintenance run, as :meth:`list` lists it, or None when it was never recorded."""
        found = self._store.read_rows(select(_RUNS).where(_RUNS.c.run_id == run_id), _JSON_COLUMNS)
        return found[0] if found else None

    def list(self, *, limit: int | None = 20) -> list[dict[str, Any]]:
        """Maintenance runs, newest first, with ``steps`` and ``summary`` decoded."""
        stmt = select(_RUNS).order_by(_RUNS.c.started_at.desc())
        if limit is not None:
            stmt = stmt.limit(limit)
        return self._store.read_rows(stmt, _JSON_COLUMNS)
