"""The maintenance graph learning the decision points of a user's own graph (not the bundled example).

The graph: ``intake`` picks a queue for each message by a keyword rule (a conditional edge served by a
LearnedRouter), and the queue's node picks a reply tone with ``record_decision("tone", ...)``: two decision
points of different kinds, each learned on its own.
"""

from __future__ import annotations

import random
import uuid
from pathlib import Path
from typing import Any, Literal, TypedDict

import pytest
from cl_plugin.graphs.maintenance import RECORDED_POLICY, run_maintenance
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph
from pydantic import Field

from cl_plugin import CaptureHandler, LearnedRouter, record_decision
from cl_plugin.learning.registry import ModelRegistry
from cl_plugin.store import Store

QUEUE_POINT = "mail/intake/route"
TONE_POINT = "mail/orders/tone"
QUEUE_MODEL, TONE_MODEL = "mail.intake.route", "mail.orders.tone"

# (text, right queue): the rule knows "parcel" and "shipment", not the other wordings. A user who writes
# "again" or "since monday" wants a warm reply; the orders node's own rule only hears "please".
MESSAGES = [
    ("where is my parcel", "orders"),
    ("the shipment has not arrived", "orders"),
    ("my delivery never came to the door", "orders"),
    ("the courier lost my package at the door", "orders"),
    ("can I join the team as an intern", "jobs"),
    ("is the engineer role still open", "jobs"),
]
DETAILS = ("", " today", " since monday", " please", " again", " for my sister", " from the shop")
WARM = (" since monday", " again")


class Mail(TypedDict, total=False):
    message: str
    queue: str
    tone: str
    reply: str


def keyword_rule(state: Mail) -> Literal["orders", "jobs"]:
    text = state["message"]
    return "orders" if ("parcel" in text or "shipment" in text) else "jobs"


def perfect_rule(state: Mail) -> Literal["orders", "jobs"]:
    return "jobs" if ("intern" in state["message"] or "role" in state["message"]) else "orders"


def orders(state: Mail) -> Mail:
    """Orders and deliveries: where a parcel is, what arrived, what did not."""
    tone = "warm" if "please" in state["message"] else "brief"  # the node's own rule for the tone
    record_decision("tone", tone, alternatives=["brief", "warm"])
    return {"queue": "orders", "tone": tone, "reply": f"[orders/{tone}]"}


def jobs(state: Mail) -> Mail:
    """Job applications and open roles."""
    return {"queue": "jobs", "tone": "brief", "reply": "[jobs]"}


def build(path: Any) -> Any:
    builder = StateGraph(Mail)
    builder.add_node("intake", lambda state: {})
    builder.add_node("orders", orders)
    builder.add_node("jobs", jobs)
    builder.add_edge(START, "intake")
    builder.add_conditional_edges("intake", path, ["orders", "jobs"])
    builder.add_edge("orders", END)
    builder.add_edge("jobs", END)
    return builder.compile(name="mail")


class World:
    def __init__(self, tmp_path: Path, rule: Any = keyword_rule) -> None:
        self.store = Store.from_url(f"sqlite:///{tmp_path / 'mail.db'}").setup()
        self.model_dir = tmp_path / "models"
        self.registry = ModelRegistry(self.store, self.model_dir / "artifacts")
        self.router = LearnedRouter(rule, QUEUE_POINT, registry=self.registry, refresh_seconds=3600)
        self.graph = build(self.router)
        self.handler = CaptureHandler(self.store)
        self.truth: dict[str, tuple[str, str]] = {}
        self.saver = InMemorySaver()

    def serve(self, n: int, seed: int) -> None:
        """``n`` messages; each user rates 5 when queue and tone are right, 1 otherwise."""
        rng = random.Random(seed)
        for _ in range(n):
            text, queue = rng.choice(MESSAGES)
            detail = rng.choice(DETAILS)
            tone = "warm" if detail in WARM else "brief"
            text = f"{text}{detail} (ref {rng.randrange(100, 1000)})"
            run_id = uuid.UUID(int=rng.getrandbits(128), version=4)
            session = f"s{rng.randrange(10_000)}"
            out = self.graph.invoke(
                {"message": text},
                config={"callbacks": [self.handler], "run_id": run_id, "metadata": {"session_id": session}},
            )
            self.truth[str(run_id)] = (queue, tone)
            right = out["queue"] == queue and (queue != "orders" or out["tone"] == tone)
            self.handler.record_feedback(run_id, score=5 if right else 1)
        self.handler.flush()

    def maintain(self, *, oracle: bool = False, judge: Any = None, **overrides: Any) -> dict[str, Any]:
        config = {
            "maintenance": {
                "points": "auto",
                "min_interactions": 20,
                "min_validation_samples": 5,
                "auto_promote": True,
                "annotation": "human" if oracle else "none",
                "annotation_budget": 150,
                "model_dir": str(self.model_dir),
            },
            "retraining": {"enable_ab_test": False, "min_new_samples": 20},
        }
        for section, values in overrides.items():
            config.setdefault(section, {}).update(values)
        kwargs = {
            "config": config,
            "registry": self.registry,
            "graphs": [self.graph],
            "checkpointer": self.saver,
        }
        if judge is not None:
            config["maintenance"]["annotation"] = "llm"
            kwargs["judge"] = judge
        state = run_maintenance(self.store, **kwargs)
        if oracle and "__interrupt__" in state:
            items = state["__interrupt__"][0].value["items"]
            answers = {}
            for item in items:
                queue, tone = self.truth[item["interaction_id"]]
                answers[item["interaction_id"]] = queue if item["point"] == QUEUE_MODEL else tone
            state = run_maintenance(self.store, thread_id=state["thread_id"], resume=answers, **kwargs)
        self.router.refresh()
        return state

    def close(self) -> None:
        self.router.close()
        self.handler.close()


@pytest.fixture
def world(tmp_path: Path) -> Any:
    w = World(tmp_path)
    yield w
    w.close()


def test_two_points_of_one_graph_are_learned_on_their_own_against_the_recorded_policy(world: World) -> None:
    world.serve(800, seed=1)
    points = {str(p.graph_name) + "/" + str(p.node) + "/" + p.kind: p for p in world.store.decision_points()}
    assert set(points) >= {QUEUE_POINT, TONE_POINT}
    assert set(points[TONE_POINT].options) == {"brief", "warm"} and points[TONE_POINT].declared == ()

    state = world.maintain(oracle=True)
    retrained = state["steps"]["retrain"]["points"]
    assert set(retrained) == {QUEUE_MODEL, TONE_MODEL}
    for name, options in ((QUEUE_MODEL, {"orders", "jobs"}), (TONE_MODEL, {"brief", "warm"})):
        report = retrained[name]
        assert report["status"] == "completed", report
        # no model before: the incumbent is the graph's own policy, scored on held-out labels
        production = report["metrics"]["production"]
        assert production["policy"] == "recorded" and production["ece"] is None
        sources = report["data"]["labels_by_source"]
        # the oracle labels an item at the first point it decided at (intake); tone learns from ratings
        assert sources["annotation" if name == QUEUE_MODEL else "complement"] > 0, sources
        router = world.registry.load(name, report["versions"]["router"])
        assert set(router.classes_) == options  # each point's own options, nothing of the other's
    gates = state["steps"]["evaluate"]["points"]
    assert gates[QUEUE_MODEL]["passed"], gates[QUEUE_MODEL]
    assert "against the graph's recorded policy" in gates[QUEUE_MODEL]["reason"]
    promoted = state["steps"]["promote"]["points"]
    assert promoted[QUEUE_MODEL] == {"router": 1, "replay": 1}
    assert world.registry.store.models.alias(QUEUE_MODEL, "production") == 1
    # the served router now decides with the model, which knows the wordings the rule sends to "jobs"
    assert world.router.version == 1
    assert world.router.route({"message": "my delivery never came to the door (ref 123)"}).option == "orders"


def test_the_gate_refuses_a_candidate_when_the_rule_is_already_right(tmp_path: Path) -> None:
    w = World(tmp_path, rule=perfect_rule)
    try:
        w.serve(300, seed=2)
        state = w.maintain(oracle=True, maintenance={"points": [QUEUE_POINT]})
        gate = state["steps"]["evaluate"]["points"][QUEUE_MODEL]
        assert not gate["passed"] and gate["accuracy_gain"] <= 0, gate
        assert "promote" not in state["steps"]
        assert w.registry.store.models.alias(QUEUE_MODEL, "production") is None
    finally:
        w.close()


@pytest.mark.slow
def test_a_first_candidate_is_ab_tested_against_the_rule_through_the_served_decisions(world: World) -> None:
    world.serve(500, seed=3)
    ab = {
        "retraining": {"enable_ab_test": True},
        "ab_testing": {"traffic_split": 0.5, "min_samples": 30, "sequential_tuning": 300},
    }
    first = world.maintain(oracle=True, maintenance={"points": [QUEUE_POINT]}, **ab)
    [(name, test)] = first["steps"]["ab_test"]["points"].items()
    assert (
        name == QUEUE_MODEL
        and test["model_a"] == RECORDED_POLICY
        and test["model_b"] == "replay v1, router v1"
    )
    assert world.registry.store.models.alias(QUEUE_MODEL, "production") is None  # not before the test says so

    world.serve(900, seed=4)  # the router splits the traffic: A the rule, B the candidate
    decisions = [
        d["statistics"] for iid in list(world.truth)[-900:] for d in world.store.decisions(iid, kind="route")
    ]
    groups = {s["ab_group"] for s in decisions}
    assert groups == {"A", "B"} and all(s["ab_test"] == test["test_id"] for s in decisions)
    assert {s["model_version"] for s in decisions if s["ab_group"] == "B"} == {1}
    assert {s["fell_back"] for s in decisions if s["ab_group"] == "A"} == {"no_model"}

    second = world.maintain(maintenance={"points": [QUEUE_POINT]}, **ab)
    [review] = second["steps"]["review_ab_tests"]["tests"]
    assert review["test_id"] == test["test_id"] and review["recommendation"] == "Deploy B", review
    status = world.store.ab.get(test["test_id"])
    assert status["status"] == "ended"
    assert status["groups"]["A"]["n"] + status["groups"]["B"]["n"] == 900  # every served, rated decision
    assert world.registry.store.models.alias(QUEUE_MODEL, "production") == 1


class DeskJudge(GenericFakeChatModel):
    """A judge that reads the options it is offered from its instructions and picks by the message's words."""

    messages: Any = iter(())
    prompts: list[str] = Field(default_factory=list)

    def _generate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any
    ) -> ChatResult:
        system, message = str(messages[0].content), str(messages[-1].content)
        self.prompts.append(system)
        if "- orders" in system:
            answer = "jobs" if ("intern" in message or "role" in message) else "orders"
        else:
            answer = "warm" if ("again" in message or "since monday" in message) else "brief"
        return ChatResult(generations=[ChatGeneration(message=AIMessage(f"I would pick {answer}."))])


def test_the_judge_chooses_among_a_points_options_described_by_their_nodes(world: World) -> None:
    world.serve(400, seed=5)
    judge = DeskJudge()
    state = world.maintain(judge=judge)
    annotate = state["steps"]["annotate"]
    assert annotate["mode"] == "llm" and annotate["labeled"] > 0 and annotate["skipped"] == 0, annotate
    # the queue point's options, each with the docstring of the node it leads to
    queue_prompt = next(p for p in judge.prompts if "- orders" in p)
    assert "- orders: Orders and deliveries: where a parcel is, what arrived, what did not." in queue_prompt
    assert "- jobs: Job applications and open roles." in queue_prompt
    labels = [i["label"] for i in world.store.queue.items("labeled")]
    assert {i["annotator"] for i in world.store.queue.items("labeled")} == {"llm-judge"}
    for label in labels:
        options = {"orders", "jobs"} if label["point"] == QUEUE_MODEL else {"brief", "warm"}
        assert label["option"] in options
