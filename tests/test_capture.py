"""CaptureHandler: the exact rows each LangGraph feature produces, concurrency, privacy, bounded state."""

from __future__ import annotations

import asyncio
import gzip
import itertools
import operator
import threading
import uuid
from pathlib import Path
from typing import Annotated, Any, TypedDict

import pytest
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage
from langchain_core.runnables import RunnableConfig
from langchain_core.tools import tool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph
from langgraph.types import Command, RetryPolicy, Send, interrupt

from cl_plugin import CaptureHandler, ProductionInteractionLogger, UnknownInteractionError, record_decision
from cl_plugin.capture.langsmith import FeedbackMirror, sanitizing_client, sanitizing_tracer
from cl_plugin.errors import InvalidRecordError, PrivacyConfigError
from cl_plugin.privacy import hash_identifier, safe_identifier
from tests.langsmith_server import LangSmithServer


class State(TypedDict, total=False):
    query: str
    response: str
    results: Annotated[list, operator.add]
    routing_history: Annotated[list, operator.add]


@pytest.fixture
def handler(tmp_path: Path):
    h = CaptureHandler(f"sqlite:///{tmp_path / 'capture.db'}", prices={"generic-fake-chat-model": (1.0, 2.0)})
    yield h
    h.close()


def linear(*names: str) -> StateGraph:
    g = StateGraph(State)
    for name in names:
        g.add_node(name, lambda s, name=name: {"results": [name]})
    g.add_edge(START, names[0])
    for a, b in itertools.pairwise(names):
        g.add_edge(a, b)
    return g


def run(graph: Any, inputs: Any, h: CaptureHandler, **config: Any) -> tuple[str, Any]:
    rid = config.pop("run_id", None) or uuid.uuid4()
    out = graph.invoke(inputs, config={"callbacks": [h], "run_id": rid, **config})
    h.flush()
    return str(rid), out


def nodes(h: CaptureHandler, iid: str) -> list[tuple[str, str | None, str]]:
    return [(r["kind"], r["name"], r["status"]) for r in h.store.node_runs(iid)]


def test_a_graph_run_is_one_interaction_whose_id_is_the_run_id(handler: CaptureHandler) -> None:
    graph = linear("a", "b").compile()
    g = StateGraph(State)
    g.add_node("answer", lambda s: {"response": f"echo {s['query']}"})
    g.add_edge(START, "answer")
    graph = g.compile()
    iid, _ = run(graph, {"query": "hello"}, handler, metadata={"user_id": "u-7", "tier": "pro"})
    [row] = handler.store.query_interactions()
    assert row["interaction_id"] == iid == row["run_id"]
    assert (row["user_query"], row["response"]) == ("hello", "echo hello")
    assert row["user_id"] == "u-7" and row["metadata"]["tier"] == "pro" and row["metadata"]["status"] == "ok"
    assert row["error_occurred"] is False and row["latency_ms"] > 0
    assert nodes(handler, iid) == [("node", "answer", "ok")]


class Answered(TypedDict, total=False):
    query: str
    response: str
    agent_selected: str
    answered_by: list[str]


def test_who_answered_is_kept_beside_the_routed_agent(handler: CaptureHandler) -> None:
    g = StateGraph(Answered)
    g.add_node("answer", lambda s: {"response": "42", "agent_selected": "HRM", "answered_by": ["TRM"]})
    g.add_edge(START, "answer")
    run(g.compile(), {"query": "escalated"}, handler)
    [row] = handler.store.query_interactions()
    assert row["agent_selected"] == "HRM" and row["metadata"]["answered_by"] == ["TRM"]


def test_every_node_run_is_recorded_with_step_triggers_and_checkpoint_namespace(
    handler: CaptureHandler,
) -> None:
    iid, _ = run(linear("a", "b", "c").compile(), {"query": "q"}, handler)
    rows = handler.store.node_runs(iid)
    assert [(r["name"], r["step"], r["triggers"]) for r in rows] == [
        ("a", 1, ["branch:to:a"]),
        ("b", 2, ["branch:to:b"]),
        ("c", 3, ["branch:to:c"]),
    ]
    assert all(r["checkpoint_ns"].startswith(f"{r['name']}:") for r in rows)
    assert all(r["parent_run_id"] == iid and r["duration_ms"] >= 0 for r in rows)
    assert rows[1]["outputs"] == {"results": ["b"]}


def test_subgraph_runs_nest_under_their_node(handler: CaptureHandler) -> None:
    inner = StateGraph(State)
    inner.add_node("x", lambda s: {"results": ["x"]})
    inner.add_edge(START, "x")
    g = StateGraph(State)
    g.add_node("sub", inner.compile())
    g.add_edge(START, "sub")
    iid, out = run(g.compile(), {"query": "q"}, handler)
    assert out["results"] == ["x"]
    rows = {r["kind"] + ":" + str(r["name"]): r for r in handler.store.node_runs(iid)}
    assert set(rows) == {"node:sub", "graph:LangGraph", "node:x"}
    assert rows["graph:LangGraph"]["parent_run_id"] == rows["node:sub"]["run_id"]
    assert rows["node:x"]["parent_run_id"] == rows["graph:LangGraph"]["run_id"]
    assert "|x:" in rows["node:x"]["checkpoint_ns"]


def test_send_fan_out_is_a_decision_and_each_worker_a_node_run(handler: CaptureHandler) -> None:
    g = StateGraph(State)
    g.add_node("plan", lambda s: {})
    g.add_node("work", lambda s: {"results": [s["query"]]})
    g.add_edge(START, "plan")
    g.add_conditional_edges(
        "plan", lambda s: [Send("work", {"query": f"part{i}"}) for i in range(3)], ["work"]
    )
    iid, out = run(g.compile(), {"query": "q"}, handler)
    assert sorted(out["results"]) == ["part0", "part1", "part2"]
    workers = [r for r in handler.store.node_runs(iid) if r["name"] == "work"]
    assert len(workers) == 3 and all(r["triggers"] == ["__pregel_push"] for r in workers)
    [send] = handler.store.decisions(iid, kind="send")
    assert send["node"] == "plan" and send["chosen"] == "work"
    assert send["statistics"] == {"fan_out": 3, "targets": ["work"]}


def test_command_goto_and_conditional_edges_are_route_decisions(handler: CaptureHandler) -> None:
    g = StateGraph(State)
    g.add_node("router", lambda s: Command(goto="hrm", update={"results": ["routed"]}))
    g.add_node("hrm", lambda s: {"response": "from hrm"})
    g.add_node("trm", lambda s: {"response": "from trm"})
    g.add_node("check", lambda s: {})
    g.add_edge(START, "router")
    g.add_edge("hrm", "check")
    g.add_edge("trm", "check")
    g.add_conditional_edges(
        "check", lambda s: "done" if s.get("response") else "retry", {"done": END, "retry": "router"}
    )
    iid, out = run(g.compile(), {"query": "q"}, handler)
    assert out["response"] == "from hrm"
    routes = [(d["node"], d["chosen"], d["statistics"]) for d in handler.store.decisions(iid, kind="route")]
    assert routes == [("router", "hrm", {"via": "Command"}), ("check", "done", {"via": "edge"})]
    [row] = handler.store.query_interactions()
    assert row["agent_selected"] == "done"  # the last route taken


def test_routing_history_and_recorded_decisions_keep_probabilities(handler: CaptureHandler) -> None:
    def route(s: State) -> dict:
        return {
            "routing_history": [
                {"agent": "MCTS", "confidence": 0.7, "probabilities": {"HRM": 0.1, "TRM": 0.2, "MCTS": 0.7}}
            ]
        }

    def mcts(s: State) -> dict:
        record_decision(
            "mcts", "b2", confidence=0.6, alternatives={"b2": 0.6, "a1": 0.4}, statistics={"iterations": 50}
        )
        return {"response": "b2"}

    g = StateGraph(State)
    g.add_node("route", route)
    g.add_node("mcts", mcts)
    g.add_edge(START, "route")
    g.add_edge("route", "mcts")
    iid, _ = run(g.compile(), {"query": "q"}, handler)
    [route_d] = handler.store.decisions(iid, kind="route")
    assert (route_d["chosen"], route_d["confidence"]) == ("MCTS", 0.7)
    assert route_d["alternatives"] == {"HRM": 0.1, "TRM": 0.2, "MCTS": 0.7}
    [mcts_d] = handler.store.decisions(iid, kind="mcts")
    assert mcts_d["node"] == "mcts" and mcts_d["statistics"] == {"iterations": 50}
    [row] = handler.store.query_interactions()
    assert (row["agent_selected"], row["agent_confidence"]) == ("MCTS", 0.7)


def test_a_route_the_path_function_records_itself_replaces_the_edges_route(handler: CaptureHandler) -> None:
    def path(s: State, config: RunnableConfig) -> str:
        # as a LearnedRouter does: with the config the edge gives it, so the decision lands on the node
        record_decision("route", "hrm", confidence=0.8, statistics={"propensity": 0.9}, config=config)
        return "hrm"

    g = StateGraph(State)
    g.add_node("triage", lambda s: {})
    g.add_node("hrm", lambda s: {"response": "from hrm"})
    g.add_edge(START, "triage")
    g.add_conditional_edges("triage", path, ["hrm"])
    iid, _ = run(g.compile(), {"query": "q"}, handler)
    [route] = handler.store.decisions(iid, kind="route")
    assert (route["node"], route["chosen"], route["statistics"]) == ("triage", "hrm", {"propensity": 0.9})


def _triage_graph(triage: Any) -> Any:
    """``triage`` then a conditional edge on its ``routing_history`` to ``desk`` or ``lab``."""
    g = StateGraph(State)
    g.add_node("triage", triage)
    g.add_node("desk", lambda s: {"response": "desk"})
    g.add_node("lab", lambda s: {"response": "lab"})
    g.add_edge(START, "triage")
    g.add_conditional_edges(
        "triage",
        lambda s: s["routing_history"][-1]["agent"] if s.get("routing_history") else "desk",
        ["desk", "lab"],
    )
    return g.compile()


def test_a_node_reporting_its_route_and_its_conditional_edge_give_one_decision(
    handler: CaptureHandler,
) -> None:
    def triage(s: State) -> dict:
        return {
            "routing_history": [
                {"agent": "lab", "confidence": 0.8, "probabilities": {"lab": 0.8, "desk": 0.2}}
            ]
        }

    iid, out = run(_triage_graph(triage), {"query": "q"}, handler)
    assert out["response"] == "lab"
    [route] = handler.store.decisions(iid, kind="route")
    assert (route["node"], route["chosen"], route["confidence"]) == ("triage", "lab", 0.8)
    assert route["alternatives"] == {"lab": 0.8, "desk": 0.2}


def test_a_node_recording_its_route_and_its_conditional_edge_give_one_decision(
    handler: CaptureHandler,
) -> None:
    def triage(s: State) -> dict:
        record_decision("route", "desk", confidence=0.9, statistics={"rule": "default"})
        return {}

    iid, out = run(_triage_graph(triage), {"query": "q"}, handler)
    assert out["response"] == "desk"
    [route] = handler.store.decisions(iid, kind="route")
    assert (route["node"], route["chosen"], route["statistics"]) == ("triage", "desk", {"rule": "default"})


def test_a_plain_conditional_edge_still_records_one_route_decision(handler: CaptureHandler) -> None:
    iid, out = run(_triage_graph(lambda s: {}), {"query": "q"}, handler)
    assert out["response"] == "desk"
    routes = [(d["node"], d["chosen"], d["statistics"]) for d in handler.store.decisions(iid, kind="route")]
    assert routes == [("triage", "desk", {"via": "edge"})]


def test_record_decision_outside_a_run_reports_that_nothing_was_recorded() -> None:
    assert record_decision("route", "HRM") is False
    with pytest.raises(ValueError, match="kind"):
        record_decision("", "HRM")


def test_a_node_that_raises_marks_the_run_and_the_interaction_as_errors(handler: CaptureHandler) -> None:
    def boom(s: State) -> dict:
        raise ValueError("bad input for user bob@example.com")

    g = StateGraph(State)
    g.add_node("boom", boom)
    g.add_edge(START, "boom")
    rid = uuid.uuid4()
    with pytest.raises(ValueError):
        g.compile().invoke({"query": "q"}, config={"callbacks": [handler], "run_id": rid})
    handler.flush()
    [node] = handler.store.node_runs(str(rid))
    assert (node["status"], node["error_type"]) == ("error", "ValueError")
    assert "bob@example.com" not in node["error_message"] and "[EMAIL]" in node["error_message"]
    [row] = handler.store.query_interactions()
    assert row["error_occurred"] is True and row["metadata"]["status"] == "error"


def test_retried_attempts_are_separate_node_runs(handler: CaptureHandler) -> None:
    attempts = []

    def flaky(s: State) -> dict:
        attempts.append(1)
        if len(attempts) < 3:
            raise ConnectionError("transient")
        return {"response": "ok"}

    g = StateGraph(State)
    g.add_node("flaky", flaky, retry_policy=RetryPolicy(max_attempts=3, initial_interval=0.001, jitter=False))
    g.add_edge(START, "flaky")
    iid, _ = run(g.compile(), {"query": "q"}, handler)
    assert [r["status"] for r in handler.store.node_runs(iid)] == ["error", "error", "ok"]
    [row] = handler.store.query_interactions()
    assert row["error_occurred"] is False and row["response"] == "ok"


def test_interrupt_is_control_flow_and_resume_continues_the_same_interaction(handler: CaptureHandler) -> None:
    def ask(s: State) -> dict:
        answer = interrupt("approve?")
        return {"response": f"approved={answer}"}

    g = StateGraph(State)
    g.add_node("prepare", lambda s: {"results": ["draft"]})
    g.add_node("ask", ask)
    g.add_edge(START, "prepare")
    g.add_edge("prepare", "ask")
    graph = g.compile(checkpointer=InMemorySaver())
    cfg = {"configurable": {"thread_id": "thread-1"}}
    iid, first = run(graph, {"query": "ship it?"}, handler, **cfg)
    assert "__interrupt__" in first
    [paused] = handler.store.query_interactions()
    assert paused["metadata"]["status"] == "interrupted" and paused["error_occurred"] is False
    assert [r["status"] for r in handler.store.node_runs(iid)] == ["ok", "interrupted"]

    resume_id, second = run(graph, Command(resume="yes"), handler, **cfg)
    assert second["response"] == "approved=yes"
    [row] = handler.store.query_interactions()
    assert row["interaction_id"] == iid and row["session_id"] == "thread-1"
    assert (row["user_query"], row["response"]) == ("ship it?", "approved=yes")
    assert row["metadata"]["status"] == "ok" and row["metadata"]["runs"] == [iid, resume_id]
    assert [r["status"] for r in handler.store.node_runs(iid)] == ["ok", "interrupted", "ok"]


def test_command_to_parent_is_not_an_error(handler: CaptureHandler) -> None:
    inner = StateGraph(State)
    inner.add_node(
        "escalate", lambda s: Command(graph=Command.PARENT, goto="human", update={"results": ["up"]})
    )
    inner.add_edge(START, "escalate")
    g = StateGraph(State)
    g.add_node("sub", inner.compile(), destinations=("human",))
    g.add_node("human", lambda s: {"response": "handled"})
    g.add_edge(START, "sub")
    iid, out = run(g.compile(), {"query": "q"}, handler)
    assert out["response"] == "handled"
    [row] = handler.store.query_interactions()
    assert row["error_occurred"] is False
    statuses = {r["name"]: r["status"] for r in handler.store.node_runs(iid)}
    assert statuses["escalate"] == "bubbled" and statuses["human"] == "ok"
    assert ("escalate", "human") in [
        (d["node"], d["chosen"]) for d in handler.store.decisions(iid, kind="route")
    ]


@tool
def lookup(q: str) -> str:
    """Look a term up."""
    return f"definition of {q}"


def tool_graph() -> Any:
    def agent(s: State) -> dict:
        model = GenericFakeChatModel(
            messages=iter(
                [
                    AIMessage(
                        content="",
                        tool_calls=[{"name": "lookup", "args": {"q": "MCTS"}, "id": "call-1"}],
                        usage_metadata={"input_tokens": 100, "output_tokens": 20, "total_tokens": 120},
                    )
                ]
            )
        )
        msg = model.invoke(s["query"])
        result = lookup.invoke(msg.tool_calls[0])
        return {"response": result.content}

    g = StateGraph(State)
    g.add_node("agent", agent)
    g.add_edge(START, "agent")
    return g.compile()


def test_model_calls_add_tokens_and_cost_and_tool_calls_are_decisions(handler: CaptureHandler) -> None:
    iid, out = run(tool_graph(), {"query": "what is MCTS"}, handler)
    assert out["response"] == "definition of MCTS"
    rows = handler.store.node_runs(iid)
    assert [(r["kind"], r["name"]) for r in rows] == [
        ("node", "agent"),
        ("llm", "GenericFakeChatModel"),
        ("tool", "lookup"),
    ]
    llm = rows[1]
    assert llm["tokens_used"] == 120 and llm["cost"] == pytest.approx((100 * 1.0 + 20 * 2.0) / 1e6)
    assert rows[2]["inputs"] == {"q": "MCTS"} and rows[2]["outputs"]["content"] == "definition of MCTS"
    [choice] = handler.store.decisions(iid, kind="tool")
    assert choice["chosen"] == "lookup" and choice["node"] == "agent"
    [row] = handler.store.query_interactions()
    assert row["tokens_used"] == 120 and row["cost"] == pytest.approx(1.4e-4)


def test_streaming_in_every_mode_records_the_same_rows(handler: CaptureHandler) -> None:
    graph = linear("a", "b").compile()
    for mode in ("values", "updates", "debug", "custom", ["updates", "messages"]):
        rid = uuid.uuid4()
        chunks = list(
            graph.stream(
                {"query": str(mode)}, config={"callbacks": [handler], "run_id": rid}, stream_mode=mode
            )
        )
        assert chunks or mode == "custom"
        handler.flush()
        assert [r["name"] for r in handler.store.node_runs(str(rid))] == ["a", "b"], mode

    async def astream() -> str:
        rid = uuid.uuid4()
        async for _ in graph.astream({"query": "async"}, config={"callbacks": [handler], "run_id": rid}):
            pass
        return str(rid)

    rid = asyncio.run(astream())
    handler.flush()
    assert [r["name"] for r in handler.store.node_runs(rid)] == ["a", "b"]
    assert handler.store.count_interactions() == 6


def test_batch_and_abatch_give_one_interaction_per_input(handler: CaptureHandler) -> None:
    graph = linear("a").compile()
    graph.batch([{"query": f"b{i}"} for i in range(5)], config={"callbacks": [handler]})
    asyncio.run(graph.abatch([{"query": f"ab{i}"} for i in range(5)], config={"callbacks": [handler]}))
    handler.flush()
    queries = sorted(r["user_query"] for r in handler.store.query_interactions())
    assert queries == sorted([f"b{i}" for i in range(5)] + [f"ab{i}" for i in range(5)])


def test_64_concurrent_invocations_in_threads_and_tasks_never_mix_rows(handler: CaptureHandler) -> None:
    g = StateGraph(State)
    g.add_node("plan", lambda s: {"results": [s["query"]]})
    g.add_node("work", lambda s: {"results": [s["query"]]})
    g.add_node("answer", lambda s: {"response": s["query"].upper()})
    g.add_edge(START, "plan")
    g.add_conditional_edges(
        "plan", lambda s: [Send("work", {"query": s["query"]}) for _ in range(2)], ["work"]
    )
    g.add_edge("work", "answer")
    graph = g.compile()
    ids: dict[str, str] = {}

    def invoke(tag: str) -> None:
        rid = uuid.uuid4()
        ids[str(rid)] = tag
        graph.invoke({"query": tag}, config={"callbacks": [handler], "run_id": rid})

    async def ainvoke(tag: str) -> None:
        rid = uuid.uuid4()
        ids[str(rid)] = tag
        await graph.ainvoke({"query": tag}, config={"callbacks": [handler], "run_id": rid})

    async def tasks() -> None:
        await asyncio.gather(*(ainvoke(f"task-{i}") for i in range(32)))

    threads = [threading.Thread(target=invoke, args=(f"thread-{i}",)) for i in range(32)]
    aio = threading.Thread(target=lambda: asyncio.run(tasks()))
    for t in [*threads, aio]:
        t.start()
    for t in [*threads, aio]:
        t.join()
    handler.flush()
    rows = handler.store.query_interactions(limit=None)
    assert len(rows) == 64
    for row in rows:
        tag = ids[row["interaction_id"]]
        assert (row["user_query"], row["response"]) == (tag, tag.upper())
        runs = handler.store.node_runs(row["interaction_id"])
        assert sorted((r["kind"], r["name"] if r["kind"] == "node" else "") for r in runs) == [
            ("edge", ""),
            ("node", "answer"),
            ("node", "plan"),
            ("node", "work"),
            ("node", "work"),
        ]
        assert all(r["inputs"]["query"] == tag for r in runs)
        [send] = handler.store.decisions(row["interaction_id"], kind="send")
        assert send["statistics"]["fan_out"] == 2
    assert handler.writer.stats.dropped == 0 and handler.hook_errors == 0


PII_QUERY = (
    "I am jane.roe@example.org, call me on (555) 123-4567, card 4111 1111 1111 1111, "
    "key sk-abcdefghijklmnopqrstuvwxyz123456, SSN 123-45-6789, from 192.168.10.20"
)
RAW_PII = [
    "jane.roe@example.org",
    "123-4567",
    "4111 1111 1111 1111",
    "sk-abcdefghij",
    "123-45-6789",
    "192.168.10.20",
]


def test_pii_in_a_query_reaches_no_table_backup_journal_or_langsmith_payload(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for var in ("LANGSMITH_TRACING", "LANGCHAIN_TRACING_V2", "LANGSMITH_ENDPOINT", "LANGCHAIN_ENDPOINT"):
        monkeypatch.delenv(var, raising=False)
    with LangSmithServer() as server:
        client = server.track(sanitizing_client(api_url=server.url, api_key="fake"))
        tracer = sanitizing_tracer("pii-test", client=client)
        mirror = FeedbackMirror(client, project_name="pii-test")
        logger = ProductionInteractionLogger({"storage": str(tmp_path)})
        handler = CaptureHandler(logger, feedback_mirror=mirror)
        rid = uuid.uuid4()
        tool_graph().invoke(
            {"query": PII_QUERY},
            config={"callbacks": [handler, tracer], "run_id": rid, "metadata": {"note": PII_QUERY}},
        )
        handler.record_feedback(rid, score=2, comment=f"wrong, mail {RAW_PII[0]}", correction=PII_QUERY)
        handler.flush()
        assert mirror.flush(10) and client.flush(timeout=10) is not False
        assert server.wait_for(lambda: str(rid) in server.runs and server.feedback)
        assert {f["run_id"] for f in server.feedback.values()} == {str(rid)}
        sent = server.all_bodies()
        mirror.close()
    logger.close()
    blobs = [p.read_bytes() for p in tmp_path.rglob("*") if p.is_file() and not p.name.endswith(".gz")]
    blobs += [gzip.decompress(p.read_bytes()) for p in tmp_path.rglob("*.gz")]
    assert blobs and any(b"[EMAIL]" in b for b in blobs) and b"[EMAIL]" in sent
    for blob in [*blobs, sent]:
        for raw in RAW_PII:
            assert raw.encode() not in blob


def test_user_and_session_ids_are_hashed_when_asked() -> None:
    h = CaptureHandler("sqlite://", hash_user_ids=True, hash_session_ids=True, hash_key="k" * 32)
    run(linear("a").compile(), {"query": "q"}, h, metadata={"user_id": "alice", "session_id": "s-1"})
    [row] = h.store.query_interactions()
    assert row["user_id"].startswith("h:") and "alice" not in row["user_id"]
    assert row["session_id"].startswith("h:") and row["session_id"] != "s-1"
    h.close()


def test_user_and_session_ids_holding_pii_are_stored_as_keyed_hashes_by_default(
    tmp_path: Path, key_file: Path
) -> None:
    db = tmp_path / "ids.db"
    h = CaptureHandler(f"sqlite:///{db}")
    graph = linear("a").compile()
    users = ["jane.doe@example.com", "jane.doe@example.com", "+44 20 7946 0958", "u-7"]
    sessions = ["(415) 555-0134", "(415) 555-0134", "(415) 555-0134", "s-1"]
    for user, session in zip(users, sessions, strict=True):
        metadata = {"user_id": user, "session_id": session, "conversation_id": f"chat {session}"}
        run(graph, {"query": "q"}, h, metadata=metadata)
    rows = h.store.query_interactions(limit=None, order="oldest")
    by_session = h.store.query_interactions(session_id=safe_identifier("(415) 555-0134"), limit=None)
    h.close()

    key = key_file.read_text().strip()
    assert [r["user_id"] for r in rows] == [
        hash_identifier("jane.doe@example.com", key),
        hash_identifier("jane.doe@example.com", key),  # stable: the same user keeps one id
        hash_identifier("+44 20 7946 0958", key),
        "u-7",  # no PII: kept as given
    ]
    assert [r["session_id"] for r in rows] == [safe_identifier(s) for s in sessions]
    assert rows[0]["session_id"].startswith("h:") and rows[3]["session_id"] == "s-1"
    # the session keys left in the metadata are stored like the column
    assert rows[0]["metadata"]["session_id"] == rows[0]["session_id"]
    assert rows[0]["metadata"]["conversation_id"] == safe_identifier("chat (415) 555-0134")
    assert rows[0]["metadata"]["conversation_id"].startswith("h:")
    assert rows[3]["metadata"]["conversation_id"] == "chat s-1"
    assert len(by_session) == 3  # a lookup by the raw id, hashed alike
    stored = b"".join(p.read_bytes() for p in tmp_path.rglob("ids.db*") if p.is_file())
    for raw in ("jane.doe@example.com", "7946 0958", "555-0134"):
        assert raw.encode() not in stored
    assert key_file.stat().st_mode & 0o777 == 0o600


def test_ids_holding_pii_use_the_given_key_like_the_hashing_option(key_file: Path) -> None:
    """With a key, an address as user id hashes alike whether or not every user id is hashed."""
    ids = []
    for hash_users in (False, True):
        h = CaptureHandler("sqlite://", hash_key="k" * 32, hash_user_ids=hash_users)
        run(linear("a").compile(), {"query": "q"}, h, metadata={"user_id": "jane.doe@example.com"})
        ids += [r["user_id"] for r in h.store.query_interactions()]
        h.close()
    assert ids == [hash_identifier("jane.doe@example.com", "k" * 32)] * 2
    assert not key_file.exists()  # a configured key needs no generated one


def test_ids_are_kept_as_given_when_redaction_is_off(key_file: Path) -> None:
    h = CaptureHandler("sqlite://", redact_pii=False)
    run(linear("a").compile(), {"query": "q"}, h, metadata={"user_id": "jane.doe@example.com"})
    assert [r["user_id"] for r in h.store.query_interactions()] == ["jane.doe@example.com"]
    h.close()


def test_hashing_without_a_key_is_refused_with_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CL_PLUGIN_HASH_KEY", raising=False)
    with pytest.raises(PrivacyConfigError, match="CL_PLUGIN_HASH_KEY"):
        CaptureHandler("sqlite://", hash_user_ids=True)


def test_feedback_before_the_interaction_is_written_is_kept_and_copied(handler: CaptureHandler) -> None:
    handler.writer.flush_interval = 3600  # nothing is written until flush()
    rid = uuid.uuid4()
    linear("a").compile().invoke({"query": "q"}, config={"callbacks": [handler], "run_id": rid})
    handler.record_feedback(rid, score=2.0, comment="too vague")
    handler.record_feedback(rid, thumbs="down", correction="the right answer")
    handler.record_feedback(rid, score=4.0)
    handler.record_feedback(rid, score=1.0, source="annotator", key="correctness")
    handler.flush()
    [row] = handler.store.query_interactions()
    assert row["user_feedback_score"] == 4.0 and row["thumbs_up_down"] == "down"
    assert row["corrections"] == ["the right answer"]
    history = handler.store.feedback.history(str(rid))
    assert [(f["key"], f["score"], f["source"]) for f in history] == [
        ("user_feedback", 2.0, "user"),
        ("user_feedback", None, "user"),
        ("user_feedback", 4.0, "user"),
        ("correctness", 1.0, "annotator"),
    ]


def test_feedback_for_an_unknown_id_or_with_bad_values_is_refused(handler: CaptureHandler) -> None:
    with pytest.raises(UnknownInteractionError, match="no interaction"):
        handler.record_feedback(str(uuid.uuid4()), score=3)
    iid, _ = run(linear("a").compile(), {"query": "q"}, handler)
    with pytest.raises(InvalidRecordError, match="score"):
        handler.record_feedback(iid, score=9)
    with pytest.raises(InvalidRecordError, match="thumbs"):
        handler.record_feedback(iid, thumbs="sideways")
    with pytest.raises(InvalidRecordError, match="at least one"):
        handler.record_feedback(iid)
    assert handler.store.feedback.history(iid) == []


def test_runs_that_never_end_are_evicted_and_recorded_as_unfinished(handler: CaptureHandler) -> None:
    now = [1000.0]
    handler.tree.clock = lambda: now[0]
    rid, child = uuid.uuid4(), uuid.uuid4()
    handler.on_chain_start(None, {"query": "stuck"}, run_id=rid, name="LangGraph")
    handler.on_chain_start(
        None, {}, run_id=child, parent_run_id=rid, name="a", metadata={"langgraph_node": "a"}
    )
    handler.flush()
    assert len(handler.tree.runs) == 2
    now[0] += handler.options.run_ttl + 1
    handler.tree.runs[rid.int].start = 1000.0
    handler.tree.runs[child.int].start = 1000.0
    out: list = []
    handler.tree.evict(out)
    assert handler.tree.runs == {} and handler.tree.evicted == 2
    [(table, row)] = out
    assert table == "interactions" and row["user_query"] == "stuck" and "unfinished" in row["metadata"]


def test_in_flight_state_is_capped(tmp_path: Path) -> None:
    h = CaptureHandler("sqlite://", max_in_flight=50)
    for _ in range(200):
        h.on_chain_start(None, {"query": "never ends"}, run_id=uuid.uuid4(), name="LangGraph")
    h.flush()
    assert len(h.tree.runs) <= 50 and h.tree.evicted >= 150
    assert h.store.count_interactions() >= 150
    h.close()


def test_a_failing_plugin_never_breaks_the_graph(
    handler: CaptureHandler, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("queue exploded")

    handler._submit = broken  # type: ignore[method-assign]
    out = linear("a", "b").compile().invoke({"query": "q"}, config={"callbacks": [handler]})
    assert out["results"] == ["a", "b"]
    assert handler.hook_errors == 6 and "queue exploded" in caplog.text


def test_a_closed_handler_does_not_break_the_graph(tmp_path: Path) -> None:
    h = CaptureHandler("sqlite://")
    h.close()
    out = linear("a").compile().invoke({"query": "q"}, config={"callbacks": [h]})
    assert out["results"] == ["a"] and h.hook_errors == 4


def test_the_handler_docstring_example_runs() -> None:
    import doctest

    import cl_plugin.capture

    assert doctest.testmod(cl_plugin.capture).failed == 0
