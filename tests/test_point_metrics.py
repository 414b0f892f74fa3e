"""Per decision point figures of a user's own graph, against numbers the test works out from its script."""

from __future__ import annotations

import random
import uuid
from collections import Counter
from pathlib import Path
from typing import Any, Literal, TypedDict

import pytest
from langgraph.graph import END, START, StateGraph

from cl_plugin import CaptureHandler, LearnedRouter, ModelRegistry, PointRef, point_metrics, record_decision
from cl_plugin.learning.router import MetaRouter

SHELVES = ("books", "toys")
N = 60


class Order(TypedDict, total=False):
    text: str
    plan: dict[str, Any]


def pick(state: Order) -> Order:
    """Decides as the test's script says, the way a served router records its decisions."""
    plan = state["plan"]
    for option in (plan["option"], *plan["again"]):
        served = plan["served"]
        record_decision(
            "route",
            option,
            confidence=plan["confidence"],
            alternatives={"books": 0.5, "toys": 0.3, "gifts": 0.2},
            statistics={"served_by": served, "fell_back": plan["reason"], "propensity": 1.0},
        )
    record_decision("tone", "formal")
    return {}


def shop_graph() -> Any:
    g = StateGraph(Order)
    g.add_node("pick", pick)
    g.add_edge(START, "pick")
    g.add_edge("pick", END)
    return g.compile(name="shop")


def script(seed: int = 7) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    plans = []
    for i in range(N):
        served = rng.choice(["model", "model", "model", "fallback", "exploration"])
        label: dict[str, str] | None = None
        if i % 4 == 0:
            label = {"option": rng.choice(SHELVES)}
        elif i % 8 == 1:
            label = {"agent": rng.choice(SHELVES)}
        elif i == 2:
            label = {"option": "toys", "point": "another.point.route"}  # labels another point: not counted
        plans.append(
            {
                "option": rng.choice(SHELVES),
                "again": ["books"] if i % 10 == 3 else [],
                "served": served,
                "reason": rng.choice(["no_model", "low_confidence"]) if served == "fallback" else None,
                "confidence": None if served == "fallback" else rng.choice([0.15, 0.55, 0.65, 0.85, 0.95]),
                "rating": rng.choice([5, 4, 3, 2, 1, None, None, "up", "down", "fix"]),
                "label": label,
            }
        )
    return plans


def outcome(rating: Any) -> str | None:
    if rating in ("down", "fix") or (isinstance(rating, int) and rating <= 2):
        return "bad"
    if rating == "up" or (isinstance(rating, int) and rating >= 4):
        return "good"
    return None


def capture(handler: CaptureHandler, plans: list[dict[str, Any]]) -> None:
    graph = shop_graph()
    ids = []
    for plan in plans:
        run_id = uuid.uuid4()
        graph.invoke({"text": "a present", "plan": plan}, config={"callbacks": [handler], "run_id": run_id})
        ids.append(str(run_id))
        rating = plan["rating"]
        if rating == "fix":
            handler.record_feedback(run_id, correction="it was the other shelf")
        elif isinstance(rating, str):
            handler.record_feedback(run_id, thumbs=rating)
        elif rating is not None:
            handler.record_feedback(run_id, score=rating)
    assert handler.flush()
    store = handler.store
    labeled = {iid: p["label"] for iid, p in zip(ids, plans, strict=True) if p["label"]}
    queued = [
        {"interaction_id": iid, "priority": 1.0, "strategy": "uncertainty", "selection_reason": "-"}
        for iid in ids
    ]
    store.queue.enqueue(queued)
    for item in store.queue.items("pending"):
        if item["interaction_id"] in labeled:
            store.queue.update(item["item_id"], status="labeled", label=labeled[item["interaction_id"]])


def test_a_points_figures_are_the_ones_its_decisions_ratings_and_labels_give(
    store_url: str, tmp_path: Path
) -> None:
    plans = script()
    with CaptureHandler(store_url) as handler:
        capture(handler, plans)
        registry = ModelRegistry(handler.store, tmp_path / "artifacts")
        name = PointRef("shop", "pick", "route").model_names()["router"]
        model = MetaRouter().fit(["a novel", "a teddy bear"], ["books", "toys"])
        registry.register(name, model)
        registry.register(name, model, parent=1)
        registry.promote(name, 1)
        registry.set_alias(name, "candidate", 2)
        found = {m.key: m for m in point_metrics(handler.store, registry, min_calibrated=10)}
        too_few = point_metrics(handler.store, min_calibrated=1000)

    route, tone = found[("shop", "pick", "route")], found[("shop", "pick", "tone")]
    chosen = Counter(o for p in plans for o in (p["option"], *p["again"]))
    assert route.point.decisions == N + sum(len(p["again"]) for p in plans)
    assert route.point.interactions == N and route.model_name == "shop.pick.route"
    assert route.options == {**dict(sorted(chosen.items(), key=lambda kv: -kv[1])), "gifts": 0}
    rated = sum(p["rating"] not in (None, "fix") for p in plans)
    annotated = sum(p["label"] is not None for p in plans)
    assert (route.rated.count, route.rated.n, route.rated.rate) == (rated, N, rated / N)
    assert (route.annotated.count, route.annotated.rate) == (annotated, annotated / N)

    for option in (*SHELVES, "gifts"):
        outcomes = [outcome(p["rating"]) for p in plans if p["option"] == option]
        good, judged = outcomes.count("good"), sum(o is not None for o in outcomes)
        assert (route.good_rate[option].count, route.good_rate[option].n) == (good, judged), option
    assert route.good_rate["gifts"].rate is None

    truths = [
        (p["option"], p["label"].get("option") or p["label"].get("agent"))
        for p in plans
        if p["label"] and "point" not in p["label"]
    ]
    right = sum(c == t for c, t in truths)
    assert (route.accuracy.count, route.accuracy.n) == (right, len(truths))
    assert route.accuracy.rate == pytest.approx(right / len(truths))

    pairs = [(p["confidence"], outcome(p["rating"]) == "good") for p in plans]
    pairs = [(c, g) for (c, g), p in zip(pairs, plans, strict=True) if c is not None and outcome(p["rating"])]
    bins: dict[int, list[tuple[float, bool]]] = {}
    for c, g in pairs:
        bins.setdefault(min(int(c * 10), 9), []).append((c, g))
    ece = sum(abs(sum(g for _, g in b) - sum(c for c, _ in b)) for b in bins.values()) / len(pairs)
    assert route.calibration is not None and route.calibration.n == len(pairs) >= 10
    assert route.calibration.ece == pytest.approx(ece)

    every = [(p["served"], p["reason"]) for p in plans for _ in (p["option"], *p["again"])]
    served = Counter(s for s, _ in every)
    for how in ("model", "fallback", "exploration"):
        assert (route.served[how].count, route.served[how].n) == (served[how], len(every)), how
    assert route.fallback_reasons == dict(Counter(r for _, r in every if r).most_common())
    assert (route.production_version, route.candidate_version, route.versions) == (1, 2, 2)

    assert tone.options == {"formal": N} and tone.accuracy.rate is None and tone.calibration is None
    assert tone.served["model"].n == 0 and tone.fallback_reasons == {}
    assert (tone.production_version, tone.candidate_version, tone.versions) == (None, None, 0)
    assert {m.key: m.calibration for m in too_few}[route.key] is None
    assert {m.key: m.production_version for m in too_few}[route.key] is None  # no registry given


Shelf = Literal["books", "toys"]


def rule(state: Order) -> Shelf:
    """The shop's own rule: novels and anything bookish to books, the rest to toys."""
    return "books" if "book" in state["text"] else "toys"


def test_a_learned_routers_serving_is_counted_as_it_recorded_it(tmp_path: Path) -> None:
    seen = []

    class Watched(LearnedRouter):
        def route(self, state: Any, config: Any = None) -> Any:
            routed = super().route(state, config)
            seen.append(routed)
            return routed

    with CaptureHandler(f"sqlite:///{tmp_path / 'served.db'}") as handler:
        registry = ModelRegistry(handler.store, tmp_path / "artifacts")
        router = Watched(rule, "shop/pick", registry=registry, min_confidence=0.6, explore=0.3, seed=3)
        g = StateGraph(Order)
        g.add_node("pick", lambda s: {})
        for shelf in SHELVES:
            g.add_node(shelf, lambda s: {})
            g.add_edge(shelf, END)
        g.add_edge(START, "pick")
        g.add_conditional_edges("pick", router, list(SHELVES))
        graph = g.compile(name="shop")
        texts = ["a book of poems", "a wooden toy train", "a book about trains", "a puzzle", "crayons"]
        for text in texts * 4:  # no model yet: the rule decides
            graph.invoke({"text": text}, config={"callbacks": [handler]})
        model = MetaRouter().fit(
            [t for t in texts for _ in range(3)], [rule({"text": t}) for t in texts for _ in range(3)]
        )
        registry.register(router.names["router"], model)
        registry.promote(router.names["router"], 1)
        router.refresh()
        for text in texts * 8:
            graph.invoke({"text": text}, config={"callbacks": [handler]})
        router.close()
        assert handler.flush()
        [found] = point_metrics(handler.store, registry)

    served = Counter(r.served_by for r in seen)
    assert found.key == ("shop", "pick", "route") and found.point.interactions == len(seen) == 60
    # capture also records the edge's route, with no serving statistics: only the router's decisions count
    assert {how: (rate.count, rate.n) for how, rate in found.served.items()} == {
        how: (served[how], 60) for how in ("model", "fallback", "exploration")
    }
    assert found.fallback_reasons == dict(Counter(r.fell_back for r in seen if r.served_by == "fallback"))
    assert "no_model" in found.fallback_reasons and found.production_version == 1
