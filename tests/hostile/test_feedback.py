"""Hostile feedback: scores, thumbs, comments, corrections, values and ids of any shape, given to the store's
logger and to the capture handler; each is stored sanitized or refused naming the field."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cl_plugin import (
    CaptureHandler,
    InvalidRecordError,
    ProductionInteraction,
    ProductionInteractionLogger,
    UnknownInteractionError,
)
from cl_plugin.privacy import Sanitizer
from cl_plugin.store import Store
from cl_plugin.store.rows import feedback_row

FEEDBACK_FIELDS = ("interaction_id", "score", "thumbs", "correction", "comment", "source", "key")

text = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["\ud800", "\x00", "a\x00\udfff", "", "' OR 1=1 --"]),
    st.integers(1, 200_000).map(lambda n: "c" * n),
)
number = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-(2**70), 2**70),
    st.sampled_from([10**400, -(10**400), True, False, 0, 3, 5]),
)
odd = st.sampled_from([object(), b"\xff", [1, 2], {"a": 1}, (3,), 3j, {4}])
anything = st.one_of(st.none(), text, number, odd)


def _cyclic() -> dict[str, Any]:
    d: dict[str, Any] = {}
    d["a"] = d["b"] = d
    return d


feedback = st.fixed_dictionaries(
    {},
    optional={
        "score": st.one_of(st.none(), number, anything),
        "thumbs": st.one_of(st.sampled_from(["up", "down", "Up", None]), anything),
        "correction": st.one_of(st.none(), text, anything),
        "comment": st.one_of(st.none(), text, anything),
        "value": st.one_of(anything, st.builds(_cyclic), st.lists(anything, max_size=3)),
        "source": st.one_of(st.sampled_from(["user", "annotator", "llm_judge"]), text, anything),
        "key": st.one_of(st.just("user_feedback"), text, anything),
    },
)
SETTINGS = settings(
    max_examples=80,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture(scope="module")
def logger(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProductionInteractionLogger]:
    base = tmp_path_factory.mktemp("hostile-feedback")
    lg = ProductionInteractionLogger(
        {"storage": str(base), "durability": "sync"},
        store=Store.from_url(f"sqlite:///{base / 'fb.db'}").setup(),
    )
    lg.log_interaction_sync(
        ProductionInteraction(
            interaction_id="target", timestamp=time.time(), session_id="s", user_query="q", response="r"
        )
    )
    lg.record_feedback("target", score=4.0)
    yield lg
    lg.close(timeout=10)


def _check_stored(store: Store) -> None:
    row = store.get_interaction("target")
    assert row is not None
    score = row["user_feedback_score"]
    assert score is None or 1.0 <= score <= 5.0
    assert row["thumbs_up_down"] in (None, "up", "down")
    for c in row["corrections"]:
        assert "\x00" not in c
        c.encode("utf-8")


@SETTINGS
@given(fields=feedback)
def test_logger_feedback_with_any_values_is_stored_or_refused_naming_the_field(
    logger: ProductionInteractionLogger, fields: dict[str, Any]
) -> None:
    before = len(logger.store.feedback.history("target"))
    try:
        logger.record_feedback("target", **fields)
    except InvalidRecordError as exc:
        assert exc.field in FEEDBACK_FIELDS and exc.field in str(exc)
        assert len(logger.store.feedback.history("target")) == before
    else:
        assert len(logger.store.feedback.history("target")) == before + 1
    _check_stored(logger.store)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(iid=anything)
def test_feedback_for_any_id_is_refused_or_unknown(iid: Any) -> None:
    """An id that names nothing is an UnknownInteractionError, a malformed one an InvalidRecordError."""
    lg = ProductionInteractionLogger({"enabled": False})
    with pytest.raises((InvalidRecordError, UnknownInteractionError)):
        lg.record_feedback(iid, score=3)


@pytest.fixture(scope="module")
def handler() -> Iterator[CaptureHandler]:
    h = CaptureHandler(Store.from_url("sqlite://").setup(), flush_interval=0.02)
    yield h
    h.close(timeout=10)


@SETTINGS
@given(fields=feedback, iid=st.one_of(st.builds(lambda: str(uuid.uuid4())), anything))
def test_capture_handler_feedback_with_any_values_never_raises_anything_else(
    handler: CaptureHandler, fields: dict[str, Any], iid: Any
) -> None:
    try:
        handler.record_feedback(iid, **fields)
    except InvalidRecordError as exc:
        assert exc.field in FEEDBACK_FIELDS
    except UnknownInteractionError:
        pass
    assert handler.flush(10)
    assert handler.writer.stats.lost == 0


@pytest.mark.parametrize("score", [10**400, -(10**400), 2**1024])
def test_a_score_beyond_a_floats_range_is_refused_naming_the_score(score: int) -> None:
    """math.isfinite raised OverflowError on such an int, out of record_feedback."""
    with pytest.raises(InvalidRecordError) as err:
        feedback_row("i", Sanitizer(), score=score, source="annotator")
    assert err.value.field == "score"


@pytest.mark.parametrize("iid", ["\ud800", "run\x00id"], ids=["lone_surrogate", "nul"])
def test_capture_feedback_for_an_id_no_database_can_hold_is_refused_naming_it(
    handler: CaptureHandler, iid: str
) -> None:
    """The handler looked such an id up as given, and SQLite's driver raised UnicodeEncodeError."""
    with pytest.raises(InvalidRecordError) as err:
        handler.record_feedback(iid, score=3)
    assert err.value.field == "interaction_id"
