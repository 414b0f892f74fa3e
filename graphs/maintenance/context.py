"""What every maintenance step runs against: :class:`MaintenanceContext` (the store, the registry, the
configuration, the judge, the clock, the declared options of the graphs that learn), the run's state, and
the few helpers the steps share (the lease, the run's record in the store, the window's rows).

The context reaches a step as LangGraph's runtime context (``runtime.context``): it is passed to
``graph.invoke(..., context=...)`` on every call, a resume included (LangGraph does not checkpoint it), or
it is the graph's default (see :func:`cl_plugin.graphs.maintenance.graph.maintenance_graph`).
"""

from __future__ import annotations

import functools
import operator
import os
import time
from collections.abc import Callable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, NamedTuple, TypedDict

from langchain_core.language_models import BaseChatModel

from cl_plugin.config import ContinualLearningConfig, MaintenanceConfig, load_config
from cl_plugin.errors import ClPluginError
from cl_plugin.store import Store

#: The store lease that keeps maintenance runs one at a time.
LEASE = "maintenance"
#: Registry names of the model set the loop retrains.
MODEL_NAMES = {"router": "router", "rag_index": "rag_index", "replay": "router-replay"}
AGENTS = ("HRM", "TRM", "MCTS")
#: How an A/B test of a decision point names the graph's own policy, the incumbent before any model.
RECORDED_POLICY = "recorded policy"
TEST_PREFIX = "maintenance: "

#: The environment variable naming the store of a graph served without a context (``langgraph dev``).
STORE_URL_ENV = "CL_PLUGIN_STORE_URL"
#: The environment variable naming the ``continual_learning`` YAML file of such a graph (optional).
CONFIG_ENV = "CL_PLUGIN_CONFIG"
DEFAULT_STORE_URL = "sqlite:///.cl_plugin/store.db"


class LeaseLostError(ClPluginError):
    """Another maintenance run took the lease while this one was paused or slow; this run stops."""


class MaintenanceState(TypedDict, total=False):
    """State of one maintenance run: small, JSON-ready values only.

    ``steps`` maps each node that ran to its report; ``status`` ends as ``completed``, ``skipped`` or
    ``failed`` with ``reason``.
    """

    run_id: str
    thread_id: str
    owner: bool
    window: dict[str, Any]
    steps: Annotated[dict[str, dict[str, Any]], operator.or_]
    selected: list[dict[str, Any]]
    retrain: dict[str, Any]
    gate: dict[str, Any]
    status: str
    reason: str


@dataclass(frozen=True)
class MaintenanceContext:
    """The dependencies of the maintenance steps, passed as LangGraph runtime context.

    Every field is optional: without a store, the context takes the one the environment names (see
    :meth:`from_env`), so that LangGraph's server, which builds the context from a run's JSON ``context``
    (``{}``, or ``{"config": <a YAML path or a dict of sections>}``), gets a working one.

    Attributes:
        store: a set-up :class:`~cl_plugin.store.Store`.
        config: the ``continual_learning`` configuration (a config, a dict of sections or a YAML path;
            kept as a :class:`~cl_plugin.config.ContinualLearningConfig`).
        registry: the :class:`~cl_plugin.learning.registry.ModelRegistry`; by default one over ``store`` with
            artifacts under ``maintenance.model_dir``.
        judge: the chat model that labels when ``maintenance.annotation`` is ``llm``.
        clock: the time source (unix seconds).
        declared: declared options of the learned graphs' conditional edges, by point
            (:func:`cl_plugin.graphs.maintenance.points.declared`).

    Raises:
        ConfigError: a bad configuration key.
        ValueError: ``annotation`` is ``llm`` but no judge was given.
    """

    store: Store = None  # type: ignore[assignment]
    config: ContinualLearningConfig = None  # type: ignore[assignment]
    registry: Any = None
    judge: BaseChatModel | None = None
    clock: Callable[[], float] = time.time
    declared: Mapping[tuple[str | None, str | None, str], dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from cl_plugin.learning.registry import ModelRegistry

        if self.store is None:
            object.__setattr__(self, "store", env_store())
            if self.config is None:
                object.__setattr__(self, "config", os.environ.get(CONFIG_ENV) or None)
        object.__setattr__(self, "config", coerce_config(self.config))
        if self.m.annotation == "llm" and self.judge is None:
            raise ValueError(
                "maintenance.annotation is 'llm' but no judge was given: pass judge=<a chat model>"
            )
        if self.registry is None:
            object.__setattr__(
                self, "registry", ModelRegistry(self.store, Path(self.m.model_dir) / "artifacts")
            )

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: Any) -> Any:
        # a live object, not data: LangGraph's server asks for the context's JSON schema (for its API and
        # Studio, and to keep only the keys a run's JSON context may set) and gets the one below
        from pydantic_core import core_schema

        return core_schema.is_instance_schema(cls)

    @classmethod
    def __get_pydantic_json_schema__(cls, schema: Any, handler: Any) -> dict[str, Any]:
        return {
            "type": "object",
            "title": cls.__name__,
            "description": "The maintenance run's store, registry and configuration; the store is the one at "
            f"${STORE_URL_ENV} (default {DEFAULT_STORE_URL}), the configuration the YAML file at ${CONFIG_ENV}.",
            "properties": {
                "config": {
                    "anyOf": [{"type": "string"}, {"type": "object"}, {"type": "null"}],
                    "description": "the continual_learning configuration: a YAML file's path or a dict of sections",
                }
            },
        }

    @property
    def m(self) -> MaintenanceConfig:
        """The ``maintenance`` section."""
        return self.config.maintenance

    @property
    def budget(self) -> int:
        """How many interactions a run selects for annotation."""
        return self.m.annotation_budget or self.config.active_learning.budget_per_cycle

    @classmethod
    def build(
        cls,
        store: Store,
        *,
        config: ContinualLearningConfig | Mapping[str, Any] | str | Path | None = None,
        registry: Any = None,
        judge: BaseChatModel | None = None,
        clock: Any = time.time,
        graphs: Sequence[Any] = (),
    ) -> MaintenanceContext:
        """The context of the maintenance graph over ``store`` (the arguments of
        :func:`~cl_plugin.graphs.maintenance.build_maintenance_graph`)."""
        from .points import declared

        return cls(
            store=store, config=config, registry=registry, judge=judge, clock=clock, declared=declared(graphs)
        )  # type: ignore[arg-type]

    @classmethod
    def from_env(cls) -> MaintenanceContext:
        """The context of a graph served without one: the store at ``$CL_PLUGIN_STORE_URL`` (or the CLI's
        ``$CL_PLUGIN_STORE``; by default ``sqlite:///.cl_plugin/store.db``, under the working directory),
        set up once per process, and the configuration in the YAML file at ``$CL_PLUGIN_CONFIG`` (every
        default without one)."""
        return cls()


@functools.cache
def _store(url: str) -> Store:
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    return Store.from_url(url).setup()


def env_store() -> Store:
    """The store the environment names (:meth:`MaintenanceContext.from_env`), opened and set up once."""
    env = os.environ
    return _store(env.get(STORE_URL_ENV) or env.get("CL_PLUGIN_STORE") or DEFAULT_STORE_URL)


def coerce_config(
    config: ContinualLearningConfig | Mapping[str, Any] | str | Path | None,
) -> ContinualLearningConfig:
    if isinstance(config, ContinualLearningConfig):
        return config
    if isinstance(config, str | Path):
        return load_config(config)
    return ContinualLearningConfig.model_validate(dict(config or {}))


class Outcome(NamedTuple):
    """What a step returns to the wrapper that runs it (see :func:`cl_plugin.graphs.maintenance.graph.step`):
    ``report`` is saved as the step's entry in the run's record (None: the step saved it itself), and
    ``update`` is the rest of its state update (``status`` and ``reason`` stop the run)."""

    report: dict[str, Any] | None
    update: dict[str, Any] = {}  # noqa: RUF012 - never mutated


#: The step running in this context and when it started (set by the wrapper), for its report's timing.
CURRENT_STEP: ContextVar[tuple[str, float] | None] = ContextVar("maintenance_step", default=None)


def save_run(store: Store, run: Mapping[str, Any]) -> None:
    """Save (part of) the run's record."""
    store.runs.save(run)


def hold(ctx: MaintenanceContext, state: MaintenanceState) -> None:
    """Renew the run's lease; raise :class:`LeaseLostError` when another run took it over."""
    run = ctx.store.runs.get(state["run_id"]) or {}
    if run.get("status", "running") != "running":  # before taking the lease, which may be free again
        raise LeaseLostError(
            f"maintenance run {state['run_id']} lost the {LEASE!r} lease ({run.get('error')}); start a new run"
        )
    if not ctx.store.runs.acquire_lease(LEASE, state["run_id"], ctx.m.lease_ttl_seconds, now=ctx.clock()):
        raise LeaseLostError(f"maintenance run {state['run_id']} lost the {LEASE!r} lease; start a new run")


def record(
    ctx: MaintenanceContext, state: MaintenanceState, name: str, report: dict[str, Any]
) -> dict[str, Any]:
    """Save a step's report (with its time so far) to the run's record; the state update saying so."""
    current = CURRENT_STEP.get()
    if current is not None and current[0] == name:
        report = {**report, "seconds": round(time.perf_counter() - current[1], 3)}
    steps = {**state.get("steps", {}), name: report}
    save_run(ctx.store, {"run_id": state["run_id"], "thread_id": state["thread_id"], "steps": steps})
    return {"steps": {name: report}}


def earlier(ctx: MaintenanceContext, state: MaintenanceState, name: str) -> dict[str, Any] | None:
    """The report that an interrupted attempt of this step saved to the run's record (the process died
    before the step's checkpoint was written, so the step runs again), or None."""
    run = ctx.store.runs.get(state["run_id"]) or {}
    return (run.get("steps") or {}).get(name)


def rows(ctx: MaintenanceContext, state: MaintenanceState) -> list[dict[str, Any]]:
    """The window's interactions, with their embeddings."""
    w = state["window"]
    return ctx.store.query_interactions(
        start_time=w["start"], end_time=w["end"], limit=ctx.m.max_interactions, with_embeddings=True
    )
