"""Annotation labels, reasons and annotators are written by people and stored redacted, on every backend."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from cl_plugin.privacy import Sanitizer
from cl_plugin.records import ProductionInteraction
from cl_plugin.store import Batch, Store
from cl_plugin.store.rows import row_from_interaction

EMAIL = "ada.lovelace@example.org"
CARD = "4111 1111 1111 1111"


def test_annotation_labels_reasons_and_annotators_are_stored_redacted(store: Store) -> None:
    item = ProductionInteraction(
        interaction_id="i1", timestamp=1.0, session_id="s", user_query="q", response="r"
    )
    store.write(Batch({"interactions": [row_from_interaction(item, Sanitizer())]}))
    store.queue.enqueue(
        [{"interaction_id": "i1", "priority": 1.0, "strategy": "manual", "selection_reason": f"from {EMAIL}"}]
    )
    [queued] = store.queue.items()
    labeled = store.queue.update(
        queued["item_id"], status="labeled", label={"agent": "HRM", "note": f"card {CARD}"}, annotator=EMAIL
    )

    assert labeled["label"] == {"agent": "HRM", "note": "card [CREDIT_CARD]"}
    assert (labeled["selection_reason"], labeled["annotator"]) == ("from [EMAIL]", "[EMAIL]")
    with store.engine.connect() as conn:
        raw = str(conn.execute(text("SELECT * FROM annotation_queue")).all())
    assert EMAIL not in raw and CARD not in raw


def test_a_refused_label_is_not_repeated_in_the_error(store: Store) -> None:
    with pytest.raises(Exception, match="label") as err:
        store.queue.update("no-such-item", status="skipped", label={"note": EMAIL})
    assert EMAIL not in str(err.value)
