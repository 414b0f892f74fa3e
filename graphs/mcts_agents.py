"""The example multi-agent MCTS system: a meta-controller routes each query to HRM, TRM or MCTS.

```
START -> entry -> retrieve_context -> route_decision -> HRM | TRM | MCTS | all three (parallel, via Send)
      -> aggregate -> consensus_check -> route_decision (iteration + 1)  or  synthesize -> END
```

The three agents solve the problems of :mod:`graphs.tasks` offline, each with its own method:

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

import math
import operator
import random
import re
import uuid
from typing import Annotated, Any, Protocol, TypedDict

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import HumanMessage, SystemMessage
from langgraph.graph import END, START, StateGraph
from langgraph.types import Overwrite, Send

from cl_plugin.capture import record_decision
from cl_plugin.rag import RagIndex
from cl_plugin.router import PARALLEL, MetaRouter, RoutingDecision
from graphs.tasks import BEST_AGENT, default_corpus, extract_answer, parse_problem, sample_tasks

__all__ = [
    "AGENTS",
    "SEED_SET_SEED",
    "AgentState",
    "Router",
    "build_mcts_agent_graph",
    "default_rag",
    "default_router",
    "new_thread_config",
    "seed_set",
]

AGENTS: tuple[str, ...] = ("HRM", "TRM", "MCTS")
#: Seed of the labelled queries :func:`default_router` learns from (kept apart from evaluation seeds).
SEED_SET_SEED = 917_301
_NODE = {"HRM": "hrm", "TRM": "trm", "MCTS": "mcts"}
_UNKNOWN = "unknown"
_HAS_ANSWER = re.compile(r"(?im)^\s*answer\s*:")
_ENDS_WITH_ANSWER = re.compile(r"(?im)^\s*answer\s*:[^\n]*\Z")


class AgentState(TypedDict, total=False):
    """State of the multi-agent graph.

    Input: ``query``, and optionally ``task`` (a mapping with ``family`` and ``data``, such as
    ``dataclasses.asdict(task)``); without it the problem is read from the query text.

    Output: ``response`` (ends with a line ``Answer: <value>``) and ``answer``; ``agent_selected`` and
    ``agent_confidence`` (the first routing decision: an agent or ``"parallel"``); ``routing_history`` (one
    entry per iteration: agent, confidence, probabilities, iteration, reason); ``agent_outputs`` (one per
    agent run, tagged with its iteration); ``consensus`` (reached, score, agents, reason, ...);
    ``retrieval_quality`` (cosine score of the best retrieved document); ``mcts_stats`` (empty unless MCTS ran).
    """

    query: str
    task: dict[str, Any] | None
    problem: dict[str, Any] | None
    iteration: int
    context: list[dict[str, Any]]
    retrieval_quality: float
    routing_history: Annotated[list[dict[str, Any]], operator.add]
    agent_selected: str
    agent_confidence: float
    agent_outputs: Annotated[list[dict[str, Any]], operator.add]
    candidate: dict[str, Any]
    consensus: dict[str, Any]
    mcts_stats: dict[str, Any]
    answer: str
    response: str


class Router(Protocol):
    """What the graph needs from a meta-controller (a :class:`~cl_plugin.router.MetaRouter` fits)."""

    def route(self, query: str) -> RoutingDecision: ...


def seed_set() -> tuple[list[str], list[str]]:
    """The labelled queries the default router starts from: 60 tasks, each labelled with its best agent."""
    tasks = sample_tasks(60, seed=SEED_SET_SEED)
    return [t.query for t in tasks], [BEST_AGENT[t.family] for t in tasks]


def default_router(seed: int = 0) -> MetaRouter:
    """A :class:`~cl_plugin.router.MetaRouter` trained on :func:`seed_set`.

    Args:
        seed: the classifier's random state.
    """
    return MetaRouter(random_state=seed).fit(*seed_set())


def default_rag() -> RagIndex:
    """A :class:`~cl_plugin.rag.RagIndex` over :func:`graphs.tasks.default_corpus`."""
    return RagIndex().add(default_corpus())


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


# --- problem helpers shared by the agents -----------------------------------------------------------------

_FACT = {
    "port": re.compile(r"listens on port (\d+)"),
    "retries": re.compile(r"retries a failed call (\d+) times"),
    "timeout": re.compile(r"(\d+) second timeout"),
    "region": re.compile(r"region ([a-z]+-[a-z]+-\d+)"),
}
_MAINTAINS = re.compile(r"Team (\w+) maintains the (\w+) service")


def _residual(problem: dict[str, Any], x: float) -> float:
    a, p = problem["a"], problem["p"]
    return x * x - a if problem["kind"] == "sqrt" else x**3 + p * x - a


def _slope(problem: dict[str, Any], x: float) -> float:
    return 2 * x if problem["kind"] == "sqrt" else 3 * x * x + problem["p"]


def _read_fact(text: str, attribute: str, service: str | None = None) -> str | None:
    if attribute == "team":
        link = _MAINTAINS.search(text)
        return link.group(1).lower() if link and (service is None or link.group(2) == service) else None
    found = _FACT[attribute].search(text)
    return found.group(1) if found else None


def _self_check(problem: dict[str, Any] | None, answer: str, detail: dict[str, Any]) -> bool:
    if problem is None or answer == _UNKNOWN:
        return False
    family = problem["family"]
    if family == "planning":
        order = re.findall(r"\b[A-Z]\b", answer)
        pos = {name: i for i, name in enumerate(order)}
        return sorted(order) == sorted(problem["names"]) and all(pos[a] > pos[b] for a, b in problem["needs"])
    if family == "refinement":
        if not re.fullmatch(r"-?\d+(?:\.\d+)?", answer.strip()):
            return False
        x, half = float(answer), 0.5 * 10 ** -problem["decimals"]
        return _residual(problem, x - half) <= 0 <= _residual(problem, x + half)
    if family == "search":
        chosen, rest = detail.get("chosen", []), list(problem["numbers"])
        for x in chosen:
            if x not in rest:
                return False
            rest.remove(x)
        total = sum(chosen)
        return (
            str(total) == answer
            and total <= problem["limit"]
            and all(total + x > problem["limit"] for x in rest)
        )
    sources = detail.get("sources", [])
    return bool(sources) and problem["entity"].lower() in " ".join(sources).lower()


# --- HRM: hierarchical decomposition --------------------------------------------------------------------


def _hrm(problem: dict[str, Any], rag: RagIndex) -> tuple[str, dict[str, Any]]:
    family = problem["family"]
    if family == "planning":
        done: list[str] = []
        while len(done) < len(problem["names"]):
            ready = [
                n
                for n in problem["names"]
                if n not in done and all(b in done for a, b in problem["needs"] if a == n)
            ]
            if not ready:
                return _UNKNOWN, {"method": "the dependencies form a cycle"}
            done.append(ready[0])
        return ", ".join(done), {"method": "took each job once everything it needs was done"}
    if family == "refinement":
        n = 0
        while _residual(problem, n + 1) <= 0:
            n += 1
        low, high = _residual(problem, n), _residual(problem, n + 1)
        x = n - low / (high - low)
        return f"{x:.{problem['decimals']}f}", {
            "method": f"bracketed between {n} and {n + 1}, interpolated once"
        }
    if family == "search":
        chosen, total = [], 0
        for x in sorted(problem["numbers"], reverse=True):
            if total + x <= problem["limit"]:
                chosen.append(x)
                total += x
        return str(total), {"method": "largest items first", "chosen": chosen}
    return _hrm_factual(problem, rag)


def _hrm_factual(problem: dict[str, Any], rag: RagIndex) -> tuple[str, dict[str, Any]]:
    attribute, entity, sources = problem["attribute"], problem["entity"], []
    service = entity
    if problem["entity_kind"] == "team":
        for _, text, _ in rag.search(f"team {entity} maintains service", 3):
            link = _MAINTAINS.search(text)
            if link and link.group(1).lower() == entity.lower():
                service = link.group(2)
                sources.append(text)
                break
        else:
            return _UNKNOWN, {"method": "no document names the team", "sources": sources}
    asked = "team maintains" if attribute == "team" else attribute
    for _, text, _ in rag.search(f"the {service} service {asked}", 4):
        value = _read_fact(text, attribute, service)
        if value is not None and service in text:
            sources.append(text)
            return value, {
                "method": f"resolved the {service} service, then read its {attribute}",
                "sources": sources,
            }
    return _UNKNOWN, {"method": f"no document states the {attribute} of {service}", "sources": sources}


# --- TRM: draft, then recursive refinement --------------------------------------------------------------


def _trm(
    problem: dict[str, Any], context: list[dict[str, Any]], rag: RagIndex, steps: int
) -> tuple[str, dict[str, Any]]:
    family = problem["family"]
    if family == "planning":
        order, used = list(problem["names"]), 0
        while used < steps and (broken := _first_broken(order, problem["needs"])):
            order.remove(broken[1])
            order.insert(order.index(broken[0]), broken[1])
            used += 1
        return ", ".join(order), {"method": f"repaired the listed order in {used} steps"}
    if family == "refinement":
        guess = 2.0 ** (problem["a"].bit_length() / (2 if problem["kind"] == "sqrt" else 3))
        x, used, delta = guess, 0, math.inf
        while used < steps and abs(delta) > 1e-12:
            delta = _residual(problem, x) / _slope(problem, x)
            x, used = x - delta, used + 1
        return f"{x:.{problem['decimals']}f}", {"method": f"{used} Newton steps from {guess:.3g}"}
    if family == "search":
        return _trm_budget(problem, steps)
    for doc in [
        *context,
        *({"text": t} for _, t, _ in rag.search(f"{problem['attribute']} {problem['entity']}", 4)),
    ]:
        value = _read_fact(doc["text"], problem["attribute"])
        if value is not None:
            return value, {"method": "read the first passage that states it", "sources": [doc["text"]]}
    return _UNKNOWN, {"method": "no passage states it", "sources": []}


def _first_broken(order: list[str], needs: list[list[str]]) -> tuple[str, str] | None:
    pos = {name: i for i, name in enumerate(order)}
    return next(((a, b) for a, b in needs if pos[a] < pos[b]), None)


def _trm_budget(problem: dict[str, Any], steps: int) -> tuple[str, dict[str, Any]]:
    limit, chosen, rest = problem["limit"], [], []
    for x in problem["numbers"]:
        (chosen if sum(chosen) + x <= limit else rest).append(x)
    for _ in range(steps):
        total = sum(chosen)
        swaps = [(y - x, x, y) for x in chosen for y in rest if 0 < y - x <= limit - total]
        if not swaps:
            break
        _, out, into = max(swaps)
        chosen[chosen.index(out)] = into
        rest[rest.index(into)] = out
    return str(sum(chosen)), {"method": "first fit in listed order, then improving swaps", "chosen": chosen}


# --- MCTS: UCT over the problem's decisions ---------------------------------------------------------------


class _Node:
    __slots__ = ("action", "children", "parent", "state", "untried", "value", "visits")

    def __init__(self, state: tuple, parent: _Node | None, action: Any, untried: list[Any]) -> None:
        self.state, self.parent, self.action, self.untried = state, parent, action, untried
        self.children: list[_Node] = []
        self.visits, self.value = 0, 0.0


class _Decisions:
    """A problem as a sequence of decisions: the actions open in a state, and the reward of a finished one."""

    def __init__(self, problem: dict[str, Any], candidates: list[tuple[str, float, str]]) -> None:
        self.problem, self.family, self.candidates = problem, problem["family"], candidates
        if self.family == "refinement":
            top = 1
            while _residual(problem, top) < 0:
                top *= 2
            self.top = top + 1

    def actions(self, state: tuple) -> list[Any]:
        p, depth = self.problem, len(state)
        if self.family == "search":
            if depth == len(p["numbers"]):
                return []
            fits = sum(x for x, take in zip(p["numbers"], state, strict=False) if take) + p["numbers"][depth]
            return [True, False] if fits <= p["limit"] else [False]
        if self.family == "planning":
            return [n for n in p["names"] if n not in state]
        if self.family == "refinement":
            return list(range(self.top)) if depth == 0 else list(range(10)) if depth <= p["decimals"] else []
        return list(range(len(self.candidates))) if depth == 0 else []

    def reward(self, state: tuple) -> float:
        p = self.problem
        if self.family == "search":
            return sum(x for x, take in zip(p["numbers"], state, strict=True) if take) / p["limit"]
        if self.family == "planning":
            pos = {name: i for i, name in enumerate(state)}
            return sum(pos[a] > pos[b] for a, b in p["needs"]) / max(1, len(p["needs"]))
        if self.family == "refinement":
            return 1.0 / (1.0 + abs(_residual(p, self._number(state))))
        return self.candidates[state[0]][1] if state else 0.0

    def answer(self, state: tuple) -> tuple[str, dict[str, Any]]:
        p = self.problem
        if self.family == "search":
            chosen = [x for x, take in zip(p["numbers"], state, strict=True) if take]
            return str(sum(chosen)), {"chosen": chosen}
        if self.family == "planning":
            return ", ".join(state), {}
        if self.family == "refinement":
            return f"{self._number(state):.{p['decimals']}f}", {}
        return (
            (self.candidates[state[0]][0], {"sources": [self.candidates[state[0]][2]]})
            if state
            else (_UNKNOWN, {})
        )

    def label(self, action: Any) -> str:
        if self.family == "search":
            return f"{'take' if action else 'skip'} {self.problem['numbers'][0]}"
        if self.family == "factual":
            return self.candidates[action][0]
        return str(action)

    def _number(self, state: tuple) -> float:
        return sum(d * 10.0**-i for i, d in enumerate(state))


def _uct(
    decisions: _Decisions, iterations: int, rng: random.Random, exploration: float = 1.4
) -> dict[str, Any]:
    root = _Node((), None, None, decisions.actions(()))
    best_reward, best_state, expanded = -1.0, (), 0
    for _ in range(iterations):
        node = root
        while not node.untried and node.children:
            log_n = math.log(node.visits)
            node = max(
                node.children, key=lambda c: c.value / c.visits + exploration * math.sqrt(log_n / c.visits)
            )
        if node.untried:
            action = node.untried.pop(rng.randrange(len(node.untried)))
            child = _Node((*node.state, action), node, action, decisions.actions((*node.state, action)))
            node.children.append(child)
            node, expanded = child, expanded + 1
        state = node.state
        while actions := decisions.actions(state):
            state = (*state, rng.choice(actions))
        reward = decisions.reward(state)
        if reward > best_reward:
            best_reward, best_state = reward, state
        while node is not None:
            node.visits += 1
            node.value += reward
            node = node.parent
    visits = {decisions.label(c.action): c.visits for c in root.children}
    top = max(root.children, key=lambda c: c.visits, default=None)
    return {
        "iterations": iterations,
        "nodes_expanded": expanded,
        "best_action": decisions.label(top.action) if top else None,
        "root_visits": visits,
        "best_value": round(best_reward, 6),
        "best_state": best_state,
    }


def _mcts(
    problem: dict[str, Any], context: list[dict[str, Any]], rag: RagIndex, iterations: int, rng: random.Random
) -> tuple[str, dict[str, Any], dict[str, Any]]:
    candidates: list[tuple[str, float, str]] = []
    if problem["family"] == "factual":
        hits = [(doc["text"], doc["score"]) for doc in context]
        hits += [
            (text, score) for _, text, score in rag.search(f"{problem['attribute']} {problem['entity']}", 4)
        ]
        for text, score in hits:
            value = _read_fact(text, problem["attribute"])
            if value is not None and value not in [c[0] for c in candidates]:
                candidates.append((value, score, text))
    decisions = _Decisions(problem, candidates)
    stats = _uct(decisions, iterations, rng)
    answer, detail = decisions.answer(stats.pop("best_state"))
    total = sum(stats["root_visits"].values()) or 1
    stats["visit_share"] = {a: round(v / total, 4) for a, v in stats["root_visits"].items()}
    return (
        answer,
        {"method": f"UCT, {iterations} iterations, best value {stats['best_value']:.4f}", **detail},
        stats,
    )


# --- the graph ------------------------------------------------------------------------------------------


def _problem_of(state: AgentState) -> dict[str, Any] | None:
    task = state.get("task")
    if task and task.get("family") and isinstance(task.get("data"), dict):
        return {"family": task["family"], **task["data"]}
    parsed = parse_problem(state["query"])
    return {"family": parsed[0], **parsed[1]} if parsed else None


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
        "verified": _self_check(problem, answer, detail),
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


def build_mcts_agent_graph(
    *,
    router: Router | None = None,
    rag: RagIndex | None = None,
    chat_model: BaseChatModel | None = None,
    max_iterations: int = 2,
    consensus_threshold: float = 0.5,
    mcts_iterations: int = 200,
    refine_steps: int = 4,
    seed: int = 0,
) -> StateGraph:
    """Build the multi-agent graph (uncompiled: compile it with your own checkpointer).

    Args:
        router: the meta-controller; default :func:`default_router`.
        rag: the retrieval index; default :func:`default_rag`.
        chat_model: when given, HRM, TRM and the synthesis ask it (with the retrieved context and the
            offline draft) and use its text; otherwise they answer offline.
        max_iterations: routing rounds at most; later rounds run every agent with a larger budget.
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
    retriever = index.as_retriever(k=3)

    def entry(state: AgentState) -> dict[str, Any]:
        return {
            "problem": _problem_of(state),
            "iteration": 0,
            "routing_history": Overwrite([]),
            "agent_outputs": Overwrite([]),
            "mcts_stats": {},
        }

    def retrieve_context(state: AgentState) -> dict[str, Any]:
        docs = retriever.invoke(state["query"])
        context = [{"id": d.id, "text": d.page_content, "score": d.metadata["score"]} for d in docs]
        return {"context": context, "retrieval_quality": round(context[0]["score"], 4) if context else 0.0}

    def route_decision(state: AgentState) -> dict[str, Any]:
        iteration = state.get("iteration", 0)
        decision = router.route(state["query"])
        agent, reason = decision.agent, "low_confidence" if decision.agent == PARALLEL else "router"
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
            answer, detail = _UNKNOWN, {"method": "found no problem to solve in the query"}
        elif agent == "HRM":
            answer, detail = _hrm(problem, index)
        else:
            answer, detail = _trm(problem, context, index, refine_steps * (1 + state.get("iteration", 0)))
        output = _output(agent, state, answer, detail)
        if chat_model is not None:
            role = "HRM, a hierarchical reasoner" if agent == "HRM" else "TRM, an iterative refiner"
            text = _ask(chat_model, role, state, output["text"])
            said = extract_answer(text) if _HAS_ANSWER.search(text) else answer
            output |= {"text": text, "answer": said, "verified": _self_check(problem, said, detail)}
        return output

    def mcts(state: AgentState) -> dict[str, Any]:
        problem, iteration = state.get("problem"), state.get("iteration", 0)
        if problem is None:
            return {"agent_outputs": [_output("MCTS", state, _UNKNOWN, {})], "mcts_stats": {"iterations": 0}}
        rng = random.Random(f"{seed}:{iteration}:{state['query']}")
        answer, detail, stats = _mcts(
            problem, state.get("context", []), index, mcts_iterations * (1 + iteration), rng
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
            if out["answer"] == _UNKNOWN:
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
            "answer": best["answer"] if best else _UNKNOWN,
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
        if chat_model is None:
            return {"response": draft, "answer": answer}
        text = _ask(chat_model, "the synthesizer of a multi-agent system", state, draft).rstrip()
        if not _ENDS_WITH_ANSWER.search(text):
            text = f"{text}\nAnswer: {answer}"
        return {"response": text, "answer": extract_answer(text)}

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
