"""The example multi-agent MCTS system: a meta-controller routes each query to HRM, TRM or MCTS.

```
START -> entry -> retrieve_context (looks the query up only when it is factual or unparsed)
      -> route_decision -> HRM | TRM | MCTS | all three (parallel, via Send)
      -> aggregate -> consensus_check -> route_decision (iteration + 1)  or  synthesize -> END
```

``retrieve_context`` looks the query up in the index only where retrieval can help (:func:`needs_retrieval`):
for a factual question, or for a query whose problem could not be parsed (the graph does not know what it
is, so looking it up may help). An ordering, root or selection problem states everything needed to solve
it, so it gets no retrieval: ``context`` is empty and ``retrieval_quality`` None, and no retriever run is
recorded. Agents that want documents for their own method still ask the index themselves.

The three agents solve the problems of :mod:`cl_plugin.graphs.tasks` offline, each with its own method:

* **HRM** (hierarchical reasoning) decomposes: it orders jobs level by level, follows a question's hops
  through the retrieved documents, brackets a root between integers and interpolates once, and fills a
  budget greedily with the largest items.
* **TRM** (tiny recursive refinement) drafts and then refines for a fixed number of steps: Newton steps
  for roots, one repair of a violated dependency per step for orders, one improving swap per step for
  budgets, and for questions the first retrieved passage that states the attribute asked about.
* **MCTS** runs UCT (UCB1 selection, expansion, random rollout, backpropagation) over the problem's
  decisions (take or skip each item, the next job, the next digit, which passage to trust) and answers
  with the best outcome it found.

Each agent checks its own answer where the problem allows (every dependency holds, the root lies within
half a unit of the last decimal, the chosen items fit and nothing more does, the evidence names the entity
asked about).

Consensus rule: the answers of a round are grouped, each agent weighing its router probability; the best
group is the heaviest among those that pass their self-check (or the heaviest of all when none does).
Consensus means that group holds at least two agents and at least ``consensus_threshold`` of the weight.
A single agent's output is never consensus: it reports ``reached=False, reason="single_agent"`` (score 0).
The best answer is synthesized when consensus is reached or it passes its self-check; otherwise the next
iteration runs all three agents (``parallel``) with a larger budget, until ``max_iterations`` rounds ran.

Every request needs its own checkpoint thread: compile with your checkpointer and pass
``config=new_thread_config()`` (a fresh ``thread_id``) per conversation; state from one thread never leaks
into another, and each invocation starts its routing history and agent outputs afresh.
"""

from __future__ import annotations

import functools
import inspect
import operator
import random
import re
import uuid
from typing import Annotated, Any, Protocol, TypedDict

from cl_plugin.graphs import agents as solvers
from cl_plugin.graphs.tasks import BEST_AGENT, default_corpus, extract_answer, parse_problem, sample_tasks
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import HumanMessage, SystemMessage
from langgraph.graph import END, START, StateGraph
from langgraph.types import Overwrite, Send

from cl_plugin.capture import record_decision
from cl_plugin.learning.labels import ReplayBuffer, RoutingLabel
from cl_plugin.learning.modelset import ModelSet
from cl_plugin.learning.rag import RagIndex
from cl_plugin.learning.registry import ModelHandle
from cl_plugin.learning.router import PARALLEL, MetaRouter, RoutingDecision

__all__ = [
    "AGENTS",
    "RETRIEVAL_FAMILIES",
    "SEED_SET_SEED",
    "AgentState",
    "Router",
    "agent",
    "build_mcts_agent_graph",
    "default_rag",
    "default_router",
    "needs_retrieval",
    "new_thread_config",
    "seed_set",
    "starting_model_set",
]

AGENTS: tuple[str, ...] = ("HRM", "TRM", "MCTS")
#: Problem families whose queries are looked up in the index before routing (the others state their data).
RETRIEVAL_FAMILIES: frozenset[str] = frozenset({"factual"})
#: Seed of the labelled queries :func:`default_router` learns from (kept apart from evaluation seeds).
SEED_SET_SEED = 917_301
_NODE = {"HRM": "hrm", "TRM": "trm", "MCTS": "mcts"}
_HAS_ANSWER = re.compile(r"(?im)^\s*answer\s*:")
_ENDS_WITH_ANSWER = re.compile(r"(?im)^\s*answer\s*:[^\n]*\Z")


class AgentState(TypedDict, total=False):
    """State of the multi-agent graph.

    Input: ``query``, and optionally ``task`` (a mapping with ``family`` and ``data``, such as
    ``dataclasses.asdict(task)``); without it the problem is read from the query text.

    Output: ``response`` (ends with a line ``Answer: <value>``) and ``answer``; ``answered_by`` (the agents
    whose answer was returned: after an escalation, not the first routed one); ``agent_selected`` and
    ``agent_confidence`` (the first routing decision: an agent or ``"parallel"``); ``routing_history`` (one
    entry per iteration: agent, confidence, probabilities, iteration, reason); ``agent_outputs`` (one per
    agent run, tagged with its iteration); ``consensus`` (reached, score, agents, reason, ...);
    ``retrieval_quality`` (cosine score of the best retrieved document; None when the query needed no
    retrieval, see :func:`needs_retrieval`); ``mcts_stats`` (empty unless MCTS ran).
    """

    query: str
    task: dict[str, Any] | None
    problem: dict[str, Any] | None
    iteration: int
    context: list[dict[str, Any]]
    retrieval_quality: float | None
    routing_history: Annotated[list[dict[str, Any]], operator.add]
    agent_selected: str
    agent_confidence: float
    agent_outputs: Annotated[list[dict[str, Any]], operator.add]
    candidate: dict[str, Any]
    consensus: dict[str, Any]
    answered_by: list[str]
    mcts_stats: dict[str, Any]
    answer: str
    response: str


class Router(Protocol):
    """What the graph needs from a meta-controller (a :class:`~cl_plugin.learning.router.MetaRouter` fits)."""

    def route(self, query: str, context: dict[str, Any] | None = None) -> RoutingDecision: ...


def seed_set() -> tuple[list[str], list[str]]:
    """The labelled queries the default router starts from: 60 tasks, each labelled with its best agent."""
    tasks = sample_tasks(60, seed=SEED_SET_SEED)
    return [t.query for t in tasks], [BEST_AGENT[t.family] for t in tasks]


def default_router(seed: int = 0) -> MetaRouter:
    """A :class:`~cl_plugin.learning.router.MetaRouter` trained on :func:`seed_set`.

    Args:
        seed: the classifier's random state.
    """
    return MetaRouter(random_state=seed).fit(*seed_set())


def default_rag() -> RagIndex:
    """A :class:`~cl_plugin.learning.rag.RagIndex` over :func:`cl_plugin.graphs.tasks.default_corpus`."""
    return RagIndex().add(default_corpus())


def starting_model_set() -> ModelSet:
    """The graph's starting point as a model set: :func:`default_router`, :func:`default_rag`, and the
    :func:`seed_set` labels the router learned from as its replay sample."""
    queries, agents = seed_set()
    replay = ReplayBuffer().add(
        RoutingLabel(f"seed-{i}", q, a, 1.0, "metadata")
        for i, (q, a) in enumerate(zip(queries, agents, strict=True))
    )
    return ModelSet(default_router(), default_rag(), replay)


def new_thread_config(session_id: str | None = None) -> dict[str, Any]:
    """A config with a fresh checkpoint thread, for one conversation.

    Args:
        session_id: recorded as ``metadata["session_id"]`` when given.

    Returns:
        ``{"configurable": {"thread_id": <uuid4>}}``, plus the metadata.
    """
    config: dict[str, Any] = {"configurable": {"thread_id": str(uuid.uuid4())}}
    if session_id is not None:
        config["metadata"] = {"session_id": session_id}
    return config


# --- the graph ------------------------------------------------------------------------------------------


def _problem_of(state: AgentState) -> dict[str, Any] | None:
    task = state.get("task")
    if task and task.get("family") and isinstance(task.get("data"), dict):
        return {"family": task["family"], **task["data"]}
    parsed = parse_problem(state["query"])
    return {"family": parsed[0], **parsed[1]} if parsed else None


def needs_retrieval(problem: dict[str, Any] | None) -> bool:
    """Whether the graph looks a query up in the index before routing it.

    Args:
        problem: the parsed problem (``{"family": ..., **data}``), or None when none could be parsed.

    Returns:
        True for a family of :data:`RETRIEVAL_FAMILIES`, and for an unparsed query (what it asks is
        unknown, so the documents may tell); False for a problem that states its own data.
    """
    return problem is None or problem.get("family") in RETRIEVAL_FAMILIES


def _ask(chat_model: BaseChatModel, role: str, state: AgentState, draft: str) -> str:
    context = "\n".join(f"- {doc['text']}" for doc in state.get("context", []))
    reply = chat_model.invoke(
        [
            SystemMessage(f"You are {role}. End your reply with one line 'Answer: <value>'."),
            HumanMessage(
                f"Question: {state['query']}\nRetrieved context:\n{context or '- (none)'}\nDraft:\n{draft}"
            ),
        ]
    )
    return str(reply.text)


def _output(agent: str, state: AgentState, answer: str, detail: dict[str, Any]) -> dict[str, Any]:
    problem = state.get("problem")
    return {
        "agent": agent,
        "iteration": state.get("iteration", 0),
        "answer": answer,
        "verified": solvers.self_check(problem, answer, detail),
        "text": f"{agent}: {detail.get('method', 'no method applies')}.\nAnswer: {answer}",
        "detail": {k: v for k, v in detail.items() if k != "method"},
    }


def _verdict(candidate: dict[str, Any], consensus: dict[str, Any]) -> str:
    agents = ", ".join(candidate["agents"]) or "no agent"
    check = "passes" if candidate["verified"] else "does not pass"
    if consensus["reached"]:
        return f"{agents} agree (score {consensus['score']:.2f}); the answer {check} its self-check."
    if consensus["reason"] == "single_agent":
        return f"{agents} answered alone, so there is no consensus; the answer {check} its self-check."
    others = "; ".join(f"{a}: {ans}" for a, ans in candidate["answers"].items())
    return f"No consensus ({others}); kept the answer of {agents}, which {check} its self-check."


@functools.cache
def _route_takes_context(router_type: type) -> bool:
    try:
        return "context" in inspect.signature(router_type.route).parameters
    except (TypeError, ValueError):  # a builtin or C-implemented route: call it with the query alone
        return False


def build_mcts_agent_graph(
    *,
    router: Router | ModelHandle | None = None,
    rag: RagIndex | ModelHandle | None = None,
    chat_model: BaseChatModel | None = None,
    max_iterations: int = 2,
    allow_parallel: bool = True,
    consensus_threshold: float = 0.5,
    mcts_iterations: int = 200,
    refine_steps: int = 4,
    seed: int = 0,
) -> StateGraph:
    """Build the multi-agent graph (uncompiled: compile it with your own checkpointer).

    Args:
        router: the meta-controller, or a :class:`~cl_plugin.learning.registry.ModelHandle` from
            ``registry.watch("router")`` so that a promoted version serves the next request without a
            restart; default :func:`default_router`. Its ``route`` gets the routing context (retrieval
            relevance, earlier confidences) when it takes a ``context`` argument.
        rag: the retrieval index, or a :class:`~cl_plugin.learning.registry.ModelHandle` following one; default
            :func:`default_rag`.
        chat_model: when given, HRM, TRM and the synthesis ask it (with the retrieved context and the
            offline draft) and use its text; otherwise they answer offline.
        max_iterations: routing rounds at most; later rounds run every agent with a larger budget.
        allow_parallel: when False, a low-confidence route goes to the most likely agent instead of to all
            three (a deployment whose cost budget is one agent per request).
        consensus_threshold: share of the router's probability mass that agreeing agents need.
        mcts_iterations: UCT iterations of the MCTS agent in the first round.
        refine_steps: refinement steps of the TRM agent in the first round.
        seed: seed of the MCTS agent's random rollouts (combined with the query, so runs repeat).

    Returns:
        The :class:`~langgraph.graph.StateGraph` builder over :class:`AgentState`.

    Raises:
        ValueError: if a budget is not positive or ``consensus_threshold`` is outside [0, 1].
    """
    if min(max_iterations, mcts_iterations, refine_steps) < 1:
        raise ValueError("max_iterations, mcts_iterations and refine_steps must each be at least 1")
    if not 0.0 <= consensus_threshold <= 1.0:
        raise ValueError(f"consensus_threshold must be in [0, 1] (got {consensus_threshold!r})")
    router = router if router is not None else default_router(seed)
    index = rag if rag is not None else default_rag()
    retrievers: dict[int, Any] = {}

    def current_router() -> Router:
        return router.get() if isinstance(router, ModelHandle) else router

    def current_index() -> RagIndex:
        return index.get() if isinstance(index, ModelHandle) else index

    def retriever() -> Any:
        current = current_index()
        if id(current) not in retrievers:
            retrievers.clear()  # one index is served at a time; drop the retriever of the one replaced
            retrievers[id(current)] = (current, current.as_retriever(k=3))
        return retrievers[id(current)][1]

    def entry(state: AgentState) -> dict[str, Any]:
        return {
            "problem": _problem_of(state),
            "iteration": 0,
            "routing_history": Overwrite([]),
            "agent_outputs": Overwrite([]),
            "mcts_stats": {},
        }

    def retrieve_context(state: AgentState) -> dict[str, Any]:
        if not needs_retrieval(state.get("problem")):
            return {"context": [], "retrieval_quality": None}
        docs = retriever().invoke(state["query"])
        context = [{"id": d.id, "text": d.page_content, "score": d.metadata["score"]} for d in docs]
        return {"context": context, "retrieval_quality": round(context[0]["score"], 4) if context else 0.0}

    def route_decision(state: AgentState) -> dict[str, Any]:
        iteration = state.get("iteration", 0)
        model = current_router()
        if _route_takes_context(type(model)):
            context = {
                "retrieval_quality": state.get("retrieval_quality"),
                "retrieved": bool(state.get("context")),
                "earlier_confidences": [h["confidence"] for h in state.get("routing_history", [])],
            }
            decision = model.route(state["query"], context)
        else:
            decision = model.route(state["query"])
        agent, reason = decision.agent, "low_confidence" if decision.agent == PARALLEL else "router"
        if agent == PARALLEL and not allow_parallel:
            agent, reason = max(decision.probabilities, key=decision.probabilities.get), "budget"
        if agent != PARALLEL and agent not in _NODE:
            raise ValueError(
                f"route_decision: the router chose {agent!r}; it must pick one of {AGENTS} or parallel"
            )
        if iteration > 0:
            agent, reason = PARALLEL, "escalation"
        record_decision(
            "route",
            agent,
            confidence=decision.confidence,
            alternatives=decision.probabilities,
            features=decision.features,
            statistics={"iteration": iteration, "reason": reason},
        )
        entry = {
            "agent": agent,
            "confidence": decision.confidence,
            "probabilities": decision.probabilities,
            "iteration": iteration,
            "reason": reason,
        }
        update: dict[str, Any] = {"routing_history": [entry]}
        if iteration == 0:
            update |= {"agent_selected": agent, "agent_confidence": decision.confidence}
        return update

    def dispatch(state: AgentState) -> str | list[Send]:
        agent = state["routing_history"][-1]["agent"]
        if agent != PARALLEL:
            return _NODE[agent]
        payload = {key: state.get(key) for key in ("query", "problem", "context", "iteration")}
        return [Send(node, payload) for node in _NODE.values()]

    def hrm(state: AgentState) -> dict[str, Any]:
        return {"agent_outputs": [_reasoner("HRM", state)]}

    def trm(state: AgentState) -> dict[str, Any]:
        return {"agent_outputs": [_reasoner("TRM", state)]}

    def _reasoner(agent: str, state: AgentState) -> dict[str, Any]:
        problem, context = state.get("problem"), state.get("context", [])
        if problem is None:
            answer, detail = solvers.UNKNOWN, {"method": "found no problem to solve in the query"}
        elif agent == "HRM":
            answer, detail = solvers.hrm(problem, current_index())
        else:
            answer, detail = solvers.trm(
                problem, context, current_index(), refine_steps * (1 + state.get("iteration", 0))
            )
        output = _output(agent, state, answer, detail)
        if chat_model is not None:
            role = "HRM, a hierarchical reasoner" if agent == "HRM" else "TRM, an iterative refiner"
            text = _ask(chat_model, role, state, output["text"])
            said = extract_answer(text) if _HAS_ANSWER.search(text) else answer
            output |= {"text": text, "answer": said, "verified": solvers.self_check(problem, said, detail)}
        return output

    def mcts(state: AgentState) -> dict[str, Any]:
        problem, iteration = state.get("problem"), state.get("iteration", 0)
        if problem is None:
            return {
                "agent_outputs": [_output("MCTS", state, solvers.UNKNOWN, {})],
                "mcts_stats": {"iterations": 0},
            }
        rng = random.Random(f"{seed}:{iteration}:{state['query']}")
        answer, detail, stats = solvers.mcts(
            problem, state.get("context", []), current_index(), mcts_iterations * (1 + iteration), rng
        )
        shares = stats["visit_share"]
        record_decision(
            "mcts",
            stats["best_action"],
            confidence=shares.get(stats["best_action"], 0.0),
            alternatives=shares,
            statistics={k: v for k, v in stats.items() if k != "visit_share"},
        )
        return {"agent_outputs": [_output("MCTS", state, answer, detail)], "mcts_stats": stats}

    def aggregate(state: AgentState) -> dict[str, Any]:
        iteration = state.get("iteration", 0)
        outputs = [o for o in state["agent_outputs"] if o["iteration"] == iteration]
        probabilities = state["routing_history"][-1]["probabilities"]
        groups: dict[str, dict[str, Any]] = {}
        for out in outputs:
            if out["answer"] == solvers.UNKNOWN:
                continue
            key = " ".join(out["answer"].lower().split())
            group = groups.setdefault(
                key, {"answer": out["answer"], "agents": [], "weight": 0.0, "verified": False}
            )
            group["agents"].append(out["agent"])
            group["verified"] = group["verified"] or out["verified"]
            group["weight"] += (
                probabilities.get(out["agent"], 0.0) + 1e-9
            )  # a zero-probability agent still counts
        total = sum(g["weight"] for g in groups.values()) or 1.0
        best = max(groups.values(), key=lambda g: (g["verified"], g["weight"]), default=None)
        candidate = {
            "answer": best["answer"] if best else solvers.UNKNOWN,
            "agents": best["agents"] if best else [],
            "score": round(best["weight"] / total, 4) if best else 0.0,
            "verified": bool(best and best["verified"]),
            "n_agents": len(outputs),
            "answers": {o["agent"]: o["answer"] for o in outputs},
            "shares": {g["answer"]: round(g["weight"] / total, 4) for g in groups.values()},
        }
        return {"candidate": candidate}

    def consensus_check(state: AgentState) -> dict[str, Any]:
        candidate, iteration = state["candidate"], state.get("iteration", 0)
        score = candidate["score"] if candidate["n_agents"] >= 2 else 0.0
        if candidate["n_agents"] < 2:
            reached, reason = False, "single_agent"
        elif len(candidate["agents"]) >= 2 and score >= consensus_threshold:
            reached, reason = True, "agreement"
        else:
            reached, reason = False, "no_agreement"
        settled = reached or candidate["verified"]
        final = settled or iteration + 1 >= max_iterations
        consensus = {
            "reached": reached,
            "score": score,
            "agents": candidate["agents"],
            "reason": reason,
            "verified": candidate["verified"],
            "iteration": iteration,
            "next": "synthesize" if final else "iterate",
        }
        record_decision(
            "consensus",
            "reached" if reached else "not_reached",
            confidence=score,
            alternatives=candidate["shares"],
            statistics={
                **{k: v for k, v in consensus.items() if k != "reached"},
                "answers": candidate["answers"],
            },
        )
        return {"consensus": consensus} if final else {"consensus": consensus, "iteration": iteration + 1}

    def synthesize(state: AgentState) -> dict[str, Any]:
        candidate, consensus = state["candidate"], state["consensus"]
        answer = candidate["answer"]
        outputs = {o["agent"]: o for o in state["agent_outputs"] if o["iteration"] == consensus["iteration"]}
        lines = [outputs[a]["text"].rsplit("\nAnswer:", 1)[0] for a in candidate["agents"]]
        draft = "\n".join([*lines, _verdict(candidate, consensus), f"Answer: {answer}"])
        answered_by = list(candidate["agents"])
        if chat_model is None:
            return {"response": draft, "answer": answer, "answered_by": answered_by}
        text = _ask(chat_model, "the synthesizer of a multi-agent system", state, draft).rstrip()
        if not _ENDS_WITH_ANSWER.search(text):
            text = f"{text}\nAnswer: {answer}"
        return {"response": text, "answer": extract_answer(text), "answered_by": answered_by}

    def after_consensus(state: AgentState) -> str:
        return "synthesize" if state["consensus"]["next"] == "synthesize" else "route_decision"

    builder = StateGraph(AgentState)
    for node in (
        entry,
        retrieve_context,
        route_decision,
        hrm,
        trm,
        mcts,
        aggregate,
        consensus_check,
        synthesize,
    ):
        builder.add_node(node.__name__, node)
    builder.add_edge(START, "entry")
    builder.add_edge("entry", "retrieve_context")
    builder.add_edge("retrieve_context", "route_decision")
    builder.add_conditional_edges("route_decision", dispatch, list(_NODE.values()))
    for node in _NODE.values():
        builder.add_edge(node, "aggregate")
    builder.add_edge("aggregate", "consensus_check")
    builder.add_conditional_edges("consensus_check", after_consensus, ["route_decision", "synthesize"])
    builder.add_edge("synthesize", END)
    return builder


def agent() -> Any:
    """The example graph as LangGraph's server loads it (``langgraph.json``; no checkpointer: the server
    brings its own): it serves the registry's ``production`` router and index of the store at
    ``$CL_PLUGIN_STORE_URL`` (see :meth:`cl_plugin.graphs.maintenance.MaintenanceContext.from_env`), following them
    when a maintenance run promotes others, and captures every run into that store. The first time, the
    starting model set is registered and put in production."""
    return _served_agent()


@functools.cache
def _served_agent() -> Any:
    from cl_plugin.graphs.maintenance import register_starting_models
    from cl_plugin.graphs.maintenance.graph import env_context

    from cl_plugin.capture import CaptureHandler

    context = env_context()
    register_starting_models(context.registry, actor="server")
    graph = build_mcts_agent_graph(
        router=context.registry.watch("router"), rag=context.registry.watch("rag_index")
    ).compile(name="agent")
    return graph.with_config(callbacks=[CaptureHandler(context.store)])
