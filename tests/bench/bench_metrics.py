"""Interaction metrics aggregated in the database against the same metrics computed in Python, side by side.

    python tests/bench/bench_metrics.py [--rows 100000] [--rounds 5] [--url sqlite:///path.db]

On ``--rows`` synthetic interactions (a fresh SQLite file unless ``--url`` names a database to fill):
  (a) ``store_metrics(store)``: SUM/COUNT/CASE aggregation in SQL, latency percentiles from the latency
      column alone (SQLite) or ``percentile_cont`` (PostgreSQL);
  (b) ``interaction_metrics`` over every row of ``store.iter_interactions()``;
  (c) and (d): the same per day (``store_metrics_by_window`` against ``metrics_by_window``).
Then, on SQLite, three ways to get p50/p95/p99 of the latency column: the column unordered and
interpolated in numpy (what ``store_metrics`` does), the column ``ORDER BY``-ed, and one
``ORDER BY ... LIMIT 2 OFFSET k`` query per percentile. Rounds alternate the variants; each figure is
the median over rounds.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from cl_plugin.graphs.traffic import synthetic_interactions

from cl_plugin.analysis.metrics import (
    interaction_metrics,
    metrics_by_window,
    store_metrics,
    store_metrics_by_window,
)
from cl_plugin.privacy import Sanitizer
from cl_plugin.store import Batch, Store
from cl_plugin.store.rows import row_from_interaction


def fill(store: Store, n: int) -> None:
    plain = Sanitizer()
    items = synthetic_interactions(n, seed=7, start_time=1_700_000_000.0)
    rows = [row_from_interaction(i, plain) for i in items]
    for start in range(0, n, 10_000):
        store.write(Batch({"interactions": rows[start : start + 10_000]}))


def python_metrics(store: Store) -> dict[str, Any]:
    return interaction_metrics(chain.from_iterable(store.iter_interactions()))


def python_by_day(store: Store) -> list[dict[str, Any]]:
    return metrics_by_window(chain.from_iterable(store.iter_interactions()), "day")


def percentile_strategies(store: Store) -> dict[str, Callable[[], list[float]]]:
    q = (0.5, 0.95, 0.99)

    def fetch(sql: str) -> np.ndarray:
        with store.engine.connect() as conn:
            return np.array(conn.exec_driver_sql(sql).cursor.fetchall(), dtype=float).reshape(-1)

    def unordered() -> list[float]:
        a = fetch("SELECT latency_ms FROM interactions WHERE latency_ms IS NOT NULL")
        return list(np.percentile(a, [x * 100 for x in q]))

    def ordered() -> list[float]:
        a = fetch("SELECT latency_ms FROM interactions WHERE latency_ms IS NOT NULL ORDER BY latency_ms")
        pos = [x * (len(a) - 1) for x in q]
        return [a[int(p)] + (p - int(p)) * (a[min(int(p) + 1, len(a) - 1)] - a[int(p)]) for p in pos]

    def offsets() -> list[float]:
        out = []
        with store.engine.connect() as conn:
            n = conn.exec_driver_sql("SELECT count(latency_ms) FROM interactions").scalar_one()
            for x in q:
                pos = x * (n - 1)
                sql = (
                    "SELECT latency_ms FROM interactions WHERE latency_ms IS NOT NULL "
                    f"ORDER BY latency_ms LIMIT 2 OFFSET {int(pos)}"
                )
                v = [x for (x,) in conn.exec_driver_sql(sql).fetchall()]
                out.append(v[0] + (pos - int(pos)) * (v[-1] - v[0]))
        return out

    return {
        "pct: unordered + numpy": unordered,
        "pct: ORDER BY fetch": ordered,
        "pct: LIMIT/OFFSET x3": offsets,
    }


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    gc.collect()
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument(
        "--url", default=None, help="an empty database to fill (default: a temporary SQLite file)"
    )
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        store = Store.from_url(args.url or f"sqlite:///{Path(tmp) / 'metrics.db'}").setup()
        if store.count_interactions() == 0:
            fill(store, args.rows)
        n = store.count_interactions()
        print(f"{n} interactions in {store.dialect}; {args.rounds} rounds, medians")

        variants: dict[str, Callable[[], Any]] = {
            "store_metrics (SQL)": lambda: store_metrics(store),
            "interaction_metrics over iter_interactions": lambda: python_metrics(store),
            "store_metrics_by_window day (SQL)": lambda: store_metrics_by_window(store, "day"),
            "metrics_by_window day over iter_interactions": lambda: python_by_day(store),
        }
        if store.dialect == "sqlite":
            variants |= percentile_strategies(store)
        for fn in variants.values():  # warm up: compiled statements, page cache, scipy import
            fn()
        times: dict[str, list[float]] = {name: [] for name in variants}
        results: dict[str, Any] = {}
        for _ in range(args.rounds):
            for name, fn in variants.items():
                elapsed, results[name] = timed(fn)
                times[name].append(elapsed)

        sql, py = results["store_metrics (SQL)"], results["interaction_metrics over iter_interactions"]
        assert sql["latency"] == py["latency"] or store.dialect == "postgresql", (
            sql["latency"],
            py["latency"],
        )
        assert sql["failures"] == py["failures"] and sql["routing"] == py["routing"]
        assert len(results["store_metrics_by_window day (SQL)"]) == len(
            results["metrics_by_window day over iter_interactions"]
        )

        med = {name: statistics.median(t) * 1000 for name, t in times.items()}
        print(f"\n{'variant':<48}{'median ms':>11}{'rows/s':>14}   rounds (ms)")
        for name, ms in med.items():
            rounds = ", ".join(f"{t * 1000:.0f}" for t in times[name])
            print(f"{name:<48}{ms:>11.1f}{n / ms * 1000:>14,.0f}   {rounds}")
        whole = med["interaction_metrics over iter_interactions"] / med["store_metrics (SQL)"]
        daily = med["metrics_by_window day over iter_interactions"] / med["store_metrics_by_window day (SQL)"]
        print(f"\nSQL vs Python: {whole:.1f}x faster overall, {daily:.1f}x per day")
        if store.dialect == "sqlite":
            base = med["pct: unordered + numpy"]
            others = [k for k in med if k.startswith("pct:") and k != "pct: unordered + numpy"]
            print("percentiles: " + ", ".join(f"{k[5:]} {med[k] / base:.1f}x slower" for k in others))
        store.close()


if __name__ == "__main__":
    main()
