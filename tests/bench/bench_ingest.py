"""Logger ingest against raw sqlite3, side by side in one run, and the spec query on 100k rows.

    python tests/bench/bench_ingest.py [--rows 100000] [--rounds 3]

Measures, on the same realistic synthetic stream (queries ~80 characters, responses 200-1500):
  (a) raw ``sqlite3.executemany`` of the prepared rows into the same schema, one transaction, for the
      plain rows and for the reference-shaped ones of (d) (every table they fill): the floor;
  (b) ``ProductionInteractionLogger`` end to end (``await log_interaction`` for every record, then
      ``flush()``), PII sanitization on, gz backup on;
  (c) the same with sanitization off;
  (d) the logger with sanitization on, fed the same records shaped like the original design's reference
      implementation: a 384-float query embedding (a list, as that record types it), a routing decision,
      three retrieved chunks (from a corpus of 2,000 passages) and their scores, response metadata, and
      feedback text and a correction on the badly rated ones. These rows write three more tables
      (embeddings, decisions, feedback);
  (e) the same with every retrieved chunk a passage never seen before.
Rounds alternate the variants; each variant's figure is its median over the rounds. Then the bytes per
interaction in the database and the backup, and the median latency of
``query_interactions(max_feedback_score=3.0, limit=1000)`` over the 100k rows.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import dataclasses
import gc
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import numpy as np
from cl_plugin.graphs.traffic import synthetic_interactions

from cl_plugin import ProductionInteractionLogger
from cl_plugin.privacy import Sanitizer
from cl_plugin.store import Store
from cl_plugin.store.rows import interaction_rows


def reference_shaped(items: list, dim: int = 384, *, corpus: int | None = 2000) -> list:
    """The records with every field of the reference implementation's record filled.

    The retrieved chunks come from a corpus of ``corpus`` passages, as a retriever's do; None makes every
    chunk of every record a passage never seen before (the worst case for redaction).
    """
    rng = np.random.default_rng(11)
    passages = [f"passage {k}: {item.response[:200]}" for k, item in enumerate(items[: corpus or 0])]
    out = []
    for i, item in enumerate(items):
        bad = item.user_feedback_score is not None and item.user_feedback_score <= 2
        scores = [round(float(x), 3) for x in rng.uniform(0.2, 0.95, size=3)]
        out.append(
            dataclasses.replace(
                item,
                query_embedding=rng.standard_normal(dim, dtype=np.float32).tolist(),
                routing_decision={"agent": item.agent_selected, "confidence": item.agent_confidence},
                retrieved_chunks=[passages[k] for k in rng.integers(0, len(passages), size=3)]
                if passages
                else [f"passage {i}-{k}: {item.response[:200]}" for k in range(3)],
                retrieval_scores=scores,
                response_metadata={"model": "llm-2", "temperature": 0.2},
                user_feedback_text="that was not what I asked" if bad else None,
                user_corrections=f"The answer is {i}." if bad else None,
                thumbs_up_down=item.thumbs_up_down or "none",
                error_message="TimeoutError: tool call timed out" if item.error_occurred else None,
            )
        )
    return out


def raw_sqlite(tables: dict[str, list[dict]], workdir: Path) -> float:
    """The prepared rows inserted with bare ``sqlite3.executemany``, one transaction: the floor."""
    db = workdir / "raw.db"
    Store.from_url(f"sqlite:///{db}").setup().close()
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    gc.collect()
    start = time.perf_counter()
    conn.execute("BEGIN")
    for table, rows in tables.items():
        cols = list(rows[0])
        sql = f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})"
        conn.executemany(sql, [tuple(r[c] for c in cols) for r in rows])
    conn.execute("COMMIT")
    elapsed = time.perf_counter() - start
    conn.close()
    return elapsed


def prepared(items: list) -> dict[str, list[dict]]:
    """Every row the records make, by table, as the writer would store them (vectors as bytes)."""
    tables: dict[str, list[dict]] = {}
    plain = Sanitizer()
    for item in items:
        for table, row in interaction_rows(item, plain):
            if table == "interaction_embeddings":
                row = {**row, "vector": base64.b64decode(row["vector"])}
            tables.setdefault(table, []).append(row)
    return tables


def logger_run(items: list, workdir: Path, *, sanitize: bool) -> tuple[float, ProductionInteractionLogger]:
    logger = ProductionInteractionLogger(
        {"storage": str(workdir), "sanitize_pii": sanitize, "buffer_size": 1000, "flush_interval": 1.0}
    )

    async def feed() -> None:
        for item in items:
            await logger.log_interaction(item)

    gc.collect()
    start = time.perf_counter()
    asyncio.run(feed())
    logger.flush()
    elapsed = time.perf_counter() - start
    return elapsed, logger


def db_bytes_per_row(db: Path, n: int) -> float:
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return db.stat().st_size / n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--queries", type=int, default=200)
    args = ap.parse_args()

    items = list(synthetic_interactions(args.rows, seed=7))
    q = statistics.mean(len(i.user_query) for i in items)
    r = statistics.mean(len(i.response) for i in items)
    print(f"{args.rows} interactions; mean query {q:.0f} chars, mean response {r:.0f} chars")

    shaped = {
        "logger+reference": reference_shaped(items),
        "logger+ref-unique": reference_shaped(items, corpus=None),
    }
    raw_rows = {"raw": prepared(items), "raw+reference": prepared(shaped["logger+reference"])}
    times: dict[str, list[float]] = {
        "raw": [],
        "raw+reference": [],
        "logger+sanitize": [],
        "logger-nosanitize": [],
        "logger+reference": [],
        "logger+ref-unique": [],
    }
    sizes: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for rnd in range(args.rounds):
            for name in times:
                work = Path(tmp) / f"{name}-{rnd}"
                work.mkdir()
                if name in raw_rows:
                    times[name].append(raw_sqlite(raw_rows[name], work))
                    continue
                fed = shaped.get(name, items)
                elapsed, logger = logger_run(fed, work, sanitize=name != "logger-nosanitize")
                times[name].append(elapsed)
                stats = logger.writer.stats
                assert logger.store.count_interactions() == args.rows, stats
                if rnd == 0 and name == "logger+sanitize":
                    logger.close()
                    sizes["db"] = db_bytes_per_row(work / "interactions.db", args.rows)
                    gz = sum(p.stat().st_size for p in (work / "backups").glob("*.gz"))
                    sizes["gz"] = gz / args.rows
                else:
                    logger.close()

        med = {k: statistics.median(v) for k, v in times.items()}
        print(f"\n{'variant':<22}{'median s':>10}{'rows/s':>12}{'vs raw':>9}   rounds")
        for name, t in med.items():
            rate = args.rows / t
            ratio = (args.rows / t) / (args.rows / med["raw"])
            print(
                f"{name:<22}{t:>10.3f}{rate:>12,.0f}{ratio:>8.2f}x   {', '.join(f'{x:.2f}' for x in times[name])}"
            )
        slower = med["logger+reference"] / med["logger+sanitize"] - 1
        unique = med["logger+ref-unique"] / med["logger+sanitize"] - 1
        floor = med["raw+reference"] / med["raw"] - 1
        print(
            f"\nreference-shaped rows against plain rows (sanitizing both; medians over {args.rounds} rounds): "
            f"{slower:+.1%} time with chunks from a 2,000-passage corpus, {unique:+.1%} when every chunk "
            f"is new (the goal is at most +20%); bare sqlite3 inserting the same rows: {floor:+.1%}"
        )
        print(f"\nbytes per interaction: database {sizes['db']:.0f}, gz backup {sizes['gz']:.0f}")

        # Query latency on a database of args.rows interactions.
        store = Store.from_url(f"sqlite:///{Path(tmp) / 'logger+sanitize-0' / 'interactions.db'}")
        store.query_interactions(max_feedback_score=3.0, limit=1000)
        lat = []
        for _ in range(args.queries):
            t = time.perf_counter()
            got = store.query_interactions(max_feedback_score=3.0, limit=1000)
            lat.append((time.perf_counter() - t) * 1000)
            if _ < args.queries - 1:
                del got  # freeing the caller's previous result is not part of the query
        assert len(got) == 1000
        # The floor: the same query's rows fetched with the bare sqlite3 module (tuples, no dicts).
        raw = sqlite3.connect(Path(tmp) / "logger+sanitize-0" / "interactions.db")
        raw.execute("PRAGMA mmap_size=268435456")
        sql = (
            "SELECT * FROM interactions WHERE user_feedback_score <= 3.0 "
            "ORDER BY timestamp DESC, interaction_id DESC LIMIT 1000"
        )
        raw_lat = []
        for _ in range(args.queries):
            t = time.perf_counter()
            fetched = raw.execute(sql).fetchall()
            raw_lat.append((time.perf_counter() - t) * 1000)
            del fetched
        raw.close()
        lat.sort()
        print(
            f"query_interactions(max_feedback_score=3.0, limit=1000) on {args.rows} rows: "
            f"median {statistics.median(lat):.2f} ms, p95 {lat[int(0.95 * len(lat))]:.2f} ms ({args.queries} runs); "
            f"bare sqlite3 fetch of the same rows: median {statistics.median(raw_lat):.2f} ms"
        )
        store.close()


if __name__ == "__main__":
    main()
