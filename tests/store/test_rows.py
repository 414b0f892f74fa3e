"""Row building: the rows a reference-shaped record makes."""

from __future__ import annotations

import base64

import numpy as np

from cl_plugin.privacy import Sanitizer, default_redactor
from cl_plugin.records import ProductionInteraction
from cl_plugin.store.rows import interaction_rows


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
