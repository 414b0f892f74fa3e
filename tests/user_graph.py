"""Small graphs of a user's own (nothing like the bundled example graphs), and a helper that serves one."""

from __future__ import annotations

import operator
import uuid
from typing import Annotated, Any, TypedDict

from langgraph.graph import END, START, StateGraph

from cl_plugin import record_decision

QUESTIONS = ("where is my invoice?", "how do I reset my password?", "is the invoice in euros?")


class Ticket(TypedDict, total=False):
    question: str
    category: str
    answer: str


def classify(state: Ticket) -> Ticket:
    return {"category": "billing" if "invoice" in state["question"] else "other"}


def reply(state: Ticket) -> Ticket:
    return {"answer": f"[{state['category']}] thanks, we are on it"}


def helpdesk_graph() -> Any:
    """Two nodes, ``classify`` then ``reply``, compiled without a checkpointer."""
    builder = StateGraph(Ticket)
    builder.add_node("classify", classify)
    builder.add_node("reply", reply)
    builder.add_edge(START, "classify")
    builder.add_edge("classify", "reply")
    builder.add_edge("reply", END)
    return builder.compile()


def serve(handler: Any, questions: tuple[str, ...] = QUESTIONS) -> list[str]:
    """Answer each question with ``handler`` attached; returns the run ids (the interactions' ids)."""
    graph, ids = helpdesk_graph(), []
    for q in questions:
        run_id = uuid.uuid4()
        graph.invoke({"question": q}, config={"callbacks": [handler], "run_id": run_id})
        ids.append(str(run_id))
    return ids


class StepState(TypedDict, total=False):
    query: str
    response: str
    fail: bool
    results: Annotated[list, operator.add]


def three_step_graph() -> Any:
    """plan -> act -> answer; ``act`` records a routing decision and raises when the input asks it to."""

    def plan(s: StepState) -> dict:
        return {"results": ["plan"]}

    def act(s: StepState) -> dict:
        record_decision("route", "search", confidence=0.6, alternatives={"search": 0.6, "answer": 0.4})
        if s.get("fail"):
            raise RuntimeError("upstream timed out")
        return {"results": ["act"]}

    def answer(s: StepState) -> dict:
        return {"response": "done"}

    g = StateGraph(StepState)
    for name, fn in (("plan", plan), ("act", act), ("answer", answer)):
        g.add_node(name, fn)
    g.add_edge(START, "plan")
    g.add_edge("plan", "act")
    g.add_edge("act", "answer")
    return g.compile()
