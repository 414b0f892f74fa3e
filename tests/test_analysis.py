"""FailurePatternAnalyzer: each planted pattern found and nothing invented, attribution honest under the null."""

from __future__ import annotations

import math
import random

import pytest
from cl_plugin.graphs.failures import THEMES, planted_failures
from langchain_core.embeddings import DeterministicFakeEmbedding

from cl_plugin import FailureAnalysis, FailurePatternAnalyzer
from cl_plugin.analysis import failure_signals
from cl_plugin.config import ContinualLearningConfig
from cl_plugin.errors import ConfigError
from cl_plugin.privacy import Sanitizer
from cl_plugin.records import ProductionInteraction
from cl_plugin.store import Store
from cl_plugin.store.rows import row_from_interaction
from cl_plugin.store.store import Batch

PRIMARY = {
    "low_rating": "low_rating",
    "poor_retrieval": "poor_retrieval",
    "routing": "routing_mistake",
    "slow": "slow_response",
    "error": "node_errors",
    "hallucination": "hallucination",
    "thumbs_down": "low_rating",
}
SIGNAL_PATTERNS = {"poor_retrieval", "slow_response", "node_errors", "hallucination"}


@pytest.fixture(scope="module")
def all_themes() -> tuple[list[dict], list[str | None]]:
    return planted_failures(4000, seed=11, themes=8)


@pytest.fixture(scope="module")
def analysis() -> FailureAnalysis:
    rows, _ = planted_failures(4000, seed=0)
    return FailurePatternAnalyzer().analyze(rows)


def _only(rows: list[dict], labels: list[str | None], theme: str | None) -> list[dict]:
    """Healthy rows plus the failures of one theme (None: healthy rows only)."""
    return [r for r, label in zip(rows, labels, strict=True) if label in (None, theme)]


@pytest.mark.parametrize("theme", THEMES, ids=lambda t: t.name)
def test_each_planted_theme_gives_its_pattern_and_no_other_signal_pattern(
    theme, all_themes: tuple[list[dict], list[str | None]]
) -> None:
    rows, labels = all_themes
    patterns = FailurePatternAnalyzer().analyze_failures(_only(rows, labels, theme.name))
    kinds = {p.pattern_type for p in patterns}
    expected = PRIMARY[theme.mode]
    assert expected in kinds
    assert kinds & SIGNAL_PATTERNS <= {expected}
    main = next(p for p in patterns if p.pattern_type == expected)
    assert theme.agent in main.affected_agents
    assert main.frequency > 0 and 0 < main.rate <= 1 and 0 < main.severity <= 1
    assert main.example_ids and all(isinstance(i, str) for i in main.example_ids)
    if theme.mode == "error":
        assert main.affected_nodes == {theme.node: main.frequency}
        assert f"node '{theme.node}'" in main.suggested_fix
    if theme.mode == "slow":
        assert f"node '{theme.node}'" in main.suggested_fix
    cluster = next(p for p in patterns if p.pattern_type == "failure_cluster")
    assert cluster.details["top_terms"] and cluster.details["representatives"]


def test_healthy_traffic_has_no_pattern(all_themes: tuple[list[dict], list[str | None]]) -> None:
    rows, labels = all_themes
    result = FailurePatternAnalyzer().analyze(_only(rows, labels, None))
    assert result.patterns == [] and result.counts["failures"] == 0
    assert not any(a.significant for a in result.attribution)


def test_patterns_are_sorted_by_severity_times_the_failures_they_account_for(
    analysis: FailureAnalysis,
) -> None:
    def weight(p) -> float:
        diagnostic = p.details.get("diagnostic")
        return p.severity * (diagnostic["attributable"] if diagnostic else p.frequency)

    leads = [
        p
        for p in analysis.patterns
        if p.details.get("diagnostic", {}).get("verdict", "explains") == "explains"
    ]
    assert analysis.patterns[: len(leads)] == leads
    scores = [weight(p) for p in leads]
    assert scores == sorted(scores, reverse=True)
    retrieval = next(p for p in analysis.patterns if p.pattern_type == "poor_retrieval")
    assert retrieval.details["diagnostic"]["verdict"] == "explains"


def test_a_metadata_best_agent_names_the_routing_fix(analysis: FailureAnalysis) -> None:
    direct = next(
        p for p in analysis.patterns if p.pattern_type == "routing_mistake" and "better_agent" in p.details
    )
    assert direct.details["better_agent"] == {"MCTS -> HRM": direct.frequency}
    assert "to HRM instead of MCTS" in direct.suggested_fix and "password" in direct.suggested_fix


def test_an_agent_failing_one_query_cluster_is_found_within_the_cluster(analysis: FailureAnalysis) -> None:
    within = [
        p for p in analysis.patterns if p.pattern_type == "routing_mistake" and "cluster_id" in p.details
    ]
    billing = next(p for p in within if "refund" in p.details["cluster"])
    assert billing.details["agent"] == "TRM" and billing.details["better_agent"] == "HRM"
    assert billing.details["estimated"] and billing.rate > 0.8
    assert (
        "Route queries about 'refund" in billing.suggested_fix
        and "to HRM instead of TRM" in billing.suggested_fix
    )


def test_attribution_finds_the_planted_factors(analysis: FailureAnalysis) -> None:
    significant = {(a.factor, a.level) for a in analysis.attribution if a.significant and a.lift > 1}
    assert ("agent", "TRM") in significant
    assert ("node", "sql_executor") in significant and ("node", "pdf_renderer") in significant
    clusters = [level for factor, level in significant if factor == "query_cluster"]
    assert any("refund" in level for level in clusters) and any("join" in level for level in clusters)
    for a in analysis.attribution:
        assert 0 <= a.ci_low <= a.rate <= a.ci_high <= 1
        assert a.p_value <= a.q_value <= 1
        assert a.significant == (a.q_value <= 0.05)
    node = next(p for p in analysis.patterns if p.pattern_type == "node_errors")
    assert node.details["contributors"] and "over-represented" in node.suggested_fix


def _null_rows(n: int, seed: int) -> list[dict]:
    """Traffic whose failures (low stars) are independent of every factor the attribution tests."""
    rng = random.Random(seed)
    topics = ("reset my password", "export a pdf report", "refund in EUR", "slow sql join", "okta login")
    return [
        {
            "interaction_id": f"{seed}-{i}",
            "timestamp": 1_700_000_000.0 + 60.0 * i,
            "user_query": f"{rng.choice(topics)} {rng.choice(('please', 'now', 'again', 'today'))}",
            "agent_selected": rng.choice(("HRM", "TRM", "MCTS")),
            "agent_confidence": rng.uniform(0.0, 1.0),
            "user_feedback_score": 1.0 if rng.random() < 0.2 else 5.0,
            "latency_ms": rng.uniform(100.0, 4900.0),
            "retrieval_quality": rng.uniform(0.3, 1.0),
            "retrieval_failed": False,
            "error_occurred": False,
            "metadata": {"node_path": ["route", rng.choice(("retrieve", "tool")), "answer"]},
        }
        for i in range(n)
    ]


def test_attribution_flags_nothing_beyond_the_false_discovery_rate_on_null_data() -> None:
    analyzer = FailurePatternAnalyzer()
    runs, tests, false = 16, 0, 0
    runs_with_a_flag = 0
    for seed in range(runs):
        rows = analyzer.attribute_failures(_null_rows(800, seed))
        tests += len(rows)
        flagged = sum(a.significant for a in rows)
        false += flagged
        runs_with_a_flag += flagged > 0
    # Under the global null, Benjamini-Hochberg at 5% flags anything in at most 5% of runs (in expectation).
    assert runs_with_a_flag <= 3, (runs_with_a_flag, false, tests)
    assert false / tests < 0.02


def test_the_spec_usage_snippet_runs_as_written(
    capsys: pytest.CaptureFixture[str], analysis: FailureAnalysis
) -> None:
    interactions, _ = planted_failures(1500, seed=3)

    analyzer = FailurePatternAnalyzer({"min_cluster_size": 5, "similarity_threshold": 0.7})

    # Analyze failures
    patterns = analyzer.analyze_failures(interactions)

    for pattern in patterns:
        print(f"{pattern.pattern_type}: {pattern.description}")
        print(f"Suggested fix: {pattern.suggested_fix}")

    out = capsys.readouterr().out
    assert out.count("Suggested fix: ") == len(patterns) > 0
    assert "low_rating: " in out and "node_errors: Node 'sql_executor'" in out


def test_records_and_dicts_give_the_same_patterns() -> None:
    rows, _ = planted_failures(600, seed=4)
    records = [ProductionInteraction.from_dict(r) for r in rows]
    analyzer = FailurePatternAnalyzer()
    assert analyzer.analyze_failures(records) == analyzer.analyze_failures(rows)


def test_empty_input_gives_nothing() -> None:
    result = FailurePatternAnalyzer().analyze([])
    assert result.patterns == result.attribution == result.clusters == []
    assert result.counts["interactions"] == 0


def test_a_single_record_is_analysed() -> None:
    row = {"interaction_id": "one", "user_query": "why", "user_feedback_score": 1.0, "latency_ms": 9000.0}
    patterns = FailurePatternAnalyzer().analyze_failures([row])
    assert {p.pattern_type for p in patterns} == {"low_rating", "slow_response"}
    assert all(p.frequency == 1 and p.rate == 1.0 and p.example_ids == ["one"] for p in patterns)


def test_no_failures_and_all_failures() -> None:
    rows, labels = planted_failures(1000, seed=5)
    healthy = [r for r, label in zip(rows, labels, strict=True) if label is None]
    failing = [r for r, label in zip(rows, labels, strict=True) if label is not None]
    assert FailurePatternAnalyzer().analyze_failures(healthy) == []
    result = FailurePatternAnalyzer().analyze(failing)
    assert result.counts["failures"] == len(failing)
    assert result.patterns and not any(a.significant and a.factor == "agent" for a in result.attribution)
    assert all(a.rate == 1.0 and a.baseline_rate == 1.0 for a in result.attribution)


def test_missing_fields_are_missing_not_failures() -> None:
    rows = [
        {},
        {"interaction_id": "a"},
        {
            "interaction_id": "b",
            "retrieval_quality": None,
            "retrieval_failed": None,
            "user_feedback_score": None,
        },
        {
            "interaction_id": "c",
            "user_feedback_score": math.nan,
            "latency_ms": "slow",
            "metadata": "not json",
        },
        {
            "interaction_id": "d",
            "user_query": None,
            "agent_selected": None,
            "timestamp": None,
            "metadata": None,
        },
    ]
    result = FailurePatternAnalyzer().analyze(rows)
    assert result.patterns == [] and result.counts["interactions"] == 5
    assert result.counts["observable_low_rating"] == result.counts["observable_poor_retrieval"] == 0


def test_the_failure_definition_lives_in_one_function() -> None:
    assert failure_signals({}) == ()
    assert failure_signals({"thumbs_up_down": "down"}) == ("low_rating",)
    assert failure_signals({"metadata": {"failed_node": "tool"}}) == ("error",)
    assert failure_signals({"retrieval_quality": 0.1, "hallucination_detected": True}) == ("hallucination",)
    assert failure_signals(
        {"retrieval_quality": 0.1, "hallucination_detected": True, "agent_confidence": 0.2}, diagnostics=True
    ) == ("hallucination", "poor_retrieval", "low_confidence")
    assert failure_signals({"corrections": '["Answer: 4"]'}) == ("correction",)
    assert failure_signals({"retrieval_failed": True, "latency_ms": 9000.0}) == ()
    assert failure_signals({"user_feedback_score": 3.0, "latency_ms": 5000.0}) == ()
    assert failure_signals({"user_feedback_score": 3.0}, low_rating_threshold=4.0) == ("low_rating",)
    with pytest.raises(TypeError, match="dicts"):
        FailurePatternAnalyzer().analyze([42])


def test_thresholds_come_from_the_config() -> None:
    rows = [{"interaction_id": str(i), "latency_ms": 3000.0, "user_feedback_score": 3.0} for i in range(10)]
    assert FailurePatternAnalyzer().analyze_failures(rows) == []
    strict = FailurePatternAnalyzer(slow_response_ms=2000, low_rating_threshold=3.5)
    assert {p.pattern_type for p in strict.analyze_failures(rows)} == {"slow_response", "low_rating"}


def test_the_stream_matches_the_batch_and_keeps_bounded_samples() -> None:
    rows, _ = planted_failures(3000, seed=6)
    analyzer = FailurePatternAnalyzer()
    batch = analyzer.analyze(rows)
    chunks = [rows[i : i + 700] for i in range(0, len(rows), 700)]
    assert analyzer.analyze_stream(chunks) == batch
    small = analyzer.analyze_stream(chunks, sample_size=300)
    assert small.counts["failure_sample"] == small.counts["traffic_sample"] == 300
    assert small.sampled and small.counts["failures"] == batch.counts["failures"]
    exact = {p.pattern_type: p.frequency for p in batch.patterns if p.pattern_type in SIGNAL_PATTERNS}
    assert exact == {p.pattern_type: p.frequency for p in small.patterns if p.pattern_type in SIGNAL_PATTERNS}
    assert all(p.details["estimated"] for p in small.patterns if p.pattern_type == "failure_cluster")


def test_interactions_streamed_from_a_store_are_analysed() -> None:
    rows, _ = planted_failures(500, seed=7)
    store = Store.from_url("sqlite://").setup()
    batch = Batch()
    for row in rows:
        batch.add("interactions", row_from_interaction(ProductionInteraction.from_dict(row), Sanitizer()))
    store.write(batch)
    analyzer = FailurePatternAnalyzer()
    streamed = analyzer.analyze_stream(store.iter_interactions(chunk_size=128))
    assert streamed.counts == analyzer.analyze(rows).counts
    store.close()


def test_failed_queries_are_clustered_with_the_given_embeddings() -> None:
    rows = [
        {"interaction_id": f"{q}-{i}", "user_query": q, "error_occurred": True}
        for q in ("pdf export times out", "refund not credited")
        for i in range(6)
    ]
    result = FailurePatternAnalyzer(embeddings=DeterministicFakeEmbedding(size=32)).analyze(rows)
    assert sorted(c.representatives for c in result.clusters) == [
        ("pdf export times out",),
        ("refund not credited",),
    ]


def test_config_dict_keywords_and_the_whole_section_are_accepted() -> None:
    assert FailurePatternAnalyzer({"min_cluster_size": 7}).config.min_cluster_size == 7
    assert FailurePatternAnalyzer({"min_cluster_size": 7}, min_cluster_size=9).config.min_cluster_size == 9
    whole = ContinualLearningConfig(failure_analysis={"similarity_threshold": 0.8})
    assert FailurePatternAnalyzer(whole).config.similarity_threshold == 0.8


@pytest.mark.parametrize(
    ("config", "kwargs", "key"),
    [
        ({"min_cluster_sise": 5}, {}, "failure_analysis.min_cluster_sise"),
        ({"similarity_threshold": 1.5}, {}, "failure_analysis.similarity_threshold"),
        (None, {"slow_response_ms": -1}, "failure_analysis.slow_response_ms"),
        (None, {"analyze_frequency": "yearly"}, "failure_analysis.analyze_frequency"),
    ],
)
def test_config_errors_name_the_key(config: dict | None, kwargs: dict, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        FailurePatternAnalyzer(config, **kwargs)
    assert info.value.key == key and key in str(info.value)


def test_error_messages_are_counted_by_kind_and_shown_redacted() -> None:
    rows = [
        {
            "interaction_id": f"e{i}",
            "timestamp": float(i),
            "user_query": f"lookup order {i}",
            "response": "",
            "error_occurred": i % 3 != 2,
            "metadata": {
                **({"failed_node": "lookup"} if i % 3 != 2 else {}),
                "error_message": (
                    f"TimeoutError: inventory API gave no answer after {i}s"
                    if i % 3 == 0
                    else f"customer ana{i}@example.com not found in 'crm-{i}'"
                ),
            },
        }
        for i in range(60)
    ]
    [pattern] = [
        p for p in FailurePatternAnalyzer().analyze_failures(rows) if p.pattern_type == "node_errors"
    ]
    assert pattern.details["error_types"] == {
        "TimeoutError": 20,
        "customer [EMAIL] not found in #": 20,
    }
    assert "@example.com" not in pattern.description + pattern.suggested_fix


def _document_bot(
    n: int, *, seed: int, poor_share: float, bad_if_poor: float, bad_otherwise: float
) -> list[dict]:
    """Rows of a document Q&A bot (agents ``lookup`` and ``summarize``) that retrieves for every question.

    Half the answers are rated; a rating is bad with ``bad_if_poor`` when retrieval was poor, else with
    ``bad_otherwise``.
    """
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        poor = rng.random() < poor_share
        bad = rng.random() < (bad_if_poor if poor else bad_otherwise)
        rated = rng.random() < 0.5
        rows.append(
            {
                "interaction_id": f"doc-{i}",
                "user_query": rng.choice(
                    ("contract renewal terms", "summarize the audit memo", "leave policy")
                )
                + f" {rng.randrange(50)}",
                "agent_selected": rng.choice(("lookup", "summarize")),
                "agent_confidence": round(rng.uniform(0.6, 0.99), 2),
                "retrieval_quality": round(rng.uniform(0.02, 0.25) if poor else rng.uniform(0.4, 0.95), 3),
                "retrieval_failed": False,
                "latency_ms": round(rng.uniform(300.0, 2500.0), 1),
                "error_occurred": False,
                "user_feedback_score": (float(rng.choice((1, 2))) if bad else float(rng.choice((4, 5))))
                if rated
                else None,
                "bad": bad,
            }
        )
    return rows


def test_poor_retrieval_that_does_not_vary_with_outcomes_is_not_ranked_as_a_cause() -> None:
    rows = _document_bot(3000, seed=3, poor_share=0.45, bad_if_poor=0.1, bad_otherwise=0.1)
    result = FailurePatternAnalyzer().analyze(rows)
    low = sum(1 for r in rows if r["user_feedback_score"] is not None and r["user_feedback_score"] < 3)
    assert result.counts["failures"] == low
    truth = sum(r["bad"] for r in rows) / len(rows)
    assert abs(result.outcome.rate - truth) < 0.02 and not result.outcome.lower_bound
    retrieval = next(d for d in result.diagnostics if d.signal == "poor_retrieval")
    assert retrieval.verdict == "independent" and 0.35 < retrieval.share_failed < 0.55
    assert "does not vary with outcomes" in retrieval.describe()
    assert result.patterns[0].pattern_type == "low_rating"
    pattern = next(p for p in result.patterns if p.pattern_type == "poor_retrieval")
    assert result.patterns.index(pattern) == len(result.patterns) - 1
    assert pattern.suggested_fix.startswith("Not a lead for the failures")
    assert pattern.details["diagnostic"]["verdict"] == "independent"


def test_poor_retrieval_that_drives_low_ratings_is_found_and_explained() -> None:
    rows = _document_bot(3000, seed=4, poor_share=0.3, bad_if_poor=0.6, bad_otherwise=0.05)
    result = FailurePatternAnalyzer().analyze(rows)
    retrieval = next(d for d in result.diagnostics if d.signal == "poor_retrieval")
    assert retrieval.verdict == "explains" and retrieval.reference == "good"
    # P(poor | bad) = .3 * .6 / (.3 * .6 + .7 * .05) = 0.84; P(poor | good) = .3 * .4 / (.3 * .4 + .7 * .95) = 0.15
    assert abs(retrieval.share_failed - 0.84) < 0.06 and abs(retrieval.share_reference - 0.15) < 0.04
    assert retrieval.q_value < 1e-6 and retrieval.attributable > 0.5 * retrieval.failed_with
    assert result.diagnostics[0] is retrieval
    said = retrieval.describe()
    assert said.startswith(f"{retrieval.share_failed:.0%} of the {retrieval.failed:,} failed interactions")
    assert f"against {retrieval.share_reference:.0%} of the" in said and "goes with the failures" in said
    pattern = next(p for p in result.patterns if p.pattern_type == "poor_retrieval")
    assert said in pattern.description and pattern.suggested_fix.startswith("Add documents covering")
    assert set(pattern.example_ids) <= {r["interaction_id"] for r in rows if r["bad"]}
    bucket = next(a for a in result.attribution if a.factor == "retrieval_quality" and a.level == "<0.3")
    assert bucket.significant and bucket.lift > 3


def test_a_diagnostic_seen_on_nearly_everything_is_reported_as_such_and_listed_last() -> None:
    rows = _document_bot(2000, seed=5, poor_share=0.96, bad_if_poor=0.15, bad_otherwise=0.15)
    result = FailurePatternAnalyzer().analyze(rows)
    retrieval = next(d for d in result.diagnostics if d.signal == "poor_retrieval")
    assert retrieval.verdict == "ubiquitous" and retrieval.prevalence > 0.9
    assert "too common to tell failures apart" in retrieval.describe()
    pattern = next(p for p in result.patterns if p.pattern_type == "poor_retrieval")
    assert result.patterns[-1] is pattern and pattern.suggested_fix.startswith("Not a lead")
    assert result.patterns[0].pattern_type == "low_rating"


def test_without_ratings_the_failure_rate_is_a_lower_bound_from_errors() -> None:
    rows = [
        {"interaction_id": str(i), "error_occurred": i % 10 == 0, "latency_ms": 9000.0} for i in range(100)
    ]
    result = FailurePatternAnalyzer().analyze(rows)
    assert result.outcome.rate == pytest.approx(0.1) and result.outcome.lower_bound
    assert "a lower bound" in result.outcome.describe()
    slow = next(d for d in result.diagnostics if d.signal == "slow")
    assert slow.verdict == "ubiquitous" and result.counts["failures"] == 10
