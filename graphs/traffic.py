"""Simulated production traffic.

:func:`run_traffic` drives a graph (the example multi-agent system by default) with a seeded stream of
queries whose family mix shifts over time (:class:`DriftSchedule`), from simulated users whose feedback
follows from whether the answer was right (checked against ground truth) and how long it took, with noise;
some users never rate, some correct wrong answers, and a small share of queries carry PII.

:func:`synthetic_interactions` yields a seeded stream of realistic interactions: queries of about 80
characters from several task families, answers of 200 to 1,500 characters, the agent a router picked with
its confidence, latency, tokens and cost, and feedback that follows from whether the picked agent suits the
family (with noise, and with many users never rating). A small share of queries carry PII, as real traffic
does, so the privacy layer has something to catch.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from cl_plugin.graphs import tasks as task_families
from cl_plugin.graphs.tasks import Task, check_answer

from cl_plugin.outcomes import outcome_value
from cl_plugin.records import ProductionInteraction

__all__ = [
    "DEFAULT_DRIFT",
    "FAMILIES",
    "OPS_DRIFT",
    "DriftSchedule",
    "ProductionQuery",
    "SimulatedUser",
    "TrafficReport",
    "production_queries",
    "run_ab_traffic",
    "run_traffic",
    "simulated_feedback",
    "synthetic_interactions",
]

# Task family -> (query templates, the agent that answers it best).
FAMILIES: dict[str, tuple[tuple[str, ...], str]] = {
    "planning": (
        (
            "Plan a {n}-step rollout for migrating the {thing} service to the new cluster without downtime",
            "Break down the launch of the {thing} feature into milestones with owners and {n} checkpoints",
            "Outline a hierarchical plan to reduce {thing} incident response time over the next {n} weeks",
        ),
        "HRM",
    ),
    "refinement": (
        (
            "Rewrite this summary of the {thing} report so it is shorter and keeps all {n} key numbers",
            "Iteratively improve the SQL query that aggregates {thing} events by hour over {n} days",
            "Polish the draft answer about {thing} configuration and fix the {n} inconsistencies in it",
        ),
        "TRM",
    ),
    "search": (
        (
            "Find the best sequence of {n} moves for the {thing} puzzle starting from the given position",
            "Explore alternative schedules for {n} jobs on the {thing} cluster and pick the cheapest one",
            "Search for a routing of {n} deliveries through the {thing} district that minimises distance",
        ),
        "MCTS",
    ),
    "factual": (
        (
            "What does the {thing} setting do and what is its default value in version {n}?",
            "Explain how the {thing} retry policy interacts with timeouts when {n} requests fail",
            "Which documents describe the {thing} API limits, and what is the limit for {n} users?",
        ),
        "HRM",
    ),
}
_THINGS = (
    "billing",
    "search",
    "checkout",
    "ingest",
    "analytics",
    "auth",
    "notification",
    "cache",
    "payments",
)
_WORDS = [
    "the",
    "system",
    "first",
    "evaluates",
    "the",
    "current",
    "state",
    "and",
    "then",
    "selects",
    "the",
    "next",
    "action",
    "according",
    "to",
    "the",
    "policy",
    "which",
    "balances",
    "exploration",
    "against",
    "exploitation",
    "while",
    "keeping",
    "latency",
    "within",
    "the",
    "agreed",
    "budget",
    "so",
    "that",
    "users",
    "see",
    "consistent",
    "answers",
    "even",
    "when",
    "the",
    "underlying",
    "data",
    "changes",
    "frequently",
    "during",
    "the",
    "day",
    "and",
    "the",
    "retrieval",
    "layer",
    "returns",
    "documents",
    "ranked",
    "by",
    "relevance",
    "to",
    "the",
    "query",
    "together",
    "with",
    "their",
    "sources",
]
_PII_SNIPPETS = (
    "my email is {first}.{last}@example.com",
    "call me at (555) {a:03d}-{b:04d}",
    "my card is 4111 1111 1111 1111",
    "from IP 192.168.{a}.{b}",
    "SSN 123-45-{b:04d}",
    "use key sk-{tok}",
)
_AGENTS = ("HRM", "TRM", "MCTS")


def _response(rng: random.Random, length: int) -> str:
    words: list[str] = []
    size = 0
    while size < length:
        w = rng.choice(_WORDS)
        words.append(w)
        size += len(w) + 1
        if rng.random() < 0.08:
            words[-1] += "."
    return " ".join(words)[:length]


def synthetic_interactions(
    n: int,
    *,
    seed: int = 0,
    start_time: float | None = None,
    pii_rate: float = 0.02,
    rating_rate: float = 0.6,
    sessions: int = 500,
) -> Iterator[ProductionInteraction]:
    """Yield ``n`` realistic interactions, the same ones for the same seed.

    Args:
        n: how many.
        seed: random seed.
        start_time: unix time of the first interaction (default: ``n`` seconds ago); one per second after.
        pii_rate: share of queries that carry an e-mail, phone, card, IP, SSN or API key.
        rating_rate: share of users who give a star rating.
        sessions: number of distinct sessions.

    Yields:
        ProductionInteraction records with ground truth in ``metadata`` (``family``, ``best_agent``).
    """
    rng = random.Random(seed)
    t0 = time.time() - n if start_time is None else start_time
    families = list(FAMILIES)
    for i in range(n):
        family = rng.choice(families)
        templates, best = FAMILIES[family]
        query = rng.choice(templates).format(n=rng.randint(2, 12), thing=rng.choice(_THINGS))
        if rng.random() < pii_rate:
            snippet = rng.choice(_PII_SNIPPETS).format(
                first=rng.choice(("ana", "li", "omar", "jo")),
                last=rng.choice(("silva", "chen", "haddad", "smith")),
                a=rng.randint(0, 255),
                b=rng.randint(1, 9999),
                tok=uuid.UUID(int=rng.getrandbits(128)).hex,
            )
            query = f"{query} ({snippet})"
        agent = best if rng.random() < 0.7 else rng.choice(_AGENTS)
        right = agent == best
        confidence = round(min(0.99, max(0.2, rng.gauss(0.78 if right else 0.55, 0.12))), 3)
        latency = max(50.0, rng.lognormvariate(7.0 if agent != "MCTS" else 7.6, 0.5))
        quality = rng.betavariate(8, 2) if right else rng.betavariate(3, 3)
        score = None
        thumbs = None
        if rng.random() < rating_rate:
            base = 4.3 if right else 2.4
            base -= 0.8 if latency > 5000 else 0.0
            score = float(min(5, max(1, round(rng.gauss(base, 0.8)))))
            if rng.random() < 0.3:
                thumbs = "up" if score >= 4 else "down" if score <= 2 else None
        tokens = rng.randint(200, 2500)
        yield ProductionInteraction(
            interaction_id=str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            timestamp=t0 + i,
            session_id=f"session-{rng.randrange(sessions)}",
            user_query=query,
            agent_selected=agent,
            agent_confidence=confidence,
            response=_response(rng, rng.randint(200, 1500)),
            user_feedback_score=score,
            thumbs_up_down=thumbs,
            latency_ms=round(latency, 1),
            tokens_used=tokens,
            cost=round(tokens * 2e-6, 6),
            hallucination_detected=rng.random() < (0.02 if right else 0.12),
            retrieval_failed=None if family == "search" else quality < 0.3,
            error_occurred=rng.random() < 0.01,
            retrieval_quality=None if family == "search" else round(quality, 3),
            metadata={"family": family, "best_agent": best, "model": "router-v1"},
            graph_name="mcts_agents",
        )


# --- traffic that drives a graph ----------------------------------------------------------------------


@dataclass(frozen=True)
class DriftSchedule:
    """A family mix that changes over the stream.

    Attributes:
        phases: ``(start, mix)`` pairs: from fraction ``start`` of the stream on (0 to 1, increasing), queries
            are drawn with relative weights ``mix`` per family.
        phrasing: ``(start, share)`` pairs, increasing: from fraction ``start`` on, ``share`` of the queries
            are worded in the ``ops`` register (:data:`cl_plugin.graphs.tasks.PHRASINGS`) instead of the classic one.
            Empty: every query is classic.
    """

    phases: tuple[tuple[float, Mapping[str, float]], ...]
    phrasing: tuple[tuple[float, float], ...] = ()

    def __post_init__(self) -> None:
        starts = [start for start, _ in self.phases]
        if not starts or starts[0] != 0.0 or starts != sorted(starts) or starts[-1] >= 1.0:
            raise ValueError("DriftSchedule.phases must start at 0.0 and increase, each start below 1.0")
        for _, mix in self.phases:
            unknown = sorted(set(mix) - set(task_families.FAMILIES))
            if unknown:
                raise ValueError(f"unknown families {unknown}; use {', '.join(task_families.FAMILIES)}")
        starts = [start for start, _ in self.phrasing]
        if starts != sorted(starts) or any(not 0.0 <= share <= 1.0 for _, share in self.phrasing):
            raise ValueError("DriftSchedule.phrasing needs increasing starts and shares between 0.0 and 1.0")

    def mix_at(self, fraction: float) -> Mapping[str, float]:
        """The mix in force at ``fraction`` (0 to 1) of the stream."""
        current = self.phases[0][1]
        for start, mix in self.phases:
            if fraction >= start:
                current = mix
        return current

    def ops_share_at(self, fraction: float) -> float:
        """The share of queries worded in the ``ops`` register at ``fraction`` (0 to 1) of the stream."""
        current = 0.0
        for start, share in self.phrasing:
            if fraction >= start:
                current = share
        return current


#: Planning-heavy traffic that turns search-heavy half-way: the router's training mix goes stale.
DEFAULT_DRIFT = DriftSchedule(
    (
        (0.0, {"planning": 0.35, "refinement": 0.30, "search": 0.10, "factual": 0.25}),
        (0.5, {"planning": 0.15, "refinement": 0.15, "search": 0.50, "factual": 0.20}),
    )
)


#: Half-way, on-call engineers arrive: the mix turns refinement- and search-heavy and 80% of the queries are
#: worded in the ``ops`` register, which a router trained on the classic wording has never seen.
OPS_DRIFT = DriftSchedule(
    (
        (0.0, {"planning": 0.35, "refinement": 0.30, "search": 0.10, "factual": 0.25}),
        (0.5, {"planning": 0.10, "refinement": 0.50, "search": 0.30, "factual": 0.10}),
    ),
    phrasing=((0.0, 0.0), (0.5, 0.8)),
)


@dataclass(frozen=True)
class SimulatedUser:
    """A user of the system and how they give feedback.

    Attributes:
        user_id: stable id.
        rating_rate: chance of leaving a star rating (0 for users who never rate).
        thumbs_rate: chance of also giving a thumb.
        correction_rate: chance of typing the right answer after a wrong one.
        noise: standard deviation of the stars around what the answer deserved.
        patience_ms: latency above which the user takes a star off.
    """

    user_id: str
    rating_rate: float
    thumbs_rate: float
    correction_rate: float
    noise: float
    patience_ms: float


def _users(n: int, rng: random.Random) -> list[SimulatedUser]:
    users = []
    for i in range(n):
        never = rng.random() < 0.25
        users.append(
            SimulatedUser(
                user_id=f"user-{i:03d}",
                rating_rate=0.0 if never else rng.uniform(0.4, 0.95),
                thumbs_rate=rng.uniform(0.1, 0.6),
                correction_rate=rng.uniform(0.0, 0.3),
                noise=rng.uniform(0.3, 0.9),
                patience_ms=rng.choice((50.0, 200.0, 1000.0)),
            )
        )
    return users


_PII_TAILS = (
    " You can reach me at {name}.{last}{n}@example.com.",
    " Call me back on ({area}) 555-{n4} if anything is unclear.",
    " My card 4111 1111 1111 1111 was charged for this.",
    " I'm on 10.{n}.{n2}.7 if that matters.",
)
_NAMES = ("jane", "omar", "li", "sofia", "raj", "anna", "kofi", "mia")


@dataclass(frozen=True)
class ProductionQuery:
    """One query of the stream: the task (with its ground truth), the text sent, who sent it."""

    index: int
    task: Task
    text: str
    user: SimulatedUser
    session_id: str
    has_pii: bool


def production_queries(
    n: int,
    *,
    seed: int = 0,
    mix: Mapping[str, float] | None = None,
    drift: DriftSchedule | None = None,
    pii_rate: float = 0.03,
    users: int = 50,
) -> Iterator[ProductionQuery]:
    """A seeded stream of queries.

    Args:
        n: how many queries.
        seed: random seed (same seed, same stream).
        mix: a fixed family mix (ignored when ``drift`` is given; default: equal weights).
        drift: a family mix that changes over the stream.
        pii_rate: share of queries that carry an e-mail, phone, card number or IP address.
        users: size of the simulated user population.

    Yields:
        The queries, in order.
    """
    rng = random.Random(seed)
    population = _users(users, rng)
    sessions: dict[str, tuple[str, int]] = {}
    for i in range(n):
        weights = drift.mix_at(i / max(n, 1)) if drift is not None else (mix or {})
        weights = weights or dict.fromkeys(task_families.FAMILIES, 1.0)
        families = list(weights)
        family = rng.choices(families, weights=[weights[f] for f in families])[0]
        ops_share = drift.ops_share_at(i / max(n, 1)) if drift is not None else 0.0
        # the draw happens only when the register can change, so streams without it stay as they were
        phrasing = "ops" if ops_share > 0 and rng.random() < ops_share else "classic"
        task = task_families.make_task(family, rng, phrasing=phrasing)
        user = rng.choice(population)
        session, left = sessions.get(user.user_id, ("", 0))
        if left <= 0:  # a session is a handful of queries in a row
            session, left = f"session-{rng.getrandbits(48):012x}", rng.randint(1, 6)
        sessions[user.user_id] = (session, left - 1)
        text, has_pii = task.query, rng.random() < pii_rate
        if has_pii:
            text += rng.choice(_PII_TAILS).format(
                name=rng.choice(_NAMES),
                last=rng.choice(_NAMES),
                n=rng.randint(1, 99),
                n2=rng.randint(1, 254),
                n4=f"{rng.randint(0, 9999):04d}",
                area=rng.randint(201, 989),
            )
        yield ProductionQuery(i, task, text, user, session, has_pii)


def simulated_feedback(
    user: SimulatedUser, task: Task, correct: bool, latency_ms: float, rng: random.Random
) -> dict[str, Any] | None:
    """What ``user`` tells the system about one answer, or None when they say nothing.

    Stars centre on 4.6 for a right answer and 1.7 for a wrong one, a star lower when the answer took
    longer than the user's patience, plus the user's noise; thumbs follow the stars; a user who got a
    wrong answer sometimes types the right one.

    Returns:
        Keyword arguments for ``record_feedback`` (``score``, ``thumbs``, ``correction``), or None.
    """
    out: dict[str, Any] = {}
    if rng.random() < user.rating_rate:
        deserved = (4.6 if correct else 1.7) - (1.0 if latency_ms > user.patience_ms else 0.0)
        out["score"] = float(min(5, max(1, round(rng.gauss(deserved, user.noise)))))
        if rng.random() < user.thumbs_rate:
            out["thumbs"] = "up" if out["score"] >= 4 else "down" if out["score"] <= 2 else None
            if out["thumbs"] is None:
                del out["thumbs"]
    if not correct and rng.random() < user.correction_rate:
        out["correction"] = f"Answer: {task.answer}"
    return out or None


@dataclass
class TrafficReport:
    """What a traffic run did, computed from the graph's answers and the users' feedback."""

    invocations: int = 0
    correct: int = 0
    routed_right: int = 0
    errors: int = 0
    rated: int = 0
    stars: float = 0.0
    low_rated: int = 0
    corrections: int = 0
    pii_queries: int = 0
    latency_ms: float = 0.0
    elapsed_s: float = 0.0
    by_family: dict[str, list[int]] = field(default_factory=dict)  # family -> [queries, correct]
    by_agent: dict[str, list[int]] = field(default_factory=dict)  # routed agent -> [queries, correct]
    interaction_ids: list[str] = field(default_factory=list)

    @property
    def accuracy(self) -> float | None:
        """Share of answers that matched the ground truth."""
        return self.correct / self.invocations if self.invocations else None

    @property
    def routing_accuracy(self) -> float | None:
        """Share of queries whose first route was the best agent of their task."""
        return self.routed_right / self.invocations if self.invocations else None

    @property
    def mean_stars(self) -> float | None:
        """Mean of the star ratings users gave."""
        return self.stars / self.rated if self.rated else None

    @property
    def failure_rate(self) -> float | None:
        """Share of rated answers rated 2 stars or fewer."""
        return self.low_rated / self.rated if self.rated else None

    @property
    def mean_latency_ms(self) -> float | None:
        """Mean end-to-end latency."""
        return self.latency_ms / self.invocations if self.invocations else None


def run_traffic(
    graph: Any,
    handler: Any = None,
    n: int = 200,
    *,
    seed: int = 0,
    mix: Mapping[str, float] | None = None,
    drift: DriftSchedule | None = DEFAULT_DRIFT,
    pii_rate: float = 0.03,
    users: int = 50,
    on_query: Callable[[], None] | None = None,
) -> TrafficReport:
    """Send ``n`` simulated production queries through ``graph``, with ``handler`` attached.

    Every request gets its own run id (the interaction id) and its own checkpoint thread; the user's
    session and id travel in the run's metadata. Feedback goes through ``handler.record_feedback``.

    Args:
        graph: a compiled graph taking ``{"query": ...}`` and returning ``response`` (and
            ``agent_selected``).
        handler: a :class:`cl_plugin.CaptureHandler`, or None to run without capture.
        n: how many queries.
        seed: random seed for the queries and the users' behaviour.
        mix: fixed family mix (used when ``drift`` is None).
        drift: family mix over time (default :data:`DEFAULT_DRIFT`).
        pii_rate: share of queries carrying PII.
        users: size of the user population.
        on_query: called after each query (a progress bar's update, say).

    Returns:
        Counts and accuracies measured on this run.
    """
    rng = random.Random(seed + 1)
    report = TrafficReport()
    start = time.perf_counter()
    for q in production_queries(n, seed=seed, mix=mix, drift=drift, pii_rate=pii_rate, users=users):
        _serve(graph, q, handler, rng, report)
        if on_query is not None:
            on_query()
    report.elapsed_s = time.perf_counter() - start
    return report


def run_ab_traffic(
    graphs: Mapping[str, Any],
    framework: Any,
    test_id: str,
    handler: Any = None,
    n: int = 200,
    *,
    seed: int = 0,
    mix: Mapping[str, float] | None = None,
    drift: DriftSchedule | None = DEFAULT_DRIFT,
    pii_rate: float = 0.03,
    users: int = 50,
    on_query: Callable[[], None] | None = None,
) -> dict[str, TrafficReport]:
    """Like :func:`run_traffic`, with each request sent to the graph of its A/B group.

    The group comes from ``framework.assign_group(test_id, request id)``. ``framework.record_result`` gets
    the request's outcome (:func:`cl_plugin.outcomes.outcome_value`, the A/B test's default metric), the
    success metric a team could observe in production: 0.0 when the run raised, or the user gave one or two
    stars, a thumbs down or a correction; 1.0 when the user rated the answer and nothing failed. A request
    nobody judged (no failure, no rating) records nothing. How long the answer took counts only through
    the user's rating: a slow right answer the user rated well is a success.

    Args:
        graphs: the compiled graph of each group (``"A"``: production, ``"B"``: candidate).
        framework: an :class:`~cl_plugin.abtest.ABTestFramework`.
        test_id: the running test.
        handler, n, seed, mix, drift, pii_rate, users, on_query: as for :func:`run_traffic`.

    Returns:
        One report per group.
    """
    rng = random.Random(seed + 1)
    reports = {group: TrafficReport() for group in graphs}
    start = time.perf_counter()
    for q in production_queries(n, seed=seed, mix=mix, drift=drift, pii_rate=pii_rate, users=users):
        request_id = uuid.UUID(int=random.Random(f"{seed}:{q.index}").getrandbits(128), version=4)
        group = framework.assign_group(test_id, str(request_id))
        feedback, raised = _serve(graphs[group], q, handler, rng, reports[group], run_id=request_id)
        outcome = _outcome(feedback, raised)
        if outcome is not None:
            framework.record_result(test_id, group, q.text, None, outcome)
        if on_query is not None:
            on_query()
    for report in reports.values():
        report.elapsed_s = time.perf_counter() - start
    return reports


def _outcome(feedback: Mapping[str, Any] | None, raised: bool) -> float | None:
    """The request's outcome metric from its user's feedback and whether the run raised (None: unjudged)."""
    feedback = feedback or {}
    correction = feedback.get("correction")
    row = {
        "user_feedback_score": feedback.get("score"),
        "thumbs_up_down": feedback.get("thumbs"),
        "corrections": None if correction is None else [correction],
        "error_occurred": raised,
    }
    # Simulated scores are whole stars, so the default threshold (below 3) is ``store.ab.outcomes``' ``<= 2``.
    return outcome_value(row)


def _serve(
    graph: Any,
    q: ProductionQuery,
    handler: Any,
    rng: random.Random,
    report: TrafficReport,
    *,
    run_id: uuid.UUID | None = None,
) -> tuple[dict[str, Any] | None, bool]:
    """Send one query through ``graph``, let its user react, and count it in ``report``.

    Returns:
        The user's feedback (None when they said nothing) and whether the run raised.
    """
    run_id = run_id or uuid.uuid4()
    config = {
        "callbacks": [handler] if handler is not None else [],
        "run_id": run_id,
        "configurable": {"thread_id": str(uuid.uuid4())},
        "metadata": {"user_id": q.user.user_id, "session_id": q.session_id},
    }
    t0 = time.perf_counter()
    raised = False
    try:
        out = graph.invoke({"query": q.text}, config=config)
    except Exception:
        report.errors += 1
        raised = True
        out = {}
    latency_ms = (time.perf_counter() - t0) * 1000.0
    correct = check_answer(q.task, str(out.get("response", "")))
    agent = str(out.get("agent_selected", "none"))
    report.invocations += 1
    report.correct += correct
    report.routed_right += agent == task_families.BEST_AGENT[q.task.family]
    report.latency_ms += latency_ms
    report.pii_queries += q.has_pii
    report.interaction_ids.append(str(run_id))
    for key, table in ((q.task.family, report.by_family), (agent, report.by_agent)):
        counts = table.setdefault(key, [0, 0])
        counts[0] += 1
        counts[1] += correct
    feedback = simulated_feedback(q.user, q.task, correct, latency_ms, rng)
    if feedback is not None:
        if handler is not None:
            handler.record_feedback(run_id, **feedback)
        if "score" in feedback:
            report.rated += 1
            report.stars += feedback["score"]
            report.low_rated += feedback["score"] <= 2
        report.corrections += "correction" in feedback
    return feedback, raised
