"""Make your own graph learn: an IT help desk whose keyword triage improves from its users' ratings.

    python examples/learn_your_graph.py [database-url] [--requests N] [--cycles K]

The graph is a user's own, nothing like the bundled example: a ``triage`` node whose conditional edge
sends each request to one of four desks (``accounts``, ``devices``, ``network``, ``software``) by a
hand-written keyword rule. The rule knows the usual wording ("password", "laptop", "wifi") and sends any
wording it does not know to ``software``, so "I can't sign in to Outlook" lands on the wrong desk.

Three lines make it learn: a :class:`~cl_plugin.CaptureHandler` on every run, a
:class:`~cl_plugin.LearnedRouter` wrapping the rule as the edge's path function, and
:func:`~cl_plugin.graphs.maintenance.run_maintenance` with ``maintenance.points`` naming the decision point
``helpdesk/triage/route``. Simulated users (seeded) rate 70% of the answers: 4-5 stars when the right desk
answered, 1-2 otherwise. The script serves the first requests with the rule alone (the router falls back
to it while no model exists, and explores another desk on 10% of them), then runs a few maintenance
cycles, each followed by more traffic, and prints how often the served desk was the right one in each
phase, what each cycle did, and what exploring cost. Every number is measured in this run.

What to expect: ratings of the rule's answers teach the model the familiar wording at once; the unfamiliar
wording is learned as fast as exploration finds its right desk, because a bad rating alone says only
"not software". Where the model is unsure (top probability below ``min_confidence``) the rule decides, and
for unfamiliar wording that is the wrong desk again. A cycle whose candidate is no better than the router
in production on held-out labels promotes nothing.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypedDict

from cl_plugin.graphs.maintenance import run_maintenance
from langgraph.graph import END, START, StateGraph

from cl_plugin import CaptureHandler, LearnedRouter, PointRef, Store

GRAPH = "helpdesk"
POINT = f"{GRAPH}/triage/route"
Desk = Literal["accounts", "devices", "network", "software"]
DESKS: tuple[Desk, ...] = ("accounts", "devices", "network", "software")


class Ticket(TypedDict, total=False):
    question: str
    answer: str


# -- the user's graph -------------------------------------------------------------------------------------


def route_by_keywords(state: Ticket) -> Desk:
    """The desk's hand-written triage rule: right on the usual wording, ``software`` for anything else."""
    text = state["question"].lower()
    if any(word in text for word in ("password", "locked out", "account")):
        return "accounts"
    if any(word in text for word in ("laptop", "printer", "monitor")):
        return "devices"
    if any(word in text for word in ("wifi", "vpn", "internet")):
        return "network"
    return "software"


def triage(state: Ticket) -> Ticket:
    """Receives the request; the conditional edge after it picks the desk."""
    return {}


def accounts(state: Ticket) -> Ticket:
    """Sign-in problems: passwords, locked or expired accounts, two-factor codes, access rights."""
    return {"answer": "accounts desk: we reset your access, try signing in again"}


def devices(state: Ticket) -> Ticket:
    """Hardware: laptops, screens, keyboards, batteries, docks and printers."""
    return {"answer": "devices desk: a technician will swap the faulty part"}


def network(state: Ticket) -> Ticket:
    """Connectivity: wifi, VPN, shared drives, slow or dropping connections."""
    return {"answer": "network desk: we reset your connection profile"}


def software(state: Ticket) -> Ticket:
    """Applications: installing, updating and fixing crashing programs."""
    return {"answer": "software desk: we reinstalled the application"}


def build_helpdesk(router: Any) -> Any:
    """The help desk graph, its triage edge routed by ``router``, compiled as ``helpdesk``."""
    builder = StateGraph(Ticket)
    builder.add_node("triage", triage)
    for desk in (accounts, devices, network, software):
        builder.add_node(desk.__name__, desk)
        builder.add_edge(desk.__name__, END)
    builder.add_edge(START, "triage")
    builder.add_conditional_edges("triage", router, list(DESKS))
    return builder.compile(name=GRAPH)


# -- simulated users --------------------------------------------------------------------------------------

#: Per desk: wording the rule knows, and wording it does not (which it sends to ``software``).
TEMPLATES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "accounts": (
        (
            "I forgot my password for {app}",
            "my account is locked out after {event}",
            "please reset the password of my {app} account",
        ),
        (
            "I can't sign in to {app} since {when}",
            "{app} keeps rejecting my login",
            "the two-factor code for {app} never arrives",
            "my credentials expired and {app} won't let me in",
        ),
    ),
    "devices": (
        (
            "my laptop won't turn on after {event}",
            "the printer on floor {n} jams on every page",
            "my second monitor stays black since {when}",
        ),
        (
            "the screen flickers whenever I open {app}",
            "several keys on my keyboard are stuck since {when}",
            "the battery drains within an hour since {event}",
            "my docking station stopped charging after {event}",
        ),
    ),
    "network": (
        (
            "the wifi in room {n} keeps dropping",
            "the vpn disconnects every few minutes since {when}",
            "no internet at my desk since {when}",
        ),
        (
            "I cannot reach the shared drive from home since {when}",
            "web pages time out when I open {app}",
            "the connection drops during calls in room {n}",
            "meeting room {n} has no signal since {event}",
        ),
    ),
    "software": (
        (
            "please install {app} on my machine",
            "{app} crashes when I open a file",
            "how do I update {app} to the latest version",
            "{app} shows an error since {event}",
        ),
        (),
    ),
}
APPS = ("Outlook", "Teams", "Excel", "Jira", "Slack", "SAP", "Zoom", "Figma", "Salesforce", "Confluence")
EVENTS = ("the update", "the weekend", "the office move", "the reboot", "my holiday", "the power cut")
WHEN = ("Monday", "this morning", "yesterday", "last week", "lunch", "the weekend")
OPENERS = ("", "hi, ", "urgent: ", "hello team, ", "quick one: ")
CLOSERS = ("", ", can you help?", ", thanks", ". Please advise", " again")
MIX = {"accounts": 0.3, "devices": 0.2, "network": 0.25, "software": 0.25}
UNFAMILIAR = 0.45
RATED = 0.7


@dataclass(frozen=True)
class Request:
    question: str
    desk: str
    user: str


def requests(n: int, rng: random.Random) -> list[Request]:
    """``n`` requests: a desk by :data:`MIX`, then a template, unfamiliar wording in 45% of the cases."""
    out = []
    for _ in range(n):
        desk = rng.choices(list(MIX), weights=list(MIX.values()))[0]
        known, unfamiliar = TEMPLATES[desk]
        pool = unfamiliar if unfamiliar and rng.random() < UNFAMILIAR else known
        body = rng.choice(pool).format(
            app=rng.choice(APPS), event=rng.choice(EVENTS), when=rng.choice(WHEN), n=rng.randint(1, 9)
        )
        question = f"{rng.choice(OPENERS)}{body}{rng.choice(CLOSERS)}"
        out.append(Request(question, desk, f"user-{rng.randrange(200)}"))
    return out


# -- the run ----------------------------------------------------------------------------------------------


@dataclass
class Phase:
    """One stretch of traffic between maintenance cycles, scored against the simulated ground truth.

    ``served_right`` counts the requests the served desk was right for, ``rule_right`` those the rule alone
    would have got right, ``by_model`` the decisions the model made (the rule made the others),
    ``explored`` those that went to another desk to explore, and ``lost_to_exploring`` the explored ones the
    policy would have got right.
    """

    name: str
    requests: int = 0
    served_right: int = 0
    rule_right: int = 0
    by_model: int = 0
    explored: int = 0
    lost_to_exploring: int = 0

    @property
    def accuracy(self) -> float:
        return self.served_right / self.requests

    @property
    def rule_accuracy(self) -> float:
        return self.rule_right / self.requests


@dataclass
class Outcome:
    """What :func:`learn` measured: per phase, per maintenance cycle, and the decisions it recorded."""

    phases: list[Phase] = field(default_factory=list)
    cycles: list[dict[str, Any]] = field(default_factory=list)
    decisions: int = 0
    decisions_with_propensity: int = 0
    production_version: int | None = None


def serve(
    graph: Any, handler: CaptureHandler, store: Store, batch: list[Request], rng: random.Random, phase: Phase
) -> None:
    """Send ``batch`` through the graph, rate 70% of the answers, and score what was served."""
    ids = []
    for request in batch:
        run_id = uuid.UUID(int=rng.getrandbits(128), version=4)  # seeded: the run repeats exactly
        config = {
            "callbacks": [handler],
            "run_id": run_id,
            "metadata": {"user_id": request.user, "session_id": str(run_id)},
        }
        answer = graph.invoke({"question": request.question}, config=config)["answer"]
        answered_by = answer.split(" desk:")[0]
        if rng.random() < RATED:
            good = answered_by == request.desk
            handler.record_feedback(run_id, score=rng.choice((4, 5) if good else (1, 2)))
        ids.append(str(run_id))
    handler.flush()
    for request, iid in zip(batch, ids, strict=True):
        [decision] = store.decisions(iid, kind="route")
        stats = decision["statistics"]
        rule = route_by_keywords({"question": request.question})
        phase.requests += 1
        phase.served_right += decision["chosen"] == request.desk
        phase.rule_right += rule == request.desk
        phase.by_model += stats["fell_back"] is None
        if stats["explored"]:
            # what the policy would have served without exploring: the model's top option, or the rule's
            probabilities = decision["alternatives"]
            policy = rule if stats["fell_back"] else max(probabilities, key=probabilities.get)
            phase.explored += 1
            phase.lost_to_exploring += policy == request.desk


def learn(
    url: str = "sqlite://", *, requests_per_phase: int = 300, cycles: int = 3, seed: int = 7
) -> Outcome:
    """Serve traffic with the rule, then alternate maintenance cycles and traffic; return what happened."""
    workdir = Path(tempfile.mkdtemp())
    model_dir = workdir / "models"
    store = Store.from_url(url).setup()
    handler = CaptureHandler(store)
    router = LearnedRouter(route_by_keywords, POINT, store=store, model_dir=model_dir, explore=0.1, seed=seed)
    graph = build_helpdesk(router)
    config = {
        "maintenance": {
            "points": [POINT],
            "min_interactions": 50,
            "annotation": "none",
            "auto_promote": True,
            "model_dir": str(model_dir),
        },
        "retraining": {"enable_ab_test": False, "min_new_samples": 30},
    }
    rng = random.Random(seed)
    outcome = Outcome()
    for k in range(cycles + 1):
        if k:
            state = run_maintenance(store, config=config, graphs=[graph])
            router.refresh()  # the background refresh would find the promotion within refresh_seconds
            outcome.cycles.append(_cycle_summary(k, state, router.version))
        phase = Phase("rule only" if k == 0 else f"after cycle {k}")
        serve(graph, handler, store, requests(requests_per_phase, rng), rng, phase)
        outcome.phases.append(phase)
    decided = [d for d in store.decisions(kind="route") if d["node"] == "triage"]
    outcome.decisions = len(decided)
    outcome.decisions_with_propensity = sum(
        isinstance((d["statistics"] or {}).get("propensity"), float) for d in decided
    )
    outcome.production_version = router.version
    router.close()
    handler.close()
    store.close()
    return outcome


def _cycle_summary(k: int, state: dict[str, Any], served: int | None) -> dict[str, Any]:
    steps = state["steps"]
    name = PointRef.parse(POINT).model_name
    retrained = (steps.get("retrain") or {}).get("points", {}).get(name, {})
    gate = (steps.get("evaluate") or {}).get("points", {}).get(name, {})
    promoted = (steps.get("promote") or {}).get("points", {}).get(name)
    data = retrained.get("data") or {}
    metrics = retrained.get("metrics") or {}
    return {
        "cycle": k,
        "status": state["status"],
        "reason": state.get("reason") or "",
        "retrain": retrained.get("status") or "not run",
        "retrain_reason": retrained.get("reason"),
        "labels": data.get("labels_by_source", {}),
        "validation": metrics.get("validation_samples"),
        "candidate_accuracy": (metrics.get("candidate") or {}).get("accuracy"),
        "incumbent_accuracy": (metrics.get("production") or {}).get("accuracy"),
        "gate": gate.get("reason", "not run"),
        "passed": bool(gate.get("passed")),
        "promoted": promoted,
        "served_version": served,
        "exploration": retrained.get("exploration"),
    }


def report(outcome: Outcome) -> str:
    """The before/after table, the maintenance cycles and the exploration cost, as printed."""
    lines = [
        f"decision point {POINT}: served desk against the right desk",
        f"  {'phase':<15} {'requests':>8} {'served right':>12} {'rule alone':>10} {'by model':>8} "
        f"{'explored':>8} {'lost to exploring':>17}",
    ]
    for p in outcome.phases:
        lines.append(
            f"  {p.name:<15} {p.requests:>8} {p.accuracy:>12.1%} {p.rule_accuracy:>10.1%} {p.by_model:>8} "
            f"{p.explored:>8} {p.lost_to_exploring:>17}"
        )
    lines.append("\nmaintenance cycles:")
    for c in outcome.cycles:
        labels = ", ".join(f"{k} {v}" for k, v in c["labels"].items()) or "-"
        lines.append(f"  cycle {c['cycle']}: {c['status']}; retrain {c['retrain']}, labels: {labels}")
        if c["retrain"] == "not run":
            lines.append(f"    why: {c['reason']}")
        if c["retrain_reason"]:
            lines.append(f"    why: {c['retrain_reason']}")
        if c["candidate_accuracy"] is not None:
            lines.append(
                f"    held-out accuracy on {c['validation']} labels: candidate {c['candidate_accuracy']:.3f}, "
                f"incumbent {c['incumbent_accuracy']:.3f}"
            )
        lines.append(f"    gate: {c['gate']}")
        lines.append(f"    promoted: {c['promoted'] or 'nothing'}; serving router v{c['served_version']}")
        if c["exploration"] and c["exploration"].get("explored"):
            e = c["exploration"]
            lines.append(
                f"    exploration in its window: {e['explored']} of {e['served']} decisions, good ratings "
                f"{e['good_rate_explored']} explored against {e['good_rate_not_explored']} otherwise"
            )
    explored = sum(p.explored for p in outcome.phases)
    lost = sum(p.lost_to_exploring for p in outcome.phases)
    total = sum(p.requests for p in outcome.phases)
    lines.append(
        f"\nexploration cost: {explored} of {total} requests explored; {lost} of them went to a wrong desk "
        f"the policy would have got right ({lost / total:.1%} of all requests)"
    )
    lines.append(
        f"{outcome.decisions_with_propensity} of {outcome.decisions} triage decisions recorded with their propensity"
    )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> Outcome:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "url", nargs="?", default="sqlite://", help="database URL (in-memory SQLite by default)"
    )
    parser.add_argument("--requests", type=int, default=300, help="requests per phase")
    parser.add_argument("--cycles", type=int, default=3, help="maintenance cycles")
    args = parser.parse_args(argv)
    outcome = learn(args.url, requests_per_phase=args.requests, cycles=args.cycles)
    print(report(outcome))
    return outcome


if __name__ == "__main__":
    main(sys.argv[1:])
