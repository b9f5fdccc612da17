"""The store-backed login throttle (``StoreLoginThrottle``) on SQLite and PostgreSQL: two
instances on one database stand for two daemons/processes/nodes and must share one budget."""

from __future__ import annotations

import asyncio

from mailserver.auth.throttle import StoreLoginThrottle, ThrottlePolicy
from mailserver.store import schema

POLICY = ThrottlePolicy(window=900, free_failures=3, base_delay=1, max_delay=30,
                        lockout_after=10, lockout=600)


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def pair(db, clock, refresh: float = 1.0):
    return (StoreLoginThrottle(db, POLICY, clock=clock, refresh=refresh),
            StoreLoginThrottle(db, POLICY, clock=clock, refresh=refresh))


async def rows(db) -> dict[str, int]:
    async with db.read() as conn:
        t = schema.login_failures
        return {r.key: r.failures for r in (await conn.execute(t.select())).all()}


async def test_failures_add_up_across_instances_and_lock_both_out(db) -> None:
    clock = Clock()
    imap, pop3 = pair(db, clock)
    delays = []
    for i in range(9):
        d = await (imap if i % 2 else pop3).failed("192.0.2.7", "bob@example.test")
        assert d.allowed
        delays.append(d.delay)
    assert delays == [0, 0, 0, 1, 2, 4, 8, 16, 30]  # one budget, counted across both
    last = await imap.failed("192.0.2.7", "bob@example.test")
    assert not last.allowed and last.retry_after == 600
    clock.now += 1.5  # the other instance sees it at its next refresh
    for throttle in (imap, pop3):
        d = await throttle.check("192.0.2.99", "bob@example.test")
        assert not d.allowed and d.reason == "user"
        d = await throttle.check("192.0.2.7", "alice@example.test")
        assert not d.allowed and d.reason == "ip"
    assert (await pop3.check("198.51.100.1", "alice@example.test")).allowed
    clock.now += 601  # the lock-out ends
    assert (await pop3.check("192.0.2.7", "bob@example.test")).allowed


async def test_success_clears_the_user_but_not_the_network(db) -> None:
    clock = Clock()
    a, b = pair(db, clock)
    for _ in range(5):
        await a.failed("192.0.2.8", "carol@example.test")
    clock.now += 2
    await b.check("192.0.2.8", "carol@example.test")  # b learns of the failures
    await b.succeeded("192.0.2.8", "carol@example.test")
    left = await rows(db)
    assert "u:carol@example.test" not in left and left["n:192.0.2.8"] == 5
    d = await a.failed("192.0.2.8", "dave@example.test")
    assert d.delay == 4  # the network's count went on: 6 failures


async def test_window_restarts_the_count(db) -> None:
    clock = Clock()
    a, _ = pair(db, clock)
    for _ in range(6):
        await a.failed(None, "erin@example.test")
    clock.now += 901
    d = await a.failed(None, "erin@example.test")
    assert d.allowed and d.delay == 0
    assert (await rows(db))["u:erin@example.test"] == 1


async def test_concurrent_failures_are_all_counted(db) -> None:
    clock = Clock()
    many = [StoreLoginThrottle(db, ThrottlePolicy(lockout_after=1000), clock=clock)
            for _ in range(3)]
    await asyncio.gather(*(t.failed("203.0.113.5", None) for t in many * 10))
    assert (await rows(db))["n:203.0.113.5"] == 30


async def test_no_query_on_a_clean_login(db) -> None:
    clock = Clock()
    a, _ = pair(db, clock, refresh=60)
    assert (await a.check("192.0.2.1", "frank@example.test")).allowed
    await db.close()  # any further query would fail (and be logged, failing open)
    assert (await a.check("192.0.2.1", "frank@example.test")).allowed
    await a.succeeded("192.0.2.1", "frank@example.test")
