"""MX routing against a real authoritative server (knot on loopback)."""

from __future__ import annotations

import random

import pytest

from mailserver.mailauth.dns import Resolver
from mailserver.queue.routing import Route, RoutingError, host_addresses, route_domain


@pytest.fixture
def resolver(dns_server) -> Resolver:
    return Resolver([dns_server.host], port=dns_server.port, timeout=3.0)


async def test_preference_order_and_equal_preferences_shuffled(resolver):
    orders = set()
    for seed in range(20):
        routes = await route_domain(resolver, "equal.remote.test", random.Random(seed))
        names = [r.host for r in routes]
        assert names[-1] == "mxc.equal.remote.test"  # preference 20 always last
        orders.add(tuple(names[:2]))
    assert orders == {("mxa.equal.remote.test", "mxb.equal.remote.test"),
                      ("mxb.equal.remote.test", "mxa.equal.remote.test")}


async def test_every_address_a_then_aaaa(resolver):
    addrs = await host_addresses(resolver, Route("mxb.equal.remote.test", 10))
    assert addrs == ["127.0.0.4", "::1"]
    assert await host_addresses(resolver, Route("mxc.equal.remote.test", 20)) == []


async def test_implicit_mx_null_mx_nxdomain_literal(resolver):
    rng = random.Random(1)
    assert await route_domain(resolver, "implicit.remote.test", rng) == [
        Route("implicit.remote.test", 0)]
    with pytest.raises(RoutingError) as e:
        await route_domain(resolver, "nullmx.remote.test", rng)
    assert e.value.permanent and e.value.status == "5.1.10"
    with pytest.raises(RoutingError) as e:
        await route_domain(resolver, "nosuchdomain.remote.test", rng)
    assert e.value.permanent and e.value.status == "5.1.2"
    assert await route_domain(resolver, "[127.0.0.9]", rng) == [Route("[127.0.0.9]", 0,
                                                                       "127.0.0.9")]
    with pytest.raises(RoutingError):
        await route_domain(resolver, "[not-an-ip]", rng)


async def test_dns_failure_is_temporary(dns_server):
    dead = Resolver(["127.0.0.1"], port=1, timeout=0.5)  # nothing answers there
    with pytest.raises(RoutingError) as e:
        await route_domain(dead, "ok.remote.test", random.Random(1))
    assert not e.value.permanent and e.value.status == "4.4.3"
