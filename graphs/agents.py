"""The three agents of the example system, as plain functions: HRM, TRM and MCTS, and their self-check.

Each takes a parsed problem of :mod:`cl_plugin.graphs.tasks` (and the retrieval index where it reads documents) and
returns ``(answer, detail)``; :mod:`cl_plugin.graphs.mcts_agents` wires them into the graph. See that module for
what each agent's method is.
"""

from __future__ import annotations

import math
import random
import re
from typing import Any

from cl_plugin.learning.rag import RagIndex

__all__ = ["UNKNOWN", "hrm", "mcts", "self_check", "trm"]

#: The answer of an agent that found nothing to solve.
UNKNOWN = "unknown"

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


def self_check(problem: dict[str, Any] | None, answer: str, detail: dict[str, Any]) -> bool:
    if problem is None or answer == UNKNOWN:
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


def hrm(problem: dict[str, Any], rag: RagIndex) -> tuple[str, dict[str, Any]]:
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
                return UNKNOWN, {"method": "the dependencies form a cycle"}
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
            return UNKNOWN, {"method": "no document names the team", "sources": sources}
    asked = "team maintains" if attribute == "team" else attribute
    for _, text, _ in rag.search(f"the {service} service {asked}", 4):
        value = _read_fact(text, attribute, service)
        if value is not None and service in text:
            sources.append(text)
            return value, {
                "method": f"resolved the {service} service, then read its {attribute}",
                "sources": sources,
            }
    return UNKNOWN, {"method": f"no document states the {attribute} of {service}", "sources": sources}


# --- TRM: draft, then recursive refinement --------------------------------------------------------------


def trm(
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
    return UNKNOWN, {"method": "no passage states it", "sources": []}


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
            else (UNKNOWN, {})
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


def mcts(
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
