"""Capture sampling: which runs keep their node runs and decisions, and what every run keeps regardless."""

from __future__ import annotations

import math
import random
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cl_plugin import CaptureHandler, ProductionInteractionLogger
from cl_plugin.capture.sampling import is_sampled
from cl_plugin.errors import ConfigError
from tests.user_graph import three_step_graph


def ids(rate: float, *, sampled: bool) -> Iterator[uuid.UUID]:
    """Run ids, in a fixed order, that the hash puts inside (or outside) the sample at ``rate``."""
    for i in range(100_000):
        rid = uuid.UUID(int=i * 7919 + 1)
        if is_sampled(rid, rate) is sampled:
            yield rid


def invoke(graph: Any, h: CaptureHandler, rid: uuid.UUID, **inputs: Any) -> None:
    config = {"callbacks": [h], "run_id": rid}
    if inputs.get("fail"):
        with pytest.raises(RuntimeError):
            graph.invoke({"query": "q", **inputs}, config=config)
    else:
        graph.invoke({"query": "q", **inputs}, config=config)


@pytest.fixture
def sampled_handler(tmp_path: Path) -> Iterator[CaptureHandler]:
    h = CaptureHandler(f"sqlite:///{tmp_path / 's.db'}", sample_rate=0.1)
    yield h
    h.close()


def test_the_same_run_id_gets_the_same_decision_in_every_handler(tmp_path: Path) -> None:
    graph = three_step_graph()
    run_ids = [uuid.UUID(int=i * 104729 + 3) for i in range(40)]
    kept: list[set[str]] = []
    for replica in ("a", "b"):
        with CaptureHandler(f"sqlite:///{tmp_path / f'{replica}.db'}", sample_rate=0.5) as h:
            for rid in run_ids:
                invoke(graph, h, rid)
            h.flush()
            kept.append({str(r) for r in run_ids if h.store.node_runs(str(r))})
            assert h.store.count_interactions() == len(run_ids)
    expected = {str(r) for r in run_ids if is_sampled(r, 0.5)}
    assert kept[0] == kept[1] == expected
    assert 0 < len(expected) < len(run_ids)


def test_the_sampled_share_matches_the_rate() -> None:
    rng = random.Random(7)
    n = 20_000
    run_ids = [uuid.UUID(int=rng.getrandbits(128)) for _ in range(n)]
    for rate in (0.01, 0.1, 0.5):
        hits = sum(is_sampled(rid, rate) for rid in run_ids)
        sd = math.sqrt(n * rate * (1 - rate))
        assert abs(hits - n * rate) < 4 * sd, (rate, hits)
    # nested: a run in the 1% sample is in the 10% one
    assert all(is_sampled(rid, 0.1) for rid in run_ids if is_sampled(rid, 0.01))
    assert all(is_sampled(rid, 1.0) for rid in run_ids[:100])


def test_a_tenth_of_captured_runs_keep_their_detail(sampled_handler: CaptureHandler) -> None:
    graph = three_step_graph()
    rng = random.Random(3)
    n = 400
    for _ in range(n):
        invoke(graph, sampled_handler, uuid.UUID(int=rng.getrandbits(128)))
    sampled_handler.flush()
    rows = sampled_handler.store.query_interactions(limit=None)
    assert len(rows) == n
    with_detail = [r for r in rows if sampled_handler.store.node_runs(r["interaction_id"])]
    assert [r["metadata"]["sampled"] for r in with_detail] == [True] * len(with_detail)
    assert sum(r["metadata"]["sampled"] for r in rows) == len(with_detail)
    assert abs(len(with_detail) - 0.1 * n) < 5 * math.sqrt(n * 0.1 * 0.9)


def test_an_unsampled_run_has_its_interaction_row_but_no_node_runs_or_decisions(
    sampled_handler: CaptureHandler,
) -> None:
    rid = next(ids(0.1, sampled=False))
    invoke(three_step_graph(), sampled_handler, rid)
    sampled_handler.flush()
    [row] = sampled_handler.store.query_interactions()
    assert row["interaction_id"] == str(rid) and row["response"] == "done"
    assert row["metadata"]["sampled"] is False and row["metadata"]["sample_rate"] == 0.1
    assert "detail_kept" not in row["metadata"]
    # what the interaction row is built from is still read from every run
    assert (row["agent_selected"], row["agent_confidence"]) == ("search", 0.6)
    assert row["metadata"]["router_probabilities"] == {"search": 0.6, "answer": 0.4}
    assert sampled_handler.store.node_runs(str(rid)) == []
    assert sampled_handler.store.decisions(str(rid)) == []


def test_a_sampled_run_keeps_the_same_detail_as_full_capture(tmp_path: Path) -> None:
    rid = next(ids(0.1, sampled=True))
    got = []
    for rate in (1.0, 0.1):
        with CaptureHandler(f"sqlite:///{tmp_path / f'{rate}.db'}", sample_rate=rate) as h:
            invoke(three_step_graph(), h, rid)
            h.flush()
            got.append(
                (
                    [(r["name"], r["status"], r["outputs"]) for r in h.store.node_runs(str(rid))],
                    [(d["kind"], d["chosen"], d["alternatives"]) for d in h.store.decisions(str(rid))],
                )
            )
            meta = h.store.get_interaction(str(rid))["metadata"]
            assert ("sampled" in meta) is (rate < 1.0)
    assert got[0] == got[1] and len(got[0][0]) == 3 and len(got[0][1]) == 1


def test_an_unsampled_run_that_raises_is_kept_in_full(tmp_path: Path) -> None:
    rid = next(ids(0.1, sampled=False))
    got = []
    for rate in (1.0, 0.1):
        with CaptureHandler(f"sqlite:///{tmp_path / f'{rate}.db'}", sample_rate=rate) as h:
            invoke(three_step_graph(), h, rid, fail=True)
            h.flush()
            nodes = h.store.node_runs(str(rid))
            got.append(
                (
                    [(r["name"], r["status"], r["error_type"], r["error_message"]) for r in nodes],
                    [(d["kind"], d["chosen"]) for d in h.store.decisions(str(rid))],
                )
            )
            row = h.store.get_interaction(str(rid))
            assert row["error_occurred"] is True
    assert got[0] == got[1]
    assert got[1][0] == [
        ("plan", "ok", None, None),
        ("act", "error", "RuntimeError", "upstream timed out"),
    ]
    assert row["metadata"]["sampled"] is False and row["metadata"]["detail_kept"] == "error"


def test_an_unsampled_run_that_never_ends_keeps_what_it_did(sampled_handler: CaptureHandler) -> None:
    h = sampled_handler
    now = [1000.0]
    h.tree.clock = lambda: now[0]
    rid, done, stuck = next(ids(0.1, sampled=False)), uuid.uuid4(), uuid.uuid4()
    h.on_chain_start(None, {"query": "stuck"}, run_id=rid, name="LangGraph")
    for child in (done, stuck):
        h.on_chain_start(
            None, {}, run_id=child, parent_run_id=rid, name="a", metadata={"langgraph_node": "a"}
        )
    h.on_chain_end({"results": ["a"]}, run_id=done)
    h.flush()
    for run in h.tree.runs.values():
        run.start = 1000.0
    now[0] += h.options.run_ttl + 1
    out: list = []
    h.tree.evict(out)
    assert [table for table, _ in out] == ["node_runs", "interactions"]
    assert out[0][1]["run_id"] == str(done)
    meta = out[1][1]["metadata"]
    assert "unfinished" in meta and '"sampled":false' in meta and '"detail_kept":"unfinished"' in meta


def test_without_always_keep_errors_an_unsampled_failure_keeps_only_its_row(tmp_path: Path) -> None:
    rid = next(ids(0.1, sampled=False))
    with CaptureHandler(f"sqlite:///{tmp_path / 'x.db'}", sample_rate=0.1, always_keep_errors=False) as h:
        invoke(three_step_graph(), h, rid, fail=True)
        h.flush()
        assert h.store.node_runs(str(rid)) == [] and h.store.decisions(str(rid)) == []
        row = h.store.get_interaction(str(rid))
        assert row["error_occurred"] is True and "RuntimeError" in row["metadata"]["node_errors"]


def test_the_held_detail_is_capped_and_the_row_counts_what_the_cap_dropped(tmp_path: Path) -> None:
    rid = next(ids(0.1, sampled=False))
    with CaptureHandler(f"sqlite:///{tmp_path / 'x.db'}", sample_rate=0.1, max_unsampled_detail=2) as h:
        invoke(three_step_graph(), h, rid, fail=True)
        h.flush()
        # held in order: plan's run, act's decision, act's run; the cap keeps the first two
        assert [r["name"] for r in h.store.node_runs(str(rid))] == ["plan"]
        assert len(h.store.decisions(str(rid))) == 1
        assert h.store.get_interaction(str(rid))["metadata"]["detail_dropped"] == 1


def test_feedback_on_an_unsampled_run_is_stored(sampled_handler: CaptureHandler) -> None:
    rid = next(ids(0.1, sampled=False))
    invoke(three_step_graph(), sampled_handler, rid)
    sampled_handler.record_feedback(rid, score=2.0, comment="missed the point")
    sampled_handler.flush()
    [row] = sampled_handler.store.query_interactions()
    assert row["user_feedback_score"] == 2.0 and row["metadata"]["sampled"] is False
    [fb] = sampled_handler.store.feedback.history(str(rid))
    assert (fb["score"], fb["comment"]) == (2.0, "missed the point")


def test_the_logger_config_sets_the_rate_of_a_handler_built_on_it(tmp_path: Path) -> None:
    logger = ProductionInteractionLogger(
        {"storage": str(tmp_path), "sample_rate": 0.1, "flush_interval": 0.05}
    )
    try:
        h = CaptureHandler(logger)
        assert h.options.sample_rate == 0.1
        assert CaptureHandler(logger, sample_rate=0.5).options.sample_rate == 0.5
    finally:
        logger.close()


@pytest.mark.parametrize("bad", [0, 0.0, -0.1, 1.5, float("nan"), "0.1", True])
def test_a_sample_rate_outside_0_1_is_refused_naming_the_key(bad: Any) -> None:
    with pytest.raises(ConfigError, match=rf"sample_rate must be a number in \(0, 1\].*got {bad!r}") as err:
        CaptureHandler("sqlite://", sample_rate=bad)
    assert err.value.key == "sample_rate"


def test_a_bad_logging_sample_rate_is_refused_naming_the_key() -> None:
    with pytest.raises(ConfigError, match=r"logging\.sample_rate") as err:
        ProductionInteractionLogger({"sample_rate": 0, "enabled": False})
    assert err.value.key == "logging.sample_rate"


def test_a_bad_detail_cap_is_refused_naming_the_key() -> None:
    with pytest.raises(ConfigError, match="max_unsampled_detail") as err:
        CaptureHandler("sqlite://", sample_rate=0.1, max_unsampled_detail=0)
    assert err.value.key == "max_unsampled_detail"
