"""A model set: the router, the retrieval index and the router's replay sample, saved and loaded together.

Retraining produces all three at once and they only make sense together: the replay sample is what the
router learned from, and it is what the next retrain replays so that the router does not forget old traffic.
A :class:`ModelSet` lives either in a directory (``router.skops``, ``rag_index.skops``, ``replay.skops`` and a
``manifest.json`` with each file's sha256, checked before anything is deserialized) or in a
:class:`~cl_plugin.learning.registry.ModelRegistry` as three models (``router``, ``rag_index`` and ``router-replay``
by default) that share aliases.

Artifacts use the registry's serialization (:func:`~cl_plugin.learning.registry.write_artifact`), which loads only
allow-listed types. The directory's manifest protects against corruption and partial edits; for protection
against someone who can rewrite the manifest too, keep versions in a registry, whose digests live in the store.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from cl_plugin.errors import ArtifactIntegrityError, RegistryError
from cl_plugin.learning.labels import ReplayBuffer
from cl_plugin.learning.rag import RagIndex
from cl_plugin.learning.registry import DataWindow, ModelRegistry, read_artifact, write_artifact
from cl_plugin.learning.router import MetaRouter

__all__ = ["MANIFEST", "ModelSet"]

#: The file that marks a directory as a saved model set.
MANIFEST = "manifest.json"
_FORMAT = 1
_FILES = {"router": "router.skops", "rag_index": "rag_index.skops", "replay": "replay.skops"}


@dataclass
class ModelSet:
    """The router, its retrieval index and its replay sample.

    Attributes:
        router: the meta-controller.
        rag: the retrieval index, if the set has one.
        replay: a class-balanced sample of the labels the router learned from.
        info: what the set was saved or registered with: ``metrics``, ``parent``, ``data_window``,
            ``created_at``, and ``versions`` (registry versions by role) when it came from a registry.
    """

    router: MetaRouter
    rag: RagIndex | None = None
    replay: ReplayBuffer = field(default_factory=ReplayBuffer)
    info: dict[str, Any] = field(default_factory=dict)

    # -- directories --------------------------------------------------------------------------------

    def save(
        self,
        path: str | os.PathLike[str],
        *,
        metrics: Mapping[str, Any] | None = None,
        parent: str | None = None,
        data_window: DataWindow | None = None,
    ) -> Path:
        """Write the set to a directory, replacing what was there only once every file is written.

        Args:
            path: the directory.
            metrics: JSON-serializable metrics to keep in the manifest.
            parent: where the model this set was trained from came from (a path or registry reference).
            data_window: the training data window.

        Returns:
            The directory.
        """
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        _remove_abandoned(target)
        staging = target.with_name(f".{target.name}.{os.getpid()}.{time.monotonic_ns()}.tmp")
        staging.mkdir()
        try:
            files = {}
            for role, model in self._roles().items():
                sha256 = write_artifact(model, staging / _FILES[role], name=role)
                files[role] = {"file": _FILES[role], "sha256": sha256}
            manifest = {
                "format": _FORMAT,
                "files": files,
                "metrics": dict(metrics or {}),
                "parent": parent,
                "data_window": None if data_window is None else vars(data_window),
                "created_at": time.time(),
            }
            (staging / MANIFEST).write_bytes(
                orjson.dumps(manifest, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY)
            )
            _swap_in(staging, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return target

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> ModelSet:
        """Read a set written by :meth:`save`, checking each file against the manifest first.

        Raises:
            FileNotFoundError: the directory holds no ``manifest.json``.
            ArtifactIntegrityError: a file is missing or differs from the one saved.
            UntrustedArtifactError: a file holds types outside the registry's allow-list.
        """
        directory = Path(path)
        manifest_file = directory / MANIFEST
        if not manifest_file.is_file():
            raise FileNotFoundError(
                f"{directory} is not a saved model set (no {MANIFEST}); save one with ModelSet.save() or "
                "IncrementalRetrainingPipeline.retrain()"
            )
        manifest = orjson.loads(manifest_file.read_bytes())
        files = manifest.get("files", {})
        if "router" not in files:
            raise ArtifactIntegrityError(
                model_name="router",
                version=None,
                path=str(directory / _FILES["router"]),
                expected="(listed in the manifest)",
                actual=None,
            )
        loaded = {
            role: read_artifact(directory / entry["file"], entry["sha256"], name=role)
            for role, entry in files.items()
        }
        replay = loaded.get("replay")
        return cls(
            router=loaded["router"],
            rag=loaded.get("rag_index"),
            replay=ReplayBuffer.from_state(replay) if replay is not None else ReplayBuffer(),
            info={k: manifest.get(k) for k in ("metrics", "parent", "data_window", "created_at")},
        )

    # -- registry -----------------------------------------------------------------------------------

    def register(
        self,
        registry: ModelRegistry,
        *,
        names: Mapping[str, str],
        metrics: Mapping[str, Mapping[str, Any]] | None = None,
        parents: Mapping[str, int | None] | None = None,
        data_window: DataWindow | None = None,
        alias: str | None = "candidate",
        reason: str | None = None,
        actor: str | None = None,
    ) -> dict[str, int]:
        """Register each part as a new version of its model and point ``alias`` at all of them.

        Args:
            registry: the registry.
            names: the model name of each role (``router``, ``rag_index``, ``replay``).
            metrics: metrics per role.
            parents: the version each role was trained from.
            data_window: the training data window.
            alias: the alias to set on every new version (None: set none).
            reason: why, for the alias history.
            actor: who, for the alias history.

        Returns:
            The new version of each role.
        """
        versions: dict[str, int] = {}
        roles = self._roles()
        # the router goes last, so its record can name the exact index and replay versions it belongs with
        for role in sorted(roles, key=lambda r: r == "router"):
            role_metrics = dict((metrics or {}).get(role) or {})
            if role == "router":
                role_metrics["model_set"] = {r: v for r, v in versions.items()}
            version = registry.register(
                names[role],
                roles[role],
                metrics=role_metrics,
                parent=(parents or {}).get(role),
                data_window=data_window,
                created_by=actor,
            )
            versions[role] = version.version
        if alias is not None:
            for role, version in versions.items():
                registry.set_alias(names[role], alias, version, reason=reason, actor=actor)
        self.info["versions"] = dict(versions)
        return versions

    @classmethod
    def from_registry(
        cls,
        registry: ModelRegistry,
        *,
        names: Mapping[str, str],
        alias: str | None = None,
        version: int | None = None,
    ) -> ModelSet:
        """Load the versions an alias points at (or the router's version ``version`` and its siblings).

        The index and replay versions are the ones registered with that router version (its
        ``model_set`` record), so a set always loads as it was trained.

        Raises:
            RegistryError: the router has no such alias or version.
            ArtifactIntegrityError: an artifact was changed since registration.
        """
        if version is not None:
            router_version = registry.get_version(names["router"], version)
        else:
            router_version = registry.get_alias(names["router"], alias or "production")
        if router_version is None:
            raise RegistryError(
                f"model {names['router']!r} has no {alias or 'production'!r} alias; promote a version first",
                model_name=names["router"],
            )
        parts: dict[str, Any] = {"router": registry.load(names["router"], router_version.version)}
        versions = {"router": router_version.version}
        for role, sibling in (router_version.metrics.get("model_set") or {}).items():
            parts[role] = registry.load(names[role], sibling)
            versions[role] = sibling
        replay = parts.get("replay")
        metrics = {k: v for k, v in router_version.metrics.items() if k != "model_set"}
        return cls(
            router=parts["router"],
            rag=parts.get("rag_index"),
            replay=ReplayBuffer.from_state(replay) if replay is not None else ReplayBuffer(),
            info={"versions": versions, "metrics": metrics, "created_at": router_version.created_at},
        )

    def _roles(self) -> dict[str, Any]:
        roles: dict[str, Any] = {"router": self.router, "replay": self.replay.state()}
        if self.rag is not None:
            roles["rag_index"] = self.rag
        return roles


def _remove_abandoned(target: Path) -> None:
    """Delete staging and retired folders of ``target`` left by processes that died mid-save."""
    for leftover in target.parent.glob(f".{target.name}.*.*"):
        parts = leftover.name.rsplit(".", 3)
        if len(parts) != 4 or parts[3] not in ("tmp", "old") or not parts[1].isdigit():
            continue
        try:
            os.kill(int(parts[1]), 0)  # the saving process still runs: its folder is not abandoned
        except ProcessLookupError:
            shutil.rmtree(leftover, ignore_errors=True)
        except PermissionError:  # another user's live process
            continue


def _swap_in(staging: Path, target: Path) -> None:
    """Replace ``target`` by ``staging`` so a reader sees the old set or the new one, never a mix."""
    if not target.exists():
        os.replace(staging, target)
        return
    retired = target.with_name(f".{target.name}.{os.getpid()}.{time.monotonic_ns()}.old")
    os.replace(target, retired)
    os.replace(staging, target)
    shutil.rmtree(retired, ignore_errors=True)
