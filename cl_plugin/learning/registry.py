"""Model registry: versions of named models, aliases (``production``, ``candidate``), history, rollback.

Each :meth:`ModelRegistry.register` writes the model to a file under the artifact directory with
:mod:`skops.io` (a format whose loading constructs only the types it is told to trust, where pickle runs
whatever code the file names) and records its sha256, metrics, parent and training data window in the
store. :meth:`ModelRegistry.load` checks the file's sha256 before reading a byte of it as a model, and
trusts only types from an allow-list of modules (:data:`TRUSTED_MODULES`).

Aliases point at versions; every move is appended to the alias history with its reason and actor, and
:meth:`~ModelRegistry.promote` and :meth:`~ModelRegistry.rollback` are single transactions.
:meth:`~ModelRegistry.watch` gives running code a handle that follows an alias without a restart.

A :class:`~cl_plugin.learning.rag.RagIndex` is stored as its documents and parameters and rebuilt on load (its
vectorizer is refitted on the same texts, which gives the same index); other models are stored as they are.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import re
import threading
import time
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import skops.io as sio

from cl_plugin.errors import ArtifactIntegrityError, RegistryError, UntrustedArtifactError
from cl_plugin.learning.rag import RagIndex
from cl_plugin.store import Store

__all__ = [
    "TRUSTED_MODULES",
    "AliasMove",
    "DataWindow",
    "ModelHandle",
    "ModelRegistry",
    "ModelVersion",
    "read_artifact",
    "write_artifact",
]

log = logging.getLogger("cl_plugin.registry")

#: Top-level modules whose types an artifact may hold, besides the two modules named in full.
TRUSTED_MODULES = (
    "builtins",
    "collections",
    "numpy",
    "scipy",
    "sklearn",
    "cl_plugin.learning.router",
    "cl_plugin.learning.rag",
)

#: Modules of trusted types that moved, by their old name: an artifact written before the move names the
#: old module, and is read as naming the new one (the file itself, and its digest, are left as written).
MOVED_MODULES = {
    "cl_plugin.learning.router": "cl_plugin.learning.router",
    "cl_plugin.learning.rag": "cl_plugin.learning.rag",
}

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
_FORMAT = 1


@dataclass(frozen=True)
class DataWindow:
    """The training data a version learned from.

    Attributes:
        start: unix time of the oldest sample.
        end: unix time of the newest sample.
        count: how many samples.
    """

    start: float | None = None
    end: float | None = None
    count: int | None = None


@dataclass(frozen=True)
class ModelVersion:
    """One registered version of a model.

    Attributes:
        name: the model's name.
        version: 1, 2, 3... per name.
        artifact: the serialized model's file.
        sha256: the file's digest at registration.
        metrics: evaluation metrics given at registration.
        parent: the version this one was trained from, if any.
        data_window: the training data window, if given.
        created_at: unix time of registration.
        created_by: who registered it.
        notes: free text.
    """

    name: str
    version: int
    artifact: Path
    sha256: str
    metrics: dict[str, Any]
    parent: int | None
    data_window: DataWindow | None
    created_at: float
    created_by: str | None
    notes: str | None


@dataclass(frozen=True)
class AliasMove:
    """One entry of the alias audit trail.

    Attributes:
        name: the model's name.
        alias: the alias that moved.
        version: the version it points to after the move.
        previous_version: the version it pointed to before (None for its first move).
        action: ``set``, ``promote`` or ``rollback``.
        moved_at: unix time of the move.
        reason: why, as given by the caller.
        actor: who, as given by the caller.
    """

    name: str
    alias: str
    version: int
    previous_version: int | None
    action: str
    moved_at: float
    reason: str | None
    actor: str | None


class ModelRegistry:
    """Versions and aliases of named models, with artifacts on disk and records in the store.

    Args:
        store: a :class:`~cl_plugin.store.Store`; one that is empty or behind is set up when the registry
            takes it.
        artifact_dir: where artifacts are written; several registries may share it and the store.

    Example:
        >>> from cl_plugin.learning.router import MetaRouter
        >>> import tempfile
        >>> registry = ModelRegistry(Store.from_url("sqlite://"), tempfile.mkdtemp())
        >>> router = MetaRouter().fit(["square root of 2", "order jobs B and C"], ["TRM", "HRM"])
        >>> registry.register("router", router, metrics={"accuracy": 1.0}).version
        1
        >>> registry.promote("router", 1, reason="first model").version
        1
        >>> registry.load("router", alias="production").predict(["square root of 9"]).tolist()
        ['TRM']
    """

    def __init__(self, store: Store, artifact_dir: str | os.PathLike[str]) -> None:
        store.ensure_schema()
        self.store = store
        self.artifact_dir = Path(artifact_dir)

    def register(
        self,
        name: str,
        model: Any,
        *,
        metrics: Mapping[str, Any] | None = None,
        parent: int | None = None,
        data_window: DataWindow | Mapping[str, Any] | None = None,
        notes: str | None = None,
        created_by: str | None = None,
    ) -> ModelVersion:
        """Serialize a model to the artifact directory and record it as the model's next version.

        Args:
            name: the model's name (letters, digits, ``_``, ``.``, ``-``).
            model: a fitted model: a :class:`~cl_plugin.learning.router.MetaRouter`, a :class:`~cl_plugin.learning.rag.RagIndex`
                or any object built from the :data:`TRUSTED_MODULES`.
            metrics: JSON-serializable evaluation metrics.
            parent: the version this one was trained from.
            data_window: the training data window (a :class:`DataWindow` or a mapping with its fields).
            notes: free text.
            created_by: who registers it.

        Returns:
            The new version.

        Raises:
            RegistryError: an invalid name, an unknown parent, metrics that are not JSON-serializable, or a
                data window with other keys than start, end and count.
            UntrustedArtifactError: the model holds types from modules outside the allow-list.
        """
        _check_name(name)
        if parent is not None and self.store.models.version(name, parent) is None:
            raise RegistryError(
                f"parent version {parent!r} of model {name!r} was never registered; "
                f"registry.versions({name!r}) lists the registered ones",
                model_name=name,
            )
        try:
            metrics_json = orjson.dumps(dict(metrics or {}), option=orjson.OPT_SERIALIZE_NUMPY).decode()
        except TypeError as exc:
            raise RegistryError(
                f"metrics of model {name!r} must be JSON-serializable: {exc}", model_name=name
            ) from None
        try:
            window = DataWindow(**data_window) if isinstance(data_window, Mapping) else data_window
        except TypeError:
            raise RegistryError(
                f"data_window of model {name!r} takes the keys start, end and count (got {sorted(data_window)})",
                model_name=name,
            ) from None
        payload = sio.dumps(_to_payload(model, name))
        _trusted_types(payload, name)
        digest = hashlib.sha256(payload).hexdigest()
        relative = f"{name}/{digest}.skops"
        _write_atomically(self.artifact_dir / relative, payload)
        row = {
            "model_name": name,
            "sha256": digest,
            "artifact": relative,
            "metrics": metrics_json,
            "parent_version": parent,
            "data_start": window.start if window else None,
            "data_end": window.end if window else None,
            "data_count": window.count if window else None,
            "created_at": time.time(),
            "created_by": created_by,
            "notes": notes,
        }
        version = self.store.models.add_version(row)
        return self._version({**row, "version": version, "metrics": orjson.loads(metrics_json)})

    def load(self, name: str, version: int | None = None, *, alias: str | None = None) -> Any:
        """Load a version of a model, checking its artifact's sha256 before deserializing it.

        Args:
            name: the model's name.
            version: the version to load.
            alias: load the version this alias points to instead. With neither, ``production``.

        Returns:
            A new, independent model object.

        Raises:
            ArtifactIntegrityError: the artifact is missing or was changed since registration.
            UntrustedArtifactError: the artifact holds types from modules outside the allow-list.
            RegistryError: the version or alias does not exist, or both were given.
        """
        return self._load(self._resolve(name, version, alias))

    def versions(self, name: str) -> list[ModelVersion]:
        """Every version of a model, oldest first."""
        return [self._version(row) for row in self.store.models.versions(name)]

    def get_version(self, name: str, version: int) -> ModelVersion:
        """One version of a model.

        Raises:
            RegistryError: the version was never registered.
        """
        row = self.store.models.version(name, version)
        if row is None:
            raise RegistryError(
                f"model {name!r} has no version {version!r}; registry.versions({name!r}) lists the "
                "registered ones",
                model_name=name,
            )
        return self._version(row)

    def get_alias(self, name: str, alias: str) -> ModelVersion | None:
        """The version an alias points to, or None when the alias is not set."""
        version = self.store.models.alias(name, alias)
        return None if version is None else self.get_version(name, version)

    def set_alias(
        self, name: str, alias: str, version: int, *, reason: str | None = None, actor: str | None = None
    ) -> ModelVersion:
        """Point an alias at a version (recorded in the alias history unless it pointed there already).

        Raises:
            RegistryError: an invalid alias name or a version that was never registered.
        """
        _check_name(alias, what="alias")
        self.store.models.set_alias(name, alias, version, reason=reason, actor=actor)
        return self.get_version(name, version)

    def promote(
        self, name: str, version: int | None = None, *, reason: str | None = None, actor: str | None = None
    ) -> ModelVersion:
        """Make a version the production one: the ``candidate`` by default, or the version given.

        Raises:
            RegistryError: no version is given and no candidate is set, or the version does not exist.
        """
        if version is None:
            version = self.store.models.promote(name, "candidate", "production", reason=reason, actor=actor)
        else:
            self.store.models.set_alias(
                name, "production", version, reason=reason, actor=actor, action="promote"
            )
        return self.get_version(name, version)

    def rollback(self, name: str, *, reason: str | None = None, actor: str | None = None) -> ModelVersion:
        """Point ``production`` back at the version it pointed to before its current one.

        Raises:
            RegistryError: production has no earlier version.
        """
        version = self.store.models.rollback(name, "production", reason=reason, actor=actor)
        return self.get_version(name, version)

    def alias_history(self, name: str, alias: str | None = None) -> list[AliasMove]:
        """Every move of a model's aliases (or of one alias), oldest first."""
        return [
            AliasMove(
                name=r["model_name"],
                alias=r["alias"],
                version=r["version"],
                previous_version=r["previous_version"],
                action=r["action"],
                moved_at=r["moved_at"],
                reason=r["reason"],
                actor=r["actor"],
            )
            for r in self.store.models.alias_history(name, alias)
        ]

    def watch(self, name: str, alias: str = "production", *, refresh_seconds: float = 5.0) -> ModelHandle:
        """A handle that serves the model an alias points to and follows the alias when it moves.

        Args:
            name: the model's name.
            alias: the alias to follow.
            refresh_seconds: how often, at most, :meth:`ModelHandle.get` asks the store where the alias points.
        """
        if refresh_seconds < 0:
            raise ValueError(f"refresh_seconds must be >= 0 (got {refresh_seconds})")
        return ModelHandle(self, name, alias, refresh_seconds)

    def _resolve(self, name: str, version: int | None, alias: str | None) -> ModelVersion:
        if version is not None and alias is not None:
            raise RegistryError(f"pass a version or an alias of model {name!r}, not both", model_name=name)
        if version is not None:
            return self.get_version(name, version)
        alias = alias or "production"
        current = self.get_alias(name, alias)
        if current is None:
            raise RegistryError(
                f"model {name!r} has no {alias!r} alias; set it with set_alias() or promote(), or load a "
                "version by number",
                model_name=name,
            )
        return current

    def _load(self, mv: ModelVersion) -> Any:
        return read_artifact(mv.artifact, mv.sha256, name=mv.name, version=mv.version)

    def _version(self, row: Mapping[str, Any]) -> ModelVersion:
        window = None
        if any(row[k] is not None for k in ("data_start", "data_end", "data_count")):
            window = DataWindow(row["data_start"], row["data_end"], row["data_count"])
        return ModelVersion(
            name=row["model_name"],
            version=row["version"],
            artifact=self.artifact_dir / row["artifact"],
            sha256=row["sha256"],
            metrics=dict(row["metrics"] or {}),
            parent=row["parent_version"],
            data_window=window,
            created_at=row["created_at"],
            created_by=row["created_by"],
            notes=row["notes"],
        )


class ModelHandle:
    """The model an alias points to, reloaded when the alias moves. Safe to share between threads.

    Build one with :meth:`ModelRegistry.watch`. :meth:`get` asks the store where the alias points at most
    every ``refresh_seconds`` and loads the model only when the version changed. When a new version cannot
    be loaded (a tampered artifact, say), the handle keeps serving the one it has and logs the error.
    """

    def __init__(self, registry: ModelRegistry, name: str, alias: str, refresh_seconds: float) -> None:
        self.registry = registry
        self.name = name
        self.alias = alias
        self.refresh_seconds = refresh_seconds
        self._lock = threading.Lock()
        self._model: Any = None
        self._version: int | None = None
        self._checked_at = float("-inf")

    @property
    def version(self) -> int | None:
        """The version of the model :meth:`get` serves (None before the first :meth:`get`)."""
        return self._version

    def get(self) -> Any:
        """The current model.

        Raises:
            RegistryError: on the first call, the alias is not set or its model cannot be loaded.
        """
        with self._lock:
            now = time.monotonic()
            if self._version is not None and now - self._checked_at < self.refresh_seconds:
                return self._model
            self._checked_at = now
            version = self.registry.store.models.alias(self.name, self.alias)
            if version is None and self._version is None:
                raise RegistryError(
                    f"model {self.name!r} has no {self.alias!r} alias to watch; set it with set_alias() "
                    "or promote() first",
                    model_name=self.name,
                )
            if version is None or version == self._version:
                return self._model
            try:
                model = self.registry.load(self.name, version)
            except RegistryError:
                if self._version is None:
                    raise
                log.exception(
                    "model %r %s moved to version %s, which cannot be loaded; still serving version %s",
                    self.name,
                    self.alias,
                    version,
                    self._version,
                )
                return self._model
            self._model, self._version = model, version
            return model


def write_artifact(model: Any, path: str | os.PathLike[str], *, name: str) -> str:
    """Serialize a model to a file the way the registry does, atomically, and return the file's sha256.

    Args:
        model: a :class:`~cl_plugin.learning.router.MetaRouter`, a :class:`~cl_plugin.learning.rag.RagIndex` (without an
            embeddings client) or any object built from the :data:`TRUSTED_MODULES`.
        path: the file to write.
        name: the model's name, for error messages.

    Returns:
        The sha256 of the written bytes: keep it, :func:`read_artifact` needs it.

    Raises:
        RegistryError: a RagIndex searched by embeddings.
        UntrustedArtifactError: the model holds types from modules outside the allow-list.
    """
    payload = sio.dumps(_to_payload(model, name))
    _trusted_types(payload, name)
    _write_atomically(Path(path), payload)
    return hashlib.sha256(payload).hexdigest()


def read_artifact(path: str | os.PathLike[str], sha256: str, *, name: str, version: int | None = None) -> Any:
    """Load a model written by :func:`write_artifact`, after checking the file against its sha256.

    Args:
        path: the artifact file.
        sha256: the digest recorded when it was written.
        name: the model's name, for error messages.
        version: its registry version, for error messages.

    Returns:
        The model.

    Raises:
        ArtifactIntegrityError: the file is missing or its digest differs; nothing was deserialized.
        UntrustedArtifactError: the file holds types from modules outside the allow-list.
    """
    try:
        payload = Path(path).read_bytes()
    except FileNotFoundError:
        payload = None
    actual = None if payload is None else hashlib.sha256(payload).hexdigest()
    if payload is None or actual != sha256:
        raise ArtifactIntegrityError(
            model_name=name, version=version, path=str(path), expected=sha256, actual=actual
        )
    payload = _current_modules(payload)
    return _from_payload(sio.loads(payload, trusted=_trusted_types(payload, name)))


def _check_name(name: str, *, what: str = "model name") -> None:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise RegistryError(
            f"invalid {what} {name!r}: use 1-128 letters, digits, '_', '.' or '-', starting with a letter "
            "or digit",
            model_name=str(name),
        )


def _to_payload(model: Any, name: str) -> dict[str, Any]:
    """What goes into the artifact: the model itself, or a :class:`RagIndex`'s documents and parameters."""
    if isinstance(model, RagIndex):
        if model.vector_store is not None:
            raise RegistryError(
                f"model {name!r} is a RagIndex backed by a vector store, which cannot be stored in an artifact; "
                "register an index without it (RagIndex().add(index.documents())) and attach the store on load",
                model_name=name,
            )
        if model.embeddings is not None:
            raise RegistryError(
                f"model {name!r} is a RagIndex searched by embeddings, whose embeddings client cannot be "
                "stored; register an index without embeddings (RagIndex().add(index.documents()))",
                model_name=name,
            )
        state = {
            "scorer": model.scorer,
            "ngram_range": list(model.ngram_range),
            "sublinear_tf": model.sublinear_tf,
            "k1": model.k1,
            "b": model.b,
            "documents": model.documents(),
        }
        return {"format": _FORMAT, "kind": "rag_index", "state": state}
    return {"format": _FORMAT, "kind": "object", "model": model}


def _from_payload(payload: dict[str, Any]) -> Any:
    if payload["kind"] == "rag_index":
        state = payload["state"]
        index = RagIndex(
            scorer=state.get("scorer"),
            ngram_range=tuple(state["ngram_range"]),
            sublinear_tf=state["sublinear_tf"],
            k1=state.get("k1", 1.5),
            b=state.get("b", 0.75),
        )
        return index.add(state["documents"])
    return payload["model"]


def _current_modules(payload: bytes) -> bytes:
    """The artifact with the types of :data:`MOVED_MODULES` named where they live now."""
    try:
        with zipfile.ZipFile(io.BytesIO(payload)) as archive:
            schema = archive.read("schema.json")
            renamed = schema
            for old, new in MOVED_MODULES.items():
                renamed = renamed.replace(f'"{old}"'.encode(), f'"{new}"'.encode())
            if renamed == schema:
                return payload
            out = io.BytesIO()
            with zipfile.ZipFile(out, "w") as rewritten:
                for info in archive.infolist():
                    rewritten.writestr(
                        info, renamed if info.filename == "schema.json" else archive.read(info)
                    )
            return out.getvalue()
    except (zipfile.BadZipFile, KeyError):
        return payload  # not a skops archive: skops refuses it with its own message


def _trusted_types(payload: bytes, name: str) -> list[str]:
    """The types skops needs trusted to load ``payload``, once each is checked against the allow-list."""
    types = sio.get_untrusted_types(data=payload)
    refused = [t for t in types if not any(t == m or t.startswith(m + ".") for m in TRUSTED_MODULES)]
    if refused:
        raise UntrustedArtifactError(
            f"model {name!r} holds types from modules outside the registry's allow-list: "
            f"{', '.join(refused)}. Only types from {', '.join(TRUSTED_MODULES)} are loaded; convert the model "
            "to scikit-learn objects, arrays and plain containers",
            model_name=name,
            types=refused,
        )
    return types


def _write_atomically(path: Path, data: bytes) -> None:
    """Write a file so that readers see either nothing or all of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
