"""MetaRouter: a real text classifier over agent labels, with probabilities, partial_fit and a parallel route."""

from __future__ import annotations

import doctest

import numpy as np
import pytest

import cl_plugin.router
from cl_plugin.router import PARALLEL, MetaRouter, RoutingDecision
from graphs.tasks import BEST_AGENT, sample_tasks

AGENTS = ["HRM", "MCTS", "TRM"]


def labelled(n: int, seed: int) -> tuple[list[str], list[str]]:
    tasks = sample_tasks(n, seed=seed)
    return [t.query for t in tasks], [BEST_AGENT[t.family] for t in tasks]


@pytest.fixture(scope="module")
def router() -> MetaRouter:
    return MetaRouter().fit(*labelled(60, seed=101))


def test_fit_returns_the_router_with_learned_attributes(router: MetaRouter) -> None:
    assert list(router.classes_) == AGENTS
    assert router.n_samples_seen_ == 60
    assert hasattr(router, "classifier_") and hasattr(router, "word_vectorizer_")


def test_probability_rows_sum_to_one_in_class_order(router: MetaRouter) -> None:
    queries, _ = labelled(50, seed=3)
    proba = router.predict_proba(queries)
    assert proba.shape == (50, 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert list(router.predict(queries)) == list(router.classes_[proba.argmax(axis=1)])


def test_the_router_routes_fresh_tasks_accurately(router: MetaRouter) -> None:
    queries, agents = labelled(400, seed=4)
    assert router.score(queries, agents) > 0.85


def test_route_gives_the_top_agent_with_probabilities_and_readable_features(router: MetaRouter) -> None:
    decision = router.route("What is the square root of 47 to 4 decimal places?")
    assert isinstance(decision, RoutingDecision)
    assert decision.agent == "TRM"
    assert decision.confidence == max(decision.probabilities.values())
    assert set(decision.probabilities) == set(AGENTS)
    assert sum(decision.probabilities.values()) == pytest.approx(1.0)
    assert decision.features["n_numbers"] == 2
    assert decision.features["n_chars"] == 50
    assert "square" in decision.features["top_terms"] or "root" in decision.features["top_terms"]


def test_low_confidence_routes_to_parallel() -> None:
    queries, agents = labelled(60, seed=101)
    cautious = MetaRouter(parallel_threshold=1.0).fit(queries, agents)
    decision = cautious.route("Which port does the billing service listen on?")
    assert decision.agent == PARALLEL
    assert max(decision.probabilities, key=decision.probabilities.get) == "HRM"


def test_the_same_seed_learns_the_same_model() -> None:
    queries, agents = labelled(40, seed=5)
    a = MetaRouter(random_state=7).fit(queries, agents).predict_proba(queries[:5])
    b = MetaRouter(random_state=7).fit(queries, agents).predict_proba(queries[:5])
    np.testing.assert_array_equal(a, b)


def test_partial_fit_learns_incrementally_from_batches() -> None:
    test_queries, test_agents = labelled(300, seed=9)
    router = MetaRouter()
    for batch in range(4):
        router.partial_fit(*labelled(40, seed=200 + batch), classes=AGENTS)
    assert router.n_samples_seen_ == 160
    assert router.score(test_queries, test_agents) > 0.85


def test_partial_fit_after_fit_keeps_the_classes_and_counts_the_new_samples(router: MetaRouter) -> None:
    fitted = MetaRouter().fit(*labelled(60, seed=101))
    fitted.partial_fit(*labelled(20, seed=11))
    assert list(fitted.classes_) == AGENTS
    assert fitted.n_samples_seen_ == 80


def test_the_first_partial_fit_needs_the_classes() -> None:
    with pytest.raises(ValueError, match="classes="):
        MetaRouter().partial_fit(["a query"], ["HRM"])


def test_partial_fit_refuses_an_unknown_agent(router: MetaRouter) -> None:
    fitted = MetaRouter().fit(*labelled(30, seed=12))
    with pytest.raises(ValueError, match="not among the router's classes"):
        fitted.partial_fit(["a query"], ["GPT"])


@pytest.mark.parametrize(
    ("queries", "agents", "message"),
    [
        ([], [], "at least one query"),
        (["a", "b"], ["HRM"], "one agent label per query"),
        (["a", "b"], ["HRM", "HRM"], "two agents"),
    ],
)
def test_fit_refuses_bad_training_data(queries: list[str], agents: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        MetaRouter().fit(queries, agents)


def test_an_out_of_range_threshold_is_refused() -> None:
    with pytest.raises(ValueError, match="parallel_threshold"):
        MetaRouter(parallel_threshold=1.5).fit(["a", "b"], ["HRM", "TRM"])


def test_an_unfitted_router_says_to_fit_first() -> None:
    with pytest.raises(ValueError, match="fit"):
        MetaRouter().route("anything")


def test_the_module_examples_run() -> None:
    assert doctest.testmod(cl_plugin.router).failed == 0


def test_label_weights_decide_between_conflicting_labels() -> None:
    queries = ["plan the rollout order for the jobs"] * 10 + ["refine the square root of 2"] * 10
    agents = ["HRM"] * 5 + ["TRM"] * 5 + ["TRM"] * 10
    heavy_hrm = [3.0] * 5 + [0.2] * 5 + [1.0] * 10
    heavy_trm = [0.2] * 5 + [3.0] * 5 + [1.0] * 10
    assert (
        MetaRouter(random_state=0).fit(queries, agents, sample_weight=heavy_hrm).predict(queries[:1])[0]
        == "HRM"
    )
    assert (
        MetaRouter(random_state=0).fit(queries, agents, sample_weight=heavy_trm).predict(queries[:1])[0]
        == "TRM"
    )
    router = MetaRouter(random_state=0).partial_fit(
        queries, agents, classes=["HRM", "TRM"], sample_weight=heavy_hrm
    )
    assert router.n_samples_seen_ == 20


@pytest.mark.parametrize("weights", [[1.0], [-1.0, 1.0], [float("nan"), 1.0], [0.0, 0.0]])
def test_bad_sample_weights_are_refused(weights: list[float]) -> None:
    with pytest.raises(ValueError, match="sample_weight"):
        MetaRouter().fit(["a query", "another query"], ["HRM", "TRM"], sample_weight=weights)
