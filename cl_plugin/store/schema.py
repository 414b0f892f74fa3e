"""The store's schema: the migrations to run, where a database stands, and what to tell a user about it.

A writer brings an empty or older database to the newest migration on first use; a reader never changes the
schema and raises :class:`~cl_plugin.errors.StoreSchemaError` with the fix instead. A table or column that
a write finds missing is a schema problem too, never an outage: waiting does not bring it back.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError

__all__ = [
    "current_revision",
    "head_revision",
    "is_known_revision",
    "is_missing_schema",
    "missing_schema_message",
    "reader_message",
    "upgrade",
]

# PostgreSQL's SQLSTATEs for "undefined table" and "undefined column".
_MISSING_SQLSTATES = ("42P01", "42703")
# SQLite says it in words.
_MISSING_SQLITE = ("no such table", "no such column", "has no column named")


def _config() -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(resources.files("cl_plugin.store") / "migrations"))
    return cfg


@cache
def _scripts() -> ScriptDirectory:
    return ScriptDirectory.from_config(_config())


def head_revision() -> str:
    """The id of the newest migration this version of cl_plugin ships."""
    head = _scripts().get_current_head()
    assert head is not None
    return head


def is_known_revision(revision: str) -> bool:
    """Whether a migration id is one of ours (a database migrated by a newer cl_plugin holds one that is not)."""
    return any(script.revision == revision for script in _scripts().walk_revisions())


def current_revision(conn: Connection) -> str | None:
    """The newest migration applied to the database on ``conn``, or None when it has none."""
    return MigrationContext.configure(conn).get_current_revision()


def upgrade(conn: Connection) -> None:
    """Run every missing migration on ``conn``, inside the caller's transaction (which holds the lock)."""
    cfg = _config()
    cfg.attributes["connection"] = conn
    command.upgrade(cfg, "head")


def reader_message(url: str, current: str | None) -> str:
    """Why a read cannot run on a database at ``current``, and what to do about it."""
    fix = (
        f"run `cl-plugin migrate --store '{url}'` or call Store.from_url(url).setup() once (a writer, such as "
        "CaptureHandler or ProductionInteractionLogger, does it on first use); reads never change the schema"
    )
    if current is None:
        return f"the database at {url} has no cl_plugin tables yet: {fix}"
    if not is_known_revision(current):
        return (
            f"the database at {url} is at schema version {current}, which a newer cl_plugin wrote: upgrade "
            "cl-plugin (pip install -U cl-plugin) to read it"
        )
    return (
        f"the database at {url} is at schema version {current}, older than this cl_plugin's "
        f"{head_revision()}: {fix}"
    )


def is_missing_schema(exc: BaseException) -> bool:
    """Whether a database error says that a table or column does not exist."""
    if not isinstance(exc, DBAPIError):
        return False
    orig = exc.orig
    sqlstate = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    if sqlstate:
        return str(sqlstate) in _MISSING_SQLSTATES
    text = str(orig).lower()
    return any(s in text for s in _MISSING_SQLITE)


def missing_schema_message(url: str, exc: BaseException, journal: str) -> str:
    """What a write that found a table or column missing tells the user."""
    reason = str(getattr(exc, "orig", exc)).strip().splitlines()[0][:300]
    return (
        f"the database at {url} is missing a table or column cl_plugin writes ({reason}). Run "
        f"`cl-plugin migrate --store '{url}'` or Store.setup(); if the schema version says it is current, the "
        "table was changed outside cl_plugin: restore it from a backup. The rows wait in the journal at "
        f"{journal} and are written once the schema is whole"
    )
