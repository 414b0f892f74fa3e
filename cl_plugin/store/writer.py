"""The background writer: callers enqueue, one thread sanitizes, batches, commits and backs up.

``submit`` costs the caller an append to a deque. The writer thread wakes when ``buffer_size`` items are
queued, when ``flush_interval`` has passed, or when someone flushes or waits for durability; it converts
and sanitizes each item, writes each batch in one transaction, appends it to the gz JSONL backup, and only
then acknowledges it. When the database cannot be reached, batches go to the spill journal (already
sanitized, forced to disk) and are replayed once it answers again; until then :meth:`Writer.flush` returns
False. A row the database refuses is isolated by halving its batch, kept in the journal's dead-letter file,
and reported; the rest of the batch is stored. A table or column the database lacks is no outage: the rows
wait in the journal too, the error (with the fix) is logged once and raised from ``flush()`` and ``close()``.
"""

from __future__ import annotations

import atexit
import logging
import queue
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, OperationalError

from cl_plugin.errors import InvalidRecordError, StoreError, StoreSchemaError, StoreUnavailableError
from cl_plugin.store.backup import BackupWriter, encode_line
from cl_plugin.store.journal import Journal
from cl_plugin.store.schema import is_missing_schema, missing_schema_message
from cl_plugin.store.store import Batch, Store

__all__ = ["Convert", "Writer", "WriterStats"]

log = logging.getLogger("cl_plugin.writer")

# Turns one submitted payload into the (table, row) pairs it stores; runs on the writer thread.
Convert = Callable[[Any], Iterable[tuple[str, dict[str, Any]]]]

# The column whose unix time picks a row's daily backup file.
TIME_KEYS = {
    "interactions": "timestamp",
    "node_runs": "start_time",
    "decisions": "timestamp",
    "feedback": "created_at",
    "interaction_embeddings": "created_at",
    "attachments": "created_at",
    "feedback_attachments": "created_at",
}

_live_writers: weakref.WeakSet[Writer] = weakref.WeakSet()


def _no_rows(_: object) -> list:
    return []


@dataclass
class WriterStats:
    """Counters of one writer since it started."""

    submitted: int = 0
    written: int = 0
    unchanged: int = 0
    updated: int = 0
    rejected: int = 0
    invalid: int = 0
    dropped: int = 0
    lost: int = 0
    spilled: int = 0
    replayed: int = 0
    batches: int = 0
    backup_bytes: int = 0
    store_available: bool = True
    last_error: str | None = None
    errors: list[str] = field(default_factory=list)


class Writer:
    """Batches rows into a store (and/or gz backups) on a background thread.

    A store nobody set up is brought to the newest migration when the writer starts (or, when the database
    cannot be reached then, on the first write).

    Args:
        store: where rows go; None to keep backups only.
        backup: gz JSONL backup writer, or None.
        journal: spill journal for outages and refused rows (needed when ``store`` is given).
        buffer_size: queued items that trigger a write before the interval is up.
        flush_interval: seconds between timed writes.
        durability: ``"batch"`` acknowledges on enqueue; ``"sync"`` makes :meth:`submit` return a future
            that resolves only after the item is committed (or durably spilled).
        max_queue: items held in memory before :meth:`submit` waits (``block=True``) or drops.
        retry_interval: first wait before re-trying an unreachable database (doubles up to 30 s).
    """

    def __init__(
        self,
        store: Store | None,
        *,
        backup: BackupWriter | None = None,
        journal: Journal | None = None,
        buffer_size: int = 1000,
        flush_interval: float = 1.0,
        durability: Literal["batch", "sync"] = "batch",
        max_queue: int = 100_000,
        retry_interval: float = 0.5,
        name: str = "cl-plugin-writer",
    ) -> None:
        if store is not None and journal is None:
            raise ValueError("a writer with a store needs a journal for outages; pass journal=Journal(dir)")
        if store is not None:
            _prepare(store)
        self.store = store
        self.backup = backup
        self.journal = journal
        self.buffer_size = buffer_size
        self.flush_interval = flush_interval
        self.durability = durability
        self.max_queue = max_queue
        self.retry_interval = retry_interval
        self.stats = WriterStats()
        self._queue: deque[tuple[Convert, Any, Future | None]] = deque()
        self._wake = threading.Event()
        self._closed = False
        self._down_until = 0.0
        self._backoff = retry_interval
        self._check_journal = journal is not None and journal.has_pending()
        self._schema_error: StoreSchemaError | None = None  # set while writes find the schema incomplete
        self._row_owner: dict[int, Future] = {}  # id(row) -> future of the item that made it, per batch
        self._backup_worker = _Worker(f"{name}-backup")
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()
        _live_writers.add(self)

    # -- caller side (cheap) --------------------------------------------------------------------------

    def submit(self, convert: Convert, payload: Any, *, block: bool = True) -> Future | None:
        """Queue one payload; ``convert(payload)`` runs later on the writer thread.

        Args:
            convert: turns the payload into ``(table, row)`` pairs (sanitizing them).
            payload: the record.
            block: when the queue is full, wait for room (True) or drop the item and count it (False).

        Returns:
            In ``sync`` durability, a future resolved once the item is committed (its exception says why it
            was not); otherwise None.

        Raises:
            RuntimeError: the writer is closed.
        """
        if self._closed:
            raise RuntimeError("this writer is closed; create a new logger or store writer")
        if len(self._queue) >= self.max_queue:
            if not block:
                self.stats.dropped += 1
                return None
            while len(self._queue) >= self.max_queue and not self._closed:
                self._wake.set()
                time.sleep(0.001)
        fut: Future | None = Future() if self.durability == "sync" else None
        queue = self._queue
        queue.append((convert, payload, fut))
        self.stats.submitted += 1  # a statistic: flush() does not rely on it
        if fut is not None or len(queue) >= self.buffer_size:
            self._wake.set()
        return fut

    def flush(self, timeout: float | None = None) -> bool:
        """Write everything submitted so far.

        A marker goes through the queue behind every earlier item; items are handled in order, so when the
        marker's batch is committed, so is everything submitted before the call, from any thread.

        Returns:
            True when everything submitted is in the database. False if ``timeout`` seconds passed first,
            or while rows wait in the spill journal for the database to come back (``stats`` counts them).

        Raises:
            StoreSchemaError: the database lacks a table or column the rows need (they wait in the journal);
                the message says how to fix it.
        """
        if not self._thread.is_alive():
            return not self._queue
        # Even with an empty queue a batch may be in the middle of being written: the marker waits for it.
        marker: Future = Future()
        self._queue.append((_no_rows, None, marker))
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            self._wake.set()
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return False
            try:
                marker.exception(0.05 if remaining is None else min(0.05, remaining))
            except FutureTimeout:
                if not self._thread.is_alive():
                    return False
                continue
            if self._schema_error is not None:
                raise self._schema_error
            return not self._check_journal

    def close(self, timeout: float | None = 30.0) -> bool:
        """Flush and stop the thread.

        Returns:
            False if pending items could not be written in time, or rows wait in the spill journal (a later
            writer on the same journal replays them).

        Raises:
            StoreSchemaError: as :meth:`flush`; the writer is closed all the same.
        """
        if self._closed:
            return True
        try:
            ok = self.flush(timeout)
        finally:
            self._closed = True
            self._wake.set()
            self._thread.join(timeout)
            self._backup_worker.stop()
            if self.journal is not None:
                self.journal.release()
            _live_writers.discard(self)
        return ok

    @property
    def queue_size(self) -> int:
        """Items waiting to be written."""
        return len(self._queue)

    def counts(self) -> dict[str, Any]:
        """The counters of :class:`WriterStats` (without the error history), ``waiting_in_journal``: whether
        spilled rows still wait for the database, and ``queue_size``."""
        counts = asdict(self.stats)
        counts.pop("errors")
        counts["waiting_in_journal"] = self._check_journal
        counts["queue_size"] = len(self._queue)
        return counts

    # -- writer thread --------------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            self._wake.wait(self.flush_interval)
            self._wake.clear()
            try:
                self._drain()
            except Exception as exc:  # never let the thread die: the next cycle tries again
                self._note_error(exc)
                log.exception("cl_plugin writer cycle failed")
                time.sleep(0.1)
            if self._closed and not self._queue:
                return

    def _drain(self) -> None:
        if self._check_journal and self.store is not None:
            self._replay()
        while self._queue:
            # Behind by several batches: write bigger ones. Each transaction has fixed costs (and each
            # database call hands the GIL back and forth with a busy host thread), so a writer that takes
            # the same batch size however far behind it is may never catch up.
            backlog = len(self._queue)
            size = (
                self.buffer_size if backlog <= 4 * self.buffer_size else min(backlog, 16 * self.buffer_size)
            )
            items = []
            while self._queue and len(items) < size:
                items.append(self._queue.popleft())
            self._commit(*self._prepare(items))

    def _prepare(self, items: list[tuple[Convert, Any, Future | None]]) -> tuple:
        """Convert (and sanitize) items into rows and backup lines; a failing item fails alone."""
        rows: list[tuple[str, dict[str, Any]]] = []
        lines: dict[str, list[tuple[int, bytes]]] = {}
        owners: list[Future | None] = []
        self._row_owner = {}
        for convert, payload, fut in items:
            try:
                produced = list(convert(payload))
                if self.backup is not None:
                    for table, row in produced:
                        lines.setdefault(table, []).append(encode_line(row, TIME_KEYS[table]))
            except Exception as exc:
                self.stats.invalid += 1
                self._note_error(exc)
                if fut is not None:
                    fut.set_exception(exc)
                elif not isinstance(exc, InvalidRecordError):
                    log.exception("cl_plugin could not convert a record; it was not stored")
                continue
            rows.extend(produced)
            if fut is not None:
                for _, row in produced:
                    self._row_owner[id(row)] = fut
            owners.append(fut)
        return rows, lines, owners, len(items)

    def _commit(
        self,
        rows: list[tuple[str, dict[str, Any]]],
        lines: dict[str, list[tuple[int, bytes]]],
        owners: list[Future | None],
        count: int,
    ) -> None:
        """Store and back up one batch, then acknowledge it (or fail its futures if it could not be kept)."""
        error: Exception | None = None
        try:
            if rows:
                # gzip runs beside the database write; both release the GIL for most of their work.
                backup = (
                    self._backup_worker.submit(self._backup_lines, lines) if self.backup is not None else None
                )
                try:
                    self._store_rows(rows)
                finally:
                    if backup is not None:
                        backup.result()
        except Exception as exc:  # neither the store nor the journal took the rows
            error = exc
            self.stats.lost += len(rows)
            self._note_error(exc)
            log.exception("cl_plugin could neither store nor journal %d rows", len(rows))
        finally:
            for fut in owners:
                if fut is None or fut.done():
                    continue
                if error is None:
                    fut.set_result(None)
                else:
                    fut.set_exception(
                        StoreUnavailableError(
                            f"the record was not stored: the database and the journal both failed ({error})"
                        )
                    )

    def _store_rows(self, rows: list[tuple[str, dict[str, Any]]]) -> None:
        if self.store is None:
            return
        assert self.journal is not None
        if time.monotonic() < self._down_until:
            self.stats.spilled += self.journal.spill(rows)
            return
        try:
            self._write(rows)
        except Exception as exc:
            # An outage, a schema problem, or a failure we do not understand: the rows are safe in the journal.
            if not self._schema_failed(exc):
                self._mark_down(exc)
            self.stats.spilled += self.journal.spill(rows)
            self._check_journal = True
            return
        self._backoff = self.retry_interval
        self.stats.store_available = True
        if self._check_journal:
            self._replay()

    def _schema_failed(self, exc: BaseException) -> bool:
        """Whether ``exc`` says the schema is incomplete; if so, keep the error for flush() and log it once."""
        if not (isinstance(exc, StoreSchemaError) or is_missing_schema(exc)):
            return False
        self._note_error(exc)
        if self._schema_error is None:
            assert self.store is not None and self.journal is not None
            message = (
                str(exc)
                if isinstance(exc, StoreSchemaError)
                else missing_schema_message(self.store.safe_url, exc, str(self.journal.directory))
            )
            self._schema_error = StoreSchemaError(message)
            log.error("cl_plugin cannot write: %s", message)
        return True

    def _mark_down(self, exc: BaseException) -> None:
        self._note_error(exc)
        self.stats.store_available = False
        self._down_until = time.monotonic() + self._backoff
        self._backoff = min(self._backoff * 2, 30.0)
        log.warning(
            "cl_plugin store unavailable (%s); rows wait in the journal at %s",
            type(exc).__name__,
            self.journal.directory if self.journal else "-",
        )

    def _write(self, rows: list[tuple[str, dict[str, Any]]]) -> None:
        """Write rows in one transaction; on a data error, halve the batch until the bad row is alone."""
        assert self.store is not None and self.journal is not None
        batch = Batch()
        for table, row in rows:
            batch.add(table, row)
        try:
            res = self.store.write(batch)
        except (DBAPIError, UnicodeError, ValueError, TypeError, OverflowError) as exc:
            # Driver errors about values (not DBAPIError) are the row's fault too: isolate it.
            if isinstance(exc, DBAPIError) and (_is_outage(exc) or is_missing_schema(exc)):
                raise
            if len(rows) == 1:
                self.journal.reject(rows[0][0], rows[0][1], exc)
                self.stats.rejected += 1
                owner = self._row_owner.get(id(rows[0][1]))
                if owner is not None and not owner.done():
                    owner.set_exception(
                        StoreError(
                            f"the database refused this {rows[0][0]} row ({getattr(exc, 'orig', exc)}); "
                            "it is kept in the journal's rejected file"
                        )
                    )
                self._note_error(exc)
                log.error(
                    "cl_plugin: the database refused a %s row (%s); kept in the journal", rows[0][0], exc
                )
                return
            mid = len(rows) // 2
            self._write(rows[:mid])
            self._write(rows[mid:])
            return
        self.stats.written += res.inserted
        self.stats.unchanged += res.unchanged
        self.stats.updated += res.updated
        self.stats.batches += 1

    def _replay(self) -> None:
        """Replay spilled rows; if the store fails again, wait for the next try."""
        assert self.journal is not None
        if time.monotonic() < self._down_until:
            return
        try:
            self.stats.replayed += self.journal.replay(self._write)
        except Exception as exc:
            if not self._schema_failed(exc):
                self._mark_down(exc)
            return
        self._check_journal = False
        self.stats.store_available = True
        self._schema_error = None  # the rows a missing table or column held back are written now

    def _backup_lines(self, lines: dict[str, list[tuple[int, bytes]]]) -> None:
        assert self.backup is not None
        fsync = self.durability == "sync"
        for table, table_lines in lines.items():
            try:
                self.stats.backup_bytes += self.backup.append_lines(table, table_lines, fsync=fsync)
            except OSError as exc:
                self._note_error(exc)
                log.error("cl_plugin could not append to the backup (%s)", exc)

    def _note_error(self, exc: BaseException) -> None:
        msg = f"{type(exc).__name__}: {exc}"[:500]
        self.stats.last_error = msg
        self.stats.errors = [*self.stats.errors[-9:], msg]


def _prepare(store: Store) -> None:
    """Migrate a store that is behind before the first row comes; an unreachable database is left to the
    first write (the rows wait in the journal meanwhile), a schema this cl_plugin cannot write is raised."""
    try:
        store.ensure_schema(write=True)
    except DBAPIError as exc:
        if not _is_outage(exc):
            raise
        log.warning(
            "cl_plugin could not reach the database at %s to set it up (%s); the first write will",
            store.safe_url,
            type(exc).__name__,
        )


def _is_outage(exc: BaseException) -> bool:
    """Whether a database error means "cannot reach or write the database now" rather than "bad row".

    PostgreSQL says it with the SQLSTATE: classes 22 (data exception), 23 (integrity constraint) and 54 (a
    program limit, such as an index row too big for a long value) are the row's fault; anything else
    (connection, permissions, disk, shutdown, ...) is an outage to wait out.
    """
    if getattr(exc, "connection_invalidated", False):
        return True
    orig = getattr(exc, "orig", None)
    sqlstate = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    if sqlstate:
        return not str(sqlstate).startswith(("22", "23", "54"))
    if isinstance(exc, IntegrityError | DataError):
        return False
    if isinstance(exc, OperationalError):
        text = str(exc.orig).lower() if getattr(exc, "orig", None) is not None else str(exc).lower()
        bad_data = ("too many", "too big", "datatype mismatch", "string or blob too big")
        return not any(s in text for s in bad_data)
    return False


class _Worker:
    """One daemon thread running submitted calls in order.

    Not a ThreadPoolExecutor: those refuse new work once interpreter shutdown begins, which is exactly
    when the exit flush needs one.
    """

    def __init__(self, name: str) -> None:
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future:
        fut: Future = Future()
        self._jobs.put((fn, args, fut))
        return fut

    def stop(self) -> None:
        self._jobs.put(None)
        self._thread.join(5.0)

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            fn, args, fut = job
            try:
                fut.set_result(fn(*args))
            except BaseException as exc:
                fut.set_exception(exc)


@atexit.register
def _flush_at_exit() -> None:
    for writer in list(_live_writers):
        try:
            if not writer.close(timeout=10.0) and writer.journal is not None:
                log.warning(
                    "cl_plugin exits with rows not yet in the database; they wait in the journal at %s and "
                    "the next writer on it replays them",
                    writer.journal.directory,
                )
        except StoreSchemaError:  # logged when the writer first met it
            pass
        except Exception:  # exit must go on
            log.exception("cl_plugin writer could not flush at exit")
