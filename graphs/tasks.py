"""Tasks with checkable answers for the example multi-agent system.

Four families, each suited to one agent's method:

* ``planning``: order a handful of jobs from their dependencies. Hierarchical decomposition (take what is
  ready, recurse on the rest) is exact; local repair and reward-guided search often are not.
* ``refinement``: a square root, cube root or cubic equation to a number of decimals. Iterative refinement
  (Newton's method) converges; a one-shot interpolation is coarse; digit-by-digit search runs out of budget.
* ``search``: pick numbers whose total is as large as possible without exceeding a limit. Tree search finds
  the optimum; greedy choices and one-step repairs get stuck in local optima.
* ``factual``: questions about the services described in :func:`default_corpus`, many of them needing two
  hops (team -> service -> attribute). Decomposing the question wins; reading the top passage does not.

Every query states its problem in full, so :func:`parse_problem` recovers the family's data from the text
alone, and :func:`check_answer` compares a free-text response's ``Answer:`` line with the ground truth.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "BEST_AGENT",
    "FAMILIES",
    "PHRASINGS",
    "SERVICES",
    "Task",
    "check_answer",
    "default_corpus",
    "extract_answer",
    "make_task",
    "parse_problem",
    "sample_tasks",
    "service_fact",
]

FAMILIES: tuple[str, ...] = ("planning", "refinement", "search", "factual")
BEST_AGENT: dict[str, str] = {"planning": "HRM", "refinement": "TRM", "search": "MCTS", "factual": "HRM"}


@dataclass(frozen=True)
class Task:
    """One problem with its ground truth.

    Attributes:
        task_id: stable identifier.
        family: one of :data:`FAMILIES`.
        query: the problem as a user would type it; it states everything needed to solve it.
        answer: the ground truth as a canonical string.
        data: the family's structured problem (what :func:`parse_problem` recovers from ``query``).
    """

    task_id: str
    family: str
    query: str
    answer: str
    data: dict[str, Any] = field(default_factory=dict)


# --- corpus for the factual family -----------------------------------------------------------------------

#: service -> (team, port, retries, timeout seconds, region)
SERVICES: dict[str, tuple[str, int, int, int, str]] = {
    "billing": ("Falcon", 8443, 5, 30, "eu-west-1"),
    "checkout": ("Heron", 9090, 3, 12, "us-east-2"),
    "ingest": ("Otter", 7001, 8, 45, "ap-south-1"),
    "analytics": ("Lynx", 8125, 2, 60, "eu-central-1"),
    "auth": ("Badger", 6443, 4, 5, "us-west-1"),
    "notification": ("Marten", 5672, 6, 20, "eu-north-1"),
    "ledger": ("Osprey", 5433, 7, 90, "ca-central-1"),
    "inventory": ("Bison", 8088, 3, 25, "sa-east-1"),
    "shipping": ("Puffin", 7443, 9, 15, "ap-northeast-1"),
    "reporting": ("Walrus", 8181, 1, 120, "us-east-1"),
}
_ATTRIBUTES = ("port", "retries", "timeout", "region", "team")

_METHOD_NOTES = (
    "Newton's method refines an estimate of a root: each step replaces x by x - f(x)/f'(x), doubling the "
    "number of correct digits once the estimate is close.",
    "A dependency order lists every job after the jobs it needs; it is found by repeatedly taking a job "
    "whose prerequisites are all done.",
    "Choosing numbers whose total comes closest to a limit without exceeding it is a subset-sum problem; "
    "greedy choices can miss the best combination, while a tree search explores alternatives.",
    "Monte Carlo tree search balances exploration against exploitation with the UCB1 rule and estimates "
    "the value of a move from random rollouts.",
    "Each service document lists the port a service listens on, how often it retries a failed call, its "
    "timeout and the region it is deployed in.",
)


def default_corpus() -> list[dict[str, str]]:
    """The documents the factual family is answered from, plus a few method notes.

    Returns:
        Documents as ``{"id": ..., "text": ...}``: one per service, one per team, and the method notes.
    """
    docs = []
    for name, (team, port, retries, timeout, region) in SERVICES.items():
        docs.append(
            {
                "id": f"service-{name}",
                "text": f"The {name} service listens on port {port}. It retries a failed call {retries} times "
                f"and gives up after a {timeout} second timeout. It is deployed in region {region}.",
            }
        )
        docs.append(
            {
                "id": f"team-{team.lower()}",
                "text": f"Team {team} maintains the {name} service and answers its pages.",
            }
        )
    docs.extend({"id": f"note-{i}", "text": text} for i, text in enumerate(_METHOD_NOTES))
    return docs


# --- templates ----------------------------------------------------------------------------------------

_PLANNING = (
    "In what order should jobs {names} run if {rules}?",
    "Give a valid order for the steps {names}, given that {rules}.",
    "Plan the sequence of tasks {names}: {rules}. List them first to last.",
    "Arrange stages {names} into one pipeline where {rules}.",
    "We have to do {names}; {rules}. What order works?",
    "Search for a schedule of jobs {names} that respects these rules: {rules}.",
    "Find the best order to run {names} when {rules}.",
    "Which sequence of the steps {names} is allowed if {rules}?",
    "Jobs {names} take {hours} hours; {rules}. In what order should they run?",
)
_RULES = (
    "{a} needs {b}",
    "{a} depends on {b}",
    "{a} waits for {b}",
    "{a} follows {b}",
    "{b} goes before {a}",
    "{b} precedes {a}",
)
_REFINEMENT = {
    "sqrt": (
        "What is the square root of {a} to {d} decimal places?",
        "Refine an estimate of the square root of {a} until it is correct to {d} decimals.",
        "Iterate to compute the square root of {a}, accurate to {d} decimal places.",
        "Find the best estimate of the square root of {a}, correct to {d} decimals.",
    ),
    "cbrt": (
        "Compute the cube root of {a} correct to {d} decimal places.",
        "Approximate the cube root of {a} to {d} decimals by successive improvement.",
        "Search for the cube root of {a} to {d} decimal places.",
    ),
    "cubic": (
        "Solve x^3 + {p}x = {a} for the real root, to {d} decimal places.",
        "Find x with x^3 + {p}x = {a}, rounded to {d} decimals.",
        "Keep improving a guess for x^3 + {p}x = {a} until x is right to {d} decimal places.",
        "Which x solves x^3 + {p}x = {a}? Give it to {d} decimal places.",
    ),
}
_SEARCH = (
    "Pack boxes weighing {nums} kg into a van that carries at most {limit} kg; what is the heaviest load?",
    "Choose some of the numbers {nums} so their total is as large as possible without going over {limit}.",
    "Schedule jobs lasting {nums} minutes into a {limit}-minute slot to keep it as busy as possible.",
    "Which items priced {nums} dollars get closest to a budget of {limit} dollars without exceeding it?",
    "Explore combinations of {nums} and find the biggest sum that stays at or below {limit}.",
    "Plan which tasks of {nums} hours fit into a {limit}-hour week so that it is as full as possible.",
    "Find the best subset of {nums} whose total is no more than {limit}.",
    "Which parcels of {nums} kg should go on a lift rated for {limit} kg to carry the most weight?",
    "Items {labels} weigh {nums} kg; what is the heaviest load of at most {limit} kg?",
)
_FACTUAL_ONE_HOP = {
    "port": (
        "Which port does the {svc} service listen on?",
        "On what port is the {svc} service reachable?",
        "Find out which port the {svc} service listens on.",
        "After {k} incidents in {m} days, which port does the {svc} service listen on?",
        "What port is {svc} on?",
    ),
    "retries": (
        "How many times does the {svc} service retry a failed call?",
        "What is the retry count of the {svc} service?",
        "How often does {svc} retry a failed call before giving up?",
    ),
    "timeout": (
        "What timeout in seconds does the {svc} service use?",
        "After how many seconds does the {svc} service give up on a call?",
    ),
    "region": ("In which region is the {svc} service deployed?", "Where is the {svc} service hosted?"),
    "team": ("Which team maintains the {svc} service?", "Who answers the pages of the {svc} service?"),
}
_FACTUAL_TWO_HOP = {
    "port": (
        "Which port does the service maintained by team {team} listen on?",
        "Team {team} runs a service; what port does it listen on?",
    ),
    "retries": (
        "How many retries does the service that team {team} maintains allow?",
        "For the service owned by team {team}, how many times is a failed call retried?",
    ),
    "timeout": (
        "What timeout in seconds applies to the service team {team} looks after?",
        "We plan around the timeout of the service team {team} runs; how many seconds is it?",
        "What is the timeout, in seconds, of whatever team {team} maintains?",
        "Team {team} owns one service: after how many seconds does it time out?",
    ),
    "region": (
        "In which region is the service of team {team} deployed?",
        "Where is the service maintained by team {team} hosted?",
        "Search the docs: what region is the service of team {team} in?",
        "Team {team} had {k} pages in {m} days; where is its service hosted?",
    ),
}

# The "ops" register: how the same problems read once a new group of users (on-call engineers) arrives. It
# borrows the vocabulary of the other families (services, teams, jobs, budgets), so a router trained on the
# classic register alone routes much of it to the wrong agent.
_PLANNING_OPS = (
    "Rollout for services {names}: {rules}. Which service goes out first, second and so on?",
    "Team runbook: hosts {names} come back after an outage, {rules}. What restart sequence is safe?",
    "Migration window, databases {names}; {rules}. Give the cut-over sequence.",
    "Budget review: fund projects {names} with {rules}. In which sequence?",
)
_REFINEMENT_OPS = {
    "sqrt": (
        "Capacity planning for the team: sqrt({a}) to {d} dp.",
        "Service sizing: need sqrt({a}), {d} dp please.",
    ),
    "cbrt": (
        "Storage model for the region: cbrt({a}) to {d} dp.",
        "Team budget formula uses cbrt({a}); {d} dp.",
    ),
    "cubic": (
        "Latency model of the service: x^3 + {p}x = {a}. x to {d} dp?",
        "Queue model for the team says x^3 + {p}x = {a}; x to {d} dp.",
    ),
}
_SEARCH_OPS = (
    "Team budget is {limit} credits; jobs cost {nums} credits. Which jobs run to spend the most within budget?",
    "Services use {nums} GB; which ones go on a node with {limit} GB so it is as full as possible?",
    "Requests take {nums} ms; which fit in a {limit} ms timeout window, filling it the most?",
    "On-call shifts of {nums} hours, at most {limit} hours per person: which shifts, for the largest total?",
)
_FACTUAL_ONE_HOP_OPS = {
    "port": ("ops check: {svc} listen port?", "Firewall ticket: what port does {svc} need open?"),
    "retries": (
        "ops check: retry count configured for {svc}?",
        "Incident review: how many retries does {svc} do?",
    ),
    "timeout": (
        "ops check: {svc} timeout in seconds?",
        "Tuning alerts: after how many seconds does {svc} time out?",
    ),
    "region": ("ops check: which region hosts {svc}?", "Latency ticket: region where {svc} is deployed?"),
    "team": ("ops check: owning team of {svc}?", "Escalation: which team maintains {svc}?"),
}
_FACTUAL_TWO_HOP_OPS = {
    "port": ("ops check: port of the service that team {team} maintains?",),
    "retries": ("Incident review: retries of the service team {team} owns?",),
    "timeout": ("ops check: timeout in seconds of the service team {team} runs?",),
    "region": ("Latency ticket: region of the service team {team} maintains?",),
}

#: The ways a query may be worded: ``classic`` (the seed set's register) and ``ops`` (a register that arrives
#: later in :data:`cl_plugin.graphs.traffic.OPS_DRIFT` and that a router trained on ``classic`` alone has not seen).
PHRASINGS: tuple[str, ...] = ("classic", "ops")
_TEMPLATES = {
    "classic": {
        "ops": False,
        "rules": _RULES,
        "planning": _PLANNING,
        "refinement": _REFINEMENT,
        "search": _SEARCH,
        "one_hop": _FACTUAL_ONE_HOP,
        "two_hop": _FACTUAL_TWO_HOP,
    },
    "ops": {
        "ops": True,
        "rules": ("{a} after {b}", "{b} then {a}"),
        "planning": _PLANNING_OPS,
        "refinement": _REFINEMENT_OPS,
        "search": _SEARCH_OPS,
        "one_hop": _FACTUAL_ONE_HOP_OPS,
        "two_hop": _FACTUAL_TWO_HOP_OPS,
    },
}

_LETTERS = "BCDEFGHJKLMNPQRSTUVWXZ"
_OPENERS = (
    "",
    "",
    "",
    "",
    "Quick question: ",
    "Please help: ",
    "Hi there, ",
    "For the weekly review, ",
    "Can you check this? ",
)
_CLOSERS = ("", "", "", "", " Thanks!", " Keep it short.", " Show your working.", " Need it today.")


def _join(items: list[str], ops: bool = False) -> str:
    if ops:
        return " / ".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def _planning(rng: random.Random, t: Mapping[str, Any]) -> tuple[str, str, dict[str, Any]]:
    names = sorted(rng.sample(_LETTERS, rng.choice((6, 6, 7))))
    order = names[:]
    rng.shuffle(order)
    needs = [[order[i + 1], order[i]] for i in range(len(order) - 1)]
    rng.shuffle(needs)
    rules = [rng.choice(t["rules"]).format(a=a, b=b) for a, b in needs]
    hours = _join([str(rng.randint(1, 9)) for _ in names], t["ops"])
    query = rng.choice(t["planning"]).format(
        names=_join(names, t["ops"]),
        rules=_join(rules, t["ops"]) if not t["ops"] else ", ".join(rules),
        hours=hours,
    )
    return query, ", ".join(order), {"names": names, "needs": needs}


def _refinement(rng: random.Random, t: Mapping[str, Any]) -> tuple[str, str, dict[str, Any]]:
    kind = rng.choice(("sqrt", "sqrt", "cbrt", "cubic"))
    decimals = rng.choice((3, 4))
    p = rng.randint(2, 9) if kind == "cubic" else 0
    a = rng.randint(20, 999)
    while (kind == "sqrt" and math.isqrt(a) ** 2 == a) or (kind == "cbrt" and round(a ** (1 / 3)) ** 3 == a):
        a += 1
    data = {"kind": kind, "a": a, "p": p, "decimals": decimals}
    query = rng.choice(t["refinement"][kind]).format(a=a, p=p, d=decimals)
    return query, f"{_root(data):.{decimals}f}", data


def _search(rng: random.Random, t: Mapping[str, Any]) -> tuple[str, str, dict[str, Any]]:
    numbers = rng.sample(range(5, 40), rng.choice((7, 8)))
    limit = int(sum(numbers) * rng.uniform(0.35, 0.6))
    labels = _join(sorted(rng.sample(_LETTERS, len(numbers))), t["ops"])
    query = rng.choice(t["search"]).format(
        nums=_join([str(x) for x in numbers], t["ops"]), limit=limit, labels=labels
    )
    return query, str(_best_subset_sum(numbers, limit)), {"numbers": numbers, "limit": limit}


def _factual(rng: random.Random, t: Mapping[str, Any]) -> tuple[str, str, dict[str, Any]]:
    service = rng.choice(sorted(SERVICES))
    team = SERVICES[service][0]
    attribute = rng.choice(_ATTRIBUTES)
    counts = {"k": rng.randint(2, 9), "m": rng.randint(10, 30)}
    if attribute != "team" and rng.random() < 0.65:
        query = rng.choice(t["two_hop"][attribute]).format(team=team, **counts)
        data = {"attribute": attribute, "entity": team, "entity_kind": "team"}
    else:
        query = rng.choice(t["one_hop"][attribute]).format(svc=service, **counts)
        data = {"attribute": attribute, "entity": service, "entity_kind": "service"}
    return query, service_fact(service, attribute), data


_MAKERS = {"planning": _planning, "refinement": _refinement, "search": _search, "factual": _factual}


def make_task(family: str, rng: random.Random, *, phrasing: str = "classic") -> Task:
    """Draw one task of a family.

    Args:
        family: one of :data:`FAMILIES`.
        rng: the random source; the same state gives the same task.
        phrasing: the register the query is worded in, one of :data:`PHRASINGS`.

    Returns:
        The task, with its ground truth.

    Raises:
        ValueError: if ``family`` or ``phrasing`` is unknown.
    """
    if family not in _MAKERS:
        raise ValueError(f"unknown task family {family!r}; use one of {', '.join(FAMILIES)}")
    if phrasing not in _TEMPLATES:
        raise ValueError(f"unknown phrasing {phrasing!r}; use one of {', '.join(PHRASINGS)}")
    query, answer, data = _MAKERS[family](rng, _TEMPLATES[phrasing])
    opener, closer = rng.choice(_OPENERS), rng.choice(_CLOSERS)
    if opener.endswith(", "):
        query = query[0].lower() + query[1:]
    query = f"{opener}{query}{closer}"
    return Task(
        task_id=f"{family}-{rng.getrandbits(40):010x}", family=family, query=query, answer=answer, data=data
    )


def sample_tasks(
    n: int, *, seed: int, mix: Mapping[str, float] | None = None, phrasing: str = "classic"
) -> list[Task]:
    """Draw ``n`` tasks, the same ones for the same seed and mix.

    Args:
        n: how many tasks.
        seed: random seed.
        mix: relative weight per family (default: equal); families left out are not drawn.
        phrasing: the register the queries are worded in, one of :data:`PHRASINGS`.

    Returns:
        The tasks, in draw order.

    Raises:
        ValueError: if ``mix`` names an unknown family or has no positive weight.
    """
    weights = dict.fromkeys(FAMILIES, 1.0) if mix is None else dict(mix)
    unknown = sorted(set(weights) - set(FAMILIES))
    if unknown:
        raise ValueError(f"unknown task families {unknown} in mix; use {', '.join(FAMILIES)}")
    if not any(w > 0 for w in weights.values()):
        raise ValueError("mix needs at least one family with a positive weight")
    rng = random.Random(seed)
    families = list(weights)
    return [
        make_task(rng.choices(families, weights=[weights[f] for f in families])[0], rng, phrasing=phrasing)
        for _ in range(n)
    ]


# --- exact solvers for the ground truth ------------------------------------------------------------------


def service_fact(service: str, attribute: str) -> str:
    """The canonical value of one attribute of a service in :data:`SERVICES`."""
    team, port, retries, timeout, region = SERVICES[service]
    return {"team": team.lower(), "port": str(port), "retries": str(retries), "timeout": str(timeout)}.get(
        attribute, region
    )


def _root(data: Mapping[str, Any]) -> float:
    a, p, kind = data["a"], data["p"], data["kind"]
    if kind == "sqrt":
        return math.sqrt(a)
    lo, hi = 0.0, float(a)
    for _ in range(200):  # bisection: monotone f, exact to the last bit
        mid = (lo + hi) / 2
        if mid**3 + p * mid < a:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def _best_subset_sum(numbers: list[int], limit: int) -> int:
    reachable = 1
    for x in numbers:
        reachable |= reachable << x
    reachable &= (1 << (limit + 1)) - 1
    return reachable.bit_length() - 1


# --- parsing and checking -----------------------------------------------------------------------------

_NUM_LIST = re.compile(r"\b(\d+(?:, \d+)+ and \d+|\d+(?: / \d+)+)\b")
_NAME_LIST = re.compile(r"\b([A-Z](?:, [A-Z])+ and [A-Z]|[A-Z](?: / [A-Z])+)\b")
_RULE = re.compile(
    r"\b([A-Z]) (needs|depends on|waits for|follows|after|goes before|precedes|then) ([A-Z])\b"
)
_DECIMALS = re.compile(r"(\d+) (?:decimal|dp\b)")
_CUBIC = re.compile(r"x\^3 \+ (\d+)x = (\d+)")
_ROOT = re.compile(r"\b(square root of |cube root of |sqrt\(|cbrt\()(\d+)")
_ATTRIBUTE_WORDS = (
    (re.compile(r"\bport\b"), "port"),
    (re.compile(r"\bretr(?:y|ies|ied)\b"), "retries"),
    (re.compile(r"\b(?:timeout|time out|seconds)\b"), "timeout"),
    (re.compile(r"\b(?:region|hosted)\b"), "region"),
    (re.compile(r"\b(?:team|pages)\b"), "team"),
)


def parse_problem(query: str) -> tuple[str, dict[str, Any]] | None:
    """Recover a task's family and data from its query text.

    Args:
        query: a query as produced by :func:`make_task` (or typed in the same form).

    Returns:
        ``(family, data)``, or None when the text states no problem of a known family.
    """
    if (names := _NAME_LIST.search(query)) and (rules := _rules(query)):
        listed = names.group(1).replace(" and ", ", ").replace(" / ", ", ").split(", ")
        return "planning", {"names": listed, "needs": rules}
    decimals = _DECIMALS.search(query)
    if decimals and (cubic := _CUBIC.search(query)):
        p, a = int(cubic.group(1)), int(cubic.group(2))
        return "refinement", {"kind": "cubic", "a": a, "p": p, "decimals": int(decimals.group(1))}
    if decimals and (root := _ROOT.search(query)):
        kind = "sqrt" if root.group(1) in ("square root of ", "sqrt(") else "cbrt"
        return "refinement", {
            "kind": kind,
            "a": int(root.group(2)),
            "p": 0,
            "decimals": int(decimals.group(1)),
        }
    if numbers := _NUM_LIST.search(query):
        rest = query[: numbers.start()] + query[numbers.end() :]
        limits = re.findall(r"\d+", rest)
        if len(limits) == 1:
            values = [int(x) for x in re.findall(r"\d+", numbers.group(1))]
            return "search", {"numbers": values, "limit": int(limits[0])}
    return _parse_factual(query)


def _rules(query: str) -> list[list[str]]:
    return [
        [x, y] if verb not in ("goes before", "precedes", "then") else [y, x]
        for x, verb, y in _RULE.findall(query)
    ]


def _parse_factual(query: str) -> tuple[str, dict[str, Any]] | None:
    text = query.lower()
    team = next((t for t, *_ in SERVICES.values() if re.search(rf"\bteam {t.lower()}\b", text)), None)
    service = next((s for s in SERVICES if re.search(rf"\b{s}\b", text)), None)
    attribute = next(
        (a for word, a in _ATTRIBUTE_WORDS if word.search(text) and not (a == "team" and team)), None
    )
    if attribute is None or (team is None and service is None):
        return None
    if team is not None:
        return "factual", {"attribute": attribute, "entity": team, "entity_kind": "team"}
    return "factual", {"attribute": attribute, "entity": service, "entity_kind": "service"}


_ANSWER_LINE = re.compile(r"^\s*answer\s*[:=]\s*(.+?)\s*$", re.I | re.M)


def extract_answer(response: str) -> str:
    """The final ``Answer: ...`` line of a response, or its last non-empty line when it has none."""
    found = _ANSWER_LINE.findall(response or "")
    if found:
        return found[-1]
    lines = [line.strip() for line in (response or "").splitlines() if line.strip()]
    return lines[-1] if lines else ""


def check_answer(task: Task, response: str) -> bool:
    """Whether a free-text response answers the task correctly.

    The response's final ``Answer:`` line (or its last line) is compared with the ground truth: to within
    half a unit of the last requested decimal for refinement tasks, as the same sequence of job names for
    planning tasks, as the same total for search tasks and as the same value for factual ones.

    Args:
        task: the task.
        response: the text to check.

    Returns:
        True if the answer is right.
    """
    given = extract_answer(response)
    if task.family == "planning":
        return re.findall(r"\b[A-Z]\b", given.upper()) == task.answer.split(", ")
    if task.family in ("refinement", "search"):
        number = re.search(r"-?\d+(?:\.\d+)?", given.replace(",", ""))
        if number is None:
            return False
        if task.family == "search":
            return float(number.group()) == float(task.answer)
        tolerance = 0.5 * 10 ** -task.data["decimals"] + 1e-9
        return abs(float(number.group()) - float(task.answer)) <= tolerance
    return _normalise(given) == _normalise(task.answer)


def _normalise(value: str) -> str:
    text = re.sub(r"\b(team|seconds?|s|times|port|region)\b", " ", value.lower())
    return " ".join(re.sub(r"[^a-z0-9-]+", " ", text).split())
