"""The maintenance graph: a full cycle, skips, human / LLM / feedback labels, the lease, crash and resume."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from cl_plugin.graphs.maintenance import (
    LEASE,
    build_maintenance_graph,
    register_starting_models,
    run_maintenance,
)
from cl_plugin.graphs.mcts_agents import (
    build_mcts_agent_graph,
)
from cl_plugin.graphs.traffic import OPS_DRIFT, run_traffic
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langgraph.checkpoint.memory import InMemorySaver

from cl_plugin import CaptureHandler
from cl_plugin.learning.registry import ModelRegistry
from cl_plugin.store import Store
from tests.seeded import captured_store, record_a_winning_candidate

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store with 400 captured interactions of drifting traffic and a production model set (v1)."""
    root = tmp_path_factory.mktemp("template")
    store, _ = captured_store(root, 400)
    store.close()
    return root


@pytest.fixture
def world(template: Path, tmp_path: Path) -> tuple[Store, ModelRegistry, dict[str, Any]]:
    """A private copy of the template: its store, its registry and a config writing under it."""
    shutil.copytree(template, tmp_path, dirs_exist_ok=True)
    store = Store.from_url(f"sqlite:///{tmp_path / 'store.db'}").setup()
    registry = ModelRegistry(store, tmp_path / "models" / "artifacts")
    config = {
        "maintenance": {
            "model_dir": str(tmp_path / "models"),
            "annotation": "feedback",
            "min_interactions": 100,
        },
        "retraining": {"min_new_samples": 50},
        "active_learning": {"budget_per_cycle": 30},
    }
    yield store, registry, config
    store.close()


def step(state: dict[str, Any], name: str) -> dict[str, Any]:
    """A step's report without its timing, which varies from run to run."""
    report = dict(state["steps"][name])
    assert report.pop("seconds") >= 0
    return report


def with_(config: dict[str, Any], **maintenance: Any) -> dict[str, Any]:
    return {**config, "maintenance": {**config["maintenance"], **maintenance}}


def test_a_cycle_runs_every_step_records_itself_and_starts_an_ab_test(world: tuple) -> None:
    store, registry, config = world
    state = run_maintenance(store, config=config, registry=registry)
    assert state["status"] == "completed"
    assert list(state["steps"]) == [
        "review_ab_tests", "load_window", "validate", "drift_check", "analyze_failures",
        "select", "annotate", "retrain", "evaluate", "ab_test",
    ]  # fmt: skip
    steps = state["steps"]
    assert steps["load_window"]["count"] == 400 and steps["validate"]["valid"] == 400
    assert steps["drift_check"]["status"] == "completed" and steps["drift_check"]["drifted"]
    assert store.drift.events("maintenance")[0]["event_id"] == f"maintenance:{state['run_id']}"
    assert steps["select"]["selected"] == 30 == len(store.queue.items())
    assert steps["annotate"]["labeled"] == len(store.queue.items("labeled")) > 0
    assert steps["retrain"]["status"] == "completed" and steps["evaluate"]["passed"]
    [test] = store.ab.list(status="running")
    assert test["test_id"] == steps["ab_test"]["test_id"]
    assert registry.get_alias("router", "candidate").version == 2
    assert registry.get_alias("router", "production").version == 1  # the A/B test decides
    [run] = store.runs.list()
    assert run["run_id"] == state["run_id"] and run["status"] == "completed"
    assert list(run["steps"]) == list(steps) and run["summary"]["candidate"]["router"] == 2
    assert store.runs.lease_holder(LEASE) is None


def test_with_ab_testing_off_and_auto_promote_the_candidate_goes_to_production(world: tuple) -> None:
    store, registry, config = world
    config = {
        **with_(config, auto_promote=True),
        "retraining": {"min_new_samples": 50, "enable_ab_test": False},
    }
    state = run_maintenance(store, config=config, registry=registry)
    assert state["steps"]["promote"]["promoted"] == {"replay": 2, "rag_index": 2, "router": 2}
    assert registry.get_alias("router", "production").version == 2
    assert registry.get_alias("rag_index", "production").version == 2


def test_too_few_interactions_skip_everything_after_validation(world: tuple) -> None:
    store, registry, config = world
    state = run_maintenance(store, config=with_(config, min_interactions=1000), registry=registry)
    assert state["status"] == "skipped" and "min_interactions is 1000" in state["reason"]
    assert list(state["steps"]) == ["review_ab_tests", "load_window", "validate"]
    assert store.runs.list()[0]["status"] == "skipped"
    assert store.queue.items() == []


def test_the_next_cycle_reads_only_what_arrived_since_the_last_one(world: tuple) -> None:
    store, registry, config = world
    run_maintenance(store, config=config, registry=registry)
    again = run_maintenance(store, config=config, registry=registry)
    assert again["steps"]["load_window"]["count"] == 0 and again["status"] == "skipped"


def test_human_annotation_pauses_and_resumes_with_the_labels(world: tuple) -> None:
    store, registry, config = world
    saver = InMemorySaver()
    paused = run_maintenance(
        store, config=with_(config, annotation="human"), registry=registry, checkpointer=saver
    )
    [pause] = paused["__interrupt__"]
    items = pause.value["items"]
    assert len(items) == 30 and sorted(pause.value["agents"]) == ["HRM", "MCTS", "TRM"]
    assert store.runs.lease_holder(LEASE)["owner"] == paused["run_id"]  # the lease is kept while paused
    labels = {item["interaction_id"]: "TRM" for item in items[:10]}
    done = run_maintenance(
        store, config=with_(config, annotation="human"), registry=registry, checkpointer=saver,
        thread_id=paused["thread_id"], resume=labels,
    )  # fmt: skip
    assert done["status"] == "completed" and step(done, "annotate") == {
        "mode": "human",
        "labeled": 10,
        "skipped": 20,
    }
    labeled = store.queue.items("labeled")
    assert {i["interaction_id"] for i in labeled} == set(labels) and {i["annotator"] for i in labeled} == {
        "human"
    }


class KeywordJudge(GenericFakeChatModel):
    """A chat model that names an agent from the query's words, as a careful judge would."""

    messages: Any = iter(())

    def _generate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any
    ) -> ChatResult:
        query = str(messages[-1].content).lower()
        agent = (
            "TRM"
            if ("root" in query or " dp" in query or "decimal" in query)
            else "MCTS"
            if "/" in query
            else "HRM"
        )
        return ChatResult(generations=[ChatGeneration(message=AIMessage(f"The best agent is {agent}."))])


def test_an_llm_judge_labels_the_selected_items(world: tuple) -> None:
    store, registry, config = world
    state = run_maintenance(
        store, config=with_(config, annotation="llm"), registry=registry, judge=KeywordJudge()
    )
    assert step(state, "annotate") == {"mode": "llm", "labeled": 30, "skipped": 0}
    assert {i["annotator"] for i in store.queue.items("labeled")} == {"llm-judge"}
    with pytest.raises(ValueError, match="judge="):
        build_maintenance_graph(store, config=with_(config, annotation="llm"), registry=registry)


def test_two_concurrent_runs_share_one_lease(world: tuple) -> None:
    store, registry, config = world
    entered, release = threading.Event(), threading.Event()

    class SlowJudge(KeywordJudge):
        def _generate(self, *args: Any, **kwargs: Any) -> ChatResult:
            entered.set()
            release.wait(30)
            return super()._generate(*args, **kwargs)

    results: dict[str, Any] = {}
    first = threading.Thread(
        target=lambda: results.setdefault(
            "first",
            run_maintenance(
                store, config=with_(config, annotation="llm"), registry=registry, judge=SlowJudge()
            ),
        )
    )
    first.start()
    assert entered.wait(60)
    results["second"] = run_maintenance(store, config=config, registry=registry)
    release.set()
    first.join(60)
    assert (
        results["second"]["status"] == "skipped"
        and results["second"]["reason"] == "another run holds the lease"
    )
    assert results["first"]["status"] == "completed"
    assert [r["status"] for r in store.runs.list()] == ["completed"]  # the skipped run never owned a record


CRASH_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys, json
    from langgraph.checkpoint.sqlite import SqliteSaver
    from cl_plugin.store import Store
    from cl_plugin.learning.registry import ModelRegistry
    from cl_plugin.graphs.maintenance import run_maintenance

    root, thread_id, crash = sys.argv[1], sys.argv[2], sys.argv[3] == "crash"
    if crash:  # die the hard way in the middle of retraining
        import cl_plugin.learning.retraining as retraining
        retraining.IncrementalRetrainingPipeline.retrain_sync = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)
    store = Store.from_url(f"sqlite:///{root}/store.db").setup()
    config = json.loads(sys.argv[4])
    with SqliteSaver.from_conn_string(f"{root}/checkpoints.db") as saver:
        state = run_maintenance(store, config=config, registry=ModelRegistry(store, f"{root}/models/artifacts"),
                                checkpointer=saver, thread_id=thread_id)
    print(json.dumps({"status": state["status"], "steps": list(state["steps"])}))
    """
)


@pytest.mark.slow
def test_a_run_killed_mid_retrain_resumes_where_it_stopped(world: tuple, tmp_path: Path) -> None:
    store, _, config = world
    script = tmp_path / "crash.py"
    script.write_text(CRASH_SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    thread_id = "maintenance-crash-test"
    config = with_(config, lease_ttl_seconds=3600)
    args = [sys.executable, str(script), str(tmp_path), thread_id]
    crashed = subprocess.run(
        [*args, "crash", json.dumps(config)], env=env, capture_output=True, text=True, timeout=300
    )
    assert crashed.returncode == -9, crashed.stderr[-2000:]
    [run] = store.runs.list()
    assert run["status"] == "running" and "annotate" in run["steps"] and "retrain" not in run["steps"]
    queued = len(store.queue.items())
    resumed = subprocess.run(
        [*args, "resume", json.dumps(config)], env=env, capture_output=True, text=True, timeout=300
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    out = json.loads(resumed.stdout.strip().splitlines()[-1])
    assert out["status"] == "completed" and out["steps"][-3:] == ["retrain", "evaluate", "ab_test"]
    assert len(store.queue.items()) == queued  # selection did not run again
    [run] = store.runs.list()
    assert run["status"] == "completed" and run["run_id"] == thread_id


def test_a_later_cycle_concludes_the_ab_test_and_promotes_a_winning_candidate(world: tuple) -> None:
    store, registry, config = world
    config = {**config, "ab_testing": {"min_samples": 100, "traffic_split": 0.5}}
    first = run_maintenance(store, config=config, registry=registry)
    test_id = first["steps"]["ab_test"]["test_id"]
    record_a_winning_candidate(store, config["ab_testing"], test_id)  # live traffic
    second = run_maintenance(store, config=config, registry=registry)
    [review] = second["steps"]["review_ab_tests"]["tests"]
    assert review["test_id"] == test_id and review["recommendation"] == "Deploy B"
    assert review["promoted"] == {"rag_index": 2, "replay": 2, "router": 2}
    assert registry.get_alias("router", "production").version == 2
    assert store.ab.list(status="running") == []


def test_its_langsmith_traces_carry_no_pii(world: tuple) -> None:
    from cl_plugin import ProductionInteractionLogger
    from cl_plugin.capture.langsmith import sanitizing_client, sanitizing_tracer
    from tests.langsmith_server import LangSmithServer

    store, registry, config = world
    canaries = ("maria.canary@example.org", "+1 415 555 0199")
    logger = ProductionInteractionLogger(
        {"storage": str(Path(config["maintenance"]["model_dir"]).parent)}, store=store
    )
    for i in range(40):  # poorly rated queries carrying PII, so selection and analysis pick them up
        logger.log_interaction_sync(
            {
                "interaction_id": f"pii-{i}",
                "timestamp": time.time(),
                "session_id": f"pii-session-{i}",
                "user_query": f"Order jobs B and C if C needs B; mail {canaries[0]} or call {canaries[1]}",
                "response": "C, B",
                "agent_selected": "TRM",
                "user_feedback_score": 1.0,
            }
        )
    logger.flush()
    with LangSmithServer() as server:
        client = server.track(sanitizing_client(api_url=server.url, api_key="fake"))
        tracer = sanitizing_tracer("maintenance", client=client)
        state = run_maintenance(store, config=config, registry=registry, callbacks=[tracer])
        assert client.flush(timeout=10) is not False
        assert server.wait_for(lambda: any(r.get("name") == "maintenance" for r in server.runs.values()))
        sent = server.all_bodies()
    assert state["status"] == "completed" and b"[EMAIL]" in sent  # the redacted queries were traced
    assert not [c for c in canaries if c.encode() in sent]


def test_a_new_candidate_waits_while_an_ab_test_is_running(world: tuple) -> None:
    store, registry, config = world
    config = with_(config, min_validation_samples=5)
    first = run_maintenance(store, config=config, registry=registry)
    graph = build_mcts_agent_graph(router=registry.load("router"), rag=registry.load("rag_index")).compile()
    handler = CaptureHandler(store)
    run_traffic(graph, handler, 200, seed=9, drift=OPS_DRIFT)
    handler.close()
    second = run_maintenance(store, config=config, registry=registry)
    assert second["steps"]["retrain"]["status"] == "completed", second["steps"]
    assert second["steps"]["evaluate"]["passed"], second["steps"]["evaluate"]
    running = first["steps"]["ab_test"]["test_id"]
    assert step(second, "ab_test") == {"status": "skipped", "reason": f"test {running} is still running"}
    assert [t["test_id"] for t in store.ab.list(status="running")] == [running]


@pytest.mark.slow
@pytest.mark.postgres
def test_on_postgresql_a_paused_run_resumes_from_the_postgres_checkpointer(
    pg_url: str, tmp_path: Path
) -> None:
    from langgraph.checkpoint.postgres import PostgresSaver

    store = Store.from_url(pg_url).setup()
    registry = ModelRegistry(store, tmp_path / "models" / "artifacts")
    register_starting_models(registry)
    handler = CaptureHandler(store)
    graph = build_mcts_agent_graph(router=registry.load("router"), rag=registry.load("rag_index")).compile()
    run_traffic(graph, handler, 240, seed=6, drift=OPS_DRIFT)
    handler.close()
    config = {
        "maintenance": {
            "model_dir": str(tmp_path / "models"),
            "annotation": "human",
            "min_interactions": 100,
        },
        "retraining": {"min_new_samples": 30},
        "active_learning": {"budget_per_cycle": 10},
    }
    conninfo = pg_url.replace("postgresql+psycopg://", "postgresql://")
    with PostgresSaver.from_conn_string(conninfo) as saver:
        saver.setup()
        paused = run_maintenance(store, config=config, registry=registry, checkpointer=saver)
    items = paused["__interrupt__"][0].value["items"]
    with PostgresSaver.from_conn_string(conninfo) as saver:  # a new connection, as another process would open
        done = run_maintenance(
            store, config=config, registry=registry, checkpointer=saver, thread_id=paused["thread_id"],
            resume={item["interaction_id"]: "HRM" for item in items},
        )  # fmt: skip
    assert done["status"] == "completed", done.get("reason")
    assert step(done, "annotate") == {"mode": "human", "labeled": len(items), "skipped": 0}
    assert store.runs.list()[0]["status"] == "completed"
    store.close()


class Killed(BaseException):
    """A process dying at this point: no ``except Exception`` on the way catches it."""


def test_a_review_killed_between_promoting_and_ending_the_test_finishes_its_verdict_on_resume(
    world: tuple, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cl_plugin.abtest import ABTestFramework

    store, registry, config = world
    config = {**config, "ab_testing": {"min_samples": 100, "traffic_split": 0.5}}
    first = run_maintenance(store, config=config, registry=registry)
    test_id = first["steps"]["ab_test"]["test_id"]
    record_a_winning_candidate(store, config["ab_testing"], test_id)

    def die(self: Any, test_id: str) -> None:
        raise Killed

    end_test = ABTestFramework.end_test
    monkeypatch.setattr(ABTestFramework, "end_test", die)
    saver = InMemorySaver()
    with pytest.raises(Killed):
        run_maintenance(store, config=config, registry=registry, checkpointer=saver, thread_id="review")
    assert registry.get_alias("router", "production").version == 2  # promoted, but the test still runs
    assert [t["test_id"] for t in store.ab.list(status="running")] == [test_id]
    monkeypatch.setattr(ABTestFramework, "end_test", end_test)
    done = run_maintenance(store, config=config, registry=registry, checkpointer=saver, thread_id="review")
    assert done["status"] == "skipped" and done["steps"]["validate"]["valid"] == 0  # nothing new since
    [review] = done["steps"]["review_ab_tests"]["tests"]
    assert review["test_id"] == test_id and review["recommendation"] == "Deploy B"
    assert review["promoted"] == {"rag_index": 2, "replay": 2, "router": 2}
    assert store.ab.get(test_id)["status"] == "ended"
    assert [m.version for m in registry.alias_history("router", "production")] == [1, 2]  # promoted once


def test_a_retrain_killed_before_aliasing_its_candidate_takes_that_candidate_on_resume(
    world: tuple, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, registry, config = world
    set_alias = ModelRegistry.set_alias

    def die_at_the_candidate_alias(self: Any, name: str, alias: str, *args: Any, **kwargs: Any) -> Any:
        if alias == "candidate":
            raise Killed
        return set_alias(self, name, alias, *args, **kwargs)

    monkeypatch.setattr(ModelRegistry, "set_alias", die_at_the_candidate_alias)
    saver = InMemorySaver()
    with pytest.raises(Killed):
        run_maintenance(store, config=config, registry=registry, checkpointer=saver, thread_id="retrain")
    assert registry.get_alias("router", "candidate") is None  # registered (v2), not yet offered
    monkeypatch.setattr(ModelRegistry, "set_alias", set_alias)
    done = run_maintenance(store, config=config, registry=registry, checkpointer=saver, thread_id="retrain")
    assert done["status"] == "completed" and "ab_test" in done["steps"]
    retrain = done["steps"]["retrain"]
    assert retrain["recovered"] and retrain["versions"] == {"router": 2, "rag_index": 2, "replay": 2}
    assert retrain["production"] == {"router": 1, "rag_index": 1, "replay": 1}
    assert retrain["metrics"]["candidate"]["n"] == retrain["metrics"]["validation_samples"] > 0
    for name in ("router", "rag_index", "router-replay"):  # nothing trained or registered twice
        assert [v.version for v in registry.versions(name)] == [1, 2]
        assert registry.get_alias(name, "candidate").version == 2
    [test] = store.ab.list(status="running")
    assert test["model_b"] == "rag_index v2, replay v2, router v2"


def test_a_run_paused_for_labels_past_its_lease_is_taken_over_and_stops_when_resumed(world: tuple) -> None:
    from cl_plugin.graphs.maintenance import LeaseLostError

    store, registry, config = world
    config = with_(config, lease_ttl_seconds=60.0)
    saver = InMemorySaver()
    human = with_(config, annotation="human")
    paused = run_maintenance(store, config=human, registry=registry, checkpointer=saver)
    items = paused["__interrupt__"][0].value["items"]
    expired = store.runs.lease_holder(LEASE)["expires_at"] + 1.0
    taker = run_maintenance(store, config=config, registry=registry, clock=lambda: expired)
    assert taker["status"] == "completed"
    runs = {r["run_id"]: r for r in store.runs.list()}
    assert runs[paused["run_id"]]["status"] == "failed"  # not "running" forever
    assert taker["run_id"] in runs[paused["run_id"]]["error"]
    with pytest.raises(LeaseLostError, match=taker["run_id"]):
        run_maintenance(
            store, config=human, registry=registry, checkpointer=saver, thread_id=paused["thread_id"],
            resume={item["interaction_id"]: "HRM" for item in items}, clock=lambda: expired + 1.0,
        )  # fmt: skip
    ids = {item["interaction_id"] for item in items}
    assert {i["status"] for i in store.queue.items() if i["interaction_id"] in ids} == {"pending"}
    assert store.runs.lease_holder(LEASE, now=expired + 1.0) is None
