"""Fixtures of the POP3 daemon tests: a full single-node setup with the daemon running, and a
line client in pop3_client.py."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from mailserver.testing.daemons import DaemonEnv, daemon_env  # noqa: E402


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[DaemonEnv]:
    """SQLite setup with the POP3 daemon started ([pop3] tls = "required")."""
    async with daemon_env(tmp_path) as e:
        await e.start("pop3")
        yield e


@pytest.fixture(params=["inline", "files"])
async def blobs_env(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[DaemonEnv]:
    """``env`` with small messages in the database (the default) and with every message in
    files (``blobs.inline_max = 0``: the RETR read-ahead of ``FileBlobStore``)."""
    overrides = {"blobs": {"inline_max": 0}} if request.param == "files" else {}
    async with daemon_env(tmp_path, overrides=overrides) as e:
        await e.start("pop3")
        yield e


@pytest.fixture
async def pg_or_sqlite_env(tmp_path: Path, database_url: str) -> AsyncIterator[DaemonEnv]:
    """The same, on every engine of the ``database_url`` fixture (SQLite and PostgreSQL)."""
    async with daemon_env(tmp_path, database_url) as e:
        await e.start("pop3")
        yield e
