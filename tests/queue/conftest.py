"""Fixtures of the queue tests: real DNS (knotd on loopback) and SMTP sinks (``qhelpers``).

- ``dns_server``: knot serving the zone ``remote.test`` (``qhelpers.ZONE``: MX → 127.0.0.x).
- ``sink_port``: one TCP port free on every 127.0.0.x address the zone uses; the workers are
  configured with ``queue.port`` = this port, so each "MX host" is a ``Sink`` on its own
  loopback address.
- ``qenv``: a full single-node setup (``daemon_env``: domain example.test, users alice/bob/
  carol) whose ``[dns]`` points at the knot server; ``qenv.worker(clock=…)`` builds a worker.
"""

from __future__ import annotations

import socket
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from mailserver.testing.dnsserver import KnotServer, find_knot

sys.path.insert(0, str(Path(__file__).resolve().parent))

from qhelpers import SINK_HOSTS, ZONES, QueueEnv, make_qenv  # noqa: E402

from mailserver.testing.tools import IN_CI, missing_tool  # noqa: E402,F401


@pytest.fixture(scope="session")
def dns_server() -> Iterator[KnotServer]:
    if find_knot() is None:
        missing_tool("knotd not installed (Debian package: knot)")
    server = KnotServer.start(ZONES)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def sink_port() -> int:
    for _ in range(100):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        ok = True
        for host in (*SINK_HOSTS, "127.0.0.2"):
            with socket.socket() as s:
                try:
                    s.bind((host, port))
                except OSError:
                    ok = False
                    break
        if ok:
            return port
    raise RuntimeError("no port free on every sink address")


@pytest.fixture
async def qenv(tmp_path, dns_server, sink_port) -> AsyncIterator[QueueEnv]:
    async with make_qenv(tmp_path, dns_server, sink_port) as q:
        yield q
