"""One feedback API: the store, the capture handler and the logger take the same arguments, check and
sanitize them the same way, and refuse the same input with the same error."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from cl_plugin import CaptureHandler, ProductionInteraction, ProductionInteractionLogger
from cl_plugin.errors import InvalidRecordError, UnknownInteractionError
from cl_plugin.store import Store
from tests.user_graph import serve

EMAIL = "ann.lee@example.com"


def test_a_store_records_feedback_with_the_handlers_arguments(store_url: str, tmp_path: Path) -> None:
    handler = CaptureHandler(Store.from_url(store_url), journal_dir=tmp_path / "journal")
    try:
        run_ids = serve(handler)
        assert handler.flush(timeout=30)
        # A feedback endpoint holds a store, not the handler (sqlite:// lives in one engine: the same store).
        store = handler.store if store_url == "sqlite://" else Store.from_url(store_url)
        row = store.feedback.record(
            uuid.UUID(run_ids[0]),
            score=4,
            thumbs="up",
            correction="the invoice is in your account page",
            comment=f"write to me at {EMAIL}",
        )
        store.feedback.record(run_ids[0], score=0.9, source="llm_judge", key="helpfulness")

        got = store.get_interaction(run_ids[0])
        assert (got["user_feedback_score"], got["thumbs_up_down"]) == (4.0, "up")
        assert got["corrections"] == ["the invoice is in your account page"]
        history = store.feedback.history(run_ids[0])
        assert [(f["source"], f["key"], f["score"]) for f in history] == [
            ("user", "user_feedback", 4.0),
            ("llm_judge", "helpfulness", 0.9),
        ]
        assert history[0]["comment"] == row["comment"] == "write to me at [EMAIL]"  # redacted before storing
        if store is not handler.store:
            store.close()
    finally:
        handler.close(timeout=30)


def test_an_id_holding_pii_finds_the_interaction_a_logger_stored_under_its_hash(tmp_path: Path) -> None:
    logger = ProductionInteractionLogger({"storage": str(tmp_path / "logs"), "strict": True})
    raw_id = f"{EMAIL}-order-7"
    logger.log_interaction_sync(
        ProductionInteraction(
            interaction_id=raw_id,
            timestamp=time.time(),
            session_id="s-1",
            user_query="where is my order?",
            response="on its way",
        )
    )
    assert logger.close(timeout=30)
    url = f"sqlite:///{tmp_path / 'logs' / 'interactions.db'}"
    [stored] = Store.from_url(url).query_interactions()
    assert EMAIL not in stored["interaction_id"]

    store = Store.from_url(url)
    try:
        row = store.feedback.record(raw_id, score=2, comment="late again")
        assert row["interaction_id"] == stored["interaction_id"]
        assert store.get_interaction(stored["interaction_id"])["user_feedback_score"] == 2.0
    finally:
        store.close()
    raw = b"".join(p.read_bytes() for p in (tmp_path / "logs").glob("interactions.db*"))
    assert EMAIL.encode() not in raw


def test_a_store_finds_an_id_hashed_with_a_key_given_to_the_logger_not_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CL_PLUGIN_HASH_KEY", raising=False)
    config = {"storage": str(tmp_path / "logs"), "strict": True, "hash_key": "endpoint-secret"}
    logger = ProductionInteractionLogger(config)
    raw_id = f"{EMAIL}-order-8"
    logger.log_interaction_sync(ProductionInteraction(raw_id, time.time(), "s-1", "where is it?"))
    assert logger.close(timeout=30)
    store = Store.from_url(f"sqlite:///{tmp_path / 'logs' / 'interactions.db'}")
    try:
        with pytest.raises(UnknownInteractionError):  # the default key hashes the id differently
            store.feedback.record(raw_id, score=2)
        row = store.feedback.record(raw_id, score=2, hash_key="endpoint-secret")
        assert store.get_interaction(row["interaction_id"])["user_feedback_score"] == 2.0
    finally:
        store.close()


BAD_FEEDBACK: list[tuple[str, dict[str, Any]]] = [
    ("score", {"score": 9}),
    ("score", {"score": float("nan")}),
    ("score", {}),  # nothing given at all
    ("thumbs", {"thumbs": "sideways"}),
    ("comment", {"comment": 5}),
    ("source", {"score": 3, "source": ""}),
    ("key", {"score": 3, "key": None}),
]


@pytest.mark.parametrize("bad_id", [42, None, "", "a\x00b"])
def test_store_handler_and_logger_refuse_an_id_that_is_no_usable_string_alike(
    three_ways, bad_id: Any
) -> None:
    _, record = three_ways
    errors = set()
    for fn in record.values():
        with pytest.raises(InvalidRecordError) as err:
            fn(bad_id, score=3)
        errors.add((err.value.field, str(err.value)))
    [(field, _)] = errors
    assert field == "interaction_id"


@pytest.fixture
def three_ways(tmp_path: Path):
    """``record_feedback`` of a store, a capture handler and a logger; the handler and the logger know one
    interaction (checks come before the look-up, so the store needs none to refuse bad input)."""
    store = Store.from_url(f"sqlite:///{tmp_path / 'store.db'}").setup()
    handler = CaptureHandler(f"sqlite:///{tmp_path / 'handler.db'}", journal_dir=tmp_path / "journal")
    logger = ProductionInteractionLogger({"storage": str(tmp_path / "logs"), "strict": True})
    [known] = serve(handler, ("where is my invoice?",))
    assert handler.flush(timeout=30)
    logger.log_interaction_sync(
        ProductionInteraction(
            interaction_id=known, timestamp=1.0, session_id="s", user_query="q", response="r"
        )
    )
    yield (
        known,
        {
            "store": store.feedback.record,
            "handler": handler.record_feedback,
            "logger": logger.record_feedback,
        },
    )
    handler.close(timeout=30)
    logger.close(timeout=30)
    store.close()


@pytest.mark.parametrize(("field", "kwargs"), BAD_FEEDBACK, ids=[f for f, _ in BAD_FEEDBACK])
def test_store_handler_and_logger_refuse_bad_feedback_with_the_same_error(
    three_ways, field: str, kwargs: dict[str, Any]
) -> None:
    known, record = three_ways
    errors = {}
    for name, fn in record.items():
        with pytest.raises(InvalidRecordError) as err:
            fn(known, **kwargs)
        errors[name] = (err.value.field, str(err.value))
    assert errors["store"] == errors["handler"] == errors["logger"]
    assert errors["store"][0] == field and field in errors["store"][1]


def test_store_handler_and_logger_refuse_an_unknown_interaction_with_the_same_error(three_ways) -> None:
    _, record = three_ways
    messages = set()
    for fn in record.values():
        with pytest.raises(UnknownInteractionError) as err:
            fn("no-such-run", score=3)
        messages.add(str(err.value))
    assert messages == {str(UnknownInteractionError("no-such-run"))}
