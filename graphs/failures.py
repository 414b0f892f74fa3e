"""Synthetic production interactions with planted failure themes.

:func:`planted_failures` returns interactions shaped like rows of
:meth:`cl_plugin.store.Store.query_interactions` and, in a parallel list, the theme each failure was planted
from (``None`` for healthy interactions). Each theme is a topic users ask about in many paraphrases and a way
the system fails on it:

========================== ================= =========================================================
theme                      mode              how it fails
========================== ================= =========================================================
billing refunds in EUR     low_rating        answered by TRM (HRM answers it well): 1-2 stars
kubernetes pod eviction    poor_retrieval    retrieval quality below 0.3, often ``retrieval_failed``; 1-2 stars
password reset emails      routing           routed to MCTS (confidence below 0.45, ``best_agent`` HRM)
PDF export timeouts        slow              6 to 25 s in the ``pdf_renderer`` node; 1-2 stars
SQL join performance       error             raises in the ``sql_executor`` node
GDPR data deletion         hallucination     ``hallucination_detected``
SSO login with Okta        thumbs_down       thumbs down, no stars
CSV import encoding        error             raises in the ``csv_parser`` node
========================== ================= =========================================================

Every paraphrase names the feature (as users reporting one problem do) but wording varies; queries carry
generic openers and closers shared by every topic ("urgent:", "still not working"), theme queries also appear
in healthy traffic (answered well, mostly by the theme's good agent), and healthy topics reuse theme words
("export", "email", "customer"), so telling themes apart takes more than one keyword. PDF, SQL and CSV
queries run a tool node instead of retrieval. A failure always shows at least
one outcome (low stars, thumbs down, error, hallucination; :mod:`cl_plugin.outcomes`), and the poor-retrieval
and slow themes also show their cause (the diagnostic); healthy interactions show no outcome failure, no
poor retrieval and no slow answer (a few have an unsure router, as real traffic does). Values are missing as they are in production: most users never rate, runs without
retrieval have ``retrieval_quality`` and ``retrieval_failed`` of ``None``, hallucination checks do not
always run.

:func:`iter_planted_failures` yields the same stream lazily, one ``(row, label)`` pair at a time, for
million-row benchmarks.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

__all__ = ["HEALTHY_TOPICS", "THEMES", "Theme", "iter_planted_failures", "planted_failures"]

DEFAULT_START = 1_735_689_600.0  # 2025-01-01T00:00:00Z
AGENTS = ("HRM", "TRM", "MCTS")


@dataclass(frozen=True, slots=True)
class Theme:
    """A planted failure theme.

    Attributes:
        name: the label failures of this theme carry.
        mode: how it fails: ``low_rating``, ``poor_retrieval``, ``routing``, ``slow``, ``error``,
            ``hallucination`` or ``thumbs_down``.
        templates: paraphrases of the queries (``{n}``, ``{x}`` are filled per query).
        fills: values for ``{x}``.
        agent: the agent that answers the failing queries.
        good_agent: the agent that answers this theme well.
        node: the graph node where the failure happens.
    """

    name: str
    mode: str
    templates: tuple[str, ...]
    fills: tuple[str, ...]
    agent: str
    good_agent: str
    node: str


THEMES: tuple[Theme, ...] = (
    Theme(
        "billing refunds in EUR",
        "low_rating",
        (
            "why was my refund of {n} EUR not credited back to my card",
            "customer wants a refund in EUR for invoice {x}, billing shows the refund as pending",
            "how do I issue a partial refund in EUR when the original charge was in USD",
            "refund stuck: {n} EUR charged twice on the billing page",
            "billing question: refund the EUR payment for order {x}",
        ),
        ("INV-2231", "INV-9920", "A-771", "5531", "SEPA-004"),
        "TRM",
        "HRM",
        "answer",
    ),
    Theme(
        "kubernetes pod eviction",
        "poor_retrieval",
        (
            "kubernetes pods keep getting evicted on node {x} because of memory pressure",
            "kubernetes pod eviction when ephemeral storage on the node is {n}% full",
            "kubectl shows Evicted status for {n} pods in namespace {x}, how do I prevent pod eviction",
            "pod eviction thresholds of the kubelet, which pods get evicted first",
            "our deployment pods get evicted during a node drain, do we need a PodDisruptionBudget",
        ),
        ("worker-3", "prod", "ingest", "gpu-pool", "staging"),
        "HRM",
        "HRM",
        "retrieve",
    ),
    Theme(
        "password reset emails",
        "routing",
        (
            "user never received the password reset email",
            "the password reset link in the email expired after {n} minutes",
            "password reset emails go to spam for {x} addresses",
            "how can I resend the password reset email to a locked account",
            "forgot password: the reset email is not arriving, already checked the junk folder",
        ),
        ("gmail.com", "outlook", "corporate", "yahoo", "icloud"),
        "MCTS",
        "HRM",
        "route",
    ),
    Theme(
        "PDF export timeouts",
        "slow",
        (
            "PDF export of the {n}-page report times out",
            "PDF export hangs at {n}% and then fails with a timeout",
            "export as PDF takes forever and times out for the {x} dashboard",
            "timeout when exporting PDF invoices in bulk, {n} files",
            "the PDF export of large tables never finishes, timeout after {n} minutes",
        ),
        ("quarterly", "sales", "finance", "ops", "marketing"),
        "TRM",
        "TRM",
        "pdf_renderer",
    ),
    Theme(
        "SQL join performance",
        "error",
        (
            "this SQL join between orders and {x} takes {n} seconds",
            "slow SQL query: LEFT JOIN on {x} with {n} million rows, which index should I add",
            "optimize a three-way SQL join in postgres, the plan shows a nested loop",
            "SQL join performance got worse after adding a WHERE clause on {x}",
            "why is my SQL inner join doing a sequential scan on the {x} table",
        ),
        ("customers", "line_items", "events", "accounts", "shipments"),
        "TRM",
        "TRM",
        "sql_executor",
    ),
    Theme(
        "GDPR data deletion requests",
        "hallucination",
        (
            "how do we handle a GDPR data deletion request from a customer",
            "GDPR: delete all personal data of a user within {n} days of the request",
            "GDPR deletion request: which systems store the user's personal data",
            "what is the GDPR deadline to answer a data deletion request in the {x}",
        ),
        ("EU", "UK", "EEA", "Germany", "France"),
        "HRM",
        "HRM",
        "answer",
    ),
    Theme(
        "SSO login with Okta",
        "thumbs_down",
        (
            "SAML SSO login with Okta fails with an invalid audience error",
            "users cannot log in through Okta SSO since {x}",
            "configure Okta SSO and SCIM provisioning for {n} users",
            "Okta SSO login redirect loop after enabling single sign-on",
        ),
        ("this morning", "the upgrade", "yesterday", "the cert rotation", "Monday"),
        "HRM",
        "HRM",
        "answer",
    ),
    Theme(
        "CSV import encoding errors",
        "error",
        (
            "CSV import fails with an encoding error on row {n}",
            "importing a CSV file with accented characters shows garbled text, wrong encoding?",
            "utf-8 versus latin-1 encoding problem in the CSV import from {x}",
            "the CSV importer rejects files saved from {x} with an encoding error",
        ),
        ("Excel", "Numbers", "LibreOffice", "Google Sheets", "SAP"),
        "TRM",
        "TRM",
        "csv_parser",
    ),
)

HEALTHY_TOPICS: tuple[str, ...] = (
    "what's the weather forecast for {x} this weekend",
    "summarize the meeting notes from the {x} standup",
    "write a short marketing slogan for our {x} launch",
    "translate 'thank you for your order' into {x}",
    "convert {n} miles to kilometers",
    "what is the travel expense policy for hotel stays in {x}",
    "create an onboarding checklist for a new {x} hire",
    "sort a python list of dicts by the {x} key",
    "draft quarterly OKRs for the {x} team",
    "explain the difference between a process and a thread",
    "email the weekly report to the {x} team",
    "export the contact list of the {x} customers to a spreadsheet",
    "how many vacation days do I have left this year",
    "recommend a book about {x} for beginners",
)
_HEALTHY_FILLS = ("Lisbon", "platform", "design", "Spanish", "sales", "mobile", "Berlin", "name", "data")
_OPENERS = ("", "", "", "hi, ", "urgent: ", "please help - ", "quick question: ", "hello team, ")
_CLOSERS = ("", "", "", " thanks", " asap", " again?", " - still not working", " (customer is waiting)")
_HEALTHY_PATHS = (("route", "answer"), ("route", "retrieve", "answer"))
_ERRORS = {
    "sql_executor": ("OperationalError", "TimeoutError"),
    "csv_parser": ("UnicodeDecodeError", "ValueError"),
}
_RESPONSES = (
    "Here is what to do: check the settings page, apply the change and confirm it worked.",
    "The short answer is yes; the details depend on your plan and the configuration in use.",
    "Follow these three steps, then reload the page and try the request again.",
)


def _query(rng: random.Random, templates: tuple[str, ...], fills: tuple[str, ...]) -> str:
    text = rng.choice(templates).format(n=rng.randint(2, 90), x=rng.choice(fills))
    return f"{rng.choice(_OPENERS)}{text}{rng.choice(_CLOSERS)}"


def iter_planted_failures(
    n: int,
    *,
    seed: int = 0,
    themes: int = 5,
    failure_rate: float = 0.3,
    start_time: float = DEFAULT_START,
    theme_traffic: float = 0.15,
) -> Iterator[tuple[dict, str | None]]:
    """Yield ``n`` interaction rows with planted failures, the same ones for the same seed.

    Args:
        n: how many interactions.
        seed: random seed.
        themes: how many of :data:`THEMES` to plant (1 to 8), taken in order.
        failure_rate: share of interactions that fail (each failure belongs to one theme, chosen uniformly).
        start_time: unix time of the first interaction; one every 30 seconds after.
        theme_traffic: share of healthy interactions that ask about a theme and are answered well.

    Yields:
        ``(row, label)``: a dict with the keys of ``Store.query_interactions`` rows, and the theme name of a
        failure or ``None`` for a healthy interaction.

    Raises:
        ValueError: ``themes``, ``failure_rate`` or ``theme_traffic`` out of range.
    """
    if not 1 <= themes <= len(THEMES):
        raise ValueError(f"themes must be between 1 and {len(THEMES)} (got {themes})")
    if not 0.0 <= failure_rate <= 1.0 or not 0.0 <= theme_traffic <= 1.0:
        raise ValueError(
            f"failure_rate and theme_traffic must be in [0, 1] (got {failure_rate}, {theme_traffic})"
        )
    rng = random.Random(seed)
    random_ = rng.random
    planted = THEMES[:themes]
    for i in range(n):
        row = {
            "interaction_id": f"{rng.getrandbits(128):032x}",
            "timestamp": start_time + 30.0 * i,
            "session_id": f"session-{rng.randrange(max(1, n // 8 + 1))}",
            "user_query": "",
            "agent_selected": None,
            "agent_confidence": None,
            "response": rng.choice(_RESPONSES),
            "user_feedback_score": None,
            "thumbs_up_down": None,
            "latency_ms": round(min(4900.0, rng.lognormvariate(6.9, 0.45)), 1),
            "tokens_used": rng.randint(150, 2400),
            "cost": None,
            "hallucination_detected": None if random_() < 0.3 else False,
            "retrieval_failed": None,
            "error_occurred": False,
            "retrieval_quality": None,
            "metadata": {},
            "run_id": None,
            "graph_name": "support_agents",
            "user_id": f"user-{rng.randrange(5000)}",
            "corrections": [],
        }
        row["run_id"] = row["interaction_id"]
        row["cost"] = round(row["tokens_used"] * 2e-6, 6)
        if random_() < failure_rate:
            theme = rng.choice(planted)
            _fail(rng, row, theme)
            label: str | None = theme.name
        else:
            _healthy(rng, row, rng.choice(planted) if random_() < theme_traffic else None)
            label = None
        if random_() < 0.02:
            row["agent_confidence"] = None
        if random_() < 0.01 and label is None:
            row["latency_ms"] = None
        yield row, label


def planted_failures(
    n: int, *, seed: int = 0, themes: int = 5, failure_rate: float = 0.3
) -> tuple[list[dict], list[str | None]]:
    """``n`` interaction rows with planted failure themes, and each row's theme (``None``: healthy).

    Args:
        n: how many interactions.
        seed: random seed.
        themes: how many of :data:`THEMES` to plant (1 to 8).
        failure_rate: share of interactions that fail.

    Returns:
        The rows (as from ``Store.query_interactions``) and the parallel list of labels.

    Example:
        >>> rows, labels = planted_failures(1000, seed=1)
        >>> sorted({label for label in labels if label})[:2]
        ['PDF export timeouts', 'SQL join performance']
    """
    rows: list[dict] = []
    labels: list[str | None] = []
    for row, label in iter_planted_failures(n, seed=seed, themes=themes, failure_rate=failure_rate):
        rows.append(row)
        labels.append(label)
    return rows, labels


def _path(theme: Theme) -> tuple[str, ...]:
    """The nodes a query of ``theme`` runs through: a tool node instead of retrieval, when it has one."""
    if theme.node in ("route", "retrieve", "answer"):
        return ("route", "retrieve", "answer")
    return ("route", theme.node, "answer")


def _healthy(rng: random.Random, row: dict, theme: Theme | None) -> None:
    """Fill ``row`` as a well-served interaction (no failure signal at all)."""
    if theme is None:
        row["user_query"] = _query(rng, HEALTHY_TOPICS, _HEALTHY_FILLS)
        agent = rng.choice(AGENTS)
        path = rng.choice(_HEALTHY_PATHS)
    else:
        row["user_query"] = _query(rng, theme.templates, theme.fills)
        # The theme's failing agent still answers some of its queries well: failure is a rate, not a rule.
        agent = theme.good_agent if rng.random() < 0.8 else theme.agent
        path = _path(theme)
    row["agent_selected"] = agent
    low = rng.random() < 0.06
    row["agent_confidence"] = round(rng.uniform(0.3, 0.5) if low else rng.uniform(0.55, 0.99), 3)
    if "retrieve" in path:
        row["retrieval_quality"] = round(rng.uniform(0.45, 1.0), 3)
        row["retrieval_failed"] = False
    if rng.random() < 0.4:
        row["user_feedback_score"] = float(rng.choice((3, 4, 4, 5, 5, 5)))
        if rng.random() < 0.25:
            row["thumbs_up_down"] = "up"
    row["metadata"] = {"node_path": list(path)}


def _fail(rng: random.Random, row: dict, theme: Theme) -> None:
    """Fill ``row`` as a failure of ``theme``, in the theme's own way, with one outcome at least."""
    row["user_query"] = _query(rng, theme.templates, theme.fills)
    row["agent_selected"] = theme.agent
    row["agent_confidence"] = round(rng.uniform(0.5, 0.95), 3)
    path = list(_path(theme))
    if "retrieve" in path:
        row["retrieval_quality"] = round(rng.uniform(0.4, 0.95), 3)
        row["retrieval_failed"] = False
    metadata: dict = {"node_path": path}
    rated = rng.random() < 0.5
    mode = theme.mode
    if mode == "low_rating":
        rated = True
    elif mode == "poor_retrieval":
        row["retrieval_quality"] = round(rng.uniform(0.02, 0.28), 3)
        row["retrieval_failed"] = rng.random() < 0.4
        rated = True  # the answer built on the wrong documents is what the user sees
    elif mode == "routing":
        row["agent_confidence"] = round(rng.uniform(0.15, 0.45), 3)
        metadata["best_agent"] = theme.good_agent
        if rng.random() < 0.6:
            rated = True
        else:
            rated = False
            row["thumbs_up_down"] = "down"
    elif mode == "slow":
        row["latency_ms"] = round(rng.uniform(6000.0, 25000.0), 1)
        metadata["slowest_node"] = theme.node
        rated = True  # the user gave up waiting
    elif mode == "error":
        row["error_occurred"] = True
        row["response"] = ""
        metadata["failed_node"] = theme.node
        metadata["node_errors"] = [rng.choice(_ERRORS.get(theme.node, ("RuntimeError",)))]
        metadata["node_path"] = path[: path.index(theme.node) + 1]
        rated = rng.random() < 0.15
    elif mode == "hallucination":
        row["hallucination_detected"] = True
    elif mode == "thumbs_down":
        rated = False
        row["thumbs_up_down"] = "down"
    if rated:
        row["user_feedback_score"] = float(rng.choice((1, 1, 2, 2, 2)))
        if rng.random() < 0.3:
            row["thumbs_up_down"] = "down"
    row["metadata"] = metadata
