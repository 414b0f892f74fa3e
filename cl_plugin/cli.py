"""The ``cl-plugin`` command. Thin: each subcommand calls library functions and prints."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from collections.abc import Sequence

from cl_plugin.logger import ProductionInteractionLogger

STORE_ENV = "CL_PLUGIN_STORE"


def _demo(args: argparse.Namespace) -> int:
    from graphs.traffic import synthetic_interactions

    storage = args.storage or tempfile.mkdtemp(prefix="cl-plugin-demo-")
    logger = ProductionInteractionLogger(
        {"storage": storage, "database_url": args.store, "buffer_size": 1000, "flush_interval": 0.5}
    )

    async def run() -> float:
        start = time.perf_counter()
        for item in synthetic_interactions(args.interactions, seed=args.seed):
            await logger.log_interaction(item)
        logger.flush()
        return time.perf_counter() - start

    elapsed = asyncio.run(run())
    stats = logger.get_statistics()
    failures = logger.query_interactions(max_feedback_score=2.0, limit=3)
    redacted = (
        [
            r["user_query"]
            for chunk in logger.store.iter_interactions(chunk_size=2000)
            for r in chunk
            if "[" in r["user_query"]
        ]
        if logger.store is not None
        else []
    )
    logger.close()
    print(_summary(args.interactions, elapsed, storage, stats))
    print("\nrecent low-rated interactions:")
    for row in failures:
        print(f"  {row['agent_selected']:>5} {row['user_feedback_score']:.0f}*  {row['user_query']}")
    print(f"\nqueries whose PII was redacted before storage: {len(redacted)}, for example:")
    for q in redacted[:3]:
        print(f"  {q}")
    return 0


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def _summary(n: int, elapsed: float, storage: str, s: dict) -> str:
    w = s.get("writer", {})
    agents = ", ".join(f"{a}: {c}" for a, c in s.get("agent_distribution", {}).items())
    score = s.get("avg_feedback_score")
    per_row = w.get("backup_bytes", 0) / max(n, 1)
    return "\n".join(
        [
            f"logged {n} interactions in {elapsed:.2f} s ({n / elapsed:,.0f}/s) into {storage}",
            f"  stored {s.get('total_interactions', 0)} (written {w.get('written', 0)} in {w.get('batches', 0)} batches, "
            f"spilled {w.get('spilled', 0)}, rejected {w.get('rejected', 0)}); gz backup {per_row:.0f} bytes/interaction",
            f"  rated {s.get('rated_interactions', 0)}, mean stars {'n/a' if score is None else f'{score:.2f}'}, "
            f"thumbs up {_pct(s.get('thumbs_up_rate'))}",
            f"  error rate {_pct(s.get('error_rate'))}, hallucination rate {_pct(s.get('hallucination_rate'))}, "
            f"retrieval failures {_pct(s.get('retrieval_failure_rate'))}",
            f"  mean latency {s.get('avg_latency_ms') or 0:.0f} ms; agents: {agents}",
        ]
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cl-plugin", description="Continual learning for LangGraph agents.")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="log a realistic synthetic stream and print statistics")
    demo.add_argument(
        "--store",
        default=os.environ.get(STORE_ENV),
        help=f"database URL (default: ${STORE_ENV}, else SQLite inside --storage)",
    )
    demo.add_argument(
        "--storage", help="folder for the database, backups and journal (default: a new temp dir)"
    )
    demo.add_argument("--interactions", type=int, default=5000, help="how many interactions to log")
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(func=_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
