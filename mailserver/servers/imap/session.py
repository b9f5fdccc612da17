"""One IMAP session: the loop between the socket, ``protocols.imap`` and the mail store.

Decisions:

- **Order.** Commands are executed one at a time in the order they arrived, and every reply
  is written in that order (pipelining is safe by construction). Replies are buffered and
  written when the reader runs out of input, so a pipelined burst gets one write.
- **Untagged updates** come from ``MailboxView.sync`` just before each tagged reply, with
  expunges held back during FETCH/STORE/SEARCH/SORT/THREAD/COPY by sequence number (RFC 9051
  §7.5.1); during IDLE on every change event from ``app.bus`` and, as a fallback for a bus
  that missed one, when the daemon's ``IdleWatcher`` sees the account's MODSEQ move (it checks
  every ``IDLE_POLL`` seconds, one query per idling account, not per connection).
- **Durability.** APPEND/COPY/MOVE/STORE/EXPUNGE answer OK only after the store committed.
- **Errors** a client can cause are BAD/NO with a response code; an unexpected exception in
  a command is logged and answered ``NO [SERVERBUG]``; the session goes on.
- **Auth.** LOGIN and AUTHENTICATE PLAIN (SASL-IR); with ``tls = "required"`` both are
  refused before TLS (LOGINDISABLED, RFC 9051 §6.2.3). Failures count against the login
  throttle every daemon shares (``app.login_throttle``: tarpit, then ``NO [UNAVAILABLE]``
  lock-out per network and per login); after ``limits.max_auth_failures`` failures on one
  connection it is closed.
- **Flags** are the store's keywords (``$seen`` ↔ ``\\Seen``); ``\\Recent`` is not kept
  (IMAP4rev2 dropped it): RECENT is always 0. Keywords belong to the email (JMAP), so a
  message COPYed to another mailbox shares its flags with the original.
- **Cost per command** (profiled: scripts/bench/imap.py ``--cpu-loops``). The reads every
  command makes (the post-command sync, FETCH records, SELECT) go through ``reads`` — plain
  sqlite3 on the event loop on SQLite; STORE, EXPUNGE and the change set through ``writes``
  on the daemon's own writer thread; FETCH of flags only skips the per-message objects
  (``fetch.simple_fetch``), ENVELOPE skips the header parse and is cached per blob
  (``blobread``).
- **MULTIAPPEND** stores all messages in one transaction (all or none, RFC 3502 §6.3.11),
  through the delivery group committer like every other ingest.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import time
from dataclasses import dataclass
from typing import Any

from protocols import sasl
from protocols.imap import (
    NEED_DATA,
    BadCommand,
    ConnectionMustClose,
    IdleDone,
    ImapConfig,
    LiteralContinuationNeeded,
    SaslResponse,
    ServerConnection,
    State,
    responses,
)
from protocols.imap import _events as ev
from protocols.imap import compress as imap_compress
from protocols.imap import fetch as imap_fetch
from protocols.imap._writers import flag_list as w_flag_list
from protocols.imap.envelope import envelope as imap_envelope
from protocols.imap.responses import code
from protocols.imap.sections import UnknownCteError

from mailserver.message.model import ParsedMessage
from mailserver.servers.imap import query, writes
from mailserver.servers.imap.blobread import blob_headers, envelope_message
from mailserver.servers.imap.listing import ROLE_ATTR
from mailserver.servers.imap.view import MailboxView, uid_set
from mailserver.store import messages as msg
from mailserver.store import search as store_search
from mailserver.store.keywords import (
    SEEN,
    InvalidKeyword,
    flags_from_imap,
    flags_to_imap,
)
from mailserver.store.mailboxes import (
    CannotDeleteInbox,
    InvalidMailboxName,
    MailboxError,
    MailboxExists,
    MailboxHasChildren,
    MailboxNotFound,
    RoleInUse,
)

log = logging.getLogger("mailserver.imap")

IDLE_POLL = 1.0  # seconds: the IdleWatcher's re-check of idling accounts (bus fallback)
FLUSH_AT = 256 * 1024  # write out FETCH data in chunks of about this size
SYSTEM_FLAGS = ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft")
ATTR_ROLE = {v.upper(): k for k, v in ROLE_ATTR.items()}
# RFC 9051 §7.5.1: no EXPUNGE while answering these (by sequence number)
_NO_EXPUNGE = frozenset({"FETCH", "STORE", "SEARCH", "SORT", "THREAD", "COPY"})


@dataclass(frozen=True, slots=True)
class _Flags:
    """What ``MailboxView.remember`` and a FETCH FLAGS response need of a message."""

    uid: int
    keywords: frozenset[str]
    modseq: int


class _Close(Exception):
    """End the session after writing what is buffered."""


class Session:
    def __init__(self, daemon, conn) -> None:
        self.d = daemon
        self.app = daemon.app
        self.store = daemon.store
        self.reads = daemon.reads
        self.conn = conn
        limits = self.app.config.limits
        self.proto = ServerConnection(ImapConfig(
            max_line=limits.max_line_length, max_literal=limits.max_message_size,
            max_command_literals=max(limits.max_message_size, 4 * limits.max_message_size)))
        self.out: list[bytes] = []
        self.out_size = 0
        self.account = None
        self.view: MailboxView | None = None
        self.enabled: set[str] = set()
        self.inflater: imap_compress.Inflater | None = None
        self.deflater: imap_compress.Deflater | None = None
        self.read_task: asyncio.Task[bytes] | None = None
        self.stop_task: asyncio.Future | None = None
        self.sasl: tuple[str, Any] | None = None
        self.auth_failures = 0
        self.idle_tag: str | None = None
        self.session_id = f"{id(self) & 0xFFFFFF:06x}"

    # ---- output -----------------------------------------------------------------------------
    def write(self, data: bytes) -> None:
        if data:
            self.out.append(data)
            self.out_size += len(data)

    async def flush(self) -> None:
        if not self.out:
            return
        data = b"".join(self.out)
        self.out.clear()
        self.out_size = 0
        if self.deflater is not None:
            data = self.deflater.compress(data)
        self.conn.write(data)
        await self.conn.drain()

    async def maybe_flush(self) -> None:
        if self.out_size >= FLUSH_AT:
            await self.flush()

    # ---- input ------------------------------------------------------------------------------
    def _read_task(self) -> asyncio.Task[bytes]:
        if self.read_task is None:
            self.read_task = asyncio.ensure_future(self.conn.read())
        return self.read_task

    async def recv(self, timeout: float) -> bytes | None:
        """Bytes from the client (inflated); b"" at EOF or when the daemon stops; None on
        timeout."""
        task = self._read_task()
        if timeout == 0 or task.done():
            done = {task} if task.done() else set()
        else:
            if self.stop_task is None:  # one per session, not one per read
                self.stop_task = asyncio.ensure_future(self.conn.stopping.wait())
            done, _ = await asyncio.wait((task, self.stop_task), timeout=timeout,
                                         return_when=asyncio.FIRST_COMPLETED)
            if task not in done and self.conn.stopping.is_set():
                self.write(responses.bye("Server shutting down"))
                return b""
        if not done:
            return None
        self.read_task = None
        data = task.result()
        if data and self.inflater is not None:
            data = self.inflater.decompress(data)
        return data

    # ---- capabilities -----------------------------------------------------------------------
    @property
    def tls_required_missing(self) -> bool:
        return self.d.section.tls == "required" and not self.conn.tls

    def capabilities(self) -> list[str]:
        caps = ["IMAP4rev1", "IMAP4rev2", "LITERAL+", "SASL-IR", "ID", "ENABLE", "IDLE",
                "NAMESPACE", "UNSELECT", "UIDPLUS", "MOVE", "CONDSTORE", "QRESYNC", "ESEARCH",
                "SEARCHRES", "SPECIAL-USE", "CREATE-SPECIAL-USE", "LIST-EXTENDED",
                "LIST-STATUS", "CHILDREN", "BINARY", "UTF8=ACCEPT", "STATUS=SIZE", "QUOTA",
                "QUOTA=RES-STORAGE", f"APPENDLIMIT={self.app.config.limits.max_message_size}",
                "MULTIAPPEND", "SORT", "ESORT", "THREAD=REFERENCES", "THREAD=ORDEREDSUBJECT",
                "OBJECTID", "PREVIEW", "SAVEDATE"]
        if self.account is None:
            if not self.conn.tls and self.d.tls_context is not None \
                    and self.d.section.tls != "none":
                caps.append("STARTTLS")
            if self.tls_required_missing:
                caps.append("LOGINDISABLED")
            else:
                caps.append("AUTH=PLAIN")
        elif self.deflater is None:
            caps.append("COMPRESS=DEFLATE")
        return caps

    @property
    def utf8(self) -> bool:
        return self.proto.utf8_enabled

    @property
    def condstore(self) -> bool:
        return "CONDSTORE" in self.enabled

    @property
    def qresync(self) -> bool:
        return "QRESYNC" in self.enabled

    @property
    def rev2(self) -> bool:
        return "IMAP4REV2" in self.enabled

    # ---- the loop ---------------------------------------------------------------------------
    async def run(self) -> None:
        self.write(responses.greeting(self.capabilities(), "IMAP server ready"))
        idle_timeout = self.app.config.limits.idle_timeout
        try:
            while True:
                event = self.proto.next_event()
                if event is NEED_DATA:
                    if self.inflater is not None and self.inflater.pending:
                        self.proto.receive_data(self.inflater.decompress(b""))
                        continue
                    await self.flush()
                    if self.conn.stopping.is_set() and self.idle_tag is None:
                        self.write(responses.bye("Server shutting down"))
                        break
                    data = await self.recv(idle_timeout)
                    if data is None:
                        self.write(responses.bye("Autologout; idle for too long"))
                        break
                    if not data:
                        break
                    self.proto.receive_data(data)
                    continue
                if isinstance(event, LiteralContinuationNeeded):
                    self.write(self.proto.accept_literal())
                    continue
                if isinstance(event, ConnectionMustClose):
                    self.write(event.to_bytes())
                    break
                if isinstance(event, BadCommand):
                    self.write(event.to_bytes())
                    continue
                if isinstance(event, SaslResponse):
                    await self.sasl_step(event)
                    continue
                if isinstance(event, IdleDone):
                    continue  # DONE after IDLE ended by us (e.g. shutdown); nothing to do
                await self.dispatch(event)
        except _Close:
            pass
        except compressed_errors():
            pass
        finally:
            for t in (self.read_task, self.stop_task):
                if t is not None:
                    t.cancel()
            try:
                await self.flush()
            except Exception:
                pass

    async def dispatch(self, cmd: ev.Command) -> None:
        name = cmd.name
        handler = getattr(self, "cmd_" + name.lower().replace("-", "_"), None)
        if handler is None:
            self.write(responses.bad(cmd.tag, f"{name} not supported"))
            return
        started = time.monotonic()
        try:
            tagged = await handler(cmd)
        except _Close:
            raise
        except (InvalidKeyword,) as e:
            tagged = responses.bad(cmd.tag, f"Invalid flag {e}")
        except msg.QuotaExceeded:
            tagged = responses.no(cmd.tag, "Quota exceeded", code.OVERQUOTA)
        except MailboxNotFound:
            tagged = responses.no(cmd.tag, "No such mailbox", code.NONEXISTENT)
        except store_search.SearchTooComplex:
            tagged = responses.bad(cmd.tag, "Search too complex", code.LIMIT)
        except (store_search.SearchError, query.BadSearch) as e:
            tagged = responses.bad(cmd.tag, f"Cannot search: {e}")
        except UnknownCteError:
            tagged = responses.no(cmd.tag, "Unknown Content-Transfer-Encoding", code.UNKNOWN_CTE)
        except Exception:
            log.exception("imap: %s failed", name, extra={
                "event": "command_error", "session": self.session_id,
                "peer": self.conn.peer_ip, "command": name})
            tagged = responses.no(cmd.tag, "Internal error", code.SERVERBUG)
        if tagged is None:
            return
        if self.view is not None and name not in ("LOGOUT", "SELECT", "IDLE"):
            try:
                allow = getattr(cmd, "uid", False) or name not in _NO_EXPUNGE
                await self.sync(allow_expunge=bool(allow))
            except Exception:
                log.exception("imap: sync failed", extra={"session": self.session_id})
        self.write(tagged)
        log.debug("imap %s %s %.1f ms", self.session_id, name,
                  (time.monotonic() - started) * 1000)

    async def sync(self, *, allow_expunge: bool) -> None:
        if self.view is None:
            return
        self.write(await self.view.sync(self.reads, allow_expunge=allow_expunge,
                                        condstore=self.condstore, qresync=self.qresync,
                                        utf8=self.utf8))

    # ---- any state --------------------------------------------------------------------------
    async def cmd_capability(self, cmd):
        self.write(responses.capability(self.capabilities()))
        return responses.ok(cmd.tag, "CAPABILITY completed")

    async def cmd_noop(self, cmd):
        return responses.ok(cmd.tag, "NOOP completed")

    async def cmd_check(self, cmd):
        return responses.ok(cmd.tag, "CHECK completed")

    async def cmd_logout(self, cmd):
        self.write(responses.bye("Logging out"))
        self.write(responses.ok(cmd.tag, "LOGOUT completed"))
        raise _Close

    async def cmd_id(self, cmd):
        self.write(responses.id_response({"name": "mailserver", "vendor": "mailserver"},
                                         utf8=self.utf8))
        return responses.ok(cmd.tag, "ID completed")

    # ---- not authenticated ------------------------------------------------------------------
    async def cmd_starttls(self, cmd):
        if self.conn.tls or self.d.tls_context is None or self.d.section.tls == "none":
            return responses.bad(cmd.tag, "STARTTLS not available")
        self.write(responses.ok(cmd.tag, "Begin TLS negotiation now"))
        await self.flush()
        self.proto.start_tls()  # RFC 9051 §6.2.1: drop anything pipelined behind STARTTLS
        if self.read_task is not None:
            self.read_task.cancel()
            self.read_task = None
        _drop_buffered(self.conn)
        try:
            await self.conn.start_tls()
        except ConnectionError as e:
            log.info("imap: %s", e, extra={"session": self.session_id, "peer": self.conn.peer_ip})
            raise _Close from None
        return None

    async def cmd_login(self, cmd):
        if self.tls_required_missing:
            return responses.no(cmd.tag, "Log in over TLS (STARTTLS) first",
                                code.PRIVACYREQUIRED)
        return await self._authenticate(cmd.tag, cmd.username, cmd.password)

    async def cmd_authenticate(self, cmd):
        if self.tls_required_missing:
            return responses.no(cmd.tag, "Authenticate over TLS (STARTTLS) first",
                                code.PRIVACYREQUIRED)
        if cmd.mechanism.upper() != "PLAIN":
            return responses.no(cmd.tag, f"Unsupported mechanism {cmd.mechanism}",
                                code.CANNOT)
        mech = sasl.server_mechanism("PLAIN")
        return await self._sasl_continue(cmd.tag, mech, cmd.initial_response)

    async def _sasl_continue(self, tag: str, mech, response: bytes | None):
        try:
            step = mech.step(response)
        except sasl.SaslError as e:
            self.proto.end_authenticate()
            self.sasl = None
            return responses.bad(tag, f"Invalid authentication data: {e}")
        if isinstance(step, bytes):
            self.sasl = (tag, mech)
            self.write(responses.continuation(step) if step else b"+ \r\n")
            self.proto.start_authenticate(tag)
            return None
        self.proto.end_authenticate()
        self.sasl = None
        if step.authzid and step.authzid.lower() != step.authcid.lower():
            self.auth_failures += 1
            return responses.no(tag, "Cannot act as another user", code.AUTHORIZATIONFAILED)
        return await self._authenticate(tag, step.authcid, step.password)

    async def sasl_step(self, event: SaslResponse) -> None:
        if self.sasl is None or event.tag != self.sasl[0]:
            self.proto.end_authenticate()
            self.write(responses.bad(event.tag, "No authentication in progress"))
            return
        if event.cancelled:
            self.proto.end_authenticate()
            self.sasl = None
            self.write(responses.bad(event.tag, "Authentication cancelled"))
            return
        try:
            tagged = await self._sasl_continue(event.tag, self.sasl[1], event.data)
        except _Close:
            raise
        except Exception:
            log.exception("imap: authentication failed with an error",
                          extra={"session": self.session_id, "peer": self.conn.peer_ip})
            self.proto.end_authenticate()
            self.sasl = None
            tagged = responses.no(event.tag, "Internal error", code.SERVERBUG)
        if tagged is not None:
            self.write(tagged)

    async def _authenticate(self, tag: str, user: str, password: str):
        # the failed-login budget shared by every daemon (mailserver.auth.throttle)
        throttle = self.app.login_throttle
        key = user.strip().lower()
        decision = await throttle.check(self.conn.peer_ip, key)
        if not decision.allowed:
            log.info("imap: login refused (throttled)", extra={
                "event": "auth_throttled", "session": self.session_id,
                "peer": self.conn.peer_ip, "user": key, "reason": decision.reason})
            return responses.no(tag, "Too many failed logins, try again later",
                                code.UNAVAILABLE)
        account = await self.app.directory.authenticate(user, password)
        if account is None:
            self.auth_failures += 1
            log.info("imap: authentication failed", extra={
                "event": "auth_failed", "session": self.session_id, "peer": self.conn.peer_ip,
                "user": user})
            decision = await throttle.failed(self.conn.peer_ip, key)
            if self.auth_failures >= self.app.config.limits.max_auth_failures:
                self.write(responses.no(tag, "Authentication failed",
                                        code.AUTHENTICATIONFAILED))
                self.write(responses.bye("Too many authentication failures"))
                raise _Close
            # the tarpit: at least a short per-connection pause, longer when throttled
            await asyncio.sleep(max(decision.delay, min(0.2 * self.auth_failures, 2.0)))
            return responses.no(tag, "Authentication failed", code.AUTHENTICATIONFAILED)
        await throttle.succeeded(self.conn.peer_ip, key)
        self.account = account
        self.proto.state = State.AUTHENTICATED
        log.info("imap: login", extra={"event": "login", "session": self.session_id,
                                       "peer": self.conn.peer_ip, "user": account.login})
        return responses.ok(tag, "Logged in", code.capability(self.capabilities()))

    # ---- authenticated ----------------------------------------------------------------------
    @property
    def account_id(self) -> int:
        return self.account.id

    async def cmd_enable(self, cmd):
        newly = []
        for cap in cmd.capabilities:
            c = cap.upper()
            if c in ("CONDSTORE", "QRESYNC", "UTF8=ACCEPT", "IMAP4REV2") \
                    and c not in self.enabled:
                self.enabled.add(c)
                newly.append(cap)
                if c == "QRESYNC":
                    self.enabled.add("CONDSTORE")  # RFC 7162 §3.2.3
        if "UTF8=ACCEPT" in self.enabled or "IMAP4REV2" in self.enabled:
            self.proto.utf8_enabled = True
        self.write(responses.enabled(newly))
        return responses.ok(cmd.tag, "ENABLE completed")

    async def cmd_compress(self, cmd):
        if self.deflater is not None:
            return responses.no(cmd.tag, "Compression already active", code.COMPRESSIONACTIVE)
        if cmd.mechanism.upper() != "DEFLATE":
            return responses.bad(cmd.tag, "Unknown compression mechanism")
        self.write(responses.ok(cmd.tag, "DEFLATE active"))
        await self.flush()
        self.inflater, self.deflater = imap_compress.wrap(self.proto)
        return None

    async def cmd_namespace(self, cmd):
        self.write(responses.namespace([("", "/")], None, None, utf8=self.utf8))
        return responses.ok(cmd.tag, "NAMESPACE completed")

    async def _mailbox(self, path: str):
        return await self.reads.mailbox_by_path(self.account_id, path)

    async def cmd_create(self, cmd):
        path = cmd.mailbox.rstrip("/")
        role = None
        for use in cmd.special_use:
            role = ATTR_ROLE.get(use.upper())
            if role is None:
                return responses.no(cmd.tag, f"Unsupported special use {use}", code.USEATTR)
        if len(cmd.special_use) > 1:
            return responses.no(cmd.tag, "One special use per mailbox", code.USEATTR)
        try:
            await self.store.create_mailbox(self.account_id, path, role=role)
        except MailboxExists:
            return responses.no(cmd.tag, "Mailbox exists", code.ALREADYEXISTS)
        except RoleInUse:
            return responses.no(cmd.tag, "Another mailbox has that special use", code.USEATTR)
        except (InvalidMailboxName, MailboxError):
            return responses.no(cmd.tag, "Invalid mailbox name", code.CANNOT)
        return responses.ok(cmd.tag, "CREATE completed")

    async def cmd_delete(self, cmd):
        box = await self._mailbox(cmd.mailbox)
        if box is None:
            return responses.no(cmd.tag, "No such mailbox", code.NONEXISTENT)
        try:
            await self.store.delete_mailbox(self.account_id, box.id)
        except CannotDeleteInbox:
            return responses.no(cmd.tag, "INBOX cannot be deleted", code.CANNOT)
        except MailboxHasChildren:
            return responses.no(cmd.tag, "Delete the child mailboxes first", code.HASCHILDREN)
        return responses.ok(cmd.tag, "DELETE completed")

    async def cmd_rename(self, cmd):
        box = await self._mailbox(cmd.mailbox)
        if box is None:
            return responses.no(cmd.tag, "No such mailbox", code.NONEXISTENT)
        try:
            await self.store.rename_mailbox(self.account_id, box.id, cmd.new_name.rstrip("/"))
        except MailboxExists:
            return responses.no(cmd.tag, "Target mailbox exists", code.ALREADYEXISTS)
        except (InvalidMailboxName, MailboxError):
            return responses.no(cmd.tag, "Invalid mailbox name", code.CANNOT)
        return responses.ok(cmd.tag, "RENAME completed")

    async def cmd_subscribe(self, cmd, subscribed: bool = True):
        box = await self._mailbox(cmd.mailbox)
        if box is None:
            return responses.no(cmd.tag, "No such mailbox", code.NONEXISTENT)
        await self.store.set_subscribed(self.account_id, box.id, subscribed)
        return responses.ok(cmd.tag, f"{cmd.name} completed")

    async def cmd_unsubscribe(self, cmd):
        return await self.cmd_subscribe(cmd, False)

    # -- LIST / LSUB / STATUS --
    async def cmd_list(self, cmd):
        from mailserver.servers.imap.listing import list_responses

        boxes = await self.store.list_mailboxes(self.account_id)
        for line, box in list_responses(cmd, boxes, self.utf8):
            self.write(line)
            if box is not None and cmd.params.status_items and "STATUS" in cmd.params.returns:
                self.write(await self._status_line(box, cmd.params.status_items))
        return responses.ok(cmd.tag, "LIST completed")

    async def cmd_lsub(self, cmd):
        from mailserver.servers.imap.listing import lsub_responses

        boxes = await self.store.list_mailboxes(self.account_id)
        for line in lsub_responses(cmd, boxes, self.utf8):
            self.write(line)
        return responses.ok(cmd.tag, "LSUB completed")

    async def _status_line(self, box, items) -> bytes:
        st = await self.store.mailbox_status(self.account_id, box.id)
        pairs: list[tuple[str, int | str]] = []
        for item in items:
            if item == "MESSAGES":
                pairs.append((item, st.total))
            elif item == "UIDNEXT":
                pairs.append((item, st.uid_next))
            elif item == "UIDVALIDITY":
                pairs.append((item, st.uidvalidity))
            elif item == "UNSEEN":
                pairs.append((item, st.unseen))
            elif item == "RECENT":
                pairs.append((item, 0))
            elif item == "HIGHESTMODSEQ":
                pairs.append((item, st.highest_modseq))
            elif item == "SIZE":
                pairs.append((item, st.size))
            elif item == "APPENDLIMIT":
                pairs.append((item, self.app.config.limits.max_message_size))
            elif item == "MAILBOXID":
                pairs.append((item, f"F{box.id}"))
            elif item == "DELETED":
                found = await self._search_store(box.id, store_search.Keyword("$deleted"))
                pairs.append((item, len(found)))
        return responses.status(box.path, pairs, utf8=self.utf8)

    async def cmd_status(self, cmd):
        box = await self._mailbox(cmd.mailbox)
        if box is None:
            return responses.no(cmd.tag, "No such mailbox", code.NONEXISTENT)
        self.write(await self._status_line(box, cmd.items))
        return responses.ok(cmd.tag, "STATUS completed")

    # -- QUOTA (RFC 9208) --
    async def _quota_lines(self) -> list[bytes]:
        account = await self.app.directory.get_account_by_id(self.account_id)
        if account is None or not account.quota_bytes:
            return []
        return [responses.quota("", [("STORAGE", account.used_bytes // 1024,
                                      account.quota_bytes // 1024)], utf8=self.utf8)]

    async def cmd_getquotaroot(self, cmd):
        box = await self._mailbox(cmd.mailbox)
        if box is None:
            return responses.no(cmd.tag, "No such mailbox", code.NONEXISTENT)
        lines = await self._quota_lines()
        self.write(responses.quotaroot(box.path, [""] if lines else [], utf8=self.utf8))
        for line in lines:
            self.write(line)
        return responses.ok(cmd.tag, "GETQUOTAROOT completed")

    async def cmd_getquota(self, cmd):
        lines = await self._quota_lines()
        if cmd.root != "" or not lines:
            return responses.no(cmd.tag, "No such quota root", code.NONEXISTENT)
        for line in lines:
            self.write(line)
        return responses.ok(cmd.tag, "GETQUOTA completed")

    # -- APPEND --
    async def cmd_append(self, cmd):
        box = await self._mailbox(cmd.mailbox)
        if box is None:
            return responses.no(cmd.tag, "No such mailbox", code.TRYCREATE)
        from mailserver.message import parse_message

        prepared = []
        for m in cmd.messages:
            if not m.message:
                return responses.no(cmd.tag, "Empty message", code.CANNOT)
            if b"\x00" in m.message and not m.binary:
                return responses.no(cmd.tag, "NUL in a message (use literal8)", code.CANNOT)
            kws = flags_from_imap(m.flags)
            when = m.internal_date
            received_at = int(when.timestamp()) if when else int(time.time())
            tz = int(when.utcoffset().total_seconds() // 60) if when and when.utcoffset() \
                else 0
            prepared.append((m.message, kws, received_at, tz))
        deliverer = self.app.deliverer
        if len(prepared) == 1:
            raw, kws, received_at, tz = prepared[0]
            d = await deliverer.append_to_mailbox(self.account_id, box.id, raw, kws,
                                                  received_at, received_tz=tz)
            uids = [d.uid]
        else:
            uids = await self._multiappend(box.id, prepared, parse_message)
        return responses.ok(cmd.tag, "APPEND completed",
                            code.appenduid(box.uidvalidity, uid_set(uids)))

    async def _multiappend(self, mailbox_id: int, prepared, parse_message) -> list[int]:
        deliverer = self.app.deliverer
        items = []
        for raw, kws, received_at, tz in prepared:
            items.append((await deliverer.blobs.put(raw), parse_message(raw), kws,
                          received_at, tz))

        async def work(conn, cs):
            out = []
            for blob_id, parsed, kws, received_at, tz in items:
                _eid, uid = await msg.append(conn, cs, mailbox_id, blob_id, parsed,
                                             keywords=kws, received_at=received_at,
                                             received_tz=tz)
                out.append(uid)
            return out

        return await deliverer.committer.submit(self.account_id, work)

    # -- SELECT / EXAMINE --
    async def cmd_select(self, cmd):
        if self.view is not None:
            self.view = None
            self.proto.state = State.AUTHENTICATED
            if self.qresync or self.rev2:
                self.write(responses.untagged_ok("Previous mailbox closed", code.CLOSED))
        if cmd.qresync is not None and "QRESYNC" not in self.enabled:
            return responses.bad(cmd.tag, "ENABLE QRESYNC first")
        view, box = await MailboxView.open(self.reads, self.account_id, cmd.mailbox,
                                           cmd.readonly)
        if view is None:
            return responses.no(cmd.tag, "No such mailbox", code.NONEXISTENT)
        if cmd.condstore:
            self.enabled.add("CONDSTORE")
        self.write(responses.flags(SYSTEM_FLAGS))
        self.write(responses.untagged_ok(
            "Flags permitted", code.permanentflags(() if cmd.readonly
                                                   else (*SYSTEM_FLAGS, "\\*"))))
        self.write(responses.exists(view.exists))
        if not self.rev2:
            self.write(responses.recent(0))
            first_unseen = next((i + 1 for i, u in enumerate(view.uids)
                                 if SEEN not in view.flags[u]), None)
            if first_unseen is not None:
                self.write(responses.untagged_ok("First unseen", code.unseen(first_unseen)))
        self.write(responses.untagged_ok("UIDs valid", code.uidvalidity(view.uidvalidity)))
        self.write(responses.untagged_ok("Predicted next UID", code.uidnext(view.uid_next)))
        self.write(responses.untagged_ok("Highest", code.highestmodseq(view.highest_modseq)))
        self.write(responses.untagged_ok("Ok", code.mailboxid(f"F{box.id}")))
        if cmd.qresync is not None and cmd.qresync.uidvalidity == view.uidvalidity:
            await self._qresync(view, cmd.qresync)
        self.view = view
        self.proto.state = State.SELECTED
        return responses.ok(cmd.tag, f"{'EXAMINE' if cmd.readonly else 'SELECT'} completed",
                            code.READ_ONLY if cmd.readonly else code.READ_WRITE)

    async def cmd_examine(self, cmd):
        return await self.cmd_select(cmd)

    async def _qresync(self, view: MailboxView, q) -> None:
        """RFC 7162 §3.2.5: VANISHED (EARLIER) then FETCH of what changed since q.modseq."""
        try:
            gone = await self.store.vanished_since(self.account_id, view.mailbox_id, q.modseq)
            if q.known_uids is not None:
                known = q.known_uids
                gone = [u for u in gone if known.contains(u, u)]
        except msg.CannotCalculateChanges:
            present = set(view.uids)
            if q.known_uids is not None:
                top = max(view.max_uid, 1)
                gone = [u for r in q.known_uids.resolved(top)
                        for u in range(r[0], min(r[1], top) + 1) if u not in present][:100000]
            else:
                gone = []
        if gone:
            self.write(responses.vanished(uid_set(sorted(set(gone))), earlier=True))
        changed = await self.store.changed_since(self.account_id, view.mailbox_id, q.modseq)
        for m in changed:
            seq = view.seq_of(m.uid)
            if seq is None:
                continue
            self.write(responses.fetch(seq, [
                ("UID", m.uid), ("FLAGS", responses.fetch_flags(flags_to_imap(m.keywords))),
                ("MODSEQ", (m.modseq,))]))

    # ---- selected ---------------------------------------------------------------------------
    def _require_writable(self, tag: str) -> bytes | None:
        if self.view is not None and self.view.readonly:
            return responses.no(tag, "Mailbox is read-only", code.READ_ONLY)
        return None

    async def cmd_close(self, cmd):
        view = self.view
        assert view is not None
        if not view.readonly:
            await self._expunge(view.mailbox_id, None)
        self.view = None
        self.proto.state = State.AUTHENTICATED
        return responses.ok(cmd.tag, "CLOSE completed")

    async def cmd_unselect(self, cmd):
        self.view = None
        self.proto.state = State.AUTHENTICATED
        return responses.ok(cmd.tag, "UNSELECT completed")

    async def cmd_expunge(self, cmd):
        denied = self._require_writable(cmd.tag)
        if denied:
            return denied
        view = self.view
        uids = None if cmd.uid_set is None else view.resolve(cmd.uid_set, uid=True)
        if uids == []:
            return responses.ok(cmd.tag, "EXPUNGE completed")
        await self._expunge(view.mailbox_id, uids)
        return responses.ok(cmd.tag, "EXPUNGE completed")

    async def _expunge(self, mailbox_id: int, uids: list[int] | None) -> list[int]:
        return await self.store.change(self.account_id, lambda c, cs: writes.expunge(
            c, cs, mailbox_id, uids))

    # -- FETCH --
    async def cmd_fetch(self, cmd):
        view = self.view
        uids = view.resolve(cmd.sequence_set, cmd.uid)
        atts = list(cmd.attributes)
        condstore = self.condstore or cmd.changed_since is not None or any(
            a.name == "MODSEQ" for a in atts)
        if condstore and "CONDSTORE" not in self.enabled:
            self.enabled.add("CONDSTORE")  # RFC 7162 §3.1: CONDSTORE-enabling command
        if cmd.vanished and cmd.uid and cmd.changed_since is not None:
            gone = await self.store.vanished_since(self.account_id, view.mailbox_id,
                                                   cmd.changed_since)
            gone = [u for u in gone if cmd.sequence_set.contains(u, view.max_uid)]
            if gone:
                self.write(responses.vanished(uid_set(gone), earlier=True))
        elif cmd.vanished:
            return responses.bad(cmd.tag, "VANISHED needs UID FETCH with CHANGEDSINCE")
        targets = [u for u in uids if u not in view.pending]
        if not targets:
            return responses.ok(cmd.tag, "FETCH completed")
        sets_seen = any(a.sets_seen for a in atts) and not view.readonly
        marked: set[int] = set()
        if sets_seen:
            upd, _state = await self.store.change(self.account_id, lambda c, cs: (
                writes.store_flags(c, cs, view.mailbox_id, targets, add=[SEEN])))
            marked = {upd.uids[e] for e in upd.changed if e in upd.uids}
        needs_parsed = imap_fetch.needs_parsed(atts)
        needs_structure = any(a.name in ("BODY", "BODYSTRUCTURE") and a.section is None
                              for a in atts)
        full_raw = _needs_full_raw(atts)
        header_raw = not full_raw and imap_fetch.needs_raw(atts) or any(
            a.name == "ENVELOPE" for a in atts)
        want_structures = needs_structure or (header_raw and not full_raw)
        messages, stored = await self.reads.messages(
            self.account_id, view.mailbox_id, targets, cmd.changed_since, want_structures)
        simple = None if marked else imap_fetch.simple_items(
            atts, uid_fetch=cmd.uid, add_modseq=cmd.changed_since is not None)
        if simple is not None:
            await self._fetch_simple(messages, simple)
            return responses.ok(cmd.tag, "FETCH completed")
        structures = _structures(stored)
        names = {a.name for a in atts}
        want_flags = "FLAGS" in names
        want_date = "INTERNALDATE" in names
        want_savedate = "SAVEDATE" in names
        want_ids = bool(names & {"EMAILID", "THREADID"})
        # ENVELOPE needs only the raw header fields: no parse of the header (and one read
        # of all the headers, below, instead of one per message)
        envelope_only = header_raw and not full_raw and not imap_fetch.needs_raw(atts)
        headers: dict[str, bytes] = {}
        cache, utf8 = self.d.envelopes, self.utf8
        for i, m in enumerate(messages):
            seq = view.seq_of(m.uid)
            if seq is None:
                continue
            raw = parsed = env = None
            structure = structures.get(m.email_id)
            if envelope_only and structure is not None:
                env = cache.get((m.blob_id, utf8))
                if env is None:
                    if m.blob_id not in headers:
                        headers = await blob_headers(self.app.blobs, [
                            (n.blob_id, s.header_end) for n in messages[i:i + 100]
                            if (s := structures.get(n.email_id)) is not None
                            and (n.blob_id, utf8) not in cache])
                    env = imap_envelope(envelope_message(headers[m.blob_id], m.size,
                                                         structure), utf8)
                    cache.put((m.blob_id, utf8), env)
                parsed = ParsedMessage(size=m.size, header_end=structure.header_end,
                                       structure=structure)
            elif needs_parsed:
                raw, parsed = await self._load(m, structure, full_raw, header_raw,
                                               needs_structure)
            flags_changed = m.uid in marked
            if want_flags or flags_changed:
                view.remember(m)
            mv = imap_fetch.MessageView(
                seq=seq, uid=m.uid, flags=tuple(flags_to_imap(m.keywords)),
                internal_date=_internal_date(m) if want_date else None, size=m.size,
                parsed=parsed, raw=raw, modseq=m.modseq,
                email_id=f"M{m.email_id}" if want_ids else None,
                thread_id=f"T{m.thread_id}" if want_ids else None,
                preview=None, save_date=_dt(m.saved_at, 0) if want_savedate else None,
                envelope=env)
            if "PREVIEW" in names:
                mv = await self._with_preview(mv, m)
            self.write(imap_fetch.fetch_response(
                mv, atts, uid_fetch=cmd.uid, add_flags=flags_changed,
                add_modseq=cmd.changed_since is not None, utf8=self.utf8))
            await self.maybe_flush()
        return responses.ok(cmd.tag, "FETCH completed")

    async def _fetch_simple(self, messages: list[msg.Message], items: tuple[str, ...]) -> None:
        """FETCH of UID/FLAGS/MODSEQ/RFC822.SIZE only: one encoded flag list per distinct
        set of flags, no per-message objects (``protocols.imap.fetch.simple_fetch``)."""
        view = self.view
        want_flags = "FLAGS" in items
        encoded: dict[frozenset[str], bytes] = {}
        out = []
        for m in messages:
            seq = view.seq_of(m.uid)
            if seq is None:
                continue
            flags = b""
            if want_flags:
                view.remember(m)
                flags = encoded.get(m.keywords)
                if flags is None:
                    flags = encoded[m.keywords] = w_flag_list(flags_to_imap(m.keywords))
            out.append(imap_fetch.simple_fetch(seq, items, m.uid, flags, m.modseq, m.size))
            if len(out) >= 2000:
                self.write(b"".join(out))
                out.clear()
                await self.maybe_flush()
        self.write(b"".join(out))

    async def _messages(self, view: MailboxView, uids: list[int]) -> list[msg.Message]:
        return (await self.reads.messages(self.account_id, view.mailbox_id, uids))[0]

    async def _load(self, m: msg.Message, structure, full_raw: bool, header_raw: bool,
                    needs_structure: bool):
        from mailserver.message import parse_message
        from mailserver.message.model import ParsedMessage

        blobs = self.app.blobs
        if full_raw == "whole":  # BODY[] / RFC822 / BINARY[]: the octets, no parse needed
            return await blobs.get(m.blob_id), None
        if full_raw or structure is None and header_raw:
            raw = await blobs.get(m.blob_id)
            return raw, parse_message(raw)
        if header_raw:
            raw = await blobs.get_range(m.blob_id, 0, structure.header_end)
            parsed = parse_message(raw)
            return raw, _replace_structure(parsed, structure)
        return b"", ParsedMessage(size=m.size, header_end=0, structure=structure)

    async def _with_preview(self, mv, m: msg.Message):
        import dataclasses

        emails = await self.store.get_emails(self.account_id, [m.email_id])
        e = emails.get(m.email_id)
        return dataclasses.replace(mv, preview=e.preview if e else "")

    # -- STORE --
    async def cmd_store(self, cmd):
        denied = self._require_writable(cmd.tag)
        if denied:
            return denied
        view = self.view
        uids = [u for u in view.resolve(cmd.sequence_set, cmd.uid) if u not in view.pending]
        if cmd.unchanged_since is not None:
            self.enabled.add("CONDSTORE")
        kws = list(flags_from_imap(cmd.flags))
        conflicts: list[int] = []
        if uids:
            kwargs: dict[str, Any] = {"unchanged_since": cmd.unchanged_since}
            if cmd.mode == "+":
                kwargs["add"] = kws
            elif cmd.mode == "-":
                kwargs["remove"] = kws
            else:
                kwargs["replace"] = kws

            async def change(conn, cs):  # the new state comes from the same transaction
                return await writes.store_flags(conn, cs, view.mailbox_id, uids, **kwargs)

            upd, state = await self.store.change(self.account_id, change)
            conflicts = sorted(upd.conflicts)
            for uid in sorted(state):
                keywords, modseq = state[uid]
                m = _Flags(uid, keywords, modseq)
                view.remember(m)
                seq = view.seq_of(m.uid)
                if seq is None:
                    continue
                if cmd.silent and not (self.condstore and cmd.unchanged_since is not None):
                    continue
                items: list[tuple[str, object]] = []
                if cmd.uid:
                    items.append(("UID", m.uid))
                if not cmd.silent:
                    items.append(("FLAGS", responses.fetch_flags(flags_to_imap(m.keywords))))
                if self.condstore:
                    items.append(("MODSEQ", (m.modseq,)))
                self.write(responses.fetch(seq, items))
        if conflicts:
            nums = conflicts if cmd.uid else view.to_seqs(conflicts)
            return responses.ok(cmd.tag, "Conditional STORE failed",
                                code.modified(uid_set(sorted(nums))))
        return responses.ok(cmd.tag, "STORE completed")

    # -- COPY / MOVE --
    async def cmd_copy(self, cmd, move: bool = False):
        view = self.view
        if move:
            denied = self._require_writable(cmd.tag)
            if denied:
                return denied
        uids = [u for u in view.resolve(cmd.sequence_set, cmd.uid) if u not in view.pending]
        target = await self._mailbox(cmd.mailbox)
        if target is None:
            return responses.no(cmd.tag, "No such mailbox", code.TRYCREATE)
        if not uids:
            return responses.ok(cmd.tag, f"{cmd.name} completed (nothing to do)")
        fn = self.store.move if move else self.store.copy
        pairs = await fn(self.account_id, view.mailbox_id, uids, target.id)
        pairs = sorted(pairs)
        srcs, dsts = [p[0] for p in pairs], [p[1] for p in pairs]
        if _ascending(dsts):  # RFC 4315 §3: the two sets pair up in order
            copyuid = code.copyuid(target.uidvalidity, uid_set(srcs), uid_set(dsts))
        else:
            copyuid = code.copyuid(target.uidvalidity, ",".join(map(str, srcs)),
                                   ",".join(map(str, dsts)))
        if not pairs:
            return responses.ok(cmd.tag, f"{cmd.name} completed")
        if move:
            # RFC 6851 §4.3: COPYUID in an untagged OK before the expunges
            self.write(responses.untagged_ok("Moved", copyuid))
            return responses.ok(cmd.tag, "MOVE completed")
        return responses.ok(cmd.tag, "COPY completed", copyuid)

    async def cmd_move(self, cmd):
        return await self.cmd_copy(cmd, move=True)

    # -- SEARCH / SORT / THREAD --
    async def _search_store(self, mailbox_id: int, criterion, sort=None,
                            blob_headers: bool = False) -> list[tuple[int, int]]:
        if not blob_headers:
            return await self.store.read(lambda c: store_search.search(
                c, c.dialect.name, self.account_id, criterion, mailbox_id=mailbox_id,
                sort=sort))

        async def fetch_header(email_id: int) -> bytes:
            emails = await self.store.get_emails(self.account_id, [email_id])
            e = emails.get(email_id)
            if e is None:
                return b""
            end = e.structure.get("he") if e.structure else None
            if end:
                return await self.app.blobs.get_range(e.blob_id, 0, end)
            return await self.app.blobs.get(e.blob_id)

        # the header fetcher reads blobs: not a pure database body, so the ordinary path
        return await self.store.slow_read(lambda c: store_search.search(
            c, c.dialect.name, self.account_id, criterion, mailbox_id=mailbox_id, sort=sort,
            fetch_header=fetch_header))

    async def _run_search(self, key, sort=None) -> tuple[list[int], list[msg.Message] | None]:
        view = self.view
        messages = None
        if query.needs_messages(key):
            messages = await self.store.list_messages(self.account_id, view.mailbox_id)
        criterion = query.to_criterion(key, view, messages, time.time())
        rows = await self._search_store(view.mailbox_id, criterion, sort,
                                        blob_headers=query.has_op(key, "HEADER"))
        known = set(view.flags)
        return [u for u, _e in rows if u in known and u not in view.pending], messages

    async def cmd_search(self, cmd):
        view = self.view
        uids, messages = await self._run_search(cmd.criteria)
        modseq = None
        if query.has_modseq(cmd.criteria) and uids:
            self.enabled.add("CONDSTORE")
            if messages is None:
                messages = await self.store.list_messages(self.account_id, view.mailbox_id)
            by_uid = {m.uid: m.modseq for m in messages}
            modseq = max(by_uid.get(u, 0) for u in uids)
        returns = cmd.returns
        if returns is None and self.rev2:
            returns = ()  # RFC 9051 §6.4.4: IMAP4rev2 answers with ESEARCH
        if returns is None:
            nums = uids if cmd.uid else view.to_seqs(uids)
            self.write(responses.search(nums, modseq))
            return responses.ok(cmd.tag, "SEARCH completed")
        self.write(self._esearch(cmd.tag, cmd.uid, uids, returns, modseq, save_ok=True))
        return responses.ok(cmd.tag, "SEARCH completed")

    def _esearch(self, tag, uid: bool, uids: list[int], returns, modseq, save_ok: bool) -> bytes:
        view = self.view
        opts = set(returns) or {"ALL"}
        if "SAVE" in opts:
            # RFC 5182 §2.1: SAVE alone saves without answering; with MIN/MAX only those
            if opts & {"MIN", "MAX"} and not opts & {"ALL", "COUNT"}:
                picks = []
                if "MIN" in opts and uids:
                    picks.append(uids[0])
                if "MAX" in opts and uids:
                    picks.append(uids[-1])
                view.saved = sorted(set(picks))
            else:
                view.saved = list(uids)
            opts.discard("SAVE")
            if not opts:
                return b""
        nums = uids if uid else view.to_seqs(uids)
        kwargs: dict[str, Any] = {}
        if nums:
            if "MIN" in opts:
                kwargs["min"] = nums[0]
            if "MAX" in opts:
                kwargs["max"] = nums[-1]
            if "ALL" in opts:
                kwargs["all"] = uid_set(nums)
        if "COUNT" in opts:
            kwargs["count"] = len(nums)
        return responses.esearch(tag, uid=uid, modseq=modseq if nums else None, **kwargs)

    async def cmd_sort(self, cmd):
        view = self.view
        uids, _m = await self._run_search(cmd.search, sort=query.sort_keys(cmd.criteria))
        if cmd.returns is not None:  # RFC 5267 ESORT
            nums = uids if cmd.uid else view.to_seqs(uids)
            opts = set(cmd.returns) or {"ALL"}
            kwargs: dict[str, Any] = {}
            if nums and "MIN" in opts:
                kwargs["min"] = min(nums)
            if nums and "MAX" in opts:
                kwargs["max"] = max(nums)
            if nums and "ALL" in opts:
                kwargs["all"] = ",".join(str(n) for n in nums)
            if "COUNT" in opts:
                kwargs["count"] = len(nums)
            self.write(responses.esearch(cmd.tag, uid=cmd.uid, **kwargs))
        else:
            self.write(responses.sort(uids if cmd.uid else view.to_seqs(uids)))
        return responses.ok(cmd.tag, "SORT completed")

    async def cmd_thread(self, cmd):
        view = self.view
        uids, messages = await self._run_search(cmd.search)
        if messages is None:
            messages = await self._messages(view, uids) if uids else []
        by_uid = {m.uid: m for m in messages}
        emails = await self.store.get_emails(
            self.account_id, [by_uid[u].email_id for u in uids if u in by_uid])
        items = []
        for u in uids:
            m = by_uid.get(u)
            if m is None or m.email_id not in emails:
                continue
            n = u if cmd.uid else view.seq_of(u)
            if n is not None:
                items.append((n, emails[m.email_id]))
        if cmd.algorithm == "ORDEREDSUBJECT":
            threads = query.thread_orderedsubject(items)
        else:
            threads = query.thread_references(items)
        self.write(responses.thread(threads))
        return responses.ok(cmd.tag, "THREAD completed")

    # -- IDLE --
    async def cmd_idle(self, cmd):
        self.write(responses.continuation("idling"))
        self.proto.start_idle(cmd.tag)
        self.idle_tag = cmd.tag
        try:
            await self._idle(cmd.tag)
        finally:
            self.idle_tag = None
        return None

    async def _idle(self, tag: str) -> None:
        deadline = time.monotonic() + self.app.config.limits.idle_timeout
        watcher = self.d.idle_watcher
        poke = watcher.watch(self.account_id)
        poke_task: asyncio.Future | None = None
        if self.stop_task is None:
            self.stop_task = asyncio.ensure_future(self.conn.stopping.wait())
        stop_task = self.stop_task
        try:
            if self.view is not None:
                await self.sync(allow_expunge=True)
            await self.flush()
            while True:
                if poke_task is None:
                    poke_task = asyncio.ensure_future(poke.wait())
                read = self._read_task()
                timeout = max(0.0, min(60.0, deadline - time.monotonic()))
                done, _ = await asyncio.wait({read, poke_task, stop_task}, timeout=timeout,
                                             return_when=asyncio.FIRST_COMPLETED)
                if read in done:
                    data = await self.recv(0)
                    if not data:
                        raise _Close
                    self.proto.receive_data(data)
                    event = self.proto.next_event()
                    while event is NEED_DATA and self.inflater is not None \
                            and self.inflater.pending:
                        self.proto.receive_data(self.inflater.decompress(b""))
                        event = self.proto.next_event()
                    if event is NEED_DATA:
                        continue
                    if isinstance(event, IdleDone):
                        if self.view is not None:
                            await self.sync(allow_expunge=True)
                        self.write(responses.ok(tag, "IDLE terminated"))
                        return
                    if isinstance(event, ConnectionMustClose):
                        self.write(event.to_bytes())
                        raise _Close
                    if isinstance(event, BadCommand):
                        self.write(event.to_bytes())
                        return
                    self.write(responses.bad(tag, "Expected DONE"))
                    return
                if time.monotonic() >= deadline:
                    self.write(responses.bye("Autologout; idle for too long"))
                    raise _Close
                if stop_task in done:
                    self.write(responses.bye("Server shutting down"))
                    raise _Close
                if poke_task in done:
                    poke.clear()
                    poke_task = None
                    if self.view is not None:
                        await self.sync(allow_expunge=True)
                    await self.flush()
        finally:
            watcher.unwatch(self.account_id, poke)
            if poke_task is not None:
                poke_task.cancel()


# ---- helpers ---------------------------------------------------------------------------------

def compressed_errors() -> tuple[type[BaseException], ...]:
    return (imap_compress.CompressionError,)


def _drop_buffered(conn) -> None:
    """Plaintext the client pipelined behind STARTTLS and asyncio already buffered: drop it
    (command injection, RFC 9051 §6.2.1 / CVE-2011-0411 class)."""
    buf = getattr(conn.reader, "_buffer", None)
    if isinstance(buf, bytearray):
        buf.clear()


def _ascending(xs: list[int]) -> bool:
    return all(a < b for a, b in zip(xs, xs[1:]))


def _needs_full_raw(atts) -> bool | str:
    """False, True, or "whole" when every attribute that needs the octets wants the whole
    message (BODY[], RFC822, BINARY[]) and nothing needs the parsed structure."""
    whole = True
    needed = False
    for a in atts:
        if a.name in ("ENVELOPE", "BODYSTRUCTURE") or (a.name == "BODY" and a.section is None):
            whole = False
        elif a.name == "RFC822" or (a.name in ("BODY", "BINARY") and a.section is not None
                                    and not a.section.part and a.section.text is None):
            needed = True
        elif a.name == "RFC822.HEADER":
            whole = False  # the header block alone (below)
        elif a.name in ("RFC822.TEXT", "BINARY", "BINARY.SIZE"):
            needed, whole = True, False
        elif a.name == "BODY" and a.section is not None:
            sec = a.section
            whole = False
            if sec.part or sec.text not in ("HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT"):
                needed = True
    if needed and whole:
        return "whole"
    return needed


def _structures(stored: dict[int, dict]) -> dict[int, Any]:
    from mailserver.message.model import MimePart

    return {i: MimePart.from_dict(d) if d else None for i, d in stored.items()}


def _replace_structure(parsed, structure):
    import dataclasses

    if structure is None:
        return parsed
    return dataclasses.replace(parsed, structure=structure)


def _dt(epoch: int | None, tz_minutes: int) -> datetime.datetime | None:
    if epoch is None:
        return None
    tz = datetime.timezone(datetime.timedelta(minutes=tz_minutes))
    return datetime.datetime.fromtimestamp(epoch, tz)


def _internal_date(m: msg.Message) -> datetime.datetime:
    return _dt(m.received_at, m.received_tz or 0)  # type: ignore[return-value]

