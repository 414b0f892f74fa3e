"""ActiveLearningSelector: each strategy picks what it should on data built to tell them apart."""

from __future__ import annotations

import doctest
import random
from collections.abc import Sequence

import numpy as np
import pytest
from cl_plugin.graphs.failures import planted_failures

import cl_plugin.analysis.selection
from cl_plugin import ActiveLearningSelector, probabilities_from_decisions
from cl_plugin.config import ActiveLearningConfig, ContinualLearningConfig
from cl_plugin.errors import ConfigError, InvalidRecordError
from cl_plugin.records import ActiveLearningCandidate, ProductionInteraction
from cl_plugin.store import Batch, Store

TOPICS = {
    "billing": "refund invoice euro charge card payment credit statement",
    "k8s": "kubernetes pod eviction node memory cluster container restart",
    "sso": "okta login saml single sign identity provider session",
    "pdf": "export report render timeout landscape pages download",
}


def _query(topic: str, rng: random.Random, words: int = 5) -> str:
    return " ".join(rng.sample(TOPICS[topic].split(), words))


def _row(iid: str, query: str, **fields: object) -> dict:
    return {"interaction_id": iid, "user_query": query, **fields}


def _cluster_rows(sizes: dict[str, int], seed: int = 0, **fields: object) -> list[dict]:
    rng = random.Random(seed)
    return [
        _row(f"{topic}-{i}", _query(topic, rng), **fields) for topic, n in sizes.items() for i in range(n)
    ]


def _ids(candidates: Sequence[ActiveLearningCandidate]) -> list[str]:
    return [c.interaction_id for c in candidates]


def _topics(candidates: Sequence[ActiveLearningCandidate]) -> list[str]:
    return [c.interaction_id.split("-")[0] for c in candidates]


# -- uncertainty ---------------------------------------------------------------------------------------


def test_uncertainty_picks_the_smallest_margins_first() -> None:
    rows = _cluster_rows({"billing": 8}, user_feedback_score=1.0)
    probabilities = {
        r["interaction_id"]: {"HRM": 0.9 - 0.1 * i, "MCTS": 0.05 + 0.1 * i, "TRM": 0.05}
        for i, r in enumerate(rows)
    }
    picks = ActiveLearningSelector(selection_strategy="uncertainty").select_for_annotation(
        rows, budget=3, probabilities=probabilities
    )
    # Rows 4 (0.5 vs 0.45) and 5 (0.55 vs 0.4 the other way) are the closest calls.
    assert _ids(picks)[:2] == ["billing-4", "billing-5"]
    assert all(c.uncertainty is not None for c in picks)
    assert [c.uncertainty for c in picks] == sorted((c.uncertainty for c in picks), reverse=True)
    assert picks[0].selection_reason == "router unsure: HRM 0.50 vs MCTS 0.45 (margin 0.05)"
    assert picks[0].strategy == "uncertainty" and picks[0].diversity is None


class _Router:
    """A router torn three ways on queries that say "unsure" and sure of HRM on the rest."""

    classes_ = np.array(["HRM", "MCTS", "TRM"])

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def predict_proba(self, queries: Sequence[str]) -> np.ndarray:
        self.calls.append(list(queries))
        return np.array([[0.34, 0.34, 0.32] if "unsure" in q else [0.9, 0.05, 0.05] for q in queries])


def test_uncertainty_asks_the_router_only_for_what_probabilities_do_not_cover() -> None:
    rows = [_row("a", "plan the rollout"), _row("b", "unsure what to do here"), _row("c", "order the jobs")]
    router = _Router()
    selector = ActiveLearningSelector(selection_strategy="uncertainty", router=router)
    picks = selector.select_for_annotation(rows, budget=2, probabilities={"c": {"HRM": 0.5, "TRM": 0.5}})
    assert router.calls == [["plan the rollout", "unsure what to do here"]]
    # b is a three-way tie; c a two-way one (of three agents).
    assert _ids(picks) == ["b", "c"]
    assert picks[0].selection_reason.startswith("router unsure: HRM 0.34 vs MCTS 0.34")
    assert picks[1].selection_reason == "router unsure: HRM 0.50 vs TRM 0.50 (margin 0.00)"


def test_uncertainty_reads_routing_decisions_from_metadata_then_falls_back_to_confidence() -> None:
    rows = [
        _row(
            "history",
            "q one",
            metadata={"routing_history": [{"agent": "HRM", "probabilities": {"HRM": 0.5, "TRM": 0.5}}]},
        ),
        _row("routing", "q two", metadata={"routing": {"probabilities": {"HRM": 0.9, "MCTS": 0.1}}}),
        _row("conf", "q three", agent_selected="TRM", agent_confidence=0.3),
        _row("none", "q four"),
    ]
    picks = ActiveLearningSelector(selection_strategy="uncertainty").select_for_annotation(rows, budget=4)
    assert _ids(picks) == ["history", "conf", "routing", "none"]
    reasons = {c.interaction_id: c.selection_reason for c in picks}
    assert reasons["conf"] == "router confidence only 0.30 in TRM (no probabilities for the alternatives)"
    assert reasons["routing"] == "router fairly sure: HRM 0.90 vs MCTS 0.10 (margin 0.80)"
    assert reasons["none"] == "no router probabilities or confidence recorded"
    assert picks[-1].uncertainty is None


def test_probabilities_from_decisions_keeps_the_last_route_with_probabilities() -> None:
    decisions = [
        {"interaction_id": "a", "kind": "route", "alternatives": {"HRM": 0.6, "TRM": 0.4}},
        {"interaction_id": "a", "kind": "route", "alternatives": {"HRM": 0.2, "TRM": 0.8}},
        {"interaction_id": "b", "kind": "tool", "alternatives": {"search": 1.0}},
        {"interaction_id": "c", "kind": "route", "alternatives": ["HRM", "TRM"]},
    ]
    assert probabilities_from_decisions(decisions) == {"a": {"HRM": 0.2, "TRM": 0.8}}


# -- diversity -----------------------------------------------------------------------------------------


def test_diversity_spreads_over_clusters_whatever_their_size() -> None:
    rows = _cluster_rows({"billing": 60, "k8s": 25, "sso": 8, "pdf": 3})
    picks = ActiveLearningSelector(selection_strategy="diversity").select_for_annotation(rows, budget=4)
    assert sorted(_topics(picks)) == ["billing", "k8s", "pdf", "sso"]
    assert picks[0].diversity is None
    assert picks[0].selection_reason.startswith("first pick: nothing picked or labeled yet")
    assert all(c.diversity > 0.5 for c in picks[1:])
    assert picks[2].selection_reason.startswith("far from the 2 items already picked (distance ")


def test_diversity_uses_langchain_embeddings_when_given() -> None:
    class Embeddings:
        def embed_documents(self, texts: list[str]) -> list[list[float]]:
            return [
                [1.0, 0.0, 0.01 * i] if "left" in t else [0.0, 1.0, 0.01 * i] for i, t in enumerate(texts)
            ]

    rows = [_row(f"left-{i}", f"left {i}") for i in range(5)] + [_row("right-0", "right")]
    selector = ActiveLearningSelector(selection_strategy="diversity", embeddings=Embeddings())
    picks = selector.select_for_annotation(rows, budget=2)
    assert sorted(_topics(picks)) == ["left", "right"]
    # The five "left" vectors are near-duplicates of each other in this space: one stands for all.
    assert "kept over 4 near-duplicates" in " ".join(c.selection_reason for c in picks)

    class Broken:
        def embed_documents(self, texts: list[str]) -> list[list[float]]:
            return [[1.0, 2.0]]

    with pytest.raises(ValueError, match="one vector per text"):
        ActiveLearningSelector(embeddings=Broken()).select_for_annotation(rows)


# -- failure -------------------------------------------------------------------------------------------


def test_failure_picks_the_failures_most_severe_first() -> None:
    rng = random.Random(1)
    healthy = [
        _row(
            f"ok-{i}",
            f"{_query('billing', rng)} {i}",
            user_feedback_score=5.0,
            latency_ms=800.0,
            error_occurred=False,
            hallucination_detected=False,
            retrieval_quality=0.9,
        )
        for i in range(200)
    ]
    failures = [
        _row("error", "sql join timed out", error_occurred=True),
        _row("hallucination", "gdpr deletion deadline", hallucination_detected=True),
        _row("one-star", "refund not credited", user_feedback_score=1.0),
        _row("two-stars", "pod evicted again", user_feedback_score=2.0),
        _row("retrieval", "okta saml settings", retrieval_failed=True, retrieval_quality=0.1),
        _row("slow", "export pdf landscape", latency_ms=9000.0),
        _row("corrected", "reset password email", corrections=["use the admin console"]),
        _row("thumbs", "csv import encoding", thumbs_up_down="down"),
    ]
    rows = healthy[:100] + failures + healthy[100:]
    selector = ActiveLearningSelector(selection_strategy="failure")
    picks = selector.select_for_annotation(rows, budget=6)
    assert _ids(picks) == ["error", "one-star", "hallucination", "corrected", "thumbs", "two-stars"]
    reasons = {c.interaction_id: c.selection_reason for c in picks}
    assert reasons == {
        "error": "the run raised an error",
        "one-star": "rated 1 star",
        "hallucination": "hallucination detected",
        "corrected": "the user corrected the answer",
        "thumbs": "thumbs down",
        "two-stars": "rated 2 stars",
    }
    assert picks[0].failure_score == 1.0 and 0 < picks[-1].failure_score < picks[0].failure_score
    # Poor retrieval and slowness are diagnostics: with no outcome seen, those items have no failure score.
    everything = {c.interaction_id: c for c in selector.select_for_annotation(rows, budget=len(rows))}
    assert everything["retrieval"].failure_score is None and everything["slow"].failure_score is None
    assert everything["retrieval"].selection_reason == (
        "no outcome failure recorded; diagnostic only, not a failure: retrieval failed (quality 0.10)"
    )
    assert everything["slow"].selection_reason == (
        "no outcome failure recorded; diagnostic only, not a failure: slow (9.0 s)"
    )
    assert everything["ok-0"].failure_score == 0.0


def test_failure_signals_add_up() -> None:
    rows = [
        _row("one", "pod evicted", user_feedback_score=2.0),
        _row("two", "refund stuck", user_feedback_score=2.0, thumbs_up_down="down", latency_ms=7000.0),
    ]
    picks = ActiveLearningSelector(selection_strategy="failure").select_for_annotation(rows, budget=2)
    assert _ids(picks) == ["two", "one"]
    assert picks[0].selection_reason == "rated 2 stars; thumbs down; diagnostic: slow (7.0 s)"


def test_failure_ignores_diagnostics_on_a_well_rated_answer() -> None:
    plain = _row(
        "plain", "refund invoice euro", user_feedback_score=4.0, latency_ms=900.0, retrieval_quality=0.9
    )
    diagnosed = _row(
        "diagnosed",
        "kubernetes pod eviction",
        user_feedback_score=4.0,
        latency_ms=12000.0,
        retrieval_quality=0.05,
    )
    for rows in ([plain, diagnosed], [diagnosed, plain]):
        picks = ActiveLearningSelector(selection_strategy="failure").select_for_annotation(rows, budget=2)
        scores = {c.interaction_id: c.failure_score for c in picks}
        assert scores == {"plain": 0.0, "diagnosed": 0.0}
        assert picks[0].interaction_id == rows[0]["interaction_id"]  # a tie: input order, not diagnostics
    reasons = {c.interaction_id: c.selection_reason for c in picks}
    assert reasons["diagnosed"] == (
        "no outcome failure recorded; diagnostics only, not failures: poor retrieval (quality 0.05), slow (12.0 s)"
    )
    assert reasons["plain"] == "no outcome failure recorded"


def test_failure_ranks_a_low_rating_above_poor_retrieval_alone() -> None:
    rows = [
        _row(
            "retrieval",
            "okta saml settings",
            retrieval_failed=True,
            retrieval_quality=0.0,
            latency_ms=30000.0,
        ),
        _row("two-stars", "refund not credited", user_feedback_score=2.0, retrieval_quality=0.9),
    ]
    picks = ActiveLearningSelector(selection_strategy="failure").select_for_annotation(rows, budget=2)
    assert _ids(picks) == ["two-stars", "retrieval"]
    assert picks[0].failure_score == pytest.approx(0.5) and picks[1].failure_score is None


def test_failure_reason_names_the_outcome_then_the_diagnostic() -> None:
    rows = [
        _row("a", "pdf export timeout", user_feedback_score=1.0, retrieval_quality=0.12, latency_ms=800.0)
    ]
    (pick,) = ActiveLearningSelector(selection_strategy="failure").select_for_annotation(rows, budget=1)
    assert pick.selection_reason == "rated 1 star; diagnostic: poor retrieval (quality 0.12)"
    assert pick.failure_score == 1.0
    hybrid = ActiveLearningSelector(selection_strategy="hybrid").select_for_annotation(rows, budget=1)
    assert hybrid[0].selection_reason.startswith("rated 1 star; diagnostic: poor retrieval (quality 0.12); ")


def test_failure_counts_a_failed_node_and_corrections_as_json_text() -> None:
    rows = [
        _row("node", "sql join timed out", metadata={"failed_node": "sql"}),
        _row("text", "reset password email", corrections='["use the admin console"]'),
        _row("empty", "csv import encoding", corrections="[]", user_feedback_score=5.0),
    ]
    picks = ActiveLearningSelector(selection_strategy="failure").select_for_annotation(rows, budget=3)
    assert [(c.interaction_id, c.failure_score) for c in picks] == [
        ("node", 1.0),
        ("text", 0.8),
        ("empty", 0.0),
    ]
    assert picks[0].selection_reason == "the run raised an error"


# -- hybrid --------------------------------------------------------------------------------------------


def test_hybrid_trades_failures_for_coverage_with_the_diversity_weight() -> None:
    rows = _cluster_rows({"billing": 20}, seed=2, error_occurred=True) + _cluster_rows(
        {"k8s": 5, "sso": 5}, seed=3, user_feedback_score=2.0
    )

    def topics(weight: float) -> list[str]:
        selector = ActiveLearningSelector(selection_strategy="hybrid", diversity_weight=weight)
        return _topics(selector.select_for_annotation(rows, budget=3))

    assert topics(0.0) == ["billing"] * 3
    assert sorted(topics(0.9)) == ["billing", "k8s", "sso"]
    assert len(set(topics(0.3))) <= len(set(topics(0.9)))


def test_hybrid_reason_names_router_doubt_failures_and_distance() -> None:
    rows = [
        _row("a", "refund invoice euro charge", user_feedback_score=1.0, error_occurred=True),
        _row("b", "kubernetes pod eviction memory", agent_selected="HRM", user_feedback_score=2.0),
    ]
    probabilities = {"b": {"HRM": 0.41, "MCTS": 0.38, "TRM": 0.21}}
    picks = ActiveLearningSelector().select_for_annotation(rows, budget=2, probabilities=probabilities)
    assert _ids(picks) == ["a", "b"]
    assert picks[0].selection_reason == (
        "the run raised an error; rated 1 star; first pick: nothing picked or labeled yet to compare with"
    )
    assert picks[1].selection_reason.startswith(
        "router unsure: HRM 0.41 vs MCTS 0.38 (margin 0.03); rated 2 stars; far from the 1 item already picked "
        "(distance 1.00)"
    )
    assert picks[1].strategy == "hybrid" and picks[1].diversity == pytest.approx(1.0)
    assert picks[0].priority >= picks[1].priority


# -- near-duplicates, exclusions, edge cases -----------------------------------------------------------


@pytest.mark.parametrize("strategy", ["uncertainty", "diversity", "failure", "hybrid"])
def test_near_duplicates_collapse_to_their_most_informative_member(strategy: str) -> None:
    copies = [
        _row(
            f"copy-{i}",
            "urgent: refund of 40 EUR not credited back to my card",
            user_feedback_score=float(s),
            agent_confidence=c,
        )
        for i, (s, c) in enumerate([(3, 0.6), (2, 0.5), (1, 0.2), (2, 0.4)])
    ]
    others = [
        _row(f"other-{i}", query, user_feedback_score=4.0, agent_confidence=0.9)
        for i, query in enumerate(
            [
                "kubernetes pod eviction",
                "okta saml login",
                "pdf export timeout",
                "csv import encoding",
                "gdpr data deletion",
                "sql join performance",
            ]
        )
    ]
    picks = ActiveLearningSelector(selection_strategy=strategy).select_for_annotation(
        copies + others, budget=10
    )
    assert len(picks) == 7
    assert [i for i in _ids(picks) if i.startswith("copy")] == ["copy-2"]
    [copy] = [c for c in picks if c.interaction_id == "copy-2"]
    assert copy.selection_reason.endswith("kept over 3 near-duplicates")


def test_excluded_ids_are_never_picked_and_count_as_covered() -> None:
    rows = _cluster_rows({"billing": 6, "k8s": 6, "sso": 1}, seed=5, user_feedback_score=2.0)
    rows.append(_row("billing-dup", rows[0]["user_query"], user_feedback_score=1.0))
    labeled = {f"billing-{i}" for i in range(6)}
    selector = ActiveLearningSelector(selection_strategy="hybrid", diversity_weight=0.5)
    picks = selector.select_for_annotation(rows, budget=20, exclude_ids=labeled)
    assert not labeled & set(_ids(picks))
    assert "billing-dup" not in _ids(picks)  # a near-duplicate of a labeled item
    assert set(_topics(picks)) == {"k8s", "sso"}
    assert "and 6 already labeled or queued" in picks[1].selection_reason
    assert picks[0].diversity is not None  # measured from the labeled items


def test_budget_larger_than_the_data_returns_everything_once() -> None:
    rows = _cluster_rows({"billing": 2, "k8s": 2}, seed=6)
    rows.append(dict(rows[0]))  # the same id twice counts once
    picks = ActiveLearningSelector().select_for_annotation(rows, budget=100)
    assert sorted(_ids(picks)) == ["billing-0", "billing-1", "k8s-0", "k8s-1"]


def test_empty_input_zero_budget_and_disabled_select_nothing() -> None:
    selector = ActiveLearningSelector()
    assert selector.select_for_annotation([]) == []
    assert selector.select_for_annotation(iter([])) == []
    assert selector.select_for_annotation([_row("a", "q")], budget=0) == []
    assert selector.select_for_annotation([_row("a", "q")], exclude_ids="a") == []
    assert ActiveLearningSelector(enabled=False).select_for_annotation([_row("a", "q")]) == []
    with pytest.raises(ValueError, match="budget must be an int >= 0"):
        selector.select_for_annotation([_row("a", "q")], budget=-1)
    with pytest.raises(TypeError, match="probabilities must map"):
        selector.select_for_annotation([_row("a", "q")], probabilities=[0.5])


@pytest.mark.parametrize("strategy", ["uncertainty", "diversity", "failure", "hybrid"])
def test_missing_fields_count_as_unknown(strategy: str) -> None:
    rows: list = [
        {"interaction_id": "bare"},
        {"interaction_id": "empty", "user_query": "", "metadata": None, "corrections": None},
        {"interaction_id": "junk", "user_query": 3, "user_feedback_score": "bad", "latency_ms": None},
        ProductionInteraction(
            interaction_id="record",
            timestamp=1.0,
            session_id="s",
            user_query="refund",
            response="r",
            user_feedback_score=1.0,
        ),
    ]
    picks = ActiveLearningSelector(selection_strategy=strategy).select_for_annotation(rows, budget=10)
    assert sorted(_ids(picks)) == ["bare", "empty", "junk", "record"]
    [bare] = [c for c in picks if c.interaction_id == "bare"]
    assert bare.user_query == "" and bare.agent_selected is None and bare.failure_score is None
    assert bare.selection_reason
    with pytest.raises(InvalidRecordError, match="interaction 1 of the input has no interaction_id") as info:
        ActiveLearningSelector().select_for_annotation([{"interaction_id": "a"}, {"user_query": "q"}])
    assert info.value.field == "interaction_id"


# -- configuration and the classic API -----------------------------------------------------------------


def test_config_comes_from_a_dict_a_model_a_whole_config_or_keywords() -> None:
    assert ActiveLearningSelector().config == ActiveLearningConfig()
    assert ActiveLearningSelector({"budget_per_cycle": 3}).config.budget_per_cycle == 3
    assert ActiveLearningSelector({"budget_per_cycle": 3}, budget_per_cycle=4).config.budget_per_cycle == 4
    whole = ContinualLearningConfig(active_learning={"selection_strategy": "failure"})
    assert ActiveLearningSelector(whole).config.selection_strategy == "failure"
    rows = _cluster_rows({"billing": 5, "k8s": 5})
    assert len(ActiveLearningSelector(budget_per_cycle=3).select_for_annotation(rows)) == 3


@pytest.mark.parametrize(
    ("kwargs", "key", "text"),
    [
        ({"selection_strategy": "random"}, "active_learning.selection_strategy", "'uncertainty'"),
        ({"diversity_weight": 1.5}, "active_learning.diversity_weight", "less than or equal to 1"),
        ({"budget_per_cycle": 0}, "active_learning.budget_per_cycle", "greater than or equal to 1"),
        ({"diversity_wieght": 0.3}, "active_learning.diversity_wieght", "the keys allowed here are"),
        ({"duplicate_threshold": 0.0}, "duplicate_threshold", "duplicate_threshold must be a number"),
        ({"slow_response_ms": -1}, "slow_response_ms", "slow_response_ms must be a number"),
    ],
)
def test_config_errors_name_the_key(kwargs: dict, key: str, text: str) -> None:
    with pytest.raises(ConfigError, match=text) as info:
        ActiveLearningSelector(**kwargs)
    assert info.value.key == key
    assert key.split(".")[-1] in str(info.value)


def test_selection_from_the_store_then_queue_then_the_next_cycle_skips_the_queued() -> None:
    rows, labels = planted_failures(600, seed=4)
    store = Store.from_url("sqlite://").setup()
    store.write(Batch({"interactions": [{**r, "metadata": "{}", "corrections": None} for r in rows]}))
    selector = ActiveLearningSelector(budget_per_cycle=20)
    first = selector.select_for_annotation(store.query_interactions(limit=None))
    assert store.queue.enqueue(first) == 20
    second = selector.select_for_annotation(
        store.query_interactions(limit=None), exclude_ids=store.queue.queued_ids()
    )
    assert len(second) == 20 and not set(_ids(first)) & set(_ids(second))
    failed = {r["interaction_id"] for r, label in zip(rows, labels, strict=True) if label}
    assert set(_ids(first)) <= failed
    store.close()


def test_docstring_examples_run() -> None:
    assert doctest.testmod(cl_plugin.analysis.selection).failed == 0
