"""ModelSet: router, index and replay saved and loaded together, from a directory or a registry."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from cl_plugin.errors import ArtifactIntegrityError
from cl_plugin.learning.labels import ReplayBuffer, RoutingLabel
from cl_plugin.learning.modelset import ModelSet
from cl_plugin.learning.rag import RagIndex
from cl_plugin.learning.registry import DataWindow, ModelRegistry
from cl_plugin.learning.router import MetaRouter
from cl_plugin.store import Store

QUERIES = ["square root of 2 to 4 decimals", "order jobs B and C", "best subset of 3, 5 and 7 under 9"]
AGENTS = ["TRM", "HRM", "MCTS"]
NAMES = {"router": "router", "rag_index": "rag_index", "replay": "router-replay"}


@pytest.fixture
def model_set() -> ModelSet:
    router = MetaRouter().fit(QUERIES * 3, AGENTS * 3)
    rag = RagIndex(scorer="bm25").add([{"id": "d1", "text": "Newton's method refines a root"}])
    replay = ReplayBuffer(capacity=10).add(
        RoutingLabel(str(i), q, a, 1.0, "metadata")
        for i, (q, a) in enumerate(zip(QUERIES, AGENTS, strict=True))
    )
    return ModelSet(router, rag, replay)


def test_a_saved_set_loads_back_whole(model_set: ModelSet, tmp_path: Path) -> None:
    window = DataWindow(1.0, 2.0, 9)
    model_set.save(tmp_path / "v1", metrics={"accuracy": 0.9}, parent="models/v0", data_window=window)
    loaded = ModelSet.load(tmp_path / "v1")
    np.testing.assert_array_equal(
        loaded.router.predict_proba(QUERIES), model_set.router.predict_proba(QUERIES)
    )
    assert (
        loaded.rag is not None
        and loaded.rag.scorer == "bm25"
        and loaded.rag.search("refine a root", 1)[0][0] == "d1"
    )
    assert loaded.replay.counts() == model_set.replay.counts()
    assert loaded.info["metrics"] == {"accuracy": 0.9} and loaded.info["parent"] == "models/v0"
    assert loaded.info["data_window"] == {"start": 1.0, "end": 2.0, "count": 9}


def test_saving_over_a_set_replaces_it_and_leaves_no_staging_files(
    model_set: ModelSet, tmp_path: Path
) -> None:
    model_set.save(tmp_path / "v1", metrics={"round": 1})
    ModelSet(model_set.router).save(tmp_path / "v1", metrics={"round": 2})
    loaded = ModelSet.load(tmp_path / "v1")
    assert loaded.info["metrics"] == {"round": 2} and loaded.rag is None and len(loaded.replay) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v1"]
    assert sorted(p.name for p in (tmp_path / "v1").iterdir()) == [
        "manifest.json",
        "replay.skops",
        "router.skops",
    ]


def test_a_changed_file_or_a_missing_manifest_is_refused(model_set: ModelSet, tmp_path: Path) -> None:
    path = model_set.save(tmp_path / "v1")
    artifact = path / "rag_index.skops"
    data = bytearray(artifact.read_bytes())
    data[len(data) // 2] ^= 0xFF
    artifact.write_bytes(bytes(data))
    with pytest.raises(ArtifactIntegrityError, match="rag_index"):
        ModelSet.load(path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="not a saved model set"):
        ModelSet.load(tmp_path / "empty")


def test_a_registered_set_loads_by_alias_or_router_version(model_set: ModelSet, tmp_path: Path) -> None:
    registry = ModelRegistry(Store.from_url("sqlite://").setup(), tmp_path)
    first = model_set.register(registry, names=NAMES, alias="candidate", reason="nightly")
    second = ModelSet(model_set.router).register(registry, names=NAMES, alias=None)
    assert first == {"replay": 1, "rag_index": 1, "router": 1}
    assert second == {"replay": 2, "router": 2}
    by_alias = ModelSet.from_registry(registry, names=NAMES, alias="candidate")
    assert by_alias.info["versions"] == first and by_alias.rag is not None
    by_version = ModelSet.from_registry(registry, names=NAMES, version=2)
    assert by_version.info["versions"] == second and by_version.rag is None
    assert [m.reason for m in registry.alias_history("rag_index", "candidate")] == ["nightly"]


def test_folders_left_by_a_process_that_died_mid_save_are_removed_on_the_next_save(
    model_set: ModelSet, tmp_path: Path
) -> None:
    import subprocess
    import sys

    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    pid = int(dead.stdout)  # a process that has exited
    abandoned = tmp_path / f".v1.{pid}.123.tmp"
    abandoned.mkdir()
    live = tmp_path / f".v1.{os.getpid()}.456.tmp"  # this process: still running, so kept
    live.mkdir()
    model_set.save(tmp_path / "v1")
    assert not abandoned.exists() and live.exists()
