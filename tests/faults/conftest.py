"""A throwaway PostgreSQL cluster for the fault tests that stop and start the server.

Stopping the shared test server would break every other PostgreSQL test running at the same time (the
suite runs on parallel workers), so these tests get a cluster of their own: ``initdb`` into a temporary
directory with the installed server binaries, started with ``pg_ctl`` on a free port with trust
authentication, and removed at the end of the session.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import IN_CI, libpq


def _server_bindir() -> Path | None:
    """The newest installed PostgreSQL server binaries (initdb, pg_ctl), or None."""
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name.split(".")[0])
    )
    for directory in reversed(candidates):
        if (Path(directory) / "initdb").exists() and (Path(directory) / "pg_ctl").exists():
            return Path(directory)
    on_path = shutil.which("pg_ctl")
    if on_path and shutil.which("initdb"):
        return Path(on_path).parent
    return None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class PrivateCluster:
    """A PostgreSQL cluster only this test process uses; ``stop()`` and ``start()`` are a real server
    shutdown and start, as ``pg_ctlcluster`` does for the system's cluster."""

    bindir: Path
    datadir: Path
    port: int
    user: str | None  # the account the server runs as, when the tests run as root (initdb refuses root)

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str, timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess:
        command = [str(self.bindir / args[0]), *args[1:]]
        if self.user is not None:
            command = ["runuser", "-u", self.user, "--", *command]
        res = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout, cwd=self.datadir.parent
        )
        if check and res.returncode != 0:
            log = self.datadir.parent / "server.log"
            tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
            raise RuntimeError(
                f"{' '.join(args)} failed ({res.returncode}):\n{res.stdout}{res.stderr}\n{tail}"
            )
        return res

    def initdb(self) -> None:
        self._run(
            "initdb", "-D", str(self.datadir), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync"
        )

    def start(self, *, check: bool = True) -> None:
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.datadir.parent} -c fsync=off"
            " -c full_page_writes=off"
        )
        log = str(self.datadir.parent / "server.log")
        self._run(
            "pg_ctl",
            "-D",
            str(self.datadir),
            "-o",
            options,
            "-l",
            log,
            "-w",
            "-t",
            "60",
            "start",
            check=check,
        )

    def stop(self, mode: str = "fast", *, check: bool = True) -> None:
        self._run("pg_ctl", "-D", str(self.datadir), "-m", mode, "-w", "-t", "60", "stop", check=check)


def _unavailable(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"CI needs a private PostgreSQL cluster for the fault tests: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def private_cluster() -> Iterator[PrivateCluster]:
    """A running private cluster (started once per worker process, stopped and removed at the end)."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        _unavailable("psycopg is not installed (pip install 'cl-plugin[postgres]')")
    bindir = _server_bindir()
    if bindir is None:
        _unavailable("no PostgreSQL server binaries (initdb, pg_ctl) under /usr/lib/postgresql/*/bin")
    user = None
    if os.geteuid() == 0:  # initdb and postgres refuse to run as root
        try:
            user = pwd.getpwnam("postgres").pw_name
        except KeyError:
            _unavailable("running as root, and there is no postgres account to run the server as")
        if shutil.which("runuser") is None:
            _unavailable("running as root, and runuser is missing to run the server as postgres")
    # Outside pytest's temp dir: its parents are private to the user running the tests, and the server
    # runs as postgres when that user is root. The socket directory is this one too.
    root = Path(tempfile.mkdtemp(prefix="cl-plugin-faults-pg-"))
    if user is not None:
        entry = pwd.getpwnam(user)
        os.chown(root, entry.pw_uid, entry.pw_gid)
    cluster = PrivateCluster(bindir=bindir, datadir=root / "data", port=_free_port(), user=user)
    try:
        cluster.initdb()
        cluster.start()
        yield cluster
    finally:
        cluster.stop("immediate", check=False)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def private_pg_url(private_cluster: PrivateCluster) -> Iterator[str]:
    """Like ``pg_url``, on the private cluster: connections see a fresh schema of their own."""
    import psycopg

    schema = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(libpq(private_cluster.url), autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    yield f"{private_cluster.url}?options=-csearch_path%3D{schema}"
    try:
        with psycopg.connect(libpq(private_cluster.url), autocommit=True, connect_timeout=10) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")
    except psycopg.OperationalError:
        pass  # the cluster is down after a failed test; it is removed at the end of the session anyway
