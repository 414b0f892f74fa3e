"""The sanitizing tracer redacts what the client's anonymizer never sees: the serialized model and the
run's invocation parameters."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterator

import pytest
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage
from langsmith import utils as ls_utils

from cl_plugin.capture.langsmith import sanitizing_client, sanitizing_tracer
from tests.langsmith_server import LangSmithServer

EMAIL = "ada.lovelace@example.org"
CARD = "4111 1111 1111 1111"


@pytest.fixture(autouse=True)
def no_ambient_tracing(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in ("TRACING", "TRACING_V2", "ENDPOINT", "API_KEY", "PROJECT", "RUNS_ENDPOINTS"):
        for prefix in ("LANGSMITH_", "LANGCHAIN_"):
            monkeypatch.delenv(prefix + name, raising=False)
    ls_utils.get_env_var.cache_clear()
    yield
    ls_utils.get_env_var.cache_clear()


def test_the_tracer_redacts_the_serialized_model_and_its_invocation_parameters() -> None:
    """A model's constructor arguments (here canned messages) and call parameters (an end user's address as
    the provider's ``user``) reach LangSmith outside inputs, outputs and metadata."""
    model = GenericFakeChatModel(messages=itertools.repeat(AIMessage(f"write to {EMAIL}, card {CARD}")))
    with LangSmithServer() as server:
        client = server.track(sanitizing_client(api_url=server.url, api_key="fake", info=server.info()))
        run_id = uuid.uuid4()
        model.bind(user=EMAIL).invoke(
            "hello", config={"callbacks": [sanitizing_tracer("p", client=client)], "run_id": run_id}
        )
        client.flush(timeout=5)
        assert server.wait_for(lambda: "end_time" in server.runs.get(str(run_id), {}))
        run = server.runs[str(run_id)]
        body = server.all_bodies()

    assert EMAIL.encode() not in body and CARD.encode() not in body
    assert run["extra"]["invocation_params"]["user"] == "[EMAIL]"
    assert "[CREDIT_CARD]" in str(run["serialized"])
    assert run["outputs"]["generations"][0][0]["text"] == "write to [EMAIL], card [CREDIT_CARD]"
