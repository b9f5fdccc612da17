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
