"""Code written against the original design's public reference implementation runs unchanged.

That code fills every field of the reference's ``ProductionInteraction`` (embedding, routing decision,
retrieved chunks and scores, feedback text, corrections, error message, ``thumbs_up_down="none"``) and
passes one flat dict holding keys of every section to each component. The domain here is a support desk
with its own agents, unlike the bundled example graph.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cl_plugin import (
    ABTestFramework,
    ActiveLearningSelector,
    DataQualityValidator,
    DriftDetector,
    FailurePatternAnalyzer,
    IncrementalRetrainingPipeline,
    ProductionInteraction,
    ProductionInteractionLogger,
)
from cl_plugin.errors import InvalidRecordError

DIM = 384
AGENTS = ("billing_desk", "tech_desk", "parcel_desk")
TOPICS = {
    "billing_desk": ("refund my invoice", "charged twice this month", "update the card on file"),
    "tech_desk": ("app crashes on login", "password reset link broken", "sync fails on my laptop"),
    "parcel_desk": ("where is my parcel", "delivery address change", "package arrived damaged"),
}

# One flat dict with keys of every section of the design's configuration, as users pass it everywhere.
FLAT = {
    "enabled": True,
    "use_sqlite": True,
    "sanitize_pii": True,
    "buffer_size": 200,
    "min_cluster_size": 5,
    "similarity_threshold": 0.7,
    "analyze_frequency": "daily",
    "budget_per_cycle": 30,
    "selection_strategy": "hybrid",
    "diversity_weight": 0.3,
    "schedule": "weekly",
    "min_new_samples": 50,
    "validation_split": 0.2,
    "enable_ab_test": False,
    "window_size": 200,
    "threshold": 0.1,
    "detection_method": "population_stability_index",
    "traffic_split": 0.5,
    "min_samples": 100,
    "confidence_level": 0.95,
    "anonymize_user_ids": True,
    "hash_session_ids": True,
    "redact_sensitive_fields": True,
    "retention_days": 90,
}


def centroid(agent: str) -> np.ndarray:
    """A fixed unit direction per desk: the embedding model of this application, in miniature."""
    v = np.random.default_rng(AGENTS.index(agent) + 100).normal(size=DIM)
    return v / np.linalg.norm(v)


def reference_record(i: int, rng: random.Random, *, drifted: bool = False) -> ProductionInteraction:
    """A record with every field of the reference implementation's ``ProductionInteraction`` filled."""
    best = AGENTS[i % 3] if not drifted else "parcel_desk"
    right = rng.random() < 0.75
    chosen = best if right else rng.choice([a for a in AGENTS if a != best])
    failed = i % 10 == 0
    vector = centroid(best) + np.random.default_rng(i).normal(scale=0.01, size=DIM)
    scores = [round(rng.uniform(0.2, 0.95), 3) for _ in range(3)]
    return ProductionInteraction(
        interaction_id=f"ref-{i}",
        timestamp=time.time() - 10_000 + i,
        session_id=f"session-{rng.randrange(50)}",
        user_query=f"{rng.choice(TOPICS[best])} (ticket {i})",
        query_embedding=vector.tolist(),
        agent_selected=chosen,
        agent_confidence=round(rng.uniform(0.5, 0.95) if right else rng.uniform(0.2, 0.5), 3),
        routing_decision={"agent": chosen, "confidence": 0.7, "probabilities": {a: 1 / 3 for a in AGENTS}},
        retrieved_chunks=[f"KB article {k} for {best}; escalate to help@support.example" for k in range(3)],
        retrieval_scores=scores,
        retrieval_quality=None,
        response="" if failed else f"Here is how {chosen} handles that.",
        response_metadata={"model": "support-llm-2", "temperature": 0.2},
        user_feedback_score=float(rng.choice((4, 5)) if right else rng.choice((1, 2))),
        user_feedback_text=None if right else "Wrong desk again, call me at 555-867-5309",
        user_corrections=None if right else f"This should go to {best}.",
        thumbs_up_down="none" if i % 2 else ("up" if right else "down"),
        latency_ms=rng.uniform(300, 3000) * (3 if drifted else 1),
        tokens_used=rng.randrange(100, 900),
        cost=0.001,
        hallucination_detected=False,
        retrieval_failed=max(scores) < 0.3,
        error_occurred=failed,
        error_message="TimeoutError: billing API did not answer in 30s" if failed else None,
        metadata={"correct_agent": best, "channel": "web"},
    )


@pytest.fixture
def hash_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CL_PLUGIN_HASH_KEY", "reference-test-key")


@pytest.fixture
def logged(tmp_path: Path, hash_key: None) -> tuple[ProductionInteractionLogger, list[ProductionInteraction]]:
    rng = random.Random(7)
    records = [reference_record(i, rng) for i in range(300)]
    logger = ProductionInteractionLogger({**FLAT, "storage": str(tmp_path / "logs")})

    async def log_all() -> list[bool]:
        return [await logger.log_interaction(r) for r in records]

    assert asyncio.run(log_all()) == [True] * len(records)
    yield logger, records
    logger.close()


def test_the_flat_config_reaches_each_components_own_section(hash_key: None, tmp_path: Path) -> None:
    logger = ProductionInteractionLogger({**FLAT, "storage": str(tmp_path)})
    assert (logger.config.buffer_size, logger.config.sanitize_pii) == (200, True)
    logger.close()
    validator = DataQualityValidator(FLAT)
    assert validator.privacy.retention_days == 90 and validator.privacy.hash_session_ids
    assert FailurePatternAnalyzer(FLAT).config.min_cluster_size == 5
    assert ActiveLearningSelector(FLAT).config.budget_per_cycle == 30
    assert IncrementalRetrainingPipeline(FLAT).config.min_new_samples == 50
    drift = DriftDetector(FLAT)
    assert (drift.config.window_size, drift.detection_method) == (200, "psi")
    ab = ABTestFramework(FLAT)
    assert (ab.config.traffic_split, ab.config.min_samples) == (0.5, 100)


def test_the_logger_stores_every_reference_field_where_it_is_used(logged) -> None:
    logger, records = logged
    stats = logger.get_statistics()
    assert (stats["total_logged"], stats["validation_failures"], stats["total_in_db"]) == (300, 0, 300)
    store = logger.store
    rows = {r["interaction_id"]: r for r in logger.query_interactions(limit=None)}
    first, wrong = records[0], next(r for r in records if r.user_corrections)
    row = rows[first.interaction_id]
    # the best retrieval score is the quality when none was given; chunks are kept, redacted
    assert row["retrieval_quality"] == max(first.retrieval_scores)
    assert row["metadata"]["retrieval_scores"] == first.retrieval_scores
    assert len(row["metadata"]["retrieved_chunks"]) == 3
    assert "help@support.example" not in str(row["metadata"]) and "[EMAIL]" in str(row["metadata"])
    assert row["metadata"]["error_message"].startswith("TimeoutError")
    assert row["metadata"]["response_metadata"] == {"model": "support-llm-2", "temperature": 0.2}
    assert row["thumbs_up_down"] == "down" or row["thumbs_up_down"] == "up"
    assert rows[records[1].interaction_id]["thumbs_up_down"] is None  # "none" is no thumbs
    # the embedding comes back as the float32 vector it was, stored as 384 * 4 bytes
    np.testing.assert_allclose(row["query_embedding"], first.query_embedding, rtol=1e-6)
    assert row["query_embedding"].dtype == np.float32
    # the routing decision is a decisions row
    [decision] = store.decisions(first.interaction_id, kind="route")
    assert decision["chosen"] == first.agent_selected and decision["confidence"] == 0.7
    # feedback text and corrections went through the feedback history, redacted
    [feedback] = store.feedback.history(wrong.interaction_id)
    assert feedback["correction"] == wrong.user_corrections
    assert "555-867-5309" not in feedback["comment"] and feedback["comment"].startswith("Wrong desk")
    # the spec's columns are exactly the design's: nothing was folded into new interaction columns
    assert "query_embedding" not in store.count_interactions.__doc__


def test_embeddings_are_stored_compactly(logged) -> None:
    logger, _ = logged
    from sqlalchemy import text

    assert logger.flush()
    with logger.store.engine.connect() as conn:
        dim, size = conn.execute(
            text("SELECT dim, length(vector) FROM interaction_embeddings WHERE interaction_id = 'ref-0'")
        ).one()
        meta = conn.execute(text("SELECT metadata FROM interactions WHERE interaction_id = 'ref-0'")).scalar()
    assert (dim, size) == (DIM, DIM * 4)
    assert "query_embedding" not in meta and len(meta) < 2000


def test_the_validator_redacts_with_the_loggers_dict(hash_key: None) -> None:
    record = reference_record(1, random.Random(3))
    validator = DataQualityValidator(FLAT)
    clean = validator.sanitize_interaction(record)
    assert all("help@support.example" not in c for c in clean.retrieved_chunks)
    if record.user_feedback_text:
        assert "555-867-5309" not in clean.user_feedback_text
    assert clean.query_embedding == record.query_embedding
    # sanitize_pii turns redaction off, unless the privacy section's own key says otherwise
    logging_only = {k: v for k, v in FLAT.items() if k != "redact_sensitive_fields"}
    kept = DataQualityValidator({**logging_only, "sanitize_pii": False}).sanitize_interaction(record)
    assert kept.retrieved_chunks == record.retrieved_chunks
    still = DataQualityValidator({**FLAT, "sanitize_pii": False}).sanitize_interaction(record)
    assert still.retrieved_chunks == clean.retrieved_chunks


def test_analysis_uses_the_error_messages_and_the_logged_embeddings(logged) -> None:
    logger, _ = logged
    rows = logger.query_interactions(limit=None)
    patterns = FailurePatternAnalyzer(FLAT).analyze_failures(rows)
    errors = [p for p in patterns if p.pattern_type == "node_errors"]
    assert errors and errors[0].details["error_types"] == {"TimeoutError": 30}
    # Queries whose words tell nothing ("please help with ticket N"): only the logged embeddings can group
    # them, and the clusters found are the three desks.
    desk = {}
    for r in rows:
        r["user_query"] = f"please help with ticket {r['interaction_id']}"
        desk[r["user_query"]] = r["metadata"]["correct_agent"]
    clusters = FailurePatternAnalyzer(FLAT).analyze(rows).clusters
    assert sorted({desk[q] for q in c.representatives}.pop() for c in clusters) == sorted(AGENTS)
    assert all(len({desk[q] for q in c.representatives}) == 1 for c in clusters)
    without = [{k: v for k, v in r.items() if k != "query_embedding"} for r in rows]
    assert FailurePatternAnalyzer(FLAT).analyze(without).clusters == []


def test_selection_uses_the_logged_embeddings() -> None:
    """280 billing queries and 10 of each other desk, all worded alike: the embeddings tell them apart."""
    rows = []
    for i in range(300):
        desk = "billing_desk" if i < 280 else "tech_desk" if i < 290 else "parcel_desk"
        vector = centroid(desk) + np.random.default_rng(i).normal(scale=0.01, size=DIM)
        rows.append(
            {
                "interaction_id": f"r{i}",
                "timestamp": float(i),
                "session_id": "s",
                "user_query": f"please help with ticket {i}",
                "response": "ok",
                "agent_selected": desk,
                "agent_confidence": 0.6,
                "query_embedding": vector.astype(np.float32),
                "metadata": {"desk": desk},
            }
        )
    selector = ActiveLearningSelector({**FLAT, "selection_strategy": "diversity"})
    picked = selector.select_for_annotation(rows, budget=6)
    # one pick per desk: the rest of each desk are its near-duplicates in embedding space
    assert sorted(rows[int(c.interaction_id[1:])]["metadata"]["desk"] for c in picked) == sorted(AGENTS)
    words_only = [{k: v for k, v in r.items() if k != "query_embedding"} for r in rows]
    picked = selector.select_for_annotation(words_only, budget=6)
    assert {rows[int(c.interaction_id[1:])]["metadata"]["desk"] for c in picked} != set(AGENTS)


def test_pipeline_drift_and_ab_test_run_on_the_same_records(logged, tmp_path: Path, monkeypatch) -> None:
    logger, records = logged
    monkeypatch.chdir(tmp_path)
    rows = logger.query_interactions(limit=None)
    pipeline = IncrementalRetrainingPipeline(FLAT)
    assert pipeline.should_retrain(None, len(rows))
    result = asyncio.run(pipeline.retrain(new_data=rows, old_model_path="models/v1", output_path="models/v2"))
    assert result["status"] == "completed", result
    assert result["metrics"]["candidate"]["accuracy"] > 0.8

    detector = DriftDetector(FLAT)
    detector.set_reference_distribution([{"latency_ms": r.latency_ms} for r in records])
    rng = random.Random(11)
    reports = [
        detector.add_sample({"latency_ms": reference_record(i, rng, drifted=True).latency_ms})
        for i in range(400)
    ]
    assert any(reports) and detector.get_drift_summary()["total_drifts"] >= 1

    ab = ABTestFramework(FLAT)
    test_id = ab.create_test("desk_router", model_a="v1", model_b="v2", metric_fn=lambda i, o: float(o))
    for r in records:
        group = ab.assign_group(test_id, r.session_id)
        ab.record_result(test_id, group, r.user_query, r.user_feedback_score >= 4)
    status = ab.get_test_status(test_id)
    assert status["groups"]["A"]["n"] + status["groups"]["B"]["n"] == len(records)


def test_an_invalid_record_returns_false_warns_once_and_is_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    logger = ProductionInteractionLogger({"storage": str(tmp_path)})
    bad = ProductionInteraction("bad-1", time.time(), "s", "hi", agent_confidence=1.7)
    with caplog.at_level(logging.WARNING, logger="cl_plugin"):
        assert asyncio.run(logger.log_interaction(bad)) is False
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "agent_confidence" in warnings[0].getMessage()
    assert logger.get_statistics()["refused"] == 1 and logger.query_interactions() == []
    logger.close()
    strict = ProductionInteractionLogger({"storage": str(tmp_path / "strict"), "strict": True})
    with pytest.raises(InvalidRecordError, match="agent_confidence"):
        asyncio.run(strict.log_interaction(bad))
    strict.close()


def test_a_record_is_built_positionally_in_the_reference_order() -> None:
    r = ProductionInteraction("id", 1.0, "s", "q", [0.0, 1.0], "desk", 0.5, {"agent": "desk"})
    assert (r.query_embedding, r.agent_selected, r.agent_confidence) == ([0.0, 1.0], "desk", 0.5)
    assert r.routing_decision == {"agent": "desk"} and r.response == "" and r.thumbs_up_down is None
    data: dict[str, Any] = r.to_dict()
    assert ProductionInteraction.from_dict(data) == r
