"""The background writer: batching, sync durability, outages, refused rows and the spill journal."""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import orjson
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from cl_plugin.privacy import Sanitizer, default_redactor
from cl_plugin.records import ProductionInteraction
from cl_plugin.store import Batch, Store
from cl_plugin.store.backup import BackupWriter, iter_backup
from cl_plugin.store.journal import Journal
from cl_plugin.store.rows import row_from_interaction
from cl_plugin.store.writer import Writer

T0 = 1_700_000_000.0
SANITIZER = Sanitizer(redact=default_redactor().redact)
# Raw PII that each test record carries, and the placeholders the sanitizer must put in its place.
RAW_PII = ("jane.doe@example.com", "+1 (415) 555-0123", "5500 0000 0000 0004", "219-09-9999", "10.1.2.3")
PLACEHOLDERS = ("[EMAIL]", "[PHONE]", "[CREDIT_CARD]", "[SSN]", "[IP_ADDRESS]")


def interaction(i: int, prefix: str = "id", **over) -> ProductionInteraction:
    base = {
        "interaction_id": f"{prefix}-{i:05d}",
        "timestamp": T0 + i,
        "session_id": f"s{i % 4}",
        "user_query": f"query {i}: mail {RAW_PII[0]} or call {RAW_PII[1]}",
        "response": f"card {RAW_PII[2]}, SSN {RAW_PII[3]}, from {RAW_PII[4]}",
        "agent_selected": ("HRM", "TRM", "MCTS")[i % 3],
        "user_feedback_score": float(1 + i % 5),
        "latency_ms": 100.0 + i,
    }
    base.update(over)
    return ProductionInteraction(**base)


def to_rows(item: ProductionInteraction) -> list[tuple[str, dict]]:
    return [("interactions", row_from_interaction(item, SANITIZER))]


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.005)
    return predicate()


def stored_ids(store: Store) -> set[str]:
    return {r["interaction_id"] for r in store.query_interactions(limit=None)}


def outage_error() -> OperationalError:
    return OperationalError(
        "INSERT INTO interactions ...", None, ConnectionRefusedError(111, "Connection refused")
    )


class FlakyWrite:
    """Stands in for ``Store.write``: raises an outage error while ``down``, then writes for real."""

    def __init__(self, store: Store) -> None:
        self._write = store.write
        self.down = True
        self.failures = 0

    def __call__(self, batch: Batch):
        if self.down:
            self.failures += 1
            raise outage_error()
        return self._write(batch)


class FullDiskJournal(Journal):
    """A journal whose disk is full: spilling fails."""

    def spill(self, rows) -> int:
        raise OSError(28, "No space left on device")


def bad_or_good(item: ProductionInteraction) -> list[tuple[str, dict]]:
    """Rows as usual, except that ids ending in ``bad`` get a NULL the table refuses (NOT NULL)."""
    rows = to_rows(item)
    if item.interaction_id.endswith("bad"):
        rows[0][1]["user_query"] = None
    return rows


def unencodable(item: ProductionInteraction) -> list[tuple[str, dict]]:
    """Rows as usual, except that ids ending in ``enc`` carry a lone surrogate, which no driver can encode."""
    rows = to_rows(item)
    if item.interaction_id.endswith("enc"):
        rows[0][1]["run_id"] = "run-\ud800"
    return rows


def dated(item: ProductionInteraction) -> list[tuple[str, dict]]:
    """Rows as usual, except that ids ending in ``far`` carry a time no calendar (or backup file) can name."""
    rows = to_rows(item)
    if item.interaction_id.endswith("far"):
        rows[0][1]["timestamp"] = 1e300
    return rows


def exploding(item: ProductionInteraction) -> list[tuple[str, dict]]:
    if item.interaction_id.endswith("boom"):
        raise ValueError(f"cannot convert {item.interaction_id}")
    return to_rows(item)


def spill_files(directory) -> list:
    return sorted(p for p in directory.glob("*.jsonl") if p.name.startswith(("spill-", "claimed-")))


@pytest.fixture
def store(tmp_path) -> Iterator[Store]:
    s = Store.from_url(f"sqlite:///{tmp_path / 'writer.db'}").setup()
    yield s
    s.close()


@pytest.fixture
def make_writer(store: Store, tmp_path) -> Iterator[Callable[..., Writer]]:
    writers: list[Writer] = []

    def make(**kwargs) -> Writer:
        kwargs.setdefault("journal", Journal(tmp_path / "journal"))
        w = Writer(kwargs.pop("store", store), **kwargs)
        writers.append(w)
        return w

    yield make
    for w in writers:
        w.close(timeout=10)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def any_store(request: pytest.FixtureRequest, tmp_path) -> Iterator[Store]:
    url = (
        f"sqlite:///{tmp_path / 'any.db'}" if request.param == "sqlite" else request.getfixturevalue("pg_url")
    )
    s = Store.from_url(url).setup()
    yield s
    s.close()


# -- batch durability ---------------------------------------------------------------------------------


def test_flush_writes_every_submitted_row(store: Store, make_writer) -> None:
    w = make_writer(buffer_size=64, flush_interval=60)
    items = [interaction(i) for i in range(500)]
    for item in items:
        assert w.submit(to_rows, item) is None  # batch durability acknowledges on enqueue
    assert w.flush(timeout=10)
    assert stored_ids(store) == {i.interaction_id for i in items}
    assert w.queue_size == 0
    assert w.stats.written == 500 and w.stats.submitted == 500


def test_timed_flush_writes_without_an_explicit_flush(store: Store, make_writer) -> None:
    w = make_writer(buffer_size=1000, flush_interval=0.05)
    start = time.monotonic()
    for i in range(3):
        w.submit(to_rows, interaction(i))
    assert wait_until(lambda: store.count_interactions() == 3, timeout=3)
    assert time.monotonic() - start < 2.0


def test_a_full_buffer_is_written_before_the_interval_is_up(store: Store, make_writer) -> None:
    w = make_writer(buffer_size=10, flush_interval=600)
    for i in range(9):
        w.submit(to_rows, interaction(i))
    time.sleep(0.2)
    assert store.count_interactions() == 0  # nine queued items wait for the interval
    w.submit(to_rows, interaction(9))
    assert wait_until(lambda: store.count_interactions() == 10, timeout=3)


# -- sync durability ----------------------------------------------------------------------------------


def test_sync_future_resolves_only_after_the_row_is_in_the_database(
    store: Store, make_writer, tmp_path, monkeypatch
) -> None:
    gate = threading.Event()
    real_write = store.write

    def slow_write(batch: Batch):
        gate.wait(10)
        return real_write(batch)

    monkeypatch.setattr(store, "write", slow_write)
    reader = Store.from_url(f"sqlite:///{tmp_path / 'writer.db'}")  # another connection to the same file
    w = make_writer(durability="sync", flush_interval=60)
    item = interaction(1)
    fut = w.submit(to_rows, item)
    assert fut is not None
    time.sleep(0.1)
    assert not fut.done()  # the write is held up, so the caller is still waiting
    assert reader.get_interaction(item.interaction_id) is None
    gate.set()
    assert fut.result(timeout=10) is None
    # The moment the caller is released, another connection sees the committed row.
    assert reader.get_interaction(item.interaction_id) is not None
    reader.close()


def test_sync_future_fails_when_neither_the_store_nor_the_journal_takes_the_row(
    store: Store, make_writer, tmp_path, monkeypatch
) -> None:
    monkeypatch.setattr(store, "write", FlakyWrite(store))  # stays down
    w = make_writer(durability="sync", journal=FullDiskJournal(tmp_path / "journal"), retry_interval=0.01)
    fut = w.submit(to_rows, interaction(1))
    # The row is neither committed nor spilled: acknowledging it would be a lie.
    assert fut.exception(timeout=10) is not None


# -- outage ---------------------------------------------------------------------------------------------


def test_outage_spills_sanitized_rows_and_replays_them_when_the_store_is_back(
    store: Store, make_writer, tmp_path, monkeypatch
) -> None:
    flaky = FlakyWrite(store)
    monkeypatch.setattr(store, "write", flaky)
    w = make_writer(buffer_size=50, flush_interval=0.02, retry_interval=0.05)
    during = [interaction(i, "down") for i in range(200)]
    for item in during:
        w.submit(to_rows, item)
    assert w.flush(timeout=10) is False  # not written: the rows wait in the journal

    assert flaky.failures >= 1
    assert store.count_interactions() == 0
    assert w.stats.spilled == 200 and w.stats.store_available is False
    spilled = b"".join(p.read_bytes() for p in spill_files(tmp_path / "journal"))
    lines = [orjson.loads(line) for line in spilled.splitlines()]
    assert sorted(line["r"]["interaction_id"] for line in lines) == sorted(i.interaction_id for i in during)
    for raw in RAW_PII:
        assert raw.encode() not in spilled, raw
    for placeholder in PLACEHOLDERS:
        assert placeholder.encode() in spilled, placeholder

    flaky.down = False
    after = [interaction(i, "up") for i in range(20)]
    for item in after:
        w.submit(to_rows, item)
    assert wait_until(lambda: w.flush(timeout=1), timeout=10)  # True once the journal is replayed
    expected = {i.interaction_id for i in during + after}
    assert wait_until(lambda: stored_ids(store) == expected, timeout=10), expected - stored_ids(store)
    assert wait_until(lambda: not spill_files(tmp_path / "journal"), timeout=5)
    # Rows submitted while the writer still waited out its back-off were spilled too; all came back.
    assert wait_until(lambda: w.stats.replayed == w.stats.spilled >= 200, timeout=5), w.stats
    assert wait_until(lambda: w.stats.store_available, timeout=5)
    stored = store.query_interactions(limit=None)
    assert all(r["user_query"].startswith("query") and "[EMAIL]" in r["user_query"] for r in stored)


def test_sync_future_resolves_once_the_row_is_durably_spilled(
    store: Store, make_writer, tmp_path, monkeypatch
) -> None:
    monkeypatch.setattr(store, "write", FlakyWrite(store))
    w = make_writer(durability="sync", retry_interval=0.05)
    item = interaction(7)
    assert w.submit(to_rows, item).result(timeout=10) is None
    spilled = b"".join(p.read_bytes() for p in spill_files(tmp_path / "journal"))
    assert item.interaction_id.encode() in spilled


@pytest.fixture
def pg_role_store(pg_url: str) -> Iterator[tuple[Store, Callable[[str], None]]]:
    """A store that logs in as its own role, and a function that runs SQL as the superuser."""
    admin = Store.from_url(pg_url).setup()
    schema = re.search(r"search_path%3D(\w+)", pg_url)[1]
    role = f"writer_{uuid.uuid4().hex[:10]}"

    def as_admin(sql: str) -> None:
        with admin.engine.begin() as conn:
            conn.execute(text(sql))

    as_admin(f"CREATE ROLE {role} LOGIN")
    as_admin(f"GRANT USAGE ON SCHEMA {schema} TO {role}")
    as_admin(f"GRANT SELECT, INSERT, UPDATE ON ALL TABLES IN SCHEMA {schema} TO {role}")
    as_admin(f"GRANT USAGE ON ALL SEQUENCES IN SCHEMA {schema} TO {role}")
    url = make_url(pg_url).set(username=role).render_as_string(hide_password=False)
    store = Store.from_url(url)
    yield store, lambda sql: as_admin(sql.format(schema=schema, role=role))
    store.close()
    as_admin(f"DROP OWNED BY {role}")
    as_admin(f"DROP ROLE {role}")
    admin.close()


@pytest.mark.postgres
def test_postgres_permission_loss_is_an_outage_and_rows_come_back_when_it_ends(
    pg_role_store, make_writer
) -> None:
    store, as_admin = pg_role_store
    w = make_writer(store=store, buffer_size=10, flush_interval=0.02, retry_interval=0.05)
    as_admin("REVOKE INSERT ON ALL TABLES IN SCHEMA {schema} FROM {role}")
    during = [interaction(i, "revoked") for i in range(20)]
    for item in during:
        w.submit(to_rows, item)
    assert w.flush(timeout=10) is False  # not written: the rows wait in the journal
    assert store.count_interactions() == 0
    as_admin("GRANT INSERT ON ALL TABLES IN SCHEMA {schema} TO {role}")
    after = [interaction(i, "granted") for i in range(5)]
    for item in after:
        w.submit(to_rows, item)
    assert wait_until(lambda: w.flush(timeout=1), timeout=10)  # True once the journal is replayed
    expected = {i.interaction_id for i in during + after}
    # Every row refused for a reason that has nothing to do with the row must come back once the cause is gone,
    # not sit in the dead-letter file.
    assert wait_until(lambda: stored_ids(store) == expected, timeout=3), (
        f"missing {len(expected - stored_ids(store))} rows; writer stats: {w.stats}"
    )


# -- refused rows ---------------------------------------------------------------------------------------


def test_a_refused_row_goes_to_the_rejected_file_and_the_rest_of_the_batch_is_stored(
    any_store: Store, make_writer, tmp_path
) -> None:
    w = make_writer(store=any_store, buffer_size=100, flush_interval=60)
    good = [interaction(i) for i in range(40)]
    bad = interaction(999, "row", interaction_id="row-bad")
    for item in [*good[:20], bad, *good[20:]]:
        w.submit(bad_or_good, item)
    assert w.flush(timeout=10)
    assert stored_ids(any_store) == {i.interaction_id for i in good}
    assert w.stats.rejected == 1

    rejected = [
        orjson.loads(line)
        for p in (tmp_path / "journal").glob("rejected-*.jsonl")
        for line in p.read_bytes().splitlines()
    ]
    assert [r["r"]["interaction_id"] for r in rejected] == ["row-bad"]
    assert "IntegrityError" in rejected[0]["error"] or "NotNull" in rejected[0]["error"]
    assert "[EMAIL]" in rejected[0]["r"]["response"] or "[CREDIT_CARD]" in rejected[0]["r"]["response"]
    assert not spill_files(tmp_path / "journal")

    later = [interaction(i, "later") for i in range(10)]
    for item in later:
        w.submit(bad_or_good, item)
    assert w.flush(timeout=10)
    assert {i.interaction_id for i in later} <= stored_ids(any_store)


def test_a_row_the_driver_cannot_encode_costs_no_other_row_its_batch(
    store: Store, make_writer, tmp_path
) -> None:
    w = make_writer(buffer_size=100, flush_interval=60, retry_interval=0.05)
    items = [interaction(i, interaction_id=f"e-{i}-enc" if i == 5 else f"e-{i}") for i in range(10)]
    for item in items:
        w.submit(unencodable, item)
    assert w.flush(timeout=10)
    good = {i.interaction_id for i in items} - {"e-5-enc"}
    assert wait_until(lambda: good <= stored_ids(store), timeout=3), (
        f"lost {good - stored_ids(store)}; {w.stats}"
    )
    # The bad row itself is kept somewhere a person can find it: stored repaired, or in the rejected file.
    rejected = b"".join(p.read_bytes() for p in (tmp_path / "journal").glob("rejected-*.jsonl"))
    assert store.get_interaction("e-5-enc") is not None or b"e-5-enc" in rejected
    assert not spill_files(tmp_path / "journal")


def test_sync_future_of_a_refused_row_carries_the_error(store: Store, make_writer) -> None:
    w = make_writer(durability="sync", buffer_size=100, flush_interval=60)
    futures = {
        item.interaction_id: w.submit(bad_or_good, item)
        for item in (interaction(1), interaction(2, interaction_id="x-bad"))
    }
    assert futures["id-00001"].result(timeout=10) is None
    # The row was not committed; "acknowledged" would tell a short-lived caller that it is safe.
    assert futures["x-bad"].exception(timeout=10) is not None


def test_a_row_whose_day_cannot_be_named_costs_no_other_row_its_backup(
    store: Store, make_writer, tmp_path
) -> None:
    # Rows from other producers than the logger (node runs, feedback) do not pass its timestamp check.
    w = make_writer(backup=BackupWriter(tmp_path / "backups"), buffer_size=100, flush_interval=60)
    items = [interaction(0, interaction_id="t-far"), *(interaction(i, "t") for i in range(1, 11))]
    for item in items:  # the odd row first: its day group comes first in the batch
        w.submit(dated, item)
    assert w.flush(timeout=10)
    assert stored_ids(store) == {i.interaction_id for i in items}
    backed_up = {r["interaction_id"] for r in iter_backup(tmp_path / "backups", "interactions")}
    assert {i.interaction_id for i in items[1:]} <= backed_up


# -- convert errors -------------------------------------------------------------------------------------


def test_a_convert_that_raises_does_not_stop_the_writer(store: Store, make_writer) -> None:
    w = make_writer(buffer_size=100, flush_interval=60)
    items = [interaction(i, interaction_id=f"c-{i}-boom" if i % 10 == 3 else f"c-{i}") for i in range(50)]
    for item in items:
        w.submit(exploding, item)
    assert w.flush(timeout=10)
    assert stored_ids(store) == {i.interaction_id for i in items if not i.interaction_id.endswith("boom")}
    assert w.stats.invalid == 5
    assert "cannot convert" in w.stats.last_error
    w.submit(exploding, interaction(1000))
    assert w.flush(timeout=10)
    assert store.get_interaction("id-01000") is not None


def test_in_sync_mode_the_future_carries_the_convert_error(store: Store, make_writer) -> None:
    w = make_writer(durability="sync")
    fut = w.submit(exploding, interaction(1, interaction_id="s-boom"))
    with pytest.raises(ValueError, match="cannot convert s-boom"):
        fut.result(timeout=10)
    assert w.submit(exploding, interaction(2)).result(timeout=10) is None
    assert store.get_interaction("id-00002") is not None


# -- lifecycle ------------------------------------------------------------------------------------------


def test_close_flushes_what_is_queued(store: Store, make_writer) -> None:
    w = make_writer(buffer_size=1000, flush_interval=600)
    items = [interaction(i) for i in range(120)]
    for item in items:
        w.submit(to_rows, item)
    assert w.close(timeout=10)
    assert stored_ids(store) == {i.interaction_id for i in items}


def test_submit_after_close_raises(make_writer) -> None:
    w = make_writer()
    w.close(timeout=10)
    with pytest.raises(RuntimeError, match="closed"):
        w.submit(to_rows, interaction(1))


def _dead_pid() -> int:
    pid = int(
        subprocess.run(
            [sys.executable, "-c", "import os; print(os.getpid())"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    return pid


def _write_spill(path, items: list[ProductionInteraction], *, torn_tail: bool = False) -> None:
    lines = [orjson.dumps({"t": t, "r": r}) for item in items for t, r in to_rows(item)]
    data = b"\n".join(lines) + b"\n"
    if torn_tail:  # a write cut short by the crash: never acknowledged
        data += orjson.dumps({"t": "interactions", "r": to_rows(interaction(9999))[0][1]})[:40]
    path.write_bytes(data)


def test_a_spill_file_left_by_a_dead_process_is_replayed_by_a_new_writer(
    store: Store, make_writer, tmp_path
) -> None:
    journal_dir = tmp_path / "journal"
    journal_dir.mkdir()
    orphaned = [interaction(i, "orphan") for i in range(25)]
    dead = journal_dir / f"spill-{_dead_pid()}-1700000000000000000.jsonl"
    _write_spill(dead, orphaned, torn_tail=True)
    live_owner = [interaction(i, "live") for i in range(3)]
    live = journal_dir / "spill-1-1700000000000000000.jsonl"  # pid 1 is alive: its owner may still append
    _write_spill(live, live_owner)

    w = make_writer(flush_interval=600)
    assert w.close(timeout=10)
    assert stored_ids(store) == {i.interaction_id for i in orphaned}
    assert not dead.exists()
    assert live.exists()
    assert store.get_interaction("id-09999") is None


def test_rows_spilled_by_a_closed_writer_of_this_process_are_replayed_by_the_next_one(
    store: Store, make_writer, tmp_path, monkeypatch
) -> None:
    flaky = FlakyWrite(store)
    monkeypatch.setattr(store, "write", flaky)
    first = make_writer(flush_interval=600, retry_interval=0.05)
    spilled = [interaction(i, "first") for i in range(15)]
    for item in spilled:
        first.submit(to_rows, item)
    assert first.close(timeout=10) is False  # closed during the outage: its rows wait in the journal
    assert len(spill_files(tmp_path / "journal")) == 1

    flaky.down = False  # the database is back; the app opens a new writer on the same journal
    second = make_writer(flush_interval=0.02, retry_interval=0.05)
    second.submit(to_rows, interaction(0, "second"))
    assert second.flush(timeout=10)
    expected = {i.interaction_id for i in spilled} | {"second-00000"}
    assert wait_until(lambda: stored_ids(store) == expected, timeout=3), expected - stored_ids(store)


def test_a_writer_that_falls_behind_writes_bigger_batches(store: Store, make_writer) -> None:
    w = make_writer(buffer_size=10, flush_interval=600)
    gate = threading.Event()
    commit = w._commit

    def held_commit(*args: Any) -> None:
        gate.wait(10)  # the first batch is held while a backlog builds up behind it
        commit(*args)

    w._commit = held_commit
    for i in range(1000):
        w.submit(to_rows, interaction(i))
    gate.set()
    assert w.flush(timeout=30)
    assert store.count_interactions() == 1000
    # Fixed batches of 10 would take 100 transactions; batches grow to 16 x 10 under the backlog.
    assert w.stats.batches <= 1 + math.ceil(990 / 160) + 1


@pytest.mark.parametrize(
    ("sqlstate", "outage"),
    [("08006", True), ("57P01", True), ("53100", True), ("22001", False), ("23505", False), ("54000", False)],
)
def test_postgres_errors_are_outages_unless_the_row_is_at_fault(sqlstate: str, outage: bool) -> None:
    from sqlalchemy.exc import DBAPIError

    from cl_plugin.store.writer import _is_outage

    class Orig(Exception):
        pass

    orig = Orig("boom")
    orig.sqlstate = sqlstate  # type: ignore[attr-defined]
    # 54000 is "index row size exceeds maximum": a too-long value, which waiting would never fix
    assert _is_outage(DBAPIError("INSERT ...", {}, orig)) is outage
