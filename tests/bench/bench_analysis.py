"""Failure analysis at 10k, 100k and 1M interactions, and the clustering's agreement with planted themes.

    python tests/bench/bench_analysis.py [--rounds 3] [--million-rounds 1]

Every measurement runs in a fresh subprocess, so its peak resident memory (``ru_maxrss``) is its own:
  batch   ``FailurePatternAnalyzer().analyze(rows)`` on rows from ``planted_failures`` held in a list (the
          time excludes generating them; the memory includes them);
  stream  ``analyze_stream`` over chunks of 10,000 rows drawn lazily from ``iter_planted_failures`` (the
          time includes generating them, and a generation-only pass is timed beside it).
Each figure is the median over the rounds. Then the adjusted Rand index of the failure clusters against the
planted themes (seed 0), at 3,000 and 100,000 interactions.
"""

from __future__ import annotations

import argparse
import itertools
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from cl_plugin.graphs.failures import iter_planted_failures, planted_failures

from cl_plugin.analysis import FailurePatternAnalyzer
from cl_plugin.analysis.clustering import FailureClusterer

CHUNK = 10_000


def _chunks(n: int) -> object:
    stream = (row for row, _ in iter_planted_failures(n, seed=0))
    while chunk := list(itertools.islice(stream, CHUNK)):
        yield chunk


def child(mode: str, n: int) -> dict[str, float]:
    """One measurement, run inside the subprocess."""
    analyzer = FailurePatternAnalyzer()
    if mode == "batch":
        rows, _ = planted_failures(n, seed=0)
        start = time.perf_counter()
        result = analyzer.analyze(rows)
    elif mode == "stream":
        start = time.perf_counter()
        result = analyzer.analyze_stream(_chunks(n))
    else:
        start = time.perf_counter()
        for _ in _chunks(n):
            pass
        return {"seconds": time.perf_counter() - start, "rss_mb": _rss_mb()}
    seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "rss_mb": _rss_mb(),
        "patterns": len(result.patterns),
        "clusters": len(result.clusters),
        "failures": result.counts["failures"],
    }


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def measure(mode: str, n: int, rounds: int) -> dict[str, float]:
    runs = []
    for _ in range(rounds):
        out = subprocess.run(
            [sys.executable, __file__, "--child", mode, str(n)], check=True, capture_output=True, text=True
        )
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    median = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    median["spread"] = max(r["seconds"] for r in runs) - min(r["seconds"] for r in runs)
    return median


def ari(n: int) -> tuple[float, int, int]:
    from sklearn.metrics import adjusted_rand_score

    rows, labels = planted_failures(n, seed=0)
    pairs = [(r["user_query"], label) for r, label in zip(rows, labels, strict=True) if label]
    model = FailureClusterer().fit([q for q, _ in pairs])
    return adjusted_rand_score([label for _, label in pairs], model.labels_), len(pairs), len(model.clusters_)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--million-rounds", type=int, default=1)
    parser.add_argument("--child", nargs=2, metavar=("MODE", "N"))
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], int(args.child[1]))))
        return
    print(f"{'run':<34}{'median s':>10}{'spread s':>10}{'peak RSS MB':>13}{'patterns':>10}{'clusters':>10}")
    plan = [
        ("batch", 10_000, args.rounds),
        ("batch", 100_000, args.rounds),
        ("generate only", 1_000_000, args.million_rounds),
        ("stream", 1_000_000, args.million_rounds),
    ]
    for mode, n, rounds in plan:
        m = measure(mode.split()[0], n, rounds)
        label = f"{mode} {n:,} (x{rounds})"
        print(
            f"{label:<34}{m['seconds']:>10.2f}{m['spread']:>10.2f}{m['rss_mb']:>13.0f}"
            f"{m.get('patterns', 0):>10.0f}{m.get('clusters', 0):>10.0f}",
            flush=True,
        )
    for n in (3_000, 100_000):
        value, failures, clusters = ari(n)
        print(
            f"ARI vs planted themes, {n:,} interactions ({failures:,} failures, {clusters} clusters): {value:.3f}"
        )


if __name__ == "__main__":
    main()
