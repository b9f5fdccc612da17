"""Shared fixtures.

- ``pg_cluster``: a throwaway PostgreSQL cluster for the whole test session, started with
  ``initdb``/``pg_ctl`` as the ``postgres`` user (initdb refuses root) on a free loopback port.
  Outside CI a machine without PostgreSQL skips those tests; with ``CI=true`` that is a failure.
- ``database_url``: parametrized over ``sqlite`` and ``postgresql``; every test using it runs on
  both engines, each time on a fresh, empty database.
- ``db``: a ``Database`` on that URL with the schema created.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from mailserver.testing.pgcluster import PgCluster, find_pg_tool, free_port  # noqa: F401
from mailserver.testing.tools import IN_CI, require_tool  # noqa: F401  (re-exported)


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    require_tool("initdb", "PostgreSQL server binaries")
    require_tool("pg_ctl", "PostgreSQL server binaries")
    # fsync off: tests kill client processes, never the machine, so the OS cache is durable
    # enough and database creation per test gets cheap; benchmarks keep fsync on.
    cluster = PgCluster.start(settings={"fsync": "off", "full_page_writes": "off"})
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


@pytest.fixture(scope="session")
def pg_schema_template(pg_cluster: PgCluster) -> str:
    """A database holding the empty schema; tests clone it (CREATE DATABASE … TEMPLATE),
    which is much faster than creating the schema in every test."""
    import asyncio
    import concurrent.futures

    from mailserver.store.engine import Database

    name = pg_cluster.create_database("schema_template")

    async def build() -> None:
        database = Database(pg_cluster.url(name))
        await database.create_schema()
        await database.close()

    # first requested from inside a running event loop (an async fixture): build in a thread
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, build()).result()
    return name


@pytest.fixture
async def db(request: pytest.FixtureRequest, database_url: str) -> AsyncIterator["object"]:
    from mailserver.store.engine import Database

    if database_url.startswith("postgresql"):
        cluster: PgCluster = request.getfixturevalue("pg_cluster")
        template = request.getfixturevalue("pg_schema_template")
        name = "t_" + __import__("uuid").uuid4().hex[:12]
        cluster.psql(f"CREATE DATABASE {name} TEMPLATE {template}")
        database = Database(cluster.url(name))
    else:
        database = Database(database_url)
        await database.create_schema()
    try:
        yield database
    finally:
        await database.close()
