"""Simulated production traffic: seeded, drifting, honest feedback, captured end to end."""

from __future__ import annotations

import random
import statistics

import pytest
from cl_plugin.graphs.mcts_agents import build_mcts_agent_graph
from cl_plugin.graphs.tasks import make_task, parse_problem
from cl_plugin.graphs.traffic import (
    DEFAULT_DRIFT,
    OPS_DRIFT,
    DriftSchedule,
    SimulatedUser,
    production_queries,
    run_traffic,
    simulated_feedback,
)

from cl_plugin import CaptureHandler


def test_the_stream_is_the_same_for_the_same_seed() -> None:
    a = [(q.text, q.user.user_id, q.session_id) for q in production_queries(50, seed=3)]
    b = [(q.text, q.user.user_id, q.session_id) for q in production_queries(50, seed=3)]
    c = [q.text for q in production_queries(50, seed=4)]
    assert a == b and [t for t, _, _ in a] != c


def test_the_family_mix_drifts_on_schedule() -> None:
    qs = list(production_queries(2000, seed=0, drift=DEFAULT_DRIFT))
    share = lambda part: sum(q.task.family == "search" for q in part) / len(part)  # noqa: E731
    assert share(qs[:1000]) == pytest.approx(0.10, abs=0.03)
    assert share(qs[1000:]) == pytest.approx(0.50, abs=0.04)


def test_the_ops_register_arrives_on_schedule() -> None:
    from cl_plugin.graphs.tasks import parse_problem

    qs = list(production_queries(2000, seed=0, drift=OPS_DRIFT))
    ops = lambda part: sum(" / " in q.text or " dp" in q.text for q in part) / len(part)  # noqa: E731
    assert ops(qs[:1000]) == 0.0
    assert ops(qs[1000:]) == pytest.approx(0.8 * 0.9, abs=0.05)  # ops factual queries have no list
    assert all(parse_problem(q.task.query) == (q.task.family, q.task.data) for q in qs)
    plain = [q.text for q in production_queries(300, seed=0, drift=DEFAULT_DRIFT)]
    assert plain == [
        q.text for q in production_queries(300, seed=0, drift=DriftSchedule(DEFAULT_DRIFT.phases))
    ]


def test_a_bad_schedule_is_refused_with_the_fix() -> None:
    with pytest.raises(ValueError, match=r"start at 0\.0"):
        DriftSchedule(((0.2, {"search": 1.0}),))
    with pytest.raises(ValueError, match="unknown families"):
        DriftSchedule(((0.0, {"poetry": 1.0}),))
    with pytest.raises(ValueError, match="phrasing"):
        DriftSchedule(((0.0, {"search": 1.0}),), phrasing=((0.0, 1.5),))


def test_a_small_share_of_queries_carries_pii() -> None:
    qs = list(production_queries(3000, seed=1, pii_rate=0.03))
    assert 0.02 < sum(q.has_pii for q in qs) / len(qs) < 0.04


def test_feedback_follows_correctness_and_latency_and_some_users_never_rate() -> None:
    rng = random.Random(0)
    task = make_task("planning", rng)
    user = SimulatedUser(
        "u", rating_rate=1.0, thumbs_rate=0.5, correction_rate=0.5, noise=0.6, patience_ms=100
    )
    stars = lambda ok, ms: [simulated_feedback(user, task, ok, ms, rng)["score"] for _ in range(400)]  # noqa: E731
    right_fast, right_slow, wrong = stars(True, 10), stars(True, 500), stars(False, 10)
    assert statistics.mean(right_fast) > statistics.mean(right_slow) + 0.5 > statistics.mean(wrong) + 1.0
    silent = SimulatedUser(
        "s", rating_rate=0.0, thumbs_rate=0.0, correction_rate=0.0, noise=0.5, patience_ms=100
    )
    assert all(simulated_feedback(silent, task, False, 10, rng) is None for _ in range(100))
    corrections = [simulated_feedback(user, task, False, 10, rng).get("correction") for _ in range(200)]
    assert f"Answer: {task.answer}" in corrections and None in corrections


def test_traffic_through_the_captured_graph_records_interactions_decisions_and_feedback() -> None:
    handler = CaptureHandler("sqlite://")
    report = run_traffic(build_mcts_agent_graph().compile(), handler, 40, seed=5, pii_rate=0.2)
    handler.flush()
    store = handler.store
    rows = store.query_interactions(limit=None)
    assert len(rows) == report.invocations == 40 and report.errors == 0
    assert {r["interaction_id"] for r in rows} == set(report.interaction_ids)
    parsed = {
        iid: parse_problem(q.text)
        for iid, q in zip(
            report.interaction_ids,
            production_queries(40, seed=5, drift=DEFAULT_DRIFT, pii_rate=0.2),
            strict=True,
        )
    }
    assert all(r["user_id"].startswith("user-") and r["session_id"].startswith("session-") for r in rows)
    assert sum(r["user_feedback_score"] is not None for r in rows) == report.rated
    for row in rows:
        [route, *_] = store.decisions(row["interaction_id"], kind="route")
        assert set(route["alternatives"]) == {"HRM", "TRM", "MCTS"}
        assert sum(route["alternatives"].values()) == pytest.approx(1.0)
        assert row["agent_selected"] in ("HRM", "TRM", "MCTS")
        assert row["latency_ms"] > 0
        kinds = {r["kind"] for r in store.node_runs(row["interaction_id"])}
        assert {"node", "edge"} <= kinds
        # a factual question, or a query the graph cannot parse, is looked up; a problem that states its
        # data leaves no retrieval behind
        problem = parsed[row["interaction_id"]]
        retrieved = problem is None or problem[0] == "factual"
        assert ("retriever" in kinds) is retrieved
        assert (row["retrieval_quality"] is not None) is retrieved
        assert (row["retrieval_failed"] is not None) is retrieved
    assert {p and p[0] for p in parsed.values()} >= {"factual", "planning", None}
    assert not any("@example.com" in r["user_query"] for r in rows)
    assert report.pii_queries > 0 and sum("[" in r["user_query"] for r in rows) >= report.pii_queries
    handler.close()


class SplitByParity:
    """An A/B framework stand-in: even request ids go to A, odd to B; keeps every recorded result."""

    def __init__(self) -> None:
        self.results: list[tuple[str, str, float]] = []

    def assign_group(self, test_id: str, unit_id: str) -> str:
        return "A" if int(unit_id.replace("-", ""), 16) % 2 == 0 else "B"

    def record_result(
        self, test_id: str, group: str, input_data: object, output: object, metric: float
    ) -> None:
        self.results.append((test_id, group, metric))


def test_ab_traffic_sends_each_request_to_its_group_and_records_rated_answers() -> None:
    from cl_plugin.graphs.traffic import run_ab_traffic

    answers = {"A": 0, "B": 0}

    class Echo:
        def __init__(self, group: str, right: bool) -> None:
            self.group, self.right = group, right

        def invoke(self, inputs: dict, config: dict) -> dict:
            answers[self.group] += 1
            return {"response": "Answer: 42", "agent_selected": "HRM"}

    framework = SplitByParity()
    reports = run_ab_traffic(
        {"A": Echo("A", False), "B": Echo("B", True)}, framework, "t1", None, 200, seed=3
    )
    assert reports["A"].invocations == answers["A"] and reports["B"].invocations == answers["B"]
    assert answers["A"] + answers["B"] == 200 and min(answers.values()) > 60
    # Every rated answer records its outcome, and so does a correction of an answer nobody rated.
    rated = reports["A"].rated + reports["B"].rated
    assert rated <= len(framework.results) <= rated + reports["A"].corrections + reports["B"].corrections
    assert len(framework.results) > 0 and {metric for _, _, metric in framework.results} <= {0.0, 1.0}


def test_ab_traffic_records_a_run_that_raised_as_a_failure_even_unrated() -> None:
    from cl_plugin.graphs.traffic import run_ab_traffic

    class Broken:
        def invoke(self, inputs: dict, config: dict) -> dict:
            raise RuntimeError("the retriever is down")

    class Right:
        def invoke(self, inputs: dict, config: dict) -> dict:
            return {"response": f"Answer: {tasks[inputs['query']]}", "agent_selected": "HRM"}

    tasks = {q.text: q.task.answer for q in production_queries(300, seed=5, drift=DEFAULT_DRIFT)}
    framework = SplitByParity()
    reports = run_ab_traffic({"A": Broken(), "B": Right()}, framework, "t1", None, 300, seed=5)
    a = [metric for _, group, metric in framework.results if group == "A"]
    b = [metric for _, group, metric in framework.results if group == "B"]
    assert reports["A"].errors == reports["A"].invocations == len(a) > reports["A"].rated  # unrated ones too
    assert set(a) == {0.0}
    # Right answers draw no corrections: only the rated ones record, the few a noisy user rated low as failures.
    assert reports["B"].errors == 0 and reports["B"].correct == reports["B"].invocations
    assert len(b) == reports["B"].rated < reports["B"].invocations
    assert b.count(0.0) == reports["B"].low_rated and b.count(1.0) > 0.8 * len(b)
