"""Leases and maintenance runs: the store's record of who may run the maintenance graph, and of every run.

A lease is a row (``name``, ``owner``, ``expires_at``): :func:`acquire_lease` takes it when it is free, expired
or already the caller's, in one transaction that holds the lease's lock, so two replicas asking at once
cannot both win. Holders renew it by acquiring again and give it back with :func:`release_lease`; a holder
that dies stops renewing and the lease frees itself after its time to live (whoever takes it over then can
still see who let it expire: :func:`lease_holder` with ``expired=True``).

Maintenance runs are upserted as they progress (:func:`save_maintenance_run`) so a crashed run shows where
it stopped (and a resumed one can read what its interrupted attempt did, :func:`maintenance_run`), and
listed newest first by :func:`maintenance_runs`. A run whose lease was taken over is marked failed
(:func:`abandon_maintenance_run`) instead of showing ``running`` forever.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import orjson
from sqlalchemy import Table, delete, select, update

from cl_plugin.store.store import Store
from cl_plugin.store.tables import Lease, MaintenanceRun

__all__ = [
    "abandon_maintenance_run",
    "acquire_lease",
    "lease_holder",
    "maintenance_run",
    "maintenance_runs",
    "release_lease",
    "save_maintenance_run",
]

_LEASES: Table = Lease.__table__  # type: ignore[assignment]
_RUNS: Table = MaintenanceRun.__table__  # type: ignore[assignment]
_JSON_COLUMNS = ("steps", "summary")


def acquire_lease(
    store: Store, name: str, owner: str, ttl_seconds: float, *, now: float | None = None
) -> bool:
    """Take or renew a lease.

    Args:
        store: the store.
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
    with store.transaction(f"cl_plugin.lease:{name}") as conn:
        row = conn.execute(select(_LEASES).where(_LEASES.c.name == name)).mappings().first()
        if row is None:
            conn.execute(
                _LEASES.insert().values(name=name, owner=owner, acquired_at=now, expires_at=now + ttl_seconds)
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


def release_lease(store: Store, name: str, owner: str) -> bool:
    """Give a lease back; only its holder can. Returns whether ``owner`` held it."""
    with store.transaction(f"cl_plugin.lease:{name}") as conn:
        result = conn.execute(delete(_LEASES).where(_LEASES.c.name == name, _LEASES.c.owner == owner))
        return result.rowcount > 0


def lease_holder(
    store: Store, name: str, *, now: float | None = None, expired: bool = False
) -> dict[str, Any] | None:
    """The current holder of a lease (``owner``, ``acquired_at``, ``expires_at``), or None if it is free.

    With ``expired=True``, also the last holder of a lease that expired without being released (one that
    died or stalled): None then means that the lease was never taken or was given back.
    """
    now = time.time() if now is None else now
    with store.read_connection() as conn:
        row = conn.execute(select(_LEASES).where(_LEASES.c.name == name)).mappings().first()
    return dict(row) if row is not None and (expired or row["expires_at"] > now) else None


def save_maintenance_run(store: Store, run: Mapping[str, Any]) -> None:
    """Insert or update one maintenance run.

    Args:
        store: the store.
        run: ``run_id`` and ``thread_id`` and any of ``status``, ``steps`` (a JSON-ready dict),
            ``summary`` (a JSON-ready dict), ``error``, ``started_at``, ``finished_at``.
    """
    now = time.time()
    values = {k: v for k, v in run.items() if k in _RUNS.c}
    for column in _JSON_COLUMNS:
        if column in values and values[column] is not None:
            values[column] = orjson.dumps(values[column], option=orjson.OPT_SERIALIZE_NUMPY).decode()
    values["updated_at"] = now
    with store.transaction(f"cl_plugin.maintenance_run:{run['run_id']}") as conn:
        exists = conn.execute(select(_RUNS.c.run_id).where(_RUNS.c.run_id == run["run_id"])).first()
        if exists is None:
            conn.execute(_RUNS.insert().values({"started_at": now, "status": "running", **values}))
        else:
            conn.execute(update(_RUNS).where(_RUNS.c.run_id == run["run_id"]).values(values))


def abandon_maintenance_run(store: Store, run_id: str, reason: str) -> bool:
    """Mark a run that is still ``running`` as ``failed`` with ``reason`` as its error: it lost its lease
    and will not go on. Returns whether it was running.
    """
    now = time.time()
    with store.transaction(f"cl_plugin.maintenance_run:{run_id}") as conn:
        result = conn.execute(
            update(_RUNS)
            .where(_RUNS.c.run_id == run_id, _RUNS.c.status == "running")
            .values(status="failed", error=reason, finished_at=now, updated_at=now)
        )
        return result.rowcount > 0


def maintenance_runs(store: Store, *, limit: int | None = 20) -> list[dict[str, Any]]:
    """Maintenance runs, newest first, with ``steps`` and ``summary`` decoded."""
    stmt = select(_RUNS).order_by(_RUNS.c.started_at.desc())
    if limit is not None:
        stmt = stmt.limit(limit)
    return _decoded(store, stmt)


def maintenance_run(store: Store, run_id: str) -> dict[str, Any] | None:
    """One maintenance run, as :func:`maintenance_runs` lists it, or None when it was never recorded."""
    found = _decoded(store, select(_RUNS).where(_RUNS.c.run_id == run_id))
    return found[0] if found else None


def _decoded(store: Store, stmt: Any) -> list[dict[str, Any]]:
    with store.read_connection() as conn:
        rows = [dict(r) for r in conn.execute(stmt).mappings()]
    for row in rows:
        for column in _JSON_COLUMNS:
            row[column] = orjson.loads(row[column]) if row[column] else None
    return rows
