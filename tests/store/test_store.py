"""The store's contract, run on SQLite file, SQLite in memory and PostgreSQL."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import inspect, text

from cl_plugin.errors import ConfigError, UnknownInteractionError
from cl_plugin.privacy import Sanitizer
from cl_plugin.records import SPEC_FIELDS, ProductionInteraction
from cl_plugin.store import Batch, Store
from cl_plugin.store.rows import feedback_row, row_from_interaction
from tests.conftest import SCHEMA_HEAD

T0 = 1_700_000_000.0


def make(i: int, **over) -> dict:
    base = {
        "interaction_id": f"id-{i:05d}",
        "timestamp": T0 + i,
        "session_id": f"s{i % 3}",
        "user_query": f"query {i}",
        "response": f"response {i}",
        "agent_selected": ("HRM", "TRM", "MCTS")[i % 3],
        "agent_confidence": 0.5 + (i % 5) / 10,
        "user_feedback_score": float(1 + i % 5),
        "latency_ms": 100.0 + i,
        "tokens_used": 10 * i,
        "cost": 0.001 * i,
        "error_occurred": i % 7 == 0,
        "hallucination_detected": None if i % 2 else i % 4 == 0,
        "retrieval_failed": None,
        "retrieval_quality": 0.9,
        "metadata": {"i": i, "tags": ["a", "b"]},
    }
    base.update(over)
    return row_from_interaction(ProductionInteraction(**base), Sanitizer())


def write(store: Store, rows: list[dict]):
    b = Batch()
    for r in rows:
        b.add("interactions", r)
    return store.write(b)


def test_setup_is_idempotent_and_records_the_schema_version(store: Store) -> None:
    assert store.schema_version() == SCHEMA_HEAD
    store.setup()
    assert store.schema_version() == SCHEMA_HEAD
    tables = set(inspect(store.engine).get_table_names())
    assert {"interactions", "node_runs", "decisions", "feedback", "interaction_revisions"} <= tables


def test_interactions_table_has_the_spec_columns_with_their_types(store: Store) -> None:
    cols = {c["name"]: c for c in inspect(store.engine).get_columns("interactions")}
    assert set(SPEC_FIELDS) <= set(cols)
    assert {"run_id", "graph_name", "user_id", "corrections"} <= set(cols)
    expected = {
        "interaction_id": "TEXT",
        "timestamp": "REAL",
        "tokens_used": "INTEGER",
        "hallucination_detected": "INTEGER",
        "metadata": "TEXT",
    }
    for name, sql_type in expected.items():
        got = str(cols[name]["type"]).upper()
        if store.dialect == "postgresql" and sql_type == "REAL":
            sql_type = "DOUBLE PRECISION"  # PostgreSQL's REAL is single precision
        assert got == sql_type, name
    for name in ("timestamp", "session_id", "user_query", "response"):
        assert cols[name]["nullable"] is False


def test_spec_query_indices_exist(store: Store) -> None:
    indexed = {tuple(ix["column_names"]) for ix in inspect(store.engine).get_indexes("interactions")}
    assert any(cols[0] == "timestamp" for cols in indexed)
    assert ("session_id",) in indexed
    assert ("user_feedback_score",) in indexed
    assert ("agent_selected", "timestamp") in indexed


def test_written_rows_read_back_with_spec_fields(store: Store) -> None:
    assert write(store, [make(i) for i in range(10)]).inserted == 10
    row = store.get_interaction("id-00004")
    assert row is not None
    assert row["metadata"] == {"i": 4, "tags": ["a", "b"]}
    assert row["hallucination_detected"] is True
    assert row["retrieval_failed"] is None
    assert row["error_occurred"] is False
    assert row["timestamp"] == T0 + 4  # full double precision on every backend
    assert set(SPEC_FIELDS) <= set(row)


def test_rewriting_identical_rows_is_a_no_op(store: Store) -> None:
    rows = [make(i) for i in range(5)]
    write(store, rows)
    res = write(store, rows)
    assert (res.inserted, res.unchanged, res.updated) == (0, 5, 0)
    assert store.count_interactions() == 5
    assert store.interaction_revisions("id-00001") == []


def test_rewriting_changed_row_updates_it_and_keeps_history(store: Store) -> None:
    write(store, [make(1)])
    res = write(store, [make(1, response="better answer"), make(2)])
    assert (res.inserted, res.unchanged, res.updated) == (1, 0, 1)
    assert store.get_interaction("id-00001")["response"] == "better answer"
    history = store.interaction_revisions("id-00001")
    assert [h["previous"]["response"] for h in history] == ["response 1"]


def test_duplicate_ids_within_one_batch_keep_the_last_and_the_history(store: Store) -> None:
    res = write(store, [make(1), make(1, response="second"), make(1, response="third")])
    assert (res.inserted, res.updated) == (1, 2)
    assert store.get_interaction("id-00001")["response"] == "third"
    assert [h["previous"]["response"] for h in store.interaction_revisions("id-00001")] == [
        "response 1",
        "second",
    ]


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({"max_feedback_score": 2.0}, lambda i: 1 + i % 5 <= 2),
        ({"min_feedback_score": 4.0}, lambda i: 1 + i % 5 >= 4),
        ({"min_feedback_score": 2.0, "max_feedback_score": 3.0}, lambda i: 2 <= 1 + i % 5 <= 3),
        ({"agent": "TRM"}, lambda i: i % 3 == 1),
        ({"agent": ["TRM", "MCTS"]}, lambda i: i % 3 != 0),
        ({"session_id": "s2"}, lambda i: i % 3 == 2),
        ({"start_time": T0 + 10, "end_time": T0 + 20}, lambda i: 10 <= i < 20),
        ({"error_occurred": True}, lambda i: i % 7 == 0),
        ({"hallucination_detected": False}, lambda i: i % 2 == 0 and i % 4 != 0),
        ({"has_feedback": True}, lambda i: True),
    ],
)
def test_query_filters_match_a_python_filter(store: Store, filters, expected) -> None:
    write(store, [make(i) for i in range(40)])
    got = [r["interaction_id"] for r in store.query_interactions(limit=None, **filters)]
    want = [f"id-{i:05d}" for i in reversed(range(40)) if expected(i)]
    assert got == want
    assert store.count_interactions(**filters) == len(want)


def test_limit_offset_and_order(store: Store) -> None:
    write(store, [make(i) for i in range(20)])
    newest = [r["interaction_id"] for r in store.query_interactions(limit=5, offset=2)]
    assert newest == [f"id-{i:05d}" for i in (17, 16, 15, 14, 13)]
    oldest = [r["interaction_id"] for r in store.query_interactions(limit=3, order="oldest")]
    assert oldest == ["id-00000", "id-00001", "id-00002"]


def test_bad_query_arguments_raise_clear_errors(store: Store) -> None:
    with pytest.raises(TypeError, match="unexpected keyword argument 'agnet'"):
        store.query_interactions(agnet="HRM")
    with pytest.raises(ValueError, match="limit and offset must be >= 0"):
        store.query_interactions(limit=-1)
    with pytest.raises(ValueError, match="order must be"):
        store.query_interactions(order="sideways")


def test_filter_values_are_bound_not_spliced(store: Store) -> None:
    write(store, [make(i) for i in range(3)])
    assert store.query_interactions(agent="HRM' OR '1'='1") == []
    assert store.count_interactions() == 3


def test_streaming_iteration_visits_every_row_once_in_chunks(store: Store) -> None:
    # Rows sharing a timestamp must not be skipped or repeated across chunk boundaries.
    write(store, [make(i, timestamp=T0 + i // 4) for i in range(103)])
    chunks = list(store.iter_interactions(chunk_size=10))
    assert [len(c) for c in chunks] == [10] * 10 + [3]
    ids = [r["interaction_id"] for c in chunks for r in c]
    assert sorted(ids) == sorted(f"id-{i:05d}" for i in range(103))
    assert len(set(ids)) == 103
    assert sum(len(c) for c in store.iter_interactions(chunk_size=7, agent="HRM")) == 35


def test_statistics_are_computed_from_the_rows(store: Store) -> None:
    rows = [make(i) for i in range(10)]
    write(store, rows)
    stats = store.statistics()
    assert stats["total_interactions"] == 10
    assert stats["avg_feedback_score"] == pytest.approx(sum(1 + i % 5 for i in range(10)) / 10)
    assert stats["error_rate"] == pytest.approx(2 / 10)  # i = 0 and 7
    known = [i for i in range(10) if i % 2 == 0]
    assert stats["hallucination_rate"] == pytest.approx(sum(i % 4 == 0 for i in known) / len(known))
    assert stats["retrieval_failure_rate"] is None  # never known: missing, not zero
    assert stats["agent_distribution"] == {"HRM": 4, "MCTS": 3, "TRM": 3}
    assert stats["total_tokens"] == sum(10 * i for i in range(10))


def test_purge_removes_old_interactions_and_their_children_in_batches(store: Store) -> None:
    write(store, [make(i) for i in range(50)])
    b = Batch()
    for i in (3, 40):
        b.add(
            "node_runs",
            {
                "run_id": f"r{i}",
                "interaction_id": f"id-{i:05d}",
                "kind": "node",
                "start_time": T0 + i,
                "status": "ok",
            },
        )
        b.add(
            "feedback",
            {
                "feedback_id": f"f{i}",
                "interaction_id": f"id-{i:05d}",
                "key": "user_score",
                "score": 1.0,
                "source": "user",
                "created_at": T0 + i,
            },
        )
    store.write(b)
    write(store, [make(3, response="changed")])
    deleted = store.retention.purge(T0 + 30, batch_size=7)
    assert deleted["interactions"] == 30
    assert deleted["node_runs"] == 1 and deleted["feedback"] == 1 and deleted["interaction_revisions"] == 1
    assert store.count_interactions() == 20
    assert store.count_interactions(end_time=T0 + 30) == 0
    with store.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM node_runs")).scalar_one() == 1


def test_unsupported_url_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="supported databases are sqlite and postgresql"):
        Store.from_url("mysql://root@localhost/test")
    with pytest.raises(ConfigError, match="cannot be parsed"):
        Store.from_url("not a url")


def test_sqlite_file_uses_wal_and_secure_delete(tmp_path) -> None:
    s = Store.from_url(f"sqlite:///{tmp_path / 'x.db'}").setup()
    with s.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA secure_delete").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000
    s.close()


def test_setup_upgrades_an_existing_database_without_losing_rows(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'x.db'}"
    s = Store.from_url(url).setup()
    write(s, [make(i) for i in range(5)])
    s.close()
    again = Store.from_url(url).setup()
    assert again.count_interactions() == 5
    again.close()


def test_timestamps_order_newest_first_by_default(store: Store) -> None:
    now = time.time()
    write(store, [make(1, timestamp=now - 10), make(2, timestamp=now)])
    assert [r["interaction_id"] for r in store.query_interactions()] == ["id-00002", "id-00001"]


def test_row_columns_match_the_table_in_order() -> None:
    from cl_plugin.store.rows import INTERACTION_COLUMNS
    from cl_plugin.store.tables import Interaction

    assert list(INTERACTION_COLUMNS) == [c.name for c in Interaction.__table__.columns]


def feedback_batch(row: dict) -> Batch:
    return Batch({"feedback": [row]})


def test_feedback_copies_the_latest_user_score_and_keeps_every_entry(store: Store) -> None:
    write(store, [make(1, interaction_id="f1", user_feedback_score=None)])
    s = Sanitizer()
    store.write(feedback_batch(feedback_row("f1", s, score=2.0, created_at=1.0)))
    store.write(
        feedback_batch(feedback_row("f1", s, thumbs="up", correction="better answer", created_at=2.0))
    )
    store.write(
        feedback_batch(
            feedback_row("f1", s, score=0.2, source="llm_judge", key="faithfulness", created_at=3.0)
        )
    )
    got = store.get_interaction("f1")
    assert got is not None
    assert (got["user_feedback_score"], got["thumbs_up_down"], got["corrections"]) == (
        2.0,
        "up",
        ["better answer"],
    )
    assert [(f["source"], f["score"]) for f in store.feedback.history("f1")] == [
        ("user", 2.0),
        ("user", None),
        ("llm_judge", 0.2),
    ]


def test_feedback_that_comes_before_its_interaction_is_applied_when_it_arrives(store: Store) -> None:
    early = feedback_row("late", Sanitizer(), score=5.0, correction="fixed")
    store.write(feedback_batch(early))
    write(store, [make(2, interaction_id="late", user_feedback_score=None)])
    got = store.get_interaction("late")
    assert got is not None and got["user_feedback_score"] == 5.0 and got["corrections"] == ["fixed"]


def test_feedback_for_an_id_that_does_not_exist_is_refused(store: Store) -> None:
    with pytest.raises(UnknownInteractionError, match="no interaction with id 'nope'"):
        store.feedback.record("nope", score=3.0)
    assert store.feedback.history("nope") == []


def test_the_store_docstring_examples_run() -> None:
    import doctest

    import cl_plugin.store.store

    assert doctest.testmod(cl_plugin.store.store).failed == 0
