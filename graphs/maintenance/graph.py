"""The maintenance graph's wiring: its steps, the one wrapper around each, and its edges; and
:func:`run_maintenance`, one cycle of it."""

from __future__ import annotations

import functools
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from langchain_core.language_models import BaseChatModel
from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime

from cl_plugin.config import ContinualLearningConfig
from cl_plugin.store import Store

from .context import CURRENT_STEP, MaintenanceContext, MaintenanceState, Outcome, hold, record
from .steps.abtest import ab_test
from .steps.analysis import analyze_failures
from .steps.annotation import annotate
from .steps.drift import drift_check
from .steps.evaluation import evaluate
from .steps.promotion import promote
from .steps.retraining import retrain
from .steps.review import review_ab_tests
from .steps.run import begin, finish
from .steps.selection import select
from .steps.window import load_window, validate

Step = Callable[[MaintenanceState, Runtime[MaintenanceContext]], Any]
#: Where a graph without a default context gets one when invoked without ``context``.
ContextSource = Callable[[], MaintenanceContext]


def resolve(runtime: Runtime[Any], context: ContextSource) -> MaintenanceContext:
    """The run's context: the one it was invoked with, else the graph's default ``context()``."""
    ctx = runtime.context
    return ctx if isinstance(ctx, MaintenanceContext) else context()


def step(name: str, fn: Step, context: ContextSource, *, lease: bool = True) -> Step:
    """The node that runs step ``fn``: it resolves the context (:func:`resolve`), renews the run's lease
    (``lease``; ``begin`` and ``finish`` take and release it themselves), notes when the step starts, and
    saves the report of the :class:`~cl_plugin.graphs.maintenance.context.Outcome` the step returns to the run's
    record (with its time) before returning the state update. A step that sets ``status`` stops the run
    where its edge says so (:func:`stop_or`)."""

    @functools.wraps(fn)  # keeps the signature, from which LangGraph decides to pass the runtime
    def run(state: MaintenanceState, runtime: Runtime[MaintenanceContext]) -> Any:
        ctx = resolve(runtime, context)
        if ctx is not runtime.context:
            runtime = runtime.override(context=ctx)
        token = CURRENT_STEP.set((name, time.perf_counter()))
        try:
            if lease:
                hold(ctx, state)
            out = fn(state, runtime)
            if not isinstance(out, Outcome):
                return out
            if out.report is None:  # the step saved its report itself
                return out.update
            return {**out.update, **record(ctx, state, name, out.report)}
        finally:
            CURRENT_STEP.reset(token)

    return run


def stop_or(next_node: str) -> Callable[[MaintenanceState], str]:
    """The edge after a step that may stop the run: ``finish`` once ``status`` is set, else ``next_node``."""
    return lambda state: "finish" if state.get("status") else next_node


def after_evaluate(context: ContextSource) -> Callable[..., str]:
    """The edge after ``evaluate``: ``finish`` when the gate failed; else ``ab_test`` (A/B testing on, and
    an incumbent to test against: production, or a decision point's recorded policy), else ``promote``
    with ``maintenance.auto_promote``, else ``finish``."""

    def route(state: MaintenanceState, runtime: Runtime[MaintenanceContext]) -> str:
        if state.get("status"):
            return "finish"
        cfg = resolve(runtime, context).config
        # A decision point's first candidate is tested against the graph's own policy as recorded.
        production = "points" in state["retrain"] or state["retrain"].get("production")
        if cfg.retraining.enable_ab_test and production:
            return "ab_test"
        return "promote" if cfg.maintenance.auto_promote else "finish"

    return route


#: The steps in the order they run, each with the edge after it: the next step, or ``stop_or`` it.
STEPS: tuple[tuple[Step, str | None, bool], ...] = (
    (begin, "review_ab_tests", True),
    (review_ab_tests, "load_window", False),
    (load_window, "validate", False),
    (validate, "drift_check", True),
    (drift_check, "analyze_failures", False),
    (analyze_failures, "select", False),
    (select, "annotate", False),
    (annotate, "retrain", False),
    (retrain, "evaluate", True),
    (evaluate, None, False),  # after_evaluate
    (ab_test, "finish", False),
    (promote, "finish", False),
    (finish, END, False),
)


def maintenance_graph(context: MaintenanceContext | ContextSource | None = None) -> StateGraph:
    """The maintenance graph's builder (uncompiled), over :class:`MaintenanceState` with
    :class:`MaintenanceContext` as its ``context_schema``.

    Args:
        context: the default context, for a run invoked without ``context=``: a context, a function
            returning one, or None for :meth:`MaintenanceContext.from_env` (built once, at the first
            run that needs it).
    """
    if isinstance(context, MaintenanceContext):
        bound = context

        def default() -> MaintenanceContext:
            return bound

    elif context is None:
        default = env_context
    else:
        default = context
    builder = StateGraph(MaintenanceState, context_schema=MaintenanceContext)
    for fn, _, _ in STEPS:
        builder.add_node(fn.__name__, step(fn.__name__, fn, default, lease=fn not in (begin, finish)))
    builder.add_edge(START, "begin")
    for fn, then, stops in STEPS:
        if fn is evaluate:
            builder.add_conditional_edges(
                "evaluate", after_evaluate(default), ["ab_test", "promote", "finish"]
            )
        elif stops:
            builder.add_conditional_edges(fn.__name__, stop_or(then), [then, "finish"])
        else:
            builder.add_edge(fn.__name__, then)
    return builder


def maintenance() -> Any:
    """The compiled maintenance graph as LangGraph's server loads it (``langgraph.json``): no
    checkpointer (the server brings its own), and a run invoked without ``context`` gets
    :meth:`MaintenanceContext.from_env` (the store at ``$CL_PLUGIN_STORE_URL``)."""
    return maintenance_graph().compile(name="maintenance")


@functools.cache
def env_context() -> MaintenanceContext:
    """:meth:`MaintenanceContext.from_env`, built once per process."""
    return MaintenanceContext.from_env()


def build_maintenance_graph(
    store: Store,
    *,
    config: ContinualLearningConfig | Mapping[str, Any] | str | Path | None = None,
    registry: Any = None,
    judge: BaseChatModel | None = None,
    clock: Any = time.time,
    graphs: Sequence[Any] = (),
) -> StateGraph:
    """Build the maintenance graph over a store (uncompiled: compile it with your checkpointer).

    The context these arguments make is the graph's default: invoke it (and resume it) with or without
    ``context=``.

    Args:
        store: a set-up :class:`~cl_plugin.store.Store`.
        config: the ``continual_learning`` configuration: a :class:`~cl_plugin.config.ContinualLearningConfig`,
            a dict of sections, or a YAML file's path. Its ``maintenance`` section drives this graph.
        registry: the :class:`~cl_plugin.learning.registry.ModelRegistry` holding the production model set; by default
            one over ``store`` with artifacts under ``maintenance.model_dir``.
        judge: the chat model that labels when ``maintenance.annotation`` is ``llm``.
        clock: the time source (unix seconds).
        graphs: the compiled graphs whose decision points are learned, optional: their conditional edges'
            declared options (path maps, ``Literal`` return annotations) join the options seen in traffic,
            and the docstrings of the nodes they lead to are shown to annotators and the judge.

    Returns:
        The :class:`~langgraph.graph.StateGraph` builder over :class:`MaintenanceState`.

    Raises:
        ConfigError: a bad configuration key.
        ValueError: ``annotation`` is ``llm`` but no judge was given.
    """
    ctx = MaintenanceContext.build(
        store, config=config, registry=registry, judge=judge, clock=clock, graphs=graphs
    )
    return maintenance_graph(ctx)


def run_maintenance(
    store: Store,
    *,
    config: ContinualLearningConfig | Mapping[str, Any] | str | Path | None = None,
    checkpointer: Any = None,
    thread_id: str | None = None,
    resume: Any = None,
    callbacks: list[Any] | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    """Run (or resume) one maintenance cycle and return its final state.

    Args:
        store: the store.
        config: as for :func:`build_maintenance_graph`.
        checkpointer: any LangGraph checkpointer; an in-memory one by default.
        thread_id: the run's thread; a new one by default. With the id of a run that stopped part-way (a
            crash), the run continues from its last checkpoint; with the id of a finished run, a new cycle
            starts on that thread.
        resume: the value to resume a run paused for labels with (``{interaction_id: agent}``).
        callbacks: LangChain callbacks for the run (e.g. a sanitizing LangSmith tracer).
        **kwargs: passed to :func:`build_maintenance_graph` (``registry``, ``judge``, ``clock``).

    Returns:
        The final state; while paused for labels, it holds ``__interrupt__`` with the items to label.
    """
    from langgraph.checkpoint.memory import InMemorySaver
    from langgraph.types import Command

    context = MaintenanceContext.build(store, config=config, **kwargs)
    graph = maintenance_graph(context).compile(checkpointer=checkpointer or InMemorySaver())
    thread_id = thread_id or str(uuid.uuid4())
    run_config = {
        "configurable": {"thread_id": thread_id},
        "callbacks": callbacks or [],
        "run_name": "maintenance",
    }
    previous = graph.get_state(run_config)
    if resume is not None:
        payload: Any = Command(resume=resume)
    elif previous.next:
        payload = None  # the thread stopped part-way (a crash): continue from its last checkpoint
    else:  # a new cycle: named after the thread the first time, fresh on a thread that ran before
        payload = {"run_id": str(uuid.uuid4()) if previous.values else thread_id}
    # "sync": each step's checkpoint is on disk before the next step starts, so a run killed at any point
    # resumes from the step it was in (the default writes checkpoints in the background). The context is
    # not checkpointed: it is passed again on every call, a resume's included.
    state = graph.invoke(payload, config=run_config, context=context, durability="sync")
    return {"thread_id": thread_id, **state}
