"""Decision points of a user's graph: where it decides, among what, and how much of it is labeled."""

from __future__ import annotations

import uuid
from typing import Any, TypedDict

from langgraph.graph import END, START, StateGraph

from cl_plugin import CaptureHandler, record_decision
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
        assert h.store.enqueue_for_annotation(queued) == 3
        for item in h.store.annotation_queue("pending")[:2]:  # two labeled, one still pending
            h.store.update_annotation(item["item_id"], status="labeled", label={"agent": "desk"})
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
