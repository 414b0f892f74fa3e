"""ProductionInteractionLogger: the original design's logging API over the plugin's writer and store.

``await logger.log_interaction(interaction)`` checks the record (a clear error naming the field when it
cannot be stored), hands it to the background writer and returns: it never waits on disk in the default
``batch`` durability, and in ``sync`` durability it awaits the commit without blocking the event loop.
The writer redacts PII, writes SQLite (or PostgreSQL) in batches and appends every record to a daily gz
JSON Lines backup.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any
from uuid import UUID

from cl_plugin.capture.langsmith import mirror_feedback
from cl_plugin.config import (
    ContinualLearningConfig,
    FeedbackConfig,
    LoggingConfig,
    PrivacyConfig,
    ValidationConfig,
    parse_section,
    resolve_section,
    split_config,
)
from cl_plugin.errors import ClPluginError, InvalidRecordError, StoreError
from cl_plugin.privacy import Sanitizer, default_redactor, hash_identifier, repair_text
from cl_plugin.records import ProductionInteraction, interaction_problems
from cl_plugin.store import Store
from cl_plugin.store.backup import BackupWriter, iter_backup, purge_backups
from cl_plugin.store.feedback import record_feedback
from cl_plugin.store.journal import Journal
from cl_plugin.store.rows import interaction_from_row, interaction_rows
from cl_plugin.store.writer import Writer

__all__ = ["ProductionInteractionLogger"]

log = logging.getLogger("cl_plugin.logger")

_LOGGER = "ProductionInteractionLogger"


class ProductionInteractionLogger:
    """Logs production interactions with PII redaction, batched storage and compressed backups.

    Args:
        config: the ``logging`` section as a dict or :class:`LoggingConfig`, or a whole
            :class:`ContinualLearningConfig` (whose ``logging``, ``privacy`` and ``validation`` sections are
            then used). Keys: ``enabled``, ``storage``, ``use_sqlite``, ``use_compression``, ``buffer_size``,
            ``sanitize_pii``, ``use_langsmith``, ``langsmith_project``, and the plugin's ``database_url``,
            ``flush_interval``, ``durability``, ``max_queue``, ``max_text_length``.
        store: an open :class:`Store` to write to instead of the one ``config`` describes (set up when the
            logger takes it, if nobody did).
        privacy: privacy settings (id hashing); by default ids are stored as given.
        validation: the accepted feedback score range and other checks.
        feedback: the limits of feedback attachments (the ``feedback`` section: ``max_attachments``,
            ``max_image_bytes``, ``max_image_side``, ``max_text_bytes``).
        feedback_mirror: where recorded feedback is also sent, such as
            :class:`cl_plugin.capture.langsmith.FeedbackMirror`. With ``use_langsmith`` set and none given, a
            mirror to ``langsmith_project`` is made from the environment's LangSmith settings.
        **kwargs: ``logging`` keys that override ``config``.

    Example:
        >>> import asyncio, tempfile, time
        >>> logger = ProductionInteractionLogger({"storage": tempfile.mkdtemp()})
        >>> asyncio.run(logger.log_interaction(ProductionInteraction(
        ...     interaction_id="i1", timestamp=time.time(), session_id="s1",
        ...     user_query="What is MCTS?", response="A tree search.", user_feedback_score=2.0)))
        >>> len(logger.query_interactions(max_feedback_score=3.0))
        1
        >>> logger.close()
    """

    def __init__(
        self,
        config: dict[str, Any] | LoggingConfig | ContinualLearningConfig | None = None,
        *,
        store: Store | None = None,
        privacy: dict[str, Any] | PrivacyConfig | None = None,
        validation: dict[str, Any] | ValidationConfig | None = None,
        feedback_mirror: Any = None,
        feedback: dict[str, Any] | FeedbackConfig | None = None,
        **kwargs: Any,
    ) -> None:
        parts = (
            None
            if isinstance(config, LoggingConfig)
            else split_config(config, component=_LOGGER, section="logging")
        )
        self.config = resolve_section(LoggingConfig, config, component=_LOGGER, parts=parts, **kwargs)
        # A config holding validation or privacy keys (a flat dict, the whole mapping) sets those too.
        if validation is None and parts and parts.get("validation"):
            validation = parts["validation"]
        if privacy is None and parts and parts.get("privacy"):
            privacy = parts["privacy"]
        if feedback is None and parts and parts.get("feedback"):
            feedback = parts["feedback"]
        self.validation = parse_section(ValidationConfig, validation, prefix="validation")
        self.feedback_limits = parse_section(FeedbackConfig, feedback, prefix="feedback")
        self.privacy = (
            parse_section(PrivacyConfig, privacy, prefix="privacy") if privacy is not None else None
        )
        cfg = self.config
        self.storage = Path(cfg.storage)
        self.sanitizer = self._make_sanitizer()
        self._convert = partial(interaction_rows, s=self.sanitizer)
        self.logged = 0
        self.refused = 0
        self.store: Store | None = None
        self.writer: Writer | None = None
        self.feedback_mirror = feedback_mirror
        self._owns_mirror = False
        if cfg.use_langsmith and feedback_mirror is None and cfg.enabled:
            # Feedback goes to LangSmith's run of the same id; traces go there through sanitizing_tracer().
            from cl_plugin.capture.langsmith import FeedbackMirror, sanitizing_client

            self.feedback_mirror = FeedbackMirror(sanitizing_client(), project_name=cfg.langsmith_project)
            self._owns_mirror = True
        if not cfg.enabled:
            return
        self.storage.mkdir(parents=True, exist_ok=True)
        if store is not None:
            self.store = store
        elif cfg.use_sqlite or cfg.database_url:
            url = cfg.database_url or f"sqlite:///{(self.storage / 'interactions.db').resolve()}"
            sync = "FULL" if cfg.durability == "sync" else "NORMAL"
            self.store = Store.from_url(url, synchronous=sync)  # the writer sets it up
        backup = BackupWriter(self.storage / "backups") if cfg.use_compression else None
        self.writer = Writer(
            self.store,
            backup=backup,
            journal=Journal(self.storage / "journal") if self.store is not None else None,
            buffer_size=cfg.buffer_size,
            flush_interval=cfg.flush_interval,
            durability=cfg.durability,
            max_queue=cfg.max_queue,
        )

    def _make_sanitizer(self) -> Sanitizer:
        redact = default_redactor().redact if self.config.sanitize_pii else None
        hash_id = None
        key, hash_users, hash_sessions = (None, False, False)
        if self.privacy is not None:
            key, hash_users, hash_sessions = self.privacy.id_hashing()
        if hash_users or hash_sessions:
            hash_id = partial(hash_identifier, key=key)
        # An id holding PII is stored as its keyed hash: with the configured key when there is one (the
        # Sanitizer falls back to hash_id, then to the generated key of cl_plugin.privacy.id_hash_key).
        return Sanitizer(
            redact=redact,
            max_text_length=self.config.max_text_length,
            hash_id=hash_id,
            hash_sessions=hash_sessions,
            hash_users=hash_users,
            hash_pii_id=partial(hash_identifier, key=key) if key else None,
        )

    # -- logging --------------------------------------------------------------------------------------

    def _check(self, interaction: ProductionInteraction | dict[str, Any]) -> ProductionInteraction:
        if isinstance(interaction, dict):
            try:
                interaction = ProductionInteraction.from_dict(interaction)
            except TypeError as exc:
                raise InvalidRecordError(
                    f"the interaction dict cannot be read ({exc}); it needs interaction_id, timestamp, "
                    "session_id, user_query and response",
                    field="interaction",
                ) from None
        if not isinstance(interaction, ProductionInteraction):
            raise InvalidRecordError(
                f"log_interaction takes a ProductionInteraction or a dict, not {type(interaction).__name__}",
                field="interaction",
            )
        problems = interaction_problems(
            interaction,
            min_score=self.validation.min_feedback_score,
            max_score=self.validation.max_feedback_score,
        )
        if problems:
            name, message = problems[0]
            more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
            stored_id = self.sanitizer.key(repair_text(str(interaction.interaction_id)))  # never the raw PII
            raise InvalidRecordError(
                f"interaction {stored_id!r}: {name} {message}{more}; fix the value and log again",
                field=name,
                interaction_id=stored_id,
            )
        return interaction

    async def log_interaction(self, interaction: ProductionInteraction | dict[str, Any]) -> bool:
        """Log one interaction without blocking the event loop.

        Logging never breaks the request that logs: a record that cannot be stored as given is refused
        with one warning naming the field, counted (``get_statistics()["refused"]``), and False is
        returned; the rest of the logger's work goes on. With ``strict`` set, the error is raised instead.

        Args:
            interaction: the record (or a dict with its fields).

        Returns:
            True when the record was accepted (in ``sync`` durability: committed, or durably spilled to the
            journal while the database is down); False when it was refused or logging is disabled.

        Raises:
            InvalidRecordError: only with ``strict``: a field cannot be stored as given (the error names it).
        """
        fut = self._submit(interaction)
        if fut is None or fut is True or fut is False:
            return bool(fut)
        try:
            await asyncio.wrap_future(fut)
        except ClPluginError as exc:
            return self._refuse(exc)
        return True

    def log_interaction_sync(self, interaction: ProductionInteraction | dict[str, Any]) -> bool:
        """Log one interaction from synchronous code (waits for the commit in ``sync`` durability).

        Returns and raises as :meth:`log_interaction`.
        """
        fut = self._submit(interaction)
        if fut is None or fut is True or fut is False:
            return bool(fut)
        try:
            fut.result()
        except ClPluginError as exc:
            return self._refuse(exc)
        return True

    def _submit(self, interaction: ProductionInteraction | dict[str, Any]) -> Any:
        """The writer's future in ``sync`` durability, else whether the record was accepted."""
        try:
            item = self._check(interaction)
        except InvalidRecordError as exc:
            return self._refuse(exc)
        if self.writer is None:  # logging is disabled
            return False
        try:
            fut = self.writer.submit(self._convert, item)
        except RuntimeError as exc:  # logged after close()
            return self._refuse(StoreError(f"the interaction was not logged: {exc}"))
        self.logged += 1
        return True if fut is None else fut

    def _refuse(self, exc: ClPluginError) -> bool:
        """Count a record that was not logged and say why (or raise, in ``strict`` mode)."""
        self.refused += 1
        if self.config.strict:
            raise exc
        log.warning("cl_plugin did not log an interaction: %s", exc)
        return False

    def record_feedback(
        self,
        interaction_id: str | UUID,
        *,
        score: float | None = None,
        thumbs: str | None = None,
        correction: str | None = None,
        comment: str | None = None,
        value: Any = None,
        source: str = "user",
        key: str = "user_feedback",
        attachments: Sequence[Any] | None = None,
    ) -> dict[str, Any]:
        """Attach feedback to a logged interaction.

        Feedback is append-only history; the latest user score and thumbs are copied to the interaction and
        corrections are added to its ``corrections``. Feedback for an interaction that is still in the
        writer's queue is queued behind it, so it is never lost.

        Args:
            interaction_id: the interaction's id.
            score: a rating (for ``source="user"``, within the validation score range).
            thumbs: ``"up"`` or ``"down"``.
            correction: the answer the user expected.
            comment: free text (redacted like every other text).
            value: any JSON-like value (for annotators and judges).
            source: who gave it: ``"user"``, ``"annotator"``, ``"llm_judge"``, ``"langsmith"``, ...
            key: what was rated.
            attachments: code snippets, images and text files (:class:`~cl_plugin.records.Attachment` or
                equivalent dicts), within the ``feedback`` limits; images are re-encoded without metadata,
                code and text redacted.

        Returns:
            The feedback row as it will be stored (with ``attachments``, their metadata, when given).

        Raises:
            InvalidRecordError: a field cannot be stored as given (the error names it; attachments over
                the limits or of a type not stored raise its subclasses).
            MissingDependencyError: an image attachment without Pillow (``pip install 'cl-plugin[web]'``).
            UnknownInteractionError: no interaction with this id was ever logged here or stored.
        """
        store, writer = self.store, self.writer

        def exists(stored_id: str) -> bool:
            if store is None or writer is None:
                return False
            if store.has_interaction(stored_id):
                return True
            self.flush()  # it may be waiting in the queue
            return store.has_interaction(stored_id)

        def deliver(rows: list[tuple[str, dict[str, Any]]]) -> None:
            assert store is not None and writer is not None
            fut = writer.submit(list, rows)  # built and sanitized already: the writer stores them as they are
            if fut is not None:
                fut.result()
            if self.feedback_mirror is not None:
                row = rows[0][1]
                stored = store.get_interaction(row["interaction_id"]) or {}
                mirror_feedback(self.feedback_mirror, row, run_id=stored.get("run_id"))

        return record_feedback(
            interaction_id,
            self.sanitizer,
            exists=exists,
            deliver=deliver,
            score=score,
            thumbs=thumbs,
            correction=correction,
            comment=comment,
            value=value,
            source=source,
            key=key,
            min_score=self.validation.min_feedback_score,
            max_score=self.validation.max_feedback_score,
            attachments=attachments,
            limits=self.feedback_limits,
        )

    def flush(self, timeout: float | None = None) -> bool:
        """Write everything logged so far.

        Returns:
            True when it is all stored; False if ``timeout`` seconds passed first, or while rows wait in the
            spill journal because the database cannot be reached (:meth:`stats` counts them).

        Raises:
            StoreSchemaError: the database lacks a table or column (the message has the fix; the rows wait
                in the journal).
        """
        return True if self.writer is None else self.writer.flush(timeout)

    def close(self, timeout: float | None = 30.0) -> bool:
        """Flush and stop the background writer (also done at interpreter exit).

        Returns and raises as :meth:`flush`; the logger is closed either way.
        """
        try:
            return True if self.writer is None else self.writer.close(timeout)
        finally:
            if self._owns_mirror:
                self.feedback_mirror.close(10.0 if timeout is None else timeout)
            if self.store is not None:
                self.store.close()

    def stats(self) -> dict[str, Any]:
        """The writer's counters, without reading the database: where the logged records are.

        Returns:
            ``submitted``, ``written``, ``unchanged``, ``updated``, ``spilled`` (rows put in the journal
            while the database could not take them), ``replayed`` (journaled rows written since),
            ``waiting_in_journal``, ``dropped``, ``rejected``, ``invalid``, ``lost``, ``store_available``,
            ``last_error`` and ``queue_size`` (see :meth:`CaptureHandler.stats`), plus ``logged`` and
            ``refused`` (records :meth:`log_interaction` accepted and refused). Without a writer (logging
            disabled) only the last two.
        """
        counts = {} if self.writer is None else self.writer.counts()
        return {**counts, "logged": self.logged, "refused": self.refused}

    def purge_expired(self, retention_days: float | None = None) -> dict[str, int]:
        """Delete what is older than the retention period: store rows (``store.retention.purge``, see
        :meth:`cl_plugin.store.retention.Retention.purge`) and backups.

        Args:
            retention_days: the retention period; by default ``privacy.retention_days`` (90 without a privacy
                section).

        Returns:
            Rows deleted per table, and ``backup_files``: the backup files deleted.
        """
        days = retention_days if retention_days is not None else PrivacyConfig().retention_days
        if retention_days is None and self.privacy is not None:
            days = self.privacy.retention_days
        cutoff = time.time() - days * 86_400
        deleted = self.store.retention.purge(cutoff) if self.store is not None else {}
        deleted["backup_files"] = len(purge_backups(self.storage / "backups", cutoff))
        return deleted

    def __enter__(self) -> ProductionInteractionLogger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reading --------------------------------------------------------------------------------------

    def query_interactions(
        self, *, limit: int | None = 100, offset: int = 0, with_embeddings: bool = True, **filters: Any
    ) -> list[dict[str, Any]]:
        """Logged interactions matching every filter, newest first (see :meth:`Store.query_interactions`).

        Everything logged before the call is included: the writer is flushed first. Without SQLite the
        compressed backups are scanned instead.

        Args:
            limit: most rows (None for all).
            offset: rows to skip.
            with_embeddings: give each row its ``query_embedding`` (the logged vector as a float32 array,
                or None), which the analyzer and the selector then use instead of computing one. False
                saves one read per page when the vectors are not needed.
            **filters: ``min_feedback_score``, ``max_feedback_score``, ``agent``, ``session_id``,
                ``start_time``, ``end_time``, ``error_occurred``, ``hallucination_detected``,
                ``retrieval_failed``, ``has_feedback``, ``graph_name``.

        Returns:
            Dicts with the original design's fields (and ``query_embedding``). Without SQLite, rows read
            from the compressed backups have no embeddings.
        """
        self.flush()
        if isinstance(filters.get("session_id"), str):
            # Filter by the id as stored: hashed when session hashing is on or the id holds PII.
            filters["session_id"] = self.sanitizer.identifier(
                filters["session_id"], self.sanitizer.hash_sessions
            )
        if self.store is not None:
            return self.store.query_interactions(
                limit=limit, offset=offset, with_embeddings=with_embeddings, **filters
            )
        if self.writer is None or self.writer.backup is None:
            return []
        return _filter_backup(self.storage / "backups", limit=limit, offset=offset, **filters)

    def get_statistics(self) -> dict[str, Any]:
        """Aggregates over everything logged (from the database) and the writer's counters.

        Returns:
            The store's aggregates (``total_interactions``, ``avg_feedback_score``, rates, latency, agent
            distribution, ...) plus ``writer`` (submitted, written, unchanged, updated, spilled, replayed,
            rejected, invalid, dropped, batches, backup_bytes, store_available, last_error),
            ``queue_size``, ``logged`` and ``refused`` (records ``log_interaction`` accepted and refused;
            also under the reference implementation's names ``total_logged`` and ``validation_failures``,
            with ``total_in_db``).
        """
        self.flush()
        stats: dict[str, Any] = {}
        if self.store is not None:
            stats.update(self.store.statistics())
        if self.writer is not None:
            w = self.writer.counts()
            stats["queue_size"] = w.pop("queue_size")
            stats["writer"] = w
        stats["logged"] = self.logged
        stats["refused"] = self.refused
        # The names code written for the original design's reference implementation reads.
        stats["total_logged"] = self.logged
        stats["validation_failures"] = self.refused
        stats["total_in_db"] = stats.get("total_interactions", 0)
        stats["enabled"] = self.config.enabled
        stats["storage"] = os.fspath(self.storage)
        return stats


_FILTER_TESTS = {
    "min_feedback_score": lambda r, v: r["user_feedback_score"] is not None and r["user_feedback_score"] >= v,
    "max_feedback_score": lambda r, v: r["user_feedback_score"] is not None and r["user_feedback_score"] <= v,
    "agent": lambda r, v: r["agent_selected"] == v if isinstance(v, str) else r["agent_selected"] in v,
    "session_id": lambda r, v: r["session_id"] == v,
    "start_time": lambda r, v: r["timestamp"] >= v,
    "end_time": lambda r, v: r["timestamp"] < v,
    "error_occurred": lambda r, v: r["error_occurred"] is not None and bool(r["error_occurred"]) == v,
    "hallucination_detected": lambda r, v: (
        r["hallucination_detected"] is not None and bool(r["hallucination_detected"]) == v
    ),
    "retrieval_failed": lambda r, v: r["retrieval_failed"] is not None and bool(r["retrieval_failed"]) == v,
    "has_feedback": lambda r, v: (
        (r["user_feedback_score"] is not None or r["thumbs_up_down"] is not None) == v
    ),
    "graph_name": lambda r, v: r["graph_name"] == v,
}


def _filter_backup(
    directory: Path, *, limit: int | None, offset: int, **filters: Any
) -> list[dict[str, Any]]:
    unknown = set(filters) - set(_FILTER_TESTS)
    if unknown:
        raise TypeError(f"unknown filter(s) {sorted(unknown)}; allowed: {sorted(_FILTER_TESTS)}")
    tests = [(_FILTER_TESTS[k], v) for k, v in filters.items() if v is not None]
    latest: dict[str, dict[str, Any]] = {}
    for rec in iter_backup(directory, "interactions"):
        latest[rec["interaction_id"]] = rec  # a later line is a newer version of the same interaction
    rows = []
    for rec in latest.values():
        if all(test(rec, v) for test, v in tests):
            rows.append(interaction_from_row(rec))
    rows.sort(key=lambda r: (r["timestamp"], r["interaction_id"]), reverse=True)
    end = None if limit is None else offset + limit
    return rows[offset:end]
