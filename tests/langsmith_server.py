"""A local HTTP server that speaks the part of the LangSmith API the ``langsmith`` client uses.

It records every request (method, path, query, headers, decoded body, multipart parts) and keeps enough state
(runs, feedback, projects, datasets, examples) for the client's read-after-write calls to work. Failures and
slow responses can be injected per path prefix.

Use it as a context manager, and make clients with :meth:`LangSmithServer.client`: they are flushed and
cleaned up when the server stops, so no tracing thread outlives a test::

    with LangSmithServer() as server:
        client = server.client()
        ...
        client.flush(timeout=5)
        assert server.runs
"""

from __future__ import annotations

import dataclasses
import datetime
import email.parser
import email.policy
import io
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import langsmith

__all__ = ["LangSmithServer", "RecordedRequest"]

TENANT_ID = "00000000-0000-4000-8000-000000000001"

# Every key the client's tracing thread reads: a partial config kills that thread and flush() then hangs.
BATCH_INGEST_CONFIG = {
    "use_multipart_endpoint": True,
    "scale_up_qsize_trigger": 1000,
    "scale_up_nthreads_limit": 16,
    "scale_down_nempty_trigger": 4,
    "size_limit": 100,
    "size_limit_bytes": 20_971_520,
}


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat()


@dataclasses.dataclass
class RecordedRequest:
    """One request as the server received it.

    Attributes:
        method: ``GET``, ``POST``, ``PATCH``, ...
        path: the URL path without the query.
        query: the query parameters, each a list of values.
        headers: the request headers (lower-case names).
        body: the body, decompressed when it was sent with ``Content-Encoding: zstd``.
        parts: for multipart bodies, part name -> decoded JSON (or the raw bytes when not JSON).
    """

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    parts: dict[str, Any] = dataclasses.field(default_factory=dict)

    def json(self) -> Any:
        """The body decoded as JSON."""
        return json.loads(self.body)


class _Fault:
    """An injected failure or delay for requests whose path starts with a prefix."""

    def __init__(self, status: int | None, delay: float, times: int | None) -> None:
        self.status = status
        self.delay = delay
        self.times = times


class LangSmithServer:
    """A threaded LangSmith look-alike on ``127.0.0.1`` and a free port.

    Args:
        zstd: advertise ``zstd_compression_enabled`` in ``/info`` (the client then sends compressed
            multipart bodies, which the server decompresses).
        version: the server version ``/info`` reports.

    Attributes:
        requests: every recorded request, in arrival order.
        runs: run id -> the run as the multipart posts and patches built it (``inputs``, ``outputs``,
            ``extra``, ... merged in).
        feedback: feedback id -> the feedback body.
        projects: project name -> project.
        datasets: dataset id -> dataset.
        examples: example id -> example.
    """

    def __init__(self, *, zstd: bool = True, version: str = "0.10.66") -> None:
        self.zstd = zstd
        self.version = version
        self.requests: list[RecordedRequest] = []
        self.runs: dict[str, dict[str, Any]] = {}
        self.feedback: dict[str, dict[str, Any]] = {}
        self.projects: dict[str, dict[str, Any]] = {}
        self.datasets: dict[str, dict[str, Any]] = {}
        self.examples: dict[str, dict[str, Any]] = {}
        self._faults: dict[str, _Fault] = {}
        self._lock = threading.Lock()
        self._release = threading.Event()
        self._clients: list[langsmith.Client] = []
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The base URL, such as ``http://127.0.0.1:54321``."""
        if self._httpd is None:
            raise RuntimeError("the server is not running; use it as a context manager or call start()")
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> LangSmithServer:
        """Start serving in a daemon thread."""
        handler = type("_Handler", (_Handler,), {"server_state": self})
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, args=(0.05,), name="langsmith-server", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Flush and clean up every client made by :meth:`client`, then stop serving."""
        self.clear_faults()
        for client in self._clients:
            client.cleanup(timeout=5)
        self._clients.clear()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> LangSmithServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def info(self) -> dict[str, Any]:
        """What ``GET /info`` answers."""
        return {
            "version": self.version,
            "license_expiration_time": None,
            "batch_ingest_config": BATCH_INGEST_CONFIG,
            "instance_flags": {"zstd_compression_enabled": self.zstd},
        }

    def client(self, *, fetch_info: bool = False, **kwargs: Any) -> langsmith.Client:
        """A ``langsmith.Client`` pointed at this server, cleaned up when the server stops.

        Args:
            fetch_info: let the client ``GET /info`` itself. Its tracing thread does that first thing, with
                no lock against other fetches, so a test that stops the server before the thread has run
                makes it fetch from a dead port (and warn at exit); such a test should wait for traced
                runs to arrive. By default the client gets :meth:`info` up front instead.
            **kwargs: passed to ``langsmith.Client``.
        """
        if not fetch_info:
            kwargs.setdefault("info", self.info())
        return self.track(langsmith.Client(api_url=self.url, api_key="fake", **kwargs))

    def track(self, client: langsmith.Client) -> langsmith.Client:
        """Clean ``client`` up (flush with a timeout, stop its threads) when the server stops."""
        self._clients.append(client)
        return client

    # -- fault injection -------------------------------------------------------------------------------

    def fail(self, path_prefix: str, status: int = 500, *, times: int | None = None) -> None:
        """Answer requests under ``path_prefix`` with ``status`` (``times`` times, or until cleared)."""
        with self._lock:
            self._faults[path_prefix] = _Fault(status, 0.0, times)

    def delay(self, path_prefix: str, seconds: float) -> None:
        """Hold requests under ``path_prefix`` for ``seconds`` before answering.

        :meth:`clear_faults` and :meth:`stop` release held requests at once.
        """
        with self._lock:
            self._faults[path_prefix] = _Fault(None, seconds, None)

    def clear_faults(self) -> None:
        """Answer every request normally again, releasing requests held by :meth:`delay` now."""
        with self._lock:
            self._faults.clear()
            release, self._release = self._release, threading.Event()
        release.set()

    def _fault_for(self, path: str) -> _Fault | None:
        with self._lock:
            for prefix, fault in self._faults.items():
                if path.startswith(prefix):
                    if fault.times is not None:
                        if fault.times <= 0:
                            continue
                        fault.times -= 1
                    return fault
        return None

    # -- assertions helpers ----------------------------------------------------------------------------

    def requests_to(self, method: str, path_prefix: str) -> list[RecordedRequest]:
        """The recorded requests with this method whose path starts with ``path_prefix``."""
        with self._lock:
            return [r for r in self.requests if r.method == method and r.path.startswith(path_prefix)]

    def all_bodies(self) -> bytes:
        """Every request body received (decompressed), joined: the place to look for leaked text."""
        with self._lock:
            return b"\n".join(r.body for r in self.requests)

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
        """Poll ``predicate`` until it is true or ``timeout`` seconds pass; return its last value."""
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    # -- state changes (called by the handler under the lock) ------------------------------------------

    def _project(self, name: str) -> dict[str, Any]:
        if name not in self.projects:
            self.projects[name] = {
                "id": str(uuid.uuid4()),
                "name": name,
                "tenant_id": TENANT_ID,
                "reference_dataset_id": None,
                "start_time": _now(),
                "extra": None,
            }
        return self.projects[name]

    def _ingest_run(self, op: str, run: dict[str, Any]) -> None:
        run_id = str(run["id"])
        merged = self.runs.setdefault(run_id, {})
        merged.update(run)
        if op == "post" and run.get("session_name"):
            self._project(run["session_name"])

    def _ingest_parts(self, parts: dict[str, Any]) -> None:
        for name, value in parts.items():
            kind, _, rest = name.partition(".")
            if kind == "feedback":
                self.feedback[rest] = value
                continue
            if kind not in ("post", "patch"):
                continue
            run_id, _, field = rest.partition(".")
            if field:
                self.runs.setdefault(run_id, {"id": run_id})[field] = value
            else:
                self._ingest_run(kind, value)


def _parse_multipart(content_type: str, body: bytes) -> dict[str, Any]:
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + body
    )
    parts: dict[str, Any] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        try:
            parts[str(name)] = json.loads(payload)
        except ValueError:
            parts[str(name)] = payload
    return parts


def _decompress_zstd(body: bytes) -> bytes:
    import zstandard

    reader = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(body), read_across_frames=True)
    return reader.read()


class _Handler(BaseHTTPRequestHandler):
    server_state: LangSmithServer
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in two writes; don't wait 40 ms between

    def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
        pass

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if size == 0:
                    self.rfile.readline()
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _send(self, status: int, payload: Any = None) -> None:
        data = b"" if payload is None else json.dumps(payload, default=str).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _handle(self) -> None:
        state = self.server_state
        split = urlsplit(self.path)
        body = self._read_body()
        if self.headers.get("Content-Encoding") == "zstd":
            body = _decompress_zstd(body)
        content_type = self.headers.get("Content-Type", "")
        request = RecordedRequest(
            method=self.command,
            path=split.path,
            query=parse_qs(split.query),
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body,
            parts=_parse_multipart(content_type, body) if content_type.startswith("multipart/") else {},
        )
        with state._lock:
            state.requests.append(request)
        release = state._release
        fault = state._fault_for(split.path)
        if fault is not None:
            if fault.delay:
                release.wait(fault.delay)
            if fault.status is not None:
                self._send(fault.status, {"detail": "injected failure"})
                return
        with state._lock:
            status, payload = _route(state, request)
        self._send(status, payload)

    do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _handle


def _route(state: LangSmithServer, req: RecordedRequest) -> tuple[int, Any]:
    """Answer one request; the caller holds the state lock."""
    method, path, q = req.method, req.path.rstrip("/"), req.query
    segments = path.strip("/").split("/")
    if method == "GET" and path == "/info":
        return 200, state.info()
    if method == "POST" and path == "/runs/multipart":
        state._ingest_parts(req.parts)
        return 202, {}
    if method == "POST" and path == "/runs/batch":
        data = req.json()
        for op in ("post", "patch"):
            for run in data.get(op) or []:
                state._ingest_run(op, run)
        return 202, {}
    if method == "POST" and path == "/runs":
        state._ingest_run("post", req.json())
        return 202, {}
    if method == "PATCH" and segments[0] == "runs" and len(segments) == 2:
        state._ingest_run("patch", {**req.json(), "id": segments[1]})
        return 202, {}
    if method == "POST" and path == "/feedback":
        data = req.json()
        data.setdefault("created_at", _now())
        data.setdefault("modified_at", _now())
        state.feedback[str(data["id"])] = data
        return 200, data
    if segments[0] == "sessions":
        return _sessions(state, method, segments, q, req)
    if segments[0] == "datasets":
        return _datasets(state, method, segments, q, req)
    if segments[0] == "examples":
        return _examples(state, method, segments, q, req)
    return 404, {"detail": f"{method} {path} is not served by the test server"}


def _sessions(
    state: LangSmithServer, method: str, segments: list[str], q: dict[str, list[str]], req: RecordedRequest
) -> tuple[int, Any]:
    if method == "POST" and len(segments) == 1:
        name = req.json()["name"]
        if name in state.projects:
            return 409, {"detail": "project exists"}
        return 200, state._project(name)
    if method == "GET" and len(segments) == 2:
        found = [p for p in state.projects.values() if p["id"] == segments[1]]
        return (200, found[0]) if found else (404, {"detail": "not found"})
    if method == "GET":
        names = q.get("name")
        return 200, [p for p in state.projects.values() if names is None or p["name"] in names]
    return 404, {"detail": "unsupported sessions call"}


def _datasets(
    state: LangSmithServer, method: str, segments: list[str], q: dict[str, list[str]], req: RecordedRequest
) -> tuple[int, Any]:
    if method == "POST" and len(segments) == 1:
        data = req.json()
        if any(d["name"] == data["name"] for d in state.datasets.values()):
            return 409, {"detail": "dataset exists"}
        dataset = {
            "id": str(uuid.uuid4()),
            "name": data["name"],
            "description": data.get("description"),
            "data_type": data.get("data_type", "kv"),
            "created_at": _now(),
            "modified_at": _now(),
            "example_count": 0,
            "metadata": (data.get("extra") or {}).get("metadata"),
        }
        state.datasets[dataset["id"]] = dataset
        return 200, dataset
    if method == "GET" and len(segments) == 2:
        found = state.datasets.get(segments[1])
        return (200, found) if found else (404, {"detail": "not found"})
    if method == "GET":
        names = q.get("name")
        return 200, [d for d in state.datasets.values() if names is None or d["name"] in names]
    return 404, {"detail": "unsupported datasets call"}


def _examples(
    state: LangSmithServer, method: str, segments: list[str], q: dict[str, list[str]], req: RecordedRequest
) -> tuple[int, Any]:
    if method == "POST" and segments[1:] == ["bulk"]:
        items = req.json()
        if any(str(item.get("id")) in state.examples for item in items):
            return 409, {"detail": "an example with this id already exists"}
        created = []
        for item in items:
            example = {
                "id": str(item.get("id") or uuid.uuid4()),
                "dataset_id": item["dataset_id"],
                "inputs": item.get("inputs"),
                "outputs": item.get("outputs"),
                "metadata": item.get("metadata"),
                "source_run_id": item.get("source_run_id"),
                "created_at": item.get("created_at") or _now(),
                "modified_at": _now(),
            }
            state.examples[example["id"]] = example
            created.append(example)
        return 200, created
    if method == "GET" and len(segments) == 1:
        matches: Iterator[dict[str, Any]] = iter(state.examples.values())
        if "dataset" in q:
            matches = (e for e in matches if e["dataset_id"] in q["dataset"])
        if "id" in q:
            matches = (e for e in matches if e["id"] in q["id"])
        found = list(matches)
        offset = int(q.get("offset", ["0"])[0])
        limit = int(q.get("limit", ["100"])[0])
        return 200, found[offset : offset + limit]
    return 404, {"detail": "unsupported examples call"}
