"""The change bus: "account A changed at MODSEQ S (types …)", published after each commit.

Subscribers (IMAP IDLE, JMAP EventSource/WebSocket push) treat an event only as a hint to re-read
the change log (``mailserver.store.changes``): events carry no data that is not in the store, so
a lost or coalesced notification delays an update but never loses it.

``LocalChangeBus`` fans out inside one process. Every subscriber has a small bounded queue; when
it is full the newest event replaces the queued ones of that account (the MODSEQ only grows and
the types are merged), so a slow reader costs memory O(1) and never blocks a publisher.

Across processes (``make_change_bus`` picks by the database URL):

- ``PgChangeBus`` (PostgreSQL ``LISTEN/NOTIFY``): ``publish`` hands the event to the local
  subscribers at once and queues it; a publisher task sends the queue (coalesced per account)
  as ``SELECT pg_notify('mail_changes', '<origin> <account_id> <modseq> <types>')`` on its own
  asyncpg connection, so a publisher never waits for the network. Events are published after the
  commit, so a NOTIFY never announces uncommitted data. One listener connection per process
  ``LISTEN``s and feeds ``deliver`` (ignoring its own process's ``origin``, already delivered);
  it checks itself every ``HEALTH_INTERVAL`` s and reconnects with backoff after a failover,
  then emits an event with the current MODSEQ for every subscribed account, since notifications
  sent while it was away are lost. ``subscribe`` waits (briefly) for the listener to be up.
- ``SqlitePollChangeBus`` (SQLite, several processes on one file): every ``POLL_INTERVAL``
  (250 ms) one read of ``accounts.modseq`` for the accounts that have local subscribers; an
  account whose MODSEQ moved past the last one seen gets an event with the types of its new
  change-log rows. The baseline is read when an account gets its first subscriber (after the
  subscription is registered), so a commit that follows ``subscribe`` is always reported.
  Local publishes are delivered at once and advance the baseline, so they are not repeated.
"""

from __future__ import annotations

import abc
import asyncio
import logging
import secrets
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("mailserver.events")

CHANNEL = "mail_changes"
POLL_INTERVAL = 0.25
HEALTH_INTERVAL = 5.0
# What a synthetic event (after a reconnect) announces: every object type of the change log.
ALL_TYPES = frozenset({"Mailbox", "Email", "Thread", "Membership"})


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


# ---------------------------------------------------------------------------------------------
# Across processes
# ---------------------------------------------------------------------------------------------

def make_change_bus(db: Any) -> ChangeBus:
    """The bus for a ``Database``: LISTEN/NOTIFY on PostgreSQL, polling on SQLite."""
    if db.dialect == "postgresql":
        return PgChangeBus(db.url)
    return SqlitePollChangeBus(db)


def asyncpg_dsn(url: str) -> str:
    """``postgresql+asyncpg://…`` (SQLAlchemy) → ``postgresql://…`` (asyncpg)."""
    from sqlalchemy.engine import make_url

    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def _encode(origin: str, event: ChangeEvent) -> str:
    return f"{origin} {event.account_id} {event.modseq} {','.join(sorted(event.types))}"


def _decode(payload: str) -> tuple[str, ChangeEvent] | None:
    try:
        origin, account, modseq, types = payload.split(" ", 3)
        return origin, ChangeEvent(int(account), int(modseq),
                                   frozenset(t for t in types.split(",") if t))
    except ValueError:
        return None


class PgChangeBus(LocalChangeBus):
    """LISTEN/NOTIFY across processes and nodes (see the module docstring)."""

    def __init__(self, url: str, *, queue_size: int = 16, ready_timeout: float = 5.0) -> None:
        super().__init__(queue_size)
        self.dsn = asyncpg_dsn(url)
        self.origin = secrets.token_hex(8)
        self.ready_timeout = ready_timeout
        self._outbox: dict[int, ChangeEvent] = {}
        self._outbox_ready: asyncio.Event | None = None
        self._listening: asyncio.Event | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._closed = False
        self._sending = False
        self.reconnects = 0  # listener (re)connections after the first: for tests and metrics

    def _ensure_publisher(self) -> None:
        if self._outbox_ready is None and not self._closed:
            self._outbox_ready = asyncio.Event()
            self._tasks.append(asyncio.create_task(self._publish_loop(),
                                                   name="changebus-publish"))

    def _ensure_listener(self) -> None:
        # only processes with subscribers (IMAP, JMAP) hold a listening connection
        if self._listening is None and not self._closed:
            self._listening = asyncio.Event()
            self._tasks.append(asyncio.create_task(self._listen_loop(), name="changebus-listen"))

    async def publish(self, event: ChangeEvent) -> None:
        self.deliver(event)
        if self._closed:
            return
        self._ensure_publisher()
        queued = self._outbox.get(event.account_id)
        self._outbox[event.account_id] = event if queued is None else queued.merge(event)
        assert self._outbox_ready is not None
        self._outbox_ready.set()

    @asynccontextmanager
    async def subscribe(self, account_id: int) -> AsyncIterator[AsyncIterator[ChangeEvent]]:
        self._ensure_listener()
        async with LocalChangeBus.subscribe(self, account_id) as sub:
            if self._listening is not None and not self._listening.is_set():
                try:
                    await asyncio.wait_for(self._listening.wait(), self.ready_timeout)
                except asyncio.TimeoutError:  # the reconnect will announce every account
                    pass
            yield sub

    async def wait_listening(self) -> None:
        self._ensure_listener()
        assert self._listening is not None
        await self._listening.wait()

    # -- listener ---------------------------------------------------------------------------

    def _on_notify(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        decoded = _decode(payload)
        if decoded is None:
            log.warning("ignoring malformed change notification %r", payload[:100])
            return
        origin, event = decoded
        if origin != self.origin:
            self.deliver(event)

    async def _listen_loop(self) -> None:
        import asyncpg

        assert self._listening is not None
        backoff = 0.1
        first = True
        while True:
            conn = None
            try:
                conn = await asyncpg.connect(
                    self.dsn, timeout=10,
                    server_settings={"application_name": "mailserver-changebus-listen"})
                lost = asyncio.Event()
                conn.add_termination_listener(lambda _c: lost.set())
                await conn.add_listener(CHANNEL, self._on_notify)
                if not first:
                    self.reconnects += 1
                    await self._announce_all(conn)
                first = False
                backoff = 0.1
                self._listening.set()
                while not lost.is_set():
                    try:
                        await asyncio.wait_for(lost.wait(), HEALTH_INTERVAL)
                    except asyncio.TimeoutError:
                        await conn.fetchval("SELECT 1", timeout=HEALTH_INTERVAL)
                log.warning("change bus: listener connection lost, reconnecting")
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.warning("change bus: listener failed (%s), reconnecting in %.1fs", e, backoff)
            finally:
                self._listening.clear()
                if conn is not None:
                    conn.terminate()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)

    async def _announce_all(self, conn: Any) -> None:
        """After a gap in LISTENing: tell every local subscriber to re-read its log."""
        accounts = list(self._subs)
        if not accounts:
            return
        rows = await conn.fetch("SELECT id, modseq FROM accounts WHERE id = ANY($1::bigint[])",
                                accounts)
        for account_id, modseq in rows:
            self.deliver(ChangeEvent(account_id, modseq, ALL_TYPES))

    # -- publisher --------------------------------------------------------------------------

    async def _publish_loop(self) -> None:
        import asyncpg

        assert self._outbox_ready is not None
        conn = None
        backoff = 0.1
        try:
            while True:
                await self._outbox_ready.wait()
                self._outbox_ready.clear()
                batch, self._outbox = self._outbox, {}
                if not batch:
                    continue
                payloads = [_encode(self.origin, e) for e in batch.values()]
                self._sending = True
                try:
                    if conn is None or conn.is_closed():
                        conn = await asyncpg.connect(self.dsn, timeout=10)
                    await conn.execute(
                        "SELECT pg_notify($1, p) FROM unnest($2::text[]) AS p", CHANNEL,
                        payloads, timeout=10)
                    backoff = 0.1
                    self._sending = False
                except asyncio.CancelledError:
                    raise
                except Exception as e:
                    self._sending = False
                    log.warning("change bus: NOTIFY failed (%s), retrying in %.1fs", e, backoff)
                    if conn is not None:
                        conn.terminate()
                        conn = None
                    for event in batch.values():  # put back, merged with anything newer
                        newer = self._outbox.get(event.account_id)
                        self._outbox[event.account_id] = (event if newer is None
                                                          else event.merge(newer))
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 5.0)
                    self._outbox_ready.set()
        finally:
            if conn is not None:
                conn.terminate()

    async def close(self) -> None:
        self._closed = True
        tasks, self._tasks = self._tasks, []
        # give queued notifications a moment to leave before the publisher goes
        for _ in range(100):
            if not tasks or not (self._outbox or self._sending):
                break
            await asyncio.sleep(0.02)
        for t in tasks:
            t.cancel()
        for t in tasks:
            try:
                await t
            except BaseException:
                pass
        await super().close()


class SqlitePollChangeBus(LocalChangeBus):
    """Polls ``accounts.modseq`` of subscribed accounts (see the module docstring)."""

    def __init__(self, db: Any, *, queue_size: int = 16,
                 interval: float = POLL_INTERVAL) -> None:
        super().__init__(queue_size)
        self.db = db
        self.interval = interval
        self._seen: dict[int, int] = {}  # account → highest MODSEQ announced here
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    async def publish(self, event: ChangeEvent) -> None:
        if event.account_id in self._seen:
            self._seen[event.account_id] = max(self._seen[event.account_id], event.modseq)
        self.deliver(event)

    @asynccontextmanager
    async def subscribe(self, account_id: int) -> AsyncIterator[AsyncIterator[ChangeEvent]]:
        async with LocalChangeBus.subscribe(self, account_id) as sub:
            if account_id not in self._seen:
                modseqs = await self._modseqs([account_id])
                if account_id in self._subs and account_id not in self._seen:
                    self._seen[account_id] = modseqs.get(account_id, 0)
            if self._task is None and not self._closed:
                self._task = asyncio.create_task(self._poll_loop(), name="changebus-poll")
            yield sub
        if account_id not in self._subs:
            self._seen.pop(account_id, None)

    async def _modseqs(self, accounts: list[int]) -> dict[int, int]:
        from sqlalchemy import select

        from mailserver.store.schema import accounts as A

        async with self.db.read() as conn:
            rows = await conn.execute(select(A.c.id, A.c.modseq).where(A.c.id.in_(accounts)))
            return {r[0]: r[1] for r in rows}

    async def _types_since(self, account_id: int, modseq: int) -> frozenset[str]:
        from sqlalchemy import select

        from mailserver.store.schema import changes as CH

        async with self.db.read() as conn:
            rows = await conn.execute(select(CH.c.object_type).distinct().where(
                CH.c.account_id == account_id, CH.c.modseq > modseq))
            return frozenset(r[0] for r in rows)

    async def poll_once(self) -> None:
        accounts = [a for a in self._subs if a in self._seen]
        if not accounts:
            return
        for account_id, modseq in (await self._modseqs(accounts)).items():
            last = self._seen.get(account_id)
            if last is None or modseq <= last:
                continue
            types = await self._types_since(account_id, last)
            if account_id in self._seen:
                self._seen[account_id] = max(self._seen[account_id], modseq)
            if types:  # a MODSEQ bump without change rows changed nothing a reader can see
                self.deliver(ChangeEvent(account_id, modseq, types))

    async def _poll_loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.poll_once()
            except asyncio.CancelledError:
                raise
            except Exception as e:  # database busy or briefly unavailable: next round
                log.warning("change bus: poll failed: %s", e)

    async def close(self) -> None:
        self._closed = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except BaseException:
                pass
        await super().close()
