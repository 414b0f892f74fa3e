"""DriftDetector on seeded 5-feature streams: false alarms, detection delay and throughput, per method.

    python tests/bench/bench_drift.py [--seeds 20] [--samples 20000] [--streaming-samples 10000]
                                      [--reference 5000] [--methods kolmogorov_smirnov,adwin,...]

For each detection method, with the default settings (window 1000, threshold 0.1, a test every 100
samples at three scales, alpha 0.001 with Benjamini-Hochberg over features and scales, an alarm on the
first drifted test; the streaming methods with one detector per feature, fed every sample):
  (a) false alarms on stationary samples over ``--seeds`` seeds: per test for the batch methods
      (``--samples`` each), per sample for the streaming ones (``--streaming-samples`` each, as they test
      every sample);
  (b) delay: samples from a 0.5-sigma mean shift of one feature (of five) to its alarm, median and worst
      over seeds (the shift starts after 3000 stationary samples; "miss" when no alarm within 3000);
  (c) throughput: ``add_sample`` calls per second on numpy rows (median over rounds), beside the cost of
      one scipy ``ks_2samp`` recompute per sample, the approach the windowed test replaces.
DDM and EDDM are left out: they watch 0/1 error streams, not these features.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
from scipy import stats

from cl_plugin.drift import DriftDetector

FEATURES = 5
METHODS = ("kolmogorov_smirnov", "psi", "chi_square", "wasserstein", "jensen_shannon")
STREAMING = ("adwin", "page_hinkley", "kswin")


def _reference(seed: int, n: int) -> np.ndarray:
    return np.random.default_rng(10_000 + seed).normal(size=(n, FEATURES))


def false_alarm_rate(method: str, seeds: int, samples: int, reference: int) -> tuple[int, int]:
    """Alarms, and tests (batch methods) or samples (streaming methods, which test every sample)."""
    alarms = checks = 0
    for seed in range(seeds):
        detector = DriftDetector(detection_method=method)
        detector.set_reference_distribution(_reference(seed, reference))
        for row in np.random.default_rng(seed).normal(size=(samples, FEATURES)):
            alarms += detector.add_sample(row) is not None
        checks += detector.get_drift_summary()["checks"]  # samples fed, for a streaming method
    return alarms, checks


def detection_delays(method: str, seeds: int, reference: int, before: int = 3000) -> list[int | None]:
    delays: list[int | None] = []
    for seed in range(seeds):
        detector = DriftDetector(detection_method=method)
        detector.set_reference_distribution(_reference(seed, reference))
        stream = np.random.default_rng(500 + seed).normal(size=(before + 3000, FEATURES))
        stream[before:, seed % FEATURES] += 0.5
        delay = None
        for i, row in enumerate(stream):
            if detector.add_sample(row) is not None and i >= before:
                delay = i - before + 1
                break
        delays.append(delay)
    return delays


def throughput(method: str, reference: int, rounds: int = 3, n: int = 100_000) -> float:
    n = n if method in METHODS else n // 5
    rows = list(np.random.default_rng(1).normal(size=(n, FEATURES)))
    rates = []
    for _ in range(rounds):
        detector = DriftDetector(detection_method=method, window_size=1000)
        detector.set_reference_distribution(_reference(0, reference))
        start = time.perf_counter()
        for row in rows:
            detector.add_sample(row)
        rates.append(n / (time.perf_counter() - start))
    return statistics.median(rates)


def recompute_per_sample_rate(reference: int, n: int = 300) -> float:
    """scipy's KS on each of five features over the whole window, after every sample."""
    ref = _reference(0, reference)
    window = np.random.default_rng(2).normal(size=(1000, FEATURES))
    start = time.perf_counter()
    for _ in range(n):
        for j in range(FEATURES):
            stats.ks_2samp(ref[:, j], window[:, j])
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--samples", type=int, default=20_000)
    parser.add_argument("--streaming-samples", type=int, default=10_000)
    parser.add_argument("--reference", type=int, default=5000)
    parser.add_argument("--methods", default=",".join(METHODS + STREAMING))
    args = parser.parse_args()
    print(
        f"5 features, reference {args.reference} rows, window 1000, test every 100 samples, {args.seeds} seeds"
    )
    header = f"{'method':<20}{'false alarms':>26}{'rate':>9}{'median delay':>14}{'worst':>8}{'misses':>8}"
    print(header + f"{'add_sample/s':>14}")
    for method in args.methods.split(","):
        streaming = method not in METHODS
        samples = args.streaming_samples if streaming else args.samples
        alarms, checks = false_alarm_rate(method, args.seeds, samples, args.reference)
        delays = detection_delays(method, args.seeds, args.reference)
        found = [d for d in delays if d is not None]
        median = f"{statistics.median(found):.0f}" if found else "-"
        worst = f"{max(found)}" if found else "-"
        rate = throughput(method, args.reference)
        per = "samples" if streaming else "tests"
        print(
            f"{method:<20}{f'{alarms} / {checks} {per}':>26}{alarms / checks:>9.3%}{median:>14}{worst:>8}"
            f"{len(delays) - len(found):>8}{rate:>14,.0f}"
        )
    print(
        f"for comparison: scipy ks_2samp on 5 features after every sample: {recompute_per_sample_rate(args.reference):,.0f}/s"
    )


if __name__ == "__main__":
    main()
