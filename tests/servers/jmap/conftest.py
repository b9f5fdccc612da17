"""Fixtures for the JMAP daemon tests: a real daemon on loopback and a small aiohttp client.

``jmap`` runs on SQLite (fast); ``jmap_any`` on every engine of ``database_url``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest

from jmap_testlib import Jmap, basic
from mailserver.testing.daemons import daemon_env


@pytest.fixture
def make_jmap(tmp_path: Path):
    @asynccontextmanager
    async def make(database_url: str | None = None) -> AsyncIterator[Jmap]:
        async with daemon_env(tmp_path, database_url) as env:
            await env.start("jmap")
            host, port = env.address("jmap")
            timeout = aiohttp.ClientTimeout(total=60)
            async with aiohttp.ClientSession(timeout=timeout) as http:
                yield Jmap(env, f"http://{host}:{port}", http, basic("alice"),
                           f"a{env.account_ids['alice']}")
    return make


@pytest.fixture
async def jmap(make_jmap) -> AsyncIterator[Jmap]:
    async with make_jmap() as j:
        yield j


@pytest.fixture
async def jmap_any(make_jmap, database_url: str) -> AsyncIterator[Jmap]:
    async with make_jmap(database_url) as j:
        yield j


@pytest.fixture
async def tls_jmap(make_jmap):
    """A second daemon on an HTTPS listener (jmapc only speaks https): (jmap, host:port,
    CA file)."""
    from dataclasses import replace

    from mailserver.servers.jmap import start

    async with make_jmap() as j:
        section = replace(j.env.app.config.jmap, listen=(), listen_tls=("127.0.0.1:0",))
        daemon = await start(j.env.app, section)
        try:
            [(_lst, sockname)] = daemon.bound
            yield j, f"127.0.0.1:{sockname[1]}", str(j.env.data_dir / "tls" / "cert.pem")
        finally:
            await daemon.stop()
