"""Soak: many interactions through the logger with peak memory sampled, and many processes on one database.

    python tests/bench/bench_soak.py [--interactions 100000] [--full] [--pg URL] [--skip-processes] [--handler]

1. ``--interactions N`` (``--full``: 1,000,000) interactions through :class:`ProductionInteractionLogger`
   into SQLite as fast as one thread submits them (the example graph answers in ~10 ms, far too slow for
   1M here; tests/faults/test_load.py drives the graph itself). Resident memory is sampled every 50 ms;
   the table shows the rate, the peak RSS and the rows present at the end.
2. 8 processes logging into PostgreSQL and 4 into one SQLite file at once (``--per-process`` each):
   rows present, errors, wall time.
3. ``--handler``: the same number of graph runs through :class:`CaptureHandler`'s hooks (a root run with one
   node run each), with peak memory, interactions and node runs present at the end.
The maintenance graph running while capture goes on is in tests/faults/test_load.py.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

CHILD = r"""
import json, sys, time
from cl_plugin import ProductionInteraction, ProductionInteractionLogger
args = json.loads(sys.argv[1])
time.sleep(max(0.0, args["start_at"] - time.time()))
logger = ProductionInteractionLogger({"storage": args["storage"], "database_url": args["url"], "flush_interval": 0.2})
for i in range(args["n"]):
    logger.log_interaction_sync(ProductionInteraction(
        interaction_id=f"{args['prefix']}-{i:07d}", timestamp=1.7e9 + i * 0.01, session_id=f"s{i % 101}",
        user_query=f"query {i}", response="an answer", agent_selected=("HRM", "TRM", "MCTS")[i % 3]))
ok = logger.close(timeout=300)
s = logger.writer.stats
print(json.dumps({"closed": ok, "written": s.written, "errors": len(s.errors), "lost": s.lost}))
"""


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


class MemorySampler:
    """Samples this process's resident memory every 50 ms, from creation until :meth:`stop`."""

    def __init__(self) -> None:
        self.start_mib = self.peak_mib = rss_mib()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(0.05):
            self.peak_mib = max(self.peak_mib, rss_mib())

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def soak(n: int, directory: Path) -> dict:
    from cl_plugin import ProductionInteraction, ProductionInteractionLogger

    memory = MemorySampler()
    logger = ProductionInteractionLogger({"storage": str(directory / "soak"), "use_sqlite": True})
    t0 = time.perf_counter()
    for i in range(n):
        logger.log_interaction_sync(
            ProductionInteraction(
                interaction_id=f"soak-{i:07d}",
                timestamp=1.7e9 + i * 0.01,
                session_id=f"s{i % 1009}",
                user_query=f"how do I reset order {i}? mail me at user{i % 97}@example.com",
                response="Open settings, then security, then reset.",
                agent_selected=("HRM", "TRM", "MCTS")[i % 3],
                user_feedback_score=float(1 + i % 5),
                latency_ms=float(40 + i % 500),
            )
        )
    submitted = time.perf_counter() - t0
    assert logger.close(timeout=3600)
    total = time.perf_counter() - t0
    memory.stop()
    rows = logger.store.count_interactions()
    s = logger.writer.stats
    return _soak_result(n, submitted, total, memory, rows, lost=s.lost + s.dropped + s.rejected + s.invalid)


def handler_soak(n: int, directory: Path) -> dict:
    """``n`` graph runs through :class:`CaptureHandler`'s hooks: a root run with one node run inside it.

    The hooks receive what LangGraph sends for a one-node graph (root chain start and end with the state,
    a node chain with its ``langgraph_node`` metadata); driving them directly measures capture itself,
    without the ~10 ms the example agents spend answering.
    """
    import uuid

    from cl_plugin import CaptureHandler

    memory = MemorySampler()
    handler = CaptureHandler(f"sqlite:///{directory / 'handler.db'}")
    high_water = handler.writer.max_queue // 2
    t0 = time.perf_counter()
    for i in range(n):
        # a host at the highest rate capture sustains: past half the queue, wait for the writer to drain
        # (hooks never wait: a queue left to overflow drops events, counted, rather than slow the graph)
        while handler.writer.queue_size > high_water:
            time.sleep(0.005)
        root, node = uuid.UUID(int=2 * i + 1), uuid.UUID(int=2 * i + 2)
        state = {"query": f"how do I reset order {i}? mail me at user{i % 97}@example.com"}
        meta = {"user_id": f"u{i % 50}", "session_id": f"s{i % 1009}"}
        handler.on_chain_start({"name": "LangGraph"}, state, run_id=root, parent_run_id=None, metadata=meta)
        handler.on_chain_start(
            {"name": "answer"}, state, run_id=node, parent_run_id=root,
            metadata={**meta, "langgraph_node": "answer", "langgraph_step": 1, "langgraph_triggers": ["start"]},
        )  # fmt: skip
        out = {**state, "response": "Open settings, then security, then reset.", "agent_selected": "HRM"}
        handler.on_chain_end(out, run_id=node, parent_run_id=root)
        handler.on_chain_end(out, run_id=root, parent_run_id=None)
    submitted = time.perf_counter() - t0
    dropped = handler.writer.stats.dropped
    assert handler.close(timeout=3600) is not False
    total = time.perf_counter() - t0
    memory.stop()
    from cl_plugin.store import Store

    store = Store.from_url(f"sqlite:///{directory / 'handler.db'}")
    rows, node_rows = store.count_interactions(), 0
    with store.engine.connect() as conn:
        from sqlalchemy import text

        node_rows = conn.execute(text("SELECT count(*) FROM node_runs")).scalar_one()
    store.close()
    return _soak_result(n, submitted, total, memory, rows, node_rows=node_rows, dropped=dropped)


def _soak_result(
    n: int, submitted: float, total: float, memory: MemorySampler, rows: int, **counts: int
) -> dict:
    """One soak's row of the table: rates over the submit and the whole run, memory, rows and ``counts``."""
    return {
        "interactions": n,
        "submit_per_s": n / submitted,
        "stored_per_s": n / total,
        "rss_start_mib": memory.start_mib,
        "rss_peak_mib": memory.peak_mib,
        "rows": rows,
        **counts,
    }


def processes(url: str, count: int, n: int, directory: Path, prefix: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    start_at = time.time() + 3.0
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                CHILD,
                json.dumps(
                    {
                        "url": url,
                        "storage": str(directory / f"{prefix}{k}"),
                        "prefix": f"{prefix}{k}",
                        "n": n,
                        "start_at": start_at,
                    }
                ),
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for k in range(count)
    ]
    reports = []
    for p in procs:
        out, err = p.communicate(timeout=3600)
        if p.returncode != 0:
            raise SystemExit(f"a writer process failed:\n{err[-3000:]}")
        reports.append(json.loads(out.strip().splitlines()[-1]))
    wall = time.time() - start_at
    from sqlalchemy import text

    from cl_plugin.store import Store

    store = Store.from_url(url)
    with store.engine.connect() as conn:
        rows = conn.execute(
            text("SELECT count(DISTINCT interaction_id) FROM interactions WHERE interaction_id LIKE :p"),
            {"p": f"{prefix}%"},
        ).scalar_one()
    store.close()
    return {
        "processes": count,
        "rows": rows,
        "expected": count * n,
        "errors": sum(r["errors"] + r["lost"] for r in reports),
        "rows_per_s": rows / wall,
        "wall_s": wall,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--interactions", type=int, default=100_000)
    parser.add_argument("--full", action="store_true", help="1,000,000 interactions")
    parser.add_argument("--per-process", type=int, default=20_000)
    parser.add_argument(
        "--pg",
        default=os.environ.get("CL_PLUGIN_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test"),
    )
    parser.add_argument("--skip-processes", action="store_true")
    parser.add_argument(
        "--handler", action="store_true", help="drive CaptureHandler's hooks instead of the logger"
    )
    args = parser.parse_args()
    n = 1_000_000 if args.full else args.interactions
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        if args.handler:
            h = handler_soak(n, directory)
            print("\nCaptureHandler soak (SQLite; a root run and a node run per interaction)")
            print(
                f"{'interactions':>12} {'runs/s':>10} {'stored/s':>10} {'RSS start':>10} {'RSS peak':>10} "
                f"{'rows':>9} {'node rows':>10} {'dropped':>8}"
            )
            print(
                f"{h['interactions']:>12,} {h['submit_per_s']:>10,.0f} {h['stored_per_s']:>10,.0f} "
                f"{h['rss_start_mib']:>8.0f}Mi {h['rss_peak_mib']:>8.0f}Mi {h['rows']:>9,} {h['node_rows']:>10,} "
                f"{h['dropped']:>8}"
            )
            return
        r = soak(n, directory)
        print("\nlogger soak (SQLite, one thread submitting)")
        print(
            f"{'interactions':>12} {'submit/s':>10} {'stored/s':>10} {'RSS start':>10} {'RSS peak':>10} {'rows':>9} {'lost':>5}"
        )
        print(
            f"{r['interactions']:>12,} {r['submit_per_s']:>10,.0f} {r['stored_per_s']:>10,.0f} "
            f"{r['rss_start_mib']:>8.0f}Mi {r['rss_peak_mib']:>8.0f}Mi {r['rows']:>9,} {r['lost']:>5}"
        )
        if args.skip_processes:
            return
        runs = [
            ("sqlite", processes(f"sqlite:///{directory / 'shared.db'}", 4, args.per_process, directory, "s"))
        ]
        try:
            import psycopg

            with psycopg.connect(
                args.pg.replace("postgresql+psycopg://", "postgresql://"), connect_timeout=3
            ):
                pass
            runs.append(
                ("postgresql", processes(args.pg, 8, args.per_process, directory, f"p{os.getpid()}-"))
            )
        except Exception as exc:  # report, do not fail: the SQLite half still ran
            print(f"PostgreSQL skipped: {type(exc).__name__}: {exc}")
        print("\nmany processes, one database")
        print(
            f"{'database':>10} {'procs':>5} {'rows':>9} {'expected':>9} {'errors':>6} {'rows/s':>9} {'wall s':>7}"
        )
        for name, p in runs:
            print(
                f"{name:>10} {p['processes']:>5} {p['rows']:>9,} {p['expected']:>9,} {p['errors']:>6} "
                f"{p['rows_per_s']:>9,.0f} {p['wall_s']:>7.1f}"
            )


if __name__ == "__main__":
    main()
