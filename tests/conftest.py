"""Shared fixtures.

- ``pg_cluster``: a throwaway PostgreSQL cluster for the whole test session, started with
  ``initdb``/``pg_ctl`` as the ``postgres`` user (initdb refuses root) on a free loopback port.
  Outside CI a machine without PostgreSQL skips those tests; with ``CI=true`` that is a failure.
- ``database_url``: parametrized over ``sqlite`` and ``postgresql``; every test using it runs on
  both engines, each time on a fresh, empty database.
- ``db``: a ``Database`` on that URL with the schema created.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
PG_BIN_DIRS = ("/usr/lib/postgresql/15/bin", "/usr/lib/postgresql/16/bin")


def require_tool(name: str, why: str = "") -> str:
    """Path of an external tool; in CI its absence fails the test, elsewhere it skips."""
    path = shutil.which(name)
    for d in PG_BIN_DIRS:
        if path is None and os.path.exists(os.path.join(d, name)):
            path = os.path.join(d, name)
    if path is None:
        msg = f"{name} not installed{': ' + why if why else ''}"
        if IN_CI:
            pytest.fail(msg + " (CI=true: a missing tool is a failure)")
        pytest.skip(msg)
    return path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class PgCluster:
    host: str
    port: int
    datadir: Path

    def url(self, dbname: str) -> str:
        return f"postgresql://postgres@{self.host}:{self.port}/{dbname}"

    def psql(self, sql: str, dbname: str = "postgres") -> str:
        psql = require_tool("psql")
        out = subprocess.run(
            [psql, "-h", self.host, "-p", str(self.port), "-U", "postgres", "-d", dbname,
             "-v", "ON_ERROR_STOP=1", "-Atc", sql],
            check=True, capture_output=True, text=True,
        )
        return out.stdout

    def create_database(self) -> str:
        name = "t_" + uuid.uuid4().hex[:12]
        self.psql(f"CREATE DATABASE {name}")
        return name


def _as_postgres(args: list[str]) -> list[str]:
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *args]
    return args


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    initdb = require_tool("initdb", "PostgreSQL server binaries")
    pg_ctl = require_tool("pg_ctl", "PostgreSQL server binaries")
    base = Path(tempfile.mkdtemp(prefix="mailserver-pg-"))
    datadir = base / "data"
    os.chmod(base, 0o755)
    if os.geteuid() == 0:
        shutil.chown(base, "postgres", "postgres")
    subprocess.run(
        _as_postgres([initdb, "-D", str(datadir), "-U", "postgres", "-A", "trust",
                      "-E", "UTF8", "--locale=C.UTF-8", "--no-sync"]),
        check=True, capture_output=True,
    )
    port = free_port()
    opts = (f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={base} "
            "-c fsync=on -c max_connections=200 -c shared_buffers=128MB")
    subprocess.run(
        _as_postgres([pg_ctl, "-D", str(datadir), "-o", opts, "-l", str(base / "log"),
                      "-w", "-t", "60", "start"]),
        check=True, capture_output=True,
    )
    try:
        yield PgCluster("127.0.0.1", port, datadir)
    finally:
        subprocess.run(_as_postgres([pg_ctl, "-D", str(datadir), "-m", "immediate", "stop"]),
                       capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/mail.sqlite3"
    cluster: PgCluster = request.getfixturevalue("pg_cluster")
    return cluster.url(cluster.create_database())


@pytest.fixture
async def db(database_url: str) -> AsyncIterator["object"]:
    from mailserver.store.engine import Database

    database = Database(database_url)
    await database.create_schema()
    try:
        yield database
    finally:
        await database.close()
