"""A/B testing: false positives under continuous monitoring, power at the planned effect, and throughput.

    python tests/bench/bench_abtest.py [--experiments 500] [--horizon 10000] [--pg-url URL]

1. A/A tests (no true difference) through :class:`ABTestFramework`, read after every 100 results up to
   ``--horizon`` results: how many ever recommend "Deploy B" or "Keep A" on significance (the always-valid
   test; 5% allowed), beside how many a fixed-horizon test read the same way would have called, and how
   many raised a sample-ratio-mismatch alert. A continuous metric with a 50/50 split and a binary one with
   the spec's 10% split.
2. A true effect of the planned size, run to :func:`required_sample_size` results and read after every 100:
   how many reach "Deploy B" (80% wanted), beside the fixed-horizon test read once at the end.
3. Throughput of ``assign_group`` (one call per id, and ``assign_groups``), and of ``record_result`` in
   memory, on a SQLite file (buffered, and with ``durability="sync"``: one transaction per result), and on
   PostgreSQL when ``--pg-url`` is given. Figures are the median of ``--rounds`` rounds.

Everything is seeded; the figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from cl_plugin.abtest import ABTestFramework, required_sample_size
from cl_plugin.store import Store

WINS = {"Deploy B", "Keep A"}


Draw = Callable[[np.random.Generator, np.ndarray], np.ndarray]


def run_experiment(
    rng: np.random.Generator, horizon: int, split: float, draw: Draw
) -> tuple[set[str], bool, bool, bool]:
    """One test read every 100 results: recommendations seen, whether the fixed-horizon p-value was ever
    below 0.05, whether it is at the end, and whether an SRM alert was raised."""
    fw = ABTestFramework(traffic_split=split, min_samples=100)
    tid = fw.create_test("sim", model_a="production", model_b="candidate")
    in_b = rng.random(horizon) < split
    metric = draw(rng, in_b)
    groups = np.where(in_b, "B", "A")
    seen: set[str] = set()
    fixed_ever = srm = False
    status: dict = {}
    for i in range(horizon):
        fw.record_result(tid, groups[i], metric=float(metric[i]))
        if (i + 1) % 100 == 0 or i + 1 == horizon:
            status = fw.get_test_status(tid)
            if "sample ratio" not in status["reason"]:
                seen.add(status["recommendation"])
            srm |= status["sample_ratio"]["alert"]
            if status["fixed_horizon"] is not None:
                fixed_ever |= status["fixed_horizon"]["p_value"] < 0.05
    fixed_end = status["fixed_horizon"] is not None and status["fixed_horizon"]["p_value"] < 0.05
    return seen, fixed_ever, fixed_end, srm


def false_positives(experiments: int, horizon: int) -> None:
    print(f"\nA/A tests: {experiments} experiments, read every 100 results up to {horizon}, alpha 0.05")
    print(f"{'metric':<34}{'sequential':>12}{'fixed, peeking':>16}{'SRM alerts':>12}{'seconds':>9}")
    cases = {
        "continuous N(0,1), split 0.5": (0.5, lambda rng, b: rng.normal(0.0, 1.0, len(b))),
        "binary p=0.3, split 0.1": (0.1, lambda rng, b: (rng.random(len(b)) < 0.3).astype(float)),
    }
    for label, (split, draw) in cases.items():
        rng = np.random.default_rng(20240)
        start = time.perf_counter()
        runs = [run_experiment(rng, horizon, split, draw) for _ in range(experiments)]
        seq = sum(bool(r[0] & WINS) for r in runs) / experiments
        peek = sum(r[1] for r in runs) / experiments
        srm = sum(r[3] for r in runs) / experiments
        print(f"{label:<34}{seq:>12.1%}{peek:>16.1%}{srm:>12.1%}{time.perf_counter() - start:>9.1f}")


def power(experiments: int) -> None:
    print(f"\nTrue effect of the planned size: {experiments} experiments, read every 100 results")
    print(f"{'metric':<42}{'planned n':>10}{'Deploy B':>10}{'Keep A':>8}{'fixed, at n':>13}")
    cases = {
        "continuous +0.1 sd, split 0.5": (
            0.1,
            1.0,
            1.0,
            0.5,
            lambda rng, b: rng.normal(0.0, 1.0, len(b)) + 0.1 * b,
        ),
        "binary 0.30 -> 0.35, split 0.5": (
            0.05,
            np.sqrt(0.3 * 0.7),
            np.sqrt(0.35 * 0.65),
            0.5,
            lambda rng, b: (rng.random(len(b)) < 0.3 + 0.05 * b).astype(float),
        ),
    }
    for label, (effect, sd_a, sd_b, split, draw) in cases.items():
        n = required_sample_size(effect, sd_a, sd_b, b_share=split, alpha=0.05, power=0.8)
        rng = np.random.default_rng(7)
        runs = [run_experiment(rng, n, split, draw) for _ in range(experiments)]
        deploy = sum("Deploy B" in r[0] for r in runs) / experiments
        keep = sum("Keep A" in r[0] for r in runs) / experiments
        fixed = sum(r[2] for r in runs) / experiments
        print(f"{label:<42}{n:>10}{deploy:>10.1%}{keep:>8.1%}{fixed:>13.1%}")


def _median_rate(rounds: int, n: int, fn: Callable[[], None]) -> float:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return n / statistics.median(times)


def throughput(rounds: int, pg_url: str | None) -> None:
    print(f"\nThroughput (median of {rounds} rounds)")
    fw = ABTestFramework(traffic_split=0.1)
    tid = fw.create_test("speed", model_a="production", model_b="candidate")
    ids = [f"request-{i}" for i in range(500_000)]
    assign = fw.assign_group

    def one_by_one() -> None:
        for unit in ids:
            assign(tid, unit)

    print(f"{'assign_group, one call per id':<52}{_median_rate(rounds, len(ids), one_by_one):>14,.0f} ids/s")
    batch = _median_rate(rounds, len(ids), lambda: fw.assign_groups(tid, ids))
    print(f"{'assign_groups, 500k ids per call':<52}{batch:>14,.0f} ids/s")

    values = np.random.default_rng(1).normal(0.0, 1.0, 200_000).tolist()
    with tempfile.TemporaryDirectory() as tmp:
        targets: list[tuple[str, Store | None, str, int]] = [("memory", None, "batch", len(values))]
        sqlite = Store.from_url(f"sqlite:///{tmp}/ab.db").setup()
        targets += [("SQLite file, buffered", sqlite, "batch", len(values))]
        targets += [("SQLite file, sync (1 transaction/result)", sqlite, "sync", 5_000)]
        pg = Store.from_url(pg_url).setup() if pg_url else None
        if pg is not None:
            targets += [("PostgreSQL, buffered", pg, "batch", len(values))]
            targets += [("PostgreSQL, sync (1 transaction/result)", pg, "sync", 2_000)]
        for label, store, durability, n in targets:
            rec = ABTestFramework(traffic_split=0.5, store=store, durability=durability)
            test_id = rec.create_test(f"speed-{label}", model_a="production", model_b="candidate")
            record = rec.record_result

            def feed(
                test_id: str = test_id, record: Callable = record, rec: ABTestFramework = rec, n: int = n
            ) -> None:
                for i in range(n):
                    record(test_id, "AB"[i & 1], None, None, values[i])
                rec.flush()  # the rate counts results that are in the store

            rate = _median_rate(rounds, n, feed)
            rec.close()
            print(f"{'record_result, ' + label:<52}{rate:>14,.0f} results/s")
        sqlite.close()
        if pg is not None:
            pg.close()


@contextmanager
def private_schema(url: str | None) -> Iterator[str | None]:
    """The URL with a fresh PostgreSQL schema first on its search path, dropped afterwards."""
    if url is None:
        yield None
        return
    import psycopg

    schema = f"bench_abtest_{uuid.uuid4().hex[:8]}"
    conninfo = url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        yield f"{url}{'&' if '?' in url else '?'}options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--experiments", type=int, default=500)
    parser.add_argument("--horizon", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--pg-url", default=None, help="also measure PostgreSQL (in a schema dropped afterwards)"
    )
    args = parser.parse_args()
    with private_schema(args.pg_url) as pg_url:
        throughput(args.rounds, pg_url)
    false_positives(args.experiments, args.horizon)
    power(args.experiments)


if __name__ == "__main__":
    main()
