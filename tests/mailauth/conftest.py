"""Fixtures for the mail authentication tests: a real knot server on loopback.

- ``dns_server``: one ``knotd`` per test module on a free 127.0.0.1 port, serving the module's
  ``ZONES`` dict (apex -> zone file lines, or None for a zone that answers SERVFAIL).
  Without knot installed the tests skip; with ``CI=true`` that is a failure.
- ``resolver``: our ``Resolver`` pointed at that server, with a fresh cache per test.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from mailserver.mailauth.dns import Resolver
from mailserver.testing.dnsserver import KnotServer, find_knot

from mailserver.testing.tools import IN_CI, missing_tool  # noqa: E402,F401


@pytest.fixture(scope="module")
def dns_server(request: pytest.FixtureRequest) -> Iterator[KnotServer]:
    if find_knot() is None:
        missing_tool("knotd not installed (Debian package: knot)")
    server = KnotServer.start(getattr(request.module, "ZONES", {}))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def resolver(dns_server: KnotServer) -> Resolver:
    return Resolver([dns_server.host], port=dns_server.port, timeout=2.0)
