"""Hostile callback payloads: no hook raises, the writer survives, and the next real run is captured."""

from __future__ import annotations

import uuid
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from langgraph.graph import START, StateGraph
from typing_extensions import TypedDict

from cl_plugin import CaptureHandler


class Unprintable:
    """An object whose repr and str raise, as some third-party objects do."""

    def __repr__(self) -> str:
        raise RuntimeError("no repr")

    __str__ = __repr__


def cyclic() -> dict[str, Any]:
    d: dict[str, Any] = {"query": "loop"}
    d["self"] = d
    d["list"] = [d, d]
    return d


def deep(levels: int) -> Any:
    value: Any = "bottom"
    for _ in range(levels):
        value = {"child": value, "items": [value]}
    return value


payloads = st.one_of(
    st.none(),
    st.text(max_size=50),
    st.sampled_from(["\ud800 lone surrogate", "nul \x00 byte", "x" * 300_000]),
    st.builds(cyclic),
    st.builds(deep, st.integers(1, 200)),
    st.builds(Unprintable),
    st.builds(object),
    st.dictionaries(
        st.text(max_size=5), st.one_of(st.integers(), st.floats(), st.binary(max_size=20)), max_size=5
    ),
    st.lists(st.integers(), max_size=5),
)
run_ids = st.one_of(st.uuids(), st.just(uuid.UUID(int=0)), st.text(max_size=10), st.none(), st.integers())
hooks = st.sampled_from(
    [
        "on_chain_start",
        "on_chain_end",
        "on_chain_error",
        "on_llm_start",
        "on_chat_model_start",
        "on_llm_end",
        "on_llm_error",
        "on_tool_start",
        "on_tool_end",
        "on_tool_error",
        "on_retriever_start",
        "on_retriever_end",
        "on_retriever_error",
        "on_custom_event",
    ]
)


def call(handler: CaptureHandler, hook: str, payload: Any, run_id: Any, parent: Any) -> None:
    kwargs = {"run_id": run_id, "parent_run_id": parent, "metadata": payload, "tags": payload}
    if hook in (
        "on_chain_start",
        "on_tool_start",
        "on_retriever_start",
        "on_llm_start",
        "on_chat_model_start",
    ):
        getattr(handler, hook)(payload, payload, **kwargs)
    elif hook.endswith("_error"):
        getattr(handler, hook)(ValueError(payload if isinstance(payload, str) else "error"), **kwargs)
    elif hook == "on_custom_event":
        handler.on_custom_event("cl_plugin.decision", payload, **kwargs)
    else:
        getattr(handler, hook)(payload, **kwargs)


class State(TypedDict, total=False):
    query: str
    response: str


@settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(calls=st.lists(st.tuples(hooks, payloads, run_ids, run_ids), min_size=1, max_size=12))
def test_hostile_hook_calls_never_raise_and_capture_keeps_working(calls: list[tuple]) -> None:
    handler = CaptureHandler("sqlite://")
    try:
        for hook, payload, run_id, parent in calls:
            call(handler, hook, payload, run_id, parent)  # must not raise
        g = StateGraph(State)
        g.add_node("answer", lambda s: {"response": "ok"})
        g.add_edge(START, "answer")
        rid = uuid.uuid4()
        g.compile().invoke({"query": "still here"}, config={"callbacks": [handler], "run_id": rid})
        handler.flush()
        row = handler.store.get_interaction(str(rid))
        assert row is not None and row["user_query"] == "still here" and row["response"] == "ok"
    finally:
        handler.close()
