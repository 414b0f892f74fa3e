"""Leases and maintenance runs, on every backend."""

from __future__ import annotations

import threading

import pytest

from cl_plugin.store import Store


def test_a_lease_has_one_holder_until_it_expires_or_is_released(store: Store) -> None:
    assert store.runs.acquire_lease("maintenance", "a", 60, now=1000.0)
    assert not store.runs.acquire_lease("maintenance", "b", 60, now=1010.0)
    assert store.runs.acquire_lease("maintenance", "a", 60, now=1020.0)  # renewal
    assert store.runs.lease_holder("maintenance", now=1030.0)["expires_at"] == 1080.0
    assert store.runs.acquire_lease("maintenance", "b", 60, now=1081.0)  # expired: b takes it
    assert not store.runs.release_lease("maintenance", "a")  # a no longer holds it
    assert store.runs.release_lease("maintenance", "b")
    assert store.runs.lease_holder("maintenance") is None
    assert store.runs.acquire_lease("other", "a", 60)  # leases are independent by name


def test_racing_replicas_get_exactly_one_lease(store_url: str) -> None:
    # two Store objects on one database act as two replicas (an in-memory database has one Store only)
    replicas = [Store.from_url(store_url).setup() for _ in range(1 if store_url == "sqlite://" else 2)]
    winners: list[str] = []
    barrier = threading.Barrier(8)

    def race(i: int) -> None:
        barrier.wait()
        if replicas[i % len(replicas)].runs.acquire_lease("race", f"replica-{i}", 60):
            winners.append(f"replica-{i}")

    threads = [threading.Thread(target=race, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(winners) == 1
    for replica in replicas:
        replica.close()


def test_a_run_is_recorded_as_it_progresses(store: Store) -> None:
    store.runs.save({"run_id": "r1", "thread_id": "t1", "steps": {"load_window": {"count": 10}}})
    store.runs.save(
        {
            "run_id": "r1",
            "thread_id": "t1",
            "status": "completed",
            "finished_at": 5.0,
            "steps": {"load_window": {"count": 10}, "report": {}},
            "summary": {"ok": True},
        },
    )
    store.runs.save({"run_id": "r2", "thread_id": "t2"})
    first, second = sorted(store.runs.list(), key=lambda r: r["run_id"])
    assert (first["status"], first["finished_at"], first["summary"]) == ("completed", 5.0, {"ok": True})
    assert list(first["steps"]) == ["load_window", "report"]
    assert second["status"] == "running" and second["steps"] is None


def test_bad_lease_arguments_are_refused(store: Store) -> None:
    with pytest.raises(ValueError, match="ttl_seconds"):
        store.runs.acquire_lease("x", "a", 0)
    with pytest.raises(ValueError, match="name and owner"):
        store.runs.acquire_lease("", "a", 10)
