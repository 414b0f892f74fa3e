"""Time of the dashboard's live overview on SQLite stores of 10k and 100k interactions.

    python tests/bench/bench_dashboard.py [--sizes 10000 100000] [--rounds 5]

Each store is filled as tests/bench/bench_report.py fills it (a day-long stream with ratings, failures and
PII, through the store's batch write path). Then, per size, the medians over ``--rounds``:

* ``read``: a view's sections read from the store and rendered (one pass over the window, the SQL figures,
  the plots), what the first request of a view waits for and what the background refresh costs when new
  interactions land;
* ``GET / first``: a view's first request as ``cl-plugin serve`` answers it (a fresh app, waiting at most
  0.5 s for the figures, then showing that they are being read; the page's script swaps them in);
* ``GET /``: the overview page as a browser gets it once the view's sections are kept (the store's
  fingerprint is checked, the kept sections are served);
* ``poll``: the page script's poll of ``/api/overview`` when nothing changed (the count and the version);
* ``GET / (new)``: the overview page right after a new interaction landed: the kept sections are served and
  their refresh starts in the background.

The target for the overview a browser gets is 1 s at 100k interactions.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from cl_plugin.graphs.traffic import synthetic_interactions
from starlette.testclient import TestClient

from cl_plugin.privacy import Sanitizer, default_redactor
from cl_plugin.store import Batch, Store
from cl_plugin.store.rows import row_from_interaction
from cl_plugin.web import create_app
from cl_plugin.web.overview import Overview, View
from tests.bench.bench_report import T0, fill


def median(fn: Callable[[], object], rounds: int) -> float:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def land(store: Store, n: int) -> None:
    """One new interaction, written as the bench's stream was."""
    [item] = synthetic_interactions(1, seed=1000 + n, start_time=T0)
    item.timestamp = T0 + 86400.0 + n
    store.write(
        Batch({"interactions": [row_from_interaction(item, Sanitizer(redact=default_redactor().redact))]})
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    print(
        f"{'interactions':>12} {'read s':>8} {'GET / first s':>14} {'GET / s':>8} {'poll s':>8} {'GET / (new) s':>14}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.sizes:
            url = f"sqlite:///{tmp}/store-{n}.db"
            fill(url, n)
            store = Store.from_url(url).setup()
            read = median(lambda store=store: Overview(store).sections(View(), wait=True), args.rounds)
            first = []
            for _ in range(args.rounds):
                with TestClient(create_app(store, first_read=0.5)) as client:
                    start = time.perf_counter()
                    client.get("/")
                    first.append(time.perf_counter() - start)
                    while not client.get("/api/overview").json()["version"]:  # the read, in the background
                        time.sleep(0.1)
            with TestClient(create_app(store)) as client:
                client.get("/")  # the view's first request reads its sections
                warm = median(lambda client=client: client.get("/"), args.rounds)
                version = client.get("/api/overview").json()["version"]
                poll = median(lambda v=version: client.get(f"/api/overview?have={v}"), args.rounds)
                times = []
                for i in range(args.rounds):
                    land(store, i)
                    start = time.perf_counter()
                    client.get("/")
                    times.append(time.perf_counter() - start)
                fresh = statistics.median(times)
            store.close()
            cold = statistics.median(first)
            print(f"{n:>12,} {read:>8.2f} {cold:>14.3f} {warm:>8.3f} {poll:>8.3f} {fresh:>14.3f}")


if __name__ == "__main__":
    main()
