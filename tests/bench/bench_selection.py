"""Speed of ActiveLearningSelector and how well each strategy finds planted failure themes.

    python tests/bench/bench_selection.py [--runs 5] [--seeds 10] [--sizes 10000 100000]

Speed: ``select_for_annotation`` with budget 50 on rows of :func:`cl_plugin.graphs.failures.planted_failures`, median
(and spread) of ``--runs`` calls after one warm-up call, for every strategy. Beside it, in the same run,
the floor any text-based selector pays: reading the fields (``ProductionInteraction``-free dict reads) and
one ``TfidfVectorizer.fit_transform`` of the same queries. Targets (hybrid): 10k <= 0.3 s, 100k <= 3 s.

Sample efficiency, until a retrainable router exists: 5,000 interactions with 8 planted failure themes and a
5% failure rate; for each budget, the share of the 8 themes that at least one pick belongs to (coverage) and
the share of picks that are failures (precision), mean over ``--seeds`` seeds, for each strategy and for
random picks with the same budget (20 draws per seed). The planted rows carry no routing probabilities, so uncertainty falls
back to ``agent_confidence``.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from cl_plugin.graphs.failures import planted_failures
from sklearn.feature_extraction.text import TfidfVectorizer

from cl_plugin.analysis.selection import ActiveLearningSelector

STRATEGIES = ("hybrid", "failure", "uncertainty", "diversity")
COVERAGE_CONFIGS: tuple[tuple[str, dict], ...] = (
    ("failure", {"selection_strategy": "failure"}),
    ("uncertainty", {"selection_strategy": "uncertainty"}),
    ("diversity", {"selection_strategy": "diversity"}),
    ("hybrid (w=0.3)", {"selection_strategy": "hybrid", "diversity_weight": 0.3}),
    ("hybrid (w=0.6)", {"selection_strategy": "hybrid", "diversity_weight": 0.6}),
)
THEMES = 8
RANDOM_DRAWS = 20  # random picks are cheap: average more of them


def _timed(fn, runs: int) -> list[float]:
    fn()
    out = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def speed_table(sizes: list[int], runs: int) -> list[str]:
    lines = [f"{'interactions':>12} {'what':<28} {'median s':>9} {'min s':>7} {'max s':>7} {'x tfidf':>8}"]
    for n in sizes:
        rows, _ = planted_failures(n, seed=1)
        queries = [r["user_query"] for r in rows]
        floor = statistics.median(
            _timed(lambda q=queries: TfidfVectorizer(max_features=16_384).fit_transform(q), runs)
        )
        reads = _timed(lambda r=rows: [[d.get("user_query") for d in r] for _ in range(13)], runs)
        lines.append(f"{n:>12} {'tfidf fit_transform (floor)':<28} {floor:>9.3f} {'':>7} {'':>7} {1.0:>8.2f}")
        lines.append(
            f"{n:>12} {'13 field reads (floor)':<28} {statistics.median(reads):>9.3f} {min(reads):>7.3f} "
            f"{max(reads):>7.3f} {statistics.median(reads) / floor:>8.2f}"
        )
        for strategy in STRATEGIES:
            selector = ActiveLearningSelector(selection_strategy=strategy)
            times = _timed(lambda s=selector, r=rows: s.select_for_annotation(r, budget=50), runs)
            med = statistics.median(times)
            lines.append(
                f"{n:>12} {strategy + ', budget 50':<28} {med:>9.3f} {min(times):>7.3f} {max(times):>7.3f} "
                f"{med / floor:>8.2f}"
            )
    return lines


def coverage_table(seeds: int, budgets: tuple[int, ...] = (8, 16, 32)) -> list[str]:
    results: dict[tuple[str, int], list[tuple[float, float]]] = {}
    for seed in range(seeds):
        rows, labels = planted_failures(5000, seed=seed, themes=THEMES, failure_rate=0.05)
        label_of = {r["interaction_id"]: label for r, label in zip(rows, labels, strict=True)}

        def score(ids: list[str], label_of: dict = label_of) -> tuple[float, float]:
            found = [label_of[i] for i in ids if label_of[i]]
            return len(set(found)) / THEMES, len(found) / len(ids)

        for budget in budgets:
            ids = [r["interaction_id"] for r in rows]
            for draw in range(RANDOM_DRAWS):
                picked = random.Random(seed * RANDOM_DRAWS + draw).sample(ids, budget)
                results.setdefault(("random", budget), []).append(score(picked))
            for name, config in COVERAGE_CONFIGS:
                candidates = ActiveLearningSelector(config).select_for_annotation(rows, budget=budget)
                results.setdefault((name, budget), []).append(score([c.interaction_id for c in candidates]))
    header = f"{'strategy':<16}" + "".join(f" {'cov@' + str(b):>8} {'prec@' + str(b):>8}" for b in budgets)
    lines = [header]
    for name in ("random", *(n for n, _ in COVERAGE_CONFIGS)):
        cells = []
        for budget in budgets:
            cov = statistics.mean(c for c, _ in results[(name, budget)])
            prec = statistics.mean(p for _, p in results[(name, budget)])
            cells.append(f" {cov:>8.2f} {prec:>8.2f}")
        lines.append(f"{name:<16}" + "".join(cells))
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    args = parser.parse_args()
    print(f"Selection time (median of {args.runs} runs after a warm-up)")
    print("\n".join(speed_table(args.sizes, args.runs)))
    print()
    print(
        f"Planted-theme coverage, 5,000 interactions, {THEMES} themes, 5% failures, mean over {args.seeds} seeds"
    )
    print("\n".join(coverage_table(args.seeds)))


if __name__ == "__main__":
    main()
