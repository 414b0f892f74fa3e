"""A/B testing: false positives under continuous monitoring, power at the planned effect, and throughput.

    python tests/bench/bench_abtest.py [--experiments 500] [--horizon 10000] [--srm-horizon 100000]
        [--pg-url URL] [--sections throughput aa power srm]

1. A/A tests (no true difference) through :class:`ABTestFramework`, read after every 100 results up to
   ``--horizon`` results: how many ever recommend "Deploy B" or "Keep A" on significance (the always-valid
   test; 5% allowed), beside how many a fixed-horizon test read the same way would have called; and how
   many ever raised a sample-ratio-mismatch (SRM) alarm at any look, by the old rule (chi-square p < 0.001
   at each look, the ``fixed_horizon`` figure) and by the sequential test that now raises the alert (0.1%
   allowed over all looks). A continuous metric with a 50/50 split and a binary one with the spec's 10%
   split.
2. A true effect of the planned size, run to :func:`required_sample_size` results and read after every 100:
   how many reach "Deploy B" (80% wanted), beside the fixed-horizon test read once at the end.
3. SRM from the group counts alone (:func:`sample_ratio_mismatch`), a look every 100 units up to
   ``--srm-horizon`` units: A/A tests, and real mismatches (B's delivered share below the planned one).
   How many tests each rule flags by 10,000 units and by the horizon, and the median look of the first
   alarm among those flagged: chi-square at each look, the sequential test with its default prior weight,
   and with a prior ten times heavier (``seq1000``).
4. Throughput of ``assign_group`` (one call per id, and ``assign_groups``), and of ``record_result`` in
   memory, on a SQLite file (buffered, and with ``durability="sync"``: one transaction per result), and on
   PostgreSQL when ``--pg-url`` is given. Figures are the median of ``--rounds`` rounds.

Everything is seeded; the figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import math
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

from cl_plugin.abtest import ABTestFramework, required_sample_size, sample_ratio_mismatch
from cl_plugin.abtest.stats import SRM_ALERT_P, SRM_PRIOR_CONCENTRATION, srm_log_bayes_factor
from cl_plugin.store import Store

WINS = {"Deploy B", "Keep A"}
SECTIONS = ("throughput", "aa", "power", "srm")


Draw = Callable[[np.random.Generator, np.ndarray], np.ndarray]


def run_experiment(
    rng: np.random.Generator, horizon: int, split: float, draw: Draw
) -> tuple[set[str], bool, bool, bool, bool]:
    """One test read every 100 results: recommendations seen, whether the fixed-horizon p-value was ever
    below 0.05, whether it is at the end, and whether the chi-square SRM figure was ever below 0.001 and
    the sequential SRM alert ever raised."""
    fw = ABTestFramework(traffic_split=split, min_samples=100)
    tid = fw.create_test("sim", model_a="production", model_b="candidate")
    in_b = rng.random(horizon) < split
    metric = draw(rng, in_b)
    groups = np.where(in_b, "B", "A")
    seen: set[str] = set()
    fixed_ever = srm_chi2 = srm_seq = False
    status: dict = {}
    for i in range(horizon):
        fw.record_result(tid, groups[i], metric=float(metric[i]))
        if (i + 1) % 100 == 0 or i + 1 == horizon:
            status = fw.get_test_status(tid)
            if "sample ratio" not in status["reason"]:
                seen.add(status["recommendation"])
            srm_seq |= status["sample_ratio"]["alert"]
            srm_chi2 |= status["sample_ratio"]["fixed_horizon"]["p_value"] < SRM_ALERT_P
            if status["fixed_horizon"] is not None:
                fixed_ever |= status["fixed_horizon"]["p_value"] < 0.05
    fixed_end = status["fixed_horizon"] is not None and status["fixed_horizon"]["p_value"] < 0.05
    return seen, fixed_ever, fixed_end, srm_chi2, srm_seq


def false_positives(experiments: int, horizon: int) -> None:
    print(f"\nA/A tests: {experiments} experiments, read every 100 results up to {horizon}, alpha 0.05")
    print(
        f"{'metric':<34}{'sequential':>12}{'fixed, peeking':>16}{'SRM chi2/look':>15}{'SRM sequential':>16}"
        f"{'seconds':>9}"
    )
    chi2_total = seq_total = 0
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
        srm_chi2, srm_seq = sum(r[3] for r in runs), sum(r[4] for r in runs)
        chi2_total, seq_total = chi2_total + srm_chi2, seq_total + srm_seq
        print(
            f"{label:<34}{seq:>12.1%}{peek:>16.1%}{f'{srm_chi2}/{experiments}':>15}"
            f"{f'{srm_seq}/{experiments}':>16}{time.perf_counter() - start:>9.1f}"
        )
    total = experiments * len(cases)
    print(
        f"SRM false alarms over all looks: chi-square per look {chi2_total}/{total} "
        f"({chi2_total / total:.2%}), sequential {seq_total}/{total} ({seq_total / total:.2%}; 0.1% allowed)"
    )


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


#: label: (planned share of B, share of B in the units that arrive).
SRM_CASES = {
    "A/A, split 0.5": (0.5, 0.5),
    "A/A, split 0.1": (0.1, 0.1),
    "0.5 -> 0.4": (0.5, 0.4),
    "0.5 -> 0.475": (0.5, 0.475),
    "0.5 -> 0.487 (5% of B lost)": (0.5, 0.5 * 0.95 / (0.5 * 0.95 + 0.5)),
    "0.5 -> 0.49 (1 point)": (0.5, 0.49),
    "0.1 -> 0.0955 (5% of B lost)": (0.1, 0.1 * 0.95 / (0.1 * 0.95 + 0.9)),
    "0.1 -> 0.09 (1 point)": (0.1, 0.09),
}
HEAVY_PRIOR = 10 * SRM_PRIOR_CONCENTRATION


def srm_first_alarms(rng: np.random.Generator, planned: float, delivered: float, looks: int) -> list[int]:
    """One test's counts read every 100 units: the first look at which each rule alarms (0: never), for
    chi-square p < 0.001 at that look, the sequential test, and the sequential test with HEAVY_PRIOR."""
    first = [0, 0, 0]
    n_a = n_b = 0
    threshold = math.log(1.0 / SRM_ALERT_P)
    for look, step_b in enumerate(rng.binomial(100, delivered, looks).tolist(), start=1):
        n_a, n_b = n_a + 100 - step_b, n_b + step_b
        srm = sample_ratio_mismatch(n_a, n_b, planned)
        heavy = srm_log_bayes_factor(n_a, n_b, planned, HEAVY_PRIOR) >= threshold
        for rule, alarm in enumerate((srm.chi2_p_value < SRM_ALERT_P, srm.alert, heavy)):
            if alarm and not first[rule]:
                first[rule] = look
    return first


def srm_detection(experiments: int, horizon: int) -> None:
    looks = horizon // 100
    early = min(100, looks)
    print(
        f"\nSRM from counts: {experiments} tests per row, a look every 100 units up to {horizon:,} "
        f"({looks} looks): tests flagged at any look, and the median look of the first alarm (tests never flagged count as later than the last look)"
    )
    rules = ("chi2", "seq", f"seq{HEAVY_PRIOR:g}")
    groups = (f"flagged by {early * 100:,} units", f"flagged by {horizon:,} units", "median first-alarm look")
    print(f"{'':<30}" + "".join(f"{g:>33}" for g in groups))
    print(f"{'planned -> delivered B share':<30}" + "".join(f"{r:>11}" for r in rules * 3))
    for label, (planned, delivered) in SRM_CASES.items():
        rng = np.random.default_rng(77)
        start = time.perf_counter()
        runs = np.array([srm_first_alarms(rng, planned, delivered, looks) for _ in range(experiments)])
        flagged = runs > 0
        by_early = ((runs > 0) & (runs <= early)).sum(axis=0)
        # Median over every test, a test never flagged counting as later than the last look.
        delays = np.median(np.where(flagged, runs, np.inf), axis=0)
        medians = [f"{d:.0f}" if np.isfinite(d) else f">{looks}" for d in delays]
        cells = [f"{k}/{experiments}" for k in (*by_early, *flagged.sum(axis=0))] + medians
        print(
            f"{label:<30}" + "".join(f"{c:>11}" for c in cells) + f"  ({time.perf_counter() - start:.0f} s)"
        )


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
        "--srm-horizon", type=int, default=100_000, help="units per SRM test (look every 100)"
    )
    parser.add_argument(
        "--pg-url", default=None, help="also measure PostgreSQL (in a schema dropped afterwards)"
    )
    parser.add_argument(
        "--sections",
        nargs="+",
        choices=SECTIONS,
        default=list(SECTIONS),
        help="which parts to run (all by default)",
    )
    args = parser.parse_args()
    if "throughput" in args.sections:
        with private_schema(args.pg_url) as pg_url:
            throughput(args.rounds, pg_url)
    if "aa" in args.sections:
        false_positives(args.experiments, args.horizon)
    if "power" in args.sections:
        power(args.experiments)
    if "srm" in args.sections:
        srm_detection(args.experiments, args.srm_horizon)


if __name__ == "__main__":
    main()
