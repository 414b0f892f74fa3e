"""Row building: the sanitizer's memory of clean text, and the rows a reference-shaped record makes."""

from __future__ import annotations

import base64

import numpy as np

from cl_plugin.privacy import default_redactor
from cl_plugin.records import ProductionInteraction
from cl_plugin.store.rows import Sanitizer, interaction_rows


class CountingRedactor:
    def __init__(self) -> None:
        self.seen: list[str] = []
        self.redact_one = default_redactor().redact

    def __call__(self, text: str) -> str:
        self.seen.append(text)
        return self.redact_one(text)


def test_clean_text_is_redacted_once_and_text_with_pii_every_time() -> None:
    redact = CountingRedactor()
    s = Sanitizer(redact=redact)
    passage = "Refunds are issued to the original card within five working days."
    with_pii = "write to ana.lima@example.com for a refund"
    for _ in range(3):
        assert s.text(passage) == passage
        assert s.text(with_pii) == "write to [EMAIL] for a refund"
    assert redact.seen.count(passage) == 1
    assert redact.seen.count(with_pii) == 3  # never remembered: the raw text stays nowhere
    assert with_pii not in s._clean


def test_the_memory_of_clean_text_is_bounded() -> None:
    from cl_plugin.store import rows

    s = Sanitizer(redact=default_redactor().redact)
    for i in range(rows._CLEAN_SIZE + 10):
        s.text(f"passage number {i} about refunds")
    assert len(s._clean) <= rows._CLEAN_SIZE
    s.text("x" * (rows._CLEAN_MAX_CHARS + 1))
    assert "x" * (rows._CLEAN_MAX_CHARS + 1) not in s._clean


def test_a_reference_record_makes_its_rows_once_each() -> None:
    vector = np.linspace(-1, 1, 384)
    item = ProductionInteraction(
        "r-1",
        100.0,
        "s",
        "where is my parcel",
        query_embedding=vector.tolist(),
        agent_selected="parcel_desk",
        routing_decision={"agent": "parcel_desk", "confidence": 0.6, "scores": {"parcel_desk": 0.6}},
        retrieved_chunks=["Parcels ship in 2 days; ask bob@example.com"] * 30,
        retrieval_scores=[0.4, 0.9],
        user_feedback_text="too slow",
        user_corrections="It ships tomorrow.",
        error_message="ValueError: bad tracking number",
        metadata={"channel": "app"},
    )
    rows = interaction_rows(item, Sanitizer(redact=default_redactor().redact))
    by_table = {table: row for table, row in rows}
    assert [table for table, _ in rows] == ["interactions", "decisions", "feedback", "interaction_embeddings"]
    interaction = by_table["interactions"]
    assert interaction["retrieval_quality"] == 0.9
    assert '"It ships tomorrow."' in interaction["corrections"]
    assert "bob@example.com" not in interaction["metadata"]
    assert interaction["metadata"].count("Parcels ship") == 20  # at most 20 chunks are kept
    assert by_table["feedback"]["comment"] == "too slow"
    assert by_table["decisions"]["chosen"] == "parcel_desk" and by_table["decisions"]["confidence"] == 0.6
    stored = np.frombuffer(base64.b64decode(by_table["interaction_embeddings"]["vector"]), dtype="<f4")
    np.testing.assert_allclose(stored, vector, rtol=1e-6)
    # logging it again makes rows with the same ids: nothing is stored twice
    again = interaction_rows(item, Sanitizer(redact=default_redactor().redact))
    assert [r.get("decision_id") or r.get("feedback_id") for _, r in again] == [
        r.get("decision_id") or r.get("feedback_id") for _, r in rows
    ]
