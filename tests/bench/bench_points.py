"""Does the loop improve a user's own graph's decisions, and what does serving the learned router cost?

    python tests/bench/bench_points.py [--seeds 1 2 3] [--requests 800] [--held-out 1000] [--serving 3000]

The graph is not the bundled example: a help desk (``tests/bench/helpdesk_domain.py``) whose ``triage``
node's conditional edge sends each request to ``billing``, ``tech``, ``account`` or ``general`` by a
keyword rule. The rule knows only some wordings and sends the others to ``general``, so it is right on
about 55-60% of requests and every miss falls on that one default option. The path function is the rule
wrapped in a :class:`~cl_plugin.LearnedRouter` (which falls back to the rule while no model exists),
capture is on, and 70% of requests are rated (4-5 stars when the right handler answered, 1-2 otherwise).
Each scenario runs the real maintenance graph (``maintenance.points`` naming the point, ``auto_promote``,
no A/B test unless said) on an SQLite store, and scores the served policy (the production model with the rule as
fallback, no exploration) on ``--held-out`` fresh requests with ground truth:

* ``feedback``: one cycle after ``--requests`` requests, from the ratings alone. Target: no regression
  (>= rule - 2 points), and the candidate's own accuracy shows what bad ratings of ``general`` taught;
* ``50 labels``: the same, with ``annotation: human`` and a budget of 50: the run pauses for labels and is
  resumed with an oracle's answers. Target: >= rule + 15 points;
* ``exploration``: three cycles of ``--requests`` requests each, served with ``explore=0.1``, from the
  ratings alone, with the A/B test on (a candidate the held-out labels cannot show better is tested on the
  next cycle's traffic). Target: >= rule + 15 points after the third; the served accuracy of each cycle's
  traffic (exploration and A/B split included) is reported beside it;
* ``rule at 98%``: a rule right on about 98.5% of requests; target: the gate refuses and nothing is
  promoted.

Serving: one decision by the rule function alone against the same decision through the LearnedRouter
serving a production TF-IDF model (scored, decided and recorded, in a graph run with capture on, the
decision's time measured inside the path function), ``--serving`` decisions each, interleaved, in 5 rounds
(the p50 of each round; the median round is reported); target <= 0.3 ms more at p50.

Medians over seeds.
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import helpdesk_domain as desk
from cl_plugin.graphs.maintenance import run_maintenance
from langgraph.checkpoint.memory import InMemorySaver

from cl_plugin import CaptureHandler, LearnedRouter
from cl_plugin.learning.registry import ModelRegistry
from cl_plugin.store import Store

POINT = "helpdesk/triage/route"
HELD_OUT_SEED = 99_991
ROUNDS = 5  # serving is timed in rounds, each flushed to the store before the next; the median round counts
MIN_CONFIDENCE = LearnedRouter.__init__.__kwdefaults__["min_confidence"]


class World:
    """A store, a registry, the help desk graph served by a LearnedRouter, and capture."""

    def __init__(
        self, directory: Path, *, rule: Any = desk.rule, explore: float = 0.0, seed: int = 0
    ) -> None:
        self.directory = directory
        self.store = Store.from_url(f"sqlite:///{directory}/points.db").setup()
        self.registry = ModelRegistry(self.store, directory / "models" / "artifacts")
        self.rule = rule
        self.router = LearnedRouter(
            rule,
            POINT,
            registry=self.registry,
            explore=explore,
            seed=seed,
            refresh_seconds=3600,
            min_confidence=MIN_CONFIDENCE,
        )
        self.graph = desk.build(self.router)
        self.handler = CaptureHandler(self.store)
        self.truth: dict[str, str] = {}

    def serve(self, n: int, *, seed: int) -> float:
        """Serve ``n`` requests with 70% rated; returns the share routed to the right handler."""
        rng = random.Random(seed)
        right = 0
        for q in desk.requests(n, seed=seed):
            run_id = uuid.UUID(int=rng.getrandbits(128), version=4)
            out = self.graph.invoke(
                {"request": q.text},
                config={"callbacks": [self.handler], "run_id": run_id, "metadata": {"session_id": q.session}},
            )
            self.truth[str(run_id)] = q.truth
            right += out["handler"] == q.truth
            if rng.random() < 0.7:
                self.handler.record_feedback(run_id, score=desk.rating(out["handler"], q.truth, rng))
        self.handler.flush()
        return right / n

    def config(self, *, ab_test: bool = False, **maintenance: Any) -> dict[str, Any]:
        return {
            "maintenance": {
                "points": [POINT],
                "min_interactions": 50,
                "auto_promote": True,
                "annotation": "none",
                "model_dir": str(self.directory / "models"),
                **maintenance,
            },
            "retraining": {"enable_ab_test": ab_test, "min_new_samples": 50},
            "ab_testing": {"traffic_split": 0.5, "min_samples": 100, "sequential_tuning": 400},
        }

    def maintain(
        self, *, resume_with_oracle: bool = False, ab_test: bool = False, **maintenance: Any
    ) -> dict[str, Any]:
        config = self.config(ab_test=ab_test, **maintenance)
        saver = InMemorySaver()  # the paused run resumes from its checkpoint
        state = run_maintenance(
            self.store, config=config, registry=self.registry, graphs=[self.graph], checkpointer=saver
        )
        if resume_with_oracle and "__interrupt__" in state:
            items = state["__interrupt__"][0].value["items"]
            answers = {i["interaction_id"]: self.truth[i["interaction_id"]] for i in items}
            state = run_maintenance(
                self.store,
                config=config,
                registry=self.registry,
                graphs=[self.graph],
                thread_id=state["thread_id"],
                resume=answers,
                checkpointer=saver,
            )
        self.router.refresh()
        return state

    def held_out(self, n: int) -> float:
        """Accuracy of the served policy (production model, rule fallback, no exploration) on fresh requests."""
        judge = LearnedRouter(
            self.rule,
            POINT,
            registry=self.registry,
            refresh_seconds=3600,
            min_confidence=MIN_CONFIDENCE,
            ab_tests=False,
        )
        try:
            qs = desk.requests(n, seed=HELD_OUT_SEED)
            return sum(judge._decide({"request": q.text}, None).option == q.truth for q in qs) / n
        finally:
            judge.close()

    def candidate_accuracy(self, state: dict[str, Any], n: int) -> float | None:
        """Accuracy of the cycle's candidate model alone (promoted or not) on fresh requests."""
        versions = ((state["steps"].get("retrain") or {}).get("points") or {}).get(
            "helpdesk.triage.route", {}
        )
        version = (versions.get("versions") or {}).get("router")
        if version is None:
            return None
        scorer = self.registry.load("helpdesk.triage.route", version).scorer()
        qs = desk.requests(n, seed=HELD_OUT_SEED)
        right = 0
        for q in qs:
            proba = scorer.proba(q.text)
            right += scorer.classes[int(proba.argmax())] == q.truth
        return right / n

    def promoted(self) -> int | None:
        return self.registry.store.models.alias("helpdesk.triage.route", "production")

    def close(self) -> None:
        self.router.close()
        self.handler.close()


def rule_accuracy(rule: Any, n: int) -> float:
    qs = desk.requests(n, seed=HELD_OUT_SEED)
    return sum(rule({"request": q.text}) == q.truth for q in qs) / n


def gate_of(state: dict[str, Any]) -> str:
    gate = (state["steps"].get("evaluate") or {}).get("points", {}).get("helpdesk.triage.route")
    if gate is None:
        return state.get("reason") or "no gate"
    return ("passed: " if gate["passed"] else "refused: ") + gate["reason"]


def scenario_one_cycle(seed: int, args: argparse.Namespace, **maintain: Any) -> dict[str, Any]:
    """Serve ``--requests`` with the rule, run one cycle (``maintain`` as for :meth:`World.maintain`)."""
    with tempfile.TemporaryDirectory() as d:
        w = World(Path(d), seed=seed)
        try:
            w.serve(args.requests, seed=seed)
            state = w.maintain(**maintain)
            return {
                "served": w.held_out(args.held_out),
                "candidate": w.candidate_accuracy(state, args.held_out),
                "promoted": w.promoted(),
                "gate": gate_of(state),
                "labels": _labels(state),
            }
        finally:
            w.close()


def scenario_feedback_ab(seed: int, args: argparse.Namespace) -> dict[str, Any]:
    """Ratings alone, with the A/B test on: the first cycle tests its candidate against the rule on live
    traffic, the second reads the test and promotes the winner."""
    with tempfile.TemporaryDirectory() as d:
        w = World(Path(d), seed=seed)
        try:
            w.serve(args.requests, seed=seed)
            first = w.maintain(ab_test=True)
            test = ((first["steps"].get("ab_test") or {}).get("points") or {}).get("helpdesk.triage.route")
            during = w.serve(args.requests, seed=seed + 5000)
            second = w.maintain(ab_test=True)
            review = (second["steps"].get("review_ab_tests") or {}).get("tests") or [{}]
            return {
                "served": w.held_out(args.held_out),
                "promoted": w.promoted(),
                "gate": gate_of(first),
                "test": test,
                "verdict": f"{review[0].get('recommendation')}: {review[0].get('reason')}",
                "served_during_test": during,
            }
        finally:
            w.close()


def scenario_exploration(seed: int, args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as d:
        w = World(Path(d), explore=0.1, seed=seed)
        try:
            cycles = []
            for k in range(3):
                served = w.serve(args.requests, seed=seed * 100 + k)
                state = w.maintain(ab_test=True)
                cycles.append(
                    {
                        "served_during": served,
                        "held_out": w.held_out(args.held_out),
                        "promoted": w.promoted(),
                        "gate": gate_of(state),
                        "review": _review(state),
                        "exploration": _exploration(state),
                    }
                )
            return {"served": cycles[-1]["held_out"], "cycles": cycles}
        finally:
            w.close()


def scenario_good_rule(seed: int, args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as d:
        w = World(Path(d), rule=desk.near_perfect_rule, seed=seed)
        try:
            w.serve(args.requests, seed=seed)
            state = w.maintain()
            return {
                "rule": rule_accuracy(desk.near_perfect_rule, args.held_out),
                "served": w.held_out(args.held_out),
                "promoted": w.promoted(),
                "gate": gate_of(state),
            }
        finally:
            w.close()


def serving_overhead(args: argparse.Namespace) -> dict[str, float]:
    """p50 of one decision: the bare rule, and the LearnedRouter serving a production model, in a graph."""
    with tempfile.TemporaryDirectory() as d:
        w = World(Path(d), seed=1)
        try:
            w.serve(args.requests, seed=1)
            w.maintain(resume_with_oracle=True, annotation="human", annotation_budget=50)
            if w.promoted() is None:
                return {"status": "not_run: no model was promoted to serve"}  # type: ignore[dict-item]
            timings: dict[str, list[float]] = {"rule": [], "router": []}

            def timed(name: str, fn: Any) -> Any:
                # Untyped ``config`` (this module's annotations are strings): LangGraph passes the edge's
                # config to a parameter of that name, as it does to a LearnedRouter used directly.
                def path(state, config=None):  # type: ignore[no-untyped-def]
                    start = time.perf_counter()
                    out = fn(state, config) if name == "router" else fn(state)
                    timings[name].append(time.perf_counter() - start)
                    return out

                return path

            graphs = {
                "rule": desk.build(timed("rule", desk.rule)),
                "router": desk.build(timed("router", w.router)),
            }
            w.handler.flush()
            gc.collect()
            rounds: dict[str, list[float]] = {"rule": [], "router": []}
            for k in range(ROUNDS):
                for q in desk.requests(args.serving // ROUNDS, seed=7 + k):
                    for graph in graphs.values():
                        graph.invoke({"request": q.text}, config={"callbacks": [w.handler]})
                w.handler.flush()
                for name, times in timings.items():
                    rounds[name].append(statistics.median(times) * 1e3)
                    times.clear()
            rule_p50, router_p50 = (statistics.median(rounds[name]) for name in ("rule", "router"))
            by_round = [round(b - a, 4) for a, b in zip(rounds["rule"], rounds["router"], strict=True)]
            return {
                "rule_ms": rule_p50,
                "router_ms": router_p50,
                "overhead_ms": router_p50 - rule_p50,
                "overhead_ms_by_round": by_round,
                "n": args.serving // ROUNDS * ROUNDS,
            }
        finally:
            w.close()


def _labels(state: dict[str, Any]) -> dict[str, Any] | None:
    point = ((state["steps"].get("retrain") or {}).get("points") or {}).get("helpdesk.triage.route") or {}
    data = point.get("data") or {}
    return data.get("labels_by_source")


def _review(state: dict[str, Any]) -> list[str]:
    tests = (state["steps"].get("review_ab_tests") or {}).get("tests") or []
    return [f"{t['recommendation']}: {t.get('reason')}" for t in tests]


def _exploration(state: dict[str, Any]) -> dict[str, Any] | None:
    point = ((state["steps"].get("retrain") or {}).get("points") or {}).get("helpdesk.triage.route") or {}
    return point.get("exploration")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--requests", type=int, default=800)
    parser.add_argument("--held-out", type=int, default=1000)
    parser.add_argument("--serving", type=int, default=3000)
    parser.add_argument("--min-confidence", type=float, default=None)
    args = parser.parse_args(argv)
    if args.min_confidence is not None:
        global MIN_CONFIDENCE
        MIN_CONFIDENCE = args.min_confidence

    rule = rule_accuracy(desk.rule, args.held_out)
    print(f"rule alone on {args.held_out} held-out requests: {rule:.3f}")
    results: dict[str, list[dict[str, Any]]] = {
        "feedback": [],
        "feedback, A/B": [],
        "50 labels": [],
        "exploration": [],
        "rule at 98%": [],
    }
    for seed in args.seeds:
        t = time.perf_counter()
        results["feedback"].append(scenario_one_cycle(seed, args))
        results["feedback, A/B"].append(scenario_feedback_ab(seed, args))
        results["50 labels"].append(
            scenario_one_cycle(seed, args, resume_with_oracle=True, annotation="human", annotation_budget=50)
        )
        results["exploration"].append(scenario_exploration(seed, args))
        results["rule at 98%"].append(scenario_good_rule(seed, args))
        print(f"seed {seed}: {time.perf_counter() - t:.0f} s")
        for name, runs in results.items():
            r = runs[-1]
            print(f"  {name:13s} served {r['served']:.3f}  promoted {r.get('promoted')}  {r.get('gate', '')}")
            if "candidate" in r:
                print(f"  {'':12s} candidate alone {r['candidate']}  labels {r.get('labels')}")
            if "verdict" in r:
                print(
                    f"  {'':12s} test {r['test']}; served during it {r['served_during_test']:.3f}; {r['verdict']}"
                )
            for k, c in enumerate(r.get("cycles", ()), 1):
                print(
                    f"  {'':12s} cycle {k}: served during {c['served_during']:.3f}, held-out {c['held_out']:.3f}, "
                    f"promoted {c['promoted']}, A/B review {c['review']}, {c['gate']}; exploration {c['exploration']}"
                )

    print("\nmedians over seeds", args.seeds)
    med = {name: statistics.median(r["served"] for r in runs) for name, runs in results.items()}
    checks = {
        "feedback >= rule - 2 points": med["feedback"] >= rule - 0.02,
        "50 labels >= rule + 15 points": med["50 labels"] >= rule + 0.15,
        "exploration, 3 cycles >= rule + 15 points": med["exploration"] >= rule + 0.15,
        "rule at 98%: nothing promoted": all(r["promoted"] is None for r in results["rule at 98%"]),
    }
    for name, value in med.items():
        print(f"  {name:12s} held-out accuracy {value:.3f} ({value - rule:+.3f} vs rule {rule:.3f})")
    cand = [r["candidate"] for r in results["feedback"] if r["candidate"] is not None]
    if cand:
        print(f"  feedback candidate alone (promoted or not): {statistics.median(cand):.3f}")
    during = [[c["served_during"] for c in r["cycles"]] for r in results["exploration"]]
    print(
        "  exploration: served accuracy during each cycle's traffic:",
        [statistics.median(x) for x in zip(*during, strict=True)],
    )
    good = results["rule at 98%"]
    print(
        f"  rule at 98%: rule {statistics.median(r['rule'] for r in good):.3f}; gates: {[r['gate'] for r in good]}"
    )

    serving = serving_overhead(args)
    print(f"\nserving, p50 per decision inside the graph: {serving}")
    if "overhead_ms" in serving:
        checks["serving overhead <= 0.3 ms at p50"] = serving["overhead_ms"] <= 0.3
    print()
    for name, ok in checks.items():
        print(f"  {'met' if ok else 'NOT MET'}: {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
