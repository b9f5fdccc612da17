"""Fixtures of the SMTP/LMTP daemon tests.

- ``dns``: one knot server for the directory, serving the sender domains the MX checks SPF of
  (``pass.test`` allows 127.0.0.1, ``fail.test`` allows nobody; ``reject.test`` and
  ``quar.test`` also publish DMARC p=reject / p=quarantine).
- ``make_env``: a single-node setup (``daemon_env``) whose resolver points at that server, with
  config overrides per test; the daemons are started by name.
- ``env``: SQLite with mx, submission and lmtp running; ``any_db_env`` the same on every engine
  of ``database_url`` (SQLite and PostgreSQL).
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from mailserver.testing.daemons import DaemonEnv, _merge, daemon_env  # noqa: E402
from mailserver.testing.dnsserver import KnotServer, find_knot  # noqa: E402

from smtp_testlib import require_tool  # noqa: E402

ZONES = {
    "pass.test": ["@ TXT \"v=spf1 ip4:127.0.0.1 -all\""],
    "fail.test": ["@ TXT \"v=spf1 -all\""],
    "reject.test": ["@ TXT \"v=spf1 -all\"", "_dmarc TXT \"v=DMARC1; p=reject\""],
    "quar.test": ["@ TXT \"v=spf1 -all\"", "_dmarc TXT \"v=DMARC1; p=quarantine\""],
}


@pytest.fixture(scope="session")
def dns() -> Iterator[KnotServer]:
    if find_knot() is None:
        require_tool("knotd", "Debian package knot")
    server = KnotServer.start(ZONES)
    try:
        yield server
    finally:
        server.stop()


EnvFactory = Callable[..., AbstractAsyncContextManager[DaemonEnv]]


@pytest.fixture
def make_env(tmp_path: Path, dns: KnotServer) -> EnvFactory:
    counter = iter(range(1000))

    @asynccontextmanager
    async def factory(*daemons: str, database_url: str | None = None,
                      overrides: dict[str, Any] | None = None) -> AsyncIterator[DaemonEnv]:
        base = {"dns": {"nameservers": [dns.host], "port": dns.port, "timeout": "2s"},
                "lmtp": {"listen": [f"unix:{tmp_path}/lmtp{next(counter)}.sock"]}}
        async with daemon_env(tmp_path / f"env{next(counter)}", database_url,
                              overrides=_merge(base, overrides or {})) as e:
            for name in daemons:
                await e.start(name)
            yield e

    return factory


@pytest.fixture
async def env(make_env: EnvFactory) -> AsyncIterator[DaemonEnv]:
    async with make_env("mx", "submission", "lmtp") as e:
        yield e


@pytest.fixture
async def any_db_env(make_env: EnvFactory, database_url: str) -> AsyncIterator[DaemonEnv]:
    async with make_env("mx", "submission", "lmtp", database_url=database_url) as e:
        yield e
