"""Decision points as units of learning: their names, the options a graph declares, and their labeled rows."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any, Literal, TypedDict

import pytest
from langgraph.graph import END, START, StateGraph

from cl_plugin import CaptureHandler, record_decision
from cl_plugin.learning.points import declared_options, point_rows
from cl_plugin.records import PointRef
from cl_plugin.store.points import DecisionPoint
from tests.user_graph import serve

# -- naming a point -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("support/triage/route", PointRef("support", "triage", "route")),
        ("support/triage", PointRef("support", "triage", "route")),
        ("support/act/tool", PointRef("support", "act", "tool")),
        ("/triage", PointRef(None, "triage", "route")),
        (("support", "triage"), PointRef("support", "triage", "route")),
        (("support", "triage", "priority"), PointRef("support", "triage", "priority")),
        (
            DecisionPoint("support", "triage", "tool", decisions=3, interactions=2),
            PointRef("support", "triage", "tool"),
        ),
    ],
)
def test_a_point_parses_from_each_of_its_forms(spec: Any, expected: PointRef) -> None:
    assert PointRef.parse(spec) == expected
    assert PointRef.parse(expected) is expected
    assert PointRef.parse(str(expected)) == expected  # its text form parses back to it


@pytest.mark.parametrize(
    "spec", ["triage", "a/b/c/d", "support//route", ("support",), ("support", ""), 42, None]
)
def test_a_malformed_point_is_refused_with_the_forms_it_takes(spec: Any) -> None:
    with pytest.raises(ValueError) as raised:
        PointRef.parse(spec)
    message = str(raised.value)
    assert "'graph/node/kind' or 'graph/node'" in message and "'support/triage/route'" in message
    assert repr(spec) in message and "cl-plugin stats" in message


def test_a_points_registry_names_are_safe_and_shared_by_router_and_replay() -> None:
    assert PointRef.parse("support/triage").model_names() == {
        "router": "support.triage.route",
        "replay": "support.triage.route-replay",
    }
    assert PointRef("My Graph", "triage node/2", "route").model_name == "My-Graph.triage-node-2.route"
    assert PointRef(None, "triage").model_name == "triage.route"
    assert len(PointRef("g" * 200, "triage").model_name) == 120


# -- declared options ---------------------------------------------------------------------------------


class Ticket(TypedDict, total=False):
    text: str
    route: str
    answer: str
    answered_by: list[str]


def billing(state: Ticket) -> Ticket:
    """Invoices, refunds
    and charges."""
    return {"answer": "billing", "answered_by": ["billing"]}


def tech(state: Ticket) -> Ticket:
    """Crashes and errors."""
    return {"answer": "tech", "answered_by": ["tech"]}


def account(state: Ticket) -> Ticket:
    return {"answer": "account", "answered_by": ["account"]}


def pick(state: Ticket) -> Literal["billing", "tech"]:
    return "billing" if "invoice" in state["text"] else "tech"


def anywhere(state: Ticket):  # no return annotation: the edge may go anywhere
    return "account"


def desk(path: Any, path_map: Any = None) -> StateGraph:
    g = StateGraph(Ticket)
    g.add_node("triage", lambda s: {})
    for fn in (billing, tech, account):
        g.add_node(fn.__name__, fn)
        g.add_edge(fn.__name__, END)
    g.add_edge(START, "triage")
    g.add_conditional_edges("triage", path, path_map)
    return g


def test_a_path_map_declares_the_options_with_the_docstrings_of_their_nodes() -> None:
    as_list = declared_options(desk(pick, ["billing", "tech", "account"]).compile())
    assert as_list == {
        ("triage", "route"): {
            "options": ["billing", "tech", "account"],
            "docs": {"billing": "Invoices, refunds and charges.", "tech": "Crashes and errors."},
        }
    }
    as_dict = declared_options(desk(pick, {"money": "billing", "done": END}))  # uncompiled works too
    assert as_dict == {
        ("triage", "route"): {
            "options": ["money", "done"],
            "docs": {"money": "Invoices, refunds and charges."},
        }
    }


def test_a_literal_return_annotation_declares_the_options() -> None:
    assert declared_options(desk(pick).compile()) == {
        ("triage", "route"): {
            "options": ["billing", "tech"],
            "docs": {"billing": "Invoices, refunds and charges.", "tech": "Crashes and errors."},
        }
    }


def test_an_edge_that_may_go_anywhere_declares_nothing() -> None:
    g = StateGraph(Ticket)
    g.add_node("triage", lambda s: {})
    g.add_node("account", account)
    g.add_edge(START, "triage")
    g.add_conditional_edges("triage", anywhere)
    assert declared_options(g.compile()) == {}


# -- a point's rows -----------------------------------------------------------------------------------


def triage(state: Ticket) -> Ticket:
    """Routes invoices to billing, the rest to tech; requests marked 'explore' were explored."""
    choice = "billing" if "invoice" in state["text"] else "tech"
    if "explore" in state["text"]:
        record_decision("route", choice, confidence=0.3, statistics={"propensity": 0.25, "explored": True})
    elif "odd" in state["text"]:
        record_decision("route", choice, statistics={"propensity": 0})
    return {"route": choice}


def reviewed_desk() -> Any:
    """``triage`` routes to ``billing`` or ``tech``; both end in ``review``, whose edge makes the last route."""
    g = StateGraph(Ticket)
    g.add_node("triage", triage)
    g.add_node("review", lambda s: {})
    for fn in (billing, tech):
        g.add_node(fn.__name__, fn)
        g.add_edge(fn.__name__, "review")
    g.add_edge(START, "triage")
    g.add_conditional_edges("triage", lambda s: s["route"], ["billing", "tech"])
    g.add_conditional_edges("review", lambda s: "ok", {"ok": END})
    return g.compile(name="desk")


def test_point_rows_credit_the_option_chosen_at_the_point_with_its_propensity(tmp_path) -> None:
    with CaptureHandler(f"sqlite:///{tmp_path / 'points.db'}") as h:
        graph, ids = reviewed_desk(), {}
        for text in ("my invoice is late", "explore: the app crashed", "odd invoice"):
            run_id = uuid.uuid4()
            graph.invoke({"text": text}, config={"callbacks": [h], "run_id": run_id})
            ids[text] = str(run_id)
        other = serve(h, ("where is my invoice?",))  # another graph: no decision at the point
        assert h.flush()
        rows = h.store.query_interactions()
        assert {r["agent_selected"] for r in rows if r["graph_name"] == "desk"} == {"ok"}  # the last route
        got = point_rows(h.store, PointRef("desk", "triage"), rows)
    by_id = {r["interaction_id"]: r for r in got}
    assert set(by_id) == set(ids.values()) and other[0] not in by_id
    assert [r["interaction_id"] for r in got] == [
        r["interaction_id"] for r in rows if r["interaction_id"] in by_id
    ]
    plain = by_id[ids["my invoice is late"]]
    assert (plain["agent_selected"], plain["propensity"], plain["point_decision"]) == (
        "billing",
        1.0,
        {"via": "edge"},
    )
    assert "answered_by" not in plain["metadata"]  # it names who answered, not the option at the point
    explored = by_id[ids["explore: the app crashed"]]
    assert (explored["agent_selected"], explored["agent_confidence"], explored["propensity"]) == (
        "tech",
        0.3,
        0.25,
    )
    assert explored["point_decision"] == {"propensity": 0.25, "explored": True}
    assert by_id[ids["odd invoice"]]["propensity"] == 1.0  # a zero propensity is no weight to divide by
    assert point_rows(h.store, PointRef("desk", "review"), rows)[0]["agent_selected"] == "ok"
    assert point_rows(h.store, PointRef("desk", "triage"), []) == []


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
