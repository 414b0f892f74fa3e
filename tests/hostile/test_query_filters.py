"""Hostile query filters: injection attempts match nothing and harm nothing; impossible values are refused."""

from __future__ import annotations

import time
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cl_plugin import InvalidRecordError, ProductionInteraction
from cl_plugin.privacy import Sanitizer
from cl_plugin.store import Batch, Store
from cl_plugin.store.rows import row_from_interaction

INJECTIONS = [
    "x' OR '1'='1",
    "'; DROP TABLE interactions; --",
    'HRM" OR 1=1 --',
    "HRM') UNION SELECT * FROM feedback --",
    "%",
    "_",
    "\\",
    "HRM; DELETE FROM interactions",
]


def canary(store: Store) -> None:
    item = ProductionInteraction(
        interaction_id="canary", timestamp=time.time(), session_id="s", user_query="q", response="r",
        agent_selected="HRM", graph_name="g",
    )  # fmt: skip
    batch = Batch()
    batch.add("interactions", row_from_interaction(item, Sanitizer(None)))
    store.write(batch)


@pytest.mark.parametrize("attempt", INJECTIONS)
def test_injection_attempts_match_nothing_and_leave_the_tables_whole(store: Store, attempt: str) -> None:
    canary(store)
    for name in ("agent", "session_id", "graph_name"):
        assert store.query_interactions(**{name: attempt}) == []
        assert store.count_interactions(**{name: attempt}) == 0
        assert [chunk for chunk in store.iter_interactions(**{name: attempt})] == []
    assert store.query_interactions(agent=["HRM", attempt])[0]["interaction_id"] == "canary"
    assert store.count_interactions() == 1


@pytest.mark.parametrize(
    ("filters", "field"),
    [
        ({"agent": "HRM\x00"}, "agent"),
        ({"session_id": "\ud800"}, "session_id"),
        ({"graph_name": 7}, "graph_name"),
        ({"start_time": float("nan")}, "start_time"),
        ({"end_time": float("inf")}, "end_time"),
        ({"start_time": 10**40}, "start_time"),
        ({"max_feedback_score": "3"}, "max_feedback_score"),
        ({"min_feedback_score": True}, "min_feedback_score"),
    ],
)
def test_impossible_filter_values_are_refused_by_name_on_every_engine(
    store: Store, filters: dict[str, Any], field: str
) -> None:
    canary(store)
    for query in (store.query_interactions, store.count_interactions):
        with pytest.raises(InvalidRecordError, match=field) as exc:
            query(**filters)
        assert exc.value.field == field
    assert store.count_interactions() == 1


@settings(
    max_examples=80,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    text=st.text(max_size=40),
    number=st.one_of(
        st.none(), st.floats(allow_nan=True, allow_infinity=True), st.integers(-(10**20), 10**20)
    ),
)
def test_any_filter_value_gives_rows_or_a_named_refusal(
    tmp_path_factory: Any, text: str, number: Any
) -> None:
    store = Store.from_url(f"sqlite:///{tmp_path_factory.mktemp('q') / 's.db'}").setup()
    canary(store)
    for filters in ({"agent": text}, {"session_id": text}, {"graph_name": text}, {"start_time": number}):
        try:
            rows = store.query_interactions(**filters)
        except InvalidRecordError as exc:
            assert exc.field in filters
        else:
            assert all(r["interaction_id"] == "canary" for r in rows)
    assert store.count_interactions() == 1
    store.close()
