"""LearnedRouter: serve a decision point's learned model inside the graph, with the graph's own rule behind it.

A user's graph decides somewhere by a rule of its own: a conditional edge's path function, or code in a node.
Wrapping that rule in a :class:`LearnedRouter` is the one line that lets the loop improve the decision::

    router = LearnedRouter(route_ticket, "support/triage", store="sqlite:///production.db")
    builder.add_conditional_edges("triage", router, ["billing", "tech", "account"])

For each request the router:

1. serves the registry's ``production`` model of its decision point (see
   :class:`~cl_plugin.records.PointRef` for the registry names), reloaded in the background when the
   maintenance graph promotes a new one;
2. while an A/B test of the point runs, puts the request's unit (the ``session_id`` or ``user_id`` of the
   run's metadata, as configured, else its thread, else the request) in group A or B by the test's stable
   hash, and serves production (A) or the candidate (B);
3. falls back to the rule when there is no model yet, when the model's top probability is below
   ``min_confidence``, when it names an option the point does not have, or when it fails (logged, never
   raised into the graph);
4. explores, when ``explore`` is set: where the policy is unsure (a fallback, or a top probability below
   ``explore_below``) it picks one of the other options with probability ``explore``, so the ratings of
   served traffic also say how the options it would not pick do;
5. records its decision at the point (:func:`~cl_plugin.capture.record_decision`) with the probabilities,
   the model version, the A/B test and group, whether it fell back and why, whether it explored, and the
   *propensity* (the probability its policy gave the option it chose), so capture, the labels' inverse
   propensity weights, calibration, the A/B analysis and the report read it with no more code.

Models and tests are looked up by a background thread every ``refresh_seconds``; a decision only reads an
immutable snapshot of what it found, so the graph's thread does no I/O and any number of threads (or an
event loop, through :meth:`LearnedRouter.aroute`) may share one router.
"""

import inspect
import logging
import random
import re
import threading
import uuid
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args, get_origin, get_type_hints

from langchain_core.runnables import RunnableConfig

from cl_plugin.abtest.assignment import assign
from cl_plugin.capture import arecord_decision, record_decision
from cl_plugin.records import PointRef, is_finite_number

__all__ = ["LearnedRouter", "Routed", "point_test_prefix"]

log = logging.getLogger("cl_plugin.serving")

_TEXT_KEYS = ("query", "question", "input", "text", "message", "request", "user_query")
_ROUTER_VERSION = re.compile(r"\brouter v(\d+)\b")


def point_test_prefix(point: PointRef) -> str:
    """The name prefix of the maintenance graph's A/B tests of a point's models."""
    return f"maintenance: point {point.model_name}: "


@dataclass(frozen=True)
class Routed:
    """One decision of a :class:`LearnedRouter`.

    Attributes:
        option: the option taken (what the path function returns).
        served_by: ``"model"``, ``"fallback"`` (the rule) or ``"exploration"``.
        fell_back: why the rule decided (``"no_model"``, ``"low_confidence"``, ``"model_error"``,
            ``"unknown_option"``), None when the model did.
        probabilities: the model's probability of each option (empty when no model ran).
        propensity: the probability the serving policy gave ``option``.
        model_version: the router version that scored the request (None when none did).
        ab_test, ab_group: the running A/B test of the point and the request's group (None outside one).
        explored: whether ``option`` was picked to explore.
        policy_choice: the option the policy (model or rule) picked before exploring: the incumbent's
            choice, which offline evaluation scores.
    """

    option: str
    served_by: str
    fell_back: str | None
    probabilities: dict[str, float] = field(default_factory=dict)
    propensity: float = 1.0
    model_version: int | None = None
    ab_test: str | None = None
    ab_group: str | None = None
    explored: bool = False
    policy_choice: str | None = None


@dataclass(frozen=True)
class _Model:
    version: int
    scorer: Any


@dataclass(frozen=True)
class _Snapshot:
    production: _Model | None = None
    test_id: str | None = None
    traffic_split: float = 0.5
    candidate: _Model | None = None


class LearnedRouter:
    """A decision point's learned router, with the graph's own rule as its fallback.

    Args:
        fallback: the rule: a function of the state (and optionally ``config``) returning an option, as a
            conditional edge's path function does. It decides whenever the model does not.
        point: the decision point, ``"graph/node/kind"`` or ``"graph/node"`` (kind ``route``); see
            ``cl-plugin stats`` for the points the store has seen. For a conditional edge, the node is the
            one the edge leaves and the graph is the name capture records (``LangGraph`` unless compiled with
            ``name=``).
        registry: the :class:`~cl_plugin.learning.registry.ModelRegistry` the maintenance graph promotes into.
        store: instead of ``registry``: a :class:`~cl_plugin.store.Store` or URL, with the registry's
            artifacts under ``model_dir`` (the maintenance graph's default).
        model_dir: as ``maintenance.model_dir``.
        options: the options the point may take; by default the fallback's ``Literal`` return annotation,
            else whatever the model was trained on.
        text: the text the model reads: a state key, or a function of the state; by default the first
            string under a common key (``query``, ``question``, ``input``, ...) or the last message's
            content.
        min_confidence: below this top probability the rule decides.
        explore: the share of unsure decisions that explore another option (0 turns exploration off).
        explore_below: a model decision with a top probability below this counts as unsure; a fallback
            always does (the rule gives no probability).
        unit: the metadata key that names an A/B unit (``session_id`` or ``user_id``); without it in the
            run's metadata, the thread id, else the request, is the unit.
        refresh_seconds: how often the background thread looks for a new production model or A/B test.
        seed: seed of the exploration draws (None: unseeded).
        ab_tests: take part in the point's A/B tests; False serves production alone (a replica kept out
            of experiments, or an evaluation of what production does).

    Raises:
        ValueError: a bad argument, named in the message.
    """

    def __init__(
        self,
        fallback: Callable[..., Any],
        point: str | Sequence[str] | PointRef,
        *,
        registry: Any = None,
        store: Any = None,
        model_dir: str | Path = "./cache/models",
        options: Sequence[str] | None = None,
        text: str | Callable[[Any], str] | None = None,
        min_confidence: float = 0.3,
        explore: float = 0.0,
        explore_below: float = 0.9,
        unit: str = "session_id",
        refresh_seconds: float = 5.0,
        seed: int | None = None,
        ab_tests: bool = True,
    ) -> None:
        if not callable(fallback):
            raise ValueError(f"fallback must be the graph's own routing function (got {fallback!r})")
        for name, value, low, high in (
            ("min_confidence", min_confidence, 0.0, 1.0),
            ("explore", explore, 0.0, 0.5),
            ("explore_below", explore_below, 0.0, 1.0),
        ):
            if not (is_finite_number(value) and low <= value <= high):
                raise ValueError(f"{name} must be a number in [{low}, {high}] (got {value!r})")
        if not (is_finite_number(refresh_seconds) and refresh_seconds > 0):
            raise ValueError(f"refresh_seconds must be a number > 0 (got {refresh_seconds!r})")
        self.fallback = fallback
        self.point = PointRef.parse(point)
        self.names = self.point.model_names()
        self.registry = registry if registry is not None else _registry(store, model_dir)
        self.options = list(options) if options is not None else _literal_options(fallback)
        self.text = text
        self.min_confidence = float(min_confidence)
        self.explore = float(explore)
        self.explore_below = float(explore_below)
        self.unit = unit
        self.refresh_seconds = float(refresh_seconds)
        self.ab_tests = ab_tests
        self._rng = random.Random(seed)
        self._rng_lock = threading.Lock()
        self._fallback_takes_config = _takes_config(fallback)
        self._snapshot = _Snapshot()
        self._stop = threading.Event()
        self.refresh()
        self._thread = threading.Thread(
            target=_refresh_periodically,
            args=(weakref.ref(self), self._stop, self.refresh_seconds),
            name=f"cl_plugin-router-{self.point.model_name}",
            daemon=True,
        )
        self._thread.start()

    # -- serving ------------------------------------------------------------------------------------

    def __call__(self, state: Any, config: RunnableConfig | None = None) -> str:
        """The option for ``state``: use the router as a conditional edge's path function."""
        return self.route(state, config).option

    def route(self, state: Any, config: RunnableConfig | None = None) -> Routed:
        """Decide for one request and record the decision (inside a node, pass the node's ``config``)."""
        routed = self._decide(state, config)
        record_decision(self.point.kind, routed.option, config=config, **self._record(routed))
        return routed

    async def aroute(self, state: Any, config: RunnableConfig | None = None) -> Routed:
        """:meth:`route` for ``async def`` nodes: the same decision, recorded without blocking the loop."""
        routed = self._decide(state, config)
        await arecord_decision(self.point.kind, routed.option, config=config, **self._record(routed))
        return routed

    @property
    def version(self) -> int | None:
        """The production router version being served (None while there is none)."""
        production = self._snapshot.production
        return None if production is None else production.version

    def _decide(self, state: Any, config: RunnableConfig | None) -> Routed:
        snap = self._snapshot
        group = None
        model = snap.production
        if snap.test_id is not None:
            group = assign(snap.test_id, self._unit_of(config), snap.traffic_split)
            model = snap.candidate if group == "B" else snap.production
        probabilities: dict[str, float] = {}
        reason = None
        option = None
        if model is None:
            reason = "no_model"
        else:
            try:
                proba = model.scorer.proba(self._text_of(state))
                probabilities = {c: float(p) for c, p in zip(model.scorer.classes, proba, strict=True)}
                option = max(probabilities, key=probabilities.__getitem__)
                if probabilities[option] < self.min_confidence:
                    reason = "low_confidence"
                elif self.options and option not in self.options:
                    reason = "unknown_option"
            except Exception:
                log.exception(
                    "the %s model of decision point %s failed; the rule decides", model.version, self.point
                )
                reason, probabilities = "model_error", {}
        if reason is not None:
            option = self._fallback(state, config)
        assert option is not None
        top = probabilities.get(option) if reason is None else None
        served_by = "model" if reason is None else "fallback"
        explored = False
        propensity = 1.0
        policy_choice = str(option)
        choices = self._choices(probabilities)
        unsure = reason is not None or (top is not None and top < self.explore_below)
        if self.explore and unsure and len(choices) >= 2 and option in choices:
            with self._rng_lock:
                draw = self._rng.random()
                other = self._rng.choice([c for c in choices if c != option])
            if draw < self.explore:
                option, explored, served_by = other, True, "exploration"
                propensity = self.explore / (len(choices) - 1)
            else:
                propensity = 1.0 - self.explore
        return Routed(
            option=str(option),
            served_by=served_by,
            fell_back=reason,
            probabilities=probabilities,
            propensity=propensity,
            model_version=None if model is None else model.version,
            ab_test=snap.test_id,
            ab_group=group,
            explored=explored,
            policy_choice=policy_choice,
        )

    def _choices(self, probabilities: Mapping[str, float]) -> list[str]:
        return list(self.options) if self.options else list(probabilities)

    def _fallback(self, state: Any, config: RunnableConfig | None) -> str:
        if self._fallback_takes_config:
            return self.fallback(state, config=config)
        return self.fallback(state)

    def _record(self, routed: Routed) -> dict[str, Any]:
        statistics = {
            "served_by": routed.served_by,
            "fell_back": routed.fell_back,
            "propensity": routed.propensity,
            "model_version": routed.model_version,
            "ab_test": routed.ab_test,
            "ab_group": routed.ab_group,
            "explored": routed.explored,
            "policy_choice": routed.policy_choice,
        }
        alternatives: Any = routed.probabilities or (self.options or None)
        confidence = routed.probabilities.get(routed.option) if routed.probabilities else None
        return {"confidence": confidence, "alternatives": alternatives, "statistics": statistics}

    def _text_of(self, state: Any) -> str:
        if callable(self.text):
            return str(self.text(state))
        if isinstance(self.text, str):
            return str(_get(state, self.text) or "")
        for key in _TEXT_KEYS:
            value = _get(state, key)
            if isinstance(value, str) and value.strip():
                return value
        messages = _get(state, "messages")
        if isinstance(messages, list) and messages:
            content = getattr(messages[-1], "content", None)
            if content is None and isinstance(messages[-1], Mapping):
                content = messages[-1].get("content")
            if isinstance(content, str):
                return content
        return ""

    def _unit_of(self, config: RunnableConfig | None) -> str:
        metadata = (config or {}).get("metadata") or {}
        for key in (self.unit, "thread_id"):
            value = metadata.get(key)
            if value is not None and value != "":
                return str(value)
        configurable = (config or {}).get("configurable") or {}
        if configurable.get("thread_id") is not None:
            return str(configurable["thread_id"])
        return str(uuid.uuid4())

    # -- model lookup -------------------------------------------------------------------------------

    def refresh(self) -> None:
        """Look for a new production model and a running A/B test of the point now (the background thread
        does this every ``refresh_seconds``). Failures are logged; what is served stays as it was."""
        try:
            self._snapshot = self._lookup(self._snapshot)
        except Exception:
            log.exception(
                "could not refresh the models of decision point %s; serving what was loaded", self.point
            )

    def close(self) -> None:
        """Stop the background refresh (the router keeps serving what it has)."""
        self._stop.set()

    def _lookup(self, current: _Snapshot) -> _Snapshot:
        name = self.names["router"]
        production = current.production
        version = self.registry.store.models.alias(name, "production")
        if version is None:
            production = None
        elif production is None or production.version != version:
            production = self._load(version)
        if not self.ab_tests:
            return _Snapshot(production=production)
        prefix = point_test_prefix(self.point)
        test = next(
            (t for t in self.registry.store.ab.list(status="running") if t["name"].startswith(prefix)),
            None,
        )
        if test is None:
            return _Snapshot(production=production)
        match = _ROUTER_VERSION.search(test["model_b"] or "")
        candidate = current.candidate
        if match is None:
            candidate = None
        elif candidate is None or candidate.version != int(match.group(1)):
            candidate = self._load(int(match.group(1)))
        split = float((test.get("settings") or {}).get("traffic_split", 0.5))
        return _Snapshot(production, test["test_id"], split, candidate)

    def _load(self, version: int) -> _Model:
        return _Model(version, self.registry.load(self.names["router"], version).scorer())


def _refresh_periodically(ref: "weakref.ref[LearnedRouter]", stop: threading.Event, interval: float) -> None:
    while not stop.wait(interval):
        router = ref()
        if router is None:
            return
        router.refresh()
        del router


def _registry(store: Any, model_dir: str | Path) -> Any:
    from cl_plugin.learning.registry import ModelRegistry
    from cl_plugin.store import Store

    if store is None:
        raise ValueError(
            "LearnedRouter needs registry=<the ModelRegistry maintenance promotes into> or store=<its store>"
        )
    if not isinstance(store, Store):
        store = Store.from_url(str(store)).setup()
    return ModelRegistry(store, Path(model_dir) / "artifacts")


def _literal_options(fallback: Callable[..., Any]) -> list[str] | None:
    try:
        hint = get_type_hints(fallback).get("return")
    except Exception:
        return None
    if get_origin(hint) is Literal:
        return [str(a) for a in get_args(hint)]
    return None


def _takes_config(fn: Callable[..., Any]) -> bool:
    try:
        return "config" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def _get(state: Any, key: str) -> Any:
    if isinstance(state, Mapping):
        return state.get(key)
    return getattr(state, key, None)
