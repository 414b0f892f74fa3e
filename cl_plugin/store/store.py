"""The store: one SQLModel schema on SQLite (embedded default) or PostgreSQL (scale-out).

Writes come in batches, one transaction per batch, through SQLAlchemy Core with the driver's
``executemany`` (building one ORM object per row is an order of magnitude slower). Reads are typed queries
with every filter the classic API uses, plus chunked iteration for scans that must not hold everything in
memory. ``setup()`` runs the migrations, idempotently and under a lock, so several processes may call it;
the first write runs it too, so a store is ready to write as soon as it is built. Reads never migrate: on a
database behind the newest migration they raise :class:`~cl_plugin.errors.StoreSchemaError` with the fix.

This module keeps interactions and what hangs off them; every other concern keeps its queries in a module
of its own beside it (``feedback``, ``queue``, ``models``, ``ab``, ``drift``, ``runs``, ``retention``), as an
object the store builds and the rest of the code reaches one way: ``store.<concern>.<verb>(...)``.
"""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from itertools import chain
from operator import itemgetter
from typing import Any, Literal

import numpy as np
import orjson
from sqlalchemy import Connection, Engine, Integer, Select, func, select, text, tuple_
from sqlalchemy import Table as SATable

from cl_plugin.errors import StoreSchemaError
from cl_plugin.store.ab import ABTests
from cl_plugin.store.attachments import ATTACHMENT_LOCK, Attachments
from cl_plugin.store.batch import Batch, WriteResult
from cl_plugin.store.drift import DriftEvents
from cl_plugin.store.engine import WRITE, make_engine
from cl_plugin.store.feedback import Feedback
from cl_plugin.store.filters import interaction_conditions
from cl_plugin.store.models import Models
from cl_plugin.store.queue import AnnotationQueue
from cl_plugin.store.retention import Retention
from cl_plugin.store.rows import INTERACTION_COLUMNS, dumps, interaction_from_row, rows_to_interactions
from cl_plugin.store.runs import Runs
from cl_plugin.store.schema import (
    current_revision,
    head_revision,
    is_known_revision,
    reader_message,
    upgrade,
)
from cl_plugin.store.tables import (
    AnnotationItem,
    AttachmentRow,
    Decision,
    Interaction,
    InteractionEmbedding,
    InteractionRevision,
    NodeRun,
)
from cl_plugin.store.tables import (
    Feedback as FeedbackRow,
)
from cl_plugin.store.tables import (
    FeedbackAttachment as FeedbackAttachmentRow,
)

__all__ = ["Batch", "Store", "WriteResult"]

log = logging.getLogger("cl_plugin.store")

_INTERACTIONS: SATable = Interaction.__table__  # type: ignore[assignment]
_TABLES: dict[str, SATable] = {
    "interactions": _INTERACTIONS,
    "node_runs": NodeRun.__table__,  # type: ignore[dict-item]
    "decisions": Decision.__table__,  # type: ignore[dict-item]
    "feedback": FeedbackRow.__table__,  # type: ignore[dict-item]
    "annotation_queue": AnnotationItem.__table__,  # type: ignore[dict-item]
    "interaction_embeddings": InteractionEmbedding.__table__,  # type: ignore[dict-item]
    "attachments": AttachmentRow.__table__,  # type: ignore[dict-item]
    "feedback_attachments": FeedbackAttachmentRow.__table__,  # type: ignore[dict-item]
}
_REVISIONS: SATable = InteractionRevision.__table__  # type: ignore[assignment]
_FEEDBACK: SATable = _TABLES["feedback"]
_TABLE_ORDER = ("interactions", "node_runs", "decisions", "feedback", "attachments", "feedback_attachments")
# Tables whose rows carry bytes as base64 text (the journal and the backups are JSON): column to decode.
_BASE64_COLUMNS = {"interaction_embeddings": "vector", "attachments": "content"}
# Tables where a row written again replaces the stored one (an interaction logged again with a new vector).
_REPLACED_TABLES = frozenset({"interaction_embeddings"})
_EMBEDDINGS: SATable = _TABLES["interaction_embeddings"]
_ADVISORY_LOCK_ID = 0x636C5F706C75  # "cl_plu": serialises setup() across PostgreSQL clients


def _table_rank(name: str) -> int:
    """Write order: interactions first, so rows that refer to them (and feedback) find them."""
    return _TABLE_ORDER.index(name) if name in _TABLE_ORDER else len(_TABLE_ORDER)


class Store:
    """A database of interactions, node runs, decisions and feedback.

    Build one with :meth:`from_url`. The first write (or a handler, logger, registry or A/B framework
    taking the store) brings the schema to the newest migration; reads on a database that is behind raise
    :class:`~cl_plugin.errors.StoreSchemaError` naming :meth:`setup` and ``cl-plugin migrate`` instead of
    migrating behind the user's back.

    Attributes:
        feedback: :class:`~cl_plugin.store.feedback.Feedback`: record feedback, read its history.
        attachments: :class:`~cl_plugin.store.attachments.Attachments`: feedback attachments.
        queue: :class:`~cl_plugin.store.queue.AnnotationQueue`: the annotation queue.
        models: :class:`~cl_plugin.store.models.Models`: model versions, aliases and their moves.
        ab: :class:`~cl_plugin.store.ab.ABTests`: A/B tests, their groups and outcomes.
        drift: :class:`~cl_plugin.store.drift.DriftEvents`: drift alarms.
        runs: :class:`~cl_plugin.store.runs.Runs`: maintenance runs and leases.
        retention: :class:`~cl_plugin.store.retention.Retention`: purging old records.

    Example:
        >>> store = Store.from_url("sqlite://")
        >>> store.count_interactions()  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        cl_plugin.errors.StoreSchemaError: the database at sqlite:// has no cl_plugin tables yet: ...
        >>> store.setup().count_interactions()
        0
    """

    def __init__(self, engine: Engine, lock: Any, url: str) -> None:
        self.engine = engine
        self._lock = lock
        self.url = url
        self._insert_columns = {
            name: [c.name for c in t.columns if not (c.primary_key and c.autoincrement is True)]
            for name, t in _TABLES.items()
        }
        self._insert_sql = {name: self._insert_statement(t) for name, t in _TABLES.items()}
        self._multi_insert_sql: dict[tuple[str, int], str] = {}
        self._schema_ready = False  # set once the database is known to be at the newest migration
        # Every other concern keeps its tables in a module of its own, reached as store.<concern>.<verb>.
        self.feedback = Feedback(self)
        self.attachments = Attachments(self)
        self.queue = AnnotationQueue(self)
        self.models = Models(self)
        self.ab = ABTests(self)
        self.drift = DriftEvents(self)
        self.runs = Runs(self)
        self.retention = Retention(self)

    @classmethod
    def from_url(cls, url: str, *, synchronous: str = "NORMAL", **engine_kwargs: Any) -> Store:
        """Open a store.

        Args:
            url: ``sqlite:///path/to/file.db``, ``sqlite://`` (in memory, one process) or
                ``postgresql+psycopg://user@host:5432/db``.
            synchronous: SQLite durability: ``NORMAL`` survives a killed process, ``FULL`` a power cut too.
            **engine_kwargs: passed to :func:`sqlalchemy.create_engine`.

        Returns:
            The store, ready to write: the first write runs :meth:`setup`.

        Raises:
            ConfigError: the URL is not a supported database.
            MissingDependencyError: PostgreSQL without ``cl-plugin[postgres]`` installed.
        """
        engine, lock = make_engine(url, synchronous=synchronous, **engine_kwargs)
        return cls(engine, lock, url)

    @property
    def dialect(self) -> str:
        """``"sqlite"`` or ``"postgresql"``."""
        return self.engine.dialect.name

    def __repr__(self) -> str:
        return f"Store({self.safe_url!r})"

    # -- schema and connections ---------------------------------------------------------------------

    def setup(self) -> Store:
        """Create or upgrade the schema to the newest migration. Safe to call from many processes at once.

        Idempotent: the migrations run in one transaction holding a lock (SQLite: ``BEGIN IMMEDIATE``, the
        database write lock; PostgreSQL: an advisory lock), and read the applied version under it, so of
        several processes racing on an empty database one migrates and the others find it done. Writes call
        it on first use; call it yourself (or run ``cl-plugin migrate``) before reading a new database.

        Returns:
            The store itself, for chaining.

        Raises:
            StoreSchemaError: the database was migrated by a newer cl_plugin.
        """
        with self._lock, self.engine.connect().execution_options(**WRITE) as conn, conn.begin():
            if self.dialect == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _ADVISORY_LOCK_ID})
            current = current_revision(conn)
            if current is not None and not is_known_revision(current):
                raise StoreSchemaError(reader_message(self.safe_url, current))
            if current != head_revision():
                upgrade(conn)
        self._schema_ready = True
        return self

    def schema_version(self) -> str | None:
        """The id of the newest migration applied, or None for an empty database."""
        with self._lock, self.engine.connect() as conn:
            return current_revision(conn)

    @property
    def safe_url(self) -> str:
        """The database URL with its password hidden, for messages and logs."""
        return self.engine.url.render_as_string(hide_password=True)

    def ensure_schema(self, *, write: bool = True) -> None:
        """Make sure the schema is at the newest migration: for a writer, migrate; for a reader, raise.

        Checked once per store (a flag afterwards), so it costs the hot path nothing. Writes call it, and so
        do the handler, the logger, the registry and the A/B framework when they take a store.

        Args:
            write: run :meth:`setup` when the database is behind (True), or raise (False, for reads).

        Raises:
            StoreSchemaError: a read on a database that is behind, or a write on one a newer cl_plugin made.
        """
        if self._schema_ready:
            return
        current = self.schema_version()
        if current == head_revision():
            self._schema_ready = True
        elif write:
            self.setup()
        else:
            raise StoreSchemaError(reader_message(self.safe_url, current))

    @contextmanager
    def read_connection(self) -> Iterator[Connection]:
        """A connection for reads, for modules that keep their own queries in the store.

        Yields:
            The connection (no transaction is begun; begin one for a consistent multi-statement read).

        Raises:
            StoreSchemaError: the database is behind the newest migration (run :meth:`setup` first).
        """
        self.ensure_schema(write=False)
        with self._lock, self.engine.connect() as conn:
            yield conn

    def read_rows(self, stmt: Select, json_cols: tuple[str, ...] = ()) -> list[dict[str, Any]]:
        """The rows of a select as dicts, with the JSON text columns ``json_cols`` decoded (a NULL stays
        None): the one read path of every module that keeps its own tables in the store.

        Args:
            stmt: the select.
            json_cols: columns that hold JSON text.

        Returns:
            One dict per row, keyed by column name.

        Raises:
            StoreSchemaError: the database is behind the newest migration (run :meth:`setup` first).
        """
        with self.read_connection() as conn:
            res = conn.execute(stmt)
            out = [dict(zip(res.keys(), r, strict=True)) for r in res]
        for row in out:
            for col in json_cols:
                if row.get(col) is not None:
                    row[col] = orjson.loads(row[col])
        return out

    @contextmanager
    def transaction(self, lock: str | None = None) -> Iterator[Connection]:
        """A write transaction, for modules that keep their own tables in the store.

        Args:
            lock: a name; transactions holding the same name run one at a time across processes (SQLite:
                every write transaction takes the database write lock; PostgreSQL: an advisory lock).

        Yields:
            The connection; the transaction commits when the block exits normally.

        Raises:
            StoreSchemaError: the database was migrated by a newer cl_plugin (an older one is migrated first).
        """
        self.ensure_schema(write=True)
        with self._lock, self.engine.connect().execution_options(**WRITE) as conn, conn.begin():
            if lock is not None and self.dialect == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(hashtext(:k))"), {"k": lock})
            yield conn

    def ping(self) -> None:
        """Raise if the database cannot be reached."""
        with self._lock, self.engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")

    def close(self) -> None:
        """Release every pooled connection."""
        self.engine.dispose()

    # -- writes ---------------------------------------------------------------------------------------

    def _insert_statement(self, table: SATable) -> str:
        cols = [c.name for c in table.columns if not (c.primary_key and c.autoincrement is True)]
        mark = "?" if self.engine.dialect.paramstyle == "qmark" else "%s"
        pk = ", ".join(c.name for c in table.primary_key.columns)
        quoted = ", ".join(self.engine.dialect.identifier_preparer.quote(c) for c in cols)
        marks = ", ".join([mark] * len(cols))
        action = "DO NOTHING"
        if table.name in _REPLACED_TABLES:
            keys = {c.name for c in table.primary_key.columns}
            quote = self.engine.dialect.identifier_preparer.quote
            action = "DO UPDATE SET " + ", ".join(
                f"{quote(c)} = excluded.{quote(c)}" for c in cols if c not in keys
            )
        return f"INSERT INTO {table.name} ({quoted}) VALUES ({marks}) ON CONFLICT ({pk}) {action}"

    def _insert_rows(self, conn: Connection, name: str, params: list[tuple]) -> int:
        """Insert rows, skipping existing keys; returns how many were inserted.

        On SQLite, rows go in multi-row ``INSERT ... VALUES (...), (...)`` statements of up to 256 rows
        (chunk sizes are powers of two, so a handful of prepared statements serve every batch size): the
        ``sqlite3`` module releases and re-takes the GIL around every row of an ``executemany``, and under
        a busy host thread each re-take can wait a whole switch interval (5 ms).
        """
        if self.dialect != "sqlite":
            return conn.exec_driver_sql(self._insert_sql[name], params).rowcount
        inserted, i, n = 0, 0, len(params)
        while i < n:
            size = min(256, 1 << ((n - i).bit_length() - 1))
            sql = self._multi_insert_sql.get((name, size))
            if sql is None:
                one = self._insert_sql[name]
                head, _, tail = one.partition(" VALUES ")
                values, _, conflict = tail.partition(") ON CONFLICT")
                sql = f"{head} VALUES {', '.join([values + ')'] * size)} ON CONFLICT{conflict}"
                self._multi_insert_sql[(name, size)] = sql
            inserted += conn.exec_driver_sql(sql, tuple(chain.from_iterable(params[i : i + size]))).rowcount
            i += size
        return inserted

    def write(self, batch: Batch, *, conn: Connection | None = None) -> WriteResult:
        """Write a batch in one transaction.

        A row whose primary key exists already is an idempotent no-op when its data is the same; an
        interaction logged again with different data replaces the stored one, whose earlier content is kept
        in ``interaction_revisions``. Nothing is silently dropped.

        Args:
            batch: rows by table name (``interactions``, ``node_runs``, ``decisions``, ``feedback``,
                ``attachments``, ``feedback_attachments``, ``interaction_embeddings``).
            conn: a connection of :meth:`transaction` to write in, beside the caller's own statements (the
                batch then commits or rolls back with them); by default a transaction of its own.

        Returns:
            Counts of inserted, unchanged and updated rows.
        """
        if conn is None:
            with self.transaction() as own:
                return self._write_batch(own, batch)
        return self._write_batch(conn, batch)

    def _write_batch(self, conn: Connection, batch: Batch) -> WriteResult:
        result = WriteResult()
        if batch.tables.get("attachments") and self.dialect == "postgresql":
            # Shared: writers of attachments run side by side; retention's sweep waits for them.
            conn.execute(text("SELECT pg_advisory_xact_lock_shared(:k)"), {"k": ATTACHMENT_LOCK})
        # Interactions first: feedback in the same batch is then applied to rows that exist.
        for name in sorted(batch.tables, key=_table_rank):
            if batch.tables[name]:
                self._write_table(conn, name, batch.tables[name], result)
        touched = {r["interaction_id"] for r in batch.tables.get("feedback", ())}
        interactions = batch.tables.get("interactions")
        if interactions and conn.exec_driver_sql("SELECT 1 FROM feedback LIMIT 1").first() is not None:
            # Feedback may have come before its interaction, or a re-logged row may have replaced
            # the copied score: feedback stays the source of truth for the feedback columns.
            touched.update(r["interaction_id"] for r in interactions)
        if touched:
            self._apply_feedback(conn, sorted(touched))
        return result

    def _apply_feedback(self, conn: Connection, ids: list[str]) -> None:
        """Copy the latest user score and thumbs, and every correction, from feedback to interactions."""
        f, c = _FEEDBACK.c, _INTERACTIONS.c
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            history: dict[str, list[Any]] = {}
            for row in conn.execute(
                select(f.interaction_id, f.score, f.thumbs_up_down, f.correction, f.source)
                .where(f.interaction_id.in_(chunk))
                .order_by(f.created_at, f.feedback_id)
            ):
                history.setdefault(row[0], []).append(row)
            if not history:
                continue
            stored = {
                row[0]: row[1:]
                for row in conn.execute(
                    select(c.interaction_id, c.corrections, c.user_feedback_score, c.thumbs_up_down).where(
                        c.interaction_id.in_(list(history))
                    )
                )
            }
            for iid in sorted(history):  # one lock order for every writer (see ABTests.add_results)
                rows = history[iid]
                if iid not in stored:
                    continue  # feedback that is waiting for its interaction
                user = [r for r in rows if r.source == "user"]
                score = next((r.score for r in reversed(user) if r.score is not None), None)
                thumbs = next((r.thumbs_up_down for r in reversed(user) if r.thumbs_up_down), None)
                had, had_score, had_thumbs = stored[iid]
                corrections = orjson.loads(had) if had else []
                new = [r.correction for r in rows if r.correction and r.correction not in corrections]
                values: dict[str, Any] = {}
                if new:
                    values["corrections"] = dumps(corrections + new)
                if score is not None and score != had_score:
                    values["user_feedback_score"] = score
                if thumbs is not None and thumbs != had_thumbs:
                    values["thumbs_up_down"] = thumbs
                if values:  # most rows have their feedback already (logged with it, or re-logged)
                    conn.execute(_INTERACTIONS.update().where(c.interaction_id == iid).values(**values))

    def _write_table(
        self, conn: Connection, name: str, rows: list[dict[str, Any]], result: WriteResult
    ) -> None:
        cols = self._insert_columns[name]
        column = _BASE64_COLUMNS.get(name)
        if column is not None:
            # Bytes travel as base64 text (journal and backups are JSON); the column is binary.
            rows = [{**r, column: base64.b64decode(r[column])} for r in rows]
        try:
            getter = itemgetter(*cols)
            params = [getter(row) for row in rows]
        except KeyError:  # rows that leave some columns out: missing means NULL
            params = [tuple(row.get(c) for c in cols) for row in rows]
        inserted = self._insert_rows(conn, name, params)
        if inserted == len(rows) and self.engine.dialect.supports_sane_multi_rowcount:
            result.inserted += inserted
            return
        if name != "interactions":
            result.inserted += max(inserted, 0)
            result.unchanged += len(rows) - max(inserted, 0)
            return
        self._reconcile_interactions(conn, rows, inserted, result)

    def _reconcile_interactions(
        self, conn: Connection, rows: list[dict[str, Any]], inserted: int, result: WriteResult
    ) -> None:
        """Some ids existed: keep identical repeats as no-ops, update changed ones and keep their history."""
        ids = list({r["interaction_id"] for r in rows})
        current: dict[str, dict[str, Any]] = {}
        for chunk_start in range(0, len(ids), 500):
            chunk = ids[chunk_start : chunk_start + 500]
            res = conn.execute(select(_INTERACTIONS).where(_INTERACTIONS.c.interaction_id.in_(chunk)))
            keys = list(res.keys())
            for values in res:
                current[values[0]] = dict(zip(keys, values, strict=True))
        updated = 0
        for row in rows:
            iid = row["interaction_id"]
            stored = current[iid]
            if all(stored.get(c) == row.get(c) for c in INTERACTION_COLUMNS):
                continue
            conn.execute(
                _REVISIONS.insert().values(interaction_id=iid, revised_at=time.time(), previous=dumps(stored))
            )
            values = {c: row.get(c) for c in INTERACTION_COLUMNS if c != "interaction_id"}
            conn.execute(_INTERACTIONS.update().where(_INTERACTIONS.c.interaction_id == iid).values(**values))
            current[iid] = {**stored, **values}
            updated += 1
        result.inserted += inserted
        result.updated += updated
        result.unchanged += len(rows) - inserted - updated

    # -- reads ----------------------------------------------------------------------------------------

    def query_interactions(
        self,
        *,
        limit: int | None = 100,
        offset: int = 0,
        order: Literal["newest", "oldest"] = "newest",
        with_embeddings: bool = False,
        **filters: Any,
    ) -> list[dict[str, Any]]:
        """Interactions matching every given filter, newest first by default.

        Args:
            limit: most rows to return (None for all).
            offset: rows to skip.
            order: ``"newest"`` or ``"oldest"`` first.
            with_embeddings: add ``query_embedding`` (a float32 array, or None) to each row: the vector the
                application logged with the interaction, which clustering and selection then use.
            **filters: ``min_feedback_score``, ``max_feedback_score`` (inclusive), ``agent`` (one name or a
                list), ``session_id``, ``start_time`` (inclusive), ``end_time`` (exclusive),
                ``error_occurred``, ``hallucination_detected``, ``retrieval_failed``, ``has_feedback``,
                ``graph_name``.

        Returns:
            One dict per interaction with the original design's fields (flags as booleans, ``metadata`` as a
            dict) plus ``run_id``, ``graph_name``, ``user_id`` and ``corrections``.

        Raises:
            TypeError: an unknown filter name.
            ValueError: a negative ``limit`` or ``offset``, or an unknown ``order``.
        """
        if (limit is not None and limit < 0) or offset < 0:
            raise ValueError(f"limit and offset must be >= 0 (got limit={limit}, offset={offset})")
        if order not in ("newest", "oldest"):
            raise ValueError(f"order must be 'newest' or 'oldest' (got {order!r})")
        c = _INTERACTIONS.c
        ts, iid = (
            (c.timestamp.desc(), c.interaction_id.desc())
            if order == "newest"
            else (c.timestamp, c.interaction_id)
        )
        stmt = (
            select(_INTERACTIONS)
            .where(*interaction_conditions(**filters))
            .order_by(ts, iid)
            .offset(offset or None)
        )
        if limit is not None:
            stmt = stmt.limit(limit)
        rows = self._fetch_interactions(stmt)
        return self._attach_embeddings(rows) if with_embeddings else rows

    def embeddings(self, interaction_ids: Iterable[str]) -> dict[str, np.ndarray]:
        """The stored query embeddings of these interactions (those that have one), as float32 arrays."""
        ids = list(dict.fromkeys(interaction_ids))
        e = _EMBEDDINGS.c
        out: dict[str, np.ndarray] = {}
        with self.read_connection() as conn:
            for start in range(0, len(ids), 500):
                stmt = select(e.interaction_id, e.vector).where(
                    e.interaction_id.in_(ids[start : start + 500])
                )
                for iid, vector in conn.execute(stmt):
                    out[iid] = np.frombuffer(bytes(vector), dtype="<f4")
        return out

    def _attach_embeddings(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        vectors = self.embeddings(r["interaction_id"] for r in rows)
        for r in rows:
            r["query_embedding"] = vectors.get(r["interaction_id"])
        return rows

    def _fetch_interactions(self, stmt: Select) -> list[dict[str, Any]]:
        """Run a select of whole interaction rows and convert them to the classic API's dicts.

        Reads return many wide rows. The statement goes through SQLAlchemy's execution (so its compiled
        form is cached), but the rows come straight off the driver's cursor as tuples and are turned into
        dicts in one tight loop: SQLAlchemy's row objects and a per-row helper call would cost more than the
        database does on a 1,000-row read.
        """
        with self.read_connection() as conn:
            res = conn.execute(stmt)
            try:
                keys = tuple(res.keys())
                rows = res.cursor.fetchall()
            finally:
                res.close()
        return rows_to_interactions(keys, rows)

    def iter_interactions(
        self, *, chunk_size: int = 5000, with_embeddings: bool = False, **filters: Any
    ) -> Iterator[list[dict[str, Any]]]:
        """Scan matching interactions oldest first, in chunks, holding one chunk in memory at a time.

        Uses keyset pagination on ``(timestamp, interaction_id)``, so rows written during the scan do not
        shift its pages.

        Args:
            chunk_size: rows per chunk.
            with_embeddings: as in :meth:`query_interactions`.
            **filters: as in :meth:`query_interactions`.

        Yields:
            Lists of interaction dicts.
        """
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1 (got {chunk_size})")
        c = _INTERACTIONS.c
        conds = interaction_conditions(**filters)
        after: tuple[float, str] | None = None
        while True:
            where = list(conds)
            if after is not None:
                where.append(tuple_(c.timestamp, c.interaction_id) > tuple_(*after))
            stmt = (
                select(_INTERACTIONS).where(*where).order_by(c.timestamp, c.interaction_id).limit(chunk_size)
            )
            chunk = self._fetch_interactions(stmt)
            if not chunk:
                return
            yield self._attach_embeddings(chunk) if with_embeddings else chunk
            if len(chunk) < chunk_size:
                return
            after = (chunk[-1]["timestamp"], chunk[-1]["interaction_id"])

    def count_interactions(self, **filters: Any) -> int:
        """How many interactions match the filters of :meth:`query_interactions`."""
        stmt = select(func.count()).select_from(_INTERACTIONS).where(*interaction_conditions(**filters))
        with self.read_connection() as conn:
            return int(conn.execute(stmt).scalar_one())

    def get_interaction(self, interaction_id: str) -> dict[str, Any] | None:
        """One interaction by id, or None."""
        stmt = select(_INTERACTIONS).where(_INTERACTIONS.c.interaction_id == interaction_id)
        with self.read_connection() as conn:
            res = conn.execute(stmt)
            row = res.first()
            return None if row is None else interaction_from_row(dict(zip(res.keys(), row, strict=True)))

    def interaction_revisions(self, interaction_id: str) -> list[dict[str, Any]]:
        """Earlier versions of an interaction that was logged again with different data, oldest first."""
        stmt = (
            select(_REVISIONS.c.revised_at, _REVISIONS.c.previous)
            .where(_REVISIONS.c.interaction_id == interaction_id)
            .order_by(_REVISIONS.c.id)
        )
        with self.read_connection() as conn:
            return [
                {"revised_at": at, "previous": interaction_from_row(orjson.loads(prev))}
                for at, prev in conn.execute(stmt)
            ]

    def statistics(self, **filters: Any) -> dict[str, Any]:
        """Aggregates computed in the database over the matching interactions.

        Returns:
            ``total_interactions``, ``rated_interactions``, ``avg_feedback_score``, ``thumbs_up`` and
            ``thumbs_down`` counts, ``thumbs_up_rate``, ``error_rate``, ``hallucination_rate`` and
            ``retrieval_failure_rate`` (each over the interactions where the flag is known),
            ``avg_latency_ms``, ``avg_retrieval_quality``, ``total_tokens``, ``total_cost``,
            ``agent_distribution``, ``first_timestamp`` and ``last_timestamp``. Rates and averages are None
            when nothing is known.
        """
        c = _INTERACTIONS.c
        where = interaction_conditions(**filters)

        def rate(col: Any) -> Any:
            return func.avg(col)

        stmt = select(
            func.count(),
            func.count(c.user_feedback_score),
            func.avg(c.user_feedback_score),
            func.sum((c.thumbs_up_down == "up").cast(Integer)),
            func.sum((c.thumbs_up_down == "down").cast(Integer)),
            rate(c.error_occurred),
            rate(c.hallucination_detected),
            rate(c.retrieval_failed),
            func.avg(c.latency_ms),
            func.avg(c.retrieval_quality),
            func.sum(c.tokens_used),
            func.sum(c.cost),
            func.min(c.timestamp),
            func.max(c.timestamp),
        ).where(*where)
        agents = (
            select(c.agent_selected, func.count())
            .where(*where)
            .group_by(c.agent_selected)
            .order_by(c.agent_selected)
        )
        with self.read_connection() as conn:
            row = conn.execute(stmt).one()
            dist = {a: int(n) for a, n in conn.execute(agents)}
        up, down = int(row[3] or 0), int(row[4] or 0)
        return {
            "total_interactions": int(row[0]),
            "rated_interactions": int(row[1]),
            "avg_feedback_score": _float(row[2]),
            "thumbs_up": up,
            "thumbs_down": down,
            "thumbs_up_rate": up / (up + down) if up + down else None,
            "error_rate": _float(row[5]),
            "hallucination_rate": _float(row[6]),
            "retrieval_failure_rate": _float(row[7]),
            "avg_latency_ms": _float(row[8]),
            "avg_retrieval_quality": _float(row[9]),
            "total_tokens": int(row[10] or 0),
            "total_cost": float(row[11] or 0.0),
            "agent_distribution": dist,
            "first_timestamp": _float(row[12]),
            "last_timestamp": _float(row[13]),
        }

    def decision_points(self, **filters: Any) -> list[Any]:
        """Every decision point (graph, node, decision kind) with its options and label coverage.

        See :func:`cl_plugin.store.points.decision_points`.
        """
        from cl_plugin.store.points import decision_points

        return decision_points(self, **filters)

    def has_interaction(self, interaction_id: str) -> bool:
        """Whether an interaction with this id is stored."""
        stmt = select(_INTERACTIONS.c.interaction_id).where(_INTERACTIONS.c.interaction_id == interaction_id)
        with self.read_connection() as conn:
            return conn.execute(stmt).first() is not None

    def node_runs(self, interaction_id: str) -> list[dict[str, Any]]:
        """The node, model, tool and retriever runs of an interaction, in start order."""
        return self._children(
            _TABLES["node_runs"], interaction_id, "start_time", ("triggers", "inputs", "outputs")
        )

    def decisions(
        self, interaction_id: str | None = None, *, kind: str | None = None
    ) -> list[dict[str, Any]]:
        """Decisions of one interaction (or all), optionally of one kind, in time order."""
        t = _TABLES["decisions"]
        stmt = select(t)
        if interaction_id is not None:
            stmt = stmt.where(t.c.interaction_id == interaction_id)
        if kind is not None:
            stmt = stmt.where(t.c.kind == kind)
        return self.read_rows(
            stmt.order_by(t.c.timestamp, t.c.decision_id), ("alternatives", "features", "statistics")
        )

    def _children(
        self, t: SATable, interaction_id: str, order: str, json_cols: tuple[str, ...]
    ) -> list[dict[str, Any]]:
        stmt = select(t).where(t.c.interaction_id == interaction_id).order_by(t.c[order])
        return self.read_rows(stmt, json_cols)


def _float(value: Any) -> float | None:
    return None if value is None else float(value)
