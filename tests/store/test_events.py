"""The in-process change bus."""

from __future__ import annotations

import asyncio

from mailserver.events import ChangeEvent, LocalChangeBus


async def test_fan_out_and_isolation():
    bus = LocalChangeBus()
    async with bus.subscribe(1) as a, bus.subscribe(1) as b, bus.subscribe(2) as c:
        await bus.publish(ChangeEvent(1, 5, frozenset({"Email"})))
        assert (await asyncio.wait_for(a.__anext__(), 1)).modseq == 5
        assert (await asyncio.wait_for(b.__anext__(), 1)).modseq == 5
        await bus.publish(ChangeEvent(2, 7, frozenset({"Mailbox"})))
        assert (await asyncio.wait_for(c.__anext__(), 1)).types == {"Mailbox"}
    assert bus.subscriber_count(1) == 0


async def test_slow_subscriber_coalesces():
    bus = LocalChangeBus(queue_size=3)
    async with bus.subscribe(1) as events:
        for m in range(1, 101):
            await bus.publish(ChangeEvent(1, m, frozenset({"Email" if m % 2 else "Mailbox"})))
        got = []
        while True:
            try:
                got.append(await asyncio.wait_for(events.__anext__(), 0.05))
            except asyncio.TimeoutError:
                break
    assert len(got) <= 3 and got[-1].modseq == 100
    assert set().union(*(e.types for e in got)) == {"Email", "Mailbox"}


async def test_iteration_ends_when_bus_closes():
    bus = LocalChangeBus()
    async with bus.subscribe(3) as events:
        task = asyncio.create_task(anext(events, None))
        await asyncio.sleep(0)
        await bus.close()
        assert await asyncio.wait_for(task, 1) is None
