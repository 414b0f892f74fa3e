"""The ``cl-plugin`` command. Thin: each subcommand calls library functions and prints."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections import Counter
from collections.abc import Sequence

from cl_plugin.capture import CaptureHandler

STORE_ENV = "CL_PLUGIN_STORE"


def _demo(args: argparse.Namespace) -> int:
    from graphs.mcts_agents import build_mcts_agent_graph
    from graphs.traffic import run_traffic

    storage = args.storage or tempfile.mkdtemp(prefix="cl-plugin-demo-")
    os.makedirs(storage, exist_ok=True)
    url = args.store or f"sqlite:///{os.path.abspath(os.path.join(storage, 'interactions.db'))}"
    handler = CaptureHandler(url, journal_dir=os.path.join(storage, "journal"))
    graph = build_mcts_agent_graph().compile()
    report = run_traffic(graph, handler, args.interactions, seed=args.seed)
    handler.flush()
    store = handler.store
    stats = store.statistics()
    decisions = Counter(d["kind"] for d in store.decisions())
    node_runs = Counter(
        r["kind"]
        for row in store.query_interactions(limit=20)
        for r in store.node_runs(row["interaction_id"])
    )
    redacted = [
        r["user_query"]
        for chunk in store.iter_interactions(chunk_size=2000)
        for r in chunk
        if "[" in r["user_query"]
    ]
    failures = store.query_interactions(max_feedback_score=2.0, limit=3)
    handler.close()
    n = report.invocations
    print(f"ran {n} simulated production queries through the multi-agent graph in {report.elapsed_s:.2f} s")
    print(f"  captured into {url}")
    print(
        f"  answers correct: {report.correct}/{n} ({_pct(report.accuracy)}); per family: "
        + ", ".join(f"{f} {c}/{q}" for f, (q, c) in sorted(report.by_family.items()))
    )
    print("  per routed agent: " + ", ".join(f"{a} {c}/{q}" for a, (q, c) in sorted(report.by_agent.items())))
    print(_summary(stats))
    print(f"  decisions: {', '.join(f'{k} {v}' for k, v in sorted(decisions.items()))}")
    print(
        f"  node runs of the last 20 interactions: {', '.join(f'{k} {v}' for k, v in sorted(node_runs.items()))}"
    )
    print(f"  feedback: {report.rated} ratings, {report.corrections} corrections")
    print("\nrecent low-rated interactions:")
    for row in failures:
        print(f"  {row['agent_selected']:>5} {row['user_feedback_score']:.0f}*  {row['user_query'][:100]}")
    print(f"\nqueries whose PII was redacted before storage: {len(redacted)}, for example:")
    for q in redacted[:3]:
        print(f"  {q[:140]}")
    return 0


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def _summary(s: dict) -> str:
    agents = ", ".join(f"{a}: {c}" for a, c in s.get("agent_distribution", {}).items())
    score = s.get("avg_feedback_score")
    return "\n".join(
        [
            f"  stored {s.get('total_interactions', 0)} interactions; rated {s.get('rated_interactions', 0)}, "
            f"mean stars {'n/a' if score is None else f'{score:.2f}'}, thumbs up {_pct(s.get('thumbs_up_rate'))}",
            f"  error rate {_pct(s.get('error_rate'))}, retrieval failures {_pct(s.get('retrieval_failure_rate'))}, "
            f"mean latency {s.get('avg_latency_ms') or 0:.1f} ms; agents: {agents}",
        ]
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cl-plugin", description="Continual learning for LangGraph agents.")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser(
        "demo", help="run simulated production traffic through the example graph with capture on, and report"
    )
    demo.add_argument(
        "--store",
        default=os.environ.get(STORE_ENV),
        help=f"database URL (default: ${STORE_ENV}, else SQLite inside --storage)",
    )
    demo.add_argument("--storage", help="folder for the database and journal (default: a new temp dir)")
    demo.add_argument("--interactions", type=int, default=300, help="how many queries to send")
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(func=_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
