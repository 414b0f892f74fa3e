"""ProductionInteraction and the checks that decide whether a record can be stored."""

from __future__ import annotations

import math

import pytest

from cl_plugin.records import SPEC_FIELDS, ProductionInteraction, interaction_problems


def ok(**over) -> ProductionInteraction:
    base = dict(interaction_id="i", timestamp=1.0, session_id="s", user_query="q", response="r")
    base.update(over)
    return ProductionInteraction(**base)


def test_the_record_has_every_spec_field() -> None:
    fields = set(ok().to_dict())
    assert set(SPEC_FIELDS) <= fields
    assert {"run_id", "graph_name", "user_id", "corrections"} <= fields


def test_from_dict_reads_store_rows() -> None:
    rec = ProductionInteraction.from_dict(
        {
            **ok().to_dict(),
            "hallucination_detected": 1,
            "metadata": '{"a": 1}',
            "corrections": None,
            "extra": 5,
        }
    )
    assert rec.hallucination_detected is True
    assert rec.metadata == {"a": 1}
    assert rec.corrections == []


def test_a_valid_record_has_no_problems() -> None:
    assert (
        interaction_problems(ok(agent_confidence=1, latency_ms=0, tokens_used=0, user_feedback_score=5)) == []
    )


@pytest.mark.parametrize(
    ("over", "field"),
    [
        ({"latency_ms": math.nan}, "latency_ms"),
        ({"latency_ms": -1.0}, "latency_ms"),
        ({"latency_ms": math.inf}, "latency_ms"),
        ({"cost": math.inf}, "cost"),
        ({"user_feedback_score": 6.0}, "user_feedback_score"),
        ({"user_feedback_score": math.nan}, "user_feedback_score"),
        ({"user_feedback_score": True}, "user_feedback_score"),
        ({"agent_confidence": 1.2}, "agent_confidence"),
        ({"retrieval_quality": -0.1}, "retrieval_quality"),
        ({"tokens_used": 1.5}, "tokens_used"),
        ({"tokens_used": -3}, "tokens_used"),
        ({"thumbs_up_down": "sideways"}, "thumbs_up_down"),
        ({"timestamp": math.nan}, "timestamp"),
        ({"interaction_id": ""}, "interaction_id"),
        ({"user_query": None}, "user_query"),
        ({"metadata": ["a"]}, "metadata"),
        ({"corrections": [1]}, "corrections"),
        ({"error_occurred": "yes"}, "error_occurred"),
    ],
)
def test_each_bad_value_is_named(over, field) -> None:
    problems = interaction_problems(ok(**over))
    assert [name for name, _ in problems] == [field]


def test_score_range_is_configurable() -> None:
    assert interaction_problems(ok(user_feedback_score=9.0), min_score=0, max_score=10) == []
    assert interaction_problems(ok(user_feedback_score=0.5))[0][0] == "user_feedback_score"
