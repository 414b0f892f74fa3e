"""Many processes, one database; and processes killed with SIGKILL in sync and batch durability."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from cl_plugin.store import Store
from cl_plugin.store.backup import backup_files, iter_backup, read_backup
from tests.conftest import SCHEMA_HEAD

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
T0 = 1_700_000_000.0

# One child process: logs ``n`` interactions through ProductionInteractionLogger into a store nobody set up
# (or only runs setup), and
# after each acknowledged call appends "id<TAB>unix time" to the ack file when one is given.
CHILD = r"""
import json, os, sys, time

args = json.loads(sys.argv[1])
from cl_plugin import ProductionInteraction, ProductionInteractionLogger
from cl_plugin.store import Store

if args.get("start_at"):  # line the processes up so that their setup() calls really race
    time.sleep(max(0.0, args["start_at"] - time.time()))
if args["mode"] == "setup":
    store = Store.from_url(args["url"]).setup()
    print(json.dumps({"version": store.schema_version()}))
    store.close()
    sys.exit(0)

prefix = args["prefix"]
# A store nobody set up: the logger takes it and sets it up, racing with the other processes.
logger = ProductionInteractionLogger(
    {
        "storage": args["storage"],
        "durability": args["durability"],
        "flush_interval": args["flush_interval"],
    },
    store=Store.from_url(args["url"], synchronous="FULL" if args["durability"] == "sync" else "NORMAL"),
)
ack = open(args["ack"], "a") if args.get("ack") else None
rate = args.get("rate")
start = time.monotonic()
for i in range(args["n"]):
    iid = f"{prefix}-{i:06d}"
    logger.log_interaction_sync(ProductionInteraction(
        interaction_id=iid,
        timestamp=args["t0"] + i * 0.001,
        session_id=f"{prefix}-s{i % 97}",
        user_query=f"query {i} from {prefix}" + (" - mail ann.lee@example.com" if i % 50 == 0 else ""),
        response="an answer of a few words",
        agent_selected=("HRM", "TRM", "MCTS")[i % 3],
        user_feedback_score=float(1 + i % 5),
        latency_ms=float(50 + i % 1000),
    ))
    if ack is not None:
        ack.write(f"{iid}\t{time.time():.6f}\n")
        ack.flush()
        if args.get("fsync_ack"):
            os.fsync(ack.fileno())
    if rate:
        delay = start + (i + 1) / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
if args.get("exit_without_close"):
    sys.exit(0)  # the writer must flush at interpreter exit
ok = logger.close(timeout=60)
s = logger.writer.stats
print(json.dumps({"closed": ok, "errors": s.errors, "written": s.written, "spilled": s.spilled,
                  "rejected": s.rejected, "invalid": s.invalid, "dropped": s.dropped}))
"""


def spawn(**args: Any) -> subprocess.Popen:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, json.dumps(args)],
        env=env,
        cwd=str(ROOT),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(procs: list[subprocess.Popen], timeout: float = 120) -> list[dict]:
    reports = []
    for p in procs:
        out, err = p.communicate(timeout=timeout)
        assert p.returncode == 0, f"child failed ({p.returncode}):\n{err[-3000:]}"
        reports.append(json.loads(out.strip().splitlines()[-1]))
    return reports


def sqlite_ids(db: Path) -> set[str]:
    with sqlite3.connect(db) as conn:
        return {r[0] for r in conn.execute("SELECT interaction_id FROM interactions")}


def integrity(db: Path) -> list:
    with sqlite3.connect(db) as conn:
        return conn.execute("PRAGMA integrity_check").fetchall()


def read_acks(path: Path) -> list[tuple[str, float]]:
    acks = []
    for line in path.read_text().splitlines(keepends=True):
        if line.endswith("\n"):  # a line the kill cut short was never complete
            iid, at = line.split("\t")
            acks.append((iid, float(at)))
    return acks


def kill_after(proc: subprocess.Popen, ack: Path, acks_wanted: int, timeout: float = 60) -> float:
    """SIGKILL the child once it has acknowledged ``acks_wanted`` ids; returns the time of the kill."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ack.exists() and ack.read_bytes().count(b"\n") >= acks_wanted:
            break
        assert proc.poll() is None, f"the child ended early:\n{proc.stderr.read()[-3000:]}"
        time.sleep(0.01)
    else:
        proc.kill()
        pytest.fail(f"the child did not acknowledge {acks_wanted} ids in {timeout} s")
    killed_at = time.time()
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    return killed_at


def recover(storage: Path, url: str) -> None:
    """What a restarted app does: open a logger on the same storage, which replays a dead process's journal."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    code = (
        "import sys; from cl_plugin import ProductionInteractionLogger as L; "
        "assert L({'storage': sys.argv[1], 'database_url': sys.argv[2]}).close(timeout=60)"
    )
    subprocess.run(
        [sys.executable, "-c", code, str(storage), url], env=env, cwd=str(ROOT), check=True, timeout=120
    )


# -- many writers -----------------------------------------------------------------------------------------


def test_four_processes_log_into_one_sqlite_file_and_every_row_arrives(tmp_path) -> None:
    db = tmp_path / "shared.db"
    url = f"sqlite:///{db}"
    n, prefixes = 10_000, [f"p{k}" for k in range(4)]
    start_at = time.time() + 1.5
    procs = [
        spawn(
            mode="log",
            url=url,
            storage=str(tmp_path / prefix),
            prefix=prefix,
            n=n,
            t0=T0,
            durability="batch",
            flush_interval=0.2,
            start_at=start_at,
        )
        for prefix in prefixes
    ]
    reports = finish(procs)

    for prefix, report in zip(prefixes, reports, strict=True):
        assert report["closed"] is True
        assert report["errors"] == [], (prefix, report["errors"])
        assert report["written"] == n and report["rejected"] == report["invalid"] == report["dropped"] == 0
    ids = sqlite_ids(db)
    assert ids == {f"{prefix}-{i:06d}" for prefix in prefixes for i in range(n)}
    assert integrity(db) == [("ok",)]
    with sqlite3.connect(db) as conn:  # the processes' first-use setups left the newest schema, once
        assert conn.execute("SELECT version_num FROM alembic_version").fetchall() == [(SCHEMA_HEAD,)]
    for prefix in prefixes:  # each process kept its own backups, complete
        backed_up = Counter(
            r["interaction_id"] for r in iter_backup(tmp_path / prefix / "backups", "interactions")
        )
        assert len(backed_up) == n and set(backed_up.values()) == {1}


@pytest.mark.postgres
def test_eight_processes_log_into_postgresql_racing_on_setup_and_every_row_arrives(
    pg_url: str, tmp_path
) -> None:
    n, prefixes = 10_000, [f"q{k}" for k in range(8)]
    start_at = time.time() + 2.0  # every child's logger sets up the empty schema on first use, at once
    procs = [
        spawn(
            mode="log",
            url=pg_url,
            storage=str(tmp_path / prefix),
            prefix=prefix,
            n=n,
            t0=T0,
            durability="batch",
            flush_interval=0.2,
            start_at=start_at,
        )
        for prefix in prefixes
    ]
    reports = finish(procs, timeout=180)

    for prefix, report in zip(prefixes, reports, strict=True):
        assert report["errors"] == [], (prefix, report["errors"])
        assert report["written"] == n and report["spilled"] == report["rejected"] == 0
    store = Store.from_url(pg_url)
    try:
        assert store.schema_version() == SCHEMA_HEAD
        with store.engine.connect() as conn:
            per_prefix = dict(
                conn.execute(
                    text("SELECT split_part(interaction_id, '-', 1), count(*) FROM interactions GROUP BY 1")
                ).all()
            )
            distinct = conn.execute(
                text("SELECT count(DISTINCT interaction_id) FROM interactions")
            ).scalar_one()
        assert per_prefix == dict.fromkeys(prefixes, n)
        assert distinct == 8 * n
    finally:
        store.close()


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_setup_is_safe_when_many_processes_race_on_an_empty_database(backend: str, request, tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'race.db'}" if backend == "sqlite" else request.getfixturevalue("pg_url")
    start_at = time.time() + 1.5
    reports = finish([spawn(mode="setup", url=url, start_at=start_at) for _ in range(8)])
    assert [r["version"] for r in reports] == [SCHEMA_HEAD] * 8
    store = Store.from_url(url)
    try:
        assert store.schema_version() == SCHEMA_HEAD
        store.setup()  # and once more, now that it exists
        assert store.count_interactions() == 0
    finally:
        store.close()


def test_a_process_that_exits_without_closing_the_logger_still_stores_everything(tmp_path) -> None:
    db = tmp_path / "exit.db"
    proc = spawn(
        mode="log",
        url=f"sqlite:///{db}",
        storage=str(tmp_path / "logs"),
        prefix="exit",
        n=3000,
        t0=T0,
        durability="batch",
        flush_interval=600,
        exit_without_close=True,
    )
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err[-3000:]
    assert sqlite_ids(db) == {f"exit-{i:06d}" for i in range(3000)}


# -- SIGKILL --------------------------------------------------------------------------------------------


def test_sigkill_in_sync_mode_loses_no_acknowledged_interaction(tmp_path) -> None:
    db, storage, ack = tmp_path / "sync.db", tmp_path / "sync-logs", tmp_path / "acks.txt"
    url = f"sqlite:///{db}"
    proc = spawn(
        mode="log",
        url=url,
        storage=str(storage),
        prefix="sync",
        n=1_000_000,
        t0=T0,
        durability="sync",
        flush_interval=1.0,
        ack=str(ack),
        fsync_ack=True,
    )
    kill_after(proc, ack, acks_wanted=300)

    acked = [iid for iid, _ in read_acks(ack)]
    assert len(acked) >= 300
    assert integrity(db) == [("ok",)]
    missing = set(acked) - sqlite_ids(db)
    assert not missing, (
        f"{len(missing)} acknowledged interactions are not in the database: {sorted(missing)[:5]}"
    )
    for path in backup_files(storage / "backups", "interactions"):
        backed_up = {r["interaction_id"] for r in read_backup(path).records}
        assert set(acked) <= backed_up  # sync mode forces the backup to disk before acknowledging too


def test_sigkill_in_batch_mode_never_corrupts_the_database_and_bounds_the_loss(tmp_path) -> None:
    db, storage, ack = tmp_path / "batch.db", tmp_path / "batch-logs", tmp_path / "acks.txt"
    url = f"sqlite:///{db}"
    flush_interval, margin = 0.2, 0.5  # margin: one batch write on a busy machine
    proc = spawn(
        mode="log",
        url=url,
        storage=str(storage),
        prefix="batch",
        n=1_000_000,
        t0=T0,
        durability="batch",
        flush_interval=flush_interval,
        ack=str(ack),
        rate=2000,
    )
    killed_at = kill_after(proc, ack, acks_wanted=3000)

    assert integrity(db) == [("ok",)]
    for path in backup_files(storage / "backups"):
        read_backup(path)  # a torn last member is reported, never an exception
    recover(storage, url)
    assert integrity(db) == [("ok",)]

    acks = read_acks(ack)
    stored = sqlite_ids(db)
    old_enough = [iid for iid, at in acks if at < killed_at - flush_interval - margin]
    lost_at = [at for iid, at in acks if iid not in stored]
    window = killed_at - min(lost_at, default=killed_at)
    print(
        f"\nbatch mode SIGKILL: {len(acks)} acknowledged, {len(lost_at)} lost (the last {window * 1000:.0f} ms)"
    )
    assert len(old_enough) > 1000
    missing_old = set(old_enough) - stored
    assert not missing_old, (
        f"{len(missing_old)} ids acknowledged > {flush_interval + margin} s before the kill are lost"
    )
    assert stored <= {iid for iid, _ in acks} | {f"batch-{len(acks):06d}"}  # nothing invented
