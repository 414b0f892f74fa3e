"""The graphs of ``langgraph.json`` served by LangGraph's own in-memory server (``langgraph dev``): an agent
request is captured into the store the environment names, and a maintenance cycle runs against it."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cl_plugin.store import Store

ROOT = Path(__file__).resolve().parents[2]
LANGGRAPH = Path(sys.executable).with_name("langgraph")

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def server_env(tmp_path: Path) -> dict[str, str]:
    """The server's environment: the store and configuration under ``tmp_path``, no tracing, no analytics."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"LANGSMITH_TRACING", "LANGCHAIN_TRACING_V2", "LANGSMITH_API_KEY", "LANGCHAIN_API_KEY"}
        and not k.startswith("LANGGRAPH_CLOUD_LICENSE")
    }
    config = tmp_path / "config.yaml"
    config.write_text(f"continual_learning:\n  maintenance:\n    model_dir: {tmp_path / 'models'}\n")
    return {
        **env,
        "LANGSMITH_TRACING": "false",
        "LANGCHAIN_TRACING_V2": "false",
        "LANGGRAPH_CLI_NO_ANALYTICS": "1",  # the CLI's usage report
        "CL_PLUGIN_STORE_URL": f"sqlite:///{tmp_path / 'store.db'}",
        "CL_PLUGIN_CONFIG": str(config),
    }


@pytest.mark.skipif(shutil.which(str(LANGGRAPH)) is None, reason="needs langgraph-cli[inmem] (the dev extra)")
def test_langgraph_dev_serves_the_agent_with_capture_and_runs_a_maintenance_cycle(tmp_path: Path) -> None:
    from langgraph_sdk import get_sync_client

    port = free_port()
    log = (tmp_path / "server.log").open("w")
    # --allow-blocking: the store and the registry are synchronous (the agent's factory opens them)
    flags = ["--no-browser", "--no-reload", "--allow-blocking", "--host", "127.0.0.1", "--port", str(port)]
    server = subprocess.Popen(
        [str(LANGGRAPH), "dev", *flags, "--config", str(ROOT / "langgraph.json")],
        cwd=tmp_path,  # the server keeps its own state under the working directory
        env=server_env(tmp_path),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        client = get_sync_client(url=f"http://127.0.0.1:{port}")
        deadline = time.monotonic() + 90
        while True:
            assert server.poll() is None, (tmp_path / "server.log").read_text()[-3000:]
            try:
                client.assistants.search(limit=10)
                break
            except Exception:
                assert time.monotonic() < deadline, "the server did not start in 90 s"
                time.sleep(0.25)

        query = "What is the square root of 2 to 3 decimals?"
        answer = client.runs.wait(None, "agent", input={"query": query})
        assert answer["response"], answer
        store = Store.from_url(f"sqlite:///{tmp_path / 'store.db'}")
        try:
            deadline = time.monotonic() + 30  # the server's capture handler writes in the background
            while not (captured := store.query_interactions(limit=10)):
                assert time.monotonic() < deadline, "the agent's run was not captured"
                time.sleep(0.1)
            [row] = captured
            assert row["user_query"] == query

            state = client.runs.wait(None, "maintenance", input={})
            assert state["owner"] is True
            assert state["status"] == "skipped"  # one interaction: fewer than maintenance.min_interactions
            assert list(state["steps"]) == ["review_ab_tests", "load_window", "validate"]
            [run] = store.runs.list(limit=10)
            assert run["run_id"] == state["run_id"] and run["status"] in {"completed", "skipped"}
            assert run["summary"]["window"]["count"] == 1
        finally:
            store.close()
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(10)
        log.close()
