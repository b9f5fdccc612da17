"""The IMAP daemon: IMAP4rev1 (RFC 3501) and IMAP4rev2 (RFC 9051) on asyncio.

``start(app, section)`` binds the ``[imap]`` listeners (``listen`` with STARTTLS, ``listen_tls``
with implicit TLS, RFC 8314) through ``servers.base.ListenerGroup`` and runs one ``Session``
(``session.py``) per connection. The wire protocol is ``protocols.imap`` (sans-I/O); the data
is the mail store (``mailserver.store``) — MODSEQ and UIDs come from the same change log JMAP
uses — and APPEND goes through ``mailserver.delivery`` like every other ingest.

Modules: ``session`` (the command loop and the handlers), ``view`` (the selected mailbox as
the client knows it: sequence numbers, untagged updates), ``reads`` (the per-command reads,
plain sqlite3 on SQLite), ``query`` (SEARCH/SORT/THREAD on
the store's search), ``listing`` (LIST/LSUB), ``store`` (``MailStore`` with one-hop
transactions). ``IdleWatcher`` below wakes sessions in IDLE.

Deployment note: run the daemon with ``MALLOC_MMAP_THRESHOLD_=1048576`` in its environment.
Without it glibc raises its mmap threshold after the first freed argon2 buffer (19 MiB, one
per LOGIN) and keeps every later one in the heap; measured with 1,000 sessions in IDLE:
~125 KiB RSS per connection without, ~16-21 KiB with.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from protocols.imap import responses

from mailserver.servers.base import ListenerGroup, listeners_from, server_tls_context
from mailserver.servers.imap.blobread import EnvelopeCache
from mailserver.servers.imap.reads import SqliteReads
from mailserver.servers.imap.store import ImapStore

log = logging.getLogger("mailserver.imap")


class IdleWatcher:
    """Wakes the sessions in IDLE when their account changed, for the whole daemon.

    Per watched account (one with a session in IDLE) it keeps ONE subscription to
    ``app.bus`` and, as the fallback for a bus that missed an event (another process, a lost
    notification), reads the MODSEQ of every watched account every ``interval`` seconds in
    one read transaction. The cost is per account, not per idle connection: a session in
    IDLE holds an ``asyncio.Event`` and nothing else.
    """

    def __init__(self, reads, bus, interval: float) -> None:
        self.reads = reads
        self.bus = bus
        self.interval = interval
        self._waiters: dict[int, set[asyncio.Event]] = {}
        self._bus_tasks: dict[int, asyncio.Task[None]] = {}
        self._seen: dict[int, int] = {}
        self._poll: asyncio.Task[None] | None = None

    def watch(self, account_id: int) -> asyncio.Event:
        event = asyncio.Event()
        self._waiters.setdefault(account_id, set()).add(event)
        if account_id not in self._bus_tasks:
            self._bus_tasks[account_id] = asyncio.create_task(self._listen(account_id))
        if self._poll is None or self._poll.done():
            self._poll = asyncio.create_task(self._run())
        return event

    def unwatch(self, account_id: int, event: asyncio.Event) -> None:
        waiters = self._waiters.get(account_id)
        if waiters is None:
            return
        waiters.discard(event)
        if not waiters:
            del self._waiters[account_id]
            self._seen.pop(account_id, None)
            task = self._bus_tasks.pop(account_id, None)
            if task is not None:
                task.cancel()

    def _wake(self, account_id: int) -> None:
        for event in tuple(self._waiters.get(account_id, ())):
            event.set()

    async def _listen(self, account_id: int) -> None:
        try:
            async with self.bus.subscribe(account_id) as events:
                async for _event in events:
                    self._wake(account_id)
        except asyncio.CancelledError:
            raise
        except Exception:  # the poll below still covers this account
            log.exception("imap: change bus subscription failed")

    async def _run(self) -> None:
        while self._waiters:
            await asyncio.sleep(self.interval)
            try:
                states = await self.reads.account_modseqs(list(self._waiters))
            except Exception:
                log.exception("imap: idle watcher read failed")
                continue
            for account_id, modseq in states.items():
                before = self._seen.get(account_id)
                self._seen[account_id] = modseq
                # first look at an account: no baseline, and a change may have slipped in
                # between the session's own sync and now, so wake it once to re-check
                if before is None or modseq != before:
                    self._wake(account_id)

    async def stop(self) -> None:
        tasks = [t for t in (self._poll, *self._bus_tasks.values()) if t is not None]
        for t in tasks:
            t.cancel()
        for t in tasks:
            try:
                await t
            except (asyncio.CancelledError, Exception):
                pass


class ImapDaemon:
    def __init__(self, app, section, tls_context) -> None:
        from mailserver.servers.imap.session import IDLE_POLL

        self.app = app
        self.section = section
        self.tls_context = tls_context
        self.store = ImapStore(app.db, app.blobs, app.bus)
        self.reads = SqliteReads.for_store(self.store)
        self.envelopes = EnvelopeCache()
        self.store.reads = self.reads
        self.group: ListenerGroup | None = None
        self.idle_watcher = IdleWatcher(self.reads, app.bus, IDLE_POLL)

    async def handle(self, conn) -> None:
        from mailserver.servers.imap.session import Session

        await Session(self, conn).run()

    async def refuse(self, conn, why: str) -> None:
        conn.write(responses.bye(f"Connection refused: {why}", "UNAVAILABLE"))
        await conn.drain()

    async def stop(self) -> None:
        try:
            if self.group is not None:
                await self.group.stop()
        finally:
            try:
                await self.idle_watcher.stop()
            finally:
                self.reads.close()


def _tls_context(app, section) -> Any:
    needed = bool(section.listen_tls) or section.tls != "none"
    if not needed:
        return None
    try:
        return server_tls_context(app.config.tls)
    except (OSError, ValueError) as e:
        if section.listen_tls or section.tls == "required":
            raise RuntimeError(f"imap: TLS certificate: {e}") from e
        log.warning("imap: no TLS certificate (%s): STARTTLS not offered", e)
        return None


async def start(app, section) -> ImapDaemon:
    daemon = ImapDaemon(app, section, _tls_context(app, section))
    daemon.group = ListenerGroup("imap", listeners_from(section), daemon.handle,
                                 tls_context=daemon.tls_context, limits=app.config.limits,
                                 refuse=daemon.refuse)
    await daemon.group.start()
    return daemon
