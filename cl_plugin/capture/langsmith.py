"""The LangSmith bridge: a sanitizing client and tracer, background feedback mirroring, dataset export.

The plugin and LangSmith share one identity: an interaction id is the LangChain root run id, which is the
LangSmith run id, so feedback recorded against an interaction lands on the traced run.

* :func:`sanitizing_client` builds a ``langsmith.Client`` that redacts PII from every string of a run's
  inputs, outputs, metadata (keys and values), error, name and tags before the run is queued for upload;
  :func:`sanitizing_tracer` wraps one in a ``LangChainTracer`` to pass as ``config={"callbacks": [...]}``.
* :class:`FeedbackMirror` sends feedback from a daemon thread with retries: the client's ``create_feedback``
  is a blocking HTTP call on the calling thread.
* :func:`export_to_dataset` turns stored interactions into dataset examples, idempotently.

Nothing here may hang the host process. The client uploads runs from its own threads; a process that ends
while LangSmith is slow or unreachable waits for them, so call ``client.flush(timeout=...)`` (or
``client.cleanup(timeout=...)``) before exit, and :meth:`FeedbackMirror.close` with a timeout.
"""

from __future__ import annotations

import atexit
import dataclasses
import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import langsmith
import orjson
from langchain_core.tracers.langchain import LangChainTracer
from langsmith import utils as ls_utils

from cl_plugin.privacy import REDACTED, PIIRedactor, default_redactor, safe_identifier

if TYPE_CHECKING:
    from langchain_core.tracers.schemas import Run

    from cl_plugin.store import Store

__all__ = [
    "ExportResult",
    "FeedbackMirror",
    "FeedbackMirrorStats",
    "example_id",
    "export_to_dataset",
    "mirror_feedback",
    "sanitizing_client",
    "sanitizing_tracer",
]

log = logging.getLogger("cl_plugin.langsmith")

_EXAMPLE_NAMESPACE = uuid.UUID("5b0f7d1e-3c2a-5e4f-9a61-c1e0a1b2d3f4")


# ---------------------------------------------------------------------------------------------------------
# Sanitizing client and tracer


class _RedactingAnonymizer:
    """The client's ``anonymizer`` hook: a user anonymizer (if any), then the redactor over every string.

    The client hands it JSON data (it serializes the payload first, so message objects arrive as dicts) for
    inputs, outputs, metadata, and errors wrapped as ``{"error": text}``. It never raises: if redaction
    fails, every top-level value becomes :data:`~cl_plugin.privacy.REDACTED` (keys are kept, so the
    client still finds ``"error"``).
    """

    def __init__(self, redactor: PIIRedactor, before: Callable[[dict], dict] | None) -> None:
        self.redactor = redactor
        self.before = before

    def __call__(self, payload: dict) -> dict:
        try:
            data = payload if self.before is None else self.before(payload)
            return self.redactor.redact_value(data)
        except Exception:
            log.exception("redacting a LangSmith run payload failed; its values are sent as %s", REDACTED)
            return dict.fromkeys(payload, REDACTED)


class _SanitizingClient(langsmith.Client):
    """A ``langsmith.Client`` that also redacts run names and tags, which none of the client's hooks sees.

    Every run the client sends passes through ``_run_transform`` (``create_run``, ``batch_ingest_runs``,
    ``multipart_ingest``) or ``update_run``; both redact the name and each tag, failing closed.
    """

    __slots__ = ("_redactor",)

    def _run_transform(self, *args: Any, **kwargs: Any) -> dict:
        return _redact_name_and_tags(self._redactor, super()._run_transform(*args, **kwargs))

    def update_run(self, run_id: Any, **kwargs: Any) -> None:
        return super().update_run(run_id, **_redact_name_and_tags(self._redactor, kwargs))


def _redact_name_and_tags(redactor: PIIRedactor, run: dict) -> dict:
    """``run`` with its name and tags redacted in place (run names carry text: a tool named after a user's
    address, a ``run_name`` built from the query; tags too)."""
    if isinstance(run.get("name"), str):
        run["name"] = redactor.safe_redact(run["name"])
    tags = run.get("tags")
    if tags:
        run["tags"] = [redactor.safe_redact(t) if isinstance(t, str) else REDACTED for t in tags]
    return run


def sanitizing_client(*, redactor: PIIRedactor | None = None, **client_kwargs: Any) -> langsmith.Client:
    """A ``langsmith.Client`` that redacts PII from run payloads before they are queued for upload.

    Every string in a run's inputs, outputs, metadata (``extra.metadata``) and error goes through
    ``redactor`` (keys included, nested dicts and lists walked), failing closed: text that cannot be
    redacted is sent as ``"[REDACTED]"``. So do the run's name and each of its tags. The client applies the
    hook on the thread that reports the run, so redaction cost lands there (the default redactor is built
    for texts without PII: microseconds).

    The hook is the client's ``anonymizer``, not ``hide_inputs``/``hide_outputs``/``hide_metadata``: those
    receive live objects (chat messages) rather than JSON and never see errors; names and tags are redacted
    where the client turns a run into its upload payload. Fields not redacted here: ``serialized`` (kept by
    the client for LLM runs only: the model's constructor arguments, with LangChain's secrets masked),
    ``extra`` outside ``metadata`` (invocation parameters, runtime) and events (the client strips streamed
    token text from them).
    :func:`sanitizing_tracer` redacts ``serialized`` and ``extra`` before a run reaches the client, since
    constructor arguments and invocation parameters carry text too (canned messages, an end user's address
    passed as the provider's ``user``).

    Runs are uploaded from the client's background threads. Before the process exits, call
    ``client.flush(timeout=...)``: without a timeout, an unreachable endpoint makes it wait for retries.

    Args:
        redactor: the redactor to apply; :func:`~cl_plugin.privacy.default_redactor` by default.
        **client_kwargs: passed to ``langsmith.Client`` (``api_url``, ``api_key``, ``timeout_ms``, ...). An
            ``anonymizer`` runs before the redactor; ``hide_inputs=True`` (and the others) still drops
            the whole field.

    Returns:
        The client.

    Raises:
        TypeError: a function was given as ``hide_inputs``, ``hide_outputs`` or ``hide_metadata``; the
            client ignores those when an anonymizer is set, so pass it as ``anonymizer`` instead.
    """
    for name in ("hide_inputs", "hide_outputs", "hide_metadata"):
        if callable(client_kwargs.get(name)):
            raise TypeError(
                f"sanitizing_client() got a function as {name}; the langsmith client ignores hide_* functions "
                "once an anonymizer is installed, so pass it as anonymizer=... (it runs before the redactor), "
                f"or pass {name}=True to drop the field entirely"
            )
    redactor = redactor or default_redactor()
    anonymizer = _RedactingAnonymizer(redactor, client_kwargs.pop("anonymizer", None))
    client = _SanitizingClient(anonymizer=anonymizer, **client_kwargs)
    client._redactor = redactor
    return client


def sanitizing_tracer(
    project_name: str | None = None,
    *,
    client: langsmith.Client | None = None,
    redactor: PIIRedactor | None = None,
) -> LangChainTracer:
    """A ``LangChainTracer`` over a sanitizing client, to pass in ``config={"callbacks": [...]}``.

    The traced root run keeps the id given as ``config["run_id"]``, which is also the plugin's interaction
    id, so feedback mirrored later lands on that run. Besides what the client redacts (inputs, outputs,
    metadata, errors, names and tags, the tracer's own default tags included), the tracer redacts each run's
    ``serialized`` model and its ``extra`` (invocation parameters) as the run starts, failing closed like the
    client.

    Args:
        project_name: the LangSmith project; the environment's (``LANGSMITH_PROJECT``) by default.
        client: a client made by :func:`sanitizing_client`; a new one by default, reachable as
            ``tracer.client`` (call ``tracer.client.flush(timeout=...)`` before exit).
        redactor: the redactor for a new client.

    Returns:
        The tracer.

    Raises:
        ValueError: ``client`` was not made by :func:`sanitizing_client`, or both ``client`` and
            ``redactor`` were given.
    """
    if client is None:
        client = sanitizing_client(redactor=redactor)
    elif redactor is not None:
        raise ValueError(
            "sanitizing_tracer() takes a redactor only when it builds the client; pass the redactor to "
            "sanitizing_client() instead"
        )
    elif not isinstance(client, _SanitizingClient):
        raise ValueError(
            "sanitizing_tracer() needs a client made by sanitizing_client(), so that run payloads are "
            "redacted before upload; build it with sanitizing_client(api_url=..., api_key=...)"
        )
    return _SanitizingTracer(project_name=project_name, client=client)


class _SanitizingTracer(LangChainTracer):
    """A ``LangChainTracer`` that redacts the parts of a run the client's anonymizer never sees.

    It takes the redactor of its client, so the copies LangChain makes of it (with the same client) redact
    alike.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._redactor = getattr(self.client, "_redactor", None) or default_redactor()

    def _start_trace(self, run: Run) -> None:
        super()._start_trace(run)
        # New objects, not edits: the serialized dict is shared with the other callbacks of the run.
        run.serialized = _redacted_value(self._redactor, run.serialized)
        run.extra = _redacted_value(self._redactor, run.extra)


def _redacted_value(redactor: PIIRedactor, value: Any) -> Any:
    """``value`` with every string redacted; on failure, each top-level value of a dict becomes REDACTED."""
    if not value:
        return value
    try:
        return redactor.redact_value(value)
    except Exception:
        log.exception("redacting a LangSmith run failed; its values are sent as %s", REDACTED)
        return dict.fromkeys(value, REDACTED) if isinstance(value, dict) else REDACTED


# ---------------------------------------------------------------------------------------------------------
# Feedback mirror

# Worth retrying: the server or the network may recover, or the run may not be ingested yet (404).
_TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    ls_utils.LangSmithAPIError,
    ls_utils.LangSmithConnectionError,
    ls_utils.LangSmithNotFoundError,
    ls_utils.LangSmithRateLimitError,
    ls_utils.LangSmithRequestTimeout,
    OSError,  # requests' own exceptions included
)
_STOP = object()


@dataclasses.dataclass(frozen=True, slots=True)
class FeedbackMirrorStats:
    """Counters of a :class:`FeedbackMirror`.

    Attributes:
        sent: feedback LangSmith accepted (or already had, when a retry found it).
        failed: feedback given up on after the last attempt, or refused for good (bad key, 4xx).
        dropped: feedback refused by :meth:`FeedbackMirror.submit` (queue full, or the mirror closed).
        pending: feedback queued or being sent.
    """

    sent: int
    failed: int
    dropped: int
    pending: int


@dataclasses.dataclass(frozen=True, slots=True)
class _Item:
    run_id: str
    key: str
    score: float | None
    value: Any
    comment: str | None
    correction: Any
    source: str
    feedback_id: str


class FeedbackMirror:
    """Mirrors feedback to LangSmith from a daemon thread, so the caller never waits on the network.

    :meth:`submit` only enqueues. The thread redacts the key, source, comment, value and correction
    (failing closed), resolves the project's id once (LangSmith locates run feedback by project), and calls
    ``client.create_feedback`` with the feedback's id, so a retry after a lost response cannot create a
    duplicate. Transient errors (connection, timeout, 5xx, 429, and 404 while the run is not yet ingested)
    are retried with exponential backoff; after ``max_attempts`` the feedback is logged and counted as
    failed. Nothing is raised into the caller.

    The client's own HTTP adapter retries 5xx responses too (``retry_config``), so one attempt can take a
    few seconds; pass a client with ``retry_config=urllib3.Retry(0)`` to leave retrying to the mirror.

    Args:
        client: the LangSmith client (any; feedback has no run payload to sanitize).
        project_name: the project the runs were traced to; the environment's (``LANGSMITH_PROJECT``) by
            default.
        max_queue: most feedback held in memory; beyond it :meth:`submit` drops and counts.
        max_attempts: attempts per feedback before giving up.
        retry_delay: seconds before the first retry; doubled after each failure.
        max_retry_delay: the longest wait between attempts.
        redactor: the redactor for comments, values and corrections;
            :func:`~cl_plugin.privacy.default_redactor` by default.

    Example:
        >>> mirror = FeedbackMirror(client, project_name="prod")  # doctest: +SKIP
        >>> mirror.submit(interaction_id, key="user_score", score=0.8, comment="wrong date")  # doctest: +SKIP
        True
        >>> mirror.close(timeout=5)  # doctest: +SKIP
    """

    def __init__(
        self,
        client: langsmith.Client,
        *,
        project_name: str | None = None,
        max_queue: int = 10_000,
        max_attempts: int = 5,
        retry_delay: float = 0.5,
        max_retry_delay: float = 30.0,
        redactor: PIIRedactor | None = None,
    ) -> None:
        if max_queue < 1 or max_attempts < 1 or retry_delay < 0 or max_retry_delay < 0:
            raise ValueError(
                "FeedbackMirror needs max_queue >= 1, max_attempts >= 1 and non-negative delays (got "
                f"max_queue={max_queue}, max_attempts={max_attempts}, retry_delay={retry_delay}, "
                f"max_retry_delay={max_retry_delay})"
            )
        self.client = client
        self.project_name = project_name or ls_utils.get_tracer_project()
        self.max_queue = max_queue
        self.max_attempts = max_attempts
        self.retry_delay = retry_delay
        self.max_retry_delay = max_retry_delay
        self.redactor = redactor or default_redactor()
        self._queue: queue.Queue[Any] = queue.Queue()  # bounded by submit(), so close() can always enqueue
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._session_id: str | None = None
        self._sent = self._failed = self._dropped = 0

    def __repr__(self) -> str:
        return f"FeedbackMirror(project_name={self.project_name!r}, stats={self.stats})"

    @property
    def stats(self) -> FeedbackMirrorStats:
        """The current counters."""
        with self._lock:
            return FeedbackMirrorStats(self._sent, self._failed, self._dropped, self._queue.unfinished_tasks)

    def submit(
        self,
        run_id: str,
        *,
        key: str,
        score: float | None = None,
        value: Any = None,
        comment: str | None = None,
        correction: Any = None,
        source: str = "user",
        feedback_id: str | None = None,
    ) -> bool:
        """Queue one feedback for the run ``run_id``; return at once.

        Args:
            run_id: the LangSmith run id (the interaction id of a captured graph run).
            key: the feedback metric (``"user_score"``, ``"thumbs"``, ...).
            score: the numeric score.
            value: a non-numeric value (a label, or a dict).
            comment: free text; redacted before it leaves.
            correction: the right answer; a string is sent as ``{"response": text}``; redacted.
            source: who gave the feedback (``"user"``, ``"annotator"``, ``"llm_judge"``); sent as
                ``source_info``.
            feedback_id: the feedback's id, to make a re-submission idempotent; a new UUID by default.

        Returns:
            True when queued; False when dropped because the queue is full or the mirror is closed.

        Raises:
            ValueError: ``run_id`` or ``feedback_id`` is not a UUID, or ``key`` is empty.
        """
        if not key:
            raise ValueError("feedback needs a non-empty key, such as 'user_score'")
        item = _Item(
            run_id=_uuid_text(run_id, "run_id"),
            key=key,
            score=score,
            value=value,
            comment=comment,
            correction=correction,
            source=source,
            feedback_id=_uuid_text(feedback_id, "feedback_id") if feedback_id else str(uuid.uuid4()),
        )
        with self._lock:
            if self._closed or self._queue.unfinished_tasks >= self.max_queue:
                self._dropped += 1
                dropped, closed = self._dropped, self._closed
            else:
                self._queue.put(item)
                self._start()
                return True
        if dropped == 1 or dropped % 1000 == 0:
            reason = "the mirror is closed" if closed else f"the queue holds {self.max_queue} already"
            log.warning("LangSmith feedback dropped because %s (%d dropped so far)", reason, dropped)
        return False

    def flush(self, timeout: float | None = 10.0) -> bool:
        """Wait until every queued feedback is sent or given up on.

        Args:
            timeout: most seconds to wait (None: no limit).

        Returns:
            True when nothing is pending any more.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        done = self._queue.all_tasks_done
        with done:
            while self._queue.unfinished_tasks:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                done.wait(remaining)
        return True

    def close(self, timeout: float | None = 10.0) -> None:
        """Stop accepting feedback, send what is queued (within ``timeout``) and stop the thread.

        Feedback still pending after ``timeout`` is abandoned with a logged warning; the thread is a daemon,
        so it never keeps the process alive.

        Args:
            timeout: most seconds to wait (None: no limit).
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            thread = self._thread
        atexit.unregister(self._close_at_exit)
        start = time.monotonic()
        if not self.flush(timeout):
            log.warning(
                "FeedbackMirror closed with %d LangSmith feedback still pending", self._queue.unfinished_tasks
            )
        if thread is not None:
            self._queue.put(_STOP)
            thread.join(None if timeout is None else max(0.0, timeout - (time.monotonic() - start)))

    def _close_at_exit(self) -> None:
        self.close(timeout=5.0)

    def _start(self) -> None:
        """Start the worker on first use (the caller holds the lock)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="cl-plugin-feedback-mirror", daemon=True)
            self._thread.start()
            atexit.register(self._close_at_exit)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is _STOP:
                    return
                self._deliver(item)
            except Exception:  # the worker must survive anything, or later feedback would pile up
                log.exception("LangSmith feedback mirror: unexpected error")
                with self._lock:
                    self._failed += 1
            finally:
                self._queue.task_done()

    def _deliver(self, item: _Item) -> None:
        delay = self.retry_delay
        for attempt in range(1, self.max_attempts + 1):
            try:
                self._send(item)
            except ls_utils.LangSmithConflictError:  # an earlier attempt got through: the id is taken
                pass
            except Exception as exc:
                transient = _is_transient(exc)
                if transient and attempt < self.max_attempts:
                    time.sleep(delay)
                    delay = min(delay * 2, self.max_retry_delay)
                    continue
                log.warning(
                    "LangSmith feedback %r for run %s not sent (%s after %d attempt(s)): %s",
                    item.key,
                    item.run_id,
                    "still failing" if transient else "refused",
                    attempt,
                    exc,
                )
                with self._lock:
                    self._failed += 1
                return
            with self._lock:
                self._sent += 1
            return

    def _send(self, item: _Item) -> None:
        if self._session_id is None:
            self._session_id = str(self.client.read_project(project_name=self.project_name).id)
        redactor = self.redactor
        correction = item.correction
        if isinstance(correction, str):
            correction = {"response": redactor.safe_redact(correction)}
        else:
            correction = redactor.redact_value(correction)
        self.client.create_feedback(
            item.run_id,
            redactor.safe_redact(item.key),
            score=item.score,
            value=redactor.redact_value(item.value),
            comment=_redacted(redactor, item.comment),
            correction=correction,
            source_info={"source": redactor.safe_redact(item.source)},
            feedback_id=item.feedback_id,
            session_id=self._session_id,
            stop_after_attempt=1,
        )


def _is_transient(exc: Exception) -> bool:
    """Whether a failed ``create_feedback`` may succeed if tried again."""
    if isinstance(exc, _TRANSIENT_ERRORS):
        return True
    # Any other HTTP status raises the base class, with the requests error (and its response) as context.
    if type(exc) is ls_utils.LangSmithError:
        status = getattr(getattr(exc.__context__, "response", None), "status_code", None)
        return status is None or status >= 500 or status in (408, 425, 429)
    return False  # refused (401, 400 and the like) or a local error such as a validation failure


def _uuid_text(value: Any, name: str) -> str:
    try:
        return str(uuid.UUID(str(value)))
    except ValueError:
        raise ValueError(
            f"{name} must be a UUID (LangSmith ids are UUIDs; a captured interaction id is one), got {value!r}"
        ) from None


# ---------------------------------------------------------------------------------------------------------
# Dataset export


@dataclasses.dataclass(frozen=True, slots=True)
class ExportResult:
    """What :func:`export_to_dataset` did.

    Attributes:
        dataset_id: the LangSmith dataset's id.
        dataset_name: its name.
        created: examples created by this export.
        skipped: selected interactions whose example the dataset already held.
    """

    dataset_id: str
    dataset_name: str
    created: int
    skipped: int


def example_id(dataset_id: str, interaction_id: str) -> str:
    """The id of the example :func:`export_to_dataset` makes from an interaction in a dataset.

    Deterministic (a UUIDv5), so re-exporting finds the example instead of duplicating it.
    """
    return str(uuid.uuid5(_EXAMPLE_NAMESPACE, f"{dataset_id}/{interaction_id}"))


def export_to_dataset(
    store: Store,
    client: langsmith.Client,
    dataset_name: str,
    *,
    description: str | None = None,
    limit: int | None = None,
    redactor: PIIRedactor | None = None,
    chunk_size: int = 100,
    **filters: Any,
) -> ExportResult:
    """Export stored interactions to a LangSmith dataset, one example each, idempotently.

    Each example has inputs ``{"query": user_query}``, outputs ``{"response": ...}`` (the last correction
    when the interaction has corrections, else the response) and metadata ``interaction_id``, ``run_id``,
    ``agent_selected``, ``user_feedback_score``, ``graph_name``, ``timestamp``, ``corrected`` and, when its
    feedback carries attachments, ``attachments`` (each one's ``sha256``, ``kind``, ``media_type`` and
    ``size``; never the bytes). Texts
    go through the redactor again before they leave, although the store holds them redacted already, and
    an id that holds PII (in a store written without redaction) is sent as its keyed hash
    (:func:`~cl_plugin.privacy.safe_identifier`).

    The dataset is created if it does not exist. Example ids derive from the dataset and the interaction
    (:func:`example_id`), and each chunk first asks which of its examples exist, so a re-export (or two
    exports racing) creates no duplicates. The store is read in chunks, oldest first.

    Args:
        store: the store to read.
        client: the LangSmith client.
        dataset_name: the dataset to create or extend.
        description: the description of a new dataset.
        limit: most interactions to export (the oldest matching ones); None for all.
        redactor: the redactor; :func:`~cl_plugin.privacy.default_redactor` by default.
        chunk_size: interactions per store read and LangSmith request (at most 100: the example listing
            returns up to 100 ids per page).
        **filters: the filters of :meth:`Store.query_interactions` (``min_feedback_score``, ``agent``,
            ``start_time``, ``graph_name``, ...).

    Returns:
        The dataset and the counts.

    Raises:
        ValueError: ``limit`` is negative or ``chunk_size`` is not in 1..100.
        langsmith.utils.LangSmithError: LangSmith refused a request or could not be reached.
    """
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0 or None (got {limit})")
    if not 1 <= chunk_size <= 100:
        raise ValueError(f"chunk_size must be between 1 and 100 (got {chunk_size})")
    redactor = redactor or default_redactor()
    dataset_id = _ensure_dataset(client, dataset_name, description)
    created = skipped = 0
    remaining = limit
    for chunk in store.iter_interactions(chunk_size=chunk_size, **filters):
        if remaining is not None:
            chunk = chunk[:remaining]
            remaining -= len(chunk)
        if not chunk:  # limit=0; an empty id list would make the listing return the whole dataset
            break
        examples = {example_id(dataset_id, row["interaction_id"]): row for row in chunk}
        new_ids = _missing_examples(client, dataset_id, list(examples))
        attached = store.attachments.for_interactions(examples[i]["interaction_id"] for i in new_ids)
        made = _create_examples(
            client,
            dataset_id,
            [
                _example(i, examples[i], redactor, attached.get(examples[i]["interaction_id"]))
                for i in new_ids
            ],
        )
        created += made
        skipped += len(examples) - made
        if remaining == 0:
            break
    return ExportResult(dataset_id=dataset_id, dataset_name=dataset_name, created=created, skipped=skipped)


def _ensure_dataset(client: langsmith.Client, name: str, description: str | None) -> str:
    try:
        return str(client.read_dataset(dataset_name=name).id)
    except ls_utils.LangSmithNotFoundError:
        pass
    try:
        return str(client.create_dataset(name, description=description).id)
    except ls_utils.LangSmithConflictError:  # created meanwhile by another exporter
        return str(client.read_dataset(dataset_name=name).id)


def _missing_examples(client: langsmith.Client, dataset_id: str, ids: list[str]) -> list[str]:
    existing = {str(e.id) for e in client.list_examples(dataset_id=dataset_id, example_ids=ids)}
    return [i for i in ids if i not in existing]


def _create_examples(client: langsmith.Client, dataset_id: str, examples: list[dict[str, Any]]) -> int:
    if not examples:
        return 0
    try:
        response = client.create_examples(dataset_id=dataset_id, examples=examples)
    except ls_utils.LangSmithConflictError:
        # Another export created some of them between our check and our write: create the rest.
        missing = set(_missing_examples(client, dataset_id, [e["id"] for e in examples]))
        examples = [e for e in examples if e["id"] in missing]
        if not examples:
            return 0
        response = client.create_examples(dataset_id=dataset_id, examples=examples)
    return int(response["count"])


def _example(
    ex_id: str, row: dict[str, Any], redactor: PIIRedactor, attachments: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    corrections = row.get("corrections") or []
    answer = corrections[-1] if corrections else row["response"]
    example = {
        "id": ex_id,
        "inputs": {"query": redactor.safe_redact(row["user_query"])},
        "reference_outputs": {"response": redactor.safe_redact(answer)},
        "metadata": {
            "interaction_id": safe_identifier(row["interaction_id"], redactor=redactor),
            "run_id": None
            if row.get("run_id") is None
            else safe_identifier(row["run_id"], redactor=redactor),
            "agent_selected": _redacted(redactor, row.get("agent_selected")),
            "graph_name": _redacted(redactor, row.get("graph_name")),
            "user_feedback_score": row.get("user_feedback_score"),
            "timestamp": row.get("timestamp"),
            "corrected": bool(corrections),
        },
    }
    if attachments:
        example["metadata"]["attachments"] = attachment_metadata(attachments)
    return example


def attachment_metadata(attachments: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What an export says of an interaction's feedback attachments: their address, kind, media type and
    size; never their bytes (read those with ``store.attachments.get``)."""
    return [{k: a[k] for k in ("sha256", "kind", "media_type", "size")} for a in attachments]


def _redacted(redactor: PIIRedactor, text: str | None) -> str | None:
    return None if text is None else redactor.safe_redact(text)


def mirror_feedback(mirror: Any, row: dict[str, Any], *, run_id: str | None = None) -> bool:
    """Hand one stored feedback row to a mirror (such as :class:`FeedbackMirror`); never raises.

    Args:
        mirror: an object with ``submit(run_id, **feedback)``.
        row: a ``feedback`` row as stored (already redacted).
        run_id: the LangSmith run id; the row's interaction id by default (the root run id of a captured
            graph run).

    Returns:
        True when the mirror took it. LangSmith run ids are UUIDs: feedback on an interaction logged with
        another kind of id has no run to land on and is not sent.
    """
    target = str(run_id or row["interaction_id"])
    try:
        uuid.UUID(target)
    except ValueError:
        log.debug("feedback for %r not mirrored: LangSmith run ids are UUIDs", target)
        return False
    try:
        value = orjson.loads(row["value"]) if row.get("value") else row.get("thumbs_up_down")
        return bool(
            mirror.submit(
                target,
                key=row["key"],
                score=row["score"],
                value=value,
                comment=row["comment"],
                correction=row["correction"],
                source=row["source"],
                feedback_id=row["feedback_id"],
            )
        )
    except Exception:
        log.warning("could not hand feedback to the LangSmith mirror", exc_info=True)
        return False
