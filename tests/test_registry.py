"""Model registry: versions, artifacts checked before loading, aliases with history, promote and rollback."""

from __future__ import annotations

import hashlib
import itertools
import threading
import time
import zipfile
from fractions import Fraction
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
import skops.io as sio
from alembic import command
from alembic.config import Config as AlembicConfig
from cl_plugin.graphs.tasks import sample_tasks
from sqlalchemy import text

from cl_plugin.errors import ArtifactIntegrityError, RegistryError, StoreError, UntrustedArtifactError
from cl_plugin.learning.rag import RagIndex
from cl_plugin.learning.registry import DataWindow, ModelRegistry
from cl_plugin.learning.router import MetaRouter
from cl_plugin.store import Store
from tests.conftest import SCHEMA_HEAD

TASKS = sample_tasks(48, seed=7)
QUERIES = [t.query for t in TASKS]
DOCS = [
    "The billing service listens on port 8443.",
    "Team Falcon maintains the billing service.",
    "The checkout service runs in us-east-2 with 3 retries.",
]


@pytest.fixture(scope="module")
def router() -> MetaRouter:
    return MetaRouter().fit(QUERIES, [t.family for t in TASKS])


@pytest.fixture
def registry(store: Store, tmp_path: Path) -> ModelRegistry:
    return ModelRegistry(store, tmp_path / "artifacts")


def _three_versions(registry: ModelRegistry, router: MetaRouter) -> None:
    for _ in range(3):
        registry.register("router", router)


def test_a_registered_router_loads_back_with_identical_predictions(
    registry: ModelRegistry, router: MetaRouter
) -> None:
    mv = registry.register(
        "router",
        router,
        metrics={"accuracy": 0.9},
        data_window={"start": 100.0, "end": 200.0, "count": 48},
        notes="first",
        created_by="trainer",
    )
    assert (mv.name, mv.version, mv.metrics, mv.notes) == ("router", 1, {"accuracy": 0.9}, "first")
    assert mv.data_window == DataWindow(100.0, 200.0, 48)
    assert mv.sha256 == hashlib.sha256(mv.artifact.read_bytes()).hexdigest()
    loaded = registry.load("router", 1)
    assert loaded is not router
    assert loaded.predict(QUERIES).tolist() == router.predict(QUERIES).tolist()
    np.testing.assert_array_equal(loaded.predict_proba(QUERIES), router.predict_proba(QUERIES))
    assert registry.versions("router") == [mv]


def test_a_bm25_index_loads_back_with_its_parameters_documents_and_results(registry: ModelRegistry) -> None:
    index = RagIndex(scorer="bm25", k1=1.2, b=0.6).add(DOCS)
    index.add_correction("how do I reset it", "Answer: hold the button", interaction_id="i-1")
    registry.register("rag_index", index)
    loaded = registry.load("rag_index", 1)
    assert (loaded.scorer, loaded.k1, loaded.b) == ("bm25", 1.2, 0.6)
    assert loaded.documents() == index.documents()
    assert loaded.search("reset the button", k=3) == index.search("reset the button", k=3)


def test_an_index_that_needs_an_embeddings_client_is_refused(registry: ModelRegistry) -> None:
    from langchain_core.embeddings import DeterministicFakeEmbedding

    with pytest.raises(RegistryError, match="rag_index"):
        registry.register("rag_index", RagIndex(embeddings=DeterministicFakeEmbedding(size=8)).add(DOCS))
    assert registry.versions("rag_index") == []


def test_an_index_backed_by_a_vector_store_is_refused_with_the_fix(registry: ModelRegistry) -> None:
    from langchain_core.embeddings import DeterministicFakeEmbedding
    from langchain_core.vectorstores import InMemoryVectorStore

    index = RagIndex(vector_store=InMemoryVectorStore(DeterministicFakeEmbedding(size=8))).add(DOCS)
    with pytest.raises(RegistryError, match=r"vector store.*RagIndex\(\)\.add\(index\.documents\(\)\)"):
        registry.register("rag_index", index)
    assert registry.versions("rag_index") == []


def test_a_registered_rag_index_loads_back_with_the_same_search_results(registry: ModelRegistry) -> None:
    index = RagIndex().add([{"id": f"d{i}", "text": t, "metadata": {"n": i}} for i, t in enumerate(DOCS)])
    registry.register("rag_index", index)
    loaded = registry.load("rag_index", 1)
    assert len(loaded) == 3 and loaded.metadata("d2") == {"n": 2}
    for query in ("billing port", "who maintains billing", "checkout retries"):
        assert loaded.search(query, k=3) == index.search(query, k=3)


def test_two_versions_load_side_by_side_as_independent_models(registry: ModelRegistry) -> None:
    registry.register("rag_index", RagIndex().add(DOCS[:1]))
    registry.register("rag_index", RagIndex().add(DOCS), parent=1)
    first, second = registry.load("rag_index", 1), registry.load("rag_index", 2)
    assert (len(first), len(second)) == (1, 3)
    first.add(["A new document about billing."])
    assert len(registry.load("rag_index", 1)) == 1 and len(second) == 3
    assert [v.parent for v in registry.versions("rag_index")] == [None, 1]


def test_promote_and_rollback_are_one_call_each_and_recorded_in_order(
    registry: ModelRegistry, router: MetaRouter
) -> None:
    _three_versions(registry, router)
    registry.set_alias("router", "candidate", 1, actor="ci")
    assert registry.promote("router", reason="first model").version == 1
    registry.set_alias("router", "candidate", 2)
    assert registry.promote("router", reason="better accuracy").version == 2
    assert registry.promote("router", 3, reason="hotfix").version == 3
    assert registry.rollback("router", reason="errors up").version == 2
    assert registry.rollback("router", reason="still bad").version == 1
    assert registry.get_alias("router", "production").version == 1
    moves = [
        (m.version, m.previous_version, m.action, m.reason)
        for m in registry.alias_history("router", "production")
    ]
    assert moves == [
        (1, None, "promote", "first model"),
        (2, 1, "promote", "better accuracy"),
        (3, 2, "promote", "hotfix"),
        (2, 3, "rollback", "errors up"),
        (1, 2, "rollback", "still bad"),
    ]


def test_alias_history_keeps_every_alias_move_with_its_actor(
    registry: ModelRegistry, router: MetaRouter
) -> None:
    _three_versions(registry, router)
    registry.set_alias("router", "candidate", 1, reason="nightly", actor="retrainer")
    registry.set_alias("router", "candidate", 1, reason="same again")  # not a move: not recorded
    registry.set_alias("router", "candidate", 3, reason="nightly", actor="retrainer")
    registry.set_alias("router", "shadow", 2)
    history = registry.alias_history("router")
    assert [(m.alias, m.version, m.previous_version, m.actor) for m in history] == [
        ("candidate", 1, None, "retrainer"),
        ("candidate", 3, 1, "retrainer"),
        ("shadow", 2, None, None),
    ]
    assert all(a.moved_at <= b.moved_at for a, b in itertools.pairwise(history))
    assert registry.get_alias("router", "production") is None
    assert registry.get_alias("router", "shadow").version == 2


def test_rollback_without_an_earlier_production_raises_a_clear_error(
    registry: ModelRegistry, router: MetaRouter
) -> None:
    registry.register("router", router)
    with pytest.raises(RegistryError, match="is not set and has no earlier version"):
        registry.rollback("router")
    registry.promote("router", 1)
    with pytest.raises(RegistryError, match="points at version 1 and has no earlier version"):
        registry.rollback("router")
    with pytest.raises(RegistryError, match="no 'candidate' alias to promote"):
        registry.promote("router")
    with pytest.raises(RegistryError, match="has no version 7"):
        registry.set_alias("router", "candidate", 7)


def test_a_tampered_artifact_is_refused_before_anything_is_deserialized(
    registry: ModelRegistry, router: MetaRouter, monkeypatch: pytest.MonkeyPatch
) -> None:
    mv = registry.register("router", router)
    data = bytearray(mv.artifact.read_bytes())
    data[len(data) // 2] ^= 0xFF
    mv.artifact.write_bytes(bytes(data))
    calls: list[object] = []
    monkeypatch.setattr(sio, "loads", lambda *a, **k: calls.append(a))
    monkeypatch.setattr(sio, "get_untrusted_types", lambda *a, **k: calls.append(a))
    with pytest.raises(ArtifactIntegrityError) as caught:
        registry.load("router", 1)
    err = caught.value
    assert isinstance(err, StoreError) and calls == []
    assert (err.expected, err.actual) == (mv.sha256, hashlib.sha256(bytes(data)).hexdigest())
    assert str(mv.artifact) in str(err) and mv.sha256 in str(err) and "Restore the file" in str(err)


def test_a_missing_artifact_is_refused(registry: ModelRegistry, router: MetaRouter) -> None:
    mv = registry.register("router", router)
    mv.artifact.unlink()
    with pytest.raises(ArtifactIntegrityError, match="is missing") as caught:
        registry.load("router", 1)
    assert caught.value.actual is None and caught.value.path == str(mv.artifact)


def test_an_artifact_with_an_untrusted_type_is_refused(registry: ModelRegistry, store: Store) -> None:
    with pytest.raises(UntrustedArtifactError, match=r"fractions\.Fraction"):
        registry.register("odd", {"weight": Fraction(1, 3)})
    # An artifact written by something else than the registry, with a valid hash, is refused on load.
    payload = sio.dumps({"format": 1, "kind": "object", "model": {"weight": Fraction(1, 3)}})
    digest = hashlib.sha256(payload).hexdigest()
    (registry.artifact_dir / "odd").mkdir(parents=True)
    (registry.artifact_dir / "odd" / "crafted.skops").write_bytes(payload)
    store.models.add_version(
        {"model_name": "odd", "sha256": digest, "artifact": "odd/crafted.skops", "created_at": time.time()}
    )
    with pytest.raises(UntrustedArtifactError, match="allow-list") as caught:
        registry.load("odd", 1)
    assert caught.value.types == ["fractions.Fraction"]


def test_the_watch_handle_picks_up_a_new_production_version_without_restart(
    registry: ModelRegistry,
) -> None:
    registry.register("rag_index", RagIndex().add(DOCS[:1]))
    registry.register("rag_index", RagIndex().add(DOCS))
    handle = registry.watch("rag_index", refresh_seconds=0.05)
    with pytest.raises(RegistryError, match="no 'production' alias to watch"):
        handle.get()
    registry.promote("rag_index", 1)
    first = handle.get()
    assert len(first) == 1 and handle.version == 1 and handle.get() is first
    registry.promote("rag_index", 2)
    seen: list[int] = []

    def serve() -> None:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and len(handle.get()) != 3:
            time.sleep(0.01)
        seen.append(len(handle.get()))

    threads = [threading.Thread(target=serve) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen == [3] * 4 and handle.version == 2


def test_the_watch_handle_keeps_serving_when_the_new_version_cannot_be_loaded(
    registry: ModelRegistry,
) -> None:
    registry.register("rag_index", RagIndex().add(DOCS[:1]))
    broken = registry.register("rag_index", RagIndex().add(DOCS))
    registry.promote("rag_index", 1)
    handle = registry.watch("rag_index", refresh_seconds=0)
    first = handle.get()
    broken.artifact.unlink()
    registry.promote("rag_index", 2)
    assert handle.get() is first and handle.version == 1


def test_invalid_names_and_metrics_are_refused(registry: ModelRegistry, router: MetaRouter) -> None:
    with pytest.raises(RegistryError, match="invalid model name"):
        registry.register("../escape", router)
    with pytest.raises(RegistryError, match="JSON-serializable"):
        registry.register("router", router, metrics={"when": object()})
    with pytest.raises(RegistryError, match="takes the keys start, end and count"):
        registry.register("router", router, data_window={"begin": 1.0})
    with pytest.raises(RegistryError, match="parent version 4"):
        registry.register("router", router, parent=4)
    assert registry.versions("router") == []


def test_concurrent_promotes_lose_no_history_row(registry: ModelRegistry, router: MetaRouter) -> None:
    for _ in range(4):
        registry.register("router", router)
    errors: list[Exception] = []

    def promote(version: int) -> None:
        try:
            for _ in range(3):
                registry.promote("router", version, reason=f"to {version}")
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=promote, args=(v,)) for v in (1, 2, 3, 4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    history = registry.alias_history("router", "production")
    # Each move starts where the previous one ended: no move was lost or applied on a stale read.
    assert all(b.previous_version == a.version for a, b in itertools.pairwise(history))
    assert history[-1].version == registry.get_alias("router", "production").version


def test_migrating_from_0002_keeps_the_data_and_adds_the_registry(store_url: str, tmp_path: Path) -> None:
    old = Store.from_url(store_url)
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(resources.files("cl_plugin.store") / "migrations"))
    with old.engine.connect() as conn, conn.begin():
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0002")
        # Rows written under 0002 (through SQL: a store's own writes would migrate the database first).
        conn.execute(
            text(
                "INSERT INTO interactions (interaction_id, timestamp, session_id, user_query, response) "
                "VALUES ('i-1', 1.0, 's', 'q', 'r')"
            )
        )
        conn.execute(
            text(
                "INSERT INTO annotation_queue (item_id, interaction_id, status, priority, strategy, "
                "selection_reason, created_at, updated_at) "
                "VALUES ('q-1', 'i-1', 'pending', 0.5, 'uncertainty', '', 1.0, 1.0)"
            )
        )
    assert old.schema_version() == "0002"
    upgraded = old.setup()
    try:
        assert upgraded.schema_version() == SCHEMA_HEAD
        assert upgraded.get_interaction("i-1")["user_query"] == "q"
        assert [item["interaction_id"] for item in upgraded.queue.items()] == ["i-1"]
        registry = ModelRegistry(upgraded, tmp_path / "artifacts")
        registry.register("rag_index", RagIndex().add(DOCS))
        assert registry.promote("rag_index", 1).version == 1
    finally:
        upgraded.close()


def test_an_artifact_file_outside_the_registry_is_checked_against_its_digest(
    router: MetaRouter, tmp_path: Path
) -> None:
    from cl_plugin.learning.registry import read_artifact, write_artifact

    path = tmp_path / "router.skops"
    digest = write_artifact(router, path, name="router")
    np.testing.assert_array_equal(
        read_artifact(path, digest, name="router").predict_proba(QUERIES), router.predict_proba(QUERIES)
    )
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(
        ArtifactIntegrityError, match=r"artifact .*router\.skops of model 'router' has sha256"
    ):
        read_artifact(path, digest, name="router")


def test_the_store_lists_every_registered_model(registry: ModelRegistry, router: MetaRouter) -> None:
    assert registry.store.models.names() == []
    registry.register("router", router)
    registry.register("rag_index", RagIndex().add(DOCS))
    registry.register("router", router)
    assert registry.store.models.names() == ["rag_index", "router"]


def test_an_artifact_naming_a_module_from_before_the_layout_moved_still_loads(
    router: MetaRouter, tmp_path: Path
) -> None:
    from cl_plugin.learning.registry import MOVED_MODULES, read_artifact, write_artifact

    written = tmp_path / "now.skops"
    write_artifact(router, written, name="router")
    # The same artifact as a version before the move wrote it: its types name cl_plugin.learning.router.
    old = tmp_path / "old.skops"
    with zipfile.ZipFile(written) as now, zipfile.ZipFile(old, "w") as before:
        for info in now.infolist():
            data = now.read(info)
            if info.filename == "schema.json":
                data = data.replace(b'"cl_plugin.learning.router"', b'"cl_plugin.learning.router"')
                assert b'"cl_plugin.learning.router"' in data
            before.writestr(info, data)
    payload = old.read_bytes()
    assert sio.get_untrusted_types(data=payload) == ["cl_plugin.learning.router.MetaRouter"]
    assert MOVED_MODULES["cl_plugin.learning.router"] == "cl_plugin.learning.router"

    loaded = read_artifact(old, hashlib.sha256(payload).hexdigest(), name="router")

    assert type(loaded) is MetaRouter
    np.testing.assert_array_equal(loaded.predict_proba(QUERIES), router.predict_proba(QUERIES))
    assert old.read_bytes() == payload  # the file and its recorded digest stay as written
