"""The model registry's tables: versions of each model, the aliases that point at them, every move.

Version numbers and alias moves of one model happen one at a time, each in one transaction holding the
model's lock, so replicas registering or promoting at once never share a number or lose a move; rollbacks
undo moves like a stack. :class:`~cl_plugin.learning.registry.ModelRegistry` keeps the artifacts and calls this, as
``store.models``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Table, func, select

from cl_plugin.errors import RegistryError
from cl_plugin.store.engine import insert_for
from cl_plugin.store.tables import ModelAlias, ModelAliasMove, ModelVersionRow

if TYPE_CHECKING:
    from cl_plugin.store.store import Store

__all__ = ["Models"]

_MODEL_VERSIONS: Table = ModelVersionRow.__table__  # type: ignore[assignment]
_MODEL_ALIASES: Table = ModelAlias.__table__  # type: ignore[assignment]
_ALIAS_HISTORY: Table = ModelAliasMove.__table__  # type: ignore[assignment]


class Models:
    """The store's ``model_versions``, ``model_aliases`` and ``model_alias_history`` tables.

    Args:
        store: the store that holds the registry's tables.
    """

    def __init__(self, store: Store) -> None:
        self._store = store

    @contextmanager
    def _model_transaction(self, model_name: str) -> Iterator[Connection]:
        """A write transaction that holds the model's registry lock, so version numbers and alias moves of
        one model happen one at a time. The lock's name is part of the store's contract, not a module path:
        processes running different versions of cl_plugin against one database must take the same lock."""
        with self._store.transaction(f"cl_plugin.registry:{model_name}") as conn:
            yield conn

    def add_version(self, row: Mapping[str, Any]) -> int:
        """Record a new version of a model, numbered one past its newest version.

        Args:
            row: the ``model_versions`` columns except ``version`` (``metrics`` as JSON text).

        Returns:
            The new version number (1 for a model's first version).
        """
        t = _MODEL_VERSIONS
        name = row["model_name"]
        with self._model_transaction(name) as conn:
            newest = conn.execute(select(func.max(t.c.version)).where(t.c.model_name == name)).scalar()
            version = int(newest or 0) + 1
            conn.execute(t.insert().values(**row, version=version))
        return version

    def names(self) -> list[str]:
        """Every model with at least one registered version, sorted."""
        t = _MODEL_VERSIONS
        with self._store.read_connection() as conn:
            return list(conn.execute(select(t.c.model_name).distinct().order_by(t.c.model_name)).scalars())

    def versions(self, model_name: str) -> list[dict[str, Any]]:
        """Every version of a model, oldest first, as ``model_versions`` rows (``metrics`` decoded)."""
        t = _MODEL_VERSIONS
        return self._store.read_rows(
            select(t).where(t.c.model_name == model_name).order_by(t.c.version), ("metrics",)
        )

    def version(self, model_name: str, version: int) -> dict[str, Any] | None:
        """One version of a model (``metrics`` decoded), or None when it was never registered."""
        t = _MODEL_VERSIONS
        stmt = select(t).where(t.c.model_name == model_name, t.c.version == version)
        rows = self._store.read_rows(stmt, ("metrics",))
        return rows[0] if rows else None

    def alias(self, model_name: str, alias: str) -> int | None:
        """The version an alias of a model points to, or None when the alias is not set (one indexed read)."""
        t = _MODEL_ALIASES
        stmt = select(t.c.version).where(t.c.model_name == model_name, t.c.alias == alias)
        with self._store.read_connection() as conn:
            return conn.execute(stmt).scalar()

    def alias_history(self, model_name: str, alias: str | None = None) -> list[dict[str, Any]]:
        """Every move of a model's aliases (or of one alias), oldest first, as ``model_alias_history`` rows."""
        t = _ALIAS_HISTORY
        stmt = select(t).where(t.c.model_name == model_name).order_by(t.c.move_id)
        if alias is not None:
            stmt = stmt.where(t.c.alias == alias)
        return self._store.read_rows(stmt, ())

    def set_alias(
        self,
        model_name: str,
        alias: str,
        version: int,
        *,
        reason: str | None = None,
        actor: str | None = None,
        action: str = "set",
    ) -> int:
        """Point an alias at a version, and append the move to the alias history, in one transaction.

        A move to the version the alias points at already is not recorded. ``action`` is what the history
        calls the move (``set``, or ``promote`` when a named version is promoted).

        Returns:
            The version the alias points to.

        Raises:
            RegistryError: the version was never registered.
        """
        with self._model_transaction(model_name) as conn:
            return self._move_alias(conn, model_name, alias, version, action, reason, actor)

    def promote(
        self,
        model_name: str,
        source: str,
        target: str,
        *,
        reason: str | None = None,
        actor: str | None = None,
    ) -> int:
        """Point ``target`` at the version ``source`` points to, reading and moving in one transaction.

        Returns:
            The version ``target`` points to (not recorded again when it pointed there already).

        Raises:
            RegistryError: ``source`` is not set.
        """
        a = _MODEL_ALIASES.c
        with self._model_transaction(model_name) as conn:
            version = conn.execute(
                select(a.version).where(a.model_name == model_name, a.alias == source)
            ).scalar()
            if version is None:
                raise RegistryError(
                    f"model {model_name!r} has no {source!r} alias to promote; set it first with "
                    f"set_alias({model_name!r}, {source!r}, version) or promote a version explicitly",
                    model_name=model_name,
                )
            return self._move_alias(conn, model_name, target, version, "promote", reason, actor)

    def rollback(
        self, model_name: str, alias: str, *, reason: str | None = None, actor: str | None = None
    ) -> int:
        """Point an alias back at the version it pointed to before its current one, in one transaction.

        Rollbacks undo moves like a stack: two rollbacks in a row go back two versions, not forth and back.

        Returns:
            The version the alias points to now.

        Raises:
            RegistryError: the alias has no earlier version to go back to.
        """
        h = _ALIAS_HISTORY.c
        with self._model_transaction(model_name) as conn:
            moves = conn.execute(
                select(h.version, h.action)
                .where(h.model_name == model_name, h.alias == alias)
                .order_by(h.move_id)
            ).all()
            stack: list[int] = []
            for version, action in moves:
                if action == "rollback":
                    stack.pop()
                else:
                    stack.append(version)
            if len(stack) < 2:
                current = f"points at version {stack[-1]}" if stack else "is not set"
                raise RegistryError(
                    f"cannot roll back {alias!r} of model {model_name!r}: it {current} and has no earlier "
                    f"version to go back to; use set_alias({model_name!r}, {alias!r}, version) instead",
                    model_name=model_name,
                )
            return self._move_alias(conn, model_name, alias, stack[-2], "rollback", reason, actor, force=True)

    def _move_alias(
        self,
        conn: Connection,
        model_name: str,
        alias: str,
        version: int,
        action: str,
        reason: str | None,
        actor: str | None,
        *,
        force: bool = False,
    ) -> int:
        """Move an alias and append the move to its history; a move to where it points is skipped unless
        ``force``d (a rollback is always recorded, since the history must show it)."""
        v, a = _MODEL_VERSIONS.c, _MODEL_ALIASES.c
        known = conn.execute(
            select(v.version).where(v.model_name == model_name, v.version == version)
        ).first()
        if known is None:
            raise RegistryError(
                f"model {model_name!r} has no version {version!r}; registry.versions({model_name!r}) "
                "lists the registered ones",
                model_name=model_name,
            )
        previous = conn.execute(
            select(a.version).where(a.model_name == model_name, a.alias == alias)
        ).scalar()
        if previous == version and not force:
            return version
        now = time.time()
        insert = insert_for(self._store.dialect)
        conn.execute(
            insert(_MODEL_ALIASES)
            .values(model_name=model_name, alias=alias, version=version, updated_at=now)
            .on_conflict_do_update(
                index_elements=["model_name", "alias"], set_={"version": version, "updated_at": now}
            )
        )
        conn.execute(
            _ALIAS_HISTORY.insert().values(
                model_name=model_name,
                alias=alias,
                version=version,
                previous_version=previous,
                action=action,
                moved_at=now,
                reason=reason,
                actor=actor,
            )
        )
        return version
