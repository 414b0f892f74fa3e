"""Simulated production traffic.

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
from collections.abc import Iterator

from cl_plugin.records import ProductionInteraction

__all__ = ["FAMILIES", "synthetic_interactions"]

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
