"""prepare_training_data: sanitized, filtered, deduplicated labels split so that no session is on both sides."""

from __future__ import annotations

import pytest

from cl_plugin.learning.labels import RoutingLabel
from cl_plugin.learning.training_data import prepare_training_data
from cl_plugin.records import ProductionInteraction


def row(iid: str, query: str, agent: str, session: str, **extra: object) -> dict:
    return {
        "interaction_id": iid,
        "timestamp": 1_700_000_000.0 + len(iid),
        "session_id": session,
        "user_query": query,
        "metadata": {"best_agent": agent},
        **extra,
    }


def test_no_session_has_labels_on_both_sides_of_the_split() -> None:
    data = [row(f"i{i}", f"question number {i}", "HRM" if i % 2 else "TRM", f"s{i % 37}") for i in range(500)]
    prepared = prepare_training_data(data, validation_split=0.25, seed=3)
    sessions = {r["interaction_id"]: r["session_id"] for r in data}
    train = {sessions[label.interaction_id] for label in prepared.train}
    held = {sessions[label.interaction_id] for label in prepared.validation}
    assert train and held and not train & held
    assert prepared.report["validation_sessions"] == len(held) == pytest.approx(37 * 0.25, abs=1)
    assert len(prepared.train) + len(prepared.validation) == 500
    assert prepared.window == (1_700_000_002.0, 1_700_000_004.0)


def test_the_same_seed_gives_the_same_split_and_another_seed_another() -> None:
    data = [row(f"i{i}", f"question number {i}", "HRM", f"s{i % 40}") for i in range(200)]
    ids = lambda seed: [x.interaction_id for x in prepare_training_data(data, seed=seed).validation]  # noqa: E731
    assert ids(1) == ids(1) != ids(2)


def test_duplicates_merge_and_the_stronger_evidence_wins_a_conflict() -> None:
    data = [
        row("a", "Order jobs B and C", "HRM", "s1"),
        row("b", "order  jobs b and c", "HRM", "s2"),  # same text after case and spacing
        row("c", "Square root of 5", "HRM", "s3"),
        {
            "interaction_id": "c",
            "status": "labeled",
            "label": {"agent": "TRM"},
        },  # an annotation beats metadata
        row("d", "square root of 5", "MCTS", "s4"),
        row("e", "tie one", "HRM", "s5"),
        row("f", "Tie one", "TRM", "s6"),
    ]
    prepared = prepare_training_data(data)
    labels = {label.query.lower(): label.agent for label in prepared.train + prepared.validation}
    assert labels == {"order jobs b and c": "HRM", "square root of 5": "TRM"}
    assert prepared.report["duplicates_merged"] == 2
    assert prepared.report["conflicts_dropped"] == 2


def test_every_input_shape_is_accepted_and_bad_items_are_counted_by_reason() -> None:
    record = ProductionInteraction(
        interaction_id="rec",
        timestamp=1.0,
        session_id="s",
        user_query="plan the rollout",
        response="ok",
        metadata={"best_agent": "HRM"},
    )
    data = [
        record,
        row("annotated", "refine the estimate", "HRM", "s2", label={"agent": "TRM"}),
        {"interaction_id": "top", "session_id": "s3", "user_query": "search subsets", "best_agent": "MCTS"},
        RoutingLabel("ready", "a ready label", "TRM", 0.9, "annotation"),
        RoutingLabel("alien", "a label for nobody", "GPT", 0.9, "annotation"),
        {"interaction_id": "long", "user_query": "x" * 5000},
        {"user_query": "no id"},
        "not a row",
    ]
    assert prepare_training_data(data).report["labels"] == 5  # every agent the data names, GPT included
    prepared = prepare_training_data(data, agents=("HRM", "TRM", "MCTS"))
    agents = {label.interaction_id: label.agent for label in prepared.train + prepared.validation}
    assert agents == {"rec": "HRM", "annotated": "TRM", "top": "MCTS", "ready": "TRM"}
    assert prepared.report["rejected"] == {
        "label_agent_unknown": 1,
        "missing_interaction_id": 1,
        "query_too_long": 1,
        "unsupported_item": 1,
    }
    assert prepared.report["received"] == 8


def test_pii_is_redacted_from_queries_and_corrections_before_anything_else() -> None:
    data = [
        row("p", "order jobs for jane@example.com", "HRM", "s1", corrections=["Answer: call 415-555-0132"]),
        RoutingLabel("q", "refine for bob@example.org", "TRM", 1.0, "annotation"),
    ]
    prepared = prepare_training_data(data)
    texts = [label.query for label in prepared.train + prepared.validation]
    texts += [c.answer for c in prepared.corrections]
    assert texts and not any("example" in t or "555" in t for t in texts)


@pytest.mark.parametrize(
    ("kwargs", "field"), [({"validation_split": 1.0}, "validation_split"), ({}, "new_data")]
)
def test_bad_arguments_name_the_field(kwargs: dict, field: str) -> None:
    data = "a string" if field == "new_data" else []
    with pytest.raises(ValueError, match=field):
        prepare_training_data(data, **kwargs)


AGENTS = ("HRM", "TRM", "MCTS")


def bad(iid: str, query: str, chosen: str, session: str, **extra: object) -> dict:
    return {
        "interaction_id": iid,
        "timestamp": 1_700_000_000.0,
        "session_id": session,
        "user_query": query,
        "agent_selected": chosen,
        "thumbs_up_down": "down",
        **extra,
    }


def test_complement_labels_train_only_and_are_never_merged_away() -> None:
    data = [row(f"m{i}", f"plan number {i} for the week", AGENTS[i % 3], f"s{i % 30}") for i in range(120)]
    data += [bad(f"b{i}", f"why did my order {i} fail", "HRM", f"s{i % 30}") for i in range(60)]
    # the same text twice, and the text of a metadata label: each interaction keeps its own complements
    data += [bad("twin-1", "nothing works", "TRM", "solo-1"), bad("twin-2", "nothing works", "TRM", "solo-2")]
    data += [bad("echo", "plan number 1 for the week", "MCTS", "solo-3")]
    prepared = prepare_training_data(data, agents=AGENTS, complement=True, validation_split=0.3, seed=1)
    sessions = {r["interaction_id"]: r["session_id"] for r in data}
    held = {sessions[label.interaction_id] for label in prepared.validation}
    assert held and all(label.source != "complement" for label in prepared.validation)
    complements: dict[str, list[tuple[str, float]]] = {}
    for label in prepared.train:
        if label.source == "complement":
            complements.setdefault(label.interaction_id, []).append((label.agent, label.weight))
    bad_ids = [r["interaction_id"] for r in data if r.get("thumbs_up_down") == "down"]
    expected = {iid for iid in bad_ids if sessions[iid] not in held}
    assert set(complements) == expected and len(expected) < len(bad_ids)  # held-out sessions lose theirs
    for iid in expected:
        chosen = next(r["agent_selected"] for r in data if r["interaction_id"] == iid)
        assert complements[iid] == [(a, 0.25) for a in AGENTS if a != chosen]
    assert {"twin-1", "twin-2", "echo"} <= set(complements)
    assert "m1" in {label.interaction_id for label in prepared.train + prepared.validation}
    assert prepared.report["labels_by_source"]["complement"] == 2 * len(bad_ids)
    assert prepared.report["labels"] == 120  # what validation may grade: the labels with an answer


def test_the_recorded_choice_and_its_propensity_are_kept_per_interaction() -> None:
    data = [
        row("served", "refine the estimate", "HRM", "s1", agent_selected="TRM", propensity=0.2),
        row("ruled", "plan the rollout", "HRM", "s2", agent_selected="HRM"),
        row("zero", "search subsets", "MCTS", "s3", agent_selected="MCTS", propensity=0),
        row("text", "order the jobs", "HRM", "s4", agent_selected="HRM", propensity="0.5"),
        row("none", "sort the tasks", "HRM", "s5", propensity=0.7),
        {"interaction_id": "empty", "user_query": " ", "agent_selected": "HRM", "propensity": 0.3},
    ]
    prepared = prepare_training_data(data)
    assert prepared.recorded == {"served": "TRM", "ruled": "HRM", "zero": "MCTS", "text": "HRM"}
    assert prepared.propensity == {"served": 0.2, "none": 0.7}
