"""A small graph of a user's own for the web app's tests: a bookshop that triages a question to the novels
or the comics desk; and the helpers that capture its traffic and pause a maintenance run for labels."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypedDict

from cl_plugin.graphs.maintenance import checkpointer, run_maintenance
from langgraph.graph import END, START, StateGraph

from cl_plugin import CaptureHandler
from cl_plugin.store import Store

HOSTILE = "<img src=x onerror=alert(1)>"
EMAIL = "ana.lopez@example.com"
QUESTIONS = (
    "any new graphic novel by Moebius?",
    "a novel like Middlemarch, please",
    "which comics have a cat detective?",
    f"gift ideas for my niece {HOSTILE}",
    f"send the order to {EMAIL}",
    "do you stock the Asterix comics?",
)


class Ask(TypedDict, total=False):
    question: str
    desk: str
    answer: str


def triage(state: Ask) -> Ask:
    return {"desk": "comics" if "comic" in state["question"] else "novels"}


def pick(state: Ask) -> str:
    return state["desk"]


def novels(state: Ask) -> Ask:
    return {"answer": f"novels desk: we have books for '{state['question']}'"}


def comics(state: Ask) -> Ask:
    if "Asterix" in state["question"]:
        raise RuntimeError("the comics catalogue timed out")
    return {"answer": "comics desk: shelf C"}


def bookshop() -> Any:
    """triage -> (novels | comics), compiled as the graph ``bookshop``."""
    g = StateGraph(Ask)
    for name, fn in (("triage", triage), ("novels", novels), ("comics", comics)):
        g.add_node(name, fn)
    g.add_edge(START, "triage")
    g.add_conditional_edges("triage", pick, {"novels": "novels", "comics": "comics"})
    g.add_edge("novels", END)
    g.add_edge("comics", END)
    return g.compile(name="bookshop")


def reader(i: int) -> str:
    """The session of the i-th question: a reader of their own."""
    return f"reader-{i}"


def visit(i: int) -> str:
    """The session of the i-th question: two visits of a reader known by an e-mail address (an id holding
    PII, stored as its keyed hash)."""
    return f"{EMAIL}/visit-{i % 2}"


def capture(
    url: str,
    questions: tuple[str, ...] = QUESTIONS,
    *,
    rate: bool = True,
    session: Callable[[int], str] = reader,
) -> list[str]:
    """Ask each question through the bookshop with capture on, the i-th in session ``session(i)``; rate
    every other answer. Returns the ids."""
    graph, ids = bookshop(), []
    with CaptureHandler(url) as handler:
        for i, q in enumerate(questions):
            run_id = uuid.uuid4()
            with contextlib.suppress(RuntimeError):
                graph.invoke(
                    {"question": q},
                    config={"callbacks": [handler], "run_id": run_id, "metadata": {"session_id": session(i)}},
                )
            ids.append(str(run_id))
            if rate and i % 2 == 0:
                handler.record_feedback(run_id, score=1.0 + i % 5, comment=f"thanks {EMAIL}")
    return ids


def maintenance_config(tmp_path: Path, budget: int = 2) -> dict[str, Any]:
    return {
        "maintenance": {
            "annotation": "human",
            "min_interactions": 1,
            "annotation_budget": budget,
            "model_dir": str(tmp_path / "models"),
        },
        "active_learning": {"budget_per_cycle": budget},
        "retraining": {"min_new_samples": 1},
    }


def paused_run(store: Store, checkpoints: str, config: dict[str, Any]) -> dict[str, Any]:
    """A maintenance run paused for labels, its checkpoints in the SQLite file ``checkpoints``."""
    with checkpointer(checkpoints) as saver:
        state = run_maintenance(store, config=config, checkpointer=saver)
    assert "__interrupt__" in state, state
    return state
