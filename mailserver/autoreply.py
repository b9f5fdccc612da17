"""Vacation auto-replies (RFC 3834, with the RFC 5230 vacation rules) for JMAP VacationResponse.

``AutoResponder.delivered(raw, parsed, result)`` is called by ``Deliverer.deliver`` after the
recipients' transaction has committed (every ingest path: SMTP MX, LMTP, local submissions).
It never raises and never waits: the reply work runs in a task of its own, so an auto-reply
can neither delay nor fail a delivery. What it sends, per account that got the message:

- only when the account's VacationResponse (``vacation_responses``) is enabled and now is in
  [fromDate, toDate);
- to the envelope sender, which is the ``Return-Path:`` the final delivery wrote as the first
  header line (RFC 5321 §4.4; the SMTP MX, LMTP and JMAP submission add it). No Return-Path,
  or ``<>``, means no reply (RFC 3834 §4);
- never to ``MAILER-DAEMON``, ``LISTSERV``, ``majordomo``, ``owner-*``, ``*-request`` or the
  account itself, nor for a message with ``Auto-Submitted`` other than "no" (RFC 3834 §2),
  ``List-Id``/``List-Unsubscribe``/``List-Post`` (RFC 2369/2919), ``Precedence:
  bulk|list|junk``, or Microsoft's ``X-Auto-Response-Suppress`` (OOF/All); and only when one of
  the account's own addresses is in To: or Cc: (RFC 5230 §4.5);
- at most once per sender per ``[jmap] vacation_period`` (RFC 5230 §4.2): the record is a row
  of ``vacation_replies`` claimed in a write transaction (so it holds across processes and
  restarts; a remote reply is queued in that same transaction); changing the VacationResponse
  clears the records, like a new ``:handle``;
- from the address the message was sent to, with ``Auto-Submitted: auto-replied``,
  ``In-Reply-To``/``References`` (RFC 3834 §3.1.3-4), the configured subject or "Auto: " + the
  original one (§3.1.5), MAIL FROM ``<>`` (§3.3), DKIM-signed like a submission; local senders
  get it through the ingest path, remote ones through the outbound queue.

Cost when nobody is on vacation: a set lookup per delivery, plus one query per process every
``cache_ttl`` seconds for the accounts with an enabled VacationResponse (a change made in
another process takes effect within that time; ``invalidate()`` makes a local one immediate).
"""

from __future__ import annotations

import asyncio
import email.policy
import email.utils
import logging
import re
import secrets
import time
from collections.abc import Callable, Iterable
from email.message import EmailMessage
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from mailserver.message.headers import header_text, split_header_fields
from mailserver.store import schema

log = logging.getLogger("mailserver.autoreply")

V = schema.vacation_responses
VR = schema.vacation_replies

# RFC 5230 §4.6 / RFC 3834 §2: addresses that belong to software, not to people
_ROBOT_LOCALS = frozenset({"mailer-daemon", "listserv", "majordomo", "postmaster",
                           "noreply", "no-reply", "do-not-reply", "donotreply"})
_LIST_HEADERS = ("list-id", "list-unsubscribe", "list-post")
_RETURN_PATH = re.compile(rb"Return-Path:[ \t]*<([^>\r\n]*)>[ \t]*\r?\n", re.IGNORECASE)


def envelope_sender(raw: bytes) -> str | None:
    """The Return-Path written by the final delivery (first header line), "" for ``<>``,
    None when there is none."""
    m = _RETURN_PATH.match(raw)
    if m is None:
        return None
    return m.group(1).decode("utf-8", "replace").strip()


def robot_sender(address: str) -> bool:
    local = address.rpartition("@")[0].lower()
    return (local in _ROBOT_LOCALS or local.startswith(("owner-", "bounce"))
            or local.endswith(("-request", "-bounces")))


def suppressed_by_headers(fields: Iterable[tuple[str, bytes]]) -> str | None:
    """Why the message's header forbids an automatic reply, or None."""
    for name, value in fields:
        text = header_text(value).strip().lower()
        if name == "auto-submitted":
            if re.sub(r"\(.*?\)", "", text).split(";")[0].strip() != "no":  # RFC 3834 §5
                return "auto-submitted"
        elif name in _LIST_HEADERS:
            return "mailing list"
        elif name == "precedence" and text in ("bulk", "list", "junk"):
            return "precedence " + text
        elif name == "x-auto-response-suppress" and ("oof" in text or "all" in text):
            return "x-auto-response-suppress"
    return None


def _strip_tag(address: str) -> str:
    local, at, domain = address.lower().partition("@")
    return local.split("+", 1)[0] + at + domain


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _msg_id_ok(value: str) -> bool:
    return bool(value) and len(value) < 500 and not any(c in value for c in " \t\r\n<>")


class AutoResponder:
    """One per ``Deliverer`` (``open_app`` attaches it as ``deliverer.auto_responder``)."""

    def __init__(self, db: Any, blobs: Any, directory: Any, deliverer: Any, *, period: float,
                 hostname: str, cache_ttl: float = 5.0,
                 clock: Callable[[], float] = time.time) -> None:
        from mailserver.mailauth.signing import SigningKeyCache

        self.db, self.blobs, self.directory, self.deliverer = db, blobs, directory, deliverer
        self.period = int(period)
        self.hostname = hostname
        self.cache_ttl = cache_ttl
        self.clock = clock
        self.keys = SigningKeyCache(directory)
        self._enabled: frozenset[int] = frozenset()
        self._loaded_at: float | None = None
        self._tasks: set[asyncio.Task] = set()
        self._refreshing: asyncio.Future | None = None
        self.sent = 0  # replies handed on (for tests and metrics)

    # -- the hook ---------------------------------------------------------------------------

    def delivered(self, raw: bytes, parsed: Any, result: Any) -> None:
        """Post-commit hook of ``Deliverer.deliver``; never raises, never blocks."""
        try:
            accounts = sorted({d.account_id for o in result.recipients.values()
                               for d in o.deliveries})
            if not accounts:
                return
            fresh = self._loaded_at is not None and \
                time.monotonic() - self._loaded_at < self.cache_ttl
            if fresh and not self._enabled.intersection(accounts):
                return
            task = asyncio.get_running_loop().create_task(
                self._run(raw, parsed, accounts, refresh=not fresh), name="vacation-reply")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        except Exception:
            log.exception("vacation hook failed")

    def invalidate(self) -> None:
        """A VacationResponse changed in this process: re-read the enabled set next time."""
        self._loaded_at = None

    async def wait_idle(self) -> None:
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def close(self) -> None:
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=5.0)
        for t in list(self._tasks):
            t.cancel()

    # -- the work ---------------------------------------------------------------------------

    async def _refresh(self) -> None:
        """Re-read the enabled set; concurrent callers share one query."""
        if self._refreshing is None or self._refreshing.done():
            self._refreshing = asyncio.ensure_future(self._load_enabled())
        await asyncio.shield(self._refreshing)

    async def _load_enabled(self) -> None:
        async with self.db.read() as conn:
            rows = (await conn.execute(select(V.c.account_id).where(V.c.is_enabled))).scalars()
            self._enabled = frozenset(rows)
        self._loaded_at = time.monotonic()

    async def _run(self, raw: bytes, parsed: Any, accounts: list[int], *, refresh: bool) -> None:
        try:
            if refresh:
                await self._refresh()
            todo = [a for a in accounts if a in self._enabled]
            if not todo:
                return
            sender = envelope_sender(raw)
            if not sender or "@" not in sender or robot_sender(sender):
                return  # RFC 3834 §2 / RFC 5230 §4.6
            fields = split_header_fields(raw[:parsed.header_end])
            if suppressed_by_headers(fields):
                return
            for account_id in todo:
                await self._reply(account_id, sender, raw, parsed)
        except Exception:
            log.exception("vacation auto-reply failed")

    async def _reply(self, account_id: int, sender: str, raw: bytes, parsed: Any) -> None:
        now = int(self.clock())
        key = sender.lower()
        async with self.db.read() as conn:
            vac = (await conn.execute(select(V).where(V.c.account_id == account_id))).first()
            last = (await conn.execute(select(VR.c.replied_at).where(
                VR.c.account_id == account_id, VR.c.sender == key))).scalar()
        if vac is None or not vac.is_enabled:
            return
        if last is not None and last > now - self.period:
            return  # answered recently (checked again when the record is claimed)
        if (vac.from_date is not None and now < vac.from_date) or \
                (vac.to_date is not None and now >= vac.to_date):
            return
        owned = {a.lower() for a in await self.directory.addresses_of(account_id)}
        if _strip_tag(sender) in owned or sender.lower() in owned:
            return  # never to ourselves
        to_us = [a.email for a in (*parsed.to, *parsed.cc)
                 if a.email and (a.email.lower() in owned or _strip_tag(a.email) in owned)]
        if not to_us:
            return  # RFC 5230 §4.5: not addressed to the user (Bcc, list, alias fan-out)
        account = await self.directory.get_account_by_id(account_id)
        reply = self._build(vac, account, to_us[0], sender, parsed)
        from mailserver.mailauth import signing

        try:
            reply = await signing.sign_message(reply, to_us[0].rpartition("@")[2], self.keys)
        except Exception:
            log.warning("DKIM signing of a vacation reply failed; sending unsigned",
                        exc_info=True)
        try:
            if not await self._send(account_id, key, sender, reply, now):
                return
        except IntegrityError:
            return  # another process claimed this sender at the same moment
        self.sent += 1
        log.info("vacation reply sent", extra={"event": "vacation_reply",
                                                "user": account.login})

    async def _send(self, account_id: int, key: str, sender: str, reply: bytes,
                    now: int) -> bool:
        """Claim the sender's record and hand the reply on; False when already answered."""
        if await self.directory.is_hosted_domain(sender.rpartition("@")[2]):
            async with self.db.write() as conn:
                if not await self._claim(conn, account_id, key, now):
                    return False
            try:
                res = await self.deliverer.deliver(b"Return-Path: <>\r\n" + reply, [sender])
                ok = res.all_delivered
            except Exception:
                log.exception("local delivery of a vacation reply failed")
                ok = False
            if not ok:  # let a later message try again
                async with self.db.write() as conn:
                    await conn.execute(delete(VR).where(VR.c.account_id == account_id,
                                                        VR.c.sender == key))
            return ok
        from mailserver.queue import store as q

        blob_id = await self.blobs.put(reply)  # durable before the queue row refers to it
        async with self.db.write() as conn:  # the record and the queue rows commit together
            if not await self._claim(conn, account_id, key, now):
                return False
            await q.enqueue(conn, blob_id=blob_id, size=len(reply), sender="",
                            recipients=[sender], now=now, account_id=account_id)
        return True

    async def _claim(self, conn: Any, account_id: int, sender: str, now: int) -> bool:
        """Record a reply to ``sender`` unless one was sent within the period (and forget
        the account's records that are past it, so the table stays small)."""
        await conn.execute(delete(VR).where(VR.c.account_id == account_id,
                                            VR.c.sender != sender,
                                            VR.c.replied_at <= now - self.period))
        row = (await conn.execute(select(VR.c.replied_at).where(
            VR.c.account_id == account_id, VR.c.sender == sender))).first()
        if row is None:
            await conn.execute(insert(VR).values(account_id=account_id, sender=sender,
                                                 replied_at=now))
            return True
        res = await conn.execute(update(VR).where(
            VR.c.account_id == account_id, VR.c.sender == sender,
            VR.c.replied_at <= now - self.period).values(replied_at=now))
        return res.rowcount == 1

    def _build(self, vac: Any, account: Any, from_address: str, to: str, parsed: Any) -> bytes:
        m = EmailMessage(policy=email.policy.SMTP)
        m["From"] = email.utils.formataddr((account.display_name or "", from_address))
        m["To"] = to
        subject = _one_line(vac.subject or "") or f"Auto: {_one_line(parsed.subject or '')}"
        m["Subject"] = subject.rstrip()[:998]
        m["Date"] = email.utils.formatdate(self.clock(), localtime=False)
        m["Message-ID"] = f"<{secrets.token_hex(16)}@{self.hostname}>"
        if _msg_id_ok(parsed.message_id):  # RFC 3834 §3.1.3, §3.1.4
            m["In-Reply-To"] = f"<{parsed.message_id}>"
            refs = [r for r in (*parsed.references, parsed.message_id) if _msg_id_ok(r)]
            m["References"] = " ".join(f"<{r}>" for r in refs[-20:])
        m["Auto-Submitted"] = "auto-replied"  # RFC 3834 §5
        m["X-Auto-Response-Suppress"] = "All"
        text = vac.text_body
        if text is None and vac.html_body:
            from mailserver.message.html2text import html_to_text

            text = html_to_text(vac.html_body)
        m.set_content(text or "I am away and will read your message when I return.")
        if vac.html_body:
            m.add_alternative(vac.html_body, subtype="html")
        return m.as_bytes()
