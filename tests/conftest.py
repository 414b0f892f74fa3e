"""Shared fixtures: a store on every backend, and the PostgreSQL server check."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from importlib import resources

import pytest
from alembic.config import Config as AlembicConfig
from alembic.script import ScriptDirectory
from sqlalchemy.engine import make_url

from cl_plugin.store import Store

#: The PostgreSQL test server's database as configured; the tests connect to it directly when they run in
#: one process.
SERVER_PG_URL = os.environ.get("CL_PLUGIN_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
IN_CI = os.environ.get("CI", "").lower() == "true"
#: The pytest-xdist worker this process is ("gw0", "gw1", ...), or None without parallel workers.
XDIST_WORKER = os.environ.get("PYTEST_XDIST_WORKER")


def _worker_url(url: str, worker: str | None) -> str:
    """Each xdist worker gets a database of its own on the test server (``test_gw0``, ...), so that what
    spans a whole database (advisory locks, connection counts, the public schema) is never shared between
    two workers running at once."""
    if worker is None:
        return url
    parsed = make_url(url)
    return parsed.set(database=f"{parsed.database or 'test'}_{worker}").render_as_string(hide_password=False)


#: The database the tests use: the configured one, or the worker's own under pytest-xdist.
PG_URL = _worker_url(SERVER_PG_URL, XDIST_WORKER)


def libpq(url: str) -> str:
    """A SQLAlchemy psycopg URL as a libpq connection string."""
    return url.replace("postgresql+psycopg://", "postgresql://")


def _schema_head() -> str:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(resources.files("cl_plugin.store") / "migrations"))
    head = ScriptDirectory.from_config(cfg).get_current_head()
    assert head is not None
    return head


#: The newest migration: what setup() must leave a database at.
SCHEMA_HEAD = _schema_head()


def _pg_unreachable_reason() -> str | None:
    try:
        import psycopg
    except ImportError:
        return "psycopg is not installed (pip install 'cl-plugin[postgres]')"
    try:
        if PG_URL != SERVER_PG_URL:
            _create_database(SERVER_PG_URL, make_url(PG_URL).database)
        with psycopg.connect(libpq(PG_URL), connect_timeout=3):
            return None
    except Exception as exc:
        return f"PostgreSQL at {PG_URL} is unreachable: {type(exc).__name__}: {exc}".strip()


def _create_database(server_url: str, name: str | None) -> None:
    """Create the database ``name`` on the server of ``server_url`` unless it exists; it is kept for the
    next run (every test works in a schema of its own inside it, dropped afterwards)."""
    import psycopg
    from psycopg import errors, sql

    assert name
    with psycopg.connect(libpq(server_url), connect_timeout=3, autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            return
        # A concurrent run with the same worker names may create it first.
        with contextlib.suppress(errors.DuplicateDatabase, errors.UniqueViolation):
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


_PG_REASON = _pg_unreachable_reason()


@pytest.fixture(autouse=True, scope="session")
def _private_id_hash_key_file(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Ids holding PII are hashed with a key generated into a file; the tests' key stays in a temp dir
    (children started by the tests inherit the variable), never in the user's home."""
    previous = os.environ.get("CL_PLUGIN_HASH_KEY_FILE")
    os.environ["CL_PLUGIN_HASH_KEY_FILE"] = str(tmp_path_factory.mktemp("keys") / "id-hash.key")
    yield
    if previous is None:
        os.environ.pop("CL_PLUGIN_HASH_KEY_FILE", None)
    else:
        os.environ["CL_PLUGIN_HASH_KEY_FILE"] = previous


@pytest.fixture
def key_file(tmp_path, monkeypatch: pytest.MonkeyPatch):
    """No id-hashing key configured: ids holding PII are hashed with the key generated into this file."""
    monkeypatch.delenv("CL_PLUGIN_HASH_KEY", raising=False)
    path = tmp_path / "keys" / "id-hash.key"
    monkeypatch.setenv("CL_PLUGIN_HASH_KEY_FILE", str(path))
    return path


def require_postgres() -> None:
    """Skip (or, in CI, fail) when the PostgreSQL test server cannot be reached."""
    if _PG_REASON is None:
        return
    if IN_CI:
        pytest.fail(f"CI needs PostgreSQL: {_PG_REASON}")
    pytest.skip(_PG_REASON)


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A PostgreSQL URL whose connections see a fresh, private schema (dropped afterwards)."""
    require_postgres()
    import psycopg

    schema = f"t_{uuid.uuid4().hex[:12]}"
    conninfo = libpq(PG_URL)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    sep = "&" if "?" in PG_URL else "?"
    yield f"{PG_URL}{sep}options=-csearch_path%3D{schema}"
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture(params=["sqlite-file", "sqlite-memory", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path) -> str:
    """The URL of an empty database on each supported backend."""
    if request.param == "sqlite-file":
        return f"sqlite:///{tmp_path / 'store.db'}"
    if request.param == "sqlite-memory":
        return "sqlite://"
    return request.getfixturevalue("pg_url")


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    """A set-up store on each backend."""
    s = Store.from_url(store_url).setup()
    yield s
    s.close()
