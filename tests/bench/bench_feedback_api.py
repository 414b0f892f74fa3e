"""The feedback endpoint under concurrent posts: throughput and latency percentiles, per engine and body.

    python tests/bench/bench_feedback_api.py [--posts 1000] [--connections 64] [--rounds 3]
                                             [--pg postgresql+psycopg://postgres@127.0.0.1:5432/postgres]

The endpoint (``cl_plugin.web.feedback.feedback_app``) runs under uvicorn on 127.0.0.1 in a subprocess of its
own, so the client does not share its interpreter; the client is ``httpx.AsyncClient`` with a pool of
``--connections`` connections, and sends ``--posts`` posts at once (``asyncio.gather``) to 50 interactions.
Bodies: ``score`` (a rating and a comment: the smallest feedback), ``code`` (plus a 2 kB code attachment,
redacted), ``image`` (plus a 40 kB JPEG with EXIF, sniffed, decoded and re-encoded). Each (engine, body)
round starts a fresh database and server; a round's figures are the posts per second over the whole burst
and the 50th, 95th and 99th percentile of each post's latency as the client saw it (queueing in the pool
included); each figure printed is the median over the rounds. Every round checks that every post was
answered 201 and stored exactly once. With ``--pg`` the PostgreSQL rounds run in a private schema that is
dropped afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import httpx

BODIES = ("score", "code", "image")
IDS = [f"bench-{k}" for k in range(50)]


def _image() -> bytes:
    from PIL import Image

    exif = Image.Exif()
    exif[0x010F] = "BenchCam"
    exif.get_ifd(0x8825).update({1: "N", 2: (51.0, 30.0, 12.0)})
    pixels = bytes((x * 7 + y * 13) % 256 for y in range(240) for x in range(320 * 3))
    out = io.BytesIO()
    Image.frombytes("RGB", (320, 240), pixels).save(out, "JPEG", quality=92, exif=exif.tobytes())
    return out.getvalue()


def bodies() -> dict[str, dict]:
    code = "def retry(call):\n    # token sk-proj-Q7v2Lm9XzR4tYb8NcK3pW6sD1fG5hJ0a\n" + "    pass\n" * 250
    return {
        "score": {},
        "code": {
            "attachments": [{"kind": "code", "content_base64": base64.b64encode(code.encode()).decode()}]
        },
        "image": {"attachments": [{"kind": "image", "content_base64": base64.b64encode(_image()).decode()}]},
    }


# -- the server process ------------------------------------------------------------------------------------


def serve(url: str) -> None:
    """Child: set up the store, add the interactions, print the port, serve until killed."""
    import uvicorn

    from cl_plugin import ProductionInteraction
    from cl_plugin.privacy import Sanitizer
    from cl_plugin.store import Batch, Store
    from cl_plugin.store.rows import row_from_interaction
    from cl_plugin.web.feedback import feedback_app

    store = Store.from_url(url).setup()
    rows = [
        row_from_interaction(
            ProductionInteraction(
                interaction_id=i, timestamp=time.time(), session_id="s", user_query="q", response="r"
            ),
            Sanitizer(),
        )
        for i in IDS
    ]
    store.write(Batch({"interactions": rows}))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    print(sock.getsockname()[1], flush=True)
    config = uvicorn.Config(
        feedback_app(store, key="bench-key"),
        log_level="warning",
        access_log=False,
        lifespan="off",
        backlog=4096,
    )
    uvicorn.Server(config).run(sockets=[sock])


# -- the client --------------------------------------------------------------------------------------------


async def burst(base: str, posts: int, connections: int, extra: dict) -> tuple[float, list[float], list]:
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=300) as client:

        async def one(k: int) -> tuple[float, httpx.Response]:
            t = time.perf_counter()
            body = {"interaction_id": IDS[k % len(IDS)], "score": 1 + k % 5, "comment": f"post {k}", **extra}
            res = await client.post("/api/feedback", json=body)
            return time.perf_counter() - t, res

        await client.post("/api/feedback", json={"interaction_id": IDS[0], "score": 3, **extra})  # warm up
        start = time.perf_counter()
        done = await asyncio.gather(*(one(k) for k in range(posts)))
        wall = time.perf_counter() - start
    return wall, [d for d, _ in done], [r for _, r in done]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def fresh_database(engine: str, pg: str | None, folder: Path) -> tuple[str, str | None]:
    if engine == "sqlite":
        return f"sqlite:///{folder / f'{uuid.uuid4().hex}.db'}", None
    import psycopg
    from sqlalchemy.engine import make_url

    schema = f"bench_{uuid.uuid4().hex[:10]}"
    u = make_url(pg)
    conninfo = f"host={u.host} port={u.port or 5432} user={u.username} dbname={u.database}"
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    sep = "&" if "?" in pg else "?"
    return f"{pg}{sep}options=-csearch_path%3D{schema}", schema


def drop_schema(pg: str, schema: str) -> None:
    import psycopg
    from sqlalchemy.engine import make_url

    u = make_url(pg)
    with psycopg.connect(
        f"host={u.host} port={u.port or 5432} user={u.username} dbname={u.database}", autocommit=True
    ) as conn:
        conn.execute(f"DROP SCHEMA {schema} CASCADE")


def stored_ids(url: str) -> list[str]:
    from cl_plugin.store import Store

    store = Store.from_url(url)
    try:
        with store.read_connection() as conn:
            return list(conn.exec_driver_sql("SELECT feedback_id FROM feedback").scalars())
    finally:
        store.close()


def run_round(engine: str, body: str, args: argparse.Namespace, folder: Path) -> tuple[float, list[float]]:
    url, schema = fresh_database(engine, args.pg, folder)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    child = subprocess.Popen(
        [sys.executable, __file__, "--serve", url], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        port = int(child.stdout.readline())  # type: ignore[union-attr]
        base = f"http://127.0.0.1:{port}"
        for _ in range(200):
            try:
                httpx.get(base + "/", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.05)
        wall, latencies, responses = asyncio.run(burst(base, args.posts, args.connections, BODY[body]))
        bad = [r.status_code for r in responses if r.status_code != 201]
        assert not bad, f"{len(bad)} posts refused: {sorted(set(bad))} {responses[0].text[:200]}"
        sent = {r.json()["feedback_id"] for r in responses}
        stored = stored_ids(url)
        assert len(stored) == len(set(stored)) == args.posts + 1 and sent <= set(stored), "not stored once"
    finally:
        child.terminate()
        child.wait(30)
        if schema is not None:
            drop_schema(args.pg, schema)
    return args.posts / wall, latencies


BODY: dict[str, dict] = {}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--posts", type=int, default=1000)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--pg", default=None, help="a PostgreSQL URL: also run on PostgreSQL")
    ap.add_argument("--bodies", nargs="+", choices=BODIES, default=list(BODIES))
    ap.add_argument("--serve", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        serve(args.serve)
        return
    BODY.update(bodies())
    engines = ["sqlite"] + (["postgresql"] if args.pg else [])
    results: dict[tuple[str, str], list[tuple[float, list[float]]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for engine in engines:
                for body in args.bodies:
                    results.setdefault((engine, body), []).append(run_round(engine, body, args, Path(tmp)))
            print(f"round {r + 1}/{args.rounds} done", file=sys.stderr, flush=True)
    print(
        f"\n{args.posts} concurrent posts, {args.connections} connections, median of {args.rounds} rounds "
        f"(uvicorn on 127.0.0.1, client in another process)"
    )
    print(
        f"{'engine':<12}{'body':<7}{'posts/s':>9}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}   posts/s per round"
    )
    for (engine, body), rounds in results.items():
        rates = [rate for rate, _ in rounds]
        p = {q: statistics.median(percentile(lat, q) * 1000 for _, lat in rounds) for q in (0.5, 0.95, 0.99)}
        print(
            f"{engine:<12}{body:<7}{statistics.median(rates):>9.0f}{p[0.5]:>9.1f}{p[0.95]:>9.1f}{p[0.99]:>9.1f}"
            f"   {' '.join(f'{x:.0f}' for x in rates)}"
        )


if __name__ == "__main__":
    main()
