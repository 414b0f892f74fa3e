"""SIGKILL in every phase that writes: a batch commit, a backup append, a retrain's output, a migration, a
maintenance step.

Each case runs the phase in a child process that kills itself (SIGKILL, no cleanup of any kind) at a chosen
point inside the phase, then checks what a restarted process finds: the store opens and ``setup()``
succeeds, counts add up, no half-written model version is served, backups read up to their last complete
record, and running the same work again completes it. A maintenance cycle's child instead stops inside a
node and waits for the parent's SIGKILL; resumed on its thread, the cycle must end as an uninterrupted one
does. (Many writers killed at random moments: tests/store/test_concurrency.py.)
"""

from __future__ import annotations

import copy
import json
import os
import shutil
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
from cl_plugin.graphs.maintenance import LEASE, build_maintenance_graph, run_maintenance
from sqlalchemy import text

from cl_plugin.errors import RegistryError
from cl_plugin.learning.modelset import ModelSet
from cl_plugin.learning.registry import ModelRegistry
from cl_plugin.store import Batch, Store
from cl_plugin.store.backup import backup_files, iter_backup, read_backup
from tests.conftest import SCHEMA_HEAD

# Child processes killed mid-phase, then rerun: minutes in all, so outside the quick loop (-m "not slow").
pytestmark = pytest.mark.slow

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
    import cl_plugin.learning.modelset as modelset
    import cl_plugin.learning.registry as registry_module
    from cl_plugin.learning.registry import ModelRegistry
    from cl_plugin.learning.retraining import IncrementalRetrainingPipeline
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
    from cl_plugin.graphs.maintenance import register_starting_models

    url, artifacts = f"sqlite:///{tmp_path / 'store.db'}", tmp_path / "artifacts"
    store = Store.from_url(url).setup()
    registry = ModelRegistry(store, artifacts)
    for role, version in register_starting_models(registry).items():
        registry.set_alias(NAMES[role], "candidate", version)  # v1 came in as a candidate, as versions do
    store.close()
    return url, artifacts


def training_rows(n: int) -> list[dict[str, Any]]:
    from cl_plugin.graphs.tasks import BEST_AGENT, sample_tasks

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
    for name in registry.store.models.names():
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
    # It writes as the cl_plugin of that revision did, whose newest migration it was: without migrating first.
    store._schema_ready = True
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
        with store.engine.connect() as conn:  # (the store's own reads refuse a schema that is behind)
            assert conn.execute(text("SELECT count(*) FROM interactions")).scalar_one() == 50
    finally:
        store.close()
    assert completed(run_child(phase="migration", url=url)) == {"version": SCHEMA_HEAD}
    store = reopen(url)
    try:
        assert stored_ids(url) == sorted(r["interaction_id"] for r in rows)
    finally:
        store.close()


# -- the maintenance graph, killed in each node -------------------------------------------------------

KILL_THREAD = "maintenance-killed"
# Imported once by the forkserver, so that each child starts in milliseconds instead of ten seconds.
_PRELOAD = [
    "cl_plugin.graphs.maintenance",
    "cl_plugin.graphs.mcts_agents",
    "cl_plugin.abtest",
    "cl_plugin.analysis",
    "cl_plugin.drift",
    "cl_plugin.learning.labels",
    "cl_plugin.privacy",
    "cl_plugin.learning.retraining",
    "cl_plugin.analysis.selection",
    "langgraph.checkpoint.sqlite",
    "threadpoolctl",
    __name__,
]


def maintenance_config(root: Path, variant: str) -> dict[str, Any]:
    """The cycle under test. ``ab_test``: the candidate goes to an A/B test; ``promote``: A/B testing is
    off and the candidate is promoted."""
    config: dict[str, Any] = {
        "maintenance": {
            "model_dir": str(root / "models"),
            "annotation": "feedback",
            "min_interactions": 100,
            "min_validation_samples": 5,
        },
        "retraining": {"min_new_samples": 50},
        "active_learning": {"budget_per_cycle": 30},
        "ab_testing": {"min_samples": 100, "traffic_split": 0.5},
    }
    if variant == "promote":
        config["maintenance"]["auto_promote"] = True
        config["retraining"]["enable_ab_test"] = False
    return config


VARIANTS = ("ab_test", "promote")


def maintenance_child(root: str, config: dict[str, Any], stop_at: tuple[str, str] | None, conn: Any) -> None:
    """Run (or resume) the maintenance cycle of thread ``KILL_THREAD`` on ``root``'s SQLite store and
    SQLite checkpointer, and send the nodes that ran and the final state on ``conn``.

    With ``stop_at = (node, stop)`` the child sends ``("stopped", node, stop)`` from inside that node
    instead, and waits there to be killed. ``stop`` is ``recording`` (as the node saves its step to the run
    record: its store writes are committed, the record and the checkpoint are not) or ``returned`` (the
    node has returned: the record is saved, the checkpoint is not).
    """
    import functools
    import threading
    import traceback

    try:
        import cl_plugin.graphs.maintenance as maintenance
        from langgraph.checkpoint.sqlite import SqliteSaver
        from langgraph.graph import StateGraph
        from threadpoolctl import threadpool_limits

        from cl_plugin.store.runs import Runs

        threadpool_limits(1)  # two shared cores: BLAS threads in each child only slow every child down
        node, stop = stop_at or ("", "")
        ran: list[str] = []

        def wait_for_the_kill() -> None:
            conn.send(("stopped", node, stop))
            threading.Event().wait()

        def watched(name: str, action: Any) -> Any:
            @functools.wraps(action)  # keeps the signature, from which LangGraph decides to pass the config
            def run(*args: Any, **kwargs: Any) -> Any:
                ran.append(name)
                update = action(*args, **kwargs)
                if name == node and stop == "returned":
                    wait_for_the_kill()
                return update

            return run

        add_node, save = StateGraph.add_node, Runs.save

        def add_watched_node(self: Any, name: str, action: Any = None, **kwargs: Any) -> Any:
            return add_node(self, name, watched(name, action), **kwargs)

        def save_or_stop(runs: Runs, run: Any) -> None:
            if stop == "recording" and ran and ran[-1] == node:
                wait_for_the_kill()
            save(runs, run)

        StateGraph.add_node = add_watched_node  # type: ignore[method-assign]
        Runs.save = save_or_stop  # type: ignore[method-assign]
        store = Store.from_url(f"sqlite:///{root}/store.db").setup()
        registry = ModelRegistry(store, f"{root}/models/artifacts")
        with SqliteSaver.from_conn_string(f"{root}/checkpoints.db") as saver:
            state = maintenance.run_maintenance(
                store, config=config, registry=registry, checkpointer=saver, thread_id=KILL_THREAD
            )
        store.close()
        conn.send(
            ("done", {"ran": ran, **{k: state.get(k) for k in ("run_id", "status", "reason", "steps")}})
        )
    except BaseException:
        conn.send(("error", traceback.format_exc()))
        raise


def forkserver() -> Any:
    """The forkserver context, its server started (once per test session) importing :data:`_PRELOAD`."""
    import multiprocessing
    import multiprocessing.forkserver

    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(_PRELOAD)  # taken when the server starts
    multiprocessing.forkserver.ensure_running()
    return ctx


def run_cycle(root: Path, config: dict[str, Any], stop_at: tuple[str, str] | None = None) -> dict[str, Any]:
    """Run ``maintenance_child`` in a process forked from a server that has imported everything; with
    ``stop_at``, SIGKILL it once it reports that it stopped there."""
    ctx = forkserver()
    receive, send = ctx.Pipe(duplex=False)
    child = ctx.Process(target=maintenance_child, args=(str(root), config, stop_at, send), daemon=True)
    child.start()
    send.close()
    try:
        assert receive.poll(240), f"the child neither stopped at {stop_at} nor finished in 240 s"
        kind, *message = receive.recv()
    except EOFError:
        child.join(30)
        pytest.fail(f"the child died ({child.exitcode}) without a word; expected it to stop at {stop_at}")
    finally:
        receive.close()
    if stop_at is None:
        child.join(60)
        assert kind == "done" and child.exitcode == 0, message
        return message[0]
    if kind != "stopped":
        child.kill()
        pytest.fail(f"the child did not stop at {stop_at}: {kind} {message}")
    child.kill()
    child.join(30)
    assert child.exitcode == -signal.SIGKILL, child.exitcode
    return {"stopped": stop_at}


@pytest.fixture(scope="module")
def maintenance_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store whose production model set is the starting one, with a finished maintenance cycle over the
    older half of 300 interactions whose A/B test has the results to deploy its candidate; the newer half
    is left for the next cycle."""
    from threadpoolctl import threadpool_limits

    from tests.seeded import captured_store, record_a_winning_candidate

    forkserver()  # its imports overlap with the traffic below
    root = tmp_path_factory.mktemp("maintenance")
    store, registry = captured_store(root, 300)
    times = sorted(r["timestamp"] for r in store.query_interactions(limit=None))
    config = maintenance_config(root, "ab_test")
    with threadpool_limits(1):
        first = run_maintenance(
            store, config=config, registry=registry, thread_id="seeding", clock=lambda: times[149]
        )
    test_id = first["steps"]["ab_test"]["test_id"]
    record_a_winning_candidate(store, config["ab_testing"], test_id)
    store.close()
    return root


def maintenance_outcome(root: Path) -> dict[str, Any]:
    """What a cycle left in the store, without what differs between two identical runs (ids drawn at
    random, times), after checking that nothing in it is duplicated."""
    store = reopen(f"sqlite:///{root / 'store.db'}")
    try:
        registry = ModelRegistry(store, root / "models" / "artifacts")
        queue = store.queue.items()
        tests = store.ab.list()
        names = store.models.names()
        versions = {n: [(v.version, v.parent, v.sha256) for v in registry.versions(n)] for n in names}
        moves = {
            n: [
                (m.alias, m.version, m.previous_version, m.action, m.reason)
                for m in registry.alias_history(n)
            ]
            for n in names
        }
        runs = store.runs.list(limit=None)
        lease = store.runs.lease_holder(LEASE)
    finally:
        store.close()
    assert len({i["interaction_id"] for i in queue}) == len(queue), "an interaction was queued twice"
    running = [t["name"] for t in tests if t["status"] == "running"]
    assert len(set(running)) == len(running), f"two A/B tests of one name run at once: {running}"
    for name, rows in versions.items():  # (a retrain is not byte for byte repeatable: compare no digests)
        digests = [sha for _, _, sha in rows]
        assert len(set(digests)) == len(digests), f"model {name!r} has one artifact twice: {rows}"
    [run] = [r for r in runs if r["run_id"] == KILL_THREAD]
    return {
        "queue": sorted(
            (i["interaction_id"], i["status"], json.dumps(i["label"]), i["annotator"]) for i in queue
        ),
        "ab_tests": sorted(
            (t["name"], t["model_a"], t["model_b"], t["status"], (t["result"] or {}).get("recommendation"))
            for t in tests
        ),
        "versions": {n: [row[:2] for row in rows] for n, rows in versions.items()},
        "alias_moves": moves,
        "runs": sorted((r["run_id"], r["status"]) for r in runs),
        "lease": lease,
        "record": {"status": run["status"], "steps": stable(run["steps"])},
        "running_test_ids": [t["test_id"] for t in tests if t["status"] == "running"],
    }


def stable(steps: dict[str, Any]) -> dict[str, Any]:
    """Step reports without timings, random test ids and the clock-bound window edges."""

    def strip(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k not in ("seconds", "duration_s", "test_id")}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value

    out = strip(steps)
    if "load_window" in out:
        out["load_window"] = {k: v for k, v in out["load_window"].items() if k not in ("start", "end")}
    return out


@pytest.fixture(scope="module")
def maintenance_references(
    maintenance_template: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, dict[str, Any]]:
    """An uninterrupted cycle of each variant on a copy of the template: the nodes it ran, its final
    state and its outcome."""
    references = {}
    for variant in VARIANTS:
        root = tmp_path_factory.mktemp(f"reference-{variant}")
        shutil.copytree(maintenance_template, root, dirs_exist_ok=True)
        state = run_cycle(root, maintenance_config(root, variant))
        assert state["status"] == "completed", state
        # the cycle does everything there is to do: concludes the A/B test, retrains, ships the candidate
        [review] = state["steps"]["review_ab_tests"]["tests"]
        assert review["recommendation"] == "Deploy B" and review["promoted"]
        assert state["steps"]["evaluate"]["passed"], state["steps"]["evaluate"]
        assert variant in state["steps"], state["steps"]
        references[variant] = {"state": state, "outcome": maintenance_outcome(root)}
    return references


def maintenance_nodes() -> list[str]:
    store = Store.from_url("sqlite://").setup()
    try:
        graph = build_maintenance_graph(store, config=maintenance_config(Path("unused"), "ab_test"))
        return [name for name in graph.compile().nodes if not name.startswith("__")]
    finally:
        store.close()


@pytest.mark.parametrize("node", maintenance_nodes())
def test_sigkill_inside_any_maintenance_node_resumes_to_the_uninterrupted_outcome(
    node: str,
    maintenance_template: Path,
    maintenance_references: dict[str, dict[str, Any]],
    tmp_path: Path,
) -> None:
    variant = next((v for v in VARIANTS if node in maintenance_references[v]["state"]["ran"]), None)
    assert variant, f"no reference cycle runs node {node!r}: add a variant of maintenance_config that does"
    reference = maintenance_references[variant]
    shutil.copytree(maintenance_template, tmp_path, dirs_exist_ok=True)
    config = maintenance_config(tmp_path, variant)
    url = f"sqlite:///{tmp_path / 'store.db'}"

    run_cycle(tmp_path, config, stop_at=(node, "recording"))
    store = reopen(url)
    try:
        # The dead run's lease holds until it expires: a new run now is skipped and records nothing ...
        assert store.runs.lease_holder(LEASE)["owner"] == KILL_THREAD
        before = store.runs.list(limit=None)
        other = run_maintenance(
            store, config=config, registry=ModelRegistry(store, tmp_path / "models" / "artifacts")
        )
        assert other["status"] == "skipped" and other["reason"] == "another run holds the lease"
        assert store.runs.list(limit=None) == before
    finally:
        store.close()
    # ... while the dead run itself, resumed on its thread, takes its lease back: killed again in the
    # same node (after it returned this time), then resumed to the end.
    run_cycle(tmp_path, config, stop_at=(node, "returned"))
    state = run_cycle(tmp_path, config)

    expected = copy.deepcopy(reference["outcome"])
    outcome = maintenance_outcome(tmp_path)
    assert state["status"] == reference["state"]["status"]
    assert state["ran"][0] == node  # it resumed in the node it was killed in
    assert outcome["lease"] is None  # given back at the end
    assert stable(state["steps"]) == outcome["record"]["steps"]
    if "ab_test" in state["steps"] and "test_id" in state["steps"]["ab_test"]:
        assert outcome["running_test_ids"] == [state["steps"]["ab_test"]["test_id"]]
    retrain = outcome["record"]["steps"].get("retrain") or {}
    if "recovered" in retrain:  # a candidate registered before the kill: the training report died with it
        assert node == "retrain", retrain
        kept = ("status", "reason", "metrics", "versions", "production")
        for steps in (outcome["record"]["steps"], expected["record"]["steps"]):
            steps["retrain"] = {k: steps["retrain"][k] for k in kept}
    keys = ("queue", "ab_tests", "versions", "alias_moves", "runs", "record")
    assert {k: outcome[k] for k in keys if outcome[k] != expected[k]} == {
        k: expected[k] for k in keys if outcome[k] != expected[k]
    }


def test_a_killed_runs_lease_is_taken_over_once_it_expires_and_the_dead_run_stays_stopped(
    maintenance_template: Path, tmp_path: Path
) -> None:
    from cl_plugin.graphs.maintenance import LeaseLostError
    from langgraph.checkpoint.sqlite import SqliteSaver
    from threadpoolctl import threadpool_limits

    shutil.copytree(maintenance_template, tmp_path, dirs_exist_ok=True)
    config = maintenance_config(tmp_path, "ab_test")
    ttl = config["maintenance"]["lease_ttl_seconds"] = 600.0
    run_cycle(tmp_path, config, stop_at=("select", "recording"))
    store = reopen(f"sqlite:///{tmp_path / 'store.db'}")
    try:
        registry = ModelRegistry(store, tmp_path / "models" / "artifacts")
        dead = store.runs.lease_holder(LEASE)
        assert dead["owner"] == KILL_THREAD
        with threadpool_limits(1):  # once the dead run's lease has expired, a new run takes it over
            later = dead["expires_at"] + 1.0
            taker = run_maintenance(store, config=config, registry=registry, clock=lambda: later)
        assert taker["status"] == "completed", taker.get("reason")
        assert store.runs.lease_holder(LEASE, now=later) is None
        runs = {r["run_id"]: r for r in store.runs.list(limit=None)}
        assert runs[taker["run_id"]]["status"] == "completed"
        # The dead run's record says it is over, not "running" forever ...
        assert runs[KILL_THREAD]["status"] == "failed"
        assert taker["run_id"] in runs[KILL_THREAD]["error"]
        versions = {name: len(registry.versions(name)) for name in store.models.names()}
        queued = len(store.queue.items())
        # ... and resumed on its thread, it stops instead of training a second candidate on the same window.
        with (
            SqliteSaver.from_conn_string(str(tmp_path / "checkpoints.db")) as saver,
            pytest.raises(LeaseLostError, match=taker["run_id"]),
        ):
            run_maintenance(
                store, config=config, registry=registry, checkpointer=saver, thread_id=KILL_THREAD,
                clock=lambda: later + ttl,
            )  # fmt: skip
        assert {name: len(registry.versions(name)) for name in store.models.names()} == versions
        assert len(store.queue.items()) == queued
        assert store.runs.lease_holder(LEASE, now=later + ttl) is None  # it did not take the free lease
    finally:
        store.close()
