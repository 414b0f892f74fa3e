"""MetaRouter: a real text classifier over agent labels, with probabilities, partial_fit and a parallel route."""

from __future__ import annotations

import doctest

import numpy as np
import pytest
from cl_plugin.graphs.tasks import BEST_AGENT, sample_tasks

import cl_plugin.learning.router
from cl_plugin.learning.router import PARALLEL, MetaRouter, RoutingDecision

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
    assert doctest.testmod(cl_plugin.learning.router).failed == 0


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


def noisy(n: int, seed: int, noise: float) -> tuple[list[str], list[str]]:
    """Labelled tasks with a share of labels replaced by a random agent, as real feedback has."""
    queries, agents = labelled(n, seed)
    rng = np.random.default_rng(seed)
    flip = rng.random(n) < noise
    noisy_agents = np.where(flip, rng.choice(AGENTS, n), np.asarray(agents))
    return queries, noisy_agents.tolist()


def test_temperature_calibration_improves_held_out_probabilities() -> None:
    from sklearn.metrics import log_loss

    from cl_plugin.analysis.metrics import expected_calibration_error

    train, calib, test = noisy(600, 101, 0.25), noisy(600, 4, 0.25), noisy(600, 5, 0.25)

    def scores(router: MetaRouter) -> tuple[float, float]:
        proba = router.predict_proba(test[0])
        correct = router.classes_[proba.argmax(axis=1)] == np.asarray(test[1])
        ece = expected_calibration_error(proba.max(axis=1), correct).ece
        return log_loss(test[1], proba, labels=router.classes_), ece

    raw = MetaRouter(calibration=None).fit(*train)
    out_of_fold = MetaRouter().fit(*train)
    held_out = MetaRouter().fit(*train).calibrate(*calib)
    assert raw.temperature_ == 1.0
    assert (
        out_of_fold.temperature_ > 1.5 and held_out.temperature_ > 1.5
    )  # noisy labels: raw is overconfident
    (raw_loss, raw_ece), (oof_loss, _), (held_loss, held_ece) = map(scores, (raw, out_of_fold, held_out))
    assert oof_loss < raw_loss - 0.1
    assert held_loss < raw_loss - 0.1
    assert held_ece < raw_ece - 0.02
    # the temperature changes how sure the router is, never which agent it picks
    np.testing.assert_array_equal(raw.predict(test[0]), out_of_fold.predict(test[0]))


def test_few_labels_all_predicted_right_do_not_make_the_router_certain() -> None:
    router = MetaRouter().fit(*labelled(60, seed=101))
    assert 0.2 < router.temperature_ < 5.0
    assert router.predict_proba(["Which port does the billing service listen on?"]).max() < 1.0


def test_calibrate_refuses_an_unknown_agent_and_an_unfitted_router(router: MetaRouter) -> None:
    with pytest.raises(ValueError, match="not among the router's classes"):
        MetaRouter().fit(*labelled(30, seed=12)).calibrate(["a query"], ["GPT"])
    with pytest.raises(ValueError, match="fit"):
        MetaRouter().calibrate(["a query"], ["HRM"])


def test_the_routing_context_is_learned_when_the_text_cannot_tell() -> None:
    # the same question goes to HRM when retrieval found a relevant passage and to TRM when it did not
    queries = [f"what is the answer to case {i}" for i in range(200)]
    good = [i % 2 == 0 for i in range(200)]
    contexts = [{"retrieval_quality": 0.9 if g else 0.05} for g in good]
    agents = ["HRM" if g else "TRM" for g in good]
    with_context = MetaRouter().fit(queries, agents, contexts=contexts)
    text_only = MetaRouter(context_weight=0.0).fit(queries, agents, contexts=contexts)
    assert with_context.score(queries, agents, contexts=contexts) > 0.95
    assert text_only.score(queries, agents, contexts=contexts) < 0.75
    relevant = with_context.route("what is the answer to case 7", {"retrieval_quality": 0.9})
    missing = with_context.route(
        "what is the answer to case 7", {"retrieval_quality": None, "retrieved": False}
    )
    assert (relevant.agent, missing.agent) == ("HRM", "TRM")
    assert relevant.features["retrieved"] is True and relevant.features["retrieval_quality"] == 0.9
    assert missing.features["retrieved"] is False


def test_context_features_are_scaled_and_default_to_unknown() -> None:
    from cl_plugin.learning.router import CONTEXT_FEATURES, context_features

    x = context_features(
        ["order 3 jobs", "refine it"],
        [{"retrieval_quality": 7.0, "earlier_confidences": [0.4, 0.6]}, None],
    )
    row = dict(zip(CONTEXT_FEATURES, x[0], strict=True))
    assert row["retrieved"] == 1.0 and row["retrieval_quality"] == 1.0  # clipped to [0, 1]
    assert row["earlier_confidence"] == pytest.approx(0.5) and row["has_earlier"] == 1.0
    assert row["numbers"] == pytest.approx(0.1)
    assert dict(zip(CONTEXT_FEATURES, x[1], strict=True))["retrieved"] == 0.0
    assert np.all((x >= 0) & (x <= 1))
    with pytest.raises(ValueError, match=r"one entry .* per query"):
        context_features(["a", "b"], [None])


@pytest.mark.parametrize(
    ("params", "name"),
    [({"context_weight": -1.0}, "context_weight"), ({"calibration": "isotonic"}, "calibration")],
)
def test_bad_router_parameters_are_refused_by_name(params: dict, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        MetaRouter(**params).fit(["a", "b"], ["HRM", "TRM"])
