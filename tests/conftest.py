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
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from mailserver.testing.pgcluster import PgCluster, find_pg_tool, free_port  # noqa: F401

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require_tool(name: str, why: str = "") -> str:
    """Path of an external tool; in CI its absence fails the test, elsewhere it skips."""
    path = find_pg_tool(name)
    if path is None:
        msg = f"{name} not installed{': ' + why if why else ''}"
        if IN_CI:
            pytest.fail(msg + " (CI=true: a missing tool is a failure)")
        pytest.skip(msg)
    return path


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    require_tool("initdb", "PostgreSQL server binaries")
    require_tool("pg_ctl", "PostgreSQL server binaries")
    cluster = PgCluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


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
