"""Metrics: each against a hand-computed value or a reference implementation; the SQL path against Python."""

from __future__ import annotations

import dataclasses
import doctest
import math
import random

import numpy as np
import pytest
import scipy.stats
from sklearn import metrics as skm

import cl_plugin.analysis.metrics
from cl_plugin import outcomes
from cl_plugin.analysis.metrics import (
    FailureRates,
    MetricOptions,
    Rate,
    brier_score,
    expected_calibration_error,
    failure_rates,
    interaction_metrics,
    latency_summary,
    log_loss,
    metrics_by_window,
    ndcg_at_k,
    precision_at_k,
    recall_at_k,
    retrieval_metrics,
    router_accuracy,
    router_metrics,
    satisfaction,
    store_metrics,
    store_metrics_by_window,
)
from cl_plugin.outcomes import OutcomeCounter, OutcomeRate
from cl_plugin.privacy import Sanitizer
from cl_plugin.records import ProductionInteraction
from cl_plugin.store import Batch, Store
from cl_plugin.store.rows import dumps, row_from_interaction

MONDAY = 1_700_438_400.0  # 2023-11-20 00:00 UTC, a Monday
AGENTS = ("HRM", "TRM", "MCTS")


def assert_close(got: object, want: object, path: str = "") -> None:
    """Equal, with floats compared to 1e-9 relative (sums in SQL and in numpy add in different orders)."""
    if dataclasses.is_dataclass(got):
        assert type(got) is type(want), path
        for f in dataclasses.fields(got):
            assert_close(getattr(got, f.name), getattr(want, f.name), f"{path}.{f.name}")
    elif isinstance(got, dict):
        assert isinstance(want, dict) and got.keys() == want.keys(), path
        for k in got:
            assert_close(got[k], want[k], f"{path}[{k!r}]")
    elif isinstance(got, list | tuple):
        assert isinstance(want, list | tuple) and len(got) == len(want), path
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            assert_close(g, w, f"{path}[{i}]")
    elif isinstance(got, float) and not isinstance(want, bool):
        assert want == pytest.approx(got, rel=1e-9, abs=1e-12), path
    else:
        assert got == want, path


def test_doctests_pass() -> None:
    assert doctest.testmod(cl_plugin.analysis.metrics).failed == 0


# -- satisfaction, latency ---------------------------------------------------------------------------------


def test_satisfaction_by_hand_and_against_scipy_t_interval() -> None:
    s = satisfaction([5.0, 4.0, None, 2.0, float("nan")], ["up", None, "up", "down", None])
    assert (s.interactions, s.rated, s.share_rated) == (5, 3, 0.6)
    assert s.mean_score == pytest.approx(11 / 3)
    want = scipy.stats.t.interval(0.95, 2, loc=11 / 3, scale=np.std([5, 4, 2], ddof=1) / math.sqrt(3))
    assert s.mean_score_ci == pytest.approx(want)
    assert (s.thumbs_up, s.thumbs_down, s.thumbs_up_rate) == (2, 1, 2 / 3)


def test_wilson_interval_matches_the_textbook_value() -> None:
    s = satisfaction([None] * 10, ["up"] * 8 + ["down"] * 2)
    assert s.thumbs_up_ci == pytest.approx((0.4902, 0.9433), abs=1e-4)  # Newcombe (1998), 8 of 10
    assert satisfaction([], [], confidence=0.99).thumbs_up_ci is None


def test_satisfaction_missing_is_not_zero() -> None:
    s = satisfaction([None, None, 4.0])
    assert s.mean_score == 4.0 and s.rated == 1 and s.mean_score_ci is None  # one rating: no interval
    empty = satisfaction([None, None])
    assert (empty.rated, empty.mean_score, empty.share_rated, empty.thumbs_up_rate) == (0, None, 0.0, None)
    assert satisfaction([]).share_rated is None
    assert satisfaction([3.0, 3.0]).mean_score_ci == (3.0, 3.0)
    with pytest.raises(ValueError, match="differ in length"):
        satisfaction([1.0], ["up", "down"])


def test_latency_percentiles_match_numpy() -> None:
    rng = np.random.default_rng(3)
    x = rng.lognormal(7, 0.5, 1001)
    lat = latency_summary([*x, None, float("nan")])
    assert lat.n == 1001
    assert (lat.p50_ms, lat.p95_ms, lat.p99_ms) == pytest.approx(np.percentile(x, [50, 95, 99]))
    assert (lat.mean_ms, lat.max_ms) == pytest.approx((x.mean(), x.max()))
    assert (
        latency_summary([None, None])
        == latency_summary([])
        == cl_plugin.analysis.metrics.Latency(0, *[None] * 5)
    )
    one = latency_summary([120.0])
    assert (one.p50_ms, one.p99_ms, one.max_ms) == (120.0, 120.0, 120.0)


# -- retrieval ---------------------------------------------------------------------------------------------


def test_precision_and_recall_at_k_by_hand() -> None:
    ranked = ["a", "x", "b", "y", "c"]
    assert precision_at_k(ranked, {"a", "b", "z"}, 3) == 2 / 3
    assert recall_at_k(ranked, {"a", "b", "z"}, 3) == 2 / 3
    assert precision_at_k(ranked, {"a"}, 10) == 1 / 10  # a short list is not rewarded
    assert precision_at_k(["a", "a", "x"], {"a"}, 2) == 1 / 2  # a duplicate counts once
    assert precision_at_k([], {"a"}, 3) == 0.0 and recall_at_k([], {"a"}, 3) == 0.0
    assert recall_at_k(ranked, set(), 3) is None  # nothing relevant: recall is undefined, not 0
    assert precision_at_k(ranked, {"a": 2.0, "x": 0.0}, 2) == 1 / 2  # grade 0 is not relevant
    with pytest.raises(ValueError, match="k must be"):
        precision_at_k(ranked, {"a"}, 0)


def test_ndcg_matches_sklearn_with_graded_relevance() -> None:
    rng = np.random.default_rng(11)
    for _ in range(50):
        n = int(rng.integers(2, 12))
        grades = rng.integers(0, 4, n).astype(float)
        scores = rng.permutation(n).astype(float)  # no ties
        ranked = [f"d{i}" for i in np.argsort(-scores)]
        relevance = {f"d{i}": g for i, g in enumerate(grades)}
        k = int(rng.integers(1, n + 1))
        got = ndcg_at_k(ranked, relevance, k)
        if grades.sum() == 0:
            assert got is None
        else:
            assert got == pytest.approx(skm.ndcg_score([grades], [scores], k=k))


def test_ndcg_with_tied_scores_averages_like_sklearn() -> None:
    grades = np.array([3.0, 0.0, 1.0, 2.0, 0.0])
    scores = np.array([0.9, 0.9, 0.5, 0.5, 0.1])
    ranked = [f"d{i}" for i in range(5)]
    relevance = {f"d{i}": g for i, g in enumerate(grades)}
    for k in (1, 2, 3, 5):
        want = skm.ndcg_score([grades], [scores], k=k)
        assert ndcg_at_k(ranked, relevance, k, scores=list(scores)) == pytest.approx(want)
    # Ties change the value: listing d1 before d0 no longer matters.
    assert ndcg_at_k(["d1", "d0"], relevance, 1, scores=[0.9, 0.9]) == pytest.approx(1.5 / 3)
    assert ndcg_at_k(["d1", "d0"], relevance, 1) == 0.0


def test_ndcg_by_hand_and_edge_cases() -> None:
    # Binary relevance, relevant at ranks 1 and 3, one relevant document never retrieved.
    dcg = 1 + 1 / math.log2(4)
    idcg = 1 + 1 / math.log2(3) + 1 / math.log2(4)
    assert ndcg_at_k(["a", "x", "b"], {"a", "b", "c"}, 3) == pytest.approx(dcg / idcg)
    assert ndcg_at_k(["a"], {"a"}, 1) == 1.0
    assert ndcg_at_k([], {"a"}, 5) == 0.0
    assert ndcg_at_k(["a", "b"], set(), 2) is None
    assert ndcg_at_k(["a", "b"], {"a": 0.0}, 2) is None
    with pytest.raises(ValueError, match=">= 0"):
        ndcg_at_k(["a"], {"a": -1.0}, 1)
    with pytest.raises(ValueError, match="differ in length"):
        ndcg_at_k(["a", "b"], {"a"}, 1, scores=[1.0])


def test_retrieval_metrics_average_recall_and_ndcg_over_judged_queries_only() -> None:
    results = [(["a", "b"], {"a"}), (["c", "d"], set()), (["e", "f"], {"f"})]
    m = retrieval_metrics(results, k=2)
    assert (m.queries, m.judged) == (3, 2)
    assert m.precision == pytest.approx((0.5 + 0 + 0.5) / 3)
    assert m.recall == 1.0
    assert m.ndcg == pytest.approx((1 + 1 / math.log2(3)) / 2)
    empty = retrieval_metrics([], k=3)
    assert (empty.queries, empty.precision, empty.recall, empty.ndcg) == (0, None, None, None)


# -- classification ----------------------------------------------------------------------------------------


def test_router_accuracy_leaves_out_missing_pairs() -> None:
    acc = router_accuracy(["HRM", "TRM", None, "HRM", "MCTS"], ["HRM", "HRM", "HRM", None, "MCTS"])
    assert (acc.n, acc.correct, acc.accuracy) == (3, 2, 2 / 3)
    assert acc.per_label == {"HRM": Rate(1, 2, 0.5), "MCTS": Rate(1, 1, 1.0)}
    assert router_accuracy([], []).accuracy is None


def test_expected_calibration_error_by_hand_with_empty_bins() -> None:
    conf = [0.95, 0.95, 0.85, 0.55, 0.55, 1.0, float("nan")]
    correct = [1, 1, 0, 1, 0, 1, 0]
    cal = expected_calibration_error(conf, correct, n_bins=5)
    assert cal.n == 6
    # bins: [0.8, 1.0]: 0.95, 0.95, 0.85, 1.0 (3 right); [0.4, 0.6): 0.55, 0.55 (1 right)
    want = 4 / 6 * abs(3 / 4 - (0.95 + 0.95 + 0.85 + 1.0) / 4) + 2 / 6 * abs(0.5 - 0.55)
    assert cal.ece == pytest.approx(want)
    assert [b.count for b in cal.bins] == [0, 0, 2, 0, 4]
    assert cal.bins[0].mean_confidence is None and cal.bins[0].accuracy is None
    assert (cal.bins[-1].lower, cal.bins[-1].upper) == (0.8, 1.0)
    assert expected_calibration_error([], []).ece is None
    assert expected_calibration_error([1.0], [True], n_bins=1).ece == 0.0
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        expected_calibration_error([1.5], [1])


def test_brier_and_log_loss_match_sklearn() -> None:
    rng = np.random.default_rng(5)
    p = rng.dirichlet(np.ones(4), size=200)
    y = rng.integers(0, 4, 200)
    onehot = np.eye(4)[y]
    assert brier_score(p, y) == pytest.approx(((p - onehot) ** 2).sum(axis=1).mean())
    assert brier_score(p, y) == pytest.approx(skm.brier_score_loss(y, p, labels=range(4)))
    assert log_loss(p, y) == pytest.approx(skm.log_loss(y, p, labels=range(4)))
    hard = np.eye(3)[[0, 1, 2]]
    assert log_loss(hard, [1, 1, 2]) == pytest.approx(skm.log_loss([1, 1, 2], hard, labels=range(3)))
    assert brier_score(np.empty((0, 3)), []) is None and log_loss([], []) is None
    with pytest.raises(ValueError, match="sum to 1"):
        brier_score([[0.5, 0.6]], [0])
    with pytest.raises(ValueError, match="class indices"):
        log_loss([[0.5, 0.5]], [2])


# -- interactions ------------------------------------------------------------------------------------------


def make(i: int, rng: random.Random, **over) -> ProductionInteraction:
    """An interaction where every metric input is sometimes missing."""

    def maybe(value, p: float = 0.2):
        return None if rng.random() < p else value

    agent = maybe(rng.choice(AGENTS), 0.1)
    label = rng.choice((*AGENTS, None, 7))  # a number is not a label
    fields = {
        "interaction_id": f"id-{i:05d}",
        "timestamp": MONDAY + i * 1800.0 + rng.random(),
        "session_id": f"s{i % 4}",
        "user_query": f"query {i}",
        "response": "ok",
        "agent_selected": agent,
        "agent_confidence": maybe(round(rng.random(), 3)),
        "user_feedback_score": maybe(float(rng.randint(1, 5)), 0.4),
        "thumbs_up_down": rng.choice(("up", "down", None)),
        "latency_ms": maybe(rng.lognormvariate(7, 0.8)),
        "error_occurred": maybe(rng.random() < 0.1),
        "hallucination_detected": maybe(rng.random() < 0.1, 0.5),
        "retrieval_failed": maybe(rng.random() < 0.2, 0.5),
        "retrieval_quality": maybe(round(rng.random(), 3), 0.5),
        "metadata": {} if label is None else {"best_agent": label, "best agent.v2": label},
        "graph_name": rng.choice(("g1", "g2")),
        "corrections": [f"right answer {i}"] if rng.random() < 0.1 else [],
        "user_corrections": f"expected {i}"
        if rng.random() < 0.05
        else None,  # the store adds it to corrections
    }
    fields.update(over)
    return ProductionInteraction(**fields)


def write(store: Store, items: list[ProductionInteraction]) -> None:
    store.write(Batch({"interactions": [row_from_interaction(i, Sanitizer()) for i in items]}))


@pytest.fixture(scope="module")
def items() -> list[ProductionInteraction]:
    rng = random.Random(42)
    # Some confidences are exactly 1, the upper edge of the last calibration bin.
    return [make(i, rng, agent_confidence=1.0) if i % 40 == 0 else make(i, rng) for i in range(400)]


def test_failure_rates_exclude_what_was_not_observed() -> None:
    rng = random.Random(0)
    records = [
        make(
            0, rng, retrieval_failed=None, retrieval_quality=None, latency_ms=None, user_feedback_score=None
        ),
        make(
            1, rng, retrieval_failed=False, retrieval_quality=0.2, latency_ms=6000.0, user_feedback_score=2.0
        ),
        make(
            2, rng, retrieval_failed=True, retrieval_quality=None, latency_ms=100.0, user_feedback_score=3.0
        ),
        make(
            3, rng, retrieval_failed=None, retrieval_quality=0.9, latency_ms=5000.0, user_feedback_score=5.0
        ),
    ]
    f = failure_rates(records)
    assert f.poor_retrieval == Rate(2, 3, 2 / 3)  # the run without retrieval is not in the denominator
    assert f.slow == Rate(1, 3, 1 / 3)  # above 5 s, not at it
    assert f.low_rating == Rate(1, 3, 1 / 3)  # below 3 stars
    strict = failure_rates(
        records, options=MetricOptions(poor_retrieval_quality=0.95, low_rating_threshold=4)
    )
    assert strict.poor_retrieval == Rate(3, 3, 1.0) and strict.low_rating == Rate(2, 3, 2 / 3)
    none = failure_rates([])
    assert all(
        r == Rate(0, 0, None) for r in (*none.outcome_rates().values(), *none.diagnostic_rates().values())
    )
    assert none.outcome == OutcomeRate.estimate(interactions=0, failures=0) and none.outcome.rate is None


def ten(over: dict[int, dict] | None = None) -> list[ProductionInteraction]:
    """1 error, 2 rated bad, 4 rated good, 3 unrated (one of them corrected); every error flag known,
    hallucinations checked on the six rated runs that did not raise."""
    rows = [
        {"error_occurred": True},
        {"user_feedback_score": 2.0, "hallucination_detected": False},
        {"thumbs_up_down": "down", "hallucination_detected": False},
        {"user_feedback_score": 5.0, "hallucination_detected": False},
        {"user_feedback_score": 4.0, "thumbs_up_down": "up", "hallucination_detected": False},
        {"thumbs_up_down": "up", "hallucination_detected": False},
        {"user_feedback_score": 3.0, "hallucination_detected": False},  # 3 stars is not low
        {},
        {},
        {"corrections": ["the right answer"]},
    ]
    return [
        ProductionInteraction(
            interaction_id=f"t{i}",
            timestamp=MONDAY + i,
            session_id="s",
            user_query="q",
            **{"error_occurred": False, **row, **(over or {}).get(i, {})},
        )
        for i, row in enumerate(rows)
    ]


def test_the_outcome_estimate_by_hand() -> None:
    f = failure_rates(ten())
    o = f.outcome
    assert (o.errors, o.error_known) == (1, 10)
    assert (o.hallucinations, o.hallucination_checked) == (0, 6)
    assert (o.bad_verdicts, o.verdicts) == (2, 6)  # the corrected answer is unrated: not a verdict
    assert o.failures == 4 and o.interactions == 10 and not o.lower_bound  # the error, 2 bad, the corrected
    # P(error) + P(no error) * P(hallucination) + P(neither) * P(bad verdict) = 0.1 + 0.9 * 0 + 0.9 * 2/6
    assert o.rate == pytest.approx(0.1 + 0.9 * 2 / 6) == pytest.approx(0.4)
    assert f.correction == Rate(1, 10, 0.1) and f.error == Rate(1, 10, 0.1)
    assert f.low_rating == Rate(1, 4, 0.25) and f.thumbs_down == Rate(1, 3, 1 / 3)
    counter = OutcomeCounter()
    for i in ten():
        counter.add(
            i.user_feedback_score,
            i.thumbs_up_down,
            outcomes.corrected(i.corrections),
            i.error_occurred,
            i.hallucination_detected,
        )
    assert counter.result() == o
    assert o.failures == sum(bool(outcomes.outcome_failures(i)) for i in ten())
    # A correction on a rated answer makes its verdict bad; a hallucination takes it out of the verdicts.
    worse = failure_rates(ten(over={3: {"corrections": ["no"]}, 4: {"hallucination_detected": True}})).outcome
    assert (worse.bad_verdicts, worse.verdicts, worse.hallucinations, worse.failures) == (3, 5, 1, 6)
    assert worse.rate == pytest.approx(0.1 + 0.9 * 1 / 6 + 0.9 * 5 / 6 * 3 / 5)
    # Stricter stars: 3 is low below 4, which also moves the low-rating outcome.
    strict = failure_rates(ten(), options=MetricOptions(low_rating_threshold=4.0))
    assert strict.outcome.bad_verdicts == 3 and strict.low_rating == Rate(2, 4, 0.5)


def test_the_outcome_estimate_by_hand_in_sql(store: Store) -> None:
    write(store, ten())
    got = store_metrics(store)["failures"]
    assert_close(got, failure_rates(ten()))
    assert got.outcome.rate == pytest.approx(0.4) and got.correction == Rate(1, 10, 0.1)


def test_without_verdicts_the_estimate_is_a_machine_lower_bound() -> None:
    o = failure_rates(ten()[:1] + ten()[7:9]).outcome
    assert o.lower_bound and o.rate == pytest.approx(1 / 3) and o.verdicts == 0


def test_failure_rates_name_their_outcomes_and_diagnostics() -> None:
    assert FailureRates.OUTCOMES == outcomes.OUTCOMES and FailureRates.DIAGNOSTICS == outcomes.DIAGNOSTICS
    names = {f.name for f in dataclasses.fields(FailureRates)}
    assert names == {"outcome", *outcomes.OUTCOMES, *outcomes.DIAGNOSTICS}
    f = failure_rates(ten())
    assert list(f.outcome_rates()) == list(outcomes.OUTCOMES)
    assert list(f.diagnostic_rates()) == list(outcomes.DIAGNOSTICS)
    assert MetricOptions().low_confidence == outcomes.LOW_CONFIDENCE
    assert MetricOptions().poor_retrieval_quality == outcomes.POOR_RETRIEVAL_QUALITY


def test_low_confidence_is_over_the_runs_with_a_confidence() -> None:
    rows = ten(
        over={0: {"agent_confidence": 0.2}, 1: {"agent_confidence": 0.5}, 2: {"agent_confidence": 0.9}}
    )
    assert failure_rates(rows).low_confidence == Rate(1, 3, 1 / 3)  # below 0.5, not at it
    strict = failure_rates(rows, options=MetricOptions(low_confidence=0.95))
    assert strict.low_confidence == Rate(3, 3, 1.0)


def sick(item: ProductionInteraction) -> ProductionInteraction:
    """The same interaction with every diagnostic set: poor retrieval, slow, an unsure router."""
    return dataclasses.replace(
        item, retrieval_failed=True, retrieval_quality=0.01, latency_ms=60_000.0, agent_confidence=0.01
    )


def test_diagnostics_do_not_move_the_outcome(items: list[ProductionInteraction]) -> None:
    for rows in (items, ten()):
        base, worse = failure_rates(rows), failure_rates([sick(i) for i in rows])
        assert worse.outcome == base.outcome and worse.outcome_rates() == base.outcome_rates()
        assert all(r.rate == 1.0 and r.n == len(rows) for r in worse.diagnostic_rates().values())
    assert failure_rates(items).outcome.verdicts > 0 and failure_rates(items).correction.count > 0


def test_diagnostics_do_not_move_the_outcome_in_sql(store: Store, items: list[ProductionInteraction]) -> None:
    write(store, [sick(i) for i in items])
    got = store_metrics(store)["failures"]
    assert_close(got.outcome, failure_rates(items).outcome)
    assert all(r.rate == 1.0 for r in got.diagnostic_rates().values())


def test_interaction_metrics_read_store_dicts_and_records_alike(items: list[ProductionInteraction]) -> None:
    dicts = [i.to_dict() for i in items]
    assert_close(interaction_metrics(dicts), interaction_metrics(items))


def test_routing_counts_only_string_labels_and_known_agents(items: list[ProductionInteraction]) -> None:
    m = interaction_metrics(items)
    pairs = [(i.agent_selected, i.metadata.get("best_agent")) for i in items]
    known = [(a, y) for a, y in pairs if a is not None and isinstance(y, str)]
    assert m["routing"].n == len(known)
    assert m["routing"].correct == sum(a == y for a, y in known)
    assert m["calibration"].n == sum(
        1
        for i in items
        if i.agent_selected
        and isinstance(i.metadata.get("best_agent"), str)
        and i.agent_confidence is not None
    )


def test_store_metrics_equal_the_python_path(store: Store, items: list[ProductionInteraction]) -> None:
    write(store, items)
    got = store_metrics(store)
    assert (got.pop("start_time"), got.pop("end_time")) == (None, None)
    assert_close(got, interaction_metrics(items))
    assert got["interactions"] == 400 and got["latency"].n < 400 and got["satisfaction"].rated < 400


def test_store_metrics_apply_filters_options_and_the_time_range(store: Store, items) -> None:
    write(store, items)
    options = MetricOptions(slow_response_ms=800.0, n_bins=7, label_key="best agent.v2", confidence=0.9)
    start, end = items[50].timestamp, items[300].timestamp
    got = store_metrics(store, start_time=start, end_time=end, agent=["HRM", "TRM"], options=options)
    subset = [i for i in items if start <= i.timestamp < end and i.agent_selected in ("HRM", "TRM")]
    assert (got.pop("start_time"), got.pop("end_time")) == (start, end)
    assert_close(got, interaction_metrics(subset, options=options))
    assert got["routing"].n > 0 and len(got["calibration"].bins) == 7


def test_store_metrics_of_a_trailing_window(store: Store, items) -> None:
    write(store, items)
    end = items[100].timestamp
    got = store_metrics(store, window="day", end_time=end)
    assert (got["start_time"], got["end_time"]) == (end - 86400.0, end)
    assert got["interactions"] == sum(end - 86400 <= i.timestamp < end for i in items)
    assert store_metrics(store, window=3600.0, start_time=end)["end_time"] == end + 3600.0
    with pytest.raises(ValueError, match="at most one"):
        store_metrics(store, window="day", start_time=0.0, end_time=1.0)
    with pytest.raises(ValueError, match="window must be"):
        store_metrics(store, window="month")


def test_store_metrics_of_an_empty_store(store: Store) -> None:
    got = store_metrics(store)
    assert got["interactions"] == 0 and got["latency"].n == 0 and got["latency"].p99_ms is None
    assert got["satisfaction"].share_rated is None and got["routing"].accuracy is None
    assert got["calibration"].ece is None and got["failures"].slow == Rate(0, 0, None)
    assert store_metrics_by_window(store, "hour") == []


@pytest.mark.parametrize("window", ["hour", "day", "week", 7200.0])
def test_per_window_metrics_equal_in_sql_and_python(store: Store, items, window) -> None:
    write(store, items)
    got = store_metrics_by_window(store, window)
    want = metrics_by_window(items, window)
    assert_close(got, want)
    assert sum(w["interactions"] for w in got) == len(items)
    for w in got:
        assert w["interactions"] == sum(w["start_time"] <= i.timestamp < w["end_time"] for i in items)


def test_window_buckets_are_utc_aligned_and_weeks_start_on_monday(items) -> None:
    weeks = metrics_by_window(items, "week")
    assert weeks[0]["start_time"] == MONDAY and weeks[0]["end_time"] == MONDAY + 7 * 86400
    assert [w["interactions"] for w in weeks] == [336, 64]  # 48 per day over 7 days, then the rest
    days = metrics_by_window(items, "day")
    assert all(d["start_time"] % 86400 == 0 for d in days) and len(days) == 9
    hours = metrics_by_window(items, "hour")
    assert all(h["interactions"] == 2 for h in hours) and len(hours) == 200
    with pytest.raises(ValueError, match="window must be"):
        metrics_by_window(items, 0)


# -- the router, from route decisions --------------------------------------------------------------------


def decision(iid: str, n: int, t: float, chosen: str | None, alternatives: object) -> dict:
    return {
        "decision_id": f"{iid}:{n}",
        "interaction_id": iid,
        "run_id": None,
        "node": "route",
        "kind": "route",
        "chosen": chosen,
        "confidence": None,
        "alternatives": None if alternatives is None else dumps(alternatives),
        "features": None,
        "statistics": None,
        "timestamp": t,
    }


def test_router_metrics_equal_the_pure_functions(store: Store) -> None:
    rng = np.random.default_rng(8)
    items, decisions = [], []
    probs, labels, predicted_chosen, chosen_labels = [], [], [], []
    for i in range(120):
        label = AGENTS[i % 3] if i % 10 else None  # every tenth unlabeled
        item = make(i, random.Random(i), metadata={} if label is None else {"best_agent": label})
        items.append(item)
        p = rng.dirichlet(np.ones(3))
        iid = item.interaction_id
        if i % 7 == 0:  # no probabilities anywhere: the chosen option is the prediction
            decisions.append(decision(iid, 1, item.timestamp, AGENTS[int(p.argmax())], ["HRM", "TRM"]))
            if label:
                predicted_chosen.append(AGENTS[int(p.argmax())])
                chosen_labels.append(label)
            continue
        # An edge decision without probabilities comes first, and an escalation with others comes later.
        decisions.append(decision(iid, 1, item.timestamp, "hrm_node", None))
        decisions.append(
            decision(iid, 2, item.timestamp + 1, "parallel", dict(zip(AGENTS, (2 * p).tolist(), strict=True)))
        )
        decisions.append(decision(iid, 3, item.timestamp + 2, "parallel", {"HRM": 1.0}))
        if label:
            probs.append(p)
            labels.append(AGENTS.index(label))
    write(store, items)
    store.write(Batch({"decisions": decisions}))
    got = router_metrics(store, chunk_size=7, n_bins=5)
    probs_arr, y = np.array(probs), np.array(labels)
    pred = [AGENTS[k] for k in probs_arr.argmax(axis=1)] + predicted_chosen
    want_acc = router_accuracy(pred, [AGENTS[k] for k in y] + chosen_labels)
    correct = probs_arr.argmax(axis=1) == y
    assert_close(got.accuracy, want_acc)
    assert_close(got.calibration, expected_calibration_error(probs_arr.max(axis=1), correct, n_bins=5))
    assert got.probabilistic == len(y)
    assert got.brier == pytest.approx(brier_score(probs_arr, y))
    assert got.log_loss == pytest.approx(log_loss(probs_arr, y))
    assert_close(router_metrics(store, chunk_size=10_000, n_bins=5), got)


def test_router_metrics_filter_interactions_and_handle_no_decisions(store: Store) -> None:
    assert router_metrics(store).accuracy.n == 0 and router_metrics(store).brier is None
    rng = random.Random(1)
    items = [make(i, rng, metadata={"best_agent": "TRM"}, graph_name=("g1", "g2")[i % 2]) for i in range(7)]
    write(store, items)
    rows = [decision(i.interaction_id, 1, i.timestamp, None, {"TRM": 3, "HRM": 1}) for i in items[:6]]
    rows.append(decision(items[6].interaction_id, 1, items[6].timestamp, None, None))  # predicts nothing
    store.write(Batch({"decisions": rows}))
    got = router_metrics(store, graph_name="g1")
    assert (got.accuracy.n, got.accuracy.correct, got.probabilistic) == (3, 3, 3)
    assert got.brier == pytest.approx(0.25**2 + 0.25**2)
    assert got.log_loss == pytest.approx(-math.log(0.75))
    with pytest.raises(ValueError, match="chunk_size"):
        router_metrics(store, chunk_size=0)


def test_options_are_validated() -> None:
    with pytest.raises(ValueError, match="n_bins"):
        MetricOptions(n_bins=0)
    with pytest.raises(ValueError, match="confidence"):
        MetricOptions(confidence=1.0)
    with pytest.raises(ValueError, match="label_key"):
        MetricOptions(label_key='a"b')
