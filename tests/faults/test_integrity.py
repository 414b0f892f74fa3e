"""Migrating a store that holds data loses nothing: 0001 to the newest schema with rows in every table.

(Tampered registry artifacts: tests/test_registry.py; a changed file of a model-set directory:
tests/test_modelset.py; torn and corrupted backups: tests/store/test_backup.py.)
"""

from __future__ import annotations

import io
import uuid
from importlib import resources
from pathlib import Path
from typing import Any

import orjson
import pytest
from alembic import command
from alembic.config import Config as AlembicConfig
from cl_plugin.graphs.mcts_agents import build_mcts_agent_graph
from cl_plugin.graphs.traffic import production_queries
from PIL import Image
from sqlalchemy import inspect, text

from cl_plugin import CaptureHandler
from cl_plugin.records import Attachment
from cl_plugin.store import Batch, Store
from tests.conftest import SCHEMA_HEAD


def store_at(url: str, revision: str) -> Store:
    store = Store.from_url(url)
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(resources.files("cl_plugin.store") / "migrations"))
    with store.engine.connect() as conn, conn.begin():
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)
    # It writes as the cl_plugin of that revision did, whose newest migration it was: without migrating first.
    store._schema_ready = True
    return store


def snapshot(store: Store) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table (but Alembic's), in a fixed order, with the columns in a fixed order."""
    out = {}
    with store.engine.connect() as conn:
        for table in sorted(inspect(conn).get_table_names()):
            if table == "alembic_version":
                continue
            cols = sorted(c["name"] for c in inspect(conn).get_columns(table))
            quoted = ", ".join(f'"{c}"' for c in cols)
            out[table] = sorted(
                (tuple(r) for r in conn.execute(text(f"SELECT {quoted} FROM {table}"))), key=repr
            )
    return out


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_migrating_from_0001_with_rows_in_every_table_keeps_every_row(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}" if backend == "sqlite" else request.getfixturevalue("pg_url")
    old = store_at(url, "0001")
    graph = build_mcts_agent_graph().compile()
    handler = CaptureHandler(old, journal_dir=tmp_path / "journal")
    run_ids = []
    for q in production_queries(15, seed=8):
        run_ids.append(uuid.uuid4())
        graph.invoke({"query": q.text}, config={"callbacks": [handler], "run_id": run_ids[-1]})
        handler.record_feedback(run_ids[-1], score=4.0, comment="fine", correction="Answer: 42")
    assert handler.flush(timeout=30)
    first = old.get_interaction(str(run_ids[0]))
    revised = {k: int(v) if isinstance(v, bool) else v for k, v in first.items()}  # the stored form
    revised["response"] = "a revised answer"
    revised.update({k: orjson.dumps(first[k]).decode() for k in ("metadata", "corrections")})
    old.write(Batch({"interactions": [revised]}))  # a changed re-log: the old content becomes a revision
    before = snapshot(old)
    assert set(before) == {"interactions", "interaction_revisions", "node_runs", "decisions", "feedback"}
    assert all(before.values()), {t: len(rows) for t, rows in before.items()}
    handler.close(timeout=30)  # closes the store too

    upgraded = Store.from_url(url).setup()
    try:
        assert upgraded.schema_version() == SCHEMA_HEAD
        after = snapshot(upgraded)
        assert {t: after[t] for t in before} == before  # every row, every value, no column changed
        assert all(not rows for t, rows in after.items() if t not in before)
        assert upgraded.get_interaction(str(run_ids[0]))["response"] == "a revised answer"
        assert len(upgraded.interaction_revisions(str(run_ids[0]))) == 1
        assert upgraded.count_interactions() == len(run_ids)
        assert upgraded.setup().schema_version() == SCHEMA_HEAD  # and again: idempotent, still the same rows
        assert snapshot(upgraded) == after
        # The tables added since take rows on the migrated database, and the old rows stay as they were.
        image = io.BytesIO()
        Image.new("RGB", (8, 8), (1, 2, 3)).save(image, "PNG")
        upgraded.feedback.record(
            run_ids[0],
            correction="Answer: 43",
            attachments=[Attachment("code", "answer = 43"), Attachment("image", image.getvalue())],
            idempotency_key="retry-1",
        )
        grown = snapshot(upgraded)
        new = ("attachments", "feedback_attachments", "feedback_requests")
        assert {t: len(grown[t]) for t in new} == {t: n for t, n in zip(new, (2, 2, 1), strict=True)}
        assert {t: grown[t] for t in before if t not in ("feedback", "interactions")} == {
            t: before[t] for t in before if t not in ("feedback", "interactions")
        }
        assert len(grown["feedback"]) == len(before["feedback"]) + 1
    finally:
        upgraded.close()
