"""Decision points of a user's graph: where it decides, among what, and how much of it is labeled."""

from __future__ import annotations

import uuid
from typing import Any, TypedDict

import orjson
from langgraph.graph import END, START, StateGraph

from cl_plugin import CaptureHandler, record_decision
from cl_plugin.store import Batch, Store
from cl_plugin.store.points import DecisionPoint


class Request(TypedDict, total=False):
    text: str
    answer: str


def triage(state: Request) -> Request:
    record_decision("priority", "urgent" if "now" in state["text"] else "normal")
    return {}


def route(state: Request) -> str:
    """The hand-written rule: refunds to billing, crashes to tech, everything else to the desk."""
    text = state["text"]
    return "billing" if "refund" in text else "tech" if "crash" in text else "desk"


def handler(name: str) -> Any:
    def answer(state: Request) -> Request:
        return {"answer": f"{name} will help"}

    return answer


def support_graph() -> Any:
    g = StateGraph(Request)
    g.add_node("triage", triage)
    for name in ("billing", "tech", "desk"):
        g.add_node(name, handler(name))
        g.add_edge(name, END)
    g.add_edge(START, "triage")
    g.add_conditional_edges("triage", route, ["billing", "tech", "desk"])
    return g.compile(name="support")


TEXTS = ["refund my order", "app crash on start", "where is the office", "refund now please", "crash now"]


def test_a_graphs_decision_points_with_their_options_and_label_coverage(store_url: str) -> None:
    with CaptureHandler(store_url) as h:
        graph, ids = support_graph(), []
        for i in range(20):
            run_id = uuid.uuid4()
            graph.invoke({"text": TEXTS[i % 5]}, config={"callbacks": [h], "run_id": run_id})
            ids.append(str(run_id))
        for run_id in ids[:6]:
            h.record_feedback(run_id, score=4)
        h.record_feedback(ids[6], thumbs="down")
        assert h.flush()
        queued = [
            {"interaction_id": iid, "priority": 1.0, "strategy": "uncertainty", "selection_reason": "unsure"}
            for iid in ids[7:10]
        ]
        assert h.store.queue.enqueue(queued) == 3
        for item in h.store.queue.items("pending")[:2]:  # two labeled, one still pending
            h.store.queue.update(item["item_id"], status="labeled", label={"agent": "desk"})
        points = {p.key: p for p in h.store.decision_points()}
    route_point = points[("support", "triage", "route")]
    assert isinstance(route_point, DecisionPoint) and route_point.learnable
    assert route_point.options == {"billing": 8, "tech": 8, "desk": 4}
    assert (route_point.decisions, route_point.interactions, route_point.rated) == (20, 20, 7)
    assert route_point.annotated == 2
    assert route_point.first_seen <= route_point.last_seen
    priority = points[("support", "triage", "priority")]
    assert priority.options == {"normal": 12, "urgent": 8} and priority.learnable
    assert set(points) == {("support", "triage", "route"), ("support", "triage", "priority")}


def test_a_point_with_one_option_is_not_learnable_and_filters_apply(tmp_path) -> None:
    with CaptureHandler(f"sqlite:///{tmp_path / 'one.db'}") as h:
        graph = support_graph()
        for _ in range(3):
            graph.invoke({"text": "refund please"}, config={"callbacks": [h]})
        assert h.flush()
        [route_point] = [p for p in h.store.decision_points() if p.kind == "route"]
        assert route_point.options == {"billing": 3} and not route_point.learnable
        assert h.store.decision_points(graph_name="another graph") == []


def _served(iid: str, test_id: str, group: str, t: float) -> dict:
    """A decision a LearnedRouter served inside an A/B test."""
    return {
        "decision_id": f"{iid}:route",
        "interaction_id": iid,
        "run_id": None,
        "node": "triage",
        "kind": "route",
        "chosen": "desk",
        "confidence": None,
        "alternatives": None,
        "features": None,
        "statistics": orjson.dumps({"ab_test": test_id, "ab_group": group}).decode(),
        "timestamp": t,
    }


def test_ab_outcomes_count_outcome_failures_and_judged_answers_only(store: Store) -> None:
    rows = {  # interaction id: (group, its fields, the outcome it must count as; None: in neither group)
        "errored-unrated": ("A", {"error_occurred": 1}, 0.0),
        "failed-node-unrated": ("A", {"metadata": orjson.dumps({"failed_node": "sql"}).decode()}, 0.0),
        "flagged": ("A", {"hallucination_detected": 1, "user_feedback_score": 5.0}, 0.0),
        "corrected-unrated": ("B", {"corrections": orjson.dumps(["it is 42"]).decode()}, 0.0),
        "two-stars": ("B", {"user_feedback_score": 2.0}, 0.0),
        "two-and-a-half": ("B", {"user_feedback_score": 2.5}, 0.0),
        "three-stars": ("B", {"user_feedback_score": 3.0}, 1.0),
        "thumbs-down": ("B", {"thumbs_up_down": "down"}, 0.0),
        "slow-poor-retrieval-rated-well": (
            "B",
            {
                "user_feedback_score": 4.0,
                "latency_ms": 30000.0,
                "retrieval_quality": 0.05,
                "retrieval_failed": 1,
            },
            1.0,
        ),
        "thumbs-up": ("A", {"thumbs_up_down": "up", "error_occurred": 0}, 1.0),
        "unjudged-slow": ("A", {"latency_ms": 30000.0, "error_occurred": 0, "retrieval_quality": 0.05}, None),
    }
    interactions, decisions = [], []
    for n, (iid, (group, fields, _)) in enumerate(rows.items()):
        interactions.append(
            {
                "interaction_id": iid,
                "timestamp": 1000.0 + n,
                "session_id": "s",
                "user_query": "q",
                "response": "r",
            }
            | fields
        )
        decisions.append(_served(iid, "t-1", group, 1000.0 + n))
    decisions.append(_served("two-stars", "t-2", "A", 2000.0) | {"decision_id": "other-test"})
    store.write(Batch({"interactions": interactions, "decisions": decisions}))
    want: dict[str, list[float]] = {"A": [], "B": []}
    for group, _, value in rows.values():
        if value is not None:
            want[group].append(value)
    assert (
        store.ab.outcomes("t-1") == want == {"A": [0.0, 0.0, 0.0, 1.0], "B": [0.0, 0.0, 0.0, 1.0, 0.0, 1.0]}
    )
    assert store.ab.outcomes("t-2") == {"A": [0.0], "B": []}
    # A score is low below the threshold, as in the failure rate and the failure analysis.
    assert store.ab.outcomes("t-1", low_rating_threshold=3.5)["B"] == [0.0, 0.0, 0.0, 0.0, 0.0, 1.0]
    assert store.ab.outcomes("t-1", low_rating_threshold=2.0)["B"] == [0.0, 1.0, 1.0, 1.0, 0.0, 1.0]
