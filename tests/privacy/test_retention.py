"""Retention: a purge removes every expired record derived from interactions, on every backend, the bytes
of purged text leave the SQLite file, and expired backup files are deleted (library, logger and CLI)."""

from __future__ import annotations

import base64
import hashlib
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select, text

from cl_plugin import ProductionInteractionLogger
from cl_plugin.cli import main as cli_main
from cl_plugin.store import Batch, Store
from cl_plugin.store.backup import BackupWriter, backup_files, purge_backups
from cl_plugin.store.tables import ABTestGroup, ABTestRow, DriftEvent, MaintenanceRun

DAY = 86_400.0
NOW = time.time()
OLD, NEW = NOW - 100 * DAY, NOW - DAY
CUTOFF = NOW - 90 * DAY
CANARY = "retention.canary.qzvx@example.org"


def interaction_rows(iid: str, ts: float) -> Batch:
    b = Batch()
    b.add(
        "interactions",
        {
            "interaction_id": iid,
            "timestamp": ts,
            "session_id": "s",
            "user_query": f"q {iid}",
            "response": "r",
        },
    )
    b.add(
        "node_runs",
        {"run_id": f"n-{iid}", "interaction_id": iid, "kind": "node", "start_time": ts, "status": "ok"},
    )
    b.add("decisions", {"decision_id": f"d-{iid}", "interaction_id": iid, "kind": "route", "timestamp": ts})
    b.add(
        "feedback",
        {
            "feedback_id": f"f-{iid}",
            "interaction_id": iid,
            "key": "user_feedback",
            "score": 4.0,
            "source": "user",
            "created_at": ts,
        },
    )
    b.add(
        "interaction_embeddings",
        {"interaction_id": iid, "dim": 2, "vector": "AACAPwAAAEA=", "created_at": ts},
    )
    sha = hashlib.sha256(iid.encode()).hexdigest()
    b.add(
        "attachments",
        {"sha256": sha, "kind": "text", "media_type": "text/plain", "size": len(iid), "created_at": ts}
        | {"content": base64.b64encode(iid.encode()).decode()},
    )
    b.add(
        "feedback_attachments",
        {"feedback_id": f"f-{iid}", "position": 0, "interaction_id": iid, "sha256": sha, "kind": "text"}
        | {"created_at": ts},
    )
    return b


def seed(store: Store) -> None:
    for iid, ts in (("old", OLD), ("new", NEW)):
        store.write(interaction_rows(iid, ts))
        changed = Batch()
        changed.add(
            "interactions",
            {
                "interaction_id": iid,
                "timestamp": ts,
                "session_id": "s",
                "user_query": f"q {iid}",
                "response": "r2",
            },
        )
        store.write(changed)  # a changed repeat: the earlier version goes to interaction_revisions
        store.feedback.record(iid, score=3.0, idempotency_key=f"retry-{iid}")
    with store.engine.begin() as conn:  # the idempotency keys of the seeded feedback are as old as it
        conn.execute(
            text("UPDATE feedback_requests SET created_at = :t WHERE interaction_id = 'old'"), {"t": OLD}
        )
    store.queue.enqueue(
        [
            {"interaction_id": i, "priority": 1.0, "strategy": "t", "selection_reason": "r"}
            for i in ("old", "new")
        ]
    )
    drift = {"detector": "d", "method": "ks", "severity": "high", "statistic": 1.0, "threshold": 0.5}
    drift |= {"features": "[]", "window_size": 10, "samples_seen": 20}
    groups = [
        {"test_id": t, "variant": v, "n": 1, "mean": 1.0, "m2": 0.0, "non_binary": 0, "updated_at": NOW}
        for t in ("ended-old", "running-old", "ended-new")
        for v in ("A", "B")
    ]
    with store.engine.begin() as conn:
        conn.execute(
            DriftEvent.__table__.insert(),
            [
                {**drift, "event_id": "old", "detected_at": OLD},
                {**drift, "event_id": "new", "detected_at": NEW},
            ],
        )
        conn.execute(
            MaintenanceRun.__table__.insert(),
            [
                {"run_id": r, "thread_id": r, "started_at": ts, "updated_at": ts, "status": status}
                for r, ts, status in (
                    ("done-old", OLD, "completed"),
                    ("paused-old", OLD, "running"),
                    ("done-new", NEW, "completed"),
                )
            ],
        )
        conn.execute(
            ABTestRow.__table__.insert(),
            [
                {"test_id": t, "name": t, "model_a": "a", "model_b": "b", "settings": "{}", "status": s}
                | {"created_at": OLD, "ended_at": ended}
                for t, s, ended in (
                    ("ended-old", "completed", OLD),
                    ("running-old", "running", None),
                    ("ended-new", "completed", NEW),
                )
            ],
        )
        conn.execute(ABTestGroup.__table__.insert(), groups)


def remaining(store: Store) -> dict[str, int]:
    tables = (
        "interactions", "node_runs", "decisions", "feedback", "interaction_revisions", "annotation_queue",
        "interaction_embeddings", "drift_events", "maintenance_runs", "ab_tests", "ab_test_groups",
        "attachments", "feedback_attachments", "feedback_requests",
    )  # fmt: skip
    with store.engine.connect() as conn:
        return {t: conn.execute(select(func.count()).select_from(text(t))).scalar_one() for t in tables}


def test_purge_removes_expired_rows_from_every_table_of_interaction_data(store: Store) -> None:
    seed(store)
    before = remaining(store)
    assert before == {
        "interactions": 2, "node_runs": 2, "decisions": 2, "feedback": 4, "interaction_revisions": 2,
        "annotation_queue": 2, "interaction_embeddings": 2, "drift_events": 2, "maintenance_runs": 3,
        "ab_tests": 3, "ab_test_groups": 6, "attachments": 2, "feedback_attachments": 2,
        "feedback_requests": 2,
    }  # fmt: skip

    deleted = store.retention.purge(CUTOFF, batch_size=1)

    assert deleted == {
        "interactions": 1, "node_runs": 1, "decisions": 1, "feedback": 2, "interaction_revisions": 1,
        "annotation_queue": 1, "interaction_embeddings": 1, "drift_events": 1, "maintenance_runs": 1,
        "ab_tests": 1, "ab_test_groups": 2, "attachments": 1, "feedback_attachments": 1,
        "feedback_requests": 1,
    }  # fmt: skip
    assert {t: before[t] - n for t, n in deleted.items()} == remaining(store)
    assert [r["interaction_id"] for r in store.query_interactions()] == ["new"]
    assert [e["event_id"] for e in store.drift.events()] == ["new"]
    assert {t["test_id"] for t in store.ab.list()} == {"running-old", "ended-new"}
    with store.engine.connect() as conn:
        runs = set(conn.execute(select(MaintenanceRun.__table__.c.run_id)).scalars())
    assert runs == {"paused-old", "done-new"}  # a paused run can still resume
    assert store.retention.purge(CUTOFF) == dict.fromkeys(deleted, 0)


def test_purged_text_leaves_the_sqlite_file_without_a_vacuum(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    store = Store.from_url(f"sqlite:///{path}").setup()
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA secure_delete").scalar() == 1
    b = interaction_rows("old", OLD)
    b.tables["interactions"][0]["user_query"] = f"write to {CANARY} " * 20
    store.write(b)
    store.write(interaction_rows("new", NEW))

    def checkpoint() -> bytes:
        with store.engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        wal = path.with_name(path.name + "-wal")
        return path.read_bytes() + (wal.read_bytes() if wal.exists() else b"")

    assert CANARY.encode() in checkpoint()  # the control: the text is in the file before the purge
    assert store.retention.purge(CUTOFF)["interactions"] == 1
    assert CANARY.encode() not in checkpoint()
    assert store.count_interactions() == 1
    store.close()


def write_backups(directory: Path) -> None:
    backup = BackupWriter(directory)
    for ts in (OLD, OLD - DAY, CUTOFF, NEW):
        backup.append("interactions", [{"interaction_id": str(ts), "timestamp": ts}], time_key="timestamp")


def test_purge_backups_deletes_the_files_of_days_that_ended_before_the_cutoff(tmp_path: Path) -> None:
    write_backups(tmp_path)
    assert len(backup_files(tmp_path)) == 4

    deleted = purge_backups(tmp_path, CUTOFF)

    assert sorted(p.name for p in deleted) == sorted(
        BackupWriter(tmp_path).path_for("interactions", ts).name for ts in (OLD, OLD - DAY)
    )
    # The cut-off's own day still holds rows newer than the cut-off, so its file stays.
    assert {p.name for p in backup_files(tmp_path)} == {
        BackupWriter(tmp_path).path_for("interactions", ts).name for ts in (CUTOFF, NEW)
    }
    assert purge_backups(tmp_path / "missing", NOW) == []


def test_the_logger_purges_rows_and_backups_older_than_its_retention(tmp_path: Path) -> None:
    logger = ProductionInteractionLogger(
        {"storage": str(tmp_path)},
        privacy={"retention_days": 30, "anonymize_user_ids": False, "hash_session_ids": False},
    )
    assert logger.store is not None
    logger.store.write(interaction_rows("old", NOW - 40 * DAY))
    logger.store.write(interaction_rows("new", NEW))
    write_backups(tmp_path / "backups")

    deleted = logger.purge_expired()
    logger.close()

    assert deleted["interactions"] == 1 and deleted["backup_files"] == 3
    assert len(backup_files(tmp_path / "backups")) == 1


def test_cli_purge_deletes_expired_backups_when_given_their_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    store = Store.from_url(url).setup()
    store.write(interaction_rows("old", OLD))
    store.close()
    write_backups(tmp_path / "backups")

    assert (
        cli_main(["purge", "--store", url, "--older-than-days", "90", "--backups", str(tmp_path / "backups")])
        == 0
    )

    out = capsys.readouterr().out
    assert "1 from interactions" in out and "deleted 2 backup files" in out
    assert len(backup_files(tmp_path / "backups")) == 2
