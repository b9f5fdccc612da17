"""The one ingest path: every message that enters a mailbox comes through here.

SMTP MX, submission to local recipients, LMTP, IMAP APPEND, JMAP Email/import and the CLI
importer all call ``Deliverer``: parse once → blob put once (durable before any metadata
refers to it; a message up to the store's ``inline_max`` is instead written into ``blob_data``
by the transaction itself, see ``mailserver.blobs.inline``) → resolve recipients (aliases fan out, accounts deduplicated, remote forwards
returned for the queue) → per account, in a write transaction: pick the mailbox, append (email
row, UID/MODSEQ, thread, keywords, search index, quota, change log) → commit → publish.

**Group commit.** One writer task per ``Deliverer`` (per process) takes every delivery waiting
at that moment and runs them in one transaction: accounts in ascending id order (the lock order
of ``mailserver.store.schema``), one ``begin_change`` per account (so one MODSEQ per account per
batch), each delivery inside its own SAVEPOINT so that one failure (quota, a vanished mailbox)
rolls back only that delivery, then one COMMIT. Callers are released only after that COMMIT —
nothing is acknowledged before it is durable. While a batch commits, the next one gathers, so
the batch size follows the load.

**Cost per message** (measured with cProfile/py-spy, CPU per delivery; decisions):
- The batch runs as driver SQL (``mailserver.store.engine.DriverSQL``), not Core: Core's
  per-statement Python cost was most of the writer's time.
- Appends defer their plain INSERTs (email, membership, search index, blob references) to the
  end of the batch, one executemany per table (``messages.PendingAppends``); quota, UID and
  MODSEQ allocation stay in order, so UIDs are still strictly ascending. Other work in a batch
  (IMAP/JMAP callers of ``GroupCommitter.submit``) first flushes what the appends before it
  deferred, and writes at once. A failing flush redoes the batch with SAVEPOINTs as above.
- The search-index content (tokenizing, the FTS5 body) is computed by the delivering task
  before it queues, once for all recipients, so the writer holding the lock does not.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, or_, select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from mailserver.blobs.base import blob_id_of
from mailserver.events import ChangeBus, ChangeEvent
from mailserver.store import messages, schema, search
from mailserver.store.accountlock import _COUNTERS as COUNTERS
from mailserver.store.accountlock import AccountNotFound, ChangeSet
from mailserver.store.engine import driver_sql
from mailserver.store.messages import QuotaExceeded

log = logging.getLogger(__name__)

Work = Callable[[AsyncConnection, ChangeSet], Awaitable[Any]]


# ---------------------------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------------------------

DELIVERED = "delivered"
UNKNOWN = "unknown"  # no such local address (SMTP 550 5.1.1)
QUOTA_TEMP = "quota_temp"  # 452 4.2.2
QUOTA_PERM = "quota_perm"  # 552 5.2.2
FAILED = "failed"  # anything else: temporary (451 4.3.0)


@dataclass(frozen=True, slots=True)
class Delivered:
    account_id: int
    mailbox_id: int
    email_id: int
    uid: int


@dataclass(frozen=True, slots=True)
class AccountFailure:
    account_id: int
    status: str
    detail: str


@dataclass(frozen=True, slots=True)
class RecipientOutcome:
    """What to answer for one RCPT. An alias counts as delivered when at least one of its local
    targets got the message (the failures are kept for a DSN); otherwise the answer is the
    least final failure (temporary before permanent)."""

    recipient: str
    status: str
    deliveries: tuple[Delivered, ...] = ()
    failures: tuple[AccountFailure, ...] = ()
    forwards: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.status == DELIVERED

    @property
    def temporary(self) -> bool:
        return self.status in (QUOTA_TEMP, FAILED)

    @property
    def permanent(self) -> bool:
        return self.status in (UNKNOWN, QUOTA_PERM)


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    blob_id: str
    size: int
    recipients: dict[str, RecipientOutcome]
    forwards: tuple[str, ...] = ()  # remote addresses to hand to the outbound queue

    def __getitem__(self, recipient: str) -> RecipientOutcome:
        return self.recipients[recipient]

    @property
    def all_delivered(self) -> bool:
        return all(o.ok for o in self.recipients.values())


# ---------------------------------------------------------------------------------------------
# Group commit
# ---------------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Job:
    account_id: int
    work: Work
    future: asyncio.Future


@dataclass(slots=True)
class BatchStats:
    batches: int = 0
    jobs: int = 0
    largest: int = 0


class GroupCommitter:
    """Runs ``work(conn, cs)`` callables of many callers in shared write transactions."""

    def __init__(self, db, bus: ChangeBus | None = None, *, max_batch: int = 256) -> None:
        self.db = db
        self.bus = bus
        self.max_batch = max_batch
        self.stats = BatchStats()
        self._queue: deque[_Job] = deque()
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._closed = False

    async def submit(self, account_id: int, work: Work) -> Any:
        """Run ``work`` in the next batch; returns its result once the batch has committed."""
        if self._closed:
            raise RuntimeError("GroupCommitter is closed")
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done():
            self._wakeup = asyncio.Event()
            self._task = loop.create_task(self._run(), name="group-commit")
        job = _Job(account_id, work, loop.create_future())
        self._queue.append(job)
        assert self._wakeup is not None
        self._wakeup.set()
        return await job.future

    async def close(self) -> None:
        self._closed = True
        if self._task is not None:
            if self._wakeup is not None:
                self._wakeup.set()
            await self._task
            self._task = None

    async def _run(self) -> None:
        assert self._wakeup is not None
        while True:
            if not self._queue:
                if self._closed:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            batch = []
            while self._queue and len(batch) < self.max_batch:
                batch.append(self._queue.popleft())
            try:
                await self._commit(batch)
            except BaseException as exc:  # never leave a caller waiting
                for job in batch:
                    if not job.future.done():
                        job.future.set_exception(exc if isinstance(exc, Exception)
                                                 else RuntimeError("delivery writer stopped"))
                if not isinstance(exc, Exception):
                    raise

    async def _commit(self, batch: list[_Job]) -> None:
        try:
            try:
                outcomes, events = await self._attempt(batch, savepoints=False)
            except _NeedSavepoints:
                # a delivery failed after it had written: redo the batch with a SAVEPOINT
                # around each delivery so that only that one is rolled back
                outcomes, events = await self._attempt(batch, savepoints=True)
        except Exception as exc:
            # the COMMIT (or the transaction) failed: nobody in this batch is stored
            for job in batch:
                if not job.future.done():
                    job.future.set_exception(exc)
            return
        self.stats.batches += 1
        self.stats.jobs += len(batch)
        self.stats.largest = max(self.stats.largest, len(batch))
        for job in batch:
            ok, value = outcomes[id(job)]
            if job.future.done():
                continue  # the caller gave up (cancelled); the data is committed anyway
            if ok:
                job.future.set_result(value)
            else:
                job.future.set_exception(value)
        if self.bus is not None:
            for event in events:
                try:
                    await self.bus.publish(event)
                except Exception:  # a lost notification only delays (readers use the log)
                    log.exception("change bus publish failed for account %s", event.account_id)

    async def _attempt(self, batch: list[_Job], *, savepoints: bool):
        return await self.db.run_write(lambda conn: _run_batch(conn, batch, savepoints))


class _NeedSavepoints(Exception):
    pass


def _is_clean(exc: BaseException) -> bool:
    """Raised before the delivery wrote anything (so no rollback is needed)."""
    return bool(getattr(exc, "clean", False))


# accountlock.begin_change for every account of a batch in one statement, then ChangeSet.flush
# for all of them (one executemany each), as driver SQL (mailserver.store.engine.DriverSQL). On
# PostgreSQL the sub-select locks the account rows in ascending id order (the lock order of
# mailserver.store.schema); SQLite's writer holds the database lock anyway.
_RETURNING = "RETURNING id, modseq, " + ", ".join(COUNTERS)
_SQL_BEGIN_CHANGES_PG = ("UPDATE accounts SET modseq = modseq + 1 WHERE id IN (SELECT id FROM "
                         "accounts WHERE id = ANY(?) ORDER BY id FOR UPDATE) " + _RETURNING)
_SQL_INSERT_CHANGES = ("INSERT INTO changes (account_id, modseq, idx, object_type, object_id, "
                       "change, mailbox_id, uid, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)")
_SQL_WRITE_COUNTERS = ("UPDATE accounts SET " + ", ".join(f"{c} = ?" for c in COUNTERS)
                       + " WHERE id = ?")
_CHANGE_KEYS = ("account_id", "modseq", "idx", "object_type", "object_id", "change",
                "mailbox_id", "uid", "created_at")
_SAVEPOINT = text("SAVEPOINT delivery")
_RELEASE = text("RELEASE SAVEPOINT delivery")
_ROLLBACK_TO = text("ROLLBACK TO SAVEPOINT delivery")


async def _run_batch(conn, batch: list[_Job], savepoints: bool):
    """The body of a group-commit transaction (runs on an AsyncConnection or, on SQLite, on a
    ThreadConnection inside the connection's thread)."""
    groups: dict[int, list[_Job]] = defaultdict(list)
    for job in batch:
        groups[job.account_id].append(job)
    outcomes: dict[int, tuple[bool, Any]] = {}
    now = int(time.time())
    ids = sorted(groups)
    sql = driver_sql(conn)  # on PostgreSQL: through Core, which sends the BEGIN
    if sql.dialect == "postgresql":
        rows = await sql.fetch(_SQL_BEGIN_CHANGES_PG, (ids,))
        sql = driver_sql(conn)  # the transaction has begun: asyncpg itself from here on
    else:  # SQLite: the writer holds the database lock, no row locks
        rows = await sql.fetch("UPDATE accounts SET modseq = modseq + 1 WHERE id IN ("
                               + ", ".join("?" * len(ids)) + ") " + _RETURNING, tuple(ids))
    changesets = {r[0]: ChangeSet(r[0], r[1], now, {c: r[i + 2] for i, c in enumerate(COUNTERS)})
                  for r in rows}
    succeeded: dict[int, int] = defaultdict(int)
    # appends write their plain INSERTs at the end, one executemany per table (see
    # messages.PendingAppends); not in the SAVEPOINT redo, where each delivery writes at once
    pending = None if savepoints else messages.PendingAppends(sql.dialect)
    token = messages.DEFERRED.set(pending)
    try:
        await _run_jobs(conn, sql, groups, changesets, outcomes, succeeded, pending, savepoints)
        if pending:
            try:
                await pending.flush(sql)
            except Exception as exc:
                raise _NeedSavepoints() from exc
    finally:
        messages.DEFERRED.reset(token)
    change_rows = [tuple(row[k] for k in _CHANGE_KEYS)
                   for cs in changesets.values() for row in cs.rows]
    if change_rows:
        await sql.executemany(_SQL_INSERT_CHANGES, change_rows)
    if changesets:
        await sql.executemany(_SQL_WRITE_COUNTERS, [
            (*(cs.counters[c] for c in COUNTERS), cs.account_id) for cs in changesets.values()])
    events = [ChangeEvent(a, cs.modseq, frozenset(cs.types))
              for a, cs in sorted(changesets.items()) if succeeded[a] and cs.types]
    return outcomes, events


async def _run_jobs(conn, sql, groups, changesets, outcomes, succeeded, pending,
                    savepoints: bool) -> None:
    """Each job of the batch, accounts in ascending order (see ``_run_batch``)."""
    for account_id in sorted(groups):
        jobs = groups[account_id]
        cs = changesets.get(account_id)
        if cs is None:  # deleted since resolve: nothing was written
            for job in jobs:
                outcomes[id(job)] = (False, AccountNotFound(account_id))
            continue
        for job in jobs:
            deferring = pending is not None and getattr(job.work, "deferrable", False)
            if pending is not None and not deferring:
                try:  # other work may read what the appends before it wrote
                    await pending.flush(sql)
                except Exception as exc:
                    raise _NeedSavepoints() from exc
            # other work writes at once (it may read its own writes)
            deferred = messages.DEFERRED.set(pending if deferring else None)
            snapshot = (len(cs.rows), dict(cs.counters), set(cs.types))
            if savepoints:
                await conn.execute(_SAVEPOINT)
            try:
                result = await job.work(conn, cs)
            except Exception as exc:
                messages.DEFERRED.reset(deferred)
                if savepoints:
                    await conn.execute(_ROLLBACK_TO)
                    await conn.execute(_RELEASE)
                elif not _is_clean(exc):
                    raise _NeedSavepoints() from exc
                del cs.rows[snapshot[0]:]
                cs.counters.clear()
                cs.counters.update(snapshot[1])
                cs.types = snapshot[2]
                outcomes[id(job)] = (False, exc)
                continue
            messages.DEFERRED.reset(deferred)
            if savepoints:
                await conn.execute(_RELEASE)
            outcomes[id(job)] = (True, result)
            succeeded[account_id] += 1


# ---------------------------------------------------------------------------------------------
# The Deliverer
# ---------------------------------------------------------------------------------------------


_mb = schema.mailboxes
_PICK_MAILBOX = select(_mb.c.id, _mb.c.path, _mb.c.role).where(
    _mb.c.account_id == bindparam("p_a"),
    or_(_mb.c.role == "inbox", _mb.c.path == "INBOX", _mb.c.path == bindparam("p_path"),
        _mb.c.role == bindparam("p_role")))


_SQL_PICK_MAILBOX = ("SELECT id, path, role FROM mailboxes WHERE account_id = ? AND (role = 'inbox' "
                     "OR path = 'INBOX' OR path = ? OR role = ?)")


async def pick_mailbox(conn: AsyncConnection, account_id: int, mailbox: str | None) -> int:
    """The mailbox named ``mailbox`` (a path, else a role) if it exists, else INBOX."""
    rows = await driver_sql(conn).fetch(_SQL_PICK_MAILBOX, (
        account_id, mailbox or "INBOX", (mailbox or "inbox").lower()))
    if mailbox:
        for mailbox_id, path, _role in rows:
            if path == mailbox:
                return mailbox_id
        for mailbox_id, _path, role in rows:
            if role == mailbox.lower():
                return mailbox_id
    for mailbox_id, path, role in rows:
        if path == "INBOX" or role == "inbox":
            return mailbox_id
    from mailserver.store.mailboxes import MailboxNotFound

    exc = MailboxNotFound("INBOX")
    exc.clean = True  # type: ignore[attr-defined]  # nothing written yet
    raise exc


class Deliverer:
    """The ingest path (see the module docstring). One per process; ``close()`` at shutdown."""

    def __init__(self, db, blobs, directory, bus: ChangeBus | None = None, *,
                 max_batch: int = 256) -> None:
        self.db = db
        self.blobs = blobs
        self.directory = directory
        self.bus = bus
        self.committer = GroupCommitter(db, bus, max_batch=max_batch)

    async def close(self) -> None:
        await self.committer.close()

    async def _blob(self, raw: bytes) -> tuple[str, bytes | None]:
        """(blob id, content for the transaction to write) for a message up to the blob store's
        ``inline_max`` (``mailserver.blobs.inline``); else the blob is put — durably — first,
        and the content is None."""
        if len(raw) <= getattr(self.blobs, "inline_max", 0):
            return blob_id_of(raw), bytes(raw)
        return await self.blobs.put(raw), None

    async def deliver(self, raw: bytes, recipients: Iterable[str], *, mailbox: str | None = None,
                      keywords: Iterable[str] = (), received_at: int | None = None,
                      received_tz: int = 0, parsed=None) -> DeliveryResult:
        """Store ``raw`` for every local recipient; returns the outcome per recipient."""
        from mailserver.message import parse_message

        if parsed is None:
            parsed = parse_message(raw)
        received_at = int(time.time()) if received_at is None else received_at
        recipients = list(dict.fromkeys(recipients))
        resolved: dict[str, tuple[list[int], list[str]]] = {}

        async def resolve_all(conn: AsyncConnection) -> None:  # one read transaction
            for rcpt in recipients:
                res = await self.directory.resolve(rcpt, conn)  # a directory.Resolution
                resolved[rcpt] = sorted(set(res.account_ids)), list(res.remote)

        await self.db.read_inline(resolve_all)  # indexed rows: no thread hop
        accounts = sorted({a for acc, _r in resolved.values() for a in acc})
        blob_id, inline = await self._blob(raw) if accounts else ("", None)
        kw = tuple(keywords)
        # tokenized here, once for every recipient, not in the writer while it holds the lock
        content = search.index_content(self.db.dialect, parsed) if accounts else None

        async def one(account_id: int) -> Delivered:
            async def work(conn: AsyncConnection, cs: ChangeSet) -> Delivered:
                mailbox_id = await pick_mailbox(conn, account_id, mailbox)
                email_id, uid = await messages.append(
                    conn, cs, mailbox_id, blob_id, parsed, keywords=kw,
                    received_at=received_at, received_tz=received_tz, index_content=content,
                    blob_data=inline)
                return Delivered(account_id, mailbox_id, email_id, uid)
            work.deferrable = True  # type: ignore[attr-defined]  # only appends: see _run_batch
            return await self.committer.submit(account_id, work)

        done = await asyncio.gather(*(one(a) for a in accounts), return_exceptions=True)
        per_account: dict[int, Delivered | AccountFailure] = {}
        for account_id, res in zip(accounts, done):
            if isinstance(res, Delivered):
                per_account[account_id] = res
            elif isinstance(res, QuotaExceeded):
                per_account[account_id] = AccountFailure(
                    account_id, QUOTA_PERM if res.permanent else QUOTA_TEMP, str(res))
            elif isinstance(res, BaseException):
                if not isinstance(res, Exception):
                    raise res
                log.warning("delivery to account %s failed: %r", account_id, res)
                per_account[account_id] = AccountFailure(account_id, FAILED, repr(res))
        outcomes: dict[str, RecipientOutcome] = {}
        all_forwards: list[str] = []
        for rcpt in recipients:
            acc, remote = resolved[rcpt]
            all_forwards.extend(remote)
            ok = tuple(per_account[a] for a in acc if isinstance(per_account[a], Delivered))
            bad = tuple(per_account[a] for a in acc if isinstance(per_account[a], AccountFailure))
            if ok or (remote and not bad):
                status = DELIVERED
            elif not acc and not remote:
                status = UNKNOWN
            elif any(f.status in (QUOTA_TEMP, FAILED) for f in bad):
                status = next(f.status for f in bad if f.status in (QUOTA_TEMP, FAILED))
            else:
                status = QUOTA_PERM
            outcomes[rcpt] = RecipientOutcome(rcpt, status, ok, bad, tuple(remote))  # type: ignore[arg-type]
        result = DeliveryResult(blob_id, parsed.size, outcomes,
                                tuple(dict.fromkeys(all_forwards)))
        # -- post-commit hook: vacation auto-replies (mailserver.autoreply; set by open_app).
        # It never raises and never waits: the reply runs in its own task.
        responder = getattr(self, "auto_responder", None)
        if responder is not None:
            responder.delivered(raw, parsed, result)
        # -- end of hook
        return result

    async def append_to_mailbox(self, account_id: int, mailbox_id: int, raw: bytes,
                                keywords: Iterable[str] = (), received_at: int | None = None,
                                *, received_tz: int = 0, parsed=None) -> Delivered:
        """IMAP APPEND, JMAP Email/import, CLI import: one message into one mailbox.

        Raises QuotaExceeded, MailboxNotFound (mailserver.store.mailboxes)."""
        from mailserver.message import parse_message

        if parsed is None:
            parsed = parse_message(raw)
        received_at = int(time.time()) if received_at is None else received_at
        blob_id, inline = await self._blob(raw)
        kw = tuple(keywords)
        content = search.index_content(self.db.dialect, parsed)

        async def work(conn: AsyncConnection, cs: ChangeSet) -> Delivered:
            email_id, uid = await messages.append(
                conn, cs, mailbox_id, blob_id, parsed, keywords=kw, received_at=received_at,
                received_tz=received_tz, index_content=content, blob_data=inline)
            return Delivered(account_id, mailbox_id, email_id, uid)

        work.deferrable = True  # type: ignore[attr-defined]  # only appends: see _run_batch
        return await self.committer.submit(account_id, work)
