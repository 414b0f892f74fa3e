"""No PII reaches any sink: canaries planted in every text field, pushed through the whole product, and
searched for in every file, log line and LangSmith request it leaves behind.

The run: a graph with several nodes, a chat model, a tool call and a failing node is captured through the
classic logger (gzip backups on) with a sanitizing LangSmith tracer and a feedback mirror against the local
LangSmith server; user and session ids are e-mail addresses, phone numbers, cards and keys, and the runs are
named and tagged with canaries; the database is unwritable for a while, so rows spill to the journal;
feedback, corrections and annotation labels carry canaries too, and so do feedback attachments (a photo
whose EXIF and XMP name its owner and hold GPS coordinates, and a code snippet holding keys), given through
the Python API and posted to the feedback endpoint; then a maintenance cycle (SQLite checkpoints, feedback labels,
retraining, promotion, its report), the HTML report, ``cl-plugin export`` and a LangSmith dataset export.
"""

from __future__ import annotations

import base64
import io
import itertools
import logging
import struct
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, TypedDict

import pytest
from cl_plugin.graphs.maintenance import run_maintenance
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, AnyMessage, HumanMessage
from langchain_core.tools import tool
from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages
from langsmith import utils as ls_utils
from PIL import Image
from PIL.TiffImagePlugin import IFDRational
from sqlalchemy.exc import OperationalError
from starlette.testclient import TestClient

from cl_plugin import CaptureHandler, ProductionInteractionLogger, build_report
from cl_plugin.capture.langsmith import (
    FeedbackMirror,
    export_to_dataset,
    sanitizing_client,
    sanitizing_tracer,
)
from cl_plugin.cli import main as cli_main
from cl_plugin.learning.registry import ModelRegistry
from cl_plugin.privacy import default_redactor, safe_identifier
from cl_plugin.records import Attachment
from cl_plugin.web.feedback import feedback_app
from tests.langsmith_server import LangSmithServer
from tests.privacy.canaries import as_id, canaries_for, files_under, readable_bytes, scan, sentence

#: Every field a caller or the graph can put text into, each with its own canaries.
FIELDS = (
    "query",
    "response",
    "node_input",
    "node_output",
    "chat_output",
    "tool_args",
    "tool_output",
    "error_message",
    "run_metadata",
    "feedback_comment",
    "feedback_correction",
    "annotation_label",
    "annotation_reason",
    "attachment_code",
    "attachment_image",
    "user_id",
    "session_id",
    "run_name",
    "run_tags",
)
#: The fields whose canaries are planted one per value (an id, a tag), not as a sentence.
ID_FIELDS = ("user_id", "session_id", "run_tags")
CANARIES = [c for field in FIELDS for c in canaries_for(field)]
USER_IDS = [as_id(c) for c in canaries_for("user_id")]
SESSION_IDS = [as_id(c) for c in canaries_for("session_id")]
TAGS = [as_id(c) for c in canaries_for("run_tags")]
RUN_NAME = sentence("run_name", "support run: ")
AGENTS = {
    "HRM": "Order the jobs {w} so that every dependency runs first",
    "TRM": "Refine the root of the {w} equation to four decimals",
    "MCTS": "Pick the {w} items that get closest to the weight limit",
}
WORDS = [
    "alpha",
    "bravo",
    "charlie",
    "delta",
    "echo",
    "foxtrot",
    "golf",
    "hotel",
    "india",
    "juliet",
    "kilo",
    "lima",
    "mike",
]
N_INTERACTIONS = 90
PROJECT = "cl-plugin-canaries"


class State(TypedDict, total=False):
    query: str
    notes: str
    messages: Annotated[list[AnyMessage], add_messages]
    draft: str
    response: str
    agent_selected: str
    agent_confidence: float
    fail: bool


@tool
def lookup(query: str) -> str:
    """Look up the customer a query is about."""
    return f"customer record: {sentence('tool_output')}"


def build_graph() -> Any:
    """route -> think (chat model asking for a tool) -> act (the tool) -> answer (raises when asked to)."""
    reply = AIMessage(
        sentence("chat_output"),
        tool_calls=[{"name": "lookup", "args": {"query": sentence("tool_args")}, "id": "call_1"}],
    )
    model = GenericFakeChatModel(messages=itertools.repeat(reply))

    def route(state: State) -> dict:
        agent = next(a for a, lead in AGENTS.items() if state["query"].startswith(lead.split("{")[0]))
        return {"agent_selected": agent, "agent_confidence": 0.8, "draft": sentence("node_output")}

    def think(state: State) -> dict:
        return {"messages": [model.invoke([HumanMessage(f"{state['query']} {state['notes']}")])]}

    def act(state: State) -> dict:
        return {"messages": [lookup.invoke(state["messages"][-1].tool_calls[0])]}

    def answer(state: State) -> dict:
        if state.get("fail"):
            raise ValueError(f"audit failed: {sentence('error_message')}")
        return {"response": sentence("response", f"{state['agent_selected']} answered. ")}

    g = StateGraph(State)
    for fn in (route, think, act, answer):
        g.add_node(fn.__name__, fn)
    g.add_edge(START, "route")
    g.add_edge("route", "think")
    g.add_edge("think", "act")
    g.add_edge("act", "answer")
    g.add_edge("answer", END)
    return g.compile()


def query(i: int) -> tuple[str, str]:
    agent = list(AGENTS)[i % 3]
    words = " ".join(WORDS[(i + k) % len(WORDS)] for k in range(3))
    return agent, sentence("query", AGENTS[agent].format(w=words) + f" (case {i}): ")


class Outage:
    """Stands in for ``Store.write`` while the database cannot be written."""

    def __init__(self, write: Any) -> None:
        self._write = write
        self.down = False
        self.failures = 0

    def __call__(self, batch: Any, **kwargs: Any) -> Any:
        if self.down:
            self.failures += 1
            raise OperationalError(
                "INSERT INTO interactions ...", None, ConnectionRefusedError(111, "refused")
            )
        return self._write(batch, **kwargs)


#: GPS seconds no other byte string in the run holds: 79.19" as the EXIF rational 7919/1000.
GPS_SECONDS = struct.pack(">LL", 7919, 1000)  # Pillow writes EXIF big-endian
CANARY_CODE = f'# ask the owner: {sentence("attachment_code")}\nclient = Client(api_key="{canaries_for("attachment_code")[12].value}")\n'


def canary_jpeg() -> bytes:
    """A photo whose EXIF names its owner (canaries) and holds GPS coordinates, with an XMP packet too."""
    exif = Image.Exif()
    exif[0x010E] = sentence("attachment_image", "photo of ")  # ImageDescription
    exif[0x013B] = canaries_for("attachment_image")[0].value  # Artist
    gps = exif.get_ifd(0x8825)
    gps.update({1: "N", 2: (IFDRational(51), IFDRational(30), IFDRational(7919, 1000)), 3: "W"})
    out = io.BytesIO()
    xmp = f'<x:xmpmeta xmlns:x="adobe:ns:meta/">{sentence("attachment_image")}</x:xmpmeta>'.encode()
    Image.new("RGB", (48, 32), (120, 60, 30)).save(out, "JPEG", exif=exif.tobytes(), xmp=xmp)
    data = out.getvalue()
    assert GPS_SECONDS in data and b"xmpmeta" in data  # the control: the metadata is in the file
    return data


@pytest.fixture(autouse=True)
def no_ambient_tracing(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Tracing goes to the local server only, never to an endpoint from the environment."""
    for name in ("TRACING", "TRACING_V2", "ENDPOINT", "API_KEY", "PROJECT", "RUNS_ENDPOINTS"):
        for prefix in ("LANGSMITH_", "LANGCHAIN_"):
            monkeypatch.delenv(prefix + name, raising=False)
    ls_utils.get_env_var.cache_clear()
    yield
    ls_utils.get_env_var.cache_clear()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def wait_until(predicate: Any, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_the_redactor_catches_every_canary_in_its_sentence() -> None:
    """The premise of the sink scan below: a canary found there was carried past the redactor, not missed."""
    redactor = default_redactor()
    for field in FIELDS:
        assert scan({"redacted": redactor.redact(sentence(field)).encode()}, canaries_for(field)) == []
    for field in ID_FIELDS:  # each one alone, as an id or a tag, is PII the redactor finds
        for canary in canaries_for(field):
            assert scan({"redacted": redactor.redact(as_id(canary)).encode()}, [canary]) == [], canary.kind
    assert len(CANARIES) == len(FIELDS) * 17 == len({c.value for c in CANARIES})


@pytest.mark.slow
def test_no_canary_reaches_any_sink(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # No key is configured: ids holding PII are hashed with the generated key, kept in a file of its own.
    monkeypatch.delenv("CL_PLUGIN_HASH_KEY", raising=False)
    monkeypatch.setenv("CL_PLUGIN_HASH_KEY_FILE", str(tmp_path / "keys" / "id-hash.key"))
    caplog.set_level(logging.DEBUG, logger="cl_plugin")
    caplog.set_level(logging.DEBUG, logger="cl_plugin.graphs")
    storage = tmp_path / "storage"
    sinks: dict[str, bytes] = {}

    with LangSmithServer() as server:
        client = server.track(sanitizing_client(api_url=server.url, api_key="fake", info=server.info()))
        tracer = sanitizing_tracer(PROJECT, client=client)
        client.create_project(PROJECT)  # feedback may be mirrored before the first trace arrives
        mirror = FeedbackMirror(client, project_name=PROJECT, retry_delay=0.01)
        logger = ProductionInteractionLogger(
            {"storage": str(storage), "use_compression": True, "flush_interval": 0.05}
        )
        store = logger.store
        assert store is not None and logger.writer is not None
        outage = Outage(store.write)
        store.write = outage  # type: ignore[method-assign]
        handler = CaptureHandler(logger, feedback_mirror=mirror)
        graph = build_graph()
        photo = canary_jpeg()

        ids = []
        for i in range(N_INTERACTIONS):
            if i == 60:  # the database cannot be written for a while: rows go to the spill journal
                assert logger.flush(timeout=10)
                outage.down = True
            if i == 75:
                assert logger.flush(timeout=10) is False  # the rows wait in the journal
                # The writer keeps trying to replay the journal, renaming its file while it tries: read
                # again until the listing catches the file under one name.
                deadline, journal = time.monotonic() + 10, {}
                while not any(journal.values()):
                    assert time.monotonic() < deadline, "the spill journal stayed empty during the outage"
                    try:
                        journal = files_under(storage / "journal")
                    except FileNotFoundError:  # renamed between listing and reading
                        journal = {}
                    if not any(journal.values()):
                        time.sleep(0.01)
                assert outage.failures and logger.writer.stats.spilled > 0
                sinks.update({f"journal during the outage: {k}": v for k, v in journal.items()})
                outage.down = False
            run_id = uuid.uuid4()
            agent, text = query(i)
            config = {
                "callbacks": [handler, tracer],
                "run_id": run_id,
                "run_name": RUN_NAME,
                "tags": TAGS,
                "metadata": {
                    "user_id": USER_IDS[i % len(USER_IDS)],
                    "session_id": SESSION_IDS[(5 * i) % len(SESSION_IDS)],
                    "contact": sentence("run_metadata"),
                },
            }
            inputs = {"query": text, "notes": sentence("node_input"), "fail": i % 10 == 9}
            if inputs["fail"]:
                with pytest.raises(ValueError, match="audit failed"):
                    graph.invoke(inputs, config=config)
            else:
                graph.invoke(inputs, config=config)
            ids.append(str(run_id))
            handler.record_feedback(
                run_id,
                score=5.0 if i % 4 else 2.0,
                thumbs="up" if i % 4 else "down",
                comment=sentence("feedback_comment", "see "),
                correction=None if i % 4 else sentence("feedback_correction", f"{agent} should say: "),
                # A photo with GPS and its owner in EXIF, and a code snippet holding keys, on a correction
                # now and then (i = 60 is during the outage: they wait in the journal too).
                attachments=None if i % 15 else [Attachment("image", photo), Attachment("code", CANARY_CODE)],
            )
        assert wait_until(lambda: logger.flush(timeout=5), timeout=30)  # True once the journal is replayed
        assert wait_until(lambda: store.count_interactions() == N_INTERACTIONS), store.count_interactions()
        assert wait_until(lambda: not logger.writer.journal.pending())
        stats = logger.writer.stats
        # the journal empties inside the replay, which counts its rows when it returns: wait for the count
        # (rows a retry had already written count as unchanged, not replayed)
        assert wait_until(lambda: stats.replayed + stats.unchanged > 0) and stats.lost == 0

        # The same attachments posted to the feedback endpoint: JSON with base64, form data with file parts,
        # a retry under an idempotency key, and a refused post (a text file posing as an image).
        with TestClient(feedback_app(store)) as web:
            token = handler.feedback_token(ids[2])
            posts = [
                {
                    "json": {
                        "interaction_id": ids[1],
                        "correction": sentence("feedback_correction", "use: "),
                        "attachments": [
                            {"kind": "image", "filename": "IMG_1.jpg", "content_base64": b64(photo)},
                            {
                                "kind": "code",
                                "filename": "fix.py",
                                "content_base64": b64(CANARY_CODE.encode()),
                            },
                        ],
                    },
                    "headers": {"Idempotency-Key": sentence("attachment_code")[:200]},
                },
                {
                    "data": {"score": "1", "correction": sentence("feedback_correction", "use: ")},
                    "files": [
                        ("attachments", ("photo.jpg", photo, "image/jpeg")),
                        ("code", ("a.py", CANARY_CODE.encode(), "text/plain")),
                    ],
                    "headers": {"Authorization": f"Bearer {token}"},
                },
            ]
            for post in [*posts, posts[0]]:
                assert web.post("/api/feedback", **post).status_code == 201
            refused = web.post(
                "/api/feedback",
                json={
                    "interaction_id": ids[3],
                    "attachments": [{"kind": "image", "content_base64": b64(CANARY_CODE.encode())}],
                },
            )
            assert refused.status_code == 415
        assert len(store.attachments.for_interaction(ids[1])) == 2  # the retry was stored once

        # Ids holding PII are stored as their keyed hashes, one per id (not merged into one placeholder), so
        # a lookup by the raw id hashes it alike.
        rows = store.query_interactions(limit=None)
        assert {r["user_id"] for r in rows} == {safe_identifier(u) for u in USER_IDS}
        assert {r["session_id"] for r in rows} == {safe_identifier(s) for s in SESSION_IDS}
        assert all(r["user_id"].startswith("h:") and r["session_id"].startswith("h:") for r in rows)
        assert len({r["user_id"] for r in rows}) == len(USER_IDS)
        by_session = store.query_interactions(session_id=safe_identifier(SESSION_IDS[0]), limit=None)
        assert len(by_session) == sum((5 * i) % len(SESSION_IDS) == 0 for i in range(N_INTERACTIONS))
        assert {r["graph_name"] for r in rows} == {default_redactor().redact(RUN_NAME)}

        # Annotation: a reviewer's labels and reasons.
        store.queue.enqueue(
            {
                "interaction_id": iid,
                "priority": 1.0,
                "strategy": "manual",
                "selection_reason": sentence("annotation_reason", "flagged by "),
            }
            for iid in ids[:6]
        )
        for item in store.queue.items("pending"):
            agent = query(ids.index(item["interaction_id"]))[0]
            store.queue.update(
                item["item_id"],
                status="labeled",
                label={"agent": agent, "note": sentence("annotation_label", "reviewer: ")},
                annotator="reviewer-1",
            )

        # The maintenance cycle, checkpointed in SQLite; it retrains, promotes and writes its report.
        model_dir = tmp_path / "models"
        config = {
            "maintenance": {
                "model_dir": str(model_dir),
                "annotation": "feedback",
                "min_interactions": 20,
                "min_validation_samples": 1,
                "auto_promote": True,
                "report_path": str(tmp_path / "out" / "maintenance_report.html"),
            },
            "retraining": {"min_new_samples": 20, "enable_ab_test": False},
            "active_learning": {"budget_per_cycle": 30},
        }
        with SqliteSaver.from_conn_string(str(tmp_path / "checkpoints.db")) as saver:
            state = run_maintenance(
                store,
                config=config,
                checkpointer=saver,
                registry=ModelRegistry(store, model_dir / "artifacts"),
            )
        assert state["status"] == "completed", state.get("reason")
        assert state["steps"]["select"]["selected"] > 0
        assert state["steps"]["retrain"]["status"] == "completed", state["steps"]["retrain"]

        build_report(store, tmp_path / "out" / "report.html")
        assert (
            cli_main(["export", "--store", store.url, "--out", str(tmp_path / "out" / "export.jsonl")]) == 0
        )
        exported = export_to_dataset(store, client, "canary-dataset")
        assert exported.created == N_INTERACTIONS

        # The database and its WAL as they are while the store is open, then everything after closing.
        db = Path(store.url.removeprefix("sqlite:///"))
        for path in (db, db.with_name(db.name + "-wal")):
            sinks[f"open database: {path.name}"] = path.read_bytes()
        handler.close()
        mirror.flush(timeout=10)
        mirror.close(timeout=10)
        logger.close()
        client.flush(timeout=10)
        assert server.wait_for(lambda: len(server.feedback) >= N_INTERACTIONS, timeout=10)
        assert server.wait_for(lambda: str(run_id) in server.runs and "end_time" in server.runs[str(run_id)])
        root = server.runs[str(run_id)]  # the run name and tags arrive redacted
        assert root["name"] == default_redactor().redact(RUN_NAME)
        assert set(root["tags"]) == {default_redactor().redact(t) for t in TAGS}
        sinks["LangSmith requests"] = b"\n".join(
            readable_bytes(r.body) + f"{r.method} {r.path} {r.query}".encode() for r in server.requests
        )

    sinks.update(files_under(tmp_path))
    out, err = capsys.readouterr()
    sinks["stdout and stderr"] = (out + err).encode()
    sinks["log records"] = (caplog.text + "\n".join(r.getMessage() for r in caplog.records)).encode()

    # Every sink the run should have written is there and holds data.
    names = set(sinks)
    for expected in (
        "storage/interactions.db",
        "checkpoints.db",
        "out/report.html",
        "out/maintenance_report.html",
        "out/export.jsonl",
        "open database: interactions.db-wal",
        "LangSmith requests",
    ):
        assert sinks.get(expected), f"sink {expected!r} is missing or empty"
    backups = [n for n in names if n.startswith("storage/backups/") and n.endswith(".jsonl.gz")]
    artifacts = [n for n in names if n.startswith("models/")]
    assert {n.split("/")[-1].split("-")[0] for n in backups} >= {"interactions", "node_runs", "feedback"}
    assert any(n.startswith("storage/backups/attachments-") for n in backups)
    assert not [name for name, data in sinks.items() if GPS_SECONDS in data], "GPS coordinates leaked"
    assert not [name for name, data in sinks.items() if b"xmpmeta" in data], "XMP metadata leaked"
    assert any(n.endswith(".skops") for n in artifacts) and any("candidates" in n for n in artifacts)
    assert any(n.startswith("journal during the outage") for n in names)
    assert caplog.records, "nothing was logged: the log sink was not exercised"
    assert server.examples and server.feedback

    found = scan(sinks, CANARIES)
    print(
        f"\n{len(CANARIES)} canaries ({len(FIELDS)} fields x {len(CANARIES) // len(FIELDS)} formats), "
        f"{sum(len(c.needles) for c in CANARIES)} needles, {len(sinks)} sinks "
        f"({sum(map(len, sinks.values())) / 1e6:.1f} MB) checked; {len(found)} found"
    )
    leaks = sorted({(sink, field) for sink, field, _, _ in found})
    assert not found, "canaries leaked (sink, field):\n" + "\n".join(map(str, leaks))
