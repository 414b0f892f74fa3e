"""The maintenance graph: one LangGraph run of the continual-learning loop over a store.

::

    START -> begin -> review_ab_tests -> load_window -> validate -> drift_check -> analyze_failures
          -> select -> annotate -> retrain -> evaluate -> (ab_test | promote) -> finish -> END

Each node is a short function of the state to a partial update; the state holds only small, JSON-ready
values (counts, ids, summaries), and every node re-reads what it needs from the store, so a checkpoint is
cheap and a resumed run sees the store as it is. Conditional edges skip what is not due: a window with too
few valid interactions goes straight to ``finish``, and so does a retrain that was skipped or failed, or a
candidate that did not pass the gate.

* ``begin`` takes the store's ``maintenance`` lease (two replicas never run at once) and records the run;
  every later node renews the lease and updates the run's record, so a crash shows where it stopped.
* ``review_ab_tests`` concludes A/B tests started by earlier runs: ``Deploy B`` promotes the candidate.
* ``annotate`` labels the selected interactions: ``human`` pauses the graph with :func:`~langgraph.types.interrupt`
  (resume with ``Command(resume={interaction_id: agent, ...})``), ``llm`` asks a judge chat model,
  ``feedback`` derives labels from ratings, ``none`` skips it.
* ``retrain`` runs :class:`~cl_plugin.retraining.IncrementalRetrainingPipeline` against the registry's
  ``production`` model set; ``evaluate`` applies the gate; ``ab_test`` starts a test of production against
  the candidate, or ``promote`` moves ``production`` when A/B testing is off and ``auto_promote`` is on.

What is learned (``maintenance.points``):

* a list of decision points (``"graph/node/kind"``, see :class:`~cl_plugin.points.PointRef`) or ``"auto"``
  (every point but a ``Send`` fan-out with 2 to 20 options): each point gets its own router, trained on its
  decisions' labels (ratings, annotations, complement labels from bad ratings, inverse-propensity weights;
  see :func:`cl_plugin.labels.routing_labels`), registered under the point's names, gated against its
  incumbent (the point's production router, or before there is one the graph's own policy as recorded; a
  tie does not pass, and a candidate that only ratings say may gain needs an A/B test), A/B tested through
  the decisions a :class:`~cl_plugin.serving.LearnedRouter` serves, and promoted on its own; every step
  reports per point under ``points``;
* unset: the classic model set (``router``, ``rag_index``, ``router-replay``, trained on the interactions'
  routed agents) when the registry holds a production ``router`` or when the window holds no decision point
  to learn (interactions logged with the classic logger), else ``"auto"``.

A run killed anywhere resumes on its thread from the step it was in, and that step's second attempt
leaves the store as one attempt would: it finishes the A/B verdicts the first recorded, keeps the items the
first queued, takes the candidate the first registered, and reuses the A/B test the first started.

:func:`build_maintenance_graph` returns the uncompiled graph: compile it with any checkpointer (a
checkpointer is needed for human annotation and for resuming after a crash; invoke it with
``durability="sync"`` so that every step's checkpoint is written before the next starts).
:func:`run_maintenance` compiles it (with an in-memory checkpointer by default) and runs one cycle that way.
"""

from __future__ import annotations

import functools
import operator
import re
import time
import uuid
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, TypedDict

import orjson
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import HumanMessage, SystemMessage
from langchain_core.runnables import RunnableConfig
from langgraph.graph import END, START, StateGraph
from langgraph.types import Overwrite, interrupt

from cl_plugin.config import ContinualLearningConfig, MaintenanceConfig, load_config
from cl_plugin.errors import ClPluginError
from cl_plugin.points import MAX_OPTIONS, PointRef, declared_options, point_rows
from cl_plugin.serving import point_test_prefix
from cl_plugin.store import Store
from cl_plugin.store.points import ab_outcomes, point_decisions
from cl_plugin.store.runs import (
    abandon_maintenance_run,
    acquire_lease,
    lease_holder,
    maintenance_run,
    maintenance_runs,
    release_lease,
    save_maintenance_run,
)

__all__ = [
    "LEASE",
    "MODEL_NAMES",
    "LeaseLostError",
    "MaintenanceState",
    "build_maintenance_graph",
    "register_starting_models",
    "run_maintenance",
]

#: The store lease that keeps maintenance runs one at a time.
LEASE = "maintenance"
#: Registry names of the model set the loop retrains.
MODEL_NAMES = {"router": "router", "rag_index": "rag_index", "replay": "router-replay"}
AGENTS = ("HRM", "TRM", "MCTS")
#: How an A/B test of a decision point names the graph's own policy, the incumbent before any model.
RECORDED_POLICY = "recorded policy"
_TEST_PREFIX = "maintenance: "
# A decision point's candidate that no held-out label shows better goes to an A/B test (when there is one)
# if, on rated decisions, it may lose at most _BOUND_LOSS and may gain at least _BOUND_GAIN (see retraining's
# bounds); so does one whose held-out gain a sign test does not support.
_BOUND_LOSS = 0.02
_BOUND_GAIN = 0.05
_MIN_DRIFT_ROWS = 30

_JUDGE_PROMPT = (
    "You route user queries to one of three agents. HRM decomposes a problem hierarchically: ordering jobs "
    "with dependencies, and questions that need several facts looked up in turn. TRM refines an estimate "
    "step by step: roots and equations to a number of decimals. MCTS searches a tree of choices: picking "
    "numbers or items to get as close as possible to a limit. Answer with the agent's name only."
)


class LeaseLostError(ClPluginError):
    """Another maintenance run took the lease while this one was paused or slow; this run stops."""


class MaintenanceState(TypedDict, total=False):
    """State of one maintenance run: small, JSON-ready values only.

    ``steps`` maps each node that ran to its report; ``status`` ends as ``completed``, ``skipped`` or
    ``failed`` with ``reason``.
    """

    run_id: str
    thread_id: str
    owner: bool
    window: dict[str, Any]
    steps: Annotated[dict[str, dict[str, Any]], operator.or_]
    selected: list[dict[str, Any]]
    retrain: dict[str, Any]
    gate: dict[str, Any]
    status: str
    reason: str


def build_maintenance_graph(
    store: Store,
    *,
    config: ContinualLearningConfig | Mapping[str, Any] | str | Path | None = None,
    registry: Any = None,
    judge: BaseChatModel | None = None,
    clock: Any = time.time,
    graphs: Sequence[Any] = (),
) -> StateGraph:
    """Build the maintenance graph over a store (uncompiled: compile it with your checkpointer).

    Args:
        store: a set-up :class:`~cl_plugin.store.Store`.
        config: the ``continual_learning`` configuration: a :class:`~cl_plugin.config.ContinualLearningConfig`,
            a dict of sections, or a YAML file's path. Its ``maintenance`` section drives this graph.
        registry: the :class:`~cl_plugin.registry.ModelRegistry` holding the production model set; by default
            one over ``store`` with artifacts under ``maintenance.model_dir``.
        judge: the chat model that labels when ``maintenance.annotation`` is ``llm``.
        clock: the time source (unix seconds).
        graphs: the compiled graphs whose decision points are learned, optional: their conditional edges'
            declared options (path maps, ``Literal`` return annotations) join the options seen in traffic,
            and the docstrings of the nodes they lead to are shown to annotators and the judge.

    Returns:
        The :class:`~langgraph.graph.StateGraph` builder over :class:`MaintenanceState`.

    Raises:
        ConfigError: a bad configuration key.
        ValueError: ``annotation`` is ``llm`` but no judge was given.
    """
    from cl_plugin.registry import ModelRegistry

    cfg = _config(config)
    m = cfg.maintenance
    if m.annotation == "llm" and judge is None:
        raise ValueError("maintenance.annotation is 'llm' but no judge was given: pass judge=<a chat model>")
    registry = registry if registry is not None else ModelRegistry(store, Path(m.model_dir) / "artifacts")
    budget = m.annotation_budget or cfg.active_learning.budget_per_cycle
    declared = _declared(graphs)

    def learning(state: MaintenanceState) -> list[dict[str, Any]] | None:
        """The decision points this run learns, each ``{"point", "name", "options", "docs"}``; None for the
        classic router (see ``maintenance.points``)."""
        if m.points is None and registry.get_alias(MODEL_NAMES["router"], "production") is not None:
            return None
        w = state["window"]
        seen = {p.key: p for p in store.decision_points(start_time=w["start"], end_time=w["end"])}
        if m.points is None or m.points == "auto":
            refs = [
                PointRef(*p.key)
                for p in seen.values()
                if p.kind != "send" and 2 <= len(_options(p, declared)) <= MAX_OPTIONS
            ]
            if not refs and m.points is None:  # interactions logged without decisions (the classic logger)
                return None
        else:
            refs = [PointRef.parse(spec) for spec in m.points]
        out = []
        for ref in refs:
            entry = declared.get(ref.key) or declared.get((None, ref.node, ref.kind)) or {}
            options = _options(seen.get(ref.key), declared, ref)
            out.append(
                {"point": str(ref), "name": ref.model_name, "options": options, "docs": entry.get("docs", {})}
            )
        return out

    def hold(state: MaintenanceState) -> None:
        run = maintenance_run(store, state["run_id"]) or {}
        if run.get("status", "running") != "running":  # before taking the lease, which may be free again
            raise LeaseLostError(
                f"maintenance run {state['run_id']} lost the {LEASE!r} lease ({run.get('error')}); "
                "start a new run"
            )
        if not acquire_lease(store, LEASE, state["run_id"], m.lease_ttl_seconds, now=clock()):
            raise LeaseLostError(
                f"maintenance run {state['run_id']} lost the {LEASE!r} lease; start a new run"
            )

    started: dict[str, float] = {}

    def record(state: MaintenanceState, name: str, report: dict[str, Any]) -> dict[str, Any]:
        if name in started:
            report = {**report, "seconds": round(time.perf_counter() - started[name], 3)}
        steps = {**state.get("steps", {}), name: report}
        save_maintenance_run(
            store, {"run_id": state["run_id"], "thread_id": state["thread_id"], "steps": steps}
        )
        return {"steps": {name: report}}

    def earlier(state: MaintenanceState, name: str) -> dict[str, Any] | None:
        """The report that an interrupted attempt of this node saved to the run's record (the process died
        before the step's checkpoint was written, so the step runs again), or None."""
        run = maintenance_run(store, state["run_id"]) or {}
        return (run.get("steps") or {}).get(name)

    def rows(state: MaintenanceState) -> list[dict[str, Any]]:
        w = state["window"]
        return store.query_interactions(
            start_time=w["start"], end_time=w["end"], limit=m.max_interactions, with_embeddings=True
        )

    # -- nodes ----------------------------------------------------------------------------------------

    def begin(state: MaintenanceState, config: RunnableConfig) -> dict[str, Any]:
        run_id = state.get("run_id") or str(uuid.uuid4())
        thread_id = str(config.get("configurable", {}).get("thread_id", run_id))
        now = clock()
        previous = lease_holder(store, LEASE, now=now, expired=True)
        if not acquire_lease(store, LEASE, run_id, m.lease_ttl_seconds, now=now):
            return {
                "run_id": run_id,
                "owner": False,
                "status": "skipped",
                "reason": "another run holds the lease",
            }
        if previous is not None and previous["owner"] != run_id:  # it died or stalled past its lease
            abandon_maintenance_run(
                store, previous["owner"], f"its lease expired and maintenance run {run_id} took it over"
            )
        save_maintenance_run(store, {"run_id": run_id, "thread_id": thread_id, "status": "running"})
        # a thread that ran a cycle before keeps its state: start this one clean
        return {
            "run_id": run_id,
            "thread_id": thread_id,
            "owner": True,
            "steps": Overwrite({}),
            "status": "",
            "reason": "",
            "selected": [],
        }

    def review_ab_tests(state: MaintenanceState) -> dict[str, Any]:
        hold(state)
        from cl_plugin.abtest import ABTestFramework

        framework = ABTestFramework(cfg.ab_testing, store=store)
        # The verdicts are recorded before they are acted on, and acting on one twice changes nothing: an
        # attempt interrupted part-way is finished by the next as it was decided (tests it ended are no
        # longer running, so deciding again would forget them and any promotion still to do).
        planned = earlier(state, "review_ab_tests")
        if planned is None:
            reviewed = []
            for test in store.ab_tests(status="running"):
                if not test["name"].startswith(_TEST_PREFIX):
                    continue
                names = _point_names(test["name"])
                if (
                    names is not None
                ):  # a decision point's test: its results are the served decisions' outcomes
                    outcomes = ab_outcomes(
                        store, test["test_id"], low_rating_threshold=cfg.failure_analysis.low_rating_threshold
                    )
                    framework.sync_results(test["test_id"], {g: _summary(v) for g, v in outcomes.items()})
                status = framework.get_test_status(test["test_id"])
                decision = status["recommendation"]
                entry = {
                    "test_id": test["test_id"],
                    "recommendation": decision,
                    "reason": status.get("reason"),
                }
                if decision == "Deploy B":
                    entry["promoted"] = _versions_of(test["model_b"])
                    if names is not None:
                        entry["names"] = names
                reviewed.append(entry)
            update = record(state, "review_ab_tests", {"tests": reviewed})
        else:
            reviewed, update = planned["tests"], {"steps": {"review_ab_tests": planned}}
        for entry in reviewed:
            if "promoted" in entry:  # before the test ends, so that no ended test waits for its promotion
                _promote(
                    registry, entry["promoted"], f"A/B test {entry['test_id']}", names=entry.get("names")
                )
            if entry["recommendation"] != "Continue":
                framework.end_test(entry["test_id"])
        framework.close()
        return update

    def load_window(state: MaintenanceState) -> dict[str, Any]:
        hold(state)
        end = clock()
        start = end - m.window_hours * 3600.0
        done = [r for r in maintenance_runs(store, limit=50) if r["status"] == "completed" and r["summary"]]
        if done and done[0]["summary"].get("window"):
            start = max(start, done[0]["summary"]["window"]["end"])
        window = {
            "start": start,
            "end": end,
            "count": store.count_interactions(start_time=start, end_time=end),
        }
        return {"window": window, **record(state, "load_window", dict(window))}

    def validate(state: MaintenanceState) -> dict[str, Any]:
        hold(state)
        from cl_plugin.privacy import DataQualityValidator

        validator = DataQualityValidator(cfg)
        issues: Counter[str] = Counter()
        valid = 0
        for row in rows(state):
            ok, problems = validator.validate_interaction(row)
            valid += ok
            issues.update({p.split(":", 1)[0] for p in problems})
        report = {"valid": valid, "invalid": state["window"]["count"] - valid, "issues": dict(issues)}
        update = record(state, "validate", report)
        if valid < m.min_interactions:
            reason = f"{valid} valid interactions in the window; maintenance.min_interactions is {m.min_interactions}"
            return {**update, "status": "skipped", "reason": reason}
        return update

    def drift_check(state: MaintenanceState) -> dict[str, Any]:
        hold(state)
        return record(state, "drift_check", _drift(store, cfg, state["window"], rows(state), state["run_id"]))

    def analyze_failures(state: MaintenanceState) -> dict[str, Any]:
        hold(state)
        from cl_plugin.analysis import FailurePatternAnalyzer
        from cl_plugin.metrics import node_metrics

        w = state["window"]
        # Node runs of the capture sample tie errors to the nodes that raised them (see cl_plugin.sampling).
        nodes = node_metrics(store, start_time=w["start"], end_time=w["end"])
        analysis = FailurePatternAnalyzer(cfg.failure_analysis).analyze(rows(state), nodes=nodes)
        patterns = analysis.patterns
        summary = [
            {
                "type": p.pattern_type,
                "count": p.frequency,
                "severity": p.severity,
                "fix": p.suggested_fix,
                "diagnostic": (p.details.get("diagnostic") or {}).get("verdict"),
            }
            for p in patterns[:20]
        ]
        outcome = analysis.outcome
        report = {
            "patterns": len(patterns),
            "top": summary,
            "failures": analysis.counts.get("failures", 0),
            "interactions": analysis.counts.get("interactions", 0),
            "failure_rate": outcome.rate,
            "failure_rate_basis": outcome.describe(),
            "diagnostics": {d.signal: d.verdict for d in analysis.diagnostics},
        }
        return record(state, "analyze_failures", report)

    def select(state: MaintenanceState) -> dict[str, Any]:
        hold(state)
        from cl_plugin.selection import ActiveLearningSelector

        started = (maintenance_run(store, state["run_id"]) or {}).get("started_at")

        def queued_by_this_run() -> list[dict[str, Any]]:
            return [i for i in store.annotation_queue() if started is not None and i["created_at"] >= started]

        # What an interrupted attempt queued is this run's selection: selecting again would pass those
        # items over as queued already and queue as many others.
        if not queued_by_this_run():
            selector = ActiveLearningSelector(cfg.active_learning, router=_production_router(registry))
            picks = selector.select_for_annotation(
                rows(state), budget=budget, exclude_ids=store.queued_interaction_ids()
            )
            store.enqueue_for_annotation(picks)
        points = learning(state)
        decided: list[tuple[dict[str, Any], dict[str, Any]]] = []
        for point in points or ():
            ref = PointRef.parse(point["point"])
            w = state["window"]
            decided.append(
                (point, point_decisions(store, *ref.key, start_time=w["start"], end_time=w["end"]))
            )
        selected = []
        for item in queued_by_this_run():
            row = store.get_interaction(item["interaction_id"]) or {}
            entry = {
                "item_id": item["item_id"],
                "interaction_id": item["interaction_id"],
                "query": row.get("user_query"),
                "agent_selected": row.get("agent_selected"),
                "reason": item["selection_reason"],
            }
            # An interaction is labeled among the options of the first learned point it decided at (as
            # `cl-plugin annotate` offers them); a label naming an option of a later one counts for that one.
            made = sorted(
                (decisions[item["interaction_id"]]["timestamp"], k)
                for k, (_, decisions) in enumerate(decided)
                if item["interaction_id"] in decisions
            )
            for n, (_, k) in enumerate(made):
                point, decisions = decided[k]
                if n == 0:
                    entry["point"] = point["name"]
                    entry["chosen"] = decisions[item["interaction_id"]]["chosen"]
                    entry["options"] = point["options"]
                    entry["docs"] = point["docs"]
                    entry["other_points"] = []
                else:
                    entry["other_points"].append({"point": point["name"], "options": point["options"]})
            selected.append(entry)
        return {"selected": selected, **record(state, "select", {"selected": len(selected)})}

    def annotate(state: MaintenanceState) -> dict[str, Any]:
        items = state.get("selected", [])
        if m.annotation == "none" or not items:
            return record(state, "annotate", {"mode": m.annotation, "labeled": 0, "skipped": len(items)})
        agents = _classic_agents(registry, items)
        if m.annotation == "human":
            answer = interrupt(
                {
                    "kind": "annotation",
                    "agents": agents,
                    "items": items,
                    "resume_with": "{interaction_id: option} for the items you labeled, each among its "
                    "options (the agents for an item without); leave out the others",
                }
            )
            labels = _human_labels(answer)
        elif m.annotation == "llm":
            labels = _judge_labels(judge, items, agents)
        else:
            labels = _feedback_labels(store, items)
        hold(state)
        annotator = {"human": "human", "llm": "llm-judge", "feedback": "feedback"}[m.annotation]
        labeled = 0
        for item in items:
            choice = labels.get(item["interaction_id"])
            if "point" in item:
                points = [{"point": item["point"], "options": item["options"]}, *item.get("other_points", ())]
                at = next((p["point"] for p in points if choice in p["options"]), None)
                label = {"option": choice, "point": at} if at is not None else None
            else:
                label = {"agent": choice} if choice in agents else None
            if label is not None:
                store.update_annotation(item["item_id"], status="labeled", label=label, annotator=annotator)
                labeled += 1
        return record(
            state, "annotate", {"mode": m.annotation, "labeled": labeled, "skipped": len(items) - labeled}
        )

    def retrain_points(state: MaintenanceState, points: list[dict[str, Any]]) -> dict[str, Any]:
        from cl_plugin.retraining import IncrementalRetrainingPipeline

        started = (maintenance_run(store, state["run_id"]) or {}).get("started_at")
        done = (earlier(state, "retrain") or {}).get("points") or {}
        window_rows = rows(state)
        labeled = store.annotation_queue("labeled")
        results: dict[str, dict[str, Any]] = {}
        for point in points:
            name, ref = point["name"], PointRef.parse(point["point"])
            names = ref.model_names()
            output = Path(m.model_dir) / "candidates" / state["run_id"] / name
            # An interrupted attempt's candidate of this point is this run's: training again would register another.
            summary = done.get(name) or _registered_candidate(registry, output, started, names)
            if summary is None and len(point["options"]) < 2:
                summary = {"status": "skipped", "reason": f"options {point['options']}: nothing to choose"}
            if summary is None:
                point_data = point_rows(store, ref, window_rows)
                ids = {r["interaction_id"] for r in point_data}
                annotations = [
                    a
                    for a in labeled
                    if a["interaction_id"] in ids
                    and isinstance(a.get("label"), Mapping)
                    and a["label"].get("point", name) == name
                ]
                pipeline = IncrementalRetrainingPipeline(
                    cfg.retraining,
                    registry=registry,
                    enable_ab_test=False,
                    router_name=names["router"],
                    agents=point["options"],
                    retrieval=False,
                    complement=True,
                    max_ips_weight=m.max_ips_weight,
                    incumbent="recorded",
                )
                result = pipeline.retrain_sync(
                    [*point_data, *annotations], Path(m.model_dir) / "points" / name / "production", output
                )
                summary = {
                    **_retrain_summary(result),
                    "interactions": len(point_data),
                    "exploration": _exploration(point_data),
                }
            results[name] = {"point": point["point"], **summary}
        trained = [n for n, r in results.items() if r["status"] == "completed"]
        overall: dict[str, Any] = {
            "status": "completed" if trained else "skipped",
            "reason": None
            if trained
            else "; ".join(f"{n}: {r.get('reason')}" for n, r in results.items())
            or "no decision point with two or more options in the window",
            "points": results,
        }
        update = {"retrain": overall, **record(state, "retrain", overall)}
        if not trained:
            return {**update, "status": "skipped", "reason": f"retraining skipped: {overall['reason']}"}
        return update

    def retrain(state: MaintenanceState) -> dict[str, Any]:
        hold(state)
        from cl_plugin.retraining import IncrementalRetrainingPipeline

        points = learning(state)
        if points is not None:
            return retrain_points(state, points)
        output = Path(m.model_dir) / "candidates" / state["run_id"]
        # An interrupted attempt's candidate is this run's candidate: training again would register another.
        started = (maintenance_run(store, state["run_id"]) or {}).get("started_at")
        summary = earlier(state, "retrain") or _registered_candidate(registry, output, started)
        if summary is None:
            pipeline = IncrementalRetrainingPipeline(cfg.retraining, registry=registry, enable_ab_test=False)
            data = [*rows(state), *store.annotation_queue("labeled")]
            result = pipeline.retrain_sync(data, Path(m.model_dir) / "production", output)
            summary = _retrain_summary(result)
        update = {"retrain": summary, **record(state, "retrain", summary)}
        if summary["status"] != "completed":
            return {
                **update,
                "status": summary["status"],
                "reason": f"retraining {summary['status']}: {summary['reason']}",
            }
        return update

    def evaluate(state: MaintenanceState) -> dict[str, Any]:
        hold(state)
        if "points" in state["retrain"]:
            gates = {
                name: _gate(r["metrics"], m, strict=True, ab_test=cfg.retraining.enable_ab_test)
                for name, r in state["retrain"]["points"].items()
                if r["status"] == "completed"
            }
            passed = [name for name, g in gates.items() if g["passed"]]
            reason = "; ".join(f"{name}: {g['reason']}" for name, g in gates.items())
            gate = {"passed": bool(passed), "reason": reason, "points": gates}
        else:
            gate = _gate(state["retrain"]["metrics"], m)
        update = {"gate": gate, **record(state, "evaluate", gate)}
        if not gate["passed"]:
            return {
                **update,
                "status": "completed",
                "reason": f"the candidate did not pass the gate: {gate['reason']}",
            }
        return update

    def ab_test_points(state: MaintenanceState) -> dict[str, Any]:
        from cl_plugin.abtest import ABTestFramework

        framework = ABTestFramework(cfg.ab_testing, store=store)
        running = store.ab_tests(status="running")
        report: dict[str, Any] = {}
        for name, gate in state["gate"]["points"].items():
            if not gate["passed"]:
                continue
            trained = state["retrain"]["points"][name]
            ref = PointRef.parse(trained["point"])
            prefix = point_test_prefix(ref)
            candidate = _describe(trained["versions"])
            # a test of this candidate is the one an interrupted attempt of this step started
            other = [
                t["test_id"] for t in running if t["name"].startswith(prefix) and t["model_b"] != candidate
            ]
            if (
                other
            ):  # one experiment per point at a time: the candidate waits for the running test's verdict
                report[name] = {"status": "skipped", "reason": f"test {other[0]} is still running"}
                continue
            incumbent = _describe(trained["production"]) if trained.get("production") else RECORDED_POLICY
            test_id = framework.create_test(
                f"{prefix}{incumbent} vs {candidate}", model_a=incumbent, model_b=candidate
            )
            report[name] = {"test_id": test_id, "model_a": incumbent, "model_b": candidate}
        framework.close()
        return record(state, "ab_test", {"points": report})

    def ab_test(state: MaintenanceState) -> dict[str, Any]:
        hold(state)
        from cl_plugin.abtest import ABTestFramework

        if "points" in state["retrain"]:
            return ab_test_points(state)

        candidate, production = state["retrain"]["versions"], state["retrain"]["production"]
        running = [  # a test of this candidate is the one an interrupted attempt of this step started
            t["test_id"]
            for t in store.ab_tests(status="running")
            if t["name"].startswith(_TEST_PREFIX) and t["model_b"] != _describe(candidate)
        ]
        if running:  # one experiment at a time: the candidate waits for the running test's verdict
            return record(
                state, "ab_test", {"status": "skipped", "reason": f"test {running[0]} is still running"}
            )
        framework = ABTestFramework(cfg.ab_testing, store=store)
        test_id = framework.create_test(  # the running test of that name, if there is one
            f"{_TEST_PREFIX}router v{production['router']} vs v{candidate['router']}",
            model_a=_describe(production),
            model_b=_describe(candidate),
        )
        framework.close()
        return record(state, "ab_test", {"test_id": test_id, "model_a": production, "model_b": candidate})

    def promote(state: MaintenanceState) -> dict[str, Any]:
        hold(state)
        if "points" in state["retrain"]:
            promoted_points = {}
            for name, gate in state["gate"]["points"].items():
                if gate.get("needs_ab_test"):
                    promoted_points[name] = {"not_promoted": "only an A/B test can show it is better"}
                elif gate["passed"]:
                    trained = state["retrain"]["points"][name]
                    promoted_points[name] = _promote(
                        registry,
                        trained["versions"],
                        f"maintenance run {state['run_id']}: gate passed",
                        names=PointRef.parse(trained["point"]).model_names(),
                    )
            return record(state, "promote", {"points": promoted_points})
        promoted = _promote(
            registry, state["retrain"]["versions"], f"maintenance run {state['run_id']}: gate passed"
        )
        return record(state, "promote", {"promoted": promoted})

    def finish(state: MaintenanceState) -> dict[str, Any]:
        status = state.get("status") or "completed"
        summary = {
            "window": state.get("window"),
            "gate": state.get("gate"),
            "candidate": _candidates(state.get("retrain") or {}),
        }
        if not state.get("owner"):
            return {"status": status}
        report_file = None
        if m.report_path:
            from cl_plugin.report import build_report

            report_file = str(build_report(store, m.report_path))
        run = {
            "run_id": state["run_id"],
            "thread_id": state["thread_id"],
            "status": status,
            "finished_at": clock(),
            "summary": {**summary, "reason": state.get("reason"), "report": report_file},
        }
        save_maintenance_run(store, run)
        release_lease(store, LEASE, state["run_id"])
        return {"status": status}

    # -- edges ----------------------------------------------------------------------------------------

    def stop_or(next_node: str) -> Any:
        return lambda state: "finish" if state.get("status") else next_node

    def after_evaluate(state: MaintenanceState) -> str:
        if state.get("status"):
            return "finish"
        # A decision point's first candidate is tested against the graph's own policy as recorded.
        production = "points" in state["retrain"] or state["retrain"].get("production")
        if cfg.retraining.enable_ab_test and production:
            return "ab_test"
        return "promote" if m.auto_promote else "finish"

    builder = StateGraph(MaintenanceState)
    for node in (
        begin,
        review_ab_tests,
        load_window,
        validate,
        drift_check,
        analyze_failures,
        select,
        annotate,
        retrain,
        evaluate,
        ab_test,
        promote,
        finish,
    ):
        builder.add_node(node.__name__, _timed(node, started))
    builder.add_edge(START, "begin")
    builder.add_conditional_edges("begin", stop_or("review_ab_tests"), ["review_ab_tests", "finish"])
    builder.add_edge("review_ab_tests", "load_window")
    builder.add_edge("load_window", "validate")
    builder.add_conditional_edges("validate", stop_or("drift_check"), ["drift_check", "finish"])
    builder.add_edge("drift_check", "analyze_failures")
    builder.add_edge("analyze_failures", "select")
    builder.add_edge("select", "annotate")
    builder.add_edge("annotate", "retrain")
    builder.add_conditional_edges("retrain", stop_or("evaluate"), ["evaluate", "finish"])
    builder.add_conditional_edges("evaluate", after_evaluate, ["ab_test", "promote", "finish"])
    builder.add_edge("ab_test", "finish")
    builder.add_edge("promote", "finish")
    builder.add_edge("finish", END)
    return builder


def run_maintenance(
    store: Store,
    *,
    config: ContinualLearningConfig | Mapping[str, Any] | str | Path | None = None,
    checkpointer: Any = None,
    thread_id: str | None = None,
    resume: Any = None,
    callbacks: list[Any] | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    """Run (or resume) one maintenance cycle and return its final state.

    Args:
        store: the store.
        config: as for :func:`build_maintenance_graph`.
        checkpointer: any LangGraph checkpointer; an in-memory one by default.
        thread_id: the run's thread; a new one by default. With the id of a run that stopped part-way (a
            crash), the run continues from its last checkpoint; with the id of a finished run, a new cycle
            starts on that thread.
        resume: the value to resume a run paused for labels with (``{interaction_id: agent}``).
        callbacks: LangChain callbacks for the run (e.g. a sanitizing LangSmith tracer).
        **kwargs: passed to :func:`build_maintenance_graph` (``registry``, ``judge``, ``clock``).

    Returns:
        The final state; while paused for labels, it holds ``__interrupt__`` with the items to label.
    """
    from langgraph.checkpoint.memory import InMemorySaver
    from langgraph.types import Command

    graph = build_maintenance_graph(store, config=config, **kwargs).compile(
        checkpointer=checkpointer or InMemorySaver()
    )
    thread_id = thread_id or str(uuid.uuid4())
    run_config = {
        "configurable": {"thread_id": thread_id},
        "callbacks": callbacks or [],
        "run_name": "maintenance",
    }
    previous = graph.get_state(run_config)
    if resume is not None:
        payload: Any = Command(resume=resume)
    elif previous.next:
        payload = None  # the thread stopped part-way (a crash): continue from its last checkpoint
    else:  # a new cycle: named after the thread the first time, fresh on a thread that ran before
        payload = {"run_id": str(uuid.uuid4()) if previous.values else thread_id}
    # "sync": each step's checkpoint is on disk before the next step starts, so a run killed at any point
    # resumes from the step it was in (the default writes checkpoints in the background)
    state = graph.invoke(payload, config=run_config, durability="sync")
    return {"thread_id": thread_id, **state}


# -- helpers --------------------------------------------------------------------------------------------


def _timed(node: Any, started: dict[str, float]) -> Any:
    """The node, noting when it starts so that its step report can say how long it took."""

    @functools.wraps(node)
    def run(*args: Any, **kwargs: Any) -> Any:
        started[node.__name__] = time.perf_counter()
        return node(*args, **kwargs)

    return run


def _config(
    config: ContinualLearningConfig | Mapping[str, Any] | str | Path | None,
) -> ContinualLearningConfig:
    if isinstance(config, ContinualLearningConfig):
        return config
    if isinstance(config, str | Path):
        return load_config(config)
    return ContinualLearningConfig.model_validate(dict(config or {}))


def register_starting_models(registry: Any, *, actor: str | None = None) -> dict[str, int]:
    """Register the example graph's starting model set (:func:`graphs.mcts_agents.starting_model_set`) and
    put it in production, unless the registry has a production router already.

    Returns:
        The production version of each role (router, rag_index, replay) that was registered; empty when a
        production router existed.
    """
    from graphs.mcts_agents import starting_model_set

    if registry.get_alias(MODEL_NAMES["router"], "production") is not None:
        return {}
    versions = starting_model_set().register(registry, names=MODEL_NAMES, alias=None)
    return _promote(registry, versions, "starting model", actor=actor)


def _production_router(registry: Any) -> Any:
    """The production router, or None when the registry has none yet (selection then uses confidences)."""
    if registry.get_alias(MODEL_NAMES["router"], "production") is None:
        return None
    return registry.load(MODEL_NAMES["router"], alias="production")


def _promote(
    registry: Any,
    versions: Mapping[str, int],
    reason: str,
    *,
    actor: str | None = "maintenance",
    names: Mapping[str, str] | None = None,
) -> dict[str, int]:
    names = names or MODEL_NAMES
    promoted = {}
    for role, version in versions.items():
        registry.promote(names[role], version, reason=reason, actor=actor)
        promoted[role] = version
    return promoted


def _retrain_summary(result: Mapping[str, Any]) -> dict[str, Any]:
    """What the run keeps of a retraining pipeline's result."""
    return {
        "status": result["status"],
        "reason": result.get("reason") or result.get("error"),
        "steps": {k: v.get("status") for k, v in result["steps"].items()},
        "data": result["steps"].get("data_preparation"),
        "metrics": result["metrics"],
        "versions": (result["candidate"] or {}).get("versions"),
        "production": result["steps"].get("load_production", {}).get("versions"),
        "duration_s": result["duration_s"],
    }


def _candidates(retrain: Mapping[str, Any]) -> Any:
    if "points" in retrain:
        return {name: r.get("versions") for name, r in retrain["points"].items() if r.get("versions")}
    return retrain.get("versions")


def _declared(graphs: Sequence[Any]) -> dict[tuple[str | None, str | None, str], dict[str, Any]]:
    """Declared options of the given graphs' conditional edges, by point; also by ``(None, node, kind)``."""
    found: dict[tuple[str | None, str | None, str], dict[str, Any]] = {}
    for graph in graphs:
        name = getattr(graph, "name", None)
        for (node, kind), entry in declared_options(graph).items():
            found[(name, node, kind)] = entry
            found.setdefault((None, node, kind), entry)
    return found


def _options(point: Any, declared: Mapping[tuple, dict[str, Any]], ref: PointRef | None = None) -> list[str]:
    """A point's options: those seen in traffic (chosen or named as alternatives), then the declared ones."""
    key = ref.key if ref is not None else point.key
    seen = list(point.all_options) if point is not None else []
    entry = declared.get(key) or declared.get((None, key[1], key[2])) or {}
    return list(dict.fromkeys([*seen, *entry.get("options", ())]))


def _exploration(point_data: list[dict[str, Any]]) -> dict[str, Any]:
    """What exploring cost: the good-rating rate of explored decisions against the others, of those rated
    good or bad (as the labels read a rating, :func:`~cl_plugin.records.rating_outcome`)."""
    from cl_plugin.records import rating_outcome

    explored = [r for r in point_data if r["point_decision"].get("explored")]
    if not explored:
        return {"explored": 0}

    def good_rate(group: list[dict[str, Any]]) -> float | None:
        outcomes = [
            rating_outcome(r.get("user_feedback_score"), r.get("thumbs_up_down"), r.get("corrections"))
            for r in group
        ]
        rated = [o for o in outcomes if o is not None]
        return round(rated.count("good") / len(rated), 4) if rated else None

    served = [r for r in point_data if r["point_decision"].get("served_by")]
    return {
        "explored": len(explored),
        "served": len(served),
        "rate": round(len(explored) / len(served), 4) if served else None,
        "good_rate_explored": good_rate(explored),
        "good_rate_not_explored": good_rate([r for r in served if not r["point_decision"].get("explored")]),
    }


def _point_names(test_name: str) -> dict[str, str] | None:
    """The registry names of the point a maintenance A/B test is about (None for the classic router's)."""
    match = re.match(rf"{re.escape(_TEST_PREFIX)}point ([A-Za-z0-9_.-]+): ", test_name)
    if match is None:
        return None
    return {"router": match.group(1), "replay": f"{match.group(1)}-replay"}


def _summary(outcomes: list[float]) -> Any:
    from cl_plugin.abtest.stats import GroupStats

    stats = GroupStats()
    for x in outcomes:
        stats.add(x)
    return stats


def _classic_agents(registry: Any, items: list[dict[str, Any]]) -> list[str]:
    """The agents a classic routing label may name: the production router's classes, else the example's."""
    if registry.get_alias(MODEL_NAMES["router"], "production") is not None:
        return [str(c) for c in registry.load(MODEL_NAMES["router"], alias="production").classes_]
    return list(AGENTS)


def _registered_candidate(
    registry: Any, directory: Path, since: float | None, names: Mapping[str, str] | None = None
) -> dict[str, Any] | None:
    """The retrain report of the candidate that an interrupted attempt of a run's retrain step wrote to
    ``directory`` and registered, or None when that attempt did not register it.

    The directory is written before the registration, and the router is registered after the index and
    replay versions it belongs with: a router version registered since the run started (``since``) from
    the directory's training data window marks a whole registered set. Its ``candidate`` aliases are set
    again (a no-op unless the attempt stopped just before setting them). The report says ``recovered``:
    the data preparation's report and the training steps' statuses died with the attempt.
    """
    from cl_plugin.modelset import MANIFEST

    try:
        manifest = orjson.loads((directory / MANIFEST).read_bytes())
    except FileNotFoundError:
        return None
    window = manifest.get("data_window")
    names = names or MODEL_NAMES
    router = next(
        (
            v
            for v in reversed(registry.versions(names["router"]))
            if since is not None
            and v.created_at >= since
            and window is not None
            and v.data_window is not None
            and vars(v.data_window) == window
        ),
        None,
    )
    if router is None:
        return None
    versions = {"router": router.version, **(router.metrics.get("model_set") or {})}
    production = {}
    for role, version in versions.items():
        registered = registry.get_version(names[role], version)
        if registered.parent is not None:
            production[role] = registered.parent
        registry.set_alias(
            names[role],
            "candidate",
            version,
            reason="retrained by a maintenance run that was interrupted",
            actor="maintenance",
        )
    return {
        "status": "completed",
        "reason": None,
        "recovered": f"the candidate in {directory.name}, registered before the run was interrupted",
        "steps": None,
        "data": window,
        "metrics": manifest.get("metrics") or {},
        "versions": versions,
        "production": production or None,
        "duration_s": None,
    }


def _describe(versions: Mapping[str, int]) -> str:
    return ", ".join(f"{role} v{version}" for role, version in sorted(versions.items()))


def _versions_of(description: str) -> dict[str, int]:
    return {role: int(v) for role, v in re.findall(r"([a-z_]+) v(\d+)", description)}


def _gate(
    metrics: Mapping[str, Any], m: MaintenanceConfig, *, strict: bool = False, ab_test: bool = False
) -> dict[str, Any]:
    """Whether the candidate may replace production: enough held-out labels, accuracy gained, calibration
    not worse by more than allowed. ``strict`` (decision points) also refuses a tie, and a gain that a sign
    test over the held-out labels where the two disagree does not support (``max_gain_p_value``): a
    candidate not shown better than the incumbent has not earned a promotion."""
    candidate, production = metrics.get("candidate"), metrics.get("production")
    n = metrics.get("validation_samples", 0)
    if candidate is None:
        return {"passed": False, "reason": "no candidate metrics"}
    if n < m.min_validation_samples:
        return {
            "passed": False,
            "reason": f"{n} held-out labels; maintenance.min_validation_samples is {m.min_validation_samples}",
        }
    if production is None:
        return {"passed": True, "reason": "no production model to compare with", "validation_samples": n}
    gain = candidate["accuracy"] - production["accuracy"]
    # The graph's own policy gives no probabilities: there is no calibration to compare with.
    ece_change = None if production.get("ece") is None else candidate["ece"] - production["ece"]
    failed = []
    bounds = metrics.get("bounds") if strict else None
    paired = metrics.get("paired") if strict else None
    unproven = None  # why only an online test could show the candidate better
    if gain < m.min_accuracy_gain:
        failed.append(f"accuracy gain {gain:+.3f} is below {m.min_accuracy_gain:+.3f}")
    elif strict and gain > 0 and paired is not None and paired["p_value"] > m.max_gain_p_value:
        unproven = (
            f"accuracy gain {gain:+.3f} rests on {paired['wins']} held-out labels won against "
            f"{paired['losses']} lost, not significant (p={paired['p_value']:.3f} > {m.max_gain_p_value})"
        )
    elif strict and gain <= 0:
        if (
            bounds is not None
            and bounds["lower"] >= bounds["incumbent"] - _BOUND_LOSS
            and bounds["upper"] >= bounds["incumbent"] + _BOUND_GAIN
        ):
            # Ratings alone cannot show which changed decision is now right: an online test must.
            unproven = (
                f"no held-out label shows a gain, but on rated decisions it keeps {bounds['kept_good']:.0%} of "
                f"those rated good and changes {bounds['changed_bad'] or 0:.0%} of those rated bad: between "
                f"{bounds['lower'] - bounds['incumbent']:+.3f} and {bounds['upper'] - bounds['incumbent']:+.3f}"
            )
        else:
            failed.append(f"accuracy gain {gain:+.3f}: no better than the incumbent")
    if unproven is not None and not ab_test:
        failed.append(
            f"{unproven}; only an A/B test could show it better, and retraining.enable_ab_test is off"
        )
    needs_ab = unproven is not None and ab_test
    if ece_change is not None and ece_change > m.max_ece_increase:
        failed.append(f"calibration error rose by {ece_change:.3f}, more than {m.max_ece_increase:.3f}")
    against = "the graph's recorded policy" if production.get("policy") == "recorded" else "production"
    reason = "; ".join(failed) or (
        f"accuracy {gain:+.3f} against {against}"
        + ("" if ece_change is None else f", calibration error {ece_change:+.3f}")
    )
    if needs_ab and not failed:
        reason = f"{unproven}, against {against}: an A/B test decides"
    return {
        "passed": not failed,
        "reason": reason,
        "accuracy_gain": gain,
        "ece_change": ece_change,
        "validation_samples": n,
        **({"needs_ab_test": True} if needs_ab and not failed else {}),
        **({"bounds": bounds} if bounds else {}),
        **({"paired": paired} if paired else {}),
    }


def _drift(
    store: Store, cfg: ContinualLearningConfig, window: Mapping[str, Any], current: list[dict], run_id: str
) -> dict[str, Any]:
    """Compare the window with the one before it (or, without one, its older half with its newer half) on
    latency, router confidence, retrieval quality (of the interactions that retrieved, when each side has
    enough of them), query length and the agent mix."""
    from cl_plugin.drift import compare_columns

    span = window["end"] - window["start"]
    reference = store.query_interactions(
        start_time=window["start"] - span, end_time=window["start"], limit=max(len(current), 1)
    )
    against = "previous window"
    if len(reference) < _MIN_DRIFT_ROWS:
        ordered = sorted(current, key=lambda r: r["timestamp"])
        reference, current = ordered[: len(ordered) // 2], ordered[len(ordered) // 2 :]
        against = "older half of the window"
    if len(reference) < _MIN_DRIFT_ROWS or len(current) < _MIN_DRIFT_ROWS:
        return {"status": "not_run", "reason": f"fewer than {_MIN_DRIFT_ROWS} interactions to compare"}

    def columns(rows: list[dict]) -> dict[str, list[Any]]:
        def number(row: dict, key: str) -> float:
            return float(row[key]) if row[key] is not None else 0.0

        return {
            "latency_ms": [number(r, "latency_ms") for r in rows],
            "agent_confidence": [number(r, "agent_confidence") for r in rows],
            # the quality of the retrievals that ran: a query that needed none is not a retrieval scoring 0
            "retrieval_quality": [
                float(r["retrieval_quality"]) for r in rows if r["retrieval_quality"] is not None
            ],
            "query_length": [float(len(r["user_query"] or "")) for r in rows],
            "agent_selected": [r["agent_selected"] or "none" for r in rows],
        }

    before, after = columns(reference), columns(current)
    if min(len(before["retrieval_quality"]), len(after["retrieval_quality"])) < _MIN_DRIFT_ROWS:
        del before["retrieval_quality"], after["retrieval_quality"]  # too few retrievals to compare
    result = compare_columns(before, after, threshold=cfg.drift_detection.threshold)
    if result.drifted:
        drifted = [c for c in result.columns if c.drifted]
        worst = max(drifted, key=lambda c: c.statistic / c.threshold)
        store.add_drift_event(
            {
                "event_id": f"maintenance:{run_id}",
                "detector": "maintenance",
                "method": worst.method,
                "severity": "high" if len(drifted) > len(result.columns) / 2 else "medium",
                "statistic": worst.statistic,
                "p_value": worst.adjusted_p_value,
                "threshold": worst.threshold,
                "features": orjson.dumps(result.drifted_features).decode(),
                "details": orjson.dumps({c.feature: c.statistic for c in result.columns}).decode(),
                "window_size": len(current),
                "samples_seen": len(reference) + len(current),
                "window_start": window["start"],
                "window_end": window["end"],
                "detected_at": window["end"],
            }
        )
    return {
        "status": "completed",
        "against": against,
        "drifted": result.drifted,
        "drifted_features": result.drifted_features,
        "columns": {
            c.feature: {"method": c.method, "statistic": round(c.statistic, 4), "drifted": c.drifted}
            for c in result.columns
        },
        "reference": len(reference),
        "current": len(current),
    }


def _human_labels(answer: Any) -> dict[str, str]:
    """Labels from a resume value: ``{interaction_id: agent}`` or a list of ``{"interaction_id", "agent"}``."""
    if isinstance(answer, Mapping):
        return {str(k): str(v) for k, v in answer.items() if isinstance(v, str)}
    if isinstance(answer, list):
        return {
            str(a["interaction_id"]): str(a["agent"])
            for a in answer
            if isinstance(a, Mapping) and "agent" in a
        }
    return {}


def _judge_labels(judge: BaseChatModel, items: list[dict[str, Any]], agents: list[str]) -> dict[str, str]:
    """The judge's choice for each item: among its decision point's options (each described by the
    docstring of the node it leads to, when there is one), or among the agents for the classic router."""
    prompts = [
        [
            SystemMessage(_point_prompt(item) if "point" in item else _JUDGE_PROMPT),
            HumanMessage(item["query"]),
        ]
        for item in items
    ]
    replies = judge.batch(prompts)
    labels = {}
    for item, reply in zip(items, replies, strict=True):
        choices = item["options"] if "point" in item else agents
        found = [a for a in choices if re.search(rf"(?<![\w-]){re.escape(a)}(?![\w-])", str(reply.content))]
        if len(found) == 1:
            labels[item["interaction_id"]] = found[0]
    return labels


def _point_prompt(item: Mapping[str, Any]) -> str:
    docs = item.get("docs") or {}
    lines = [f"- {option}" + (f": {docs[option]}" if docs.get(option) else "") for option in item["options"]]
    return (
        "Choose which of these options should handle the user's request below:\n"
        + "\n".join(lines)
        + "\nAnswer with the option's name only."
    )


def _feedback_labels(store: Store, items: list[dict[str, Any]]) -> dict[str, str]:
    from cl_plugin.labels import routing_labels

    rows = []
    for item in items:
        row = store.get_interaction(item["interaction_id"])
        if row is not None and "point" in item:  # the option chosen at the point is what the rating judges
            row = {**row, "agent_selected": item["chosen"], "metadata": {}}
        if row is not None:
            rows.append(row)
    return {label.interaction_id: label.agent for label in routing_labels(rows) if label.source == "feedback"}
