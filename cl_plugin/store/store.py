"""The store: one SQLModel schema on SQLite (embedded default) or PostgreSQL (scale-out).

Writes come in batches, one transaction per batch, through SQLAlchemy Core with the driver's
``executemany`` (building one ORM object per row is an order of magnitude slower). Reads are typed queries
with every filter the classic API uses, plus chunked iteration for scans that must not hold everything in
memory. ``setup()`` runs the migrations, idempotently and under a lock, so several processes may call it;
the first write runs it too, so a store is ready to write as soon as it is built. Reads never migrate: on a
database behind the newest migration they raise :class:`~cl_plugin.errors.StoreSchemaError` with the fix.
"""

from __future__ import annotations

import base64
import logging
import math
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import chain
from operator import itemgetter
from typing import Any, Literal

import numpy as np
import orjson
from sqlalchemy import (
    BigInteger,
    Connection,
    Double,
    Engine,
    Integer,
    Select,
    bindparam,
    delete,
    func,
    or_,
    select,
    text,
    tuple_,
    update,
)
from sqlalchemy import Table as SATable
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from cl_plugin.errors import InvalidRecordError, RegistryError, StoreError, StoreSchemaError
from cl_plugin.privacy import Sanitizer, repair_text
from cl_plugin.records import ActiveLearningCandidate
from cl_plugin.store.engine import WRITE, make_engine
from cl_plugin.store.feedback import default_sanitizer, record_feedback
from cl_plugin.store.rows import INTERACTION_COLUMNS, dumps, interaction_from_row, rows_to_interactions
from cl_plugin.store.schema import (
    current_revision,
    head_revision,
    is_known_revision,
    reader_message,
    upgrade,
)
from cl_plugin.store.tables import (
    ABTestGroup,
    ABTestRow,
    AnnotationItem,
    Decision,
    DriftEvent,
    Feedback,
    Interaction,
    InteractionEmbedding,
    InteractionRevision,
    MaintenanceRun,
    ModelAlias,
    ModelAliasMove,
    ModelVersionRow,
    NodeRun,
)

__all__ = ["Batch", "Store", "WriteResult"]

log = logging.getLogger("cl_plugin.store")

_INTERACTIONS: SATable = Interaction.__table__  # type: ignore[assignment]
_TABLES: dict[str, SATable] = {
    "interactions": _INTERACTIONS,
    "node_runs": NodeRun.__table__,  # type: ignore[dict-item]
    "decisions": Decision.__table__,  # type: ignore[dict-item]
    "feedback": Feedback.__table__,  # type: ignore[dict-item]
    "annotation_queue": AnnotationItem.__table__,  # type: ignore[dict-item]
    "interaction_embeddings": InteractionEmbedding.__table__,  # type: ignore[dict-item]
}
_REVISIONS: SATable = InteractionRevision.__table__  # type: ignore[assignment]
_FEEDBACK: SATable = Feedback.__table__  # type: ignore[assignment]
_ANNOTATION_QUEUE: SATable = _TABLES["annotation_queue"]
_TABLE_ORDER = ("interactions", "node_runs", "decisions", "feedback")
# Tables whose rows hang off an interaction and go with it on purge.
_CHILD_TABLES = (
    "node_runs",
    "decisions",
    "feedback",
    "interaction_revisions",
    "annotation_queue",
    "interaction_embeddings",
)
# Tables where a row written again replaces the stored one (an interaction logged again with a new vector).
_REPLACED_TABLES = frozenset({"interaction_embeddings"})
_EMBEDDINGS: SATable = _TABLES["interaction_embeddings"]
_ADVISORY_LOCK_ID = 0x636C5F706C75  # "cl_plu": serialises setup() across PostgreSQL clients
_MODEL_VERSIONS: SATable = ModelVersionRow.__table__  # type: ignore[assignment]
_MODEL_ALIASES: SATable = ModelAlias.__table__  # type: ignore[assignment]
_ALIAS_HISTORY: SATable = ModelAliasMove.__table__  # type: ignore[assignment]
_AB_TESTS: SATable = ABTestRow.__table__  # type: ignore[assignment]
_AB_GROUPS: SATable = ABTestGroup.__table__  # type: ignore[assignment]
_DRIFT_EVENTS: SATable = DriftEvent.__table__  # type: ignore[assignment]
_MAINTENANCE_RUNS: SATable = MaintenanceRun.__table__  # type: ignore[assignment]


def _ab_merge_statement() -> Any:
    """Chan's merge of a batch's summary (``d_n``, ``d_mean``, ``d_m2``) into a group's row, in SQL whose
    right-hand sides all read the row as it was. Built once: building it costs more than running it."""
    g = _AB_GROUPS.c
    dn, dmean = bindparam("d_n", type_=BigInteger), bindparam("d_mean", type_=Double)
    diff = dmean - g.mean
    return (
        update(_AB_GROUPS)
        .where(g.test_id == bindparam("d_test_id"), g.variant == bindparam("d_variant"))
        .values(
            n=g.n + dn,
            mean=g.mean + diff * dn / (g.n + dn),
            m2=g.m2 + bindparam("d_m2", type_=Double) + diff * diff * g.n * dn / (g.n + dn),
            non_binary=g.non_binary + bindparam("d_non_binary", type_=BigInteger),
            updated_at=bindparam("d_now", type_=Double),
        )
    )


_AB_MERGE = _ab_merge_statement()
_AB_STATUS = select(_AB_TESTS.c.test_id, _AB_TESTS.c.status).where(
    _AB_TESTS.c.test_id.in_(bindparam("ids", expanding=True))
)


def _table_rank(name: str) -> int:
    """Write order: interactions first, so rows that refer to them (and feedback) find them."""
    return _TABLE_ORDER.index(name) if name in _TABLE_ORDER else len(_TABLE_ORDER)


@dataclass
class Batch:
    """Rows to write in one transaction, by table name. Rows are dicts keyed by column name."""

    tables: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def add(self, table: str, row: dict[str, Any]) -> None:
        self.tables.setdefault(table, []).append(row)

    def __len__(self) -> int:
        return sum(len(rows) for rows in self.tables.values())


@dataclass
class WriteResult:
    """What one batch did: rows inserted, identical repeats ignored, changed repeats updated (with history)."""

    inserted: int = 0
    unchanged: int = 0
    updated: int = 0


class Store:
    """A database of interactions, node runs, decisions and feedback.

    Build one with :meth:`from_url`. The first write (or a handler, logger, registry or A/B framework
    taking the store) brings the schema to the newest migration; reads on a database that is behind raise
    :class:`~cl_plugin.errors.StoreSchemaError` naming :meth:`setup` and ``cl-plugin migrate`` instead of
    migrating behind the user's back.

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
        # Built on the first record_feedback: it loads the PII redactor, which a store may never need.
        self._feedback_sanitizer: Sanitizer | None = None

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

    # -- schema ---------------------------------------------------------------------------------------

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

    def write(self, batch: Batch) -> WriteResult:
        """Write a batch in one transaction.

        A row whose primary key exists already is an idempotent no-op when its data is the same; an
        interaction logged again with different data replaces the stored one, whose earlier content is kept
        in ``interaction_revisions``. Nothing is silently dropped.

        Args:
            batch: rows by table name (``interactions``, ``node_runs``, ``decisions``, ``feedback``).

        Returns:
            Counts of inserted, unchanged and updated rows.
        """
        result = WriteResult()
        with self.transaction() as conn:
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
            for iid in sorted(history):  # one lock order for every writer (see add_ab_results)
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

    def record_feedback(
        self,
        interaction_id: str | uuid.UUID,
        *,
        score: float | None = None,
        thumbs: str | None = None,
        correction: str | None = None,
        comment: str | None = None,
        value: Any = None,
        source: str = "user",
        key: str = "user_feedback",
        hash_key: str | None = None,
    ) -> dict[str, Any]:
        """Attach feedback to a stored interaction, as :meth:`CaptureHandler.record_feedback` does.

        For a process that holds a store but no handler, such as a feedback web endpoint. The feedback is
        checked, redacted and its interaction id hashed when it holds PII exactly as a handler or logger with
        default privacy settings does (``CL_PLUGIN_HASH_KEY``, else the generated key file), and written
        at once. Feedback is append-only history; the latest user score and thumbs are copied to the
        interaction and corrections are added to its ``corrections``.

        Args:
            interaction_id: the interaction's id (a captured run's root run id, or the id you logged).
            score: a rating (for ``source="user"``, in [1, 5]).
            thumbs: ``"up"`` or ``"down"``.
            correction: the answer the user expected.
            comment: free text.
            value: any JSON-like value (for annotators and judges).
            source: who gave it: ``"user"``, ``"annotator"``, ``"llm_judge"``, ...
            key: what was rated.
            hash_key: the privacy key the handler or logger was given explicitly (``privacy.hash_key``),
                when the environment of this process does not hold it: an id holding PII is then found
                under the hash that handler stored it as.

        Returns:
            The feedback row as stored.

        Raises:
            InvalidRecordError: a field cannot be stored as given (the error names it).
            UnknownInteractionError: no interaction with this id is stored.
        """
        if hash_key is not None:
            sanitizer = default_sanitizer(hash_key=hash_key)
        else:
            if self._feedback_sanitizer is None:
                self._feedback_sanitizer = default_sanitizer()
            sanitizer = self._feedback_sanitizer
        return record_feedback(
            interaction_id,
            sanitizer,
            exists=self.has_interaction,
            deliver=self._record_feedback_row,
            score=score,
            thumbs=thumbs,
            correction=correction,
            comment=comment,
            value=value,
            source=source,
            key=key,
        )

    def _record_feedback_row(self, row: dict[str, Any]) -> None:
        """Write one checked, sanitized feedback row (see :func:`cl_plugin.store.rows.feedback_row`) and
        apply it to its interaction; the row may come before its interaction, which it then waits for."""
        self.write(Batch({"feedback": [row]}))

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

    def feedback_history(self, interaction_id: str) -> list[dict[str, Any]]:
        """Every feedback row of an interaction, oldest first (``value`` decoded from JSON)."""
        f = _FEEDBACK.c
        stmt = (
            select(_FEEDBACK).where(f.interaction_id == interaction_id).order_by(f.created_at, f.feedback_id)
        )
        with self.read_connection() as conn:
            res = conn.execute(stmt)
            out = [dict(zip(res.keys(), r, strict=True)) for r in res]
        for row in out:
            row["value"] = orjson.loads(row["value"]) if row["value"] else None
        return out

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
        return self._decode(
            stmt.order_by(t.c.timestamp, t.c.decision_id), ("alternatives", "features", "statistics")
        )

    def _children(
        self, t: SATable, interaction_id: str, order: str, json_cols: tuple[str, ...]
    ) -> list[dict[str, Any]]:
        stmt = select(t).where(t.c.interaction_id == interaction_id).order_by(t.c[order])
        return self._decode(stmt, json_cols)

    def _decode(self, stmt: Select, json_cols: tuple[str, ...]) -> list[dict[str, Any]]:
        with self.read_connection() as conn:
            res = conn.execute(stmt)
            out = [dict(zip(res.keys(), r, strict=True)) for r in res]
        for row in out:
            for col in json_cols:
                if row.get(col) is not None:
                    row[col] = orjson.loads(row[col])
        return out

    def _write_table(
        self, conn: Connection, name: str, rows: list[dict[str, Any]], result: WriteResult
    ) -> None:
        cols = self._insert_columns[name]
        if name == "interaction_embeddings":
            # The vector travels as base64 text (journal and backups are JSON); the column is binary.
            rows = [{**r, "vector": base64.b64decode(r["vector"])} for r in rows]
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

    def _where(
        self,
        *,
        min_feedback_score: float | None = None,
        max_feedback_score: float | None = None,
        agent: str | Sequence[str] | None = None,
        session_id: str | None = None,
        start_time: float | None = None,
        end_time: float | None = None,
        error_occurred: bool | None = None,
        hallucination_detected: bool | None = None,
        retrieval_failed: bool | None = None,
        has_feedback: bool | None = None,
        graph_name: str | None = None,
    ) -> list[Any]:
        for name, number in (
            ("min_feedback_score", min_feedback_score),
            ("max_feedback_score", max_feedback_score),
            ("start_time", start_time),
            ("end_time", end_time),
        ):
            _check_number_filter(name, number)
        agents = [agent] if isinstance(agent, str) else list(agent or ())
        for name, value in (
            *(("agent", a) for a in agents),
            ("session_id", session_id),
            ("graph_name", graph_name),
        ):
            _check_text_filter(name, value)
        c = _INTERACTIONS.c
        conds: list[Any] = []
        if min_feedback_score is not None:
            conds.append(c.user_feedback_score >= min_feedback_score)
        if max_feedback_score is not None:
            conds.append(c.user_feedback_score <= max_feedback_score)
        if agent is not None:
            conds.append(c.agent_selected == agent if isinstance(agent, str) else c.agent_selected.in_(agent))
        if session_id is not None:
            conds.append(c.session_id == session_id)
        if start_time is not None:
            conds.append(c.timestamp >= start_time)
        if end_time is not None:
            conds.append(c.timestamp < end_time)
        for col, want in (
            (c.error_occurred, error_occurred),
            (c.hallucination_detected, hallucination_detected),
            (c.retrieval_failed, retrieval_failed),
        ):
            if want is not None:
                conds.append(col == int(want))
        if has_feedback is not None:
            has = or_(c.user_feedback_score.is_not(None), c.thumbs_up_down.is_not(None))
            conds.append(has if has_feedback else ~has)
        if graph_name is not None:
            conds.append(c.graph_name == graph_name)
        return conds

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
        stmt = select(_INTERACTIONS).where(*self._where(**filters)).order_by(ts, iid).offset(offset or None)
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
        conds = self._where(**filters)
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
        stmt = select(func.count()).select_from(_INTERACTIONS).where(*self._where(**filters))
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
        where = self._where(**filters)

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

    # -- annotation queue -----------------------------------------------------------------------------

    def enqueue_for_annotation(
        self, candidates: Iterable[ActiveLearningCandidate | Mapping[str, Any]]
    ) -> int:
        """Queue interactions for a human's label, as ``pending`` items.

        An interaction that is queued already, in any status, is skipped: enqueueing is idempotent, also
        between processes (the queue holds one item per interaction).

        Args:
            candidates: :class:`~cl_plugin.records.ActiveLearningCandidate` objects (or dicts with their
                ``interaction_id``, ``priority``, ``strategy`` and ``selection_reason``). Reasons are
                stored with PII redacted.

        Returns:
            How many items were queued.

        Raises:
            InvalidRecordError: a candidate has no interaction id or a priority that is not a finite number.
        """
        now = time.time()
        rows: dict[str, dict[str, Any]] = {}
        for candidate in candidates:
            row = _queue_row(candidate, now)
            rows.setdefault(row["interaction_id"], row)
        if not rows:
            return 0
        table = _ANNOTATION_QUEUE
        insert = pg_insert if self.dialect == "postgresql" else sqlite_insert
        queued = 0
        values = list(rows.values())
        with self.transaction() as conn:
            for start in range(0, len(values), 90):  # 10 columns: within SQLite's 999 bound parameters
                stmt = (
                    insert(table)
                    .values(values[start : start + 90])
                    .on_conflict_do_nothing(index_elements=["interaction_id"])
                    .returning(table.c.item_id)
                )
                queued += len(conn.execute(stmt).all())
        return queued

    def annotation_queue(self, status: str | None = None, limit: int | None = None) -> list[dict[str, Any]]:
        """Queued items, oldest first (and, among those queued together, highest priority first).

        Args:
            status: only items in this status (``pending``, ``labeled`` or ``skipped``); None for all.
            limit: most items to return (None for all).

        Returns:
            One dict per item with every column of ``annotation_queue``; ``label`` decoded from JSON.

        Raises:
            InvalidRecordError: an unknown status.
            ValueError: a negative ``limit``.
        """
        t = _ANNOTATION_QUEUE
        stmt = select(t).order_by(t.c.created_at, t.c.priority.desc(), t.c.item_id)
        if status is not None:
            stmt = stmt.where(t.c.status == _check_status(status))
        if limit is not None:
            if limit < 0:
                raise ValueError(f"limit must be >= 0 (got {limit})")
            stmt = stmt.limit(limit)
        return self._decode(stmt, ("label",))

    def update_annotation(
        self, item_id: str, *, status: str, label: Any = None, annotator: str | None = None
    ) -> dict[str, Any]:
        """Record the outcome of a queued item: its label, a skip, or a return to the queue.

        Transitions: ``pending`` to ``labeled`` or ``skipped``; ``skipped`` to ``pending`` or ``labeled``;
        ``labeled`` to ``labeled`` again (a corrected label). Repeating a status is allowed.

        Args:
            item_id: the item's id (from :meth:`annotation_queue`).
            status: the new status.
            label: the label, any JSON-serializable value; required for ``labeled`` and only allowed there.
                Its strings are stored with PII redacted, as every text written by people is.
            annotator: who labeled or skipped it (redacted too: an address is not kept as a name).

        Returns:
            The updated item, as :meth:`annotation_queue` returns it.

        Raises:
            InvalidRecordError: an unknown status, a transition that is not allowed, a missing or misplaced
                label, or a label that is not JSON-serializable.
            StoreError: no item has this id.
        """
        _check_status(status)
        if (label is None) == (status == "labeled"):
            raise InvalidRecordError(
                "a label is required with status 'labeled' and only allowed with it "
                f"(got status {status!r} and a label of type {type(label).__name__})",
                field="label",
            )
        try:
            encoded = None if label is None else orjson.dumps(_redacted(label)).decode()
        except TypeError as exc:
            raise InvalidRecordError(f"the label must be JSON-serializable: {exc}", field="label") from None
        annotator = None if annotator is None else _redacted(str(annotator))
        t = _ANNOTATION_QUEUE
        with self.transaction() as conn:
            current = conn.execute(
                select(t.c.status, t.c.interaction_id).where(t.c.item_id == item_id).with_for_update()
            ).first()
            if current is None:
                raise StoreError(
                    f"no annotation queue item with id {item_id!r}; "
                    "take the ids from store.annotation_queue()"
                )
            if status not in _QUEUE_TRANSITIONS[current.status]:
                allowed = ", ".join(sorted(_QUEUE_TRANSITIONS[current.status]))
                raise InvalidRecordError(
                    f"annotation item {item_id!r} (interaction {current.interaction_id!r}) is "
                    f"{current.status!r} and cannot become {status!r}; it can become: {allowed}",
                    field="status",
                    interaction_id=current.interaction_id,
                )
            conn.execute(
                t.update()
                .where(t.c.item_id == item_id)
                .values(status=status, label=encoded, annotator=annotator, updated_at=time.time())
            )
        [item] = self._decode(select(t).where(t.c.item_id == item_id), ("label",))
        return item

    def queued_interaction_ids(self) -> set[str]:
        """Ids of every interaction in the annotation queue, in any status (for ``exclude_ids``)."""
        with self.read_connection() as conn:
            return set(conn.execute(select(_ANNOTATION_QUEUE.c.interaction_id)).scalars())

    # -- model registry -------------------------------------------------------------------------------

    @contextmanager
    def _model_transaction(self, model_name: str) -> Iterator[Connection]:
        """A write transaction that holds the model's registry lock, so version numbers and alias moves of
        one model happen one at a time."""
        with self.transaction(f"cl_plugin.learning.registry:{model_name}") as conn:
            yield conn

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

    def add_model_version(self, row: Mapping[str, Any]) -> int:
        """Record a new version of a model, numbered one past its newest version.

        Args:
            row: the ``model_versions`` columns except ``version`` (``metrics`` as JSON text).

        Returns:
            The new version number (1 for a model's first version).
        """
        t = _MODEL_VERSIONS
        name = row["model_name"]
        with self._model_transaction(name) as conn:
            newest = conn.execute(select(func.max(t.c.version)).where(t.c.model_name == name)).scalar()
            version = int(newest or 0) + 1
            conn.execute(t.insert().values(**row, version=version))
        return version

    def model_names(self) -> list[str]:
        """Every model with at least one registered version, sorted."""
        t = _MODEL_VERSIONS
        with self.read_connection() as conn:
            return list(conn.execute(select(t.c.model_name).distinct().order_by(t.c.model_name)).scalars())

    def model_versions(self, model_name: str) -> list[dict[str, Any]]:
        """Every version of a model, oldest first, as ``model_versions`` rows (``metrics`` decoded)."""
        t = _MODEL_VERSIONS
        return self._decode(select(t).where(t.c.model_name == model_name).order_by(t.c.version), ("metrics",))

    def model_version(self, model_name: str, version: int) -> dict[str, Any] | None:
        """One version of a model (``metrics`` decoded), or None when it was never registered."""
        t = _MODEL_VERSIONS
        stmt = select(t).where(t.c.model_name == model_name, t.c.version == version)
        rows = self._decode(stmt, ("metrics",))
        return rows[0] if rows else None

    def model_alias(self, model_name: str, alias: str) -> int | None:
        """The version an alias of a model points to, or None when the alias is not set (one indexed read)."""
        t = _MODEL_ALIASES
        stmt = select(t.c.version).where(t.c.model_name == model_name, t.c.alias == alias)
        with self.read_connection() as conn:
            return conn.execute(stmt).scalar()

    def model_alias_history(self, model_name: str, alias: str | None = None) -> list[dict[str, Any]]:
        """Every move of a model's aliases (or of one alias), oldest first, as ``model_alias_history`` rows."""
        t = _ALIAS_HISTORY
        stmt = select(t).where(t.c.model_name == model_name).order_by(t.c.move_id)
        if alias is not None:
            stmt = stmt.where(t.c.alias == alias)
        return self._decode(stmt, ())

    def set_model_alias(
        self,
        model_name: str,
        alias: str,
        version: int,
        *,
        reason: str | None = None,
        actor: str | None = None,
        action: str = "set",
    ) -> int:
        """Point an alias at a version, and append the move to the alias history, in one transaction.

        A move to the version the alias points at already is not recorded. ``action`` is what the history
        calls the move (``set``, or ``promote`` when a named version is promoted).

        Returns:
            The version the alias points to.

        Raises:
            RegistryError: the version was never registered.
        """
        with self._model_transaction(model_name) as conn:
            return self._move_alias(conn, model_name, alias, version, action, reason, actor)

    def promote_model_alias(
        self,
        model_name: str,
        source: str,
        target: str,
        *,
        reason: str | None = None,
        actor: str | None = None,
    ) -> int:
        """Point ``target`` at the version ``source`` points to, reading and moving in one transaction.

        Returns:
            The version ``target`` points to (not recorded again when it pointed there already).

        Raises:
            RegistryError: ``source`` is not set.
        """
        a = _MODEL_ALIASES.c
        with self._model_transaction(model_name) as conn:
            version = conn.execute(
                select(a.version).where(a.model_name == model_name, a.alias == source)
            ).scalar()
            if version is None:
                raise RegistryError(
                    f"model {model_name!r} has no {source!r} alias to promote; set it first with "
                    f"set_alias({model_name!r}, {source!r}, version) or promote a version explicitly",
                    model_name=model_name,
                )
            return self._move_alias(conn, model_name, target, version, "promote", reason, actor)

    def rollback_model_alias(
        self, model_name: str, alias: str, *, reason: str | None = None, actor: str | None = None
    ) -> int:
        """Point an alias back at the version it pointed to before its current one, in one transaction.

        Rollbacks undo moves like a stack: two rollbacks in a row go back two versions, not forth and back.

        Returns:
            The version the alias points to now.

        Raises:
            RegistryError: the alias has no earlier version to go back to.
        """
        h = _ALIAS_HISTORY.c
        with self._model_transaction(model_name) as conn:
            moves = conn.execute(
                select(h.version, h.action)
                .where(h.model_name == model_name, h.alias == alias)
                .order_by(h.move_id)
            ).all()
            stack: list[int] = []
            for version, action in moves:
                if action == "rollback":
                    stack.pop()
                else:
                    stack.append(version)
            if len(stack) < 2:
                current = f"points at version {stack[-1]}" if stack else "is not set"
                raise RegistryError(
                    f"cannot roll back {alias!r} of model {model_name!r}: it {current} and has no earlier "
                    f"version to go back to; use set_alias({model_name!r}, {alias!r}, version) instead",
                    model_name=model_name,
                )
            return self._move_alias(conn, model_name, alias, stack[-2], "rollback", reason, actor, force=True)

    def _move_alias(
        self,
        conn: Connection,
        model_name: str,
        alias: str,
        version: int,
        action: str,
        reason: str | None,
        actor: str | None,
        *,
        force: bool = False,
    ) -> int:
        """Move an alias and append the move to its history; a move to where it points is skipped unless
        ``force``d (a rollback is always recorded, since the history must show it)."""
        v, a = _MODEL_VERSIONS.c, _MODEL_ALIASES.c
        known = conn.execute(
            select(v.version).where(v.model_name == model_name, v.version == version)
        ).first()
        if known is None:
            raise RegistryError(
                f"model {model_name!r} has no version {version!r}; registry.versions({model_name!r}) "
                "lists the registered ones",
                model_name=model_name,
            )
        previous = conn.execute(
            select(a.version).where(a.model_name == model_name, a.alias == alias)
        ).scalar()
        if previous == version and not force:
            return version
        now = time.time()
        insert = pg_insert if self.dialect == "postgresql" else sqlite_insert
        conn.execute(
            insert(_MODEL_ALIASES)
            .values(model_name=model_name, alias=alias, version=version, updated_at=now)
            .on_conflict_do_update(
                index_elements=["model_name", "alias"], set_={"version": version, "updated_at": now}
            )
        )
        conn.execute(
            _ALIAS_HISTORY.insert().values(
                model_name=model_name,
                alias=alias,
                version=version,
                previous_version=previous,
                action=action,
                moved_at=now,
                reason=reason,
                actor=actor,
            )
        )
        return version

    # -- retention ------------------------------------------------------------------------------------

    def purge(self, older_than: float, *, batch_size: int = 1000) -> dict[str, int]:
        """Delete every record derived from interactions older than a unix time (retention).

        What expires, per table:

        * ``interactions``: ``timestamp`` before the cut-off; with each go its ``node_runs``, ``decisions``,
          ``feedback``, ``interaction_revisions`` (earlier versions of it), ``annotation_queue`` item and
          ``interaction_embeddings`` row. Node runs, decisions, feedback and embeddings older than the
          cut-off whose interaction was never stored go too.
        * ``drift_events``: ``detected_at`` before the cut-off (the alarm's window statistics and features).
        * ``maintenance_runs``: finished runs whose last update is before the cut-off (their step reports
          summarise the window's interactions); a run still ``running`` is kept, so a paused run can resume.
        * ``ab_tests`` and their ``ab_test_groups``: tests that ended before the cut-off (a running test is
          kept whatever its age: its groups are aggregates, and its decision is still to come).

        Model versions, aliases and their history are not interaction data (artifacts are trained on
        redacted text) and are kept; so are leases.

        Works in transactions of at most ``batch_size`` rows, so a large purge never holds the write lock for
        long and a killed purge leaves a consistent store. SQLite overwrites deleted content
        (``secure_delete``), so purged text does not linger in the database file's free pages.

        Args:
            older_than: unix time; rows strictly older are deleted.
            batch_size: rows per transaction.

        Returns:
            Rows deleted per table.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1 (got {batch_size})")
        deleted = dict.fromkeys(("interactions", *_CHILD_TABLES), 0)
        c = _INTERACTIONS.c
        while True:
            with self.transaction() as conn:
                ids = list(
                    conn.execute(
                        select(c.interaction_id).where(c.timestamp < older_than).limit(batch_size)
                    ).scalars()
                )
                if not ids:
                    break
                for name in _CHILD_TABLES:
                    table = _REVISIONS if name == "interaction_revisions" else _TABLES[name]
                    res = conn.execute(delete(table).where(table.c.interaction_id.in_(ids)))
                    deleted[name] += res.rowcount
                deleted["interactions"] += conn.execute(
                    delete(_INTERACTIONS).where(c.interaction_id.in_(ids))
                ).rowcount
        orphans = (
            ("node_runs", NodeRun.__table__.c.start_time),  # type: ignore[attr-defined]
            ("decisions", Decision.__table__.c.timestamp),  # type: ignore[attr-defined]
            ("feedback", Feedback.__table__.c.created_at),  # type: ignore[attr-defined]
            ("interaction_embeddings", _EMBEDDINGS.c.created_at),
        )
        for name, time_col in orphans:
            table = _TABLES[name]
            while True:
                with self.transaction() as conn:
                    pk = next(iter(table.primary_key.columns))
                    ids = list(
                        conn.execute(select(pk).where(time_col < older_than).limit(batch_size)).scalars()
                    )
                    if not ids:
                        break
                    deleted[name] += conn.execute(delete(table).where(pk.in_(ids))).rowcount
        m = _MAINTENANCE_RUNS.c
        expired = (
            ("drift_events", _DRIFT_EVENTS, _DRIFT_EVENTS.c.detected_at < older_than),
            ("maintenance_runs", _MAINTENANCE_RUNS, (m.updated_at < older_than) & (m.status != "running")),
        )
        for name, table, condition in expired:
            deleted[name] = self._delete_in_batches(table, condition, batch_size)
        deleted["ab_tests"] = deleted["ab_test_groups"] = 0
        a = _AB_TESTS.c
        while True:
            with self.transaction() as conn:
                ids = list(
                    conn.execute(
                        select(a.test_id)
                        .where(a.ended_at.is_not(None), a.ended_at < older_than)
                        .limit(batch_size)
                    ).scalars()
                )
                if not ids:
                    break
                groups = delete(_AB_GROUPS).where(_AB_GROUPS.c.test_id.in_(ids))
                deleted["ab_test_groups"] += conn.execute(groups).rowcount
                deleted["ab_tests"] += conn.execute(delete(_AB_TESTS).where(a.test_id.in_(ids))).rowcount
        return deleted

    def _delete_in_batches(self, table: SATable, condition: Any, batch_size: int) -> int:
        """Delete the rows of a single-key table that match ``condition``, ``batch_size`` per transaction."""
        pk = next(iter(table.primary_key.columns))
        deleted = 0
        while True:
            with self.transaction() as conn:
                ids = list(conn.execute(select(pk).where(condition).limit(batch_size)).scalars())
                if not ids:
                    return deleted
                deleted += conn.execute(delete(table).where(pk.in_(ids))).rowcount

    # -- A/B tests ------------------------------------------------------------------------------------

    @contextmanager
    def _ab_transaction(self, key: str) -> Iterator[Connection]:
        """A write transaction holding an A/B test's lock."""
        with self.transaction(f"cl_plugin.abtest:{key}") as conn:
            yield conn

    def create_ab_test(self, row: Mapping[str, Any]) -> dict[str, Any]:
        """Create an A/B test with empty groups A and B, unless a test of that name is running already.

        Args:
            row: the ``ab_tests`` columns ``test_id``, ``name``, ``model_a``, ``model_b``, ``settings``
                (a JSON-ready dict) and ``created_at``.

        Returns:
            The running test of that name (:meth:`ab_test`): the new one, or the one found.
        """
        t = _AB_TESTS.c
        with self._ab_transaction(row["name"]) as conn:
            found = conn.execute(
                select(t.test_id).where(t.name == row["name"], t.status == "running").limit(1)
            ).scalar()
            if found is None:
                values = {**row, "settings": dumps(row["settings"]), "status": "running"}
                conn.execute(_AB_TESTS.insert().values(**values))
                conn.execute(
                    _AB_GROUPS.insert(),
                    [
                        {
                            "test_id": row["test_id"],
                            "variant": v,
                            "n": 0,
                            "mean": 0.0,
                            "m2": 0.0,
                            "non_binary": 0,
                            "updated_at": row["created_at"],
                        }
                        for v in ("A", "B")
                    ],
                )
            test = self._ab_test(conn, found or row["test_id"])
        assert test is not None
        return test

    def ab_test(self, test_id: str) -> dict[str, Any] | None:
        """One A/B test, or None when there is none with that id.

        Returns:
            The ``ab_tests`` row (``settings`` and ``result`` decoded) with ``groups``: ``{"A": {...},
            "B": {...}}``, each holding ``n``, ``mean``, ``m2`` and ``non_binary``.
        """
        with self.read_connection() as conn, conn.begin():
            return self._ab_test(conn, test_id)

    def _ab_test(self, conn: Connection, test_id: str, *, lock: bool = False) -> dict[str, Any] | None:
        found = conn.execute(select(_AB_TESTS).where(_AB_TESTS.c.test_id == test_id)).mappings().first()
        if found is None:
            return None
        test = dict(found)
        for key in ("settings", "result"):
            test[key] = None if test[key] is None else orjson.loads(test[key])
        g = _AB_GROUPS.c
        stmt = select(g.variant, g.n, g.mean, g.m2, g.non_binary).where(g.test_id == test_id)
        if lock:
            stmt = stmt.with_for_update(read=True)
        test["groups"] = {r["variant"]: dict(r) for r in conn.execute(stmt).mappings()}
        return test

    def ab_tests(self, status: str | None = None) -> list[dict[str, Any]]:
        """Every A/B test (or those with a status: ``running`` or ``ended``), oldest first, without groups."""
        t = _AB_TESTS
        stmt = select(t).order_by(t.c.created_at, t.c.test_id)
        if status is not None:
            stmt = stmt.where(t.c.status == status)
        return self._decode(stmt, ("settings", "result"))

    def add_ab_results(self, deltas: Sequence[Mapping[str, Any]]) -> dict[str, str]:
        """Merge batches of results into their groups' sufficient statistics, in one transaction.

        Each delta is one group's summary of new results: ``test_id``, ``variant``, ``n``, ``mean``, ``m2``
        and ``non_binary``. The merge is one ``UPDATE`` per group whose right-hand sides read the row as
        it was, so concurrent writers on any number of replicas never lose each other's results.

        Returns:
            The status (``running`` or ``ended``) of every test the deltas touched.
        """
        now = time.time()
        # Rows are locked in one order (test, then variant) by every writer: two replicas whose batches
        # touch the same groups in opposite orders would otherwise deadlock on PostgreSQL.
        ordered = sorted(deltas, key=lambda d: (d["test_id"], d["variant"]))
        params = [{f"d_{k}": v for k, v in d.items()} | {"d_now": now} for d in ordered]
        ids = sorted({d["test_id"] for d in deltas})
        with self.transaction() as conn:
            conn.execute(_AB_MERGE, params)
            return dict(conn.execute(_AB_STATUS, {"ids": ids}).all())

    def end_ab_test(
        self, test_id: str, conclude: Callable[[dict[str, Any]], dict[str, Any]]
    ) -> dict[str, Any] | None:
        """End a running test with the analysis ``conclude`` makes of it, read and written in one transaction.

        The groups are read under a lock that holds off concurrent merges until the result is stored, so
        the stored result is the analysis of exactly the results counted. Ending an ended test changes
        nothing.

        Args:
            test_id: the test.
            conclude: builds the final result (JSON-serialisable) from the test as :meth:`ab_test` returns
                it, with ``status`` already ``ended`` and ``ended_at`` set.

        Returns:
            The ended test (:meth:`ab_test`), or None when there is no test with that id.
        """
        t = _AB_TESTS.c
        with self._ab_transaction(test_id) as conn:
            test = self._ab_test(conn, test_id, lock=True)
            if test is None or test["status"] == "ended":
                return test
            test.update(status="ended", ended_at=time.time())
            test["result"] = conclude(test)
            conn.execute(
                update(_AB_TESTS)
                .where(t.test_id == test_id)
                .values(status="ended", ended_at=test["ended_at"], result=dumps(test["result"]))
            )
        return test

    # -- drift events ---------------------------------------------------------------------------------

    def add_drift_event(self, row: Mapping[str, Any]) -> str:
        """Record one drift alarm; recording the same ``event_id`` again is a no-op.

        Args:
            row: the ``drift_events`` columns (``features`` and ``details`` as JSON text), as built by
                :meth:`cl_plugin.drift.DriftReport.to_row`.

        Returns:
            The event id.
        """
        insert = pg_insert if self.dialect == "postgresql" else sqlite_insert
        stmt = insert(_DRIFT_EVENTS).values(**row).on_conflict_do_nothing(index_elements=["event_id"])
        with self.transaction() as conn:
            conn.execute(stmt)
        return str(row["event_id"])

    def drift_events(
        self, detector: str | None = None, *, since: float | None = None, limit: int | None = None
    ) -> list[dict[str, Any]]:
        """Drift alarms, newest first, as ``drift_events`` rows with ``features`` and ``details`` decoded.

        Args:
            detector: only this detector's alarms.
            since: only alarms raised at or after this unix time.
            limit: at most this many.
        """
        t = _DRIFT_EVENTS
        stmt = select(t).order_by(t.c.detected_at.desc(), t.c.event_id)
        if detector is not None:
            stmt = stmt.where(t.c.detector == detector)
        if since is not None:
            stmt = stmt.where(t.c.detected_at >= since)
        if limit is not None:
            stmt = stmt.limit(limit)
        return self._decode(stmt, ("features", "details"))


_FILTER_LIMIT = 1e15  # far past any unix time or score, inside every engine's numeric range


def _check_number_filter(name: str, value: Any) -> None:
    """A numeric query filter must be a finite real number the database can compare (or None)."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidRecordError(
            f"query filter {name} must be a finite number (got {value!r:.60})", field=name
        )
    if abs(value) > _FILTER_LIMIT:
        raise InvalidRecordError(
            f"query filter {name} is out of range (|{name}| must be at most {_FILTER_LIMIT:g})", field=name
        )


def _check_text_filter(name: str, value: Any) -> None:
    """A text query filter must be a string every engine can store: no NUL, valid Unicode (or None)."""
    if value is None:
        return
    if not isinstance(value, str):
        raise InvalidRecordError(
            f"query filter {name} must be a string (got {type(value).__name__})", field=name
        )
    if "\x00" in value:
        raise InvalidRecordError(
            f"query filter {name} contains a NUL character; no stored value can", field=name
        )
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidRecordError(
            f"query filter {name} is not valid Unicode (a lone surrogate); no stored value can match it",
            field=name,
        ) from None


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


ANNOTATION_STATUSES = ("pending", "labeled", "skipped")
_QUEUE_TRANSITIONS = {
    "pending": {"pending", "labeled", "skipped"},
    "skipped": {"skipped", "pending", "labeled"},
    "labeled": {"labeled"},
}


def _check_status(status: str) -> str:
    if status not in ANNOTATION_STATUSES:
        raise InvalidRecordError(
            f"unknown annotation status {status!r}; use one of: {', '.join(ANNOTATION_STATUSES)}",
            field="status",
        )
    return status


def _redacted(value: Any) -> Any:
    """``value`` with PII redacted from every string in it: annotation labels and reasons do not go through
    the writer's sanitizer, and people write addresses and numbers into them."""
    from cl_plugin.privacy import default_redactor  # privacy sits above the store; imported when used

    return default_redactor().redact_value(value)


def _queue_row(candidate: ActiveLearningCandidate | Mapping[str, Any], now: float) -> dict[str, Any]:
    """A pending ``annotation_queue`` row for one candidate (its reason is stored with PII redacted)."""
    get = candidate.get if isinstance(candidate, Mapping) else lambda k: getattr(candidate, k, None)
    iid, priority = get("interaction_id"), get("priority")
    if not isinstance(iid, str) or not iid:
        raise InvalidRecordError(f"a candidate has no interaction_id (got {iid!r})", field="interaction_id")
    if isinstance(priority, bool) or not isinstance(priority, int | float) or not math.isfinite(priority):
        raise InvalidRecordError(
            f"priority must be a finite number (got {priority!r})", field="priority", interaction_id=iid
        )
    return {
        "item_id": str(uuid.uuid4()),
        "interaction_id": iid,
        "status": "pending",
        "priority": float(priority),
        "strategy": str(get("strategy") or ""),
        "selection_reason": _redacted(repair_text(str(get("selection_reason") or ""))),
        "created_at": now,
        "updated_at": now,
        "label": None,
        "annotator": None,
    }
