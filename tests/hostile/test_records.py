"""Hostile records: every field of an interaction gets arbitrary values; each record is stored sanitized or
refused with an InvalidRecordError naming the field, and the rows around it are kept."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cl_plugin import InvalidRecordError, ProductionInteraction, ProductionInteractionLogger
from cl_plugin.privacy import Sanitizer
from cl_plugin.store import Store
from cl_plugin.store.rows import dumps

FIELDS = (
    "interaction_id",
    "timestamp",
    "session_id",
    "user_query",
    "response",
    "agent_selected",
    "agent_confidence",
    "user_feedback_score",
    "thumbs_up_down",
    "latency_ms",
    "tokens_used",
    "cost",
    "hallucination_detected",
    "retrieval_failed",
    "error_occurred",
    "retrieval_quality",
    "metadata",
    "run_id",
    "graph_name",
    "user_id",
    "corrections",
)

hostile_text = st.one_of(
    st.text(max_size=50),
    st.sampled_from(["\ud800", "a\x00b", "\udfff\x00\ud83d", "", " ", "'; DROP TABLE interactions; --"]),
    st.integers(1, 300_000).map(lambda n: "x" * n),
)
hostile_number = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.sampled_from([10**400, -(10**400), 2**63, 2**63 - 1, 2**64, -1, 0, True]),
)
json_leaf = st.one_of(st.none(), st.booleans(), hostile_number, hostile_text)
json_like = st.recursive(
    json_leaf,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(hostile_text, st.integers(), st.none()), inner, max_size=4),
    ),
    max_leaves=20,
)
odd_objects = st.sampled_from([object(), b"\xff\x00", {1, 2}, (1, "t"), 1j, bytearray(b"x"), range(3)])
anything = st.one_of(json_leaf, json_like, odd_objects)


def _cyclic() -> dict[str, Any]:
    loop: dict[str, Any] = {"name": "loop"}
    loop["a"] = loop
    loop["b"] = [loop, loop]
    return loop


def _shared(levels: int = 40) -> list[Any]:
    node: list[Any] = [1]
    for _ in range(levels):
        node = [node, node]  # 2**40 paths through 40 lists
    return node


hostile_metadata = st.one_of(
    st.dictionaries(st.one_of(hostile_text, st.integers()), anything, max_size=5),
    st.builds(_cyclic),
    st.builds(lambda: {"shared": _shared()}),
    st.builds(lambda: {"deep": _nest(200)}),
    anything,
)


def _nest(n: int) -> Any:
    value: Any = "bottom"
    for _ in range(n):
        value = {"k": value}
    return value


def _record(iid: str, **fields: Any) -> ProductionInteraction:
    base: dict[str, Any] = {
        "interaction_id": iid,
        "timestamp": time.time(),
        "session_id": "s-1",
        "user_query": "what is MCTS?",
        "response": "a tree search",
    }
    base.update(fields)
    return ProductionInteraction(**base)


field_values = st.fixed_dictionaries(
    {},
    optional={
        "interaction_id": st.one_of(hostile_text, anything),
        "timestamp": st.one_of(hostile_number, anything),
        "session_id": st.one_of(hostile_text, anything),
        "user_query": st.one_of(hostile_text, anything),
        "response": st.one_of(hostile_text, anything),
        "agent_selected": st.one_of(hostile_text, anything),
        "agent_confidence": hostile_number,
        "user_feedback_score": hostile_number,
        "thumbs_up_down": st.one_of(st.sampled_from(["up", "down", "UP", None]), anything),
        "latency_ms": hostile_number,
        "tokens_used": st.one_of(hostile_number, anything),
        "cost": hostile_number,
        "hallucination_detected": anything,
        "retrieval_failed": anything,
        "error_occurred": anything,
        "retrieval_quality": hostile_number,
        "metadata": hostile_metadata,
        "run_id": st.one_of(hostile_text, anything),
        "graph_name": st.one_of(hostile_text, anything),
        "user_id": st.one_of(hostile_text, anything),
        "corrections": st.one_of(st.lists(hostile_text, max_size=3), anything),
    },
)


@pytest.fixture(scope="module")
def sync_logger(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProductionInteractionLogger]:
    """A sync-durability logger on a SQLite file: every log call returns after its commit."""
    base = tmp_path_factory.mktemp("hostile-records")
    logger = ProductionInteractionLogger(
        {"storage": str(base), "durability": "sync", "flush_interval": 0.05, "strict": True},
        store=Store.from_url(f"sqlite:///{base / 'records.db'}").setup(),
    )
    logger.log_interaction_sync(_record("canary", metadata={"k": "v"}))
    yield logger
    logger.close(timeout=10)


def _canary_intact(logger: ProductionInteractionLogger) -> None:
    row = logger.store.get_interaction("canary")
    assert row is not None and row["metadata"] == {"k": "v"} and row["user_query"] == "what is MCTS?"


_counter = iter(range(10**9))


@settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(values=field_values)
def test_any_field_value_is_stored_sanitized_or_refused_naming_the_field(
    sync_logger: ProductionInteractionLogger, values: dict[str, Any]
) -> None:
    n = next(_counter)
    values.setdefault("interaction_id", f"hostile-{n}")
    record = _record("unused", **values)
    before = sync_logger.store.count_interactions()
    try:
        sync_logger.log_interaction_sync(record)
    except InvalidRecordError as exc:
        assert exc.field in FIELDS, exc.field
        assert exc.field in str(exc)
        assert sync_logger.store.count_interactions() == before  # nothing half-written
    else:
        stored = sync_logger.store.get_interaction(record.interaction_id)
        assert stored is not None, "an accepted record must be stored under its id"
        for name in ("user_query", "response", "session_id"):
            text = stored[name]
            assert "\x00" not in text
            text.encode("utf-8")  # no lone surrogates survive
            assert len(text) <= sync_logger.config.max_text_length + 100
        orjson.dumps(stored["metadata"])  # the metadata read back is plain JSON
    _canary_intact(sync_logger)
    assert sync_logger.writer.stats.lost == 0 and sync_logger.writer.stats.rejected == 0


@settings(max_examples=60, deadline=None, derandomize=True)
@given(values=field_values)
def test_interaction_dicts_with_any_values_are_stored_or_refused(values: dict[str, Any]) -> None:
    """The dict form goes through the same checks; JSON text for metadata and corrections is parsed."""
    logger = ProductionInteractionLogger({"enabled": False, "strict": True})
    payload: dict[str, Any] = {"interaction_id": "d", "timestamp": 1.0, "session_id": "s"}
    payload.update({"user_query": "q", "response": "r", **values})
    try:
        logger.log_interaction_sync(payload)
    except InvalidRecordError as exc:
        assert exc.field in (*FIELDS, "interaction")


@pytest.mark.parametrize(
    "text",
    ["not json", "{", "\ud800", b"\xff\xfe", "[1, 2"],
    ids=["word", "brace", "surrogate", "bytes", "list"],
)
@pytest.mark.parametrize("key", ["metadata", "corrections"])
def test_an_interaction_dict_with_unparseable_json_text_is_refused_naming_the_field(
    key: str, text: Any
) -> None:
    logger = ProductionInteractionLogger({"enabled": False, "strict": True})
    payload = {"interaction_id": "d", "timestamp": 1.0, "session_id": "s", "user_query": "q", "response": "r"}
    with pytest.raises(InvalidRecordError) as err:
        logger.log_interaction_sync({**payload, key: text})
    assert err.value.field == key and key in str(err.value)


@pytest.mark.parametrize("tokens", [2**63, 2**64, 10**30])
def test_tokens_beyond_a_64_bit_column_are_refused_naming_the_field(
    sync_logger: ProductionInteractionLogger, tokens: int
) -> None:
    with pytest.raises(InvalidRecordError) as err:
        sync_logger.log_interaction_sync(_record(f"tokens-{tokens}", tokens_used=tokens))
    assert err.value.field == "tokens_used"
    sync_logger.log_interaction_sync(_record("tokens-max", tokens_used=2**63 - 1))
    assert sync_logger.store.get_interaction("tokens-max")["tokens_used"] == 2**63 - 1


@pytest.mark.parametrize(
    "iid", ["a\x00b", "\ud800", "x" * 513], ids=["nul", "lone_surrogate", "longer_than_an_index_key"]
)
def test_an_interaction_id_the_database_cannot_key_is_refused(
    sync_logger: ProductionInteractionLogger, iid: str
) -> None:
    """Repairing an id would merge different interactions (``"\\x00"`` and ``"\\ud800"`` both became
    ``"\\ufffd"``), and an id longer than an index key stalled PostgreSQL writes behind it."""
    with pytest.raises(InvalidRecordError) as err:
        sync_logger.log_interaction_sync(_record(iid))
    assert err.value.field == "interaction_id"


@pytest.mark.parametrize("field", ["session_id", "agent_selected"])
def test_indexed_text_longer_than_an_index_key_is_refused(
    sync_logger: ProductionInteractionLogger, field: str
) -> None:
    with pytest.raises(InvalidRecordError) as err:
        sync_logger.log_interaction_sync(_record(f"long-{field}", **{field: "é" * 2000}))
    assert err.value.field == field


@pytest.mark.parametrize(
    "make", [_cyclic, lambda: {"shared": _shared()}], ids=["cycle_with_two_branches", "shared_sublists"]
)
def test_self_referencing_or_shared_metadata_is_copied_in_bounded_time(make: Any) -> None:
    """A dict holding itself twice used to take 2**32 steps on the writer thread, stalling every write."""
    start = time.perf_counter()
    copied = Sanitizer().value(make())
    text = dumps(copied)
    assert time.perf_counter() - start < 5
    assert "<too deep>" in text or "<too large>" in text
    assert math.isfinite(len(text)) and len(text) < 10_000_000
