"""LearnedRouter in a user's own graph: the rule until a model is promoted, hot reload, fallbacks with their
reason, A/B groups by the test's hash, exploration with its propensity, async graphs and many threads."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal, TypedDict

import pytest
from langchain_core.runnables import RunnableConfig
from langgraph.graph import END, START, StateGraph

from cl_plugin import CaptureHandler
from cl_plugin.abtest import ABTestFramework
from cl_plugin.abtest.assignment import assign
from cl_plugin.learning.registry import ModelRegistry
from cl_plugin.learning.router import MetaRouter, Scorer
from cl_plugin.records import PointRef
from cl_plugin.serving import LearnedRouter, point_test_prefix
from cl_plugin.store import Store
from cl_plugin.store.points import point_decisions

OPTIONS = ("billing", "tech", "account")
POINT = PointRef("helpdesk", "triage")
WORDS = {
    "billing": ("invoice", "refund", "charge", "payment"),
    "tech": ("crash", "error", "bug", "timeout"),
    "account": ("password", "login", "email", "username"),
}
TEMPLATES = ("my {} is wrong", "help with the {}", "{} problem today", "a question about {}", "the {} again")


class Ticket(TypedDict, total=False):
    text: str
    route: str
    answer: str


def rule(state: Ticket) -> Literal["billing", "tech", "account"]:
    """The graph's own crude rule: invoices to billing, everything else to account."""
    return "billing" if "invoice" in state["text"] else "account"


def triage(state: Ticket) -> Ticket:
    return {}


def handler_node(name: str) -> Callable[[Ticket], Ticket]:
    def answer(state: Ticket) -> Ticket:
        return {"answer": name}

    return answer


def helpdesk(path: Any) -> Any:
    """``triage`` with a conditional edge, decided by ``path``, to one of three handlers."""
    g = StateGraph(Ticket)
    g.add_node("triage", triage)
    for name in OPTIONS:
        g.add_node(name, handler_node(name))
        g.add_edge(name, END)
    g.add_edge(START, "triage")
    g.add_conditional_edges("triage", path, list(OPTIONS))
    return g.compile(name="helpdesk")


def fitted(mapping: dict[str, str]) -> MetaRouter:
    """A router that sends each topic's words to ``mapping[topic]``."""
    queries, labels = [], []
    for topic, words in WORDS.items():
        for word in words:
            for template in TEMPLATES:
                queries.append(template.format(word))
                labels.append(mapping[topic])
    return MetaRouter().fit(queries, labels)


#: Learned what the rule misses: crashes go to tech.
RIGHT = {"billing": "billing", "tech": "tech", "account": "account"}
#: Another version that disagrees everywhere, to see which version decided.
ROTATED = {"billing": "tech", "tech": "account", "account": "billing"}


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store.from_url(f"sqlite:///{tmp_path / 'serving.db'}").setup()
    yield s
    s.close()


@pytest.fixture
def registry(store: Store, tmp_path: Path) -> ModelRegistry:
    return ModelRegistry(store, tmp_path / "artifacts")


@pytest.fixture
def capture(store: Store) -> Iterator[CaptureHandler]:
    h = CaptureHandler(store)
    yield h
    h.close()


@pytest.fixture
def make_router(registry: ModelRegistry) -> Iterator[Callable[..., LearnedRouter]]:
    made: list[LearnedRouter] = []

    def make(**kwargs: Any) -> LearnedRouter:
        router = LearnedRouter(rule, POINT, registry=registry, **{"refresh_seconds": 60.0, **kwargs})
        made.append(router)
        return router

    yield make
    for router in made:
        router.close()


def publish(registry: ModelRegistry, mapping: dict[str, str], *, promote: bool = True) -> int:
    version = registry.register(POINT.model_names()["router"], fitted(mapping)).version
    if promote:
        registry.promote(POINT.model_names()["router"], version)
    return version


def ask(graph: Any, capture: CaptureHandler, text: str, session: str | None = None) -> tuple[str, str]:
    """Run one request; returns its interaction id and the handler that answered."""
    run_id = uuid.uuid4()
    metadata = {"session_id": session} if session is not None else {}
    out = graph.invoke(
        {"text": text}, config={"callbacks": [capture], "run_id": run_id, "metadata": metadata}
    )
    return str(run_id), out["answer"]


def decision(capture: CaptureHandler, iid: str) -> dict[str, Any]:
    """The one route decision an interaction made (capture must not add the edge's own beside it)."""
    assert capture.flush()
    [route] = capture.store.decisions(iid, kind="route")
    assert route["node"] == "triage"
    return route


# -- who decides --------------------------------------------------------------------------------------


def test_without_a_model_the_rule_decides_and_says_why(
    make_router: Callable[..., LearnedRouter], capture: CaptureHandler, store: Store
) -> None:
    router = make_router()
    assert router.version is None and router.options == list(OPTIONS)  # from the rule's Literal
    iid, answer = ask(helpdesk(router), capture, "my invoice is wrong")
    assert answer == "billing"
    route = decision(capture, iid)
    assert route["chosen"] == "billing" and route["confidence"] is None
    assert route["alternatives"] == list(OPTIONS)
    assert route["statistics"] == {
        "served_by": "fallback",
        "fell_back": "no_model",
        "propensity": 1.0,
        "model_version": None,
        "ab_test": None,
        "ab_group": None,
        "explored": False,
        "policy_choice": "billing",
    }
    # the point's reader sees the same decision
    assert point_decisions(store, "helpdesk", "triage", "route")[iid]["statistics"]["fell_back"] == "no_model"


def test_a_promoted_model_decides_after_refresh(
    make_router: Callable[..., LearnedRouter], capture: CaptureHandler, registry: ModelRegistry
) -> None:
    router = make_router()
    graph = helpdesk(router)
    version = publish(registry, RIGHT)
    iid, answer = ask(graph, capture, "the app crash again")
    assert answer == "account"  # not looked up yet: the rule still decides
    assert decision(capture, iid)["statistics"]["fell_back"] == "no_model"

    router.refresh()
    assert router.version == version == 1
    iid, answer = ask(graph, capture, "the app crash again")
    assert answer == "tech"  # the rule would have said account
    route = decision(capture, iid)
    assert route["statistics"]["served_by"] == "model" and route["statistics"]["fell_back"] is None
    assert route["statistics"]["model_version"] == 1 and route["statistics"]["propensity"] == 1.0
    assert set(route["alternatives"]) == set(OPTIONS)
    assert route["confidence"] == pytest.approx(route["alternatives"]["tech"])
    assert route["confidence"] == max(route["alternatives"].values()) >= router.min_confidence


def test_promoting_a_new_version_is_served_after_refresh(
    make_router: Callable[..., LearnedRouter], capture: CaptureHandler, registry: ModelRegistry
) -> None:
    publish(registry, RIGHT)
    router = make_router()
    graph = helpdesk(router)
    assert ask(graph, capture, "help with the refund")[1] == "billing"
    second = publish(registry, ROTATED)
    assert router.version == 1  # what was loaded stays until the next lookup
    router.refresh()
    assert router.version == second == 2
    iid, answer = ask(graph, capture, "help with the refund")
    assert answer == "tech"
    assert decision(capture, iid)["statistics"]["model_version"] == 2


def test_the_background_thread_picks_up_a_promotion(
    make_router: Callable[..., LearnedRouter], capture: CaptureHandler, registry: ModelRegistry
) -> None:
    router = make_router(refresh_seconds=0.05)
    assert router.version is None
    publish(registry, RIGHT)
    deadline = time.monotonic() + 10.0
    while router.version is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert router.version == 1
    iid, answer = ask(helpdesk(router), capture, "login problem today")
    assert answer == "account" and decision(capture, iid)["statistics"]["model_version"] == 1


# -- falling back -------------------------------------------------------------------------------------


def test_an_unsure_model_leaves_the_decision_to_the_rule(
    make_router: Callable[..., LearnedRouter], capture: CaptureHandler, registry: ModelRegistry
) -> None:
    publish(registry, RIGHT)
    text = "good morning to you all"  # none of the words the model knows
    assert max(registry.load(POINT.model_name).scorer().proba(text)) < 0.9
    router = make_router(min_confidence=0.9)
    iid, answer = ask(helpdesk(router), capture, text)
    assert answer == "account"
    route = decision(capture, iid)
    assert route["statistics"]["fell_back"] == "low_confidence"
    assert route["statistics"]["served_by"] == "fallback" and route["statistics"]["model_version"] == 1
    assert max(route["alternatives"].values()) < 0.9  # the model's probabilities are kept


def test_a_failing_model_is_logged_and_the_graph_still_answers(
    make_router: Callable[..., LearnedRouter],
    capture: CaptureHandler,
    registry: ModelRegistry,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    publish(registry, RIGHT)
    router = make_router()

    def broken(self: Scorer, query: str, context: Any = None) -> Any:
        raise RuntimeError("weights went missing")

    monkeypatch.setattr(Scorer, "proba", broken)
    with caplog.at_level(logging.ERROR, logger="cl_plugin.serving"):
        iid, answer = ask(helpdesk(router), capture, "my invoice is wrong")
    assert answer == "billing"
    route = decision(capture, iid)
    assert route["statistics"]["fell_back"] == "model_error" and route["statistics"]["model_version"] == 1
    assert route["alternatives"] == list(OPTIONS) and route["confidence"] is None
    assert "weights went missing" in caplog.text


def test_an_option_the_graph_does_not_have_falls_back(
    make_router: Callable[..., LearnedRouter], capture: CaptureHandler, registry: ModelRegistry
) -> None:
    publish(registry, {**RIGHT, "account": "legacy_desk"})  # trained when the graph had another handler
    router = make_router(min_confidence=0.0)
    iid, answer = ask(helpdesk(router), capture, "my password is wrong")
    assert answer == "account"
    route = decision(capture, iid)
    assert route["chosen"] == "account" and route["statistics"]["fell_back"] == "unknown_option"
    assert max(route["alternatives"], key=route["alternatives"].get) == "legacy_desk"


# -- A/B test -----------------------------------------------------------------------------------------


def test_an_ab_test_splits_sessions_by_the_tests_hash_and_serves_the_candidate_to_b(
    make_router: Callable[..., LearnedRouter], capture: CaptureHandler, registry: ModelRegistry, store: Store
) -> None:
    candidate = publish(registry, RIGHT, promote=False)
    test_id = ABTestFramework({"traffic_split": 0.5}, store=store).create_test(
        point_test_prefix(POINT) + "recorded policy vs replay v1, router v1",
        model_a="recorded policy",
        model_b=f"replay v1, router v{candidate}",
    )
    router = make_router()
    graph = helpdesk(router)
    sessions = [f"customer-{i}" for i in range(40)]
    groups: dict[str, str] = {}
    for session in [*sessions, *sessions[:10]]:  # the first ten come back
        iid, answer = ask(graph, capture, "the app crash again", session=session)
        stats = decision(capture, iid)["statistics"]
        expected = assign(test_id, session, 0.5)
        assert stats["ab_test"] == test_id and stats["ab_group"] == expected
        assert groups.setdefault(session, stats["ab_group"]) == stats["ab_group"]
        if expected == "B":
            assert (stats["served_by"], stats["model_version"], answer) == ("model", candidate, "tech")
        else:  # group A keeps the graph's own policy: nothing is in production
            assert (stats["served_by"], stats["fell_back"], stats["model_version"], answer) == (
                "fallback",
                "no_model",
                None,
                "account",
            )
    assert set(groups.values()) == {"A", "B"}


# -- exploration --------------------------------------------------------------------------------------


def test_exploration_takes_another_option_at_its_rate_with_its_propensity(
    make_router: Callable[..., LearnedRouter], capture: CaptureHandler
) -> None:
    router = make_router(explore=0.2, seed=11)
    graph = helpdesk(router)
    texts = ["my invoice is wrong", "the app crash again"]
    runs = [ask(graph, capture, texts[i % 2]) for i in range(300)]
    explored = 0
    for i, (iid, answer) in enumerate(runs):
        route = decision(capture, iid)
        stats = route["statistics"]
        ruled = rule({"text": texts[i % 2]})
        assert route["chosen"] == answer
        if stats["explored"]:
            explored += 1
            assert answer != ruled and stats["served_by"] == "exploration"
            assert stats["propensity"] == pytest.approx(0.2 / (len(OPTIONS) - 1))
        else:
            assert answer == ruled and stats["served_by"] == "fallback"
            assert stats["propensity"] == pytest.approx(0.8)
    assert 0.12 <= explored / len(runs) <= 0.28


def test_the_same_seed_explores_the_same_requests_and_no_exploration_never_explores(
    make_router: Callable[..., LearnedRouter],
) -> None:
    def picks(router: LearnedRouter) -> list[tuple[str, float]]:
        routed = [router.route({"text": "help with the login"}) for _ in range(100)]
        return [(r.option, r.propensity) for r in routed]

    first = picks(make_router(explore=0.3, seed=5))
    assert first == picks(make_router(explore=0.3, seed=5))
    assert {option for option, _ in first} == set(OPTIONS)
    assert picks(make_router(explore=0.0, seed=5)) == [("account", 1.0)] * 100


# -- async graphs and threads -------------------------------------------------------------------------


def test_an_async_graph_routes_through_the_router_and_through_aroute(
    make_router: Callable[..., LearnedRouter], capture: CaptureHandler, registry: ModelRegistry
) -> None:
    publish(registry, RIGHT)
    router = make_router()

    async def atriage(state: Ticket, config: RunnableConfig) -> Ticket:
        routed = await router.aroute(state, config)
        return {"route": routed.option}

    g = StateGraph(Ticket)
    g.add_node("triage", atriage)
    for name in OPTIONS:
        g.add_node(name, handler_node(name))
        g.add_edge(name, END)
    g.add_edge(START, "triage")
    g.add_conditional_edges("triage", lambda s: s["route"], list(OPTIONS))
    in_node = g.compile(name="helpdesk")

    async def both() -> list[tuple[str, str]]:
        out = []
        for graph in (helpdesk(router), in_node):
            run_id = uuid.uuid4()
            result = await graph.ainvoke(
                {"text": "the app crash again"}, config={"callbacks": [capture], "run_id": run_id}
            )
            out.append((str(run_id), result["answer"]))
        return out

    for iid, answer in asyncio.run(both()):
        assert answer == "tech"
        route = decision(capture, iid)
        assert route["chosen"] == "tech"
        assert route["statistics"]["served_by"] == "model" and route["statistics"]["model_version"] == 1


def test_many_threads_route_while_the_models_are_refreshed(
    make_router: Callable[..., LearnedRouter], capture: CaptureHandler, registry: ModelRegistry
) -> None:
    publish(registry, RIGHT)
    publish(registry, ROTATED, promote=False)
    publish(registry, RIGHT)  # v3, promoted; the refresher flips production between v2 and v3
    answer_of = {2: ROTATED["tech"], 3: RIGHT["tech"]}
    router = make_router()
    graph = helpdesk(router)
    errors: list[BaseException] = []
    answered: list[tuple[str, str]] = []
    lock = threading.Lock()
    routing_done = threading.Event()
    refreshes = 0

    def serve(worker: int) -> None:
        try:
            i = 0
            # route at least 15 requests each, and on until the models have changed under them a few times
            while (i < 15 or (refreshes < 3 and not errors)) and i < 300:
                run = ask(graph, capture, f"the {WORDS['tech'][i % 4]} again", session=f"w{worker}")
                with lock:
                    answered.append(run)
                i += 1
        except BaseException as exc:
            errors.append(exc)

    def refresh() -> None:
        nonlocal refreshes
        try:
            version = 2
            while not routing_done.is_set():
                registry.promote(POINT.model_name, version)
                router.refresh()
                refreshes += 1
                version = 5 - version
        except BaseException as exc:
            errors.append(exc)

    refresher = threading.Thread(target=refresh)
    workers = [threading.Thread(target=serve, args=(w,)) for w in range(8)]
    refresher.start()
    for t in workers:
        t.start()
    for t in workers:
        t.join(60)
    routing_done.set()
    refresher.join(60)
    assert errors == [] and refreshes >= 3
    assert len(answered) >= 8 * 15
    for iid, answer in answered:
        stats = decision(capture, iid)["statistics"]
        assert stats["served_by"] == "model"
        assert answer == answer_of[stats["model_version"]]  # the version recorded is the one that decided


def test_a_router_kept_out_of_experiments_serves_production_alone(tmp_path: Path) -> None:
    store = Store.from_url(f"sqlite:///{tmp_path / 'out.db'}").setup()
    registry = ModelRegistry(store, tmp_path / "artifacts")
    publish(registry, RIGHT, promote=False)  # the candidate, router v1
    ABTestFramework({"traffic_split": 0.99}, store=store).create_test(
        point_test_prefix(POINT) + "recorded policy vs replay v1, router v1",
        model_a="recorded policy",
        model_b="replay v1, router v1",
    )
    inside = LearnedRouter(rule, POINT, registry=registry, refresh_seconds=3600)
    outside = LearnedRouter(rule, POINT, registry=registry, refresh_seconds=3600, ab_tests=False)
    try:
        assert inside._snapshot.test_id is not None
        decided = [
            outside.route({"text": "my invoice"}, {"metadata": {"session_id": f"s{i}"}}) for i in range(20)
        ]
        assert {(r.ab_test, r.ab_group) for r in decided} == {(None, None)}
    finally:
        inside.close()
        outside.close()
