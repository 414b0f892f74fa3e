"""The annotation queue (``store.queue``), on every backend: enqueue, read, label, skip, migrate."""

from __future__ import annotations

from importlib import resources

import pytest
from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import inspect

from cl_plugin.errors import InvalidRecordError, StoreError
from cl_plugin.records import ActiveLearningCandidate
from cl_plugin.store import Batch, Store
from cl_plugin.store.engine import WRITE
from tests.conftest import SCHEMA_HEAD

T0 = 1_700_000_000.0


def _candidate(iid: str, priority: float = 0.5, reason: str = "rated 1 star") -> ActiveLearningCandidate:
    return ActiveLearningCandidate(
        interaction_id=iid,
        user_query=f"query {iid}",
        agent_selected="HRM",
        priority=priority,
        selection_reason=reason,
        strategy="hybrid",
    )


def _interaction(i: int) -> dict:
    return {
        "interaction_id": f"id-{i:05d}",
        "timestamp": T0 + i,
        "session_id": "s",
        "user_query": f"question {i}",
        "response": "answer",
        "user_feedback_score": 2.0,
    }


def test_enqueue_stores_pending_items_with_their_reason(store: Store) -> None:
    reason = "router unsure: HRM 0.41 vs MCTS 0.38 (margin 0.03); rated 2 stars"
    assert store.queue.enqueue([_candidate("a", 0.9, reason), _candidate("b", 0.4)]) == 2
    items = store.queue.items()
    assert [i["interaction_id"] for i in items] == ["a", "b"]  # same enqueue: highest priority first
    first = items[0]
    assert first["status"] == "pending" and first["priority"] == pytest.approx(0.9)
    assert first["selection_reason"] == reason and first["strategy"] == "hybrid"
    assert first["label"] is None and first["annotator"] is None
    assert first["created_at"] == first["updated_at"] > 0
    assert len({i["item_id"] for i in items}) == 2


def test_enqueue_is_idempotent_whatever_the_status(store: Store) -> None:
    assert store.queue.enqueue([_candidate("a"), _candidate("a"), _candidate("b")]) == 2
    assert store.queue.enqueue([_candidate("a"), _candidate("b")]) == 0
    [item_a] = [i for i in store.queue.items() if i["interaction_id"] == "a"]
    store.queue.update(item_a["item_id"], status="labeled", label={"agent": "TRM"})
    assert store.queue.enqueue([_candidate("a", 0.99), _candidate("c")]) == 1
    assert sorted(i["interaction_id"] for i in store.queue.items()) == ["a", "b", "c"]
    assert store.queue.queued_ids() == {"a", "b", "c"}
    assert store.queue.enqueue([]) == 0


def test_enqueue_accepts_dicts(store: Store) -> None:
    row = {"interaction_id": "a", "priority": 1, "strategy": "failure", "selection_reason": "thumbs down"}
    assert store.queue.enqueue([row]) == 1
    assert store.queue.items()[0]["strategy"] == "failure"


@pytest.mark.parametrize(
    ("candidate", "field"),
    [
        ({"interaction_id": "", "priority": 1.0}, "interaction_id"),
        ({"priority": 1.0}, "interaction_id"),
        ({"interaction_id": "a", "priority": float("nan")}, "priority"),
        ({"interaction_id": "a", "priority": "high"}, "priority"),
    ],
)
def test_enqueue_rejects_candidates_it_cannot_store(store: Store, candidate: dict, field: str) -> None:
    with pytest.raises(InvalidRecordError) as info:
        store.queue.enqueue([candidate])
    assert info.value.field == field
    assert store.queue.items() == []


def test_labeling_and_skipping_move_items_between_statuses(store: Store) -> None:
    store.queue.enqueue([_candidate("a"), _candidate("b"), _candidate("c")])
    ids = {i["interaction_id"]: i["item_id"] for i in store.queue.items()}
    label = {"correct_agent": "TRM", "ok": False, "notes": ["ünïcode ✓"]}
    labeled = store.queue.update(ids["a"], status="labeled", label=label, annotator="ana")
    assert labeled["status"] == "labeled" and labeled["label"] == label and labeled["annotator"] == "ana"
    assert labeled["updated_at"] >= labeled["created_at"]
    store.queue.update(ids["b"], status="skipped", annotator="li")
    assert [i["interaction_id"] for i in store.queue.items(status="pending")] == ["c"]
    assert [i["interaction_id"] for i in store.queue.items(status="skipped")] == ["b"]
    assert [i["interaction_id"] for i in store.queue.items("labeled")] == ["a"]
    assert len(store.queue.items(limit=2)) == 2

    # A skipped item can go back to the queue; a label can be corrected.
    assert store.queue.update(ids["b"], status="pending")["status"] == "pending"
    assert store.queue.update(ids["a"], status="labeled", label=3)["label"] == 3


def test_update_rejects_forbidden_transitions_and_bad_labels(store: Store) -> None:
    store.queue.enqueue([_candidate("a")])
    [item] = store.queue.items()
    item_id = item["item_id"]
    with pytest.raises(InvalidRecordError, match="label is required") as info:
        store.queue.update(item_id, status="labeled")
    assert info.value.field == "label"
    with pytest.raises(InvalidRecordError, match="only allowed"):
        store.queue.update(item_id, status="skipped", label="x")
    with pytest.raises(InvalidRecordError, match="JSON-serializable"):
        store.queue.update(item_id, status="labeled", label={"x": object()})
    store.queue.update(item_id, status="labeled", label="TRM")
    with pytest.raises(InvalidRecordError, match="'labeled' and cannot become 'skipped'") as info:
        store.queue.update(item_id, status="skipped")
    assert info.value.interaction_id == "a" and info.value.field == "status"
    assert store.queue.items()[0]["label"] == "TRM"


def test_unknown_item_ids_and_statuses_are_clear_errors(store: Store) -> None:
    with pytest.raises(StoreError, match="no annotation queue item with id 'nope'"):
        store.queue.update("nope", status="skipped")
    with pytest.raises(InvalidRecordError, match="unknown annotation status 'done'; use one of: pending"):
        store.queue.update("nope", status="done")
    with pytest.raises(InvalidRecordError, match="unknown annotation status"):
        store.queue.items(status="done")
    with pytest.raises(ValueError, match="limit"):
        store.queue.items(limit=-1)


def test_purge_removes_queue_items_with_their_interaction(store: Store) -> None:
    store.write(Batch({"interactions": [_interaction(i) for i in range(4)]}))
    store.queue.enqueue([_candidate(f"id-{i:05d}") for i in range(4)])
    deleted = store.retention.purge(T0 + 2)
    assert deleted["annotation_queue"] == 2
    assert store.queue.queued_ids() == {"id-00002", "id-00003"}


def _alembic_config(store: Store) -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(resources.files("cl_plugin.store") / "migrations"))
    return cfg


def test_setup_upgrades_a_0001_database_without_losing_data(store_url: str) -> None:
    store = Store.from_url(store_url)
    try:
        cfg = _alembic_config(store)
        with store.engine.connect().execution_options(**WRITE) as conn, conn.begin():
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "0001")
        assert store.schema_version() == "0001"
        assert "annotation_queue" not in inspect(store.engine).get_table_names()
        store._schema_ready = True  # write as the cl_plugin of 0001 did: without migrating first
        rows = [_interaction(i) for i in range(25)]
        feedback = {
            "feedback_id": "f1",
            "interaction_id": "id-00003",
            "key": "user_feedback",
            "score": 1.0,
            "source": "user",
            "created_at": T0 + 100,
        }
        store.write(Batch({"interactions": rows, "feedback": [feedback]}))

        store.setup()
        assert store.schema_version() == SCHEMA_HEAD
        assert store.count_interactions() == 25
        assert store.get_interaction("id-00003")["user_feedback_score"] == 1.0
        assert [f["feedback_id"] for f in store.feedback.history("id-00003")] == ["f1"]
        indexes = {ix["name"] for ix in inspect(store.engine).get_indexes("annotation_queue")}
        assert {"ux_annotation_queue_interaction_id", "ix_annotation_queue_status_created"} <= indexes
        assert store.queue.enqueue([_candidate("id-00003")]) == 1
        store.setup()  # idempotent at the newest version
        assert store.schema_version() == SCHEMA_HEAD and store.queue.queued_ids() == {"id-00003"}
    finally:
        store.close()
