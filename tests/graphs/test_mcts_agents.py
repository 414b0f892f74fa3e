"""The multi-agent graph: each agent wins its own family, routing is recorded, consensus is honest."""

from __future__ import annotations

import uuid
from dataclasses import asdict
from typing import Any

import pytest
from cl_plugin.graphs.mcts_agents import (
    AGENTS,
    build_mcts_agent_graph,
    default_rag,
    default_router,
    needs_retrieval,
    new_thread_config,
    seed_set,
)
from cl_plugin.graphs.tasks import BEST_AGENT, FAMILIES, Task, check_answer, sample_tasks
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage
from langchain_core.outputs import LLMResult
from langgraph.checkpoint.memory import InMemorySaver

from cl_plugin.capture import DECISION_EVENT
from cl_plugin.learning.rag import RagIndex
from cl_plugin.learning.router import PARALLEL, MetaRouter, RoutingDecision

SEARCH = "Choose some of the numbers 20, 5, 18, 31, 13, 10 and 32 so their total is as large as possible without going over 69."


class FixedRouter:
    """Always picks the same route, with a fixed probability spread."""

    def __init__(self, agent: str) -> None:
        self.agent = agent

    def route(self, query: str) -> RoutingDecision:
        top = self.agent if self.agent in AGENTS else "HRM"
        probabilities = {a: (0.8 if a == top else 0.1) for a in AGENTS}
        return RoutingDecision(self.agent, 0.8, probabilities, {"n_chars": len(query)})


class Decisions(BaseCallbackHandler):
    """Keeps every decision recorded with record_decision, and the retriever runs."""

    def __init__(self) -> None:
        self.decisions: list[dict[str, Any]] = []
        self.retrievals = 0

    def on_custom_event(self, name: str, data: Any, **kwargs: Any) -> None:
        if name == DECISION_EVENT:
            self.decisions.append(data)

    def on_retriever_start(self, serialized: Any, query: str, **kwargs: Any) -> None:
        self.retrievals += 1


class Tokens(BaseCallbackHandler):
    """Adds up the tokens that chat model runs report."""

    def __init__(self) -> None:
        self.total = 0

    def on_llm_end(self, response: LLMResult, **kwargs: Any) -> None:
        for generations in response.generations:
            for generation in generations:
                self.total += generation.message.usage_metadata["total_tokens"]


@pytest.fixture(scope="module")
def rag() -> RagIndex:
    return default_rag()


@pytest.fixture(scope="module")
def router() -> MetaRouter:
    return default_router()


def forced(agent: str, rag: RagIndex, **kwargs: Any) -> Any:
    return build_mcts_agent_graph(router=FixedRouter(agent), rag=rag, max_iterations=1, **kwargs).compile()


def accuracy(graph: Any, tasks: list[Task]) -> float:
    return sum(check_answer(t, graph.invoke({"query": t.query})["response"]) for t in tasks) / len(tasks)


@pytest.fixture(scope="module")
def accuracies(rag: RagIndex) -> dict[tuple[str, str], float]:
    graphs = {agent: forced(agent, rag) for agent in AGENTS}
    return {
        (family, agent): accuracy(graphs[agent], sample_tasks(60, seed=21, mix={family: 1.0}))
        for family in FAMILIES
        for agent in AGENTS
    }


@pytest.mark.parametrize("family", FAMILIES)
def test_the_best_agent_wins_its_family_by_a_clear_margin(family: str, accuracies: dict) -> None:
    # Measured on these 60 tasks per family (HRM / TRM / MCTS): planning 1.00 / 0.48 / 0.25, refinement
    # 0.00 / 1.00 / 0.00, search 0.32 / 0.55 / 0.93, factual 1.00 / 0.52 / 0.52.
    best = BEST_AGENT[family]
    others = [accuracies[family, a] for a in AGENTS if a != best]
    assert accuracies[family, best] >= 0.9
    assert accuracies[family, best] >= max(others) + 0.25


def test_mcts_finds_the_optimum_far_more_often_than_greedy(accuracies: dict) -> None:
    assert accuracies["search", "MCTS"] >= 0.9
    assert accuracies["search", "MCTS"] >= 2 * accuracies["search", "HRM"]


def test_the_routed_graph_answers_most_fresh_tasks_correctly(router: MetaRouter, rag: RagIndex) -> None:
    graph = build_mcts_agent_graph(router=router, rag=rag).compile()
    tasks = sample_tasks(160, seed=22)
    assert accuracy(graph, tasks) >= 0.93  # measured 0.99 on 1,000 fresh tasks; the misses are search tasks


def test_the_default_router_learns_from_a_seed_set_kept_apart_from_test_seeds() -> None:
    queries, agents = seed_set()
    assert len(queries) == len(agents) == 60
    assert set(agents) == set(AGENTS)
    assert not set(queries) & {t.query for t in sample_tasks(400, seed=22)}


def test_a_run_records_its_route_mcts_and_consensus_decisions(rag: RagIndex) -> None:
    handler = Decisions()
    graph = build_mcts_agent_graph(rag=rag).compile()
    out = graph.invoke({"query": SEARCH}, config={"callbacks": [handler]})
    kinds = [d["kind"] for d in handler.decisions]
    assert kinds == ["route", "mcts", "consensus"]
    route, mcts, consensus = handler.decisions
    assert route["chosen"] == "MCTS" == out["agent_selected"]
    assert set(route["alternatives"]) == set(AGENTS)
    assert route["features"]["n_numbers"] == 8
    assert mcts["chosen"] == out["mcts_stats"]["best_action"]
    assert sum(mcts["alternatives"].values()) == pytest.approx(1.0, abs=1e-3)
    assert mcts["statistics"]["iterations"] == 200
    assert consensus["chosen"] == "not_reached"
    assert handler.retrievals == 0  # the search problem states its numbers: nothing to look up
    assert out["response"].splitlines()[-1] == "Answer: 69"


def test_mcts_reports_its_search_statistics(rag: RagIndex) -> None:
    out = build_mcts_agent_graph(rag=rag).compile().invoke({"query": SEARCH})
    stats = out["mcts_stats"]
    assert stats["iterations"] == 200
    assert 0 < stats["nodes_expanded"] <= 200
    assert sum(stats["root_visits"].values()) == 200
    assert stats["best_action"] in stats["root_visits"]
    assert stats["best_value"] == 1.0


def test_the_final_state_has_every_documented_field(rag: RagIndex) -> None:
    out = (
        build_mcts_agent_graph(rag=rag)
        .compile()
        .invoke({"query": "Which team maintains the ledger service?"})
    )
    assert out["query"].startswith("Which team")
    assert out["response"].endswith("Answer: osprey")
    assert out["agent_selected"] == "HRM" and 0.5 < out["agent_confidence"] <= 1.0
    assert 0.3 < out["retrieval_quality"] <= 1.0
    assert out["consensus"]["reached"] is False
    assert out["mcts_stats"] == {}
    assert [o["agent"] for o in out["agent_outputs"]] == ["HRM"]


def test_single_agent_output_is_never_consensus(rag: RagIndex) -> None:
    out = forced("HRM", rag).invoke({"query": "Which port does the billing service listen on?"})
    assert out["consensus"] == {
        "reached": False,
        "score": 0.0,
        "agents": ["HRM"],
        "reason": "single_agent",
        "verified": True,
        "iteration": 0,
        "next": "synthesize",
    }
    assert out["response"].endswith("Answer: 8443")


def test_parallel_fans_out_to_all_three_agents_with_send(rag: RagIndex) -> None:
    graph = forced(PARALLEL, rag)
    query = "In what order should jobs B, D and F run if D needs B and F needs D?"
    steps: dict[str, tuple[int, tuple[str, ...]]] = {}
    for event in graph.stream({"query": query}, stream_mode="debug"):
        if event["type"] == "task":
            steps[event["payload"]["name"]] = (event["step"], tuple(event["payload"]["triggers"]))
    assert {steps[n] for n in ("hrm", "trm", "mcts")} == {(4, ("__pregel_push",))}
    out = graph.invoke({"query": query})
    assert sorted(o["agent"] for o in out["agent_outputs"]) == sorted(AGENTS)
    assert out["consensus"]["reached"] is True
    assert out["consensus"]["reason"] == "agreement"
    assert sorted(out["consensus"]["agents"]) == sorted(AGENTS)
    assert out["response"].endswith("Answer: B, D, F")


def test_a_failed_self_check_escalates_and_history_has_one_entry_per_iteration(rag: RagIndex) -> None:
    graph = build_mcts_agent_graph(router=FixedRouter("HRM"), rag=rag, max_iterations=2).compile()
    out = graph.invoke({"query": "What is the square root of 47 to 4 decimal places?"})
    history = out["routing_history"]
    assert [(h["iteration"], h["agent"], h["reason"]) for h in history] == [
        (0, "HRM", "router"),
        (1, PARALLEL, "escalation"),
    ]
    for entry in history:
        assert set(entry["probabilities"]) == set(AGENTS)
        assert sum(entry["probabilities"].values()) == pytest.approx(1.0)
    assert out["agent_selected"] == "HRM"
    assert out["response"].endswith("Answer: 6.8557")
    assert [o["iteration"] for o in out["agent_outputs"]] == [0, 1, 1, 1]


def test_iterations_stop_at_max_iterations(rag: RagIndex) -> None:
    graph = build_mcts_agent_graph(router=FixedRouter("MCTS"), rag=rag, max_iterations=3).compile()
    out = graph.invoke({"query": "Compute the cube root of 880 correct to 3 decimal places."})
    assert len(out["routing_history"]) == 2  # the parallel round's TRM answer passes its check
    assert out["response"].endswith("Answer: 9.583")
    stuck = build_mcts_agent_graph(router=FixedRouter("MCTS"), rag=rag, max_iterations=1).compile()
    assert (
        len(
            stuck.invoke({"query": "Compute the cube root of 880 correct to 3 decimal places."})[
                "routing_history"
            ]
        )
        == 1
    )


def test_each_thread_keeps_its_own_state_with_a_checkpointer(rag: RagIndex) -> None:
    graph = build_mcts_agent_graph(rag=rag).compile(checkpointer=InMemorySaver())
    first, second = new_thread_config(), new_thread_config(session_id="s-1")
    assert first["configurable"]["thread_id"] != second["configurable"]["thread_id"]
    assert uuid.UUID(first["configurable"]["thread_id"]).version == 4
    assert second["metadata"] == {"session_id": "s-1"}
    graph.invoke({"query": "Which team maintains the ledger service?"}, config=first)
    graph.invoke({"query": SEARCH}, config=second)
    assert graph.get_state(first).values["answer"] == "osprey"
    assert graph.get_state(second).values["answer"] == "69"
    again = graph.invoke({"query": "Where is the auth service hosted?"}, config=first)
    assert len(again["routing_history"]) == 1
    assert [o["agent"] for o in again["agent_outputs"]] == ["HRM"]
    assert again["answer"] == "us-west-1"


def test_a_task_input_is_solved_from_its_data(rag: RagIndex) -> None:
    task = sample_tasks(1, seed=30, mix={"planning": 1.0})[0]
    out = build_mcts_agent_graph(rag=rag).compile().invoke({"query": "please solve it", "task": asdict(task)})
    assert out["problem"]["names"] == task.data["names"]
    assert check_answer(task, out["response"])


def test_a_query_without_a_problem_answers_unknown(rag: RagIndex) -> None:
    out = (
        build_mcts_agent_graph(rag=rag).compile().invoke({"query": "What's the weather in Lisbon tomorrow?"})
    )
    assert out["response"].endswith("Answer: unknown")
    assert out["consensus"]["reached"] is False


def test_runs_repeat_exactly_for_the_same_seed(rag: RagIndex) -> None:
    graph = forced("MCTS", rag, seed=3)
    query = sample_tasks(1, seed=31, mix={"planning": 1.0})[0].query
    assert graph.invoke({"query": query})["mcts_stats"] == graph.invoke({"query": query})["mcts_stats"]


def test_with_a_chat_model_the_response_comes_from_the_model(rag: RagIndex) -> None:
    usage = {"input_tokens": 50, "output_tokens": 10, "total_tokens": 60}
    model = GenericFakeChatModel(
        messages=iter(
            [
                AIMessage(
                    "Team Falcon owns billing, which listens on 8443.\nAnswer: 8443", usage_metadata=usage
                ),
                AIMessage(
                    "The billing service, run by team Falcon, listens on port 8443.", usage_metadata=usage
                ),
            ]
        )
    )
    tokens = Tokens()
    graph = forced("HRM", rag, chat_model=model)
    out = graph.invoke(
        {"query": "Which port does the service maintained by team Falcon listen on?"},
        config={"callbacks": [tokens]},
    )
    assert out["agent_outputs"][0]["text"].startswith("Team Falcon owns billing")
    assert out["response"] == "The billing service, run by team Falcon, listens on port 8443.\nAnswer: 8443"
    assert tokens.total == 120


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_iterations": 0}, "at least 1"),
        ({"mcts_iterations": 0}, "at least 1"),
        ({"consensus_threshold": 2}, "consensus"),
    ],
)
def test_bad_settings_are_refused(rag: RagIndex, kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_mcts_agent_graph(router=FixedRouter("HRM"), rag=rag, **kwargs)


def test_a_router_naming_an_unknown_agent_is_reported_by_node(rag: RagIndex) -> None:
    with pytest.raises(ValueError, match="route_decision: the router chose 'GPT'"):
        forced("GPT", rag).invoke({"query": SEARCH})


class ContextRecorder(FixedRouter):
    """A fixed router that keeps the routing context it is given."""

    def __init__(self, agent: str) -> None:
        super().__init__(agent)
        self.contexts: list[dict[str, Any] | None] = []

    def route(self, query: str, context: dict[str, Any] | None = None) -> RoutingDecision:
        self.contexts.append(context)
        return super().route(query)


def test_the_router_sees_retrieval_and_earlier_confidences_but_nothing_after_routing(rag: RagIndex) -> None:
    router = ContextRecorder("HRM")
    graph = build_mcts_agent_graph(router=router, rag=rag, max_iterations=2).compile()
    out = graph.invoke({"query": "Which team maintains the ledger service?"})
    first = router.contexts[0]
    assert set(first) == {"retrieval_quality", "retrieved", "earlier_confidences"}
    assert first["retrieval_quality"] == out["retrieval_quality"] and first["retrieved"] is True
    assert first["earlier_confidences"] == []
    if len(router.contexts) > 1:  # an escalation round sees the confidence of the first decision
        assert router.contexts[1]["earlier_confidences"] == [0.8]


def test_the_router_is_told_that_nothing_was_retrieved_for_a_query_that_needs_no_retrieval(
    rag: RagIndex,
) -> None:
    router = ContextRecorder("MCTS")
    out = build_mcts_agent_graph(router=router, rag=rag).compile().invoke({"query": SEARCH})
    assert router.contexts[0]["retrieved"] is False and router.contexts[0]["retrieval_quality"] is None
    assert out["retrieval_quality"] is None and out["context"] == []
    assert out["response"].splitlines()[-1] == "Answer: 69"


def test_only_factual_and_unparsed_queries_are_looked_up(rag: RagIndex) -> None:
    graph = build_mcts_agent_graph(rag=rag).compile()
    for family in FAMILIES:
        [task] = sample_tasks(1, seed=3, mix={family: 1.0})
        handler = Decisions()
        out = graph.invoke({"query": task.query}, config={"callbacks": [handler]})
        assert handler.retrievals == (family == "factual"), family
        assert (out["retrieval_quality"] is not None) is (family == "factual"), family
        assert bool(out["context"]) is (family == "factual"), family
    handler = Decisions()
    out = graph.invoke(
        {"query": "How do I get started with the billing service?"}, config={"callbacks": [handler]}
    )
    assert out["problem"] is None and handler.retrievals == 1 and out["retrieval_quality"] is not None
    assert needs_retrieval(None) and needs_retrieval({"family": "factual"})
    assert not any(needs_retrieval({"family": f}) for f in FAMILIES if f != "factual")


def test_a_router_without_a_context_argument_still_works(rag: RagIndex) -> None:
    out = forced("TRM", rag).invoke({"query": SEARCH})
    assert out["agent_selected"] == "TRM"


def test_a_graph_following_the_registry_serves_a_promoted_router_without_rebuilding(
    rag: RagIndex, tmp_path: Any
) -> None:
    from cl_plugin.learning.registry import ModelRegistry
    from cl_plugin.store import Store

    registry = ModelRegistry(Store.from_url("sqlite://").setup(), tmp_path)
    queries = [t.query for t in sample_tasks(60, seed=3)]
    for agent in ("HRM", "TRM"):  # two routers that disagree: each sends everything to one agent
        other = "TRM" if agent == "HRM" else "HRM"
        labels = [agent] * len(queries) + [other]
        registry.register("router", MetaRouter(parallel_threshold=0).fit([*queries, "zzz"], labels))
    registry.promote("rag_index", registry.register("rag_index", rag).version)
    graph = build_mcts_agent_graph(
        router=registry.watch("router", refresh_seconds=0), rag=registry.watch("rag_index", refresh_seconds=0)
    ).compile()
    registry.promote("router", 1)
    # every agent reads the index the alias points at: the answers stay right
    for task in sample_tasks(8, seed=21, mix={"factual": 1.0}):
        assert check_answer(task, graph.invoke({"query": task.query})["response"]), task.query
    assert graph.invoke({"query": SEARCH})["agent_selected"] == "HRM"
    registry.promote("router", 2)
    assert graph.invoke({"query": SEARCH})["agent_selected"] == "TRM"
    registry.rollback("router")
    assert graph.invoke({"query": SEARCH})["agent_selected"] == "HRM"


def test_without_parallel_an_unsure_route_goes_to_the_most_likely_agent(rag: RagIndex) -> None:
    unsure = MetaRouter(parallel_threshold=1.0).fit(*seed_set())  # every route is below the threshold
    query = "What is the square root of 47 to 4 decimal places?"
    assert (
        build_mcts_agent_graph(router=unsure, rag=rag).compile().invoke({"query": query})["agent_selected"]
        == PARALLEL
    )
    out = (
        build_mcts_agent_graph(router=unsure, rag=rag, allow_parallel=False)
        .compile()
        .invoke({"query": query})
    )
    assert out["agent_selected"] == "TRM" and [o["agent"] for o in out["agent_outputs"]] == ["TRM"]
    assert out["routing_history"][0]["reason"] == "budget"
