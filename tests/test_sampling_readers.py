"""Readers of sampled capture: rates over every row, detail-based figures over the unbiased sample only."""

from __future__ import annotations

import doctest
import uuid
from collections.abc import Iterator
from contextlib import nullcontext
from pathlib import Path

import pytest

import cl_plugin.analysis.metrics.nodes
import cl_plugin.capture.sampling
from cl_plugin import CaptureHandler, router_metrics, store_metrics
from cl_plugin.analysis import FailurePatternAnalyzer
from cl_plugin.analysis.metrics import node_figures, node_metrics
from cl_plugin.analysis.selection import ActiveLearningSelector, probabilities_from_decisions
from cl_plugin.capture.sampling import DetailSample, detail_sample, is_sampled
from cl_plugin.report import build_report
from cl_plugin.report.html import MIN_LABELED
from tests.user_graph import three_step_graph

N = 60
RATE = 0.5


@pytest.fixture(scope="module")
def captured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[CaptureHandler, set[str], set[str]]]:
    """N runs at RATE; every third one fails and is labeled "answer" (the router chose "search": wrong)."""
    path: Path = tmp_path_factory.mktemp("sampled") / "s.db"
    h = CaptureHandler(f"sqlite:///{path}", sample_rate=RATE)
    g = three_step_graph()
    sampled, failed = set(), set()
    for i in range(N):
        rid = uuid.UUID(int=i * 6007 + 11)
        fail = i % 3 == 0
        config = {"callbacks": [h], "run_id": rid, "metadata": {"best_agent": "answer" if fail else "search"}}
        if fail:
            failed.add(str(rid))
            with pytest.raises(RuntimeError):
                g.invoke({"query": f"q{i}", "fail": True}, config=config)
        else:
            g.invoke({"query": f"q{i}"}, config=config)
        if is_sampled(rid, RATE):
            sampled.add(str(rid))
    h.flush()
    assert failed - sampled and failed & sampled and sampled - failed  # every case is present
    yield h, sampled, failed
    h.close()


def test_the_sampling_docstrings_run() -> None:
    assert doctest.testmod(cl_plugin.capture.sampling).failed == 0
    assert doctest.testmod(cl_plugin.analysis.metrics.nodes).failed == 0


def test_rates_over_interactions_use_every_row(captured: tuple[CaptureHandler, set[str], set[str]]) -> None:
    h, _, failed = captured
    m = store_metrics(h.store)
    assert m["interactions"] == N
    assert (m["failures"].error.count, m["failures"].error.n) == (len(failed), N)
    assert m["latency"].n == N


def test_node_figures_come_from_the_sample_and_say_so(
    captured: tuple[CaptureHandler, set[str], set[str]],
) -> None:
    h, sampled, failed = captured
    got = node_metrics(h.store, chunk_size=7)
    kept = failed - sampled
    assert got.sample == DetailSample(N, len(sampled), len(kept), RATE)
    assert (
        got.describe()
        == f"node figures from a {len(sampled) / N:.0%} sample: {len(sampled)} of {N} interactions"
    )
    assert got.failed == len(sampled & failed)
    act = got.nodes["act"]
    assert act.interactions == len(sampled)
    # the runs kept because they raised are stored, but counting them would inflate the error rate
    assert (act.errors.count, act.errors.n) == (len(sampled & failed), len(sampled))
    stored_act_errors = sum(
        1 for iid in failed for r in h.store.node_runs(iid) if r["node"] == "act" and r["status"] == "error"
    )
    assert stored_act_errors == len(failed) > act.errors.count
    assert (act.failures.count, act.failures.n) == (len(sampled & failed), len(sampled & failed))
    assert list(got.nodes) == ["act", "answer", "plan"]
    assert got.nodes["answer"].interactions == len(sampled - failed)
    assert got.nodes["plan"].errors.count == 0 and got.nodes["plan"].latency.n == len(sampled)


def test_node_figures_from_rows_match_the_store_query(
    captured: tuple[CaptureHandler, set[str], set[str]],
) -> None:
    h, _, _ = captured
    rows = h.store.query_interactions(limit=None)
    runs = [r for row in rows for r in h.store.node_runs(row["interaction_id"])]
    assert node_figures(rows, runs) == node_metrics(h.store)


def test_without_sampling_node_figures_cover_every_interaction(tmp_path: Path) -> None:
    with CaptureHandler(f"sqlite:///{tmp_path / 'full.db'}") as h:
        for i in range(6):
            with pytest.raises(RuntimeError) if i % 2 else nullcontext():
                three_step_graph().invoke({"query": "q", "fail": bool(i % 2)}, config={"callbacks": [h]})
        h.flush()
        got = node_metrics(h.store)
    assert got.sample == DetailSample(6, 6, 0, None) and not got.sample.is_sample
    assert (got.nodes["act"].errors.count, got.nodes["act"].errors.n) == (3, 6)


def test_router_metrics_leave_out_runs_kept_for_their_errors(
    captured: tuple[CaptureHandler, set[str], set[str]],
) -> None:
    h, sampled, failed = captured
    got = router_metrics(h.store)
    # the router chose "search": right for the runs that went well, wrong for the failed ones
    assert (got.accuracy.n, got.accuracy.correct) == (len(sampled), len(sampled - failed))
    assert got.sample == DetailSample(N, len(sampled), len(failed - sampled), RATE)
    assert got.probabilistic == len(sampled)


def test_a_sample_is_counted_from_interaction_rows() -> None:
    rows = [
        {"metadata": {"sample_rate": 0.1, "sampled": True}},
        {"metadata": {"sample_rate": 0.1, "sampled": False}},
        {"metadata": {"sample_rate": 0.1, "sampled": False, "detail_kept": "error"}},
        {"metadata": '{"sample_rate": 0.1, "sampled": false}'},
        {"metadata": {}},
    ]
    got = detail_sample(rows)
    assert got == DetailSample(5, 2, 1, 0.1)
    assert got.fraction == 0.4 and got.is_sample
    assert detail_sample([]).fraction is None


def test_failure_analysis_counts_every_row_and_attributes_errors_from_the_sample(
    captured: tuple[CaptureHandler, set[str], set[str]],
) -> None:
    h, sampled, failed = captured
    rows = h.store.query_interactions(limit=None)
    analyzer = FailurePatternAnalyzer({"min_cluster_size": 50})
    plain = analyzer.analyze(rows)
    assert (plain.counts["interactions"], plain.counts["error"]) == (N, len(failed))
    assert plain.counts["detail_sample"] == len(sampled)
    assert plain.counts["detail_kept_errors"] == len(failed - sampled)
    [unnamed] = [p for p in plain.patterns if p.pattern_type == "node_errors"]
    assert unnamed.frequency == len(failed) and "Record node runs" in unnamed.suggested_fix

    nodes = node_metrics(h.store)
    got = analyzer.analyze(rows, nodes=nodes)
    [pattern] = [p for p in got.patterns if p.pattern_type == "node_errors"]
    assert pattern.frequency == len(failed)  # the rate of errors is over every row
    share = f"({len(sampled & failed)} of {len(sampled & failed)}) in node 'act'"
    assert f"from a {len(sampled) / N:.0%} sample: {len(sampled)} of {N} interactions" in pattern.description
    assert share in pattern.description
    assert pattern.suggested_fix.startswith("Fix the failing call in node 'act'")
    assert pattern.details["sampled_nodes"] == {"act": 1.0}
    assert pattern.details["node_sample"] == {
        "interactions": N,
        "sampled": len(sampled),
        "fraction": len(sampled) / N,
        "sample_rate": RATE,
    }
    assert pattern.details["estimated"] is True


def test_analysis_of_rows_captured_without_sampling_has_every_row_in_the_detail_sample() -> None:
    rows = [
        {"interaction_id": f"i{i}", "error_occurred": i % 2 == 0, "metadata": {"status": "ok"}}
        for i in range(8)
    ]
    got = FailurePatternAnalyzer().analyze(rows)
    assert (got.counts["detail_sample"], got.counts["detail_kept_errors"]) == (8, 0)


def test_selection_scores_runs_outside_the_sample_from_the_probabilities_in_their_row(
    captured: tuple[CaptureHandler, set[str], set[str]],
) -> None:
    h, sampled, _ = captured
    rows = h.store.query_interactions(limit=None)
    probs = probabilities_from_decisions(h.store.decisions())
    assert set(probs) < {r["interaction_id"] for r in rows}  # no decisions rows outside the sample
    selector = ActiveLearningSelector({"selection_strategy": "uncertainty"}, duplicate_threshold=1.0)
    picked = selector.select_for_annotation(rows, budget=N, probabilities=probs)
    by_sample = {iid in sampled for iid in (c.interaction_id for c in picked)}
    assert by_sample == {True, False}
    # one router output everywhere ({search: 0.6, answer: 0.4}): one uncertainty, sampled or not
    assert len({round(c.uncertainty, 12) for c in picked}) == 1
    assert picked[0].uncertainty != pytest.approx(1 - 0.6)  # not least confidence alone


def test_the_report_says_its_route_figures_come_from_the_capture_sample(
    captured: tuple[CaptureHandler, set[str], set[str]], tmp_path: Path
) -> None:
    h, sampled, _ = captured
    assert len(sampled) >= MIN_LABELED  # the calibration section is drawn, not left empty
    html = build_report(h.store, tmp_path / "report.html").read_text()
    sample = f"a {len(sampled) / N:.0%} sample: {len(sampled)} of {N} interactions with a known right agent"
    assert f"Only runs in the capture sample keep their route decisions: these use {sample}" in html
    # captured errors are tied to the node that raised them, from the sample's node runs
    assert (
        "Fix the failing call in node &#x27;act&#x27;" in html or "Fix the failing call in node 'act'" in html
    )
    assert "(unknown node)" not in html


def test_the_maintenance_graph_attributes_errors_from_the_capture_sample(
    captured: tuple[CaptureHandler, set[str], set[str]], tmp_path: Path
) -> None:
    from cl_plugin.graphs.maintenance import run_maintenance

    h, _, _ = captured  # last in this module: the cycle writes its own records into the shared store
    config = {"maintenance": {"model_dir": str(tmp_path / "models"), "min_interactions": 10}}
    state = run_maintenance(h.store, config=config)
    top = state["steps"]["analyze_failures"]["top"]
    [errors] = [p for p in top if p["type"] == "node_errors"]
    assert "'act'" in errors["fix"]
