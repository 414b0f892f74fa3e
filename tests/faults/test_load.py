"""Load, quickly: several processes capturing the example graph into one database, and the maintenance
graph running while capture goes on. The long soaks are in tests/bench/bench_soak.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from cl_plugin.graphs.maintenance import register_starting_models, run_maintenance
from cl_plugin.graphs.mcts_agents import build_mcts_agent_graph
from cl_plugin.graphs.traffic import OPS_DRIFT, run_traffic
from sqlalchemy import text

from cl_plugin import CaptureHandler
from cl_plugin.learning.registry import ModelRegistry
from cl_plugin.store import Store
from tests.conftest import SCHEMA_HEAD

# Many processes capturing at once: long-running, so outside the quick loop (-m "not slow").
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]

# One capturing process: serves ``n`` queries through the example graph with a CaptureHandler attached.
CAPTURE = r"""
import json, sys, time
from cl_plugin import CaptureHandler
from cl_plugin.store import Store
from cl_plugin.graphs.mcts_agents import build_mcts_agent_graph
from cl_plugin.graphs.traffic import run_traffic
args = json.loads(sys.argv[1])
time.sleep(max(0.0, args["start_at"] - time.time()))
# Nobody set the database up: every process takes the empty store at once, so their first-use setups race.
handler = CaptureHandler(Store.from_url(args["url"]), journal_dir=args["journal"])
report = run_traffic(build_mcts_agent_graph().compile(), handler, args["n"], seed=args["seed"])
ok = handler.close(timeout=60)
s = handler.writer.stats
print(json.dumps({"closed": ok, "ids": report.interaction_ids, "spilled": s.spilled, "graph_errors": report.errors,
                  "hook_errors": handler.hook_errors, "errors": s.errors, "lost": s.lost,
                  "rejected": s.rejected, "dropped": s.dropped}))
"""


def counts(store: Store) -> dict[str, int]:
    with store.engine.connect() as conn:
        return {
            "interactions": conn.execute(text("SELECT count(*) FROM interactions")).scalar_one(),
            "without_runs": conn.execute(
                text(
                    "SELECT count(*) FROM interactions i WHERE NOT EXISTS "
                    "(SELECT 1 FROM node_runs r WHERE r.interaction_id = i.interaction_id)"
                )
            ).scalar_one(),
        }


@pytest.mark.parametrize(
    "backend, processes", [("sqlite", 4), pytest.param("postgresql", 4, marks=pytest.mark.postgres)]
)
def test_processes_capturing_the_graph_into_one_database_store_every_interaction(
    backend: str, processes: int, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}" if backend == "sqlite" else request.getfixturevalue("pg_url")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    start_at, n = time.time() + 2.0, 30
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                CAPTURE,
                json.dumps(
                    {"url": url, "journal": str(tmp_path / f"j{k}"), "n": n, "seed": k, "start_at": start_at}
                ),
            ],
            env=env,
            cwd=str(ROOT),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for k in range(processes)
    ]
    reports = []
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-3000:]
        reports.append(json.loads(out.strip().splitlines()[-1]))
    expected = set()
    for r in reports:
        assert r["closed"] and r["errors"] == [] and r["graph_errors"] == r["hook_errors"] == 0, r
        assert r["lost"] == r["rejected"] == r["dropped"] == r["spilled"] == 0
        expected.update(r["ids"])
    assert len(expected) == processes * n
    store = Store.from_url(url)
    try:
        assert store.schema_version() == SCHEMA_HEAD
        with store.engine.connect() as conn:
            ids = {row[0] for row in conn.execute(text("SELECT interaction_id FROM interactions"))}
        assert ids == expected
        assert counts(store) == {"interactions": processes * n, "without_runs": 0}
    finally:
        store.close()


def test_the_maintenance_graph_runs_to_the_end_while_capture_goes_on(tmp_path: Path) -> None:
    store = Store.from_url(f"sqlite:///{tmp_path / 'store.db'}").setup()
    registry = ModelRegistry(store, tmp_path / "models" / "artifacts")
    register_starting_models(registry)
    graph = build_mcts_agent_graph(router=registry.watch("router"), rag=registry.watch("rag_index")).compile()
    handler = CaptureHandler(store, journal_dir=tmp_path / "journal")
    before = run_traffic(graph, handler, 300, seed=5, drift=OPS_DRIFT)
    assert handler.flush(timeout=30)

    during: list = []
    live = threading.Thread(
        target=lambda: during.append(run_traffic(graph, handler, 300, seed=6, drift=OPS_DRIFT)), daemon=True
    )
    config = {
        "maintenance": {
            "model_dir": str(tmp_path / "models"),
            "annotation": "feedback",
            "min_interactions": 100,
        },
        "retraining": {"min_new_samples": 50},
        "active_learning": {"budget_per_cycle": 30},
    }
    live.start()
    state = run_maintenance(store, config=config, registry=registry)
    live.join(timeout=300)
    assert not live.is_alive()
    assert handler.close(timeout=30)

    assert state["status"] == "completed", state
    assert {"retrain", "evaluate", "ab_test"} <= set(state["steps"])
    assert state["steps"]["retrain"]["status"] == "completed", state["steps"]["retrain"]
    assert during and during[0].errors == before.errors == 0
    stats = handler.writer.stats
    assert stats.lost == stats.rejected == stats.dropped == stats.invalid == 0 and handler.hook_errors == 0
    store = Store.from_url(store.url)
    try:
        assert counts(store) == {"interactions": 600, "without_runs": 0}
        assert store.count_interactions() == 600
    finally:
        store.close()
