"""Capture: the LangChain callback handler that records LangGraph runs and agent decisions.

Attach it with one line, ``graph.invoke(inputs, config={"callbacks": [CaptureHandler(store)]})``, and every
top-level run becomes an ``interactions`` row, every node / model / tool / retriever run a ``node_runs`` row
and every agent decision a ``decisions`` row.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import tempfile
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any
from uuid import UUID

from langchain_core.callbacks import (
    BaseCallbackHandler,
    CallbackManager,
    adispatch_custom_event,
    dispatch_custom_event,
)
from langchain_core.runnables import RunnableConfig

from cl_plugin.capture.langsmith import mirror_feedback
from cl_plugin.capture.runtree import DECISION, END, ERROR, START, CaptureOptions, RunTree
from cl_plugin.capture.sampling import check_sample_rate
from cl_plugin.config import HASH_KEY_ENV, FeedbackConfig, parse_section
from cl_plugin.errors import ConfigError, PrivacyConfigError
from cl_plugin.privacy import Sanitizer, default_redactor, hash_identifier, id_hash_key, repair_text
from cl_plugin.privacy.tokens import mint_feedback_token
from cl_plugin.store import Store
from cl_plugin.store.feedback import record_feedback
from cl_plugin.store.journal import Journal
from cl_plugin.store.writer import Writer

__all__ = ["DECISION_EVENT", "CaptureHandler", "arecord_decision", "record_decision"]

log = logging.getLogger("cl_plugin.capture")

#: Name of the LangChain custom event that carries a decision recorded with :func:`record_decision`.
DECISION_EVENT = "cl_plugin.decision"


def _decision_payload(
    kind: str,
    chosen: Any,
    confidence: float | None,
    alternatives: Mapping[str, float] | Sequence[str] | None,
    features: Mapping[str, Any] | None,
    statistics: Mapping[str, Any] | None,
) -> dict[str, Any]:
    if not isinstance(kind, str) or not kind:
        raise ValueError(f"record_decision: kind must be a non-empty string such as 'route' (got {kind!r})")
    return {
        "kind": kind,
        "chosen": chosen,
        "confidence": confidence,
        "alternatives": dict(alternatives) if isinstance(alternatives, Mapping) else alternatives,
        "features": dict(features) if features is not None else None,
        "statistics": dict(statistics) if statistics is not None else None,
    }


def record_decision(
    kind: str,
    chosen: Any,
    *,
    confidence: float | None = None,
    alternatives: Mapping[str, float] | Sequence[str] | None = None,
    features: Mapping[str, Any] | None = None,
    statistics: Mapping[str, Any] | None = None,
    config: RunnableConfig | None = None,
) -> bool:
    """Record an agent decision from inside a graph node (or any runnable).

    The decision travels as a LangChain custom event, so a :class:`CaptureHandler` attached to the run
    stores it as a ``decisions`` row of the current node; without a handler it costs next to nothing.

    Args:
        kind: what was decided: ``"route"``, ``"mcts"``, ``"tool"``, ``"consensus"`` or your own word.
        chosen: the option taken (an agent name, an action, a verdict).
        confidence: how sure the decider was, in [0, 1].
        alternatives: the options considered, with their probabilities or scores when known.
        features: what the decider saw (for retraining and failure attribution).
        statistics: anything else worth keeping (visit counts, values, iterations).
        config: the node's config; needed only where the context does not flow (own thread pools).

    Returns:
        True if the event was dispatched, False when called outside a run (nothing to attach it to).
    """
    payload = _decision_payload(kind, chosen, confidence, alternatives, features, statistics)
    manager = config.get("callbacks") if config is not None else None
    if type(manager) is CallbackManager and manager.parent_run_id is not None:
        # The run's own manager, as LangGraph passes it to a node or an edge: dispatching through it
        # reaches the same handlers without building a new manager for the event (most of its cost).
        manager.on_custom_event(DECISION_EVENT, payload, run_id=manager.parent_run_id)
        return True
    try:
        dispatch_custom_event(DECISION_EVENT, payload, config=config)
    except RuntimeError as exc:  # outside any run: there is no parent to attach the decision to
        log.debug("record_decision outside a run: %s", exc)
        return False
    return True


async def arecord_decision(
    kind: str,
    chosen: Any,
    *,
    confidence: float | None = None,
    alternatives: Mapping[str, float] | Sequence[str] | None = None,
    features: Mapping[str, Any] | None = None,
    statistics: Mapping[str, Any] | None = None,
    config: RunnableConfig | None = None,
) -> bool:
    """Async twin of :func:`record_decision`, for ``async def`` nodes."""
    payload = _decision_payload(kind, chosen, confidence, alternatives, features, statistics)
    try:
        await adispatch_custom_event(DECISION_EVENT, payload, config=config)
    except RuntimeError as exc:
        log.debug("arecord_decision outside a run: %s", exc)
        return False
    return True


def _journal_dir(url: str) -> Path:
    """Where a store's spill journal lives: beside a SQLite file, in the temp directory for a server.

    An in-memory database lives and dies with this process, so its journal is private to the handler
    (a shared one would replay rows into another process's database).
    """
    if url.startswith("sqlite:///") and len(url) > len("sqlite:///") and ":memory:" not in url:
        db = Path(url[len("sqlite:///") :])
        return db.with_name(f"{db.name}-journal.d")
    if url.startswith("sqlite"):
        return Path(tempfile.mkdtemp(prefix="cl_plugin-journal-"))
    digest = hashlib.sha256(url.encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"cl_plugin-journal-{digest}"


def _serialized_name(serialized: Any) -> str | None:
    if isinstance(serialized, Mapping):
        name = serialized.get("name")
        if name is None and serialized.get("id"):
            name = serialized["id"][-1]
        return None if name is None else str(name)
    return None


class CaptureHandler(BaseCallbackHandler):
    """Records LangGraph runs, node runs and agent decisions into a store.

    Attach it to any graph with ``graph.invoke(inputs, config={"callbacks": [handler]})`` (or ``ainvoke``,
    ``stream``, ``astream``, ``batch``, ``abatch``, or ``graph.with_config(callbacks=[handler])``). Each
    top-level run becomes one ``interactions`` row whose id is the root run id (pass ``config["run_id"]``
    to choose it), each node / model / tool / retriever run a ``node_runs`` row, and each agent decision a
    ``decisions`` row: routing (from the state's routing history, a conditional edge's output or
    ``Command(goto=...)``), ``Send`` fan-out, tool choices, and anything recorded with
    :func:`record_decision`. From the graph's final state it reads, when present: ``agent_selected`` and
    ``agent_confidence`` (the routing decision), ``retrieval_quality`` and ``retrieval_failed``,
    ``hallucination_detected``, and ``answered_by`` (the agents whose answer was returned, kept in the
    interaction's metadata: after an escalation it differs from the agent first chosen, and it is the agent a
    good rating credits).

    The hooks only put a small tuple on a queue; a background writer thread assembles runs, redacts PII,
    and writes in batches. A hook never raises into the graph; problems are logged and counted.

    With ``sample_rate`` below 1, every run still gets its ``interactions`` row (with tokens, cost, the
    routed agent and the error flag, so rates over interactions stay exact), but only the runs chosen by a
    hash of their id also get ``node_runs`` and ``decisions`` rows. The choice depends on the id alone, so
    replicas agree. A run outside the sample is assembled as usual, but its detail rows are held, unbuilt,
    until it ends: if anything in it raised (or it never ended) they are written (``always_keep_errors``),
    otherwise they are dropped. The row's metadata says which (see :mod:`cl_plugin.capture.sampling`). The hooks do
    the same work either way; sampling saves the writer's work of building, redacting and storing detail.

    Nothing needs setting up first: a store (or URL) whose database is empty or behind is brought to the
    newest migration when the handler takes it. ``flush()`` says whether everything captured is in the
    database, and :meth:`stats` what was submitted, written, spilled to the journal, replayed or dropped.

    Args:
        store: a :class:`Store`, a database URL, or a :class:`ProductionInteractionLogger` whose writer,
            store and privacy settings are then shared. None means an in-memory SQLite store.
        graph_name: the ``graph_name`` of every interaction (default: the root run's name).
        query_keys: input keys tried, in order, for the user's query (``messages`` takes the last human
            message); when none is there and the input holds exactly one non-empty string, that is the query.
        response_keys: output keys tried, in order, for the response (``messages``: the last AI message).
        user_key: metadata key holding the user id (``config={"metadata": {"user_id": ...}}``).
        routing_key: state key holding the meta-controller's routing history (a list of dicts with
            ``agent``, ``confidence`` and ``probabilities``).
        prices: extra or overriding model prices, USD per million tokens as ``(input, output)``, matched
            by the longest prefix of the model name.
        redact_pii: redact PII from every text before it is written. Ids are kept as given, except that a
            user or session id that holds PII (an e-mail address as user id) is stored as its keyed hash,
            never as given; look it up with :func:`cl_plugin.privacy.safe_identifier`.
        hash_user_ids: store every user id as a keyed hash.
        hash_session_ids: store every session (thread) id as a keyed hash.
        hash_key: the HMAC key for hashing (default: the ``CL_PLUGIN_HASH_KEY`` environment variable, and
            for ids holding PII, :func:`cl_plugin.privacy.id_hash_key` when neither is set).
        max_text_length: longest query, response or error text kept.
        max_io_chars: longest string kept inside node inputs and outputs.
        max_in_flight: runs held while waiting for their end; the oldest are recorded as unfinished beyond.
        run_ttl: seconds after which a run that never ended is recorded as unfinished.
        flush_interval: seconds between background writes.
        buffer_size: queued events that trigger a write sooner.
        max_queue: queued events before new ones are dropped (and counted) rather than slow the graph.
        journal_dir: where rows wait while the database is unreachable.
        feedback_mirror: an object with ``submit(run_id, **feedback)`` (such as
            :class:`cl_plugin.capture.langsmith.FeedbackMirror`) that receives every recorded feedback.
        sample_rate: share of runs, in (0, 1], that keep their node runs and decisions (default: the
            logger's ``sample_rate`` when ``store`` is a logger, else 1: every run).
        always_keep_errors: keep the detail of a run outside the sample when something in it raised.
        max_unsampled_detail: detail rows held per run outside the sample while it is in flight; beyond it
            they are dropped, and if the run raised its metadata counts them (``detail_dropped``).
        feedback: the limits of feedback attachments (the ``feedback`` config section as a dict or
            :class:`~cl_plugin.config.FeedbackConfig`; default: the logger's when ``store`` is a logger,
            else the defaults).

    Raises:
        ConfigError: ``sample_rate`` is not in (0, 1] or ``max_unsampled_detail`` is not a positive int.

    Example:
        >>> from typing import TypedDict
        >>> from langgraph.graph import StateGraph
        >>> class State(TypedDict):
        ...     query: str
        ...     response: str
        >>> builder = StateGraph(State)
        >>> _ = builder.add_node("answer", lambda s: {"response": s["query"].upper()})
        >>> _ = builder.set_entry_point("answer")
        >>> graph = builder.compile()
        >>> handler = CaptureHandler("sqlite://")
        >>> graph.invoke({"query": "hi"}, config={"callbacks": [handler]})["response"]
        'HI'
        >>> handler.flush()
        True
        >>> [(r["user_query"], r["response"]) for r in handler.store.query_interactions()]
        [('hi', 'HI')]
        >>> handler.close()
        True
    """

    run_inline = True  # async graphs call the hooks on the loop thread instead of an executor per event
    raise_error = False

    def __init__(
        self,
        store: Any = None,
        *,
        graph_name: str | None = None,
        query_keys: Sequence[str] | None = None,
        response_keys: Sequence[str] | None = None,
        user_key: str = "user_id",
        routing_key: str = "routing_history",
        prices: Mapping[str, tuple[float, float]] | None = None,
        redact_pii: bool = True,
        hash_user_ids: bool = False,
        hash_session_ids: bool = False,
        hash_key: str | None = None,
        max_text_length: int = 10_000,
        max_io_chars: int = 2_000,
        max_in_flight: int = 10_000,
        run_ttl: float = 3_600.0,
        flush_interval: float = 0.1,
        buffer_size: int = 1_000,
        max_queue: int = 200_000,
        journal_dir: str | Path | None = None,
        feedback_mirror: Any = None,
        sample_rate: float | None = None,
        always_keep_errors: bool = True,
        max_unsampled_detail: int = 1_000,
        feedback: dict[str, Any] | FeedbackConfig | None = None,
    ) -> None:
        from cl_plugin.capture.logger import (
            ProductionInteractionLogger,  # the logger imports this module's peers
        )

        if sample_rate is None:
            logged = store.config.sample_rate if isinstance(store, ProductionInteractionLogger) else 1.0
            sample_rate = check_sample_rate(logged, "logging.sample_rate")
        else:
            sample_rate = check_sample_rate(sample_rate)
        if (
            isinstance(max_unsampled_detail, bool)
            or not isinstance(max_unsampled_detail, int)
            or max_unsampled_detail < 1
        ):
            raise ConfigError(
                f"max_unsampled_detail must be an int >= 1 (got {max_unsampled_detail!r})",
                key="max_unsampled_detail",
            )
        options = CaptureOptions(
            graph_name=graph_name,
            user_key=user_key,
            routing_key=routing_key,
            sample_rate=sample_rate,
            always_keep_errors=bool(always_keep_errors),
            max_unsampled_detail=max_unsampled_detail,
        )
        if query_keys is not None:
            options = _replace(options, query_keys=tuple(query_keys))
        if response_keys is not None:
            options = _replace(options, response_keys=tuple(response_keys))
        prices_all = dict(options.prices)
        prices_all.update(prices or {})
        options = _replace(
            options,
            prices=prices_all,
            max_io_chars=max_io_chars,
            max_in_flight=max_in_flight,
            run_ttl=run_ttl,
        )
        self._owns_writer = not isinstance(store, ProductionInteractionLogger)
        if isinstance(store, ProductionInteractionLogger):
            if store.writer is None or store.store is None:
                raise ValueError(
                    "CaptureHandler needs a logger with a database: enable it and set use_sqlite or database_url"
                )
            self.store: Store = store.store
            self.sanitizer = store.sanitizer
            self.writer = store.writer
            self._hash_key = store.privacy.resolve_hash_key() if store.privacy is not None else None
            if feedback is None:
                feedback = store.feedback_limits
        else:
            if store is None or isinstance(store, str):
                store = Store.from_url(store or "sqlite://")
            elif not isinstance(store, Store):
                raise TypeError(
                    "CaptureHandler(store=...) takes a Store, a database URL or a ProductionInteractionLogger, "
                    f"not {type(store).__name__}"
                )
            self.store = store
            self._hash_key = hash_key
            self.sanitizer = _sanitizer(
                redact_pii, hash_user_ids, hash_session_ids, hash_key, max_text_length
            )
            self.writer = Writer(
                self.store,
                journal=Journal(journal_dir or _journal_dir(self.store.url)),
                buffer_size=buffer_size,
                flush_interval=flush_interval,
                max_queue=max_queue,
                name="cl-plugin-capture",
            )
        self.feedback_limits = parse_section(FeedbackConfig, feedback, prefix="feedback")
        self.options = options
        self.tree = RunTree(self.sanitizer, options)
        self.feedback_mirror = feedback_mirror
        self.hook_errors = 0
        self._roots: OrderedDict[str, None] = OrderedDict()  # root ids seen here, for feedback checks
        self._consume = self.tree.consume
        self._submit = self.writer.submit

    # -- hooks: build a tuple, enqueue it, return ------------------------------------------------------

    def _put(self, event: tuple) -> None:
        self._submit(self._consume, event, block=False)

    def _hook_failed(self, hook: str) -> None:
        self.hook_errors += 1
        log.warning("cl_plugin capture hook %s failed; the run goes on", hook, exc_info=True)

    def _root(self, run_id: UUID) -> None:
        roots = self._roots
        roots[str(run_id)] = None
        if len(roots) > 10_000:  # older ones are looked up in the store
            roots.popitem(last=False)

    def _start(
        self,
        hook: str,
        kind: str,
        serialized: Any,
        payload: Any,
        run_id: UUID,
        parent_run_id: UUID | None,
        metadata: dict[str, Any] | None,
        kwargs: dict[str, Any],
        extra: Any,
    ) -> None:
        try:
            name = kwargs.get("name") or _serialized_name(serialized)
            self._put((START, kind, run_id, parent_run_id, time.time(), name, payload, metadata, extra))
            if parent_run_id is None:
                self._root(run_id)
        except Exception:
            self._hook_failed(hook)

    def on_chain_start(
        self,
        serialized: dict[str, Any] | None,
        inputs: Any,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        self._start(
            "on_chain_start", "chain", serialized, inputs, run_id, parent_run_id, metadata, kwargs, tags
        )

    def on_chat_model_start(
        self,
        serialized: dict[str, Any],
        messages: list[list[Any]],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        self._start(
            "on_chat_model_start",
            "llm",
            serialized,
            messages,
            run_id,
            parent_run_id,
            metadata,
            kwargs,
            kwargs.get("invocation_params"),
        )

    def on_llm_start(
        self,
        serialized: dict[str, Any],
        prompts: list[str],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        self._start(
            "on_llm_start",
            "llm",
            serialized,
            prompts,
            run_id,
            parent_run_id,
            metadata,
            kwargs,
            kwargs.get("invocation_params"),
        )

    def on_tool_start(
        self,
        serialized: dict[str, Any],
        input_str: str,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        inputs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        self._start(
            "on_tool_start",
            "tool",
            serialized,
            inputs if inputs is not None else input_str,
            run_id,
            parent_run_id,
            metadata,
            kwargs,
            None,
        )

    def on_retriever_start(
        self,
        serialized: dict[str, Any],
        query: str,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        self._start(
            "on_retriever_start",
            "retriever",
            serialized,
            query,
            run_id,
            parent_run_id,
            metadata,
            kwargs,
            None,
        )

    def _end(self, kind: int, payload: Any, run_id: UUID, hook: str) -> None:
        try:
            self._put((kind, run_id, time.time(), payload))
        except Exception:
            self._hook_failed(hook)

    def on_chain_end(self, outputs: Any, *, run_id: UUID, **kwargs: Any) -> None:
        self._end(END, outputs, run_id, "on_chain_end")

    def on_chain_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self._end(ERROR, error, run_id, "on_chain_error")

    def on_llm_end(self, response: Any, *, run_id: UUID, **kwargs: Any) -> None:
        self._end(END, response, run_id, "on_llm_end")

    def on_llm_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self._end(ERROR, error, run_id, "on_llm_error")

    def on_tool_end(self, output: Any, *, run_id: UUID, **kwargs: Any) -> None:
        self._end(END, output, run_id, "on_tool_end")

    def on_tool_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self._end(ERROR, error, run_id, "on_tool_error")

    def on_retriever_end(self, documents: Any, *, run_id: UUID, **kwargs: Any) -> None:
        self._end(END, documents, run_id, "on_retriever_end")

    def on_retriever_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self._end(ERROR, error, run_id, "on_retriever_error")

    def on_custom_event(self, name: str, data: Any, *, run_id: UUID, **kwargs: Any) -> None:
        if name != DECISION_EVENT:
            return
        try:
            self._put((DECISION, run_id, time.time(), data))
        except Exception:
            self._hook_failed("on_custom_event")

    # -- feedback and lifecycle ------------------------------------------------------------------------

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
        """Attach feedback to a captured interaction, as ``store.feedback.record``
        (:meth:`cl_plugin.store.feedback.Feedback.record`) does.

        Feedback for a run still in flight or not yet written is queued behind it, so it is never lost.
        Attachments (:class:`~cl_plugin.records.Attachment` or equivalent dicts: code, images, text files)
        are checked and sanitized here, within the handler's ``feedback`` limits, and queued with it.

        Returns:
            The feedback row as it will be stored (with ``attachments``, their metadata, when given).

        Raises:
            InvalidRecordError: a field cannot be stored as given (the error names it; attachments over
                the limits or of a type not stored raise its subclasses).
            MissingDependencyError: an image attachment without Pillow (``pip install 'cl-plugin[web]'``).
            UnknownInteractionError: no run with this id went through this handler or is in the store.
        """
        iid = str(interaction_id)

        def deliver(rows: list[tuple[str, dict[str, Any]]]) -> None:
            self.writer.submit(list, rows)  # built and sanitized already: the writer stores them as they are
            if self.feedback_mirror is not None:
                mirror_feedback(self.feedback_mirror, rows[0][1])

        return record_feedback(
            interaction_id,
            self.sanitizer,
            exists=lambda stored_id: iid in self._roots or self.store.has_interaction(stored_id),
            deliver=deliver,
            score=score,
            thumbs=thumbs,
            correction=correction,
            comment=comment,
            value=value,
            source=source,
            key=key,
            attachments=attachments,
            limits=self.feedback_limits,
        )

    def feedback_token(self, interaction_id: str | UUID, *, ttl: float = 3600.0) -> str:
        """A signed token that lets a client post feedback on this interaction, and no other, for ``ttl``
        seconds (to the endpoint of :func:`cl_plugin.web.feedback.feedback_app`, say).

        Signed with HMAC-SHA256 under the handler's id hashing key (``hash_key``, else
        ``CL_PLUGIN_HASH_KEY``, else :func:`cl_plugin.privacy.id_hash_key`); the endpoint must be given the
        same key. The token names the interaction as stored (hashed when its id holds PII).

        Args:
            interaction_id: the interaction (a captured run's root run id).
            ttl: seconds the token is valid (at most 30 days).

        Returns:
            The token.
        """
        stored = self.sanitizer.key(repair_text(str(interaction_id)))
        return mint_feedback_token(self.token_key, stored, ttl)

    @property
    def token_key(self) -> str:
        """The key feedback tokens are signed with: the id hashing key of this handler's privacy settings."""
        return self._hash_key or id_hash_key()  # id_hash_key reads CL_PLUGIN_HASH_KEY first

    def flush(self, timeout: float | None = None) -> bool:
        """Write everything captured so far (runs still in flight are written when they end).

        Returns:
            True when it is all in the database; False if ``timeout`` passed first, or while rows wait in
            the spill journal because the database cannot be reached (:meth:`stats` counts them).

        Raises:
            StoreSchemaError: the database lacks a table or column (the message has the fix; the rows wait
                in the journal).
        """
        return self.writer.flush(timeout)

    def close(self, timeout: float | None = 30.0) -> bool:
        """Flush and stop the background writer (a shared logger's writer is left to the logger).

        Returns and raises as :meth:`flush`; the handler is closed either way.
        """
        if not self._owns_writer:
            return self.writer.flush(timeout)
        try:
            return self.writer.close(timeout)
        finally:
            self.store.close()

    def stats(self) -> dict[str, Any]:
        """What the capture did so far, so that a user can tell where the rows are.

        Returns:
            ``submitted`` (events and feedback queued), ``written`` (rows inserted), ``unchanged``,
            ``updated``, ``spilled`` (rows put in the journal while the database could not take them),
            ``replayed`` (journaled rows written since), ``waiting_in_journal`` (whether some still wait),
            ``dropped`` (events not queued because the queue was full), ``rejected`` (rows the database
            refused, kept in the journal's rejected file), ``invalid``, ``lost``, ``store_available``,
            ``last_error``, ``queue_size`` and ``hook_errors``. A handler sharing a logger's writer reports
            that writer's counts.
        """
        return {**self.writer.counts(), "hook_errors": self.hook_errors}

    def __enter__(self) -> CaptureHandler:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _replace(options: CaptureOptions, **changes: Any) -> CaptureOptions:
    return dataclasses.replace(options, **changes)


def _sanitizer(
    redact: bool, hash_users: bool, hash_sessions: bool, key: str | None, max_text_length: int
) -> Sanitizer:
    hash_id = None
    if hash_users or hash_sessions:
        key = key or os.environ.get(HASH_KEY_ENV)
        if not key:
            raise PrivacyConfigError(
                f"hashing user or session ids needs a secret key: pass hash_key=... or set {HASH_KEY_ENV}",
                key="hash_key",
            )
        hash_id = partial(hash_identifier, key=key)
    return Sanitizer(
        redact=default_redactor().redact if redact else None,
        max_text_length=max_text_length,
        hash_id=hash_id,
        hash_sessions=hash_sessions,
        hash_users=hash_users,
        # ids holding PII: the given key, else the privacy layer's (CL_PLUGIN_HASH_KEY or its key file)
        hash_pii_id=partial(hash_identifier, key=key) if key else None,
    )
