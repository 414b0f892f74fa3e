"""Synthetic interactions with planted failure themes: shape, determinism, honest labels."""

from __future__ import annotations

from collections import Counter

import pytest
from cl_plugin.graphs.failures import HEALTHY_TOPICS, THEMES, iter_planted_failures, planted_failures

from cl_plugin.privacy import Sanitizer
from cl_plugin.records import ProductionInteraction, interaction_problems
from cl_plugin.store import Store
from cl_plugin.store.rows import INTERACTION_COLUMNS, row_from_interaction
from cl_plugin.store.store import Batch


def _signals(row: dict) -> bool:
    """Whether a row shows any failure signal (low stars, thumbs down, error, hallucination, retrieval, slow)."""
    score = row["user_feedback_score"]
    quality = row["retrieval_quality"]
    latency = row["latency_ms"]
    return bool(
        (score is not None and score < 3)
        or row["thumbs_up_down"] == "down"
        or row["error_occurred"]
        or row["hallucination_detected"]
        or row["retrieval_failed"]
        or (quality is not None and quality < 0.3)
        or (latency is not None and latency > 5000)
    )


def test_rows_have_exactly_the_keys_of_store_rows_and_are_valid_records() -> None:
    rows, labels = planted_failures(500, seed=2)
    assert len(rows) == len(labels) == 500
    for row in rows:
        assert tuple(row) == INTERACTION_COLUMNS
        assert isinstance(row["metadata"], dict) and isinstance(row["corrections"], list)
        assert interaction_problems(ProductionInteraction.from_dict(row)) == []


def test_rows_read_back_from_a_store_unchanged() -> None:
    rows, _ = planted_failures(200, seed=5)
    store = Store.from_url("sqlite://").setup()
    batch = Batch()
    for row in rows:
        batch.add("interactions", row_from_interaction(ProductionInteraction.from_dict(row), Sanitizer()))
    store.write(batch)
    back = {r["interaction_id"]: r for r in store.query_interactions(limit=None)}
    assert back == {r["interaction_id"]: r for r in rows}
    store.close()


def test_the_same_seed_gives_the_same_rows_and_the_stream_matches_the_list() -> None:
    a = planted_failures(300, seed=7)
    b = planted_failures(300, seed=7)
    c = planted_failures(300, seed=8)
    streamed = list(iter_planted_failures(300, seed=7))
    assert a == b
    assert a[0] != c[0]
    assert [r for r, _ in streamed] == a[0] and [lab for _, lab in streamed] == a[1]


def test_failures_show_a_signal_and_healthy_rows_show_none() -> None:
    rows, labels = planted_failures(4000, seed=0, themes=8)
    assert all(_signals(r) == (lab is not None) for r, lab in zip(rows, labels, strict=True))


def test_failure_rate_and_theme_count_are_honoured() -> None:
    _, labels = planted_failures(6000, seed=1, themes=3, failure_rate=0.2)
    counts = Counter(lab for lab in labels if lab)
    assert set(counts) == {t.name for t in THEMES[:3]}
    assert sum(counts.values()) / 6000 == pytest.approx(0.2, abs=0.02)


def test_each_theme_fails_in_its_own_way() -> None:
    rows, labels = planted_failures(6000, seed=3, themes=8)
    by_theme: dict[str, list[dict]] = {}
    for row, lab in zip(rows, labels, strict=True):
        if lab:
            by_theme.setdefault(lab, []).append(row)
    for theme in THEMES:
        got = by_theme[theme.name]
        assert all(r["agent_selected"] == theme.agent for r in got)
        if theme.mode == "low_rating":
            assert all(r["user_feedback_score"] <= 2 for r in got)
        elif theme.mode == "poor_retrieval":
            assert all(r["retrieval_quality"] < 0.3 for r in got)
        elif theme.mode == "routing":
            assert all(r["metadata"]["best_agent"] != r["agent_selected"] for r in got)
            assert all(r["agent_confidence"] is None or r["agent_confidence"] < 0.5 for r in got)
        elif theme.mode == "slow":
            assert all(r["latency_ms"] > 5000 for r in got)
        elif theme.mode == "error":
            assert all(r["error_occurred"] and r["metadata"]["failed_node"] == theme.node for r in got)
        elif theme.mode == "hallucination":
            assert all(r["hallucination_detected"] for r in got)
        elif theme.mode == "thumbs_down":
            assert all(r["thumbs_up_down"] == "down" for r in got)


def test_values_are_missing_as_in_production() -> None:
    rows, labels = planted_failures(3000, seed=4)
    healthy = [r for r, lab in zip(rows, labels, strict=True) if lab is None]
    unrated = sum(r["user_feedback_score"] is None for r in healthy) / len(healthy)
    assert unrated > 0.5
    no_retrieval = [r for r in rows if "retrieve" not in r["metadata"]["node_path"]]
    assert no_retrieval and all(
        r["retrieval_quality"] is None and r["retrieval_failed"] is None for r in no_retrieval
    )
    assert any(r["agent_confidence"] is None for r in rows)


def test_theme_queries_also_appear_in_healthy_traffic() -> None:
    rows, labels = planted_failures(3000, seed=6)
    healthy_queries = [r["user_query"] for r, lab in zip(rows, labels, strict=True) if lab is None]
    assert any("refund" in q for q in healthy_queries)
    assert len(HEALTHY_TOPICS) >= 10


@pytest.mark.parametrize("kwargs", [{"themes": 0}, {"themes": 9}, {"failure_rate": 1.5}])
def test_bad_arguments_are_refused(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        next(iter_planted_failures(10, **kwargs))
