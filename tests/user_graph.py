"""A small graph of a user's own (nothing like the bundled example graphs), and a helper that serves it."""

from __future__ import annotations

import uuid
from typing import Any, TypedDict

from langgraph.graph import END, START, StateGraph

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
