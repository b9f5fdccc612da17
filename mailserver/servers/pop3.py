"""The POP3 daemon (RFC 1939, 2449, 2595, 5034, 6856; RFC 8314 implicit TLS on 995).

A thin loop around ``protocols.pop3.Connection`` on a ``ListenerGroup`` session; the store,
directory, blobs and locks do the work. Decisions:

- **Maildrop** = the INBOX as it stood at login (RFC 1939 §8): the message list is read once
  (``mailserver.store.maildrop``), in the transaction that takes the lock, after the lock
  statement, and never refreshed during the session.
- **One session per maildrop** across processes and nodes: a lease ``pop3`` on the account in
  ``mailserver.store.locks`` (renewed every ttl/3, given back after UPDATE and before the
  QUIT reply, so a client reconnecting at once is not refused). A second login gets
  ``-ERR [IN-USE]`` (RFC 2449 §8.1.1). A holder that crashed stops renewing; its lease expires
  after ``LEASE_TTL`` seconds. A session whose lease was taken over (it stalled past the expiry)
  deletes nothing at QUIT. Taking and giving back leases is group-committed (``_LeaseWrites``):
  every session starts and ends with one, and on SQLite each commit is an fsync behind one
  writer lock, which capped logins at 1/(2 fsyncs) with one transaction per write.
- **Login cost** (profiled: SQLAlchemy statement building and aiosqlite thread hops, ~17 ms
  CPU per benchmark session, not POP3 itself): a password that verified moments ago (the
  directory's verified-login cache, ``mailserver.auth.cache``) is checked, the lease taken and
  the maildrop read in ONE group-committed transaction (``_take_if_cached``: on SQLite one hop
  into the connection's thread for the whole batch). Otherwise ``Directory.authenticate``
  (argon2id) first, then lease + snapshot in one transaction. The statements are prebuilt.
- **DELE** only marks; the marked messages go at QUIT in one store transaction (RFC 1939 §6),
  through ``MailStore.change`` + ``messages.remove_uids``: ordinary expunges with MODSEQ, change
  log (IMAP sees EXPUNGE/VANISHED, JMAP Email/changes) and a change-bus event. A session that
  ends any other way (drop, timeout, shutdown, too many errors) deletes nothing, and ``+OK``
  answers QUIT only after the commit.
- **Keep mode** is per account (``accounts.pop3_keep``, ``Directory.set_pop3_keep``): DELE
  then marks the message ``$seen`` and ``$pop3deleted`` instead of removing it. The message
  stays in the INBOX for IMAP/JMAP, and ``$pop3deleted`` hides it from later POP3 sessions, so a
  client that deleted it never downloads it again (Dovecot's ``pop3_deleted_flag``).
- **UIDL** = ``<INBOX uidvalidity>.<email id>`` in decimal: the email id is per account and
  never reused, and INBOX's UIDVALIDITY (clock-based, fixed for the account's life since INBOX
  cannot be deleted) separates a re-created account with the same login. It does not change
  when the message is moved out of the INBOX and back (same email), so clients do not fetch
  it twice.
- **RETR/TOP** are byte-exact: CRLF line ends (bare LF → CRLF) and dot-stuffing by
  ``protocols.pop3``. Messages up to ``stream_threshold`` are read whole; larger RETRs are
  streamed from the blob store in ``STREAM_CHUNK`` pieces with the same transformation done
  incrementally (``_Stuffer``), so a 50 MB message never sits in memory; their ``+OK`` line gives
  the stored size. TOP of a large message reads growing prefixes until the header and the
  asked-for lines are in. A RETR from a ``FileBlobStore`` also reads the next small messages
  (``READ_AHEAD_OCTETS``/``READ_AHEAD_MESSAGES``) in the same worker-thread hop, for the RETRs
  that usually follow; a message read ahead is used once and dropped.
- **Authentication**: USER/PASS and SASL PLAIN/LOGIN (``protocols.sasl``), against
  ``Directory.authenticate`` (passwords and app passwords). ``[pop3] tls``: "required" refuses
  them before STLS/implicit TLS, "starttls" offers STLS and allows them, "none" offers no STLS.
  Failures go through the app's shared login throttle (``App.login_throttle``: per network
  and per login, counted across every daemon and node): the tarpit delay
  before ``-ERR [AUTH]``, and while a key is locked out ``-ERR [SYS/TEMP]`` without checking the
  password, then the connection is closed. ``limits.max_auth_failures`` per connection.
- **Timeouts**: ``limits.idle_timeout`` waiting for a command (RFC 1939 §3: at least 10 min),
  ``limits.command_timeout`` for writing a reply to a client that does not read (armed only
  when the reply did not all go to the kernel at once).
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from mailserver.blobs.base import BlobNotFound
from mailserver.blobs.fs import FileBlobStore
from mailserver.servers.base import (
    Connection,
    ListenerGroup,
    listeners_from,
    server_tls_context,
)
from mailserver.store import locks
from mailserver.store import messages as msg
from mailserver.store.keywords import SEEN
from mailserver.store.maildrop import read_maildrop
from mailserver.store.mailstore import MailStore
from protocols import pop3, sasl
from protocols.pop3 import NEED_DATA, ResponseCode

log = logging.getLogger("mailserver.servers.pop3")

LEASE_NAME = "pop3"
LEASE_TTL = 60.0
POP3_DELETED = "$pop3deleted"  # keep mode: DELE'd over POP3, hidden from later sessions
STREAM_THRESHOLD = 1024 * 1024
STREAM_CHUNK = 1024 * 1024
# RETR read-ahead from a FileBlobStore: the next messages up to this many octets / messages
# are read in the same worker-thread hop as the one asked for.
READ_AHEAD_OCTETS = 256 * 1024
READ_AHEAD_MESSAGES = 16


@dataclass(slots=True)
class _Entry:
    uid: int
    email_id: int
    size: int
    blob_id: str


@dataclass(slots=True)
class _Session:
    sid: str
    peer: str
    user: str | None = None
    account_id: int | None = None
    keep: bool = False
    inbox_id: int | None = None
    messages: list[_Entry] = field(default_factory=list)
    lease: locks.LeaseKeeper | None = None
    mech: Any = None  # the SASL mechanism of an AUTH in progress
    ahead: dict[int, bytes] = field(default_factory=dict)  # RETR read-ahead, by index


@dataclass(slots=True)
class _Maildrop:
    """The INBOX as it stood when the lease was taken (by ``holder``, on ``account_id``)."""

    account_id: int
    holder: str
    inbox_id: int
    uidvalidity: int
    entries: list[_Entry]


async def _snapshot(conn: Any, account_id: int, holder: str, keep: bool) -> _Maildrop:
    drop = await read_maildrop(conn, account_id)
    entries = [_Entry(m.uid, m.email_id, m.size, m.blob_id) for m in drop.messages
               if not (keep and POP3_DELETED in m.keywords)]
    return _Maildrop(account_id, holder, drop.inbox_id, drop.uidvalidity, entries)


async def _take_maildrop(txn: Any, account_id: int, name: str, holder: str, ttl: float, *,
                         keep: bool, into: list[_Maildrop], **kw: Any) -> bool:
    """``locks.acquire`` and, when won, the maildrop snapshot in the same transaction: the
    lock first, so that the snapshot sees every UPDATE of the session that held it before."""
    if not await locks.acquire(txn, account_id, name, holder, ttl, **kw):
        return False
    try:
        into.append(await _snapshot(txn.conn, account_id, holder, keep))
    except Exception:
        await locks.release(txn, account_id, name, holder)
        raise
    return True


async def _take_if_cached(txn: Any, *, directory: Any, user: str, password: str, holder: str,
                          ttl: float, into: list[_Maildrop]) -> tuple[Any, bool] | None:
    """(account, lease taken) when the password is in the directory's verified-login cache
    (``Directory.authenticate_cached``, read in this transaction), else None: not checked."""
    account = await directory.authenticate_cached(txn.conn, user, password)
    if account is None:
        return None
    return account, await _take_maildrop(txn, account.id, LEASE_NAME, holder, ttl,
                                         keep=account.pop3_keep, into=into)


def _taken_by(fn: Any) -> _Maildrop | None:
    """The maildrop a batched call took, if it was a take that won."""
    into = getattr(fn, "keywords", {}).get("into")
    return into[0] if into else None


class _Stuffer:
    """Incremental ``normalize_crlf`` + ``dot_stuff`` (protocols.pop3) over chunks of a message.

    A trailing CR is held back until the next chunk so that a CRLF split across chunks is seen
    whole; ``at_line_start`` carries "the output so far ends with LF" so a "." opening a chunk
    is stuffed when it opens a line.
    """

    __slots__ = ("_at_line_start", "_carry", "_empty")

    def __init__(self) -> None:
        self._carry = b""
        self._at_line_start = True
        self._empty = True

    def feed(self, chunk: bytes) -> bytes:
        data = self._carry + chunk
        if data.endswith(b"\r"):
            data, self._carry = data[:-1], b"\r"
        else:
            self._carry = b""
        return self._emit(data)

    def _emit(self, data: bytes) -> bytes:
        if not data:
            return b""
        self._empty = False
        if data.count(b"\n") != data.count(b"\r\n"):
            data = data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
        data = data.replace(b"\r\n.", b"\r\n..")
        if self._at_line_start and data.startswith(b"."):
            data = b"." + data
        self._at_line_start = data.endswith(b"\n")
        return data

    def finish(self) -> bytes:
        """The rest, a CRLF when the message did not end with one, and the final ".CRLF"."""
        out = self._emit(self._carry)
        self._carry = b""
        if not self._empty and not self._at_line_start:
            out += b"\r\n"
        return out + b".\r\n"


def _read_files(paths: list[tuple[int, str]]) -> dict[int, bytes]:
    """index -> content of each readable file (read-ahead: a failure just leaves one out)."""
    out: dict[int, bytes] = {}
    for index, path in paths:
        try:
            with open(path, "rb", buffering=0) as f:
                out[index] = f.readall()
        except OSError:
            pass
    return out


class _LeaseWrites:
    """Group commit of lease writes: the ``mailserver.store.locks`` functions of every session
    waiting at that moment run in one write transaction (one fsync on SQLite), through
    ``Database.run_write`` (on SQLite the whole batch is one hop into the connection's thread).
    The lock semantics are unchanged: the statements still run one after another, so two
    acquirers of one maildrop in a batch see each other like two transactions would. A call
    that raises fails alone; the rest of the batch commits."""

    def __init__(self, db: Any) -> None:
        self.db = db
        self._pending: list[tuple[Callable[..., Awaitable[bool]], tuple, dict[str, Any],
                                  asyncio.Future]] = []
        self._task: asyncio.Task[None] | None = None

    async def call(self, fn: Callable[..., Awaitable[bool]], *args: Any, **kw: Any) -> bool:
        """``fn(db, *args, **kw)`` with ``db`` standing for the batch's transaction (the
        ``write`` of ``locks.LeaseKeeper``)."""
        fut: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._pending.append((fn, args, kw, fut))
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="pop3-lease-writes")
        return await fut

    async def _run(self) -> None:
        dialect = self.db.dialect

        async def body(conn: Any) -> list[tuple[bool, Any]]:
            txn = _InTransaction(conn, dialect)
            results: list[tuple[bool, Any]] = []
            for fn, args, kw, _f in batch:
                try:
                    results.append((True, await fn(txn, *args, **kw)))
                except Exception as e:  # this call's own failure (e.g. no INBOX)
                    results.append((False, e))
            return results

        try:
            while self._pending:
                batch, self._pending = self._pending, []
                try:
                    results = await self.db.run_write(body)
                except Exception as e:
                    for _fn, _a, _kw, fut in batch:
                        if not fut.done():
                            fut.set_exception(e)
                    continue
                for (fn, args, _kw, fut), (ok, result) in zip(batch, results):
                    if not fut.done():
                        if ok:
                            fut.set_result(result)
                        else:
                            fut.set_exception(result)
                    elif ok and (taken := _taken_by(fn)) is not None:
                        # the session was cancelled while its lease was being taken: give it
                        # back instead of leaving it to expire
                        self._pending.append((locks.release,
                                              (taken.account_id, LEASE_NAME, taken.holder), {},
                                              asyncio.get_running_loop().create_future()))
        finally:
            self._task = None


class _InTransaction:
    """What ``mailserver.store.locks`` needs of a ``Database`` (``dialect``, ``write()``), bound
    to an open write transaction."""

    def __init__(self, conn: Any, dialect: str) -> None:
        self.conn, self.dialect = conn, dialect

    @asynccontextmanager
    async def write(self) -> AsyncIterator[Any]:
        yield self.conn


class Pop3Daemon:
    """The running POP3 daemon: ``stop()`` ends it."""

    def __init__(self, app: Any, section: Any) -> None:
        self.app = app
        self.section = section
        cfg = app.config
        self.limits = cfg.limits
        self.hostname = cfg.server.hostname or socket.getfqdn()
        self.store = MailStore(app.db, app.blobs, app.bus)
        self.throttle = app.login_throttle  # one failed-login budget with every daemon
        self.stream_threshold = STREAM_THRESHOLD
        self.lease_ttl = LEASE_TTL
        self.lease_writes = _LeaseWrites(app.db)
        listeners = listeners_from(section)
        needs_tls = section.tls != "none" or any(lst.implicit_tls for lst in listeners)
        tls_context = None
        if needs_tls:
            tls_context = server_tls_context(cfg.tls)
        self.protocol_config = pop3.Pop3Config(
            hostname=self.hostname,
            greeting=f"{self.hostname} POP3 server ready",
            implementation="mailserver",
            expire="NEVER",  # RFC 2449 §6.7: the server itself never deletes mail
            stls=tls_context is not None and section.tls != "none",
            allow_plaintext_auth_without_tls=section.tls != "required",
            max_auth_failures=self.limits.max_auth_failures,
        )
        self.group = ListenerGroup("pop3", listeners, self._session, tls_context=tls_context,
                                   limits=self.limits, refuse=self._refuse)
        self._holder_prefix = f"{self.hostname}:{os.getpid()}"

    async def start(self) -> None:
        await self.group.start()

    async def stop(self) -> None:
        await self.group.stop()

    # ------------------------------------------------------------------------------------------
    async def _refuse(self, conn: Connection, why: str) -> None:
        conn.write(b"-ERR [SYS/TEMP] " + why.encode() + b"\r\n")
        await conn.drain()

    async def _write(self, conn: Connection, data: bytes) -> None:
        conn.write(data)
        transport = conn.writer.transport
        if transport.get_write_buffer_size() == 0 and not transport.is_closing():
            return  # all handed to the kernel: nothing to wait for (and no timer to arm)
        async with asyncio.timeout(self.limits.command_timeout):
            await conn.drain()

    async def _session(self, conn: Connection) -> None:
        s = _Session(sid=secrets.token_hex(6), peer=conn.peer_ip or "local")
        machine = pop3.Connection(self.protocol_config, tls=conn.tls)
        log.info("pop3 %s: connect from %s%s", s.sid, s.peer, " (TLS)" if conn.tls else "",
                 extra={"event": "connect", "session": s.sid, "peer": s.peer, "tls": conn.tls})
        outcome = "closed"
        try:
            conn.write(machine.greeting())
            outcome = await self._loop(conn, machine, s)
        except (TimeoutError, ConnectionError):
            outcome = "write-timeout-or-reset"
        finally:
            if s.lease is not None:
                await s.lease.close()
            log.info("pop3 %s: disconnect (%s)", s.sid, outcome,
                     extra={"event": "disconnect", "session": s.sid, "peer": s.peer,
                            "user": s.user, "outcome": outcome})

    async def _loop(self, conn: Connection, machine: pop3.Connection, s: _Session) -> str:
        while True:
            await self._write(conn, b"")
            try:
                async with asyncio.timeout(self.limits.idle_timeout):
                    data = await conn.read()
            except TimeoutError:
                # RFC 1939 §3: the autologout timer; the session ends without UPDATE
                conn.write(b"-ERR idle for too long, closing connection\r\n")
                await conn.drain()
                return "idle-timeout"
            machine.receive_data(data)
            while (event := machine.next_event()) is not NEED_DATA:
                match event:
                    case pop3.Reply() | pop3.SaslCancelled():
                        s.mech = None
                        conn.write(event.reply)
                    case pop3.StartTLS():
                        await self._write(conn, event.reply)
                        try:
                            await conn.start_tls()
                        except ConnectionError:
                            return "tls-failed"
                        machine.tls_started()
                    case pop3.UserPass():
                        reply, close = await self._login(s, machine, event.user, event.password)
                        conn.write(reply)
                        if close:
                            await conn.drain()
                            return "throttled"
                    case pop3.SaslStart() | pop3.SaslResponse():
                        reply, close = await self._sasl(s, machine, event)
                        conn.write(reply)
                        if close:
                            await conn.drain()
                            return "throttled"
                    case pop3.Apop():  # not offered (apop=False); answer all the same
                        conn.write(machine.auth_failed(ResponseCode.AUTH, "APOP not supported"))
                    case pop3.Retrieve():
                        if not machine.has_pending_input:
                            await self._write(conn, b"")
                        if not await self._retrieve(conn, machine, s, event):
                            return "retrieve-failed-midway"
                    case pop3.Update():
                        result = await self._update(s, event)
                        if s.lease is not None:
                            # given back before "+OK": a client that reconnects at once
                            # (through another process, too) must not find it [IN-USE]
                            await s.lease.close()
                        conn.write(machine.send_quit_result(*result))
                    case pop3.Closed():
                        await conn.drain()
                        return event.reason
                    case _:  # pragma: no cover - every event kind is handled above
                        raise AssertionError(f"unhandled POP3 event {event!r}")

    # ------------------------------------------------------------------------------------------
    # Authentication
    # ------------------------------------------------------------------------------------------

    async def _sasl(self, s: _Session, machine: pop3.Connection,
                    event: pop3.SaslStart | pop3.SaslResponse) -> tuple[bytes, bool]:
        try:
            if isinstance(event, pop3.SaslStart):
                s.mech = sasl.server_mechanism(event.mechanism)
                step = s.mech.step(event.initial)
            else:
                step = s.mech.step(event.data)
        except sasl.SaslError as e:
            s.mech = None
            return machine.auth_failed(None, f"malformed SASL exchange: {e}"), False
        if isinstance(step, bytes):
            return machine.sasl_challenge(step), False
        s.mech = None
        if step.authzid and step.authzid.lower() != step.authcid.lower():
            # RFC 4616 §2: acting as someone else is not something we grant
            return machine.auth_failed(ResponseCode.AUTH, "authorization identity refused"), False
        return await self._login(s, machine, step.authcid, step.password)

    async def _login(self, s: _Session, machine: pop3.Connection, user: str,
                     password: str) -> tuple[bytes, bool]:
        """Verify, throttle, lock and snapshot: (reply, close the connection after it)."""
        key = user.strip().lower()
        decision = await self.throttle.check(s.peer, key)
        if not decision.allowed:
            log.info("pop3 %s: login of %s from %s refused (throttled)", s.sid, key, s.peer,
                     extra={"event": "auth_throttled", "session": s.sid, "peer": s.peer,
                            "user": key, "reason": decision.reason})
            return machine.auth_failed(ResponseCode.SYS_TEMP,
                                       "too many failed logins, try again later"), True
        holder = f"{self._holder_prefix}:{s.sid}"
        snapshot: list[_Maildrop] = []
        directory = self.app.directory
        try:
            # A password verified moments ago: the check, the lease and the snapshot in one
            # group-committed transaction (_take_if_cached); else the full check first.
            got = await self.lease_writes.call(partial(
                _take_if_cached, directory=directory, user=user, password=password,
                holder=holder, ttl=self.lease_ttl, into=snapshot))
            if got is None:
                account = await directory.authenticate(user, password)
                won = False
                if account is not None:
                    won = await self.lease_writes.call(
                        partial(_take_maildrop, keep=account.pop3_keep, into=snapshot),
                        account.id, LEASE_NAME, holder, self.lease_ttl)
            else:
                account, won = got
        except Exception:  # the database is unreachable: not the client's fault
            log.exception("pop3: checking credentials or taking the maildrop failed",
                          extra={"session": s.sid})
            return machine.auth_failed(ResponseCode.SYS_TEMP), False
        if won:
            # kept before any other await: a session cancelled from here on gives it back
            # (``_session`` closes ``s.lease``)
            s.lease = locks.LeaseKeeper.adopt(self.app.db, account.id, LEASE_NAME, holder,
                                              self.lease_ttl, write=self.lease_writes.call)
        if account is None:
            decision = await self.throttle.failed(s.peer, key)
            log.info("pop3 %s: login of %s from %s failed", s.sid, key, s.peer,
                     extra={"event": "auth_failed", "session": s.sid, "peer": s.peer,
                            "user": key})
            if decision.delay:
                await asyncio.sleep(decision.delay)
            return machine.auth_failed(ResponseCode.AUTH), False
        await self.throttle.succeeded(s.peer, key)
        if not won:
            log.info("pop3 %s: maildrop of %s in use", s.sid, account.login,
                     extra={"event": "in_use", "session": s.sid, "peer": s.peer,
                            "user": account.login})
            return machine.auth_failed(ResponseCode.IN_USE), False
        drop = snapshot[0]
        s.user, s.account_id, s.keep = account.login, account.id, account.pop3_keep
        s.inbox_id = drop.inbox_id
        s.messages = drop.entries
        log.info("pop3 %s: login of %s from %s, %d messages", s.sid, s.user, s.peer,
                 len(s.messages), extra={"event": "login", "session": s.sid, "peer": s.peer,
                                         "user": s.user, "messages": len(s.messages)})
        prefix = f"{drop.uidvalidity}."
        return machine.auth_succeeded(
            [(e.size, prefix + str(e.email_id)) for e in s.messages]), False

    # ------------------------------------------------------------------------------------------
    # TRANSACTION and UPDATE
    # ------------------------------------------------------------------------------------------

    async def _retrieve(self, conn: Connection, machine: pop3.Connection, s: _Session,
                        event: pop3.Retrieve) -> bool:
        """Answer RETR/TOP; False when the connection must end (a stream broke midway)."""
        entry = s.messages[event.index - 1]
        blobs = self.app.blobs
        try:
            if entry.size <= self.stream_threshold:
                if event.top_lines is None:
                    raw = s.ahead.pop(event.index, None)
                    if raw is None:
                        raw = await self._read_ahead(s, event.index)
                else:
                    raw = await blobs.get(entry.blob_id)
            elif event.top_lines is not None:
                raw = await self._read_top(entry, event.top_lines)
            else:
                return await self._stream(conn, machine, entry)
        except (TimeoutError, ConnectionError):  # the client's side: the session ends
            raise
        except BlobNotFound:
            log.error("pop3: blob %s of email %s missing", entry.blob_id, entry.email_id,
                      extra={"session": s.sid})
            conn.write(machine.retrieve_failed(ResponseCode.SYS_PERM, "message unavailable"))
            return True
        except Exception:
            log.exception("pop3: reading a message failed", extra={"session": s.sid})
            conn.write(machine.retrieve_failed())
            return True
        conn.write(machine.send_message(raw))
        return True

    async def _read_ahead(self, s: _Session, index: int) -> bytes:
        """Message ``index`` (whole), and from a FileBlobStore the small messages after it in
        the same worker-thread hop, kept in ``s.ahead`` for the RETRs that usually follow
        (a thread hop costs more CPU than reading a 5 KB file from the page cache)."""
        blobs = self.app.blobs
        entry = s.messages[index - 1]
        if not isinstance(blobs, FileBlobStore):
            return await blobs.get(entry.blob_id)
        paths = [(index, blobs.path(entry.blob_id))]
        total = entry.size
        for i in range(index + 1, min(len(s.messages), index + READ_AHEAD_MESSAGES - 1) + 1):
            nxt = s.messages[i - 1]
            total += nxt.size
            if nxt.size > self.stream_threshold or total > READ_AHEAD_OCTETS or i in s.ahead:
                break
            paths.append((i, blobs.path(nxt.blob_id)))
        if len(paths) == 1:
            return await blobs.get(entry.blob_id)
        got = await asyncio.to_thread(_read_files, paths)
        raw = got.pop(index, None)
        s.ahead.update(got)
        if raw is None:  # let the store say what is wrong (BlobNotFound …)
            raw = await blobs.get(entry.blob_id)
        return raw

    async def _read_top(self, entry: _Entry, lines: int) -> bytes:
        """A prefix of the message long enough for TOP (header + ``lines`` lines), read in
        doubling pieces so the total work stays linear."""
        buf = b""
        want = 64 * 1024
        while len(buf) < entry.size:
            piece = await self.app.blobs.get_range(entry.blob_id, len(buf), len(buf) + want)
            if not piece:
                break
            buf += piece
            want *= 2
            text = pop3.normalize_crlf(buf[:buf.rfind(b"\n") + 1])  # whole lines only
            if text.startswith(b"\r\n"):
                body = 2
            else:
                body = text.find(b"\r\n\r\n")
                body = body + 4 if body >= 0 else -1
            if body >= 0 and text.count(b"\r\n", body) >= lines:
                break
        return buf

    async def _stream(self, conn: Connection, machine: pop3.Connection, entry: _Entry) -> bool:
        blobs = self.app.blobs
        # a missing blob raises here, while the caller can still answer -ERR
        first = await blobs.get_range(entry.blob_id, 0, STREAM_CHUNK)
        # The machine's own answer is settled with an empty body (its output discarded): the
        # status line and the body are written here, chunk by chunk.
        machine.send_message(b"")
        stuffer = _Stuffer()
        await self._write(conn, b"+OK %d octets\r\n" % entry.size + stuffer.feed(first))
        offset = len(first)
        try:
            while len(first) == STREAM_CHUNK:
                first = await blobs.get_range(entry.blob_id, offset, offset + STREAM_CHUNK)
                offset += len(first)
                await self._write(conn, stuffer.feed(first))
        except (TimeoutError, ConnectionError):
            raise
        except Exception:
            log.exception("pop3: message stream broke after %d octets", offset)
            return False
        conn.write(stuffer.finish())
        return True

    async def _update(self, s: _Session, event: pop3.Update) -> tuple[bool, str | None]:
        """RFC 1939 §6 UPDATE: remove (or, in keep mode, mark) the DELE'd messages."""
        if not event.deleted_indexes:
            return True, None
        assert s.lease is not None and s.account_id is not None and s.inbox_id is not None
        if s.lease.lost:
            return False, "maildrop lock lost, nothing deleted"
        uids = [s.messages[i - 1].uid for i in event.deleted_indexes]
        inbox_id = s.inbox_id
        try:
            if s.keep:
                await self.store.change(s.account_id, lambda c, cs: msg.set_keywords(
                    c, cs, mailbox_id=inbox_id, uids=uids, add=(SEEN, POP3_DELETED)))
            else:
                await self.store.change(s.account_id, lambda c, cs: msg.remove_uids(
                    c, cs, inbox_id, uids))
        except Exception:
            log.exception("pop3: UPDATE failed", extra={"session": s.sid, "user": s.user})
            return False, None
        log.info("pop3 %s: %s %d messages of %s", s.sid, "kept (seen)" if s.keep else "deleted",
                 len(uids), s.user, extra={"event": "update", "session": s.sid,
                                           "user": s.user, "deleted": len(uids),
                                           "keep": s.keep})
        return True, None


async def start(app: Any, section: Any) -> Pop3Daemon:
    """Bind the POP3 listeners of ``section`` (``[pop3]``) and serve until ``stop()``."""
    daemon = Pop3Daemon(app, section)
    await daemon.start()
    return daemon
