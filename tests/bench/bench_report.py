"""Time and peak memory of build_report on SQLite stores of 10k and 100k interactions.

    python tests/bench/bench_report.py [--sizes 10000 100000]

Each store is filled first with ``synthetic_interactions`` (a day-long stream with ratings, failures and
PII, redacted on the way in as the writer does), then the report is built in a fresh subprocess, so its
peak resident memory (``ru_maxrss``) is the report's own plus the interpreter's. The time covers the whole
``build_report`` call: SQL aggregates, the chunked scan with the failure analysis, plots and the file.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from cl_plugin.graphs.traffic import synthetic_interactions

from cl_plugin.privacy import Sanitizer, default_redactor
from cl_plugin.report import build_report
from cl_plugin.store import Batch, Store
from cl_plugin.store.rows import row_from_interaction

T0 = 1_700_000_000.0


def fill(url: str, n: int) -> None:
    """Write ``n`` interactions spread over a day, in batches of 5,000."""
    store = Store.from_url(url).setup()
    sanitize = Sanitizer(redact=default_redactor().redact)
    batch: list[dict] = []
    for i, item in enumerate(synthetic_interactions(n, seed=7, start_time=T0)):
        item.timestamp = T0 + i * 86400.0 / n
        batch.append(row_from_interaction(item, sanitize))
        if len(batch) == 5000:
            store.write(Batch({"interactions": batch}))
            batch = []
    if batch:
        store.write(Batch({"interactions": batch}))
    store.close()


def child(url: str, out: str) -> dict[str, float]:
    """One report, built inside the subprocess."""
    store = Store.from_url(url).setup()
    start = time.perf_counter()
    path = build_report(store, out)
    return {
        "seconds": time.perf_counter() - start,
        "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "html_kb": path.stat().st_size / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--child", nargs=2, metavar=("URL", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(*args.child)))
        return
    print(f"{'interactions':>12} {'seconds':>8} {'peak MB':>8} {'HTML kB':>8}")
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.sizes:
            url = f"sqlite:///{tmp}/store-{n}.db"
            fill(url, n)
            cmd = [sys.executable, __file__, "--child", url, f"{tmp}/report-{n}.html"]
            result = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)
            print(f"{n:>12,} {result['seconds']:>8.1f} {result['rss_mb']:>8.0f} {result['html_kb']:>8.0f}")


if __name__ == "__main__":
    main()
