"""First use of a store: writers set the schema up, readers raise with the fix, and a table or column that
goes missing later is an error with the fix, never an outage."""

from __future__ import annotations

import logging
from importlib import resources

import pytest
from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import text

from cl_plugin import CaptureHandler
from cl_plugin.errors import StoreSchemaError
from cl_plugin.store import Batch, Store
from tests.conftest import SCHEMA_HEAD
from tests.user_graph import QUESTIONS, serve


def migrate_to(store: Store, revision: str) -> None:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(resources.files("cl_plugin.store") / "migrations"))
    with store.engine.connect() as conn, conn.begin():
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)


# -- writers set up -------------------------------------------------------------------------------------


def test_a_handler_on_a_store_nobody_set_up_stores_every_run(store_url: str) -> None:
    store = Store.from_url(store_url)
    handler = CaptureHandler(store)
    try:
        ids = serve(handler)
        assert handler.flush(timeout=30) is True
        assert store.schema_version() == SCHEMA_HEAD
        stored = {r["interaction_id"]: r for r in store.query_interactions(limit=None)}
        assert set(stored) == set(ids)
        assert stored[ids[0]]["response"] == "[billing] thanks, we are on it"
        assert {r["name"] for r in store.node_runs(ids[1]) if r["name"] in ("classify", "reply")} == {
            "classify",
            "reply",
        }
        stats = handler.stats()
        assert stats["written"] >= 3 * 3  # an interaction and at least two node runs each
        assert stats["spilled"] == stats["dropped"] == stats["rejected"] == 0
        assert stats["last_error"] is None and stats["waiting_in_journal"] is False
    finally:
        handler.close(timeout=30)


def test_the_first_write_sets_up_a_store_nobody_set_up(store_url: str) -> None:
    store = Store.from_url(store_url)
    try:
        store.queue.enqueue([])  # no rows: nothing to write, and nothing set up
        assert store.schema_version() is None
        row = {
            "interaction_id": "w-1",
            "timestamp": 1.0,
            "session_id": "s",
            "user_query": "q",
            "response": "r",
        }
        assert store.write(Batch({"interactions": [row]})).inserted == 1
        assert store.schema_version() == SCHEMA_HEAD
        assert store.get_interaction("w-1")["response"] == "r"
    finally:
        store.close()


def test_a_writer_brings_a_database_behind_head_up_to_date_and_keeps_its_rows(store_url: str) -> None:
    store = Store.from_url(store_url)
    migrate_to(store, "0002")
    with store.engine.connect() as conn, conn.begin():
        conn.execute(
            text(
                "INSERT INTO interactions (interaction_id, timestamp, session_id, user_query, response) "
                "VALUES ('old-1', 1.0, 's', 'an old question', 'an old answer')"
            )
        )
    handler = CaptureHandler(store)
    try:
        assert store.schema_version() == SCHEMA_HEAD  # taking the store migrated it
        ids = serve(handler, QUESTIONS[:1])
        assert handler.flush(timeout=30) is True
        assert {r["interaction_id"] for r in store.query_interactions(limit=None)} == {"old-1", *ids}
    finally:
        handler.close(timeout=30)


# -- readers raise with the fix -------------------------------------------------------------------------


def test_a_reader_of_a_database_nobody_set_up_is_told_how_and_nothing_is_migrated(store_url: str) -> None:
    store = Store.from_url(store_url)
    try:
        for read in (store.query_interactions, store.count_interactions, store.statistics):
            with pytest.raises(StoreSchemaError) as err:
                read()
            assert "no cl_plugin tables yet" in str(err.value)
            assert "cl-plugin migrate" in str(err.value) and "setup()" in str(err.value)
        assert store.schema_version() is None
        assert store.setup().query_interactions() == []  # the fix the message names works
    finally:
        store.close()


def test_a_reader_of_a_database_behind_head_is_told_how_and_nothing_is_migrated(store_url: str) -> None:
    store = Store.from_url(store_url)
    try:
        migrate_to(store, "0002")
        with pytest.raises(
            StoreSchemaError, match=rf"schema version 0002, older than .*{SCHEMA_HEAD}"
        ) as err:
            store.query_interactions()
        assert "cl-plugin migrate" in str(err.value) and "setup()" in str(err.value)
        with pytest.raises(StoreSchemaError):
            store.models.names()  # a table the old schema lacks: the same error, not "no such table"
        assert store.schema_version() == "0002"
    finally:
        store.close()


def test_a_database_a_newer_cl_plugin_migrated_is_neither_read_nor_migrated(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'newer.db'}"
    Store.from_url(url).setup().close()
    store = Store.from_url(url)
    try:
        with store.engine.connect() as conn, conn.begin():
            conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
        with pytest.raises(StoreSchemaError, match=r"newer cl_plugin.*pip install -U cl-plugin"):
            store.count_interactions()
        with pytest.raises(StoreSchemaError, match="newer cl_plugin"):
            store.setup()
        assert store.schema_version() == "9999"
    finally:
        store.close()


# -- a table or column missing later --------------------------------------------------------------------


@pytest.mark.parametrize(
    "break_sql, repair_sql",
    [
        pytest.param(
            "ALTER TABLE node_runs RENAME TO node_runs_moved",
            "ALTER TABLE node_runs_moved RENAME TO node_runs",
            id="table",
        ),
        pytest.param(
            "ALTER TABLE interactions RENAME COLUMN graph_name TO graph_label",
            "ALTER TABLE interactions RENAME COLUMN graph_label TO graph_name",
            id="column",
        ),
    ],
)
def test_a_missing_table_or_column_is_an_error_with_the_fix_logged_once_and_not_an_outage(
    store_url: str, break_sql: str, repair_sql: str, tmp_path, caplog: pytest.LogCaptureFixture
) -> None:
    store = Store.from_url(store_url)
    handler = CaptureHandler(store, journal_dir=tmp_path / "journal", flush_interval=0.02, buffer_size=5)
    try:
        with store.transaction() as conn:
            conn.exec_driver_sql(break_sql)
        caplog.set_level(logging.WARNING, logger="cl_plugin")
        ids = serve(handler)
        with pytest.raises(StoreSchemaError) as err:
            handler.flush(timeout=30)
        message = str(err.value)
        assert "cl-plugin migrate" in message and "Store.setup()" in message
        assert str(tmp_path / "journal") in message  # where the rows wait
        ids += serve(handler, QUESTIONS[:1])  # more batches meet the same missing table
        with pytest.raises(StoreSchemaError):
            handler.flush(timeout=30)

        errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(errors) == 1 and "cl-plugin migrate" in errors[0].getMessage()
        assert not any("unavailable" in r.getMessage() for r in caplog.records)  # not called an outage
        stats = handler.stats()
        assert stats["store_available"] is True and stats["spilled"] > 0 and stats["rejected"] == 0
        assert stats["last_error"] is not None

        with store.transaction() as conn:  # the user restores the table; the journal is replayed
            conn.exec_driver_sql(repair_sql)
        assert handler.flush(timeout=30) is True
        assert {r["interaction_id"] for r in store.query_interactions(limit=None)} == set(ids)
        assert handler.stats()["replayed"] == handler.stats()["spilled"]
    finally:
        handler.close(timeout=30)


def test_close_raises_the_schema_error_and_still_closes(store_url: str, tmp_path) -> None:
    store = Store.from_url(store_url)
    handler = CaptureHandler(store, journal_dir=tmp_path / "journal")
    with store.transaction() as conn:
        conn.exec_driver_sql("ALTER TABLE node_runs RENAME TO node_runs_moved")
    serve(handler, QUESTIONS[:1])
    with pytest.raises(StoreSchemaError, match="cl-plugin migrate"):
        handler.close(timeout=30)
    with pytest.raises(RuntimeError, match="closed"):
        handler.writer.submit(list, None)
