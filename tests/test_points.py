"""Decision points: reading a point's rows from the store."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import TypedDict

from langgraph.graph import END, START, StateGraph

from cl_plugin import CaptureHandler, record_decision
from cl_plugin.points import PointRef, point_rows


class Ticket(TypedDict, total=False):
    question: str
    answer: str


def test_point_rows_include_the_newest_interaction_of_the_window(tmp_path: Path) -> None:
    def triage(state: Ticket) -> Ticket:
        record_decision("route", "billing", statistics={"propensity": 0.9})
        return {"answer": "billing"}

    builder = StateGraph(Ticket)
    builder.add_node("triage", triage)
    builder.add_edge(START, "triage")
    builder.add_edge("triage", END)
    graph = builder.compile(name="desk")
    handler = CaptureHandler(f"sqlite:///{tmp_path / 'p.db'}")
    for question in ("where is my invoice?", "is the invoice in euros?", "refund please"):
        graph.invoke({"question": question}, config={"callbacks": [handler], "run_id": uuid.uuid4()})
    handler.flush()
    rows = handler.store.query_interactions(order="oldest")
    found = point_rows(handler.store, PointRef.parse("desk/triage/route"), rows)
    assert [r["user_query"] for r in found] == [r["user_query"] for r in rows]
    assert {(r["agent_selected"], r["propensity"]) for r in found} == {("billing", 0.9)}
    handler.close()
