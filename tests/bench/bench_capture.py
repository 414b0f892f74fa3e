"""Capture overhead on a graph of 10 trivial nodes, and memory over many invocations.

    python tests/bench/bench_capture.py [--invokes 2000] [--rounds 5] [--memory 100000] [--variants ...]
                                        [--query-chars 0]

Each (variant, round) runs in a fresh subprocess (LangSmith's background threads and the writer thread
must not leak between variants), in shuffled order; a round's value is the median µs per invocation over
``--invokes`` timed invocations after 200 warm-up ones, and each variant's figure is the median over rounds.
Beside the wall time on the caller's thread, each round reports the process's CPU time per invocation
(every thread, from the first timed invocation to the end of the final flush): the writer's work, which
the graph's thread does not wait for but which competes with it for the interpreter and the cores.
Variants, for ``invoke`` and ``ainvoke``: no callbacks; a handler that does nothing (what LangChain's
callback machinery costs any handler); ``CaptureHandler`` into SQLite (``capture``), and the same with
``sample_rate=0.1`` (``capture10``: every run's interaction row, the node runs of a tenth of them);
LangSmith's ``LangChainTracer`` sending to a local LangSmith-speaking server in its own process (for
comparison). ``--variants`` runs a subset (``none`` is always run: the ratios are against it).
``--query-chars N`` makes the query N characters of prose instead of one letter: every node's inputs then
carry it, and capture serialises and redacts it once per node run it keeps.

``--memory N`` then runs N invocations with the handler attached and prints, every N/10 invocations, the
process's heap (anonymous resident memory) and its mapped file pages (SQLite's memory-mapped database,
which the kernel can drop at will), with the handler's in-flight runs and queue length.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

VARIANTS = ("none", "noop", "capture", "capture10", "langsmith")
_SERVE = (
    "import sys\n"
    "from langsmith_server import LangSmithServer\n"
    "s = LangSmithServer().start()\n"
    "print(s.url, flush=True)\n"
    "sys.stdin.read()\n"
    "s.stop()\n"
)


def build_graph():
    from typing import TypedDict

    from langgraph.graph import START, StateGraph

    class State(TypedDict, total=False):
        query: str
        n: int

    g = StateGraph(State)
    names = [f"n{i}" for i in range(10)]
    for name in names:
        g.add_node(name, lambda s: {"n": s.get("n", 0) + 1})
    g.add_edge(START, names[0])
    for a, b in itertools.pairwise(names):
        g.add_edge(a, b)
    return g.compile()


def query_text(chars: int) -> str:
    """``chars`` characters of plain prose (no PII), or "q"."""
    if chars <= 0:
        return "q"
    sentence = "the router sent this question to the search agent because the retrieved context was thin. "
    return (sentence * (chars // len(sentence) + 1))[:chars]


def child(variant: str, mode: str, invokes: int, query_chars: int = 0) -> None:
    """One measurement, in its own process: prints {"median_us": ...} as JSON."""
    import asyncio

    graph = build_graph()
    callbacks: list = []
    server = handler = client = None
    tmp = tempfile.mkdtemp()
    if variant == "noop":
        from langchain_core.callbacks import BaseCallbackHandler

        class Noop(BaseCallbackHandler):
            run_inline = True

        callbacks = [Noop()]
    elif variant in ("capture", "capture10"):
        from cl_plugin import CaptureHandler

        rate = 0.1 if variant == "capture10" else 1.0
        handler = CaptureHandler(f"sqlite:///{tmp}/capture.db", sample_rate=rate)
        callbacks = [handler]
    elif variant == "langsmith":
        import langsmith
        from langchain_core.tracers import LangChainTracer

        # The server runs in its own process, as a real endpoint would, so it does not take this one's GIL.
        server = subprocess.Popen(
            [sys.executable, "-c", _SERVE],
            cwd=ROOT / "tests",
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        url = server.stdout.readline().strip()
        client = langsmith.Client(api_url=url, api_key="fake")
        callbacks = [LangChainTracer(project_name="bench", client=client)]
    config = {"callbacks": callbacks}
    query = query_text(query_chars)
    times: list[float] = []
    cpu = [0.0]

    if mode == "invoke":
        for i in range(200 + invokes):
            if i == 200:
                cpu[0] = time.process_time()
            t = time.perf_counter()
            graph.invoke({"query": query}, config=config)
            if i >= 200:
                times.append(time.perf_counter() - t)
    else:

        async def main() -> None:
            for i in range(200 + invokes):
                if i == 200:
                    cpu[0] = time.process_time()
                t = time.perf_counter()
                await graph.ainvoke({"query": query}, config=config)
                if i >= 200:
                    times.append(time.perf_counter() - t)

        asyncio.run(main())
    extra = {}
    if handler is not None:
        handler.flush()
    extra["cpu_us"] = (time.process_time() - cpu[0]) / invokes * 1e6
    if handler is not None:
        extra |= {
            "rows": handler.store.count_interactions(),
            "dropped": handler.writer.stats.dropped,
            "written": handler.writer.stats.written,
        }
        handler.close()
    print(json.dumps({"median_us": statistics.median(times) * 1e6, **extra}), flush=True)
    if server is not None:
        # Runs still queued would be retried against a stopped server for minutes at exit: leave at once.
        server.kill()
        os._exit(0)


def memory(n: int) -> None:
    """N invocations with the handler; RSS every N/10."""
    from cl_plugin import CaptureHandler

    graph = build_graph()
    tmp = tempfile.mkdtemp()
    handler = CaptureHandler(f"sqlite:///{tmp}/capture.db")
    config = {"callbacks": [handler]}
    step = max(1, n // 10)
    print(f"{'invocations':>12}{'heap MB':>9}{'mapped MB':>11}{'in flight':>11}{'queued':>8}{'rows':>10}")
    for i in range(1, n + 1):
        graph.invoke({"query": f"q{i}"}, config=config)
        if i % step == 0:
            status = dict(
                line.split(":", 1)
                for line in Path("/proc/self/status").read_text().splitlines()
                if ":" in line
            )
            anon, mapped = (int(status[k].split()[0]) / 1024 for k in ("RssAnon", "RssFile"))
            print(
                f"{i:>12}{anon:>9.1f}{mapped:>11.1f}{len(handler.tree.runs):>11}{handler.writer.queue_size:>8}"
                f"{handler.writer.stats.written:>10}",
                flush=True,
            )
    handler.flush()
    print(
        f"stored interactions: {handler.store.count_interactions()}, dropped events: {handler.writer.stats.dropped}"
    )
    handler.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--invokes", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--memory", type=int, default=0)
    ap.add_argument("--query-chars", type=int, default=0)
    ap.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    ap.add_argument("--child", nargs=2, metavar=("VARIANT", "MODE"))
    args = ap.parse_args()
    if args.child:
        child(args.child[0], args.child[1], args.invokes, args.query_chars)
        return
    variants = [v for v in VARIANTS if v == "none" or v in args.variants]
    jobs = [(v, m, r) for v in variants for m in ("invoke", "ainvoke") for r in range(args.rounds)]
    random.Random(0).shuffle(jobs)
    results: dict[tuple[str, str], list[float]] = {}
    cpu: dict[tuple[str, str], list[float]] = {}
    written: dict[str, list[int]] = {}
    for variant, mode, _ in jobs:
        out = subprocess.run(
            [
                sys.executable,
                __file__,
                *("--child", variant, mode),
                *("--invokes", str(args.invokes), "--query-chars", str(args.query_chars)),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        line = json.loads(out.stdout.strip().splitlines()[-1])
        if variant.startswith("capture"):
            assert line["rows"] == 200 + args.invokes and line["dropped"] == 0, line
            written.setdefault(variant, []).append(line["written"])
        results.setdefault((variant, mode), []).append(line["median_us"])
        cpu.setdefault((variant, mode), []).append(line["cpu_us"])
    print(
        f"10 trivial nodes, {args.invokes} timed invocations per round, {args.rounds} rounds (median of medians), "
        f"query of {len(query_text(args.query_chars))} characters"
    )
    print(f"{'mode':<9}{'variant':<12}{'µs/invoke':>10}{'vs none':>9}{'CPU µs':>8}{'vs none':>9}   rounds")
    for mode in ("invoke", "ainvoke"):
        base = statistics.median(results[("none", mode)])
        cpu_base = statistics.median(cpu[("none", mode)])
        for variant in variants:
            vals = results[(variant, mode)]
            med, cpu_med = statistics.median(vals), statistics.median(cpu[(variant, mode)])
            print(
                f"{mode:<9}{variant:<12}{med:>10.0f}{med / base:>8.2f}x{cpu_med:>8.0f}{cpu_med / cpu_base:>8.2f}x"
                f"   {', '.join(f'{v:.0f}' for v in vals)}"
            )
    for variant, counts in written.items():
        print(f"{variant}: {statistics.median(counts):.0f} rows written per {200 + args.invokes} invocations")
    if args.memory:
        print()
        memory(args.memory)


if __name__ == "__main__":
    main()
