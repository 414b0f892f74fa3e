"""SIGKILL in every phase that writes: a batch commit, a backup append, a retrain's output, a migration.

Each case runs the phase in a child process that kills itself (SIGKILL, no cleanup of any kind) at a chosen
point inside the phase, then checks what a restarted process finds: the store opens and ``setup()``
succeeds, counts add up, no half-written model version is served, backups read up to their last complete
record, and running the same work again completes it. (A maintenance-graph node killed mid-run is covered
by tests/graphs/test_maintenance.py; many writers killed at random moments by tests/store/test_concurrency.py.)
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import text

from cl_plugin.errors import RegistryError
from cl_plugin.modelset import ModelSet
from cl_plugin.registry import ModelRegistry
from cl_plugin.store import Batch, Store
from cl_plugin.store.backup import backup_files, iter_backup, read_backup
from tests.conftest import SCHEMA_HEAD

ROOT = Path(__file__).resolve().parents[2]
T0 = 1_700_000_000.0
NAMES = {"router": "router", "rag_index": "rag_index", "replay": "router-replay"}

# The child: runs one phase, killing itself at ``args["kill"]`` when that is set.
CHILD = r"""
import json, os, signal, sys
args = json.loads(sys.argv[1])
kill = args.get("kill")

def die():
    os.kill(os.getpid(), signal.SIGKILL)

def countdown(n):
    left = [n]
    def tick():
        left[0] -= 1
        return left[0] == 0
    return tick

phase = args["phase"]
if phase in ("batch", "backup"):
    from cl_plugin import ProductionInteraction, ProductionInteractionLogger
    from cl_plugin.store import Store
    from cl_plugin.store.backup import BackupWriter
    if kill and phase == "batch":  # inside the transaction, after the batch's interactions are inserted
        tick, write_table = countdown(kill), Store._write_table
        def _write_table(self, conn, name, rows, result):
            write_table(self, conn, name, rows, result)
            if name == "interactions" and tick():
                die()
        Store._write_table = _write_table
    if kill and phase == "backup":  # half of the batch's gzip member is on disk
        import zlib
        tick, append_lines = countdown(kill), BackupWriter.append_lines
        def torn(self, table, lines, *, fsync=False):
            if table == "interactions" and tick():
                lines = list(lines)
                comp = zlib.compressobj(1, zlib.DEFLATED, 31)
                member = comp.compress(b"\n".join(line for _, line in lines) + b"\n") + comp.flush()
                with open(self.path_for(table, lines[0][0] * 86400), "ab") as f:
                    f.write(member[: len(member) // 2])
                    f.flush()
                    os.fsync(f.fileno())
                die()
            return append_lines(self, table, lines, fsync=fsync)
        BackupWriter.append_lines = torn
    logger = ProductionInteractionLogger({"storage": args["storage"], "database_url": args["url"],
                                         "buffer_size": 200, "flush_interval": 600})
    for i in range(args["n"]):
        logger.log_interaction_sync(ProductionInteraction(
            interaction_id=f"{args['prefix']}-{i:06d}", timestamp=args["t0"] + i * 0.001,
            session_id=f"s{i % 7}", user_query=f"query {i}", response="an answer",
            agent_selected=("HRM", "TRM", "MCTS")[i % 3], user_feedback_score=float(1 + i % 5)))
        if i % 200 == 199:
            logger.flush()
    assert logger.close(timeout=60)
    s = logger.writer.stats
    print(json.dumps({"written": s.written, "unchanged": s.unchanged, "errors": s.errors}))

elif phase == "retrain":
    import cl_plugin.modelset as modelset
    import cl_plugin.registry as registry_module
    from cl_plugin.registry import ModelRegistry
    from cl_plugin.retraining import IncrementalRetrainingPipeline
    from cl_plugin.store import Store
    if kill == "save":  # the output directory is half written
        tick, write = countdown(2), modelset.write_artifact
        def write_artifact(*a, **k):
            out = write(*a, **k)
            if tick():
                die()
            return out
        modelset.write_artifact = write_artifact
    elif kill == "register":  # the router's artifact is on disk, its version row is not
        tick, write = countdown(6), registry_module._write_atomically  # 3 for the directory, then 3
        def _write_atomically(path, data):
            write(path, data)
            if tick():
                die()
        registry_module._write_atomically = _write_atomically
    elif kill == "alias":  # some parts of the set carry the candidate alias, the router does not yet
        set_alias = ModelRegistry.set_alias
        def _set_alias(self, name, alias, *a, **k):
            if name == "router":
                die()
            return set_alias(self, name, alias, *a, **k)
        ModelRegistry.set_alias = _set_alias
    store = Store.from_url(args["url"]).setup()
    registry = ModelRegistry(store, args["artifacts"])
    result = IncrementalRetrainingPipeline({"min_new_samples": 20}, registry=registry).retrain_sync(
        args["rows"], "models/production", args["output"])
    print(json.dumps({"status": result["status"], "error": result.get("error"),
                      "versions": (result.get("candidate") or {}).get("versions")}))

elif phase == "migration":
    from alembic import op
    from cl_plugin.store import Store
    if kill:
        create_table = op.create_table
        def _create_table(name, *a, **k):
            if name == kill:
                die()
            return create_table(name, *a, **k)
        op.create_table = _create_table
    store = Store.from_url(args["url"]).setup()
    print(json.dumps({"version": store.schema_version()}))
"""


def run_child(**args: Any) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    return subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(args)],
        env=env,
        cwd=str(ROOT),
        capture_output=True,
        text=True,
        timeout=300,
    )


def killed(res: subprocess.CompletedProcess) -> None:
    assert res.returncode == -signal.SIGKILL, (
        f"the child was not killed ({res.returncode}):\n{res.stderr[-3000:]}"
    )


def completed(res: subprocess.CompletedProcess) -> dict[str, Any]:
    assert res.returncode == 0, f"the child failed ({res.returncode}):\n{res.stderr[-3000:]}"
    return json.loads(res.stdout.strip().splitlines()[-1])


def url_for(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'store.db'}" if backend == "sqlite" else request.getfixturevalue("pg_url")


BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


def stored_ids(url: str) -> list[str]:
    store = Store.from_url(url)
    try:
        with store.engine.connect() as conn:
            return sorted(r[0] for r in conn.execute(text("SELECT interaction_id FROM interactions")))
    finally:
        store.close()


def reopen(url: str) -> Store:
    """What a restarted app does first; on SQLite, also the file's own integrity check."""
    if url.startswith("sqlite:///"):
        with sqlite3.connect(url[len("sqlite:///") :]) as conn:
            assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    store = Store.from_url(url).setup()
    assert store.schema_version() == SCHEMA_HEAD
    return store


# -- mid-batch ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_sigkill_inside_a_batch_commit_leaves_no_part_of_it_and_a_rerun_completes(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    url, n = url_for(backend, request, tmp_path), 1000
    ids = [f"b-{i:06d}" for i in range(n)]
    args = {"phase": "batch", "url": url, "storage": str(tmp_path / "logs"), "prefix": "b", "n": n, "t0": T0}
    killed(run_child(**args, kill=3))
    stored = stored_ids(url)
    # Items are written in order and batches are atomic: what is stored is exactly the committed batches.
    assert stored == ids[: len(stored)] and 0 < len(stored) < n and len(stored) % 200 == 0
    reopen(url).close()
    rerun = completed(run_child(**args))
    assert rerun["errors"] == [] and rerun["unchanged"] == len(stored) and rerun["written"] == n - len(stored)
    assert stored_ids(url) == ids


# -- mid-backup ---------------------------------------------------------------------------------------


def test_sigkill_mid_backup_append_keeps_every_complete_record_readable_after_later_appends(
    tmp_path: Path,
) -> None:
    url, storage, n = f"sqlite:///{tmp_path / 'store.db'}", tmp_path / "logs", 1000
    args = {"phase": "backup", "url": url, "storage": str(storage), "prefix": "k", "n": n, "t0": T0}
    killed(run_child(**args, kill=3))
    [path] = backup_files(storage / "backups", "interactions")
    torn = read_backup(path)
    assert torn.truncated is True
    first = [r["interaction_id"] for r in torn.records]
    assert first == [f"k-{i:06d}" for i in range(400)]  # the two members before the torn one
    reopen(url).close()
    # The restarted app appends its own members to the same day's file, behind the torn one.
    completed(run_child(**{**args, "prefix": "r", "n": 300}))
    after = read_backup(path)
    assert after.truncated is True  # the damage is still reported ...
    assert [r["interaction_id"] for r in after.records] == first + [f"r-{i:06d}" for i in range(300)]
    assert (
        len(list(iter_backup(storage / "backups", "interactions"))) == 700
    )  # ... and nothing after it is lost


# -- mid-retrain --------------------------------------------------------------------------------------


@pytest.fixture
def production_registry(tmp_path: Path) -> tuple[str, Path]:
    """A SQLite store whose registry serves the example graph's starting set as production (v1)."""
    from graphs.maintenance import register_starting_models

    url, artifacts = f"sqlite:///{tmp_path / 'store.db'}", tmp_path / "artifacts"
    store = Store.from_url(url).setup()
    registry = ModelRegistry(store, artifacts)
    for role, version in register_starting_models(registry).items():
        registry.set_alias(NAMES[role], "candidate", version)  # v1 came in as a candidate, as versions do
    store.close()
    return url, artifacts


def training_rows(n: int) -> list[dict[str, Any]]:
    from graphs.tasks import BEST_AGENT, sample_tasks

    return [
        {
            "interaction_id": f"t-{i}",
            "timestamp": T0 + i,
            "session_id": f"s-{i % 40}",
            "user_query": task.query,
            "response": f"Answer: {task.answer}",
            "agent_selected": "HRM",
            "metadata": {"best_agent": BEST_AGENT[task.family]},
        }
        for i, task in enumerate(sample_tasks(n, seed=4, phrasing="ops"))
    ]


def assert_no_half_written_version_is_served(registry: ModelRegistry) -> None:
    # Artifacts are written (atomically) before their version row: every recorded version loads, verified.
    for name in registry.store.model_names():
        for version in registry.versions(name):
            registry.load(name, version.version)
    assert registry.get_alias("router", "production").version == 1
    registry.load("router", alias="production")
    try:
        candidate = ModelSet.from_registry(registry, names=NAMES, alias="candidate")
    except RegistryError:
        return  # no candidate yet: nothing half-made is offered
    # A candidate, if any, is a whole set: the index and replay versions its router was registered with.
    router = registry.get_alias("router", "candidate")
    assert candidate.info["versions"] == {"router": router.version, **router.metrics["model_set"]}


@pytest.mark.parametrize("kill", ["save", "register", "alias"])
def test_sigkill_mid_retrain_serves_no_half_written_model_and_a_rerun_completes(
    kill: str, production_registry: tuple[str, Path], tmp_path: Path
) -> None:
    url, artifacts = production_registry
    output = tmp_path / "candidate"
    args = {"phase": "retrain", "url": url, "artifacts": str(artifacts), "output": str(output)}
    args["rows"] = training_rows(200)
    killed(run_child(**args, kill=kill))

    store = reopen(url)
    try:
        registry = ModelRegistry(store, artifacts)
        assert_no_half_written_version_is_served(registry)
        latest = {role: registry.versions(name)[-1].version for role, name in NAMES.items()}
        # Where the kill landed: mid-directory, after the index and replay versions, or before the router's alias.
        assert (
            latest
            == {
                "save": {"router": 1, "rag_index": 1, "replay": 1},
                "register": {"router": 1, "rag_index": 2, "replay": 2},
                "alias": {"router": 2, "rag_index": 2, "replay": 2},
            }[kill]
        )
        if kill == "alias":
            assert registry.get_alias("rag_index", "candidate").version == 2
            assert registry.get_alias("router", "candidate").version == 1  # the old set, still whole
        if kill == "save":
            assert not output.exists()  # the directory appears whole or not at all
        else:
            assert ModelSet.load(output).router is not None
        rerun = completed(run_child(**args))
        assert rerun["status"] == "completed", rerun
        assert_no_half_written_version_is_served(registry)
        candidate = ModelSet.from_registry(registry, names=NAMES, alias="candidate")
        assert candidate.info["versions"] == rerun["versions"]
        assert ModelSet.load(output).router.predict(["what is 2 + 2"]).shape == (1,)
    finally:
        store.close()


# -- mid-migration ------------------------------------------------------------------------------------


def store_at(url: str, revision: str) -> Store:
    store = Store.from_url(url)
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(resources.files("cl_plugin.store") / "migrations"))
    with store.engine.connect() as conn, conn.begin():
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)
    return store


@pytest.mark.parametrize("backend", BACKENDS)
def test_sigkill_mid_migration_leaves_the_old_schema_and_its_data_and_setup_completes_it(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    url = url_for(backend, request, tmp_path)
    old = store_at(url, "0001")
    rows = [
        {
            "interaction_id": f"m-{i}",
            "timestamp": T0 + i,
            "session_id": "s",
            "user_query": "q",
            "response": "r",
        }
        for i in range(50)
    ]
    old.write(Batch({"interactions": rows}))
    old.close()
    killed(run_child(phase="migration", url=url, kill="model_versions"))  # inside 0003
    store = Store.from_url(url)
    try:
        assert store.schema_version() == "0001"  # the migrations run in one transaction: all or nothing
        assert store.count_interactions() == 50
    finally:
        store.close()
    assert completed(run_child(phase="migration", url=url)) == {"version": SCHEMA_HEAD}
    store = reopen(url)
    try:
        assert stored_ids(url) == sorted(r["interaction_id"] for r in rows)
    finally:
        store.close()
