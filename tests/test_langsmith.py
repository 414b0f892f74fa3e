"""The LangSmith bridge against a local LangSmith-speaking server: tracing, feedback, dataset export."""

from __future__ import annotations

import datetime
import uuid
from collections.abc import Iterator
from typing import Any

import langsmith
import pytest
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage
from langchain_core.tools import tool
from langchain_core.tracers.langchain import LangChainTracer
from langgraph.graph import END, START, MessagesState, StateGraph
from langsmith import utils as ls_utils
from urllib3.util import Retry

from cl_plugin.capture.langsmith import (
    ExportResult,
    FeedbackMirror,
    example_id,
    export_to_dataset,
    sanitizing_client,
    sanitizing_tracer,
)
from cl_plugin.privacy import REDACTED, PIIRedactor, Sanitizer, hash_identifier
from cl_plugin.records import Attachment, ProductionInteraction
from cl_plugin.store import Batch, Store
from cl_plugin.store.rows import row_from_interaction
from tests.langsmith_server import LangSmithServer

EMAIL = "jane.doe@example.com"
PHONE = "(415) 555-0134"
CARD = "4111 1111 1111 1111"  # Luhn-valid Visa test number
API_KEY = "sk-proj-Abcdefghij0123456789klmnopqrstuv"
RAW_PII = (EMAIL, PHONE, CARD, CARD.replace(" ", ""), API_KEY)
QUERY = f"Email {EMAIL}, call {PHONE}, card {CARD}, key {API_KEY}"
PROJECT = "cl-plugin-test"


@pytest.fixture(autouse=True)
def no_ambient_tracing(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No test traces through the environment (a dead endpoint would hang the process at exit)."""
    for name in ("TRACING", "TRACING_V2", "ENDPOINT", "API_KEY", "PROJECT", "RUNS_ENDPOINTS"):
        for prefix in ("LANGSMITH_", "LANGCHAIN_"):
            monkeypatch.delenv(prefix + name, raising=False)
    ls_utils.get_env_var.cache_clear()  # the client caches what it read
    yield
    ls_utils.get_env_var.cache_clear()


@pytest.fixture
def server() -> Iterator[LangSmithServer]:
    with LangSmithServer() as s:
        yield s


@tool
def lookup(query: str) -> str:
    """Look up the customer a query is about."""
    return f"customer record for {query}"


@tool
def broken_lookup(query: str) -> str:
    """Fail the way real tools do: with the input in the message."""
    raise ValueError(f"no customer matches {query}")


def build_graph(tool_fn: Any = lookup) -> Any:
    """An agent node (a fake chat model that calls a tool) and a tool node."""
    model = GenericFakeChatModel(
        messages=iter(
            [
                AIMessage("", tool_calls=[{"name": tool_fn.name, "args": {"query": QUERY}, "id": "call_1"}]),
                AIMessage(f"Done: I wrote to {EMAIL}"),
            ]
        )
    )

    def agent(state: MessagesState) -> dict:
        return {"messages": [model.invoke(state["messages"])]}

    def act(state: MessagesState) -> dict:
        return {"messages": [tool_fn.invoke(state["messages"][-1].tool_calls[0])]}

    def route(state: MessagesState) -> str:
        return "act" if state["messages"][-1].tool_calls else END

    graph = StateGraph(MessagesState)
    graph.add_node("agent", agent)
    graph.add_node("act", act)
    graph.add_edge(START, "agent")
    graph.add_conditional_edges("agent", route, ["act", END])
    graph.add_edge("act", "agent")
    return graph.compile()


def run_traced(server: LangSmithServer, client: langsmith.Client, graph: Any = None) -> uuid.UUID:
    """Invoke the graph with a sanitizing tracer and a known run id; wait until LangSmith has it all."""
    run_id = uuid.uuid4()
    tracer = sanitizing_tracer(PROJECT, client=client)
    try:
        (graph or build_graph()).invoke(
            {"messages": [("user", QUERY)]},
            config={"callbacks": [tracer], "run_id": run_id, "metadata": {"contact": EMAIL}},
        )
    finally:
        client.flush(timeout=5)
        # Compressed uploads may still be in flight when flush() returns: wait for the root run's start
        # and end to arrive.
        server.wait_for(lambda: {"trace_id", "end_time"} <= set(server.runs.get(str(run_id), {})))
    return run_id


def assert_no_raw_pii(body: bytes) -> None:
    for pii in RAW_PII:
        assert pii.encode() not in body, f"{pii!r} reached the server"


# ---------------------------------------------------------------------------------------------------------
# Tracing


def test_traced_graph_keeps_the_callers_run_id_as_the_langsmith_root_run(server: LangSmithServer) -> None:
    client = server.track(sanitizing_client(api_url=server.url, api_key="fake"))
    run_id = run_traced(server, client)

    assert server.requests_to("GET", "/info")  # the client read the batch ingest config from the server
    root = server.runs[str(run_id)]
    assert root.get("parent_run_id") is None and str(root["trace_id"]) == str(run_id)
    assert root["session_name"] == PROJECT
    names = {run["name"]: run for run in server.runs.values()}
    assert {"agent", "act", "GenericFakeChatModel", "lookup"} <= set(names)
    assert all(str(run["trace_id"]) == str(run_id) for run in server.runs.values())
    parts = [name for r in server.requests_to("POST", "/runs/multipart") for name in r.parts]
    assert f"post.{run_id}" in parts and f"post.{run_id}.inputs" in parts


def test_no_raw_pii_reaches_langsmith_in_any_request(server: LangSmithServer) -> None:
    client = server.track(sanitizing_client(api_url=server.url, api_key="fake"))
    run_id = run_traced(server, client)

    assert server.requests_to("POST", "/runs/multipart")
    assert_no_raw_pii(server.all_bodies())
    root = server.runs[str(run_id)]
    assert (
        root["inputs"]["messages"][0][1] == "Email [EMAIL], call [PHONE], card [CREDIT_CARD], key [API_KEY]"
    )
    assert root["extra"]["metadata"]["contact"] == "[EMAIL]"
    tool_run = next(r for r in server.runs.values() if r["name"] == "lookup")
    assert "[API_KEY]" in str(tool_run["inputs"]) and "[CREDIT_CARD]" in str(tool_run["outputs"])


def test_a_plain_client_would_send_the_raw_pii(server: LangSmithServer) -> None:
    """The control for the test above: the graph really puts the PII into the payloads."""
    client = server.client()
    build_graph().invoke(
        {"messages": [("user", QUERY)]},
        config={"callbacks": [LangChainTracer(project_name=PROJECT, client=client)]},
    )
    client.flush(timeout=5)
    body = server.all_bodies()
    assert all(pii.encode() in body for pii in (EMAIL, PHONE, CARD, API_KEY))


def test_error_messages_of_failed_runs_are_redacted(server: LangSmithServer) -> None:
    client = server.track(sanitizing_client(api_url=server.url, api_key="fake"))
    with pytest.raises(ValueError, match="no customer matches"):
        run_traced(server, client, build_graph(broken_lookup))
    client.flush(timeout=5)

    failed = next(r for r in server.runs.values() if r["name"] == "broken_lookup")
    assert "[EMAIL]" in failed["error"]
    assert_no_raw_pii(server.all_bodies())


class RaisingRedactor(PIIRedactor):
    def redact(self, text: str) -> str:
        raise RuntimeError("detector crashed")


class RaisingWalker(PIIRedactor):
    def redact_value(self, obj: Any) -> Any:
        raise RuntimeError("walker crashed")


@pytest.mark.parametrize(
    "redactor", [RaisingRedactor(), RaisingWalker()], ids=["per-string", "whole-payload"]
)
def test_redaction_failure_sends_placeholders_not_raw_text(
    server: LangSmithServer, redactor: PIIRedactor
) -> None:
    client = server.track(sanitizing_client(redactor=redactor, api_url=server.url, api_key="fake"))
    run_id = run_traced(server, client)

    assert_no_raw_pii(server.all_bodies())
    assert REDACTED in str(server.runs[str(run_id)]["inputs"])


def test_sanitizing_tracer_refuses_a_client_that_does_not_redact(server: LangSmithServer) -> None:
    with pytest.raises(ValueError, match="sanitizing_client"):
        sanitizing_tracer(PROJECT, client=server.client())


def test_sanitizing_client_refuses_hide_functions_the_client_would_ignore() -> None:
    with pytest.raises(TypeError, match="anonymizer"):
        sanitizing_client(api_url="http://127.0.0.1:9", api_key="fake", hide_inputs=lambda d: {})


def test_a_user_anonymizer_runs_before_the_redactor(server: LangSmithServer) -> None:
    client = server.track(
        sanitizing_client(
            anonymizer=lambda d: {**d, "seen": f"by anonymizer, {EMAIL}"}, api_url=server.url, api_key="fake"
        )
    )
    run_id = run_traced(server, client)
    assert server.runs[str(run_id)]["inputs"]["seen"] == "by anonymizer, [EMAIL]"


# ---------------------------------------------------------------------------------------------------------
# Feedback


@pytest.fixture
def quick_mirror(server: LangSmithServer) -> Iterator[Any]:
    """Makes mirrors with short retry delays; closes them before the server stops."""
    made: list[FeedbackMirror] = []

    def make(client: langsmith.Client, **kwargs: Any) -> FeedbackMirror:
        made.append(FeedbackMirror(client, project_name=PROJECT, retry_delay=0.01, **kwargs))
        return made[-1]

    yield make
    server.clear_faults()
    for mirror in made:
        mirror.close(timeout=5)


def test_mirrored_feedback_lands_on_the_traced_run_with_a_redacted_comment(
    server: LangSmithServer, quick_mirror: Any
) -> None:
    client = server.track(sanitizing_client(api_url=server.url, api_key="fake"))
    run_id = run_traced(server, client)
    mirror = quick_mirror(client)

    assert mirror.submit(
        str(run_id), key="user_score", score=0.8, comment=f"wrong, mail {EMAIL}", correction=f"call {PHONE}"
    )
    assert mirror.flush(timeout=5)
    mirror.close(timeout=5)

    [request] = server.requests_to("POST", "/feedback")
    sent = request.json()
    assert sent["run_id"] == str(run_id)
    assert (sent["key"], sent["score"]) == ("user_score", 0.8)
    assert sent["comment"] == "wrong, mail [EMAIL]"
    assert sent["correction"] == {"response": "call [PHONE]"}
    assert sent["session_id"] == server.projects[PROJECT]["id"]
    assert_no_raw_pii(request.body)
    assert mirror.stats.sent == 1 and mirror.stats.pending == 0


def test_submit_returns_at_once_while_langsmith_is_slow_and_drops_beyond_the_queue(
    server: LangSmithServer, quick_mirror: Any
) -> None:
    client = server.client()
    client.create_project(PROJECT)
    server.delay("/feedback", 60.0)  # held until clear_faults()
    mirror = quick_mirror(client, max_queue=2)
    run_id = str(uuid.uuid4())

    accepted = [mirror.submit(run_id, key="thumbs", score=1.0) for _ in range(3)]

    # Every submit returned while the server still holds the first feedback: none of them waited for it.
    assert server.wait_for(lambda: len(server.requests_to("POST", "/feedback")) == 1)
    assert accepted == [True, True, False]
    stats = mirror.stats
    assert (stats.pending, stats.dropped, stats.sent) == (2, 1, 0)
    assert not mirror.flush(timeout=0.05)

    server.clear_faults()
    assert mirror.flush(timeout=5)
    assert (mirror.stats.sent, mirror.stats.pending) == (2, 0)


def test_server_errors_are_retried_with_the_same_feedback_id(
    server: LangSmithServer, quick_mirror: Any
) -> None:
    client = server.client(retry_config=Retry(0))
    client.create_project(PROJECT)
    server.fail("/feedback", 500, times=2)
    mirror = quick_mirror(client)

    mirror.submit(str(uuid.uuid4()), key="thumbs", score=0.0)
    assert mirror.flush(timeout=5)

    ids = {r.json()["id"] for r in server.requests_to("POST", "/feedback")}
    assert len(server.requests_to("POST", "/feedback")) == 3 and len(ids) == 1
    assert (mirror.stats.sent, mirror.stats.failed) == (1, 0)


def test_persistent_server_errors_are_counted_as_failures_not_raised(
    server: LangSmithServer, quick_mirror: Any
) -> None:
    client = server.client(retry_config=Retry(0))
    client.create_project(PROJECT)
    server.fail("/feedback", 500)
    mirror = quick_mirror(client, max_attempts=3)

    assert mirror.submit(str(uuid.uuid4()), key="thumbs", score=0.0)
    assert mirror.flush(timeout=5)

    assert len(server.requests_to("POST", "/feedback")) == 3
    assert (mirror.stats.sent, mirror.stats.failed, mirror.stats.pending) == (0, 1, 0)


def test_refused_feedback_is_not_retried(server: LangSmithServer, quick_mirror: Any) -> None:
    client = server.client(retry_config=Retry(0))
    client.create_project(PROJECT)
    server.fail("/feedback", 422)
    mirror = quick_mirror(client)

    mirror.submit(str(uuid.uuid4()), key="thumbs", score=0.0)
    assert mirror.flush(timeout=5)

    assert len(server.requests_to("POST", "/feedback")) == 1
    assert mirror.stats.failed == 1


def test_feedback_comment_is_a_placeholder_when_redaction_fails(
    server: LangSmithServer, quick_mirror: Any
) -> None:
    client = server.client()
    client.create_project(PROJECT)
    mirror = quick_mirror(client, redactor=RaisingRedactor())

    mirror.submit(str(uuid.uuid4()), key="note", comment=f"mail {EMAIL}", correction=f"call {PHONE}")
    assert mirror.flush(timeout=5)

    sent = server.requests_to("POST", "/feedback")[0].json()
    assert sent["comment"] == REDACTED and sent["correction"] == {"response": REDACTED}


def test_closed_mirror_refuses_feedback_and_rejects_bad_ids() -> None:
    mirror = FeedbackMirror(
        langsmith.Client(api_url="http://127.0.0.1:9", api_key="fake", auto_batch_tracing=False)
    )
    with pytest.raises(ValueError, match="run_id must be a UUID"):
        mirror.submit("id-00001", key="thumbs", score=1.0)
    mirror.close(timeout=1)
    assert mirror.submit(str(uuid.uuid4()), key="thumbs", score=1.0) is False
    assert mirror.stats.dropped == 1


# ---------------------------------------------------------------------------------------------------------
# Dataset export

T0 = 1_700_000_000.0


@pytest.fixture
def store() -> Iterator[Store]:
    s = Store.from_url("sqlite://").setup()
    rows = [
        ProductionInteraction(
            interaction_id=str(uuid.UUID(int=i + 1)),
            run_id=str(uuid.UUID(int=i + 1)),
            timestamp=T0 + i,
            session_id="s1",
            user_query=f"question {i}",
            response=f"answer {i}",
            agent_selected=("HRM", "TRM", "MCTS")[i],
            user_feedback_score=float(i + 3),
            graph_name="mcts_agents",
            corrections=["first fix", "final fix"] if i == 2 else [],
        )
        for i in range(3)
    ]
    # Stored without redaction, so the export's own redaction is what keeps this address out.
    rows[0].user_query = f"question 0 from {EMAIL}"
    batch = Batch()
    for row in rows:
        batch.add("interactions", row_from_interaction(row, Sanitizer()))
    s.write(batch)
    yield s
    s.close()


def examples_of(server: LangSmithServer, result: ExportResult) -> dict[str, dict[str, Any]]:
    return {
        e["metadata"]["interaction_id"]: e
        for e in server.examples.values()
        if e["dataset_id"] == result.dataset_id
    }


def test_export_creates_the_dataset_with_one_example_per_interaction(
    server: LangSmithServer, store: Store
) -> None:
    result = export_to_dataset(store, server.client(), "cl-regressions", description="from production")

    assert (result.created, result.skipped) == (3, 0)
    assert [d["description"] for d in server.datasets.values()] == ["from production"]
    examples = examples_of(server, result)
    first = examples[str(uuid.UUID(int=1))]
    assert first["id"] == example_id(result.dataset_id, str(uuid.UUID(int=1)))
    assert first["inputs"] == {"query": "question 0 from [EMAIL]"}
    assert first["outputs"] == {"response": "answer 0"}
    assert first["metadata"] == {
        "interaction_id": str(uuid.UUID(int=1)),
        "run_id": str(uuid.UUID(int=1)),
        "agent_selected": "HRM",
        "graph_name": "mcts_agents",
        "user_feedback_score": 3.0,
        "timestamp": T0,
        "corrected": False,
    }
    assert_no_raw_pii(server.all_bodies())


def test_an_export_names_the_attachments_of_the_feedback_but_never_sends_their_bytes(
    server: LangSmithServer, store: Store
) -> None:
    iid = str(uuid.UUID(int=1))
    code = "token = 'ghp_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8' # from ann@example.com"
    row = store.feedback.record(iid, thumbs="down", attachments=[Attachment("code", code, language="python")])
    result = export_to_dataset(store, server.client(), "cl-regressions")
    [meta] = row["attachments"]
    assert examples_of(server, result)[iid]["metadata"]["attachments"] == [
        {"sha256": meta["sha256"], "kind": "code", "media_type": meta["media_type"], "size": meta["size"]}
    ]
    assert "attachments" not in examples_of(server, result)[str(uuid.UUID(int=2))]["metadata"]
    stored = store.attachments.get(meta["sha256"])["content"]
    assert stored not in server.all_bodies() and b"ghp_" not in server.all_bodies()


def test_corrections_replace_the_response_with_the_last_one(server: LangSmithServer, store: Store) -> None:
    result = export_to_dataset(store, server.client(), "cl-regressions")
    corrected = examples_of(server, result)[str(uuid.UUID(int=3))]
    assert corrected["outputs"] == {"response": "final fix"}
    assert corrected["metadata"]["corrected"] is True


def test_a_second_export_creates_nothing_and_reuses_the_dataset(
    server: LangSmithServer, store: Store
) -> None:
    client = server.client()
    first = export_to_dataset(store, client, "cl-regressions")
    second = export_to_dataset(store, client, "cl-regressions")

    assert (second.dataset_id, second.created, second.skipped) == (first.dataset_id, 0, 3)
    assert len(server.examples) == 3 and len(server.datasets) == 1
    assert len(server.requests_to("POST", "/datasets")) == 1


def test_limit_and_filters_select_what_is_exported(server: LangSmithServer, store: Store) -> None:
    client = server.client()
    limited = export_to_dataset(store, client, "cl-regressions", limit=1, chunk_size=2)
    assert (limited.created, limited.skipped) == (1, 0)
    filtered = export_to_dataset(store, client, "cl-regressions", min_feedback_score=4.0, chunk_size=1)
    assert (filtered.created, filtered.skipped) == (2, 0)
    rest = export_to_dataset(store, client, "cl-regressions")
    assert (rest.created, rest.skipped) == (0, 3)


class StaleListingClient(langsmith.Client):
    """Lists no examples, like a read that raced with another exporter's write."""

    def list_examples(self, *args: Any, **kwargs: Any) -> Iterator[Any]:
        if getattr(self, "_stale", True):
            self._stale = False
            return iter(())
        return super().list_examples(*args, **kwargs)


def test_an_export_racing_another_creates_only_the_missing_examples(
    server: LangSmithServer, store: Store
) -> None:
    export_to_dataset(store, server.client(), "cl-regressions", limit=2)
    racing = server.track(StaleListingClient(api_url=server.url, api_key="fake", info=server.info()))

    result = export_to_dataset(store, racing, "cl-regressions")

    assert result.created == 1
    assert len(server.examples) == 3


def test_ids_holding_pii_are_exported_as_their_keyed_hashes(
    server: LangSmithServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A store written without redaction can hold an address as an interaction id: the example's metadata
    carries its hash, the one the writer would have stored."""
    monkeypatch.setenv("CL_PLUGIN_HASH_KEY", "export-test-key")
    s = Store.from_url("sqlite://").setup()
    raw_id = f"order-{EMAIL}"
    batch = Batch()
    row = ProductionInteraction(
        interaction_id=raw_id, run_id=raw_id, timestamp=T0, session_id="s1", user_query="q", response="r"
    )
    batch.add("interactions", row_from_interaction(row, Sanitizer()))
    s.write(batch)

    result = export_to_dataset(s, server.client(), "cl-regressions")
    s.close()

    [example] = server.examples.values()
    hashed = hash_identifier(raw_id, "export-test-key")
    assert example["metadata"]["interaction_id"] == hashed and example["metadata"]["run_id"] == hashed
    assert example["id"] == example_id(result.dataset_id, raw_id)  # the same example on a re-export
    assert_no_raw_pii(server.all_bodies())


# ---------------------------------------------------------------------------------------------------------
# Run names, tags and feedback keys: text outside the payloads the anonymizer sees


def test_run_names_and_tags_of_a_traced_graph_are_redacted(server: LangSmithServer) -> None:
    client = server.track(sanitizing_client(api_url=server.url, api_key="fake"))
    run_id = uuid.uuid4()
    config = {
        "callbacks": [sanitizing_tracer(PROJECT, client=client)],
        "run_id": run_id,
        "run_name": f"ticket from {EMAIL}",
        "tags": [f"customer:{PHONE}", "prod"],
    }
    build_graph().invoke({"messages": [("user", "hello")]}, config=config)
    client.flush(timeout=5)
    server.wait_for(lambda: {"trace_id", "end_time"} <= set(server.runs.get(str(run_id), {})))

    root = server.runs[str(run_id)]
    assert root["name"] == "ticket from [EMAIL]"
    assert sorted(root["tags"]) == ["customer:[PHONE]", "prod"]
    children = [r for r in server.runs.values() if r["id"] != str(run_id)]
    assert children and all("customer:[PHONE]" in r["tags"] for r in children)  # tags are inherited
    assert_no_raw_pii(server.all_bodies())


def _run(name: str, tags: list[str]) -> dict[str, Any]:
    """A root run as the client's ingest calls take it (they need the trace id and dotted order)."""
    run_id = uuid.uuid4()
    start = datetime.datetime.now(datetime.UTC)
    return {
        "id": run_id,
        "trace_id": run_id,
        "dotted_order": f"{start:%Y%m%dT%H%M%S%fZ}{run_id}",
        "name": name,
        "run_type": "chain",
        "inputs": {},
        "start_time": start,
        "tags": tags,
        "session_name": PROJECT,
    }


@pytest.mark.parametrize("sanitizing", [True, False], ids=["sanitizing client", "plain client (control)"])
def test_every_upload_path_of_the_client_redacts_names_and_tags(
    server: LangSmithServer, sanitizing: bool
) -> None:
    """create_run, update_run, batch_ingest_runs and multipart_ingest: each public way to send a run."""
    kwargs = {"api_url": server.url, "api_key": "fake", "info": server.info()}
    client = server.track(sanitizing_client(**kwargs) if sanitizing else langsmith.Client(**kwargs))
    created, batched, multipart = _run(f"call {PHONE}", [EMAIL]), _run("b", [CARD]), _run(EMAIL, [API_KEY])
    client.create_run(**created)
    client.update_run(
        created["id"],
        name=f"card {CARD}",
        tags=["ok", API_KEY],
        trace_id=created["trace_id"],
        dotted_order=created["dotted_order"],
        end_time=datetime.datetime.now(datetime.UTC),
    )
    client.batch_ingest_runs(create=[batched])
    client.multipart_ingest(create=[multipart])
    client.flush(timeout=5)
    ids = [str(r["id"]) for r in (created, batched, multipart)]
    assert server.wait_for(lambda: all(i in server.runs for i in ids) and "end_time" in server.runs[ids[0]])

    got = [(server.runs[i]["name"], sorted(server.runs[i]["tags"])) for i in ids]
    if sanitizing:
        assert got == [
            ("card [CREDIT_CARD]", ["[API_KEY]", "ok"]),
            ("b", ["[CREDIT_CARD]"]),
            ("[EMAIL]", ["[API_KEY]"]),
        ]
        assert_no_raw_pii(server.all_bodies())
    else:  # the premise: the client sends names and tags as given
        assert got == [(f"card {CARD}", sorted(["ok", API_KEY])), ("b", [CARD]), (EMAIL, [API_KEY])]


def test_feedback_keys_and_sources_are_redacted(server: LangSmithServer, quick_mirror: Any) -> None:
    client = server.client()
    client.create_project(PROJECT)
    mirror = quick_mirror(client)

    mirror.submit(str(uuid.uuid4()), key=f"score for {EMAIL}", score=1.0, source=f"agent {PHONE}")
    assert mirror.flush(timeout=5)
    mirror.close(timeout=5)

    [request] = server.requests_to("POST", "/feedback")
    sent = request.json()
    assert (sent["key"], sent["feedback_source"]["metadata"]["source"]) == (
        "score for [EMAIL]",
        "agent [PHONE]",
    )
    assert_no_raw_pii(request.body)
