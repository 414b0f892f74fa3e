"""The store goes away while a graph answers with capture attached, then comes back.

SQLite: the database lives on its own small volume (a tmpfs mounted for the test) that fills up, so every
write fails with ``database or disk is full`` the way it does in production; chmod cannot be used, since
root ignores it. PostgreSQL: the server itself is stopped and started again, or the network link to it is
cut and restored. In every case the graph must keep answering, the rows must wait in the spill journal
(``flush()`` says False meanwhile), and once the database works again every interaction must be there
exactly once, with the same node runs and decisions as a run without an outage.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cl_plugin.graphs.mcts_agents import build_mcts_agent_graph
from cl_plugin.graphs.traffic import production_queries
from sqlalchemy import text
from sqlalchemy.engine import make_url

from cl_plugin import CaptureHandler
from cl_plugin.store import Store
from tests.conftest import libpq
from tests.faults.conftest import PrivateCluster
from tests.user_graph import serve

N_BEFORE, N_DURING, N_AFTER = 20, 30, 20


def wait_until(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


class Traffic:
    """Serves seeded production queries through the graph with fixed run ids, and remembers them."""

    def __init__(self, handler: CaptureHandler | None, seed: int = 3) -> None:
        self.graph = build_mcts_agent_graph().compile()
        self.handler = handler
        self.queries = [q.text for q in production_queries(N_BEFORE + N_DURING + N_AFTER, seed=seed)]
        self.run_ids: list[uuid.UUID] = []
        self.answered = 0

    def serve(self, count: int, *, run_ids: list[uuid.UUID] | None = None) -> None:
        for _ in range(count):
            i = len(self.run_ids)
            run_id = run_ids[i] if run_ids is not None else uuid.uuid4()
            self.run_ids.append(run_id)
            callbacks = [self.handler] if self.handler is not None else []
            out = self.graph.invoke(
                {"query": self.queries[i]}, config={"callbacks": callbacks, "run_id": run_id}
            )
            self.answered += bool(out.get("response"))


def per_interaction_counts(store: Store) -> dict[str, tuple[int, int]]:
    """(node runs, decisions) of every stored interaction."""
    with store.engine.connect() as conn:
        runs = Counter(
            dict(conn.execute(text("SELECT interaction_id, count(*) FROM node_runs GROUP BY 1")).all())
        )
        decisions = Counter(
            dict(conn.execute(text("SELECT interaction_id, count(*) FROM decisions GROUP BY 1")).all())
        )
        ids = [r[0] for r in conn.execute(text("SELECT interaction_id FROM interactions")).all()]
    return {i: (runs[i], decisions[i]) for i in ids}


def reference_counts(run_ids: list[uuid.UUID], directory: Path) -> dict[str, tuple[int, int]]:
    """What the same requests store when nothing goes wrong."""
    store = Store.from_url(f"sqlite:///{directory / 'reference.db'}").setup()
    handler = CaptureHandler(store)
    traffic = Traffic(handler)
    traffic.serve(len(run_ids), run_ids=run_ids)
    assert handler.close(timeout=30)
    try:
        return per_interaction_counts(store)
    finally:
        store.close()


def assert_everything_arrived_once(
    store: Store, traffic: Traffic, handler: CaptureHandler, directory: Path
) -> None:
    expected = {str(r) for r in traffic.run_ids}
    stats = handler.writer.stats
    assert wait_until(lambda: set(per_interaction_counts(store)) == expected, timeout=30), (
        f"{len(expected - set(per_interaction_counts(store)))} interactions missing; writer stats: {stats}"
    )
    assert handler.close(timeout=30)
    assert stats.spilled > 0 and stats.replayed == stats.spilled, stats
    assert stats.lost == stats.rejected == stats.dropped == stats.invalid == 0, stats
    assert handler.hook_errors == 0
    assert traffic.answered == len(traffic.run_ids)  # the graph answered every request through the outage
    assert per_interaction_counts(store) == reference_counts(traffic.run_ids, directory)
    assert not list(Path(handler.writer.journal.directory).glob("*.jsonl"))  # journal fully replayed


# -- SQLite: the database's volume fills up --------------------------------------------------------------


@pytest.fixture
def small_volume(tmp_path: Path) -> Iterator[Path]:
    """A 16 MiB tmpfs of its own, so that filling it makes the database's writes fail (and nothing else)."""
    if shutil.which("mount") is None:
        pytest.skip("no mount command to give the database a volume of its own")
    mnt = tmp_path / "volume"
    mnt.mkdir()
    res = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mnt)], capture_output=True, text=True
    )
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs CAP_SYS_ADMIN): {res.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill(volume: Path) -> Path:
    filler = volume / "filler"
    with open(filler, "wb", buffering=0) as f:  # unbuffered: nothing left over for close() to fail on
        try:
            while True:
                f.write(b"\0" * 65536)
        except OSError as exc:
            assert exc.errno == 28  # ENOSPC
    return filler


def test_sqlite_disk_full_mid_traffic_spills_and_replays_every_interaction_once(
    small_volume: Path, tmp_path: Path
) -> None:
    store = Store.from_url(f"sqlite:///{small_volume / 'store.db'}").setup()
    # The journal lives on another disk than the database (the default beside it would be full too).
    handler = CaptureHandler(store, journal_dir=tmp_path / "journal", flush_interval=0.05)
    handler.writer.retry_interval = handler.writer._backoff = 0.1
    traffic = Traffic(handler)
    try:
        traffic.serve(N_BEFORE)
        assert handler.flush(timeout=30)
        assert store.count_interactions() == N_BEFORE
        filler = fill(small_volume)
        traffic.serve(N_DURING)
        assert handler.flush(timeout=30) is False  # the rows wait in the journal
        assert handler.writer.stats.spilled > 0, handler.writer.stats
        assert "database or disk is full" in (handler.writer.stats.last_error or "")
        assert store.count_interactions() == N_BEFORE
        filler.unlink()
        traffic.serve(N_AFTER)
        assert_everything_arrived_once(store, traffic, handler, tmp_path)
        assert store.engine.connect().exec_driver_sql("PRAGMA integrity_check").scalar() == "ok"
    finally:
        handler.close(timeout=10)
        store.close()


# -- PostgreSQL: the server stops and starts -----------------------------------------------------------
# On a private cluster (tests/faults/conftest.py): stopping the shared test server would break the other
# PostgreSQL tests running on parallel workers.


def _pg_ready(url: str, timeout: float) -> bool:
    import psycopg

    conninfo = libpq(url)

    def ready() -> bool:
        try:
            with psycopg.connect(conninfo, connect_timeout=2):
                return True
        except psycopg.OperationalError:
            return False

    return wait_until(ready, timeout)


@pytest.mark.slow
@pytest.mark.postgres
def test_postgres_restart_mid_traffic_spills_and_replays_every_interaction_once(
    private_cluster: PrivateCluster, private_pg_url: str, tmp_path: Path
) -> None:
    store = Store.from_url(private_pg_url).setup()
    handler = CaptureHandler(store, journal_dir=tmp_path / "journal", flush_interval=0.05)
    handler.writer.retry_interval = handler.writer._backoff = 0.1
    traffic = Traffic(handler)
    try:
        traffic.serve(N_BEFORE)
        assert handler.flush(timeout=30)
        assert store.count_interactions() == N_BEFORE
        try:
            private_cluster.stop("fast")
            traffic.serve(N_DURING)
            assert handler.flush(timeout=30) is False  # the rows wait in the journal
            assert handler.writer.stats.spilled > 0, handler.writer.stats
        finally:
            private_cluster.start(check=False)
            assert _pg_ready(private_cluster.url, 60), "the PostgreSQL server did not come back"
        traffic.serve(N_AFTER)
        assert_everything_arrived_once(store, traffic, handler, tmp_path)
    finally:
        handler.close(timeout=10)
        store.close()


# -- the network to PostgreSQL is cut and restored -------------------------------------------------------


class CuttableLink:
    """A TCP forwarder to the PostgreSQL test server whose link can be cut and restored: a real network
    outage for the clients that connect through it, while the server (shared with other tests) runs on."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port = probe.getsockname()[1]
        probe.close()
        self._sockets: list[socket.socket] = []
        self._listener: socket.socket | None = None
        self._lock = threading.Lock()

    def up(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(16)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        """Close the listener and every forwarded connection: new connections are refused, open ones die."""
        with self._lock:
            sockets, self._sockets = self._sockets, []
            if self._listener is not None:
                sockets.append(self._listener)
                self._listener = None
        for s in sockets:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:  # cut
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                sink.shutdown(socket.SHUT_RDWR)


@pytest.mark.postgres
def test_flush_is_false_while_rows_wait_in_the_journal_and_true_once_they_are_replayed(
    pg_url: str, tmp_path: Path
) -> None:
    target = make_url(pg_url)
    link = CuttableLink(target.host or "127.0.0.1", target.port or 5432)
    link.up()
    store = Store.from_url(
        target.set(port=link.port).render_as_string(hide_password=False)
    )  # nobody set it up
    handler = CaptureHandler(store, journal_dir=tmp_path / "journal", flush_interval=0.05)
    handler.writer.retry_interval = handler.writer._backoff = 0.1
    try:
        before = serve(handler)
        assert handler.flush(timeout=30) is True
        assert handler.stats()["spilled"] == 0

        link.cut()
        during = serve(handler)  # the graph answers all the same
        assert handler.flush(timeout=30) is False
        stats = handler.stats()
        assert stats["spilled"] > 0 and stats["replayed"] == 0, stats
        assert stats["waiting_in_journal"] is True and stats["store_available"] is False
        assert stats["last_error"] and stats["dropped"] == 0
        assert list((tmp_path / "journal").glob("spill-*.jsonl"))
        assert handler.flush(timeout=1) is False  # still down: still not written

        link.up()
        assert wait_until(lambda: handler.flush(timeout=5), timeout=30)
        stats = handler.stats()
        assert stats["replayed"] == stats["spilled"] > 0 and stats["waiting_in_journal"] is False, stats
        ids = {r["interaction_id"] for r in store.query_interactions(limit=None)}
        assert ids == set(before + during)
    finally:
        link.cut()
        handler.close(timeout=10)
