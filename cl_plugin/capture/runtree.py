"""Run trees: callback events in, ``interactions`` / ``node_runs`` / ``decisions`` rows out.

:class:`RunTree` is the consumer side of :class:`cl_plugin.CaptureHandler`. The handler's hooks only put
small event tuples on the writer's queue; the writer thread feeds them here, one at a time and in order, so
nothing in this module needs a lock or runs on the host graph's threads. All the work happens here: joining
end events to their starts (end events carry no name or metadata), reading decisions out of node outputs,
summing tokens and cost, serialising and sanitizing inputs and outputs.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from typing import Any
from uuid import UUID

from langgraph.errors import GraphBubbleUp, GraphInterrupt, ParentCommand
from langgraph.types import Command, Send

from cl_plugin.capture.sampling import is_sampled
from cl_plugin.privacy import Sanitizer
from cl_plugin.records import ProductionInteraction
from cl_plugin.store.rows import dumps, row_from_interaction

__all__ = ["DEFAULT_PRICES", "CaptureOptions", "RunTree"]

log = logging.getLogger("cl_plugin.capture")

# Event kinds put on the queue by the handler's hooks.
START, END, ERROR, DECISION = 0, 1, 2, 3

#: List prices in USD per million tokens (input, output), matched by longest model-name prefix.
#: Prices change: pass ``prices=`` to :class:`cl_plugin.CaptureHandler` to add or override entries.
DEFAULT_PRICES: dict[str, tuple[float, float]] = {
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4o": (2.50, 10.00),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1": (2.00, 8.00),
    "o3-mini": (1.10, 4.40),
    "claude-3-5-haiku": (0.80, 4.00),
    "claude-3-5-sonnet": (3.00, 15.00),
    "claude-3-7-sonnet": (3.00, 15.00),
    "claude-sonnet-4": (3.00, 15.00),
    "gemini-1.5-flash": (0.075, 0.30),
    "gemini-1.5-pro": (1.25, 5.00),
}

_QUERY_KEYS = ("query", "question", "user_query", "input", "prompt", "request", "text", "message", "messages")
_RESPONSE_KEYS = ("response", "answer", "final_answer", "reply", "output", "result", "messages")
# An explicit session in the run's metadata wins over the checkpoint thread: separate requests of one
# conversation should not share a checkpoint thread, but they do share a session.
_SESSION_KEYS = ("session_id", "conversation_id", "thread_id")


@dataclasses.dataclass(frozen=True)
class CaptureOptions:
    """What the handler reads from runs and how much of them it keeps (see :class:`CaptureHandler`)."""

    graph_name: str | None = None
    query_keys: tuple[str, ...] = _QUERY_KEYS
    response_keys: tuple[str, ...] = _RESPONSE_KEYS
    user_key: str = "user_id"
    routing_key: str = "routing_history"
    prices: Mapping[str, tuple[float, float]] = dataclasses.field(
        default_factory=lambda: dict(DEFAULT_PRICES)
    )
    max_io_chars: int = 2_000
    max_items: int = 50
    max_in_flight: int = 10_000
    run_ttl: float = 3_600.0
    max_interrupted: int = 10_000
    sample_rate: float = 1.0
    always_keep_errors: bool = True
    max_unsampled_detail: int = 1_000


class _Run:
    __slots__ = (
        "custom_kinds",
        "extra",
        "inputs",
        "interaction",
        "kind",
        "metadata",
        "name",
        "node",
        "parent",
        "parent_key",
        "parent_kind",
        "pending_routes",
        "run_id",
        "start",
    )

    def __init__(self, run_id: str, parent: str | None, kind: str, name: str | None, start: float) -> None:
        self.run_id, self.parent, self.kind, self.name, self.start = run_id, parent, kind, name, start
        self.interaction: _Interaction | None = None
        self.inputs: Any = None
        self.metadata: Mapping[str, Any] = {}
        self.extra: Any = None
        self.node: str | None = None
        self.parent_kind: str | None = None
        self.parent_key: Any = None  # the key of ``runs`` the parent is stored under (``parent`` is its text)
        self.custom_kinds: set[str] = set()
        # A conditional edge's route, held on its node until the node ends: the node's own account of
        # the decision (its routing history, a recorded decision) replaces it.
        self.pending_routes: list[tuple] | None = None


class _Interaction:
    """What is known of one top-level run (or of several, when an interrupted thread is resumed)."""

    __slots__ = (
        "cost",
        "decision_seq",
        "detail",
        "detail_dropped",
        "detail_kept",
        "elapsed_ms",
        "errors",
        "graph_name",
        "handoffs",
        "id",
        "inputs",
        "interrupted",
        "metadata",
        "nodes",
        "outputs",
        "retrieval_failed",
        "retrieval_scores",
        "route_probabilities",
        "routes",
        "run_ids",
        "sampled",
        "session",
        "start",
        "status",
        "thread",
        "tokens",
    )

    def __init__(self, iid: str, start: float) -> None:
        self.id, self.start = iid, start
        self.run_ids: list[str] = []
        self.graph_name: str | None = None
        self.inputs: Any = None
        self.outputs: Any = None
        self.metadata: Mapping[str, Any] = {}
        self.session: str | None = None
        self.thread: str | None = None
        self.elapsed_ms = 0.0
        self.tokens: int | None = None
        self.cost: float | None = None
        self.nodes: set[str] = set()
        self.routes: list[tuple[str, float | None]] = []
        self.retrieval_scores: list[float] = []
        self.retrieval_failed: bool | None = None
        self.interrupted = False
        self.errors: list[str] = []
        self.status = "ok"
        self.decision_seq = 0
        self.handoffs: set[int] = set()
        self.sampled = True
        # Detail rows of a run outside the sample wait here, unbuilt, until the run ends: (table, build, args).
        self.detail: list[tuple[str, Callable[..., dict[str, Any]], tuple]] | None = None
        self.detail_dropped = 0
        self.detail_kept: str | None = None  # why the detail of a run outside the sample was written
        self.route_probabilities: Any = None


class RunTree:
    """Assembles callback events into rows. Used by one thread only (the writer's).

    Args:
        sanitizer: makes every text safe before it becomes part of a row.
        options: what to read and how much to keep.
        clock: wall-clock source (for tests).
    """

    def __init__(
        self, sanitizer: Sanitizer, options: CaptureOptions, clock: Callable[[], float] = time.time
    ) -> None:
        self.sanitizer = sanitizer
        self.options = options
        self.clock = clock
        self.runs: OrderedDict[Any, _Run] = OrderedDict()  # by run id, in start order, for eviction
        self.interrupted: OrderedDict[str, _Interaction] = OrderedDict()  # thread id -> paused interaction
        self.evicted = 0
        self._names: dict[Any, str] = {}
        self._events_since_check = 0
        self._prices = sorted(options.prices.items(), key=lambda kv: -len(kv[0]))

    # -- entry point -------------------------------------------------------------------------------

    def consume(self, event: tuple) -> list[tuple[str, dict[str, Any]]]:
        """Rows produced by one event (most events produce none or one)."""
        out: list[tuple[str, dict[str, Any]]] = []
        kind = event[0]
        if kind == START:
            self._start(event)
        elif kind == DECISION:
            self._decision(event, out)
        else:
            self._end(event, out)
        self._events_since_check += 1
        if self._events_since_check >= 1000 or len(self.runs) > self.options.max_in_flight:
            self._events_since_check = 0
            self.evict(out)
        return out

    # -- starts ------------------------------------------------------------------------------------

    def _start(self, event: tuple) -> None:
        _, run_kind, run_id, parent_id, t, name, inputs, metadata, extra = event
        # Runs are keyed by their ids' integers (hashing a UUID object runs Python code); each id is turned
        # into text once.
        parent = self.runs.get(_key(parent_id)) if parent_id is not None else None
        pid = parent.run_id if parent is not None else None if parent_id is None else str(parent_id)
        run = _Run(str(run_id), pid, run_kind, name, t)
        run.inputs, run.metadata, run.extra = inputs, metadata or {}, extra
        run.parent_key = _key(parent_id) if parent_id is not None else None
        run.node = run.metadata.get("langgraph_node")
        if parent is None:
            run.interaction = self._open_interaction(run)
            run.kind = "root"
        else:
            run.interaction = parent.interaction
            run.parent_kind = parent.kind
            if run_kind == "chain":
                run.kind = self._chain_kind(run, parent)
        self.runs[_key(run_id)] = run

    @staticmethod
    def _chain_kind(run: _Run, parent: _Run) -> str:
        if parent.kind == "node" and _branch_step(run.extra):
            return "edge"  # a conditional edge's router function, run by the node after its own function
        if run.node is None or run.name != run.node:
            return "chain"
        if parent.kind in ("root", "graph"):
            return "node"
        if parent.kind == "chain" and run.node != parent.node:
            # A run named after a node of its own, inside another node: the parent is a compiled subgraph.
            parent.kind = "graph"
            return "node"
        return "chain"

    def _open_interaction(self, run: _Run) -> _Interaction:
        md = run.metadata
        session = next((str(md[k]) for k in _SESSION_KEYS if md.get(k) is not None), None)
        thread = None if md.get("thread_id") is None else str(md["thread_id"])
        resumed = (
            self.interrupted.pop(thread, None)
            if thread is not None and isinstance(run.inputs, Command) and run.inputs.resume is not None
            else None
        )
        if resumed is not None:
            inter = resumed
            inter.interrupted = False
            inter.status = "ok"
        else:
            inter = _Interaction(run.run_id, run.start)
            inter.inputs = run.inputs
            inter.metadata = md
            inter.session = session
            inter.thread = thread
            inter.graph_name = self.options.graph_name or run.name
            if self.options.sample_rate < 1.0:
                inter.sampled = is_sampled(run.run_id, self.options.sample_rate)
                inter.detail = None if inter.sampled else []
        inter.run_ids.append(run.run_id)
        return inter

    # -- decisions ---------------------------------------------------------------------------------

    def _decision(self, event: tuple, out: list) -> None:
        _, run_id, t, data = event
        run = self.runs.get(_key(run_id))
        if run is None or run.interaction is None or not isinstance(data, Mapping):
            return
        kind = str(data.get("kind") or "custom")
        run.custom_kinds.add(kind)
        self._emit_decision(
            out,
            run,
            kind,
            data.get("chosen"),
            data.get("confidence"),
            data.get("alternatives"),
            data.get("features"),
            data.get("statistics"),
            t,
        )

    def _emit_decision(
        self,
        out: list,
        run: _Run,
        kind: str,
        chosen: Any,
        confidence: Any,
        alternatives: Any,
        features: Any,
        statistics: Any,
        t: float,
    ) -> None:
        inter = run.interaction
        assert inter is not None
        inter.decision_seq += 1
        conf = _finite(confidence)
        if kind == "route" and isinstance(chosen, str):
            inter.routes.append((chosen, conf))
        if kind == "route" and not inter.sampled and isinstance(alternatives, Mapping):
            inter.route_probabilities = alternatives
        args = (inter, run, inter.decision_seq, kind, chosen, conf, alternatives, features, statistics, t)
        self._detail(out, inter, "decisions", self._decision_row, args)

    def _decision_row(
        self,
        inter: _Interaction,
        run: _Run,
        seq: int,
        kind: str,
        chosen: Any,
        conf: float | None,
        alternatives: Any,
        features: Any,
        statistics: Any,
        t: float,
    ) -> dict[str, Any]:
        return {
            "decision_id": f"{inter.id}:{run.run_id}:{seq}",
            "interaction_id": inter.id,
            "run_id": run.run_id,
            "node": self._name(run.node),
            "kind": self._name(kind),
            "chosen": None if chosen is None else self.sanitizer.text(_text_of(chosen)),
            "confidence": conf,
            "alternatives": self._json(alternatives),
            "features": self._json(features),
            "statistics": self._json(statistics),
            "timestamp": t,
        }

    def _detail(
        self,
        out: list,
        inter: _Interaction,
        table: str,
        build: Callable[..., dict[str, Any]],
        args: tuple,
    ) -> None:
        """Emit a detail row, or hold it unbuilt while the run is outside the sample (see ``_settle``)."""
        if inter.detail is None:
            out.append((table, build(*args)))
        elif len(inter.detail) < self.options.max_unsampled_detail:
            inter.detail.append((table, build, args))
        else:
            inter.detail_dropped += 1

    def _settle(self, inter: _Interaction, keep: str | None, out: list) -> None:
        """End of a run outside the sample: write its held detail if there is a reason to ``keep`` it
        (``"error"``, ``"unfinished"``), else forget it."""
        held = inter.detail
        if not held and not inter.detail_dropped:
            return
        if keep:
            inter.detail_kept = keep
            out.extend((table, build(*args)) for table, build, args in held or ())
            if inter.detail_dropped:
                log.warning(
                    "run %s (%s) was outside the capture sample; %d of its detail rows were dropped beyond "
                    "max_unsampled_detail=%d",
                    inter.id,
                    keep,
                    inter.detail_dropped,
                    self.options.max_unsampled_detail,
                )
        else:
            inter.detail_dropped = 0
        # Kept: whatever still ends (children of an evicted run) is written at once; else a resumed run's
        # detail is held afresh.
        inter.detail = None if keep else []

    def _decisions_from_output(self, run: _Run, outputs: Any, t: float, out: list) -> None:
        """Routing hidden in what a node or a router function returned."""
        if type(outputs) is dict:  # the common case: a node's state update
            if run.kind == "node" and "route" not in run.custom_kinds and self.options.routing_key in outputs:
                self._routing_history(run, outputs[self.options.routing_key], t, out)
            return
        if isinstance(outputs, Command):
            self._command_decisions(run, outputs, t, out)
            return
        if isinstance(outputs, list | tuple) and outputs and all(isinstance(x, Command) for x in outputs):
            for cmd in outputs:
                self._command_decisions(run, cmd, t, out)
            return
        if run.kind == "node" and isinstance(outputs, Mapping) and "route" not in run.custom_kinds:
            self._routing_history(run, outputs.get(self.options.routing_key), t, out)
        if run.kind == "edge":
            sends = _sends(outputs)
            if sends:
                self._emit_send(run, sends, t, out)
            elif "route" not in run.custom_kinds and (
                isinstance(outputs, str)
                or (
                    isinstance(outputs, list | tuple) and outputs and all(isinstance(x, str) for x in outputs)
                )
            ):
                args = (run, "route", _text_of(outputs), None, None, None, {"via": "edge"}, t)
                node = self.runs.get(run.parent_key) if run.parent_key is not None else None
                if node is not None and node.kind == "node":
                    node.pending_routes = [*(node.pending_routes or ()), args]
                else:
                    self._emit_decision(out, *args)

    def _routing_history(self, run: _Run, history: Any, t: float, out: list) -> None:
        """Route decisions from the entries a node appended to the routing history."""
        if not isinstance(history, list):
            return
        for entry in history:
            if isinstance(entry, Mapping):
                run.custom_kinds.add("route")
                agent = entry.get("agent", entry.get("chosen"))
                probs = entry.get("probabilities", entry.get("alternatives"))
                stats = {k: v for k, v in entry.items() if k not in _ROUTE_ENTRY_KEYS} or None
                self._emit_decision(
                    out, run, "route", agent, entry.get("confidence"), probs, entry.get("features"), stats, t
                )

    def _command_decisions(self, run: _Run, cmd: Command, t: float, out: list) -> None:
        goto = cmd.goto
        if not goto:
            return
        targets = list(goto) if isinstance(goto, list | tuple) else [goto]
        sends = [g for g in targets if isinstance(g, Send)]
        if sends:
            self._emit_send(run, sends, t, out)
        names = [g for g in targets if isinstance(g, str)]
        if names:
            stats = (
                {"via": "Command", "graph": "parent"} if cmd.graph == Command.PARENT else {"via": "Command"}
            )
            chosen: Any = names[0] if len(names) == 1 else names
            self._emit_decision(out, run, "route", chosen, None, None, None, stats, t)

    def _emit_send(self, run: _Run, sends: list[Send], t: float, out: list) -> None:
        targets = [s.node for s in sends]
        stats = {"fan_out": len(sends), "targets": sorted(set(targets))}
        self._emit_decision(out, run, "send", sorted(set(targets)), None, None, None, stats, t)

    # -- ends --------------------------------------------------------------------------------------

    def _end(self, event: tuple, out: list) -> None:
        kind, run_id, t, payload = event
        run = self.runs.pop(_key(run_id), None)
        if run is None:
            return
        inter = run.interaction
        assert inter is not None
        status, error_type = "ok", None
        if kind == ERROR:
            error_type = type(payload).__name__
            if isinstance(payload, GraphBubbleUp):
                status = "interrupted" if isinstance(payload, GraphInterrupt) else "bubbled"
                if status == "interrupted":
                    inter.interrupted = True
                cmd = payload.args[0] if isinstance(payload, ParentCommand) and payload.args else None
                if isinstance(cmd, Command) and id(cmd) not in inter.handoffs:
                    # The hand-off bubbles through every enclosing run; the first one is where it was made.
                    inter.handoffs.add(id(cmd))
                    self._command_decisions(run, cmd, t, out)
            else:
                status = "error"
                inter.errors.append(error_type)
        tokens = cost = None
        outputs: Any = None if kind == ERROR else payload
        if kind == END:
            if run.kind == "llm":
                tokens, cost, outputs = self._llm_end(run, payload, t, out)
            elif run.kind == "retriever":
                self._retriever_end(inter, payload)
            else:
                self._decisions_from_output(run, payload, t, out)
        elif run.kind == "retriever":
            inter.retrieval_failed = True
        if run.pending_routes is not None and "route" not in run.custom_kinds:
            for args in run.pending_routes:
                self._emit_decision(out, *args)
        if run.kind == "node" and run.node:
            inter.nodes.add(run.node)
        if run.kind == "root":
            self._finish(run, inter, kind, payload, t, out)
            return
        error = payload if status == "error" else None
        args = (inter, run, status, error_type, error, outputs, tokens, cost, t)
        self._detail(out, inter, "node_runs", self._node_run_row, args)

    def _node_run_row(
        self,
        inter: _Interaction,
        run: _Run,
        status: str,
        error_type: str | None,
        error: Any,
        outputs: Any,
        tokens: int | None,
        cost: float | None,
        t: float,
    ) -> dict[str, Any]:
        return {
            "run_id": run.run_id,
            "parent_run_id": run.parent,
            "interaction_id": inter.id,
            "kind": run.kind,
            "name": self._name(run.name),
            "node": self._name(run.node),
            "step": _int(run.metadata.get("langgraph_step")),
            "triggers": self._triggers(run.metadata.get("langgraph_triggers")),
            "checkpoint_ns": _str(run.metadata.get("langgraph_checkpoint_ns")),
            "start_time": run.start,
            "duration_ms": max(0.0, (t - run.start) * 1000.0),
            "status": status,
            "error_type": error_type,
            "error_message": None if error is None else self.sanitizer.text(str(error)),
            "inputs": self._json(run.inputs),
            "outputs": self._json(outputs),
            "tokens_used": tokens,
            "cost": cost,
        }

    def _llm_end(self, run: _Run, response: Any, t: float, out: list) -> tuple[int | None, float | None, Any]:
        inter = run.interaction
        assert inter is not None
        usage_in = usage_out = total = 0
        seen = False
        texts: list[Any] = []
        tool_names: list[str] = []
        for gens in getattr(response, "generations", None) or []:
            for gen in gens:
                msg = getattr(gen, "message", None)
                texts.append(_message_json(msg) if msg is not None else getattr(gen, "text", None))
                usage = getattr(msg, "usage_metadata", None) if msg is not None else None
                if usage:
                    seen = True
                    usage_in += int(usage.get("input_tokens") or 0)
                    usage_out += int(usage.get("output_tokens") or 0)
                    total += int(usage.get("total_tokens") or 0)
                tool_names += [c.get("name") for c in getattr(msg, "tool_calls", None) or [] if c.get("name")]
        if not seen:
            llm_output = getattr(response, "llm_output", None) or {}
            usage = llm_output.get("token_usage") or llm_output.get("usage") or {}
            if usage:
                seen = True
                usage_in = int(usage.get("prompt_tokens") or usage.get("input_tokens") or 0)
                usage_out = int(usage.get("completion_tokens") or usage.get("output_tokens") or 0)
                total = int(usage.get("total_tokens") or 0)
        tokens = (total or usage_in + usage_out) if seen else None
        cost = self._cost(run, usage_in, usage_out) if seen else None
        if tokens is not None:
            inter.tokens = (inter.tokens or 0) + tokens
        if cost is not None:
            inter.cost = (inter.cost or 0.0) + cost
        if tool_names:
            offered = _offered_tools(run.extra)
            stats = {"via": "model", "calls": len(tool_names)}
            chosen: Any = tool_names[0] if len(tool_names) == 1 else tool_names
            self._emit_decision(out, run, "tool", chosen, None, offered or None, None, stats, t)
        return tokens, cost, texts[0] if len(texts) == 1 else texts

    def _cost(self, run: _Run, tokens_in: int, tokens_out: int) -> float | None:
        model = _model_name(run)
        if model is None:
            return None
        for prefix, (p_in, p_out) in self._prices:
            if model.startswith(prefix):
                return (tokens_in * p_in + tokens_out * p_out) / 1e6
        return None

    def _retriever_end(self, inter: _Interaction, documents: Any) -> None:
        docs = list(documents or [])
        if not docs:
            inter.retrieval_failed = True
            return
        if inter.retrieval_failed is None:
            inter.retrieval_failed = False
        for doc in docs:
            md = getattr(doc, "metadata", None) or {}
            score = _finite(md.get("score", md.get("relevance_score")))
            if score is not None:
                inter.retrieval_scores.append(score)

    # -- the interaction row -----------------------------------------------------------------------

    def _finish(self, run: _Run, inter: _Interaction, kind: int, payload: Any, t: float, out: list) -> None:
        inter.elapsed_ms += max(0.0, (t - run.start) * 1000.0)
        if kind == END:
            inter.outputs = payload
        if kind == ERROR and isinstance(payload, GraphInterrupt):
            inter.interrupted = True
        elif kind == ERROR and not isinstance(payload, GraphBubbleUp):
            inter.status = "error"
            inter.errors.append(type(payload).__name__)
        if inter.detail is not None:
            keep = "error" if self.options.always_keep_errors and inter.errors else None
            self._settle(inter, keep, out)
        if inter.interrupted:
            inter.status = "interrupted"
            if inter.thread is not None:
                self.interrupted[inter.thread] = inter
                while len(self.interrupted) > self.options.max_interrupted:
                    self.interrupted.popitem(last=False)
        out.append(("interactions", self._interaction_row(inter, run)))

    def _interaction_row(self, inter: _Interaction, run: _Run) -> dict[str, Any]:
        o = self.options
        outputs = inter.outputs if isinstance(inter.outputs, Mapping) else {}
        query = _pick_text(inter.inputs, o.query_keys, human=True)
        response = _pick_text(inter.outputs, o.response_keys, human=False)
        agent = outputs.get("agent_selected")
        confidence = outputs.get("agent_confidence")
        if agent is None and inter.routes:
            agent, confidence = inter.routes[-1]
        rq = _finite(outputs.get("retrieval_quality"))
        if rq is None and inter.retrieval_scores:
            rq = sum(inter.retrieval_scores) / len(inter.retrieval_scores)
        failed = outputs.get("retrieval_failed", inter.retrieval_failed)
        md = inter.metadata
        metadata: dict[str, Any] = {"status": inter.status, "runs": list(inter.run_ids)}
        if inter.errors:
            metadata["node_errors"] = inter.errors
        if o.sample_rate < 1.0:
            metadata["sample_rate"] = o.sample_rate
            metadata["sampled"] = inter.sampled
            if inter.detail_kept:
                metadata["detail_kept"] = inter.detail_kept
                if inter.detail_dropped:
                    metadata["detail_dropped"] = inter.detail_dropped
            if not inter.sampled and inter.route_probabilities is not None:
                # the route decisions are not all stored: the router's last probabilities ride in the row
                metadata["router_probabilities"] = inter.route_probabilities
        answered_by = outputs.get("answered_by")
        if isinstance(answered_by, str):
            answered_by = [answered_by]
        if isinstance(answered_by, list | tuple) and all(isinstance(a, str) for a in answered_by):
            # who actually answered: after an escalation, not the agent the router first chose
            metadata["answered_by"] = list(answered_by)
        s = self.sanitizer
        for key, value in md.items():
            if key.startswith(("langgraph_", "ls_", "lc_")) or key in (o.user_key, "thread_id"):
                continue
            # a session key kept in the metadata is stored like the session column, hashed when that is
            metadata[key] = s.identifier(value, s.hash_sessions) if key in _SESSION_KEYS else value
        item = ProductionInteraction(
            interaction_id=inter.id,
            timestamp=inter.start,
            session_id=inter.session or "",
            user_query=query,
            agent_selected=None if agent is None else str(agent),
            agent_confidence=_finite(confidence),
            response=response,
            latency_ms=inter.elapsed_ms,
            tokens_used=inter.tokens,
            cost=inter.cost,
            hallucination_detected=_bool(outputs.get("hallucination_detected")),
            retrieval_failed=_bool(failed),
            error_occurred=inter.status == "error",
            retrieval_quality=rq,
            metadata=_plain(metadata, self.options),
            run_id=inter.id,
            graph_name=inter.graph_name,
            user_id=None if md.get(o.user_key) is None else str(md.get(o.user_key)),
        )
        return row_from_interaction(item, self.sanitizer)

    # -- bounded state -----------------------------------------------------------------------------

    def evict(self, out: list) -> None:
        """Drop runs that never ended (too old, or too many in flight), recording what is known of them."""
        now = self.clock()
        limit, ttl = self.options.max_in_flight, self.options.run_ttl
        while self.runs:
            rid, run = next(iter(self.runs.items()))
            if len(self.runs) <= limit and now - run.start <= ttl:
                break
            del self.runs[rid]
            self.evicted += 1
            if run.kind == "root" and run.interaction is not None:
                run.interaction.status = "unfinished"
                run.interaction.elapsed_ms += max(0.0, (now - run.start) * 1000.0)
                if run.interaction.detail is not None:  # it never ended: as suspect as a run that raised
                    keep = "unfinished" if self.options.always_keep_errors else None
                    self._settle(run.interaction, keep, out)
                out.append(("interactions", self._interaction_row(run.interaction, run)))

    def pending(self) -> Iterator[str]:
        """Interaction ids with a run still in flight."""
        for run in self.runs.values():
            if run.kind == "root" and run.interaction is not None:
                yield run.interaction.id

    # -- serialisation -----------------------------------------------------------------------------

    def _name(self, name: Any) -> str | None:
        """A sanitized run, node or kind name; names repeat, so each is sanitized once."""
        if name is None:
            return None
        safe = self._names.get(name)
        if safe is None:
            if len(self._names) >= 10_000:
                self._names.clear()
            safe = self._names[name] = self.sanitizer.text(str(name))
        return safe

    def _triggers(self, triggers: Any) -> str | None:
        """A node's triggers as sanitized JSON; a graph has few distinct ones, so each is built once."""
        if triggers is None:
            return None
        key = ("triggers", tuple(triggers) if isinstance(triggers, list | tuple) else triggers)
        safe = self._names.get(key)
        if safe is None:
            if len(self._names) >= 10_000:
                self._names.clear()
            safe = self._names[key] = self._json(triggers) or "null"
        return safe

    def _json(self, value: Any) -> str | None:
        if value is None:
            return None
        return dumps(self._safe(value, 0))

    def _safe(self, value: Any, depth: int) -> Any:
        """A sanitized, size-bounded, JSON-ready copy, in one pass (plain containers take the fast path)."""
        t = type(value)
        if t is str:
            limit = self.options.max_io_chars
            if len(value) > limit:
                value = f"{value[:limit]}…[truncated {len(value) - limit} chars]"
            return value if len(value) < 6 and value.isascii() else self.sanitizer.text(value)
        if value is None or t is int or t is bool:
            return value
        if t is float:
            return value if value == value and value not in (_INF, -_INF) else None
        if depth > 8:
            return "<too deep>"
        o = self.options
        if t is dict:
            out = {}
            for i, (k, v) in enumerate(value.items()):
                if i == o.max_items:
                    out["…"] = f"{len(value) - o.max_items} more keys"
                    break
                # Short ASCII strings cannot hold PII and plain scalars need nothing: no call for them.
                key = k if type(k) is str and len(k) < 6 and k.isascii() else self._safe(str(k), depth)
                tv = type(v)
                if not (v is None or tv is int or tv is bool or (tv is str and len(v) < 6 and v.isascii())):
                    v = self._safe(v, depth + 1)
                out[key] = v
            return out
        if t is list or t is tuple:
            head = [self._safe(v, depth + 1) for v in value[: o.max_items]]
            if len(value) > o.max_items:
                head.append(f"… {len(value) - o.max_items} more items")
            return head
        return self.sanitizer.value(_plain(value, o, depth))


_INF = float("inf")


_ROUTE_ENTRY_KEYS = frozenset({"agent", "chosen", "confidence", "probabilities", "alternatives", "features"})


def _plain(value: Any, o: CaptureOptions, depth: int = 0) -> Any:
    """A JSON-ready, size-bounded copy of a LangChain / LangGraph value."""
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        if len(value) > o.max_io_chars:
            return f"{value[: o.max_io_chars]}…[truncated {len(value) - o.max_io_chars} chars]"
        return value
    if depth > 8:
        return "<too deep>"
    if isinstance(value, Mapping):
        items = list(value.items())
        out = {str(k): _plain(v, o, depth + 1) for k, v in items[: o.max_items]}
        if len(items) > o.max_items:
            out["…"] = f"{len(items) - o.max_items} more keys"
        return out
    if isinstance(value, list | tuple | set | frozenset):
        seq = list(value)
        head = [_plain(v, o, depth + 1) for v in seq[: o.max_items]]
        if len(seq) > o.max_items:
            head.append(f"… {len(seq) - o.max_items} more items")
        return head
    if isinstance(value, Command):
        return _plain(
            {"command": {"goto": value.goto, "update": value.update, "resume": value.resume}}, o, depth + 1
        )
    if isinstance(value, Send):
        return {"send": value.node, "arg": _plain(value.arg, o, depth + 1)}
    if isinstance(value, UUID):
        return str(value)
    if hasattr(value, "content") and hasattr(value, "type"):  # a message
        return _plain(_message_json(value), o, depth + 1)
    if hasattr(value, "page_content"):  # a document
        return _plain({"page_content": value.page_content, "metadata": value.metadata}, o, depth + 1)
    if hasattr(value, "to_messages"):  # a prompt value
        return _plain([_message_json(m) for m in value.to_messages()], o, depth + 1)
    if hasattr(value, "model_dump"):
        try:
            return _plain(value.model_dump(), o, depth + 1)
        except Exception:
            return f"<{type(value).__name__}>"
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _plain({f.name: getattr(value, f.name) for f in dataclasses.fields(value)}, o, depth + 1)
    return f"<{type(value).__name__}>"


def _message_json(msg: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"type": getattr(msg, "type", None), "content": getattr(msg, "content", None)}
    calls = getattr(msg, "tool_calls", None)
    if calls:
        out["tool_calls"] = [{"name": c.get("name"), "args": c.get("args")} for c in calls]
    return out


def _pick_text(value: Any, keys: tuple[str, ...], *, human: bool) -> str:
    """The query (or response) text of a run's inputs (or outputs)."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, Command):
        return ""
    if isinstance(value, Mapping):
        for key in keys:
            v = value.get(key)
            if v is None:
                continue
            if key == "messages" and isinstance(v, list):
                text = _last_message(v, human=human)
                if text is not None:
                    return text
                continue
            if isinstance(v, str):
                return v
            if hasattr(v, "content"):
                return _content_text(v.content)
        if human:  # a state of the user's own shape: its only text is the query
            texts = [v for v in value.values() if isinstance(v, str) and v.strip()]
            if len(texts) == 1:
                return texts[0]
        return ""
    if isinstance(value, list):
        return _last_message(value, human=human) or ""
    if hasattr(value, "content"):
        return _content_text(value.content)
    return ""


def _last_message(messages: list[Any], *, human: bool) -> str | None:
    wanted = ("human", "user") if human else ("ai", "assistant")
    for m in reversed(messages):
        if isinstance(m, tuple) and len(m) == 2 and m[0] in wanted:
            return str(m[1])
        if isinstance(m, Mapping) and m.get("role", m.get("type")) in wanted:
            return _content_text(m.get("content"))
        if getattr(m, "type", None) in wanted:
            return _content_text(m.content)
    return None


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content blocks
        return "".join(b if isinstance(b, str) else str(b.get("text", "")) for b in content)
    return "" if content is None else str(content)


def _key(run_id: Any) -> Any:
    return run_id.int if type(run_id) is UUID else run_id


def _branch_step(tags: Any) -> bool:
    """Whether a node's child run is one of the node's own later steps (its edges), not its function.

    LangGraph runs a node as a sequence: step 1 is the node's function (everything it calls inherits the
    tag ``seq:step:1``); conditional edges run as later steps.
    """
    if not tags:
        return False
    for tag in tags:
        if tag.startswith("seq:step:"):
            return tag != "seq:step:1"
    return False


def _sends(value: Any) -> list[Send]:
    if isinstance(value, Send):
        return [value]
    if isinstance(value, list | tuple) and value and all(isinstance(x, Send) for x in value):
        return list(value)
    return []


def _offered_tools(invocation_params: Any) -> list[str]:
    tools = invocation_params.get("tools") if isinstance(invocation_params, Mapping) else None
    names = []
    for tool in tools or []:
        if isinstance(tool, Mapping):
            fn = tool.get("function")
            name = fn.get("name") if isinstance(fn, Mapping) else tool.get("name")
            if name:
                names.append(str(name))
    return names


def _model_name(run: _Run) -> str | None:
    params = run.extra if isinstance(run.extra, Mapping) else {}
    for key in ("model", "model_name", "model_id"):
        if params.get(key):
            return str(params[key])
    name = run.metadata.get("ls_model_name") or params.get("_type")
    return None if name is None else str(name)


def _text_of(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value)
    return str(value)


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        try:
            value = float(value)  # numpy scalars
        except (TypeError, ValueError):
            return None
    f = float(value)
    return f if f == f and f not in (float("inf"), float("-inf")) else None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _str(value: Any) -> str | None:
    return None if value is None else str(value)


def _bool(value: Any) -> bool | None:
    return None if value is None else bool(value)
