"""The background writer: callers enqueue, one thread sanitizes, batches, commits and backs up.

``submit`` costs the caller an append to a deque. The writer thread wakes when ``buffer_size`` items are
queued, when ``flush_interval`` has passed, or when someone flushes or waits for durability; it converts
and sanitizes each item, writes each batch in one transaction, appends it to the gz JSONL backup, and only
then acknowledges it. When the database cannot be reached, batches go to the spill journal (already
sanitized, forced to disk) and are replayed once it answers again. A row the database refuses is isolated
by halving its batch, kept in the journal's dead-letter file, and reported; the rest of the batch is stored.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from cl_plugin.errors import InvalidRecordError
from cl_plugin.store.backup import BackupWriter
from cl_plugin.store.journal import Journal
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
}

_live_writers: weakref.WeakSet[Writer] = weakref.WeakSet()


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
    spilled: int = 0
    replayed: int = 0
    batches: int = 0
    backup_bytes: int = 0
    store_available: bool = True
    last_error: str | None = None
    errors: list[str] = field(default_factory=list)


class Writer:
    """Batches rows into a store (and/or gz backups) on a background thread.

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
        self._done = threading.Condition()
        self._processed = 0
        self._closed = False
        self._down_until = 0.0
        self._backoff = retry_interval
        self._check_journal = journal is not None and journal.has_pending()
        self._backup_pool = ThreadPoolExecutor(1, thread_name_prefix=f"{name}-backup")
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
        self._queue.append((convert, payload, fut))
        self.stats.submitted += 1
        if fut is not None or len(self._queue) >= self.buffer_size:
            self._wake.set()
        return fut

    def flush(self, timeout: float | None = None) -> bool:
        """Write everything submitted so far. Returns False if ``timeout`` seconds passed first."""
        target = self.stats.submitted
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._done:
            while self._processed < target:
                if not self._thread.is_alive():
                    return False
                self._wake.set()
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._done.wait(0.05 if remaining is None else min(0.05, remaining))
        return True

    def close(self, timeout: float | None = 30.0) -> bool:
        """Flush and stop the thread. Returns False if pending items could not be written in time."""
        if self._closed:
            return True
        ok = self.flush(timeout)
        self._closed = True
        self._wake.set()
        self._thread.join(timeout)
        self._backup_pool.shutdown(wait=True)
        _live_writers.discard(self)
        return ok

    @property
    def queue_size(self) -> int:
        """Items waiting to be written."""
        return len(self._queue)

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
            items = []
            limit = max(self.buffer_size, 1)
            while self._queue and len(items) < limit:
                items.append(self._queue.popleft())
            self._process(items)

    def _process(self, items: list[tuple[Convert, Any, Future | None]]) -> None:
        rows: list[tuple[str, dict[str, Any]]] = []
        owners: list[Future | None] = []
        for convert, payload, fut in items:
            try:
                produced = list(convert(payload))
            except Exception as exc:
                self.stats.invalid += 1
                self._note_error(exc)
                if fut is not None:
                    fut.set_exception(exc)
                elif not isinstance(exc, InvalidRecordError):
                    log.exception("cl_plugin could not convert a record; it was not stored")
                continue
            rows.extend(produced)
            owners.append(fut)
        try:
            if rows:
                # The backup (JSON encoding, then gzip, which releases the GIL) runs beside the database
                # write (whose SQLite steps release it too); the batch is acknowledged when both are done.
                backup = self._backup_pool.submit(self._backup_rows, rows) if self.backup is not None else None
                try:
                    self._store_rows(rows)
                finally:
                    if backup is not None:
                        backup.result()
        finally:
            for fut in owners:
                if fut is not None and not fut.done():
                    fut.set_result(None)
            with self._done:
                self._processed += len(items)
                self._done.notify_all()

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
            # An outage, or a failure we do not understand: either way the rows are safe in the journal.
            self._mark_down(exc)
            self.stats.spilled += self.journal.spill(rows)
            self._check_journal = True
            return
        self._backoff = self.retry_interval
        self.stats.store_available = True
        if self._check_journal:
            self._replay()

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
        except DBAPIError as exc:
            if _is_outage(exc):
                raise
            if len(rows) == 1:
                self.journal.reject(rows[0][0], rows[0][1], exc)
                self.stats.rejected += 1
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
            self._mark_down(exc)
            return
        self._check_journal = False
        self.stats.store_available = True

    def _backup_rows(self, rows: list[tuple[str, dict[str, Any]]]) -> None:
        if self.backup is None:
            return
        by_table: dict[str, list[dict[str, Any]]] = {}
        for table, row in rows:
            by_table.setdefault(table, []).append(row)
        for table, table_rows in by_table.items():
            try:
                self.stats.backup_bytes += self.backup.append(
                    table, table_rows, time_key=TIME_KEYS[table], fsync=self.durability == "sync"
                )
            except OSError as exc:
                self._note_error(exc)
                log.error("cl_plugin could not append to the backup (%s)", exc)

    def _note_error(self, exc: BaseException) -> None:
        msg = f"{type(exc).__name__}: {exc}"[:500]
        self.stats.last_error = msg
        self.stats.errors = [*self.stats.errors[-9:], msg]


def _is_outage(exc: BaseException) -> bool:
    """Whether a database error means "cannot reach or write the database now" rather than "bad row"."""
    if getattr(exc, "connection_invalidated", False):
        return True
    if isinstance(exc, InterfaceError):
        return True
    if isinstance(exc, OperationalError):
        text = str(exc.orig).lower() if getattr(exc, "orig", None) is not None else str(exc).lower()
        bad_data = ("too many", "too big", "datatype mismatch", "string or blob too big")
        return not any(s in text for s in bad_data)
    return False


@atexit.register
def _flush_at_exit() -> None:
    for writer in list(_live_writers):
        try:
            writer.close(timeout=10.0)
        except Exception:  # exit must go on
            log.exception("cl_plugin writer could not flush at exit")
