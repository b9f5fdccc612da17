"""Failed-login throttling (mailserver/auth/throttle.py) with an injected clock: free failures,
the exponential tarpit, lock-out and its end, the sliding window, per-network and per-login
keys, success clearing only the login, and the memory bound. The daemons' use of it is tested
end to end in tests/servers/pop3."""

from __future__ import annotations

import pytest

from mailserver.auth.throttle import MemoryLoginThrottle, ThrottlePolicy, network_key


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


POLICY = ThrottlePolicy(window=900, free_failures=3, base_delay=1, max_delay=30,
                        lockout_after=10, lockout=600)


async def test_free_failures_then_exponential_delay_capped(clock) -> None:
    t = MemoryLoginThrottle(POLICY, clock=clock)
    delays = []
    for _ in range(9):
        assert (await t.check("192.0.2.1", "alice")).allowed
        d = await t.failed("192.0.2.1", "alice")
        assert d.allowed
        delays.append(d.delay)
    assert delays == [0, 0, 0, 1, 2, 4, 8, 16, 30]


async def test_lockout_refuses_before_checking_and_ends(clock) -> None:
    t = MemoryLoginThrottle(POLICY, clock=clock)
    for i in range(9):
        assert (await t.failed("192.0.2.1", f"user{i}")).allowed
    d = await t.failed("192.0.2.1", "user9")  # the 10th failure from this address
    assert not d.allowed and d.reason == "ip" and d.retry_after == 600
    d = await t.check("192.0.2.1", "someone-else")
    assert not d.allowed and d.reason == "ip" and 0 < d.retry_after <= 600
    assert (await t.check("192.0.2.2", "someone-else")).allowed  # other clients unaffected
    clock.now += 599
    assert not (await t.check("192.0.2.1", None)).allowed
    clock.now += 2
    assert (await t.check("192.0.2.1", None)).allowed
    # a fresh count after the lock-out: the next failure is free again
    assert (await t.failed("192.0.2.1", "x")).delay == 0


async def test_per_login_key_across_addresses(clock) -> None:
    t = MemoryLoginThrottle(POLICY, clock=clock)
    for i in range(10):  # a botnet: one failure per address, all on one login
        d = await t.failed(f"198.51.100.{i}", "bob@example.test")
    assert not d.allowed and d.reason == "user"
    d = await t.check("203.0.113.9", "bob@example.test")
    assert not d.allowed and d.reason == "user"
    assert (await t.check("203.0.113.9", "carol@example.test")).allowed


async def test_window_forgets_old_failures(clock) -> None:
    t = MemoryLoginThrottle(POLICY, clock=clock)
    for _ in range(5):
        await t.failed("192.0.2.1", "alice")
    clock.now += 901
    assert (await t.failed("192.0.2.1", "alice")).delay == 0  # the old five have expired


async def test_success_clears_the_login_not_the_network(clock) -> None:
    t = MemoryLoginThrottle(POLICY, clock=clock)
    for _ in range(5):
        await t.failed("192.0.2.1", "alice")
    await t.succeeded("192.0.2.1", "alice")
    # the address still carries its five failures: the sixth is delayed
    d = await t.failed("192.0.2.1", "alice")
    assert d.delay == 4  # 6th failure of the network key: 2^(6-3-1)
    d = await t.failed("192.0.2.99", "alice")  # the login itself starts over
    assert d.delay == 0


async def test_ipv6_is_counted_per_64_and_mapped_ipv4_as_ipv4(clock) -> None:
    t = MemoryLoginThrottle(ThrottlePolicy(lockout_after=3), clock=clock)
    await t.failed("2001:db8:1:2::1", None)
    await t.failed("2001:db8:1:2:ffff::9", None)
    d = await t.failed("2001:db8:1:2:abcd::", None)
    assert not d.allowed
    assert not (await t.check("2001:db8:1:2::77", None)).allowed
    assert (await t.check("2001:db8:1:3::1", None)).allowed
    await t.failed("::ffff:192.0.2.5", None)
    await t.failed("192.0.2.5", None)
    assert not (await t.failed("192.0.2.5", None)).allowed


def test_network_key() -> None:
    assert network_key("192.0.2.1") == "192.0.2.1"
    assert network_key("::ffff:192.0.2.1") == "192.0.2.1"
    assert network_key("2001:db8::1") == "2001:db8::/64"
    assert network_key("fe80::1%eth0") == "fe80::/64"
    assert network_key(None) is None and network_key("") is None
    assert network_key("not-an-address") is None


async def test_unix_socket_clients_are_counted_by_login_only(clock) -> None:
    t = MemoryLoginThrottle(ThrottlePolicy(lockout_after=2), clock=clock)
    await t.failed(None, "alice")
    d = await t.failed(None, "alice")
    assert not d.allowed and d.reason == "user"
    assert (await t.check(None, "bob")).allowed
    assert (await t.check(None, None)).allowed  # nothing to key on: never refused


async def test_memory_is_bounded_oldest_dropped(clock) -> None:
    t = MemoryLoginThrottle(ThrottlePolicy(max_keys=100), clock=clock)
    for i in range(1000):
        await t.failed(f"10.0.{i // 256}.{i % 256}", None)
    assert len(t) == 100
    # the most recent keys are the ones kept
    assert "n:10.0.3.231" in t._entries and "n:10.0.0.0" not in t._entries
