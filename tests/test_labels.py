from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from cl_plugin.graphs.tasks import BEST_AGENT, sample_tasks

from cl_plugin.learning.labels import ReplayBuffer, RoutingLabel, routing_context, routing_labels
from cl_plugin.learning.router import MetaRouter
from cl_plugin.records import ProductionInteraction


def interaction(
    iid: str, query: str = "order jobs A and B", agent: str = "HRM", **kw: Any
) -> ProductionInteraction:
    return ProductionInteraction(
        interaction_id=iid,
        timestamp=1.0,
        session_id="s",
        user_query=query,
        response="r",
        agent_selected=agent,
        **kw,
    )


def annotation(iid: str, label: Any, status: str = "labeled") -> dict[str, Any]:
    return {"item_id": f"item-{iid}", "interaction_id": iid, "status": status, "label": label}


def only(labels: list[RoutingLabel]) -> RoutingLabel:
    assert len(labels) == 1
    return labels[0]


def test_a_labeled_annotation_names_the_agent_with_full_weight() -> None:
    for key in ("agent", "best_agent"):
        label = only(routing_labels([interaction("a")], annotations=[annotation("a", {key: "MCTS"})]))
        assert (label.interaction_id, label.agent, label.weight, label.source) == (
            "a",
            "MCTS",
            1.0,
            "annotation",
        )
        assert label.query == "order jobs A and B"


def test_metadata_names_the_agent_with_full_weight() -> None:
    for key in ("best_agent", "correct_agent", "expected_agent"):
        label = only(routing_labels([interaction("m", metadata={key: "TRM"})]))
        assert (label.agent, label.weight, label.source) == ("TRM", 1.0, "metadata")


def test_metadata_as_a_json_string_row_is_read() -> None:
    row = {
        "interaction_id": "m",
        "user_query": "q",
        "agent_selected": "HRM",
        "metadata": '{"best_agent": "TRM"}',
    }
    assert only(routing_labels([row])).agent == "TRM"


def test_a_good_rating_confirms_the_routed_agent() -> None:
    by_score = only(routing_labels([interaction("g", agent="TRM", user_feedback_score=4.0)]))
    by_thumbs = only(routing_labels([interaction("g", agent="TRM", thumbs_up_down="up")]))
    for label in (by_score, by_thumbs):
        assert (label.agent, label.weight, label.source) == ("TRM", 0.7, "feedback")


def test_annotation_beats_metadata_beats_feedback() -> None:
    item = interaction("x", agent="HRM", user_feedback_score=5.0, metadata={"best_agent": "TRM"})
    assert only(routing_labels([item])).source == "metadata"
    label = only(routing_labels([item], annotations=[annotation("x", {"agent": "MCTS"})]))
    assert (label.agent, label.source) == ("MCTS", "annotation")


def test_pending_unknown_and_malformed_annotations_are_ignored() -> None:
    item = interaction("x", metadata={"best_agent": "TRM"})
    annotations = [
        annotation("x", {"agent": "MCTS"}, status="pending"),
        annotation("x", {"agent": "GPT"}),
        annotation("x", "MCTS"),
        annotation("x", None),
    ]
    agents = ("HRM", "TRM", "MCTS")
    assert only(routing_labels([item], annotations=annotations, agents=agents)).source == "metadata"


def test_a_bad_rating_relabels_to_the_agent_rated_well_on_a_similar_query() -> None:
    items = [
        interaction("bad", "sort the shipping jobs by deadline order", agent="TRM", user_feedback_score=1.0),
        interaction(
            "good", "sort the shipping jobs by deadline order please", agent="HRM", thumbs_up_down="up"
        ),
        interaction("far", "what port does the billing service use", agent="MCTS", user_feedback_score=5.0),
    ]
    labels = {label.interaction_id: label for label in routing_labels(items)}
    assert (labels["bad"].agent, labels["bad"].weight, labels["bad"].source) == ("HRM", 0.5, "feedback")
    assert list(labels) == ["bad", "good", "far"]


def test_a_bad_rating_without_a_well_rated_alternative_gives_no_label() -> None:
    bad = interaction("bad", "sort the shipping jobs by deadline order", agent="TRM", thumbs_up_down="down")
    same_agent = interaction(
        "same", "sort the shipping jobs by deadline order now", agent="TRM", user_feedback_score=5
    )
    unrelated = interaction(
        "far", "what port does the billing service use", agent="HRM", user_feedback_score=5
    )
    assert [label.interaction_id for label in routing_labels([bad, same_agent, unrelated])] == ["same", "far"]
    assert routing_labels([bad]) == []


def test_neighbours_that_disagree_give_no_label() -> None:
    items = [
        interaction("bad", agent="TRM", user_feedback_score=1.0),
        interaction("h", agent="HRM", user_feedback_score=5.0),
        interaction("m", agent="MCTS", user_feedback_score=5.0),
    ]
    assert "bad" not in {
        label.interaction_id for label in routing_labels(items, neighbours={"bad": ["h", "m"]})
    }
    only_h = routing_labels(items, neighbours={"bad": ["h", "missing"]})
    assert {label.interaction_id: label.agent for label in only_h}["bad"] == "HRM"


def test_middling_or_conflicting_ratings_give_no_label() -> None:
    items = [
        interaction("mid", user_feedback_score=3.0),
        interaction("conflict", user_feedback_score=5.0, thumbs_up_down="down"),
        interaction("corrected-but-happy", user_feedback_score=5.0, corrections=["the answer is 7"]),
    ]
    assert routing_labels(items) == []


def test_a_correction_counts_as_a_bad_rating() -> None:
    corrected = interaction("c", agent="TRM", corrections=["the answer is 7"])
    good_hrm = interaction("h", agent="HRM", user_feedback_score=5.0)
    assert routing_labels([corrected]) == []  # wrong, but nobody showed who would be right
    relabeled = {
        label.interaction_id: (label.agent, label.source)
        for label in routing_labels([corrected, good_hrm], neighbours={"c": ["h"]})
    }
    assert relabeled == {"c": ("HRM", "feedback"), "h": ("HRM", "feedback")}


def test_missing_fields_are_skipped() -> None:
    rows: list[Any] = [
        {"interaction_id": "no-query", "agent_selected": "HRM", "user_feedback_score": 5.0},
        {"user_query": "no id", "agent_selected": "HRM", "user_feedback_score": 5.0},
        {"interaction_id": "no-agent", "user_query": "q", "user_feedback_score": 5.0},
        {
            "interaction_id": "unknown-agent",
            "user_query": "q",
            "agent_selected": "GPT",
            "thumbs_up_down": "up",
        },
        {"interaction_id": "no-rating", "user_query": "q", "agent_selected": "HRM", "metadata": None},
        {"interaction_id": "ok", "user_query": "q", "agent_selected": "HRM", "user_feedback_score": 5.0},
    ]
    assert [label.interaction_id for label in routing_labels(rows, agents=("HRM", "TRM", "MCTS"))] == ["ok"]
    assert [label.interaction_id for label in routing_labels(rows)] == ["unknown-agent", "ok"]


def test_any_agent_the_data_names_is_a_label_unless_agents_are_given() -> None:
    rows = [
        {"interaction_id": "a", "user_query": "refund", "metadata": {"correct_agent": "billing_desk"}},
        {
            "interaction_id": "b",
            "user_query": "crash",
            "agent_selected": "tech_desk",
            "user_feedback_score": 5.0,
        },
        {"interaction_id": "c", "user_query": "x", "metadata": {"correct_agent": {"not": "a name"}}},
    ]
    assert [(lb.interaction_id, lb.agent) for lb in routing_labels(rows)] == [
        ("a", "billing_desk"),
        ("b", "tech_desk"),
    ]
    assert [lb.agent for lb in routing_labels(rows, agents=["tech_desk", "other"])] == ["tech_desk"]


def test_invalid_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="agents"):
        routing_labels([], agents=())
    with pytest.raises(ValueError, match="max_score"):
        routing_labels([], min_score=3.0, max_score=3.0)
    with pytest.raises(ValueError, match="capacity"):
        ReplayBuffer(0)
    with pytest.raises(ValueError, match="ratio"):
        ReplayBuffer().mix([], ratio=-1)


def labels_for(agent_counts: dict[str, int], prefix: str = "") -> list[RoutingLabel]:
    return [
        RoutingLabel(f"{prefix}{agent}-{i}", f"query {i}", agent, 1.0, "metadata")
        for agent, n in agent_counts.items()
        for i in range(n)
    ]


def test_the_buffer_keeps_every_class_within_its_share_of_capacity() -> None:
    buffer = ReplayBuffer(capacity=30, seed=1).add(labels_for({"HRM": 500}))
    assert buffer.counts() == {"HRM": 30}
    buffer.add(labels_for({"TRM": 4, "MCTS": 200}))
    assert buffer.counts() == {"HRM": 10, "TRM": 4, "MCTS": 10}
    assert len(buffer) <= 30


def test_the_reservoir_keeps_old_labels_as_well_as_recent_ones() -> None:
    buffer = ReplayBuffer(capacity=100, seed=2).add(labels_for({"HRM": 1000}))
    kept = [int(label.interaction_id.split("-")[1]) for label in buffer.sample()]
    assert sum(i < 500 for i in kept) > 30 and sum(i >= 500 for i in kept) > 30


def test_sampling_is_reproducible_with_the_seed_and_balanced() -> None:
    def run(seed: int) -> list[str]:
        buffer = ReplayBuffer(capacity=60, seed=seed).add(labels_for({"HRM": 300, "TRM": 100, "MCTS": 50}))
        return [label.interaction_id for label in buffer.sample(30)]

    assert run(3) == run(3)
    assert run(3) != run(4)
    assert Counter(i.split("-")[0] for i in run(3)) == {"HRM": 10, "TRM": 10, "MCTS": 10}


def test_mix_adds_the_replay_ratio_capped_by_what_is_stored() -> None:
    buffer = ReplayBuffer(capacity=30).add(labels_for({"HRM": 10, "TRM": 10}, prefix="old-"))
    new = labels_for({"MCTS": 20}, prefix="new-")
    mixed = buffer.mix(new, ratio=0.5)
    assert mixed[:20] == new and len(mixed) == 30
    assert all(label.interaction_id.startswith("old-") for label in mixed[20:])
    assert len(buffer.mix(new, ratio=5.0)) == 40
    assert buffer.mix(new, ratio=0.0) == new
    assert len(buffer) == 20


def task_labels(n: int, seed: int, families: list[str]) -> list[RoutingLabel]:
    tasks = sample_tasks(n, seed=seed, mix=dict.fromkeys(families, 1.0))
    return [
        RoutingLabel(f"{seed}-{i}", t.query, BEST_AGENT[t.family], 1.0, "metadata")
        for i, t in enumerate(tasks)
    ]


def test_training_on_a_replay_mix_keeps_accuracy_on_old_agents() -> None:
    old = task_labels(120, seed=11, families=["planning", "refinement"])
    new = task_labels(120, seed=12, families=["search", "factual"])
    held_out = task_labels(60, seed=13, families=["refinement"])
    buffer = ReplayBuffer(capacity=200, seed=0).add(old)

    def accuracy(train: list[RoutingLabel]) -> float:
        router = MetaRouter().fit([t.query for t in train], [t.agent for t in train])
        return router.score([t.query for t in held_out], [t.agent for t in held_out])

    assert accuracy(buffer.mix(new, ratio=0.5)) > 0.9
    assert accuracy(new) == 0.0


def test_labels_carry_the_routing_context_known_before_routing_and_nothing_after() -> None:
    rows = [
        {
            "interaction_id": "a",
            "user_query": "order jobs B and C",
            "agent_selected": "HRM",
            "user_feedback_score": 5.0,
            "retrieval_quality": 0.62,
            "retrieval_failed": False,
            "latency_ms": 9000.0,
            "response": "B, C",
        },
        {
            "interaction_id": "b",
            "user_query": "square root of 2",
            "agent_selected": "TRM",
            "user_feedback_score": 5.0,
            "retrieval_failed": True,
        },
        {
            "interaction_id": "c",
            "user_query": "which port",
            "agent_selected": "HRM",
            "user_feedback_score": 5.0,
        },
    ]
    labels = {label.interaction_id: label for label in routing_labels(rows)}
    assert labels["a"].context == {"retrieval_quality": 0.62, "retrieved": True}
    assert labels["b"].context == {"retrieval_quality": None, "retrieved": False}
    assert labels["c"].context == {"retrieval_quality": None, "retrieved": False}


def test_a_replay_buffer_survives_a_round_trip_through_plain_data() -> None:
    import orjson

    labels = [
        RoutingLabel(
            str(i),
            f"query {i}",
            ("HRM", "TRM", "MCTS")[i % 3],
            0.5 + (i % 2) / 2,
            "feedback",
            {"retrieval_quality": 0.1 * (i % 10), "retrieved": True},
        )
        for i in range(90)
    ]
    buffer = ReplayBuffer(capacity=30, seed=4).add(labels)
    state = orjson.loads(orjson.dumps(buffer.state()))  # what a JSON file or the registry would keep
    again = ReplayBuffer.from_state(state)
    assert again.counts() == buffer.counts() == {"HRM": 10, "TRM": 10, "MCTS": 10}
    assert sorted(again.sample(), key=lambda x: x.interaction_id) == sorted(
        buffer.sample(), key=lambda x: x.interaction_id
    )
    assert {label.context["retrieved"] for label in again.sample()} == {True}
    # the seen counts travel too: a later add replaces old labels at the reservoir's rate, not at once
    again.add([RoutingLabel("new", "new query", "HRM", 1.0, "annotation")])
    assert again.counts()["HRM"] == 10
    with pytest.raises(ValueError, match=r"ReplayBuffer\.state"):
        ReplayBuffer.from_state({"capacity": 3})


def test_a_good_rating_credits_the_agent_that_answered_not_the_one_first_routed() -> None:
    def row(iid: str, routed: str, answered: list[str] | None, score: float) -> dict:
        metadata = {} if answered is None else {"answered_by": answered}
        return {
            "interaction_id": iid,
            "user_query": f"square root of {iid}",
            "agent_selected": routed,
            "user_feedback_score": score,
            "metadata": metadata,
        }

    rows = [
        row("1", "HRM", ["TRM"], 5.0),  # escalated: TRM's answer was returned and rated well
        row("2", "parallel", ["TRM"], 5.0),  # parallel route: only TRM's answer was returned
        row("3", "TRM", ["TRM", "MCTS"], 5.0),  # the routed agent was among those agreeing
        row("4", "HRM", ["TRM", "MCTS"], 5.0),  # two others agreed: no evidence for either one
        row("5", "HRM", None, 5.0),  # no record of who answered: the routed agent
    ]
    labels = {label.interaction_id: label.agent for label in routing_labels(rows, neighbours={})}
    assert labels == {"1": "TRM", "2": "TRM", "3": "TRM", "5": "HRM"}


# -- decision points: complement labels and inverse-propensity weights --------------------------------------

OPTIONS = ("billing", "tech", "account")


def rated(iid: str, query: str, chosen: str, **kw: Any) -> dict[str, Any]:
    return {"interaction_id": iid, "user_query": query, "agent_selected": chosen, **kw}


def test_a_bad_rating_nobody_relabels_says_not_that_option_to_each_other_option() -> None:
    bad = rated("bad", "the app crashes at start", "tech", thumbs_up_down="down", retrieval_quality=0.4)
    unrelated = rated("far", "where is my invoice", "billing", user_feedback_score=5.0)
    plain = routing_labels([bad, unrelated], agents=OPTIONS)
    assert [label.interaction_id for label in plain] == ["far"]  # without complement: no evidence
    labels = [
        label
        for label in routing_labels([bad, unrelated], agents=OPTIONS, complement=True)
        if label.interaction_id == "bad"
    ]
    assert [(label.agent, label.source) for label in labels] == [
        ("billing", "complement"),
        ("account", "complement"),
    ]
    assert all(label.weight == pytest.approx(0.5 / (len(OPTIONS) - 1)) for label in labels)
    assert all(label.query == "the app crashes at start" for label in labels)
    assert all(label.context == routing_context(bad) and label.context for label in labels)
    two = routing_labels([bad], agents=("tech", "billing"), complement=True)
    assert [(label.agent, label.weight) for label in two] == [("billing", 0.5)]


def test_a_bad_rating_with_a_well_rated_neighbour_is_relabeled_not_complemented() -> None:
    bad = rated("bad", "the app crashes at start", "tech", thumbs_up_down="down")
    good = rated("good", "the app crashes at start again", "account", thumbs_up_down="up")
    labels = routing_labels([bad, good], agents=OPTIONS, complement=True, neighbours={"bad": ["good"]})
    assert [(label.interaction_id, label.agent, label.source) for label in labels] == [
        ("bad", "account", "feedback"),
        ("good", "account", "feedback"),
    ]


def test_complement_labels_need_the_options_they_spread_over() -> None:
    bad = rated("bad", "the app crashes at start", "tech", thumbs_up_down="down")
    for agents in (None, ["tech"], ["tech", "tech"]):
        with pytest.raises(ValueError, match=r"complement=True needs agents"):
            routing_labels([bad], agents=agents, complement=True)
    with pytest.raises(ValueError, match="max_ips_weight"):
        routing_labels([bad], agents=OPTIONS, max_ips_weight=0.5)


def test_a_rating_of_an_option_chosen_rarely_weighs_its_inverse_propensity_up_to_the_cap() -> None:
    def good(propensity: Any) -> dict[str, Any]:
        return rated("g", "where is my invoice", "billing", user_feedback_score=5.0, propensity=propensity)

    def weight(propensity: Any, **kw: Any) -> float:
        return only(routing_labels([good(propensity)], agents=OPTIONS, **kw)).weight

    assert weight(0.05) == pytest.approx(0.7 * min(20, 10.0))  # the default cap
    assert weight(0.05, max_ips_weight=50.0) == pytest.approx(0.7 * 20)
    assert weight(0.05, max_ips_weight=4.0) == pytest.approx(0.7 * 4)
    assert weight(0.5) == pytest.approx(1.4)
    for unserved in (None, 0, -1.0, float("nan"), "0.5"):
        assert weight(unserved) == pytest.approx(0.7)  # no usable propensity: not reweighted
    bad = rated("b", "the app crashes at start", "tech", thumbs_up_down="down", propensity=0.1)
    complements = routing_labels([bad], agents=OPTIONS, complement=True)
    assert [label.weight for label in complements] == pytest.approx([0.5 * 10 / 2] * 2)
