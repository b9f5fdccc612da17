"""The change bus: "account A changed at MODSEQ S (types …)", published after each commit.

Subscribers (IMAP IDLE, JMAP EventSource/WebSocket push) treat an event only as a hint to re-read
the change log (``mailserver.store.changes``): events carry no data that is not in the store, so
a lost or coalesced notification delays an update but never loses it.

``LocalChangeBus`` fans out inside one process. Every subscriber has a small bounded queue; when
it is full the newest event replaces the queued ones of that account (the MODSEQ only grows and
the types are merged), so a slow reader costs memory O(1) and never blocks a publisher.

Across processes the same interface is implemented over PostgreSQL ``LISTEN/NOTIFY``:
``publish`` runs ``SELECT pg_notify('mail_changes', '<account_id> <modseq> <types>')`` (after the
commit — or inside the transaction, since PostgreSQL delivers notifications only on commit), one
dedicated asyncpg connection per process ``LISTEN``s and feeds ``LocalChangeBus.deliver`` for its
local subscribers, and reconnects (re-LISTEN) after a failover, then emits a synthetic event for
every subscribed account so readers re-check the log. On SQLite, several processes poll
``accounts.modseq`` of their subscribed accounts on a short interval the same way.
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ChangeEvent:
    account_id: int
    modseq: int
    types: frozenset[str]

    def merge(self, other: "ChangeEvent") -> "ChangeEvent":
        return ChangeEvent(self.account_id, max(self.modseq, other.modseq),
                           self.types | other.types)


class ChangeBus(abc.ABC):
    """Publish/subscribe of ChangeEvents per account."""

    @abc.abstractmethod
    async def publish(self, event: ChangeEvent) -> None:
        """Announce a committed change. Never blocks on slow subscribers."""

    @abc.abstractmethod
    def subscribe(self, account_id: int
                  ) -> AbstractAsyncContextManager[AsyncIterator[ChangeEvent]]:
        """``async with bus.subscribe(a) as events: async for ev in events: …``"""

    async def close(self) -> None:  # pragma: no cover - trivial
        return None


class _Subscription:
    __slots__ = ("account_id", "maxsize", "_pending", "_wakeup", "closed")

    def __init__(self, account_id: int, maxsize: int) -> None:
        self.account_id = account_id
        self.maxsize = maxsize
        self._pending: list[ChangeEvent] = []
        self._wakeup = asyncio.Event()
        self.closed = False

    def push(self, event: ChangeEvent) -> None:
        if self._pending and len(self._pending) >= self.maxsize:
            # coalesce: one event standing for everything queued so far
            merged = self._pending[0]
            for e in self._pending[1:]:
                merged = merged.merge(e)
            self._pending = [merged.merge(event)]
        else:
            self._pending.append(event)
        self._wakeup.set()

    def close(self) -> None:
        self.closed = True
        self._wakeup.set()

    def __aiter__(self) -> "_Subscription":
        return self

    async def __anext__(self) -> ChangeEvent:
        while not self._pending:
            if self.closed:
                raise StopAsyncIteration
            self._wakeup.clear()
            await self._wakeup.wait()
        return self._pending.pop(0)


class LocalChangeBus(ChangeBus):
    """In-process fan-out (single-process deployments, and the local half of the PG bus)."""

    def __init__(self, queue_size: int = 16) -> None:
        self.queue_size = queue_size
        self._subs: dict[int, set[_Subscription]] = {}

    async def publish(self, event: ChangeEvent) -> None:
        self.deliver(event)

    def deliver(self, event: ChangeEvent) -> None:
        """Hand an event to the local subscribers (synchronous, never blocks)."""
        for sub in tuple(self._subs.get(event.account_id, ())):
            sub.push(event)

    def subscriber_count(self, account_id: int) -> int:
        return len(self._subs.get(account_id, ()))

    @asynccontextmanager
    async def subscribe(self, account_id: int) -> AsyncIterator[AsyncIterator[ChangeEvent]]:
        sub = _Subscription(account_id, self.queue_size)
        self._subs.setdefault(account_id, set()).add(sub)
        try:
            yield sub
        finally:
            sub.close()
            subs = self._subs.get(account_id)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del self._subs[account_id]

    async def close(self) -> None:
        for subs in self._subs.values():
            for sub in subs:
                sub.close()
