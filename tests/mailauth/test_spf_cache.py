"""The SPF verdict cache of ``check_spf`` against a real knot server: a verdict is reused for
the same inputs until the first DNS answer it used expires, a changed input is evaluated
anew, and a temperror is never kept."""

from __future__ import annotations

from mailserver.mailauth.dns import Resolver
from mailserver.mailauth.spf import check_spf
from mailserver.testing.dnsserver import KnotServer

ZONES = {
    ".": [],
    "cached.test": ['@ IN TXT "v=spf1 ip4:192.0.2.1 -all"'],  # TTL 300 (zone default)
    "flaky.test": None,  # SERVFAIL
}


def _resolver(dns_server: KnotServer, now: list[float]) -> Resolver:
    return Resolver([dns_server.host], port=dns_server.port, timeout=2.0,
                    clock=lambda: now[0])


async def test_verdict_is_kept_until_its_answers_expire(dns_server: KnotServer) -> None:
    now = [1000.0]
    r = _resolver(dns_server, now)
    first = await check_spf("192.0.2.1", "news@cached.test", "mx.cached.test", r)
    assert first.result == "pass" and first.domain == "cached.test"
    assert 1000 < r.expiry("cached.test", "TXT") <= 1300
    try:
        # the policy changes; within the TTL the same inputs give the same verdict, from the
        # cache (the DNS answer it came from is still valid too)
        dns_server.add_zones({"cached.test": ['@ IN TXT "v=spf1 -all"']})
        now[0] += 200
        assert await check_spf("192.0.2.1", "news@cached.test", "mx.cached.test", r) is first
        # other inputs are other evaluations (of the cached answer)
        other = await check_spf("192.0.2.9", "news@cached.test", "mx.cached.test", r)
        assert other.result == "fail"
        # once the answer has expired, the new policy is read
        now[0] += 101
        again = await check_spf("192.0.2.1", "news@cached.test", "mx.cached.test", r)
        assert again.result == "fail"
    finally:
        dns_server.add_zones(ZONES)


async def test_temperror_is_not_cached(dns_server: KnotServer) -> None:
    now = [5000.0]
    r = _resolver(dns_server, now)
    try:
        assert (await check_spf("192.0.2.1", "a@flaky.test", "h.test", r)).result == "temperror"
        dns_server.add_zones({"flaky.test": ['@ IN TXT "v=spf1 ip4:192.0.2.1 -all"']})
        assert (await check_spf("192.0.2.1", "a@flaky.test", "h.test", r)).result == "pass"
    finally:
        dns_server.add_zones(ZONES)


async def test_cache_off_evaluates_every_time(dns_server: KnotServer) -> None:
    now = [0.0]
    r = Resolver([dns_server.host], port=dns_server.port, timeout=2.0, cache_size=0,
                 clock=lambda: now[0])
    try:
        assert (await check_spf("192.0.2.1", "x@cached.test", "h", r)).result == "pass"
        dns_server.add_zones({"cached.test": ['@ IN TXT "v=spf1 -all"']})
        assert (await check_spf("192.0.2.1", "x@cached.test", "h", r)).result == "fail"
    finally:
        dns_server.add_zones(ZONES)
