"""The SMTP daemons: MX (mail from other servers, port 25) and submission (587/465).

Both run the session loop of ``smtpsession``; this module holds their policies.

MX (RFC 5321):
- Accepts only recipients in hosted domains; anything else is relaying and gets 554 5.7.1.
  An unknown local recipient gets 550 5.1.1 at RCPT, a full mailbox 452 4.2.2 (552 5.2.2 when
  the announced SIZE exceeds the whole quota) — checked at RCPT so that multi-recipient
  transactions rarely fail after the data.
- SPF (``mailauth.spf``) is evaluated at MAIL FROM through the daemon's async resolver and
  never rejects by itself (DMARC decides, RFC 7489 §10.1). After the data,
  ``mailauth.inbound.check_message`` adds DKIM, ARC and DMARC (reusing that SPF result) and
  writes ``Authentication-Results:`` (RFC 8601; fields claiming our authserv-id are removed
  first, §5). A failing DMARC p=reject is answered 550 5.7.1 and p=quarantine is filed into
  Junk — both mappings are ``[smtp.mx] dmarc_reject`` / ``dmarc_quarantine``. Then
  ``Return-Path:`` and ``Received:`` are prepended and the ingest path stores the message:
  250 only after the commit.
- ``[smtp.mx] max_messages_per_ip`` messages per client address per minute (450 4.7.1
  beyond), on top of the per-IP connection limit of ``ListenerGroup``.
- ``tls = "required"`` refuses MAIL before STARTTLS (530 5.7.0).

Submission (RFC 6409, RFC 8314):
- AUTH PLAIN/LOGIN is required before MAIL (530 5.7.0); with ``tls = "required"`` AUTH is
  offered only after STARTTLS (465 is TLS from the first byte). Failed logins go through
  the app's shared login throttle (``mailserver.auth.throttle``: per network and per login,
  counted across every daemon and node; tarpit, then 454 4.7.0 lock-out), and
  ``limits.max_auth_failures`` per connection close it.
- The envelope sender and every ``From:`` address must belong to the user (login or an alias
  resolving to the account; ``+tag`` sub-addresses allowed): else 553 5.7.1.
- ``Message-ID:`` and ``Date:`` are added when missing (RFC 6409 §8.2, §8.3).
- The message is DKIM-signed as its From: domain with that domain's active keys (ed25519 and
  RSA together when both exist; ``mailauth.signing``, keys cached per daemon for a minute).
- Local recipients go straight through the ingest path; remote ones are written to the outbound
  queue (``mailserver.queue.store.enqueue``: blob first, then queue rows in one transaction)
  together with their DSN parameters, and 250 comes only after that commit. The queue is
  written before the local deliveries: if it fails nothing is stored; if a local delivery
  fails after it, the 4xx makes the client retry, which may duplicate, never lose, a copy.

With several recipients one reply must answer for all (SMTP, unlike LMTP): when some are
stored and others fail in the ingest path, the failed ones are written to the outbound queue
(its worker retries local deliveries and bounces what fails for good) before the 250.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import secrets
import time
from dataclasses import dataclass
from typing import Any

from mailserver.delivery import DELIVERED, FAILED, QUOTA_PERM, QUOTA_TEMP, UNKNOWN, DeliveryResult
from mailserver.mailauth import inbound, signing
from mailserver.mailauth.dns import Resolver
from mailserver.mailauth.spf import SpfResult, check_spf
from mailserver.message.headers import find_header_end, header_text, parse_addresses, \
    split_header_fields
from mailserver.queue import store as q
from mailserver.servers.base import Connection
from mailserver.servers.smtpsession import R_AUTH_FAILED, R_AUTH_THROTTLED, R_TEMP, RateLimiter, \
    SmtpDaemon, SmtpSession, protocol_config
from mailserver.store.directory import InvalidName, normalize_address
from protocols import sasl
from protocols.smtp import MailFrom, MessageComplete, RcptTo, Reply, ServerConfig

log = logging.getLogger("mailserver.smtp")

R_RELAY = Reply(554, "5.7.1", "Relaying denied")
R_UNKNOWN_USER = Reply(550, "5.1.1", "No such user here")
R_MAILBOX_FULL = Reply(452, "4.2.2", "Mailbox full, try again later")
R_QUOTA_PERM = Reply(552, "5.2.2", "Message exceeds the mailbox quota")
R_TLS_FIRST = Reply(530, "5.7.0", "Must issue a STARTTLS command first")
R_RATE = Reply(450, "4.7.1", "Too many messages from your address, try again later")
R_NOT_OWNER = Reply(553, "5.7.1", "Sender address not owned by the authenticated user")
R_FROM_NOT_OWNER = Reply(553, "5.7.1", "From: address not owned by the authenticated user")
R_NO_FROM = Reply(553, "5.7.1", "Message has no From: address")

_STATUS_REPLY = {
    UNKNOWN: R_UNKNOWN_USER,
    QUOTA_TEMP: R_MAILBOX_FULL,
    QUOTA_PERM: R_QUOTA_PERM,
    FAILED: R_TEMP,
}


def outcome_reply(status: str, address: str, *, lmtp: bool = False) -> Reply:
    """The SMTP answer for one recipient's ingest outcome."""
    if status == DELIVERED:
        return Reply(250, "2.0.0", f"<{address}> delivered" if lmtp else "OK queued")
    return _STATUS_REPLY.get(status, R_TEMP)


async def combined_reply(app: Any, session: SmtpSession, event: MessageComplete, raw: bytes,
                         result: DeliveryResult, targets: dict[str, RcptTo],
                         account_id: int | None = None) -> Reply:
    """One reply for an SMTP transaction whose local recipients went through the ingest path.

    All stored: 250. None stored: the least final failure (temporary before permanent), and
    the client keeps the message. Some stored: the failed ones are handed to the outbound
    queue — its worker retries local deliveries through the ingest path and bounces what
    fails for good (RFC 3464 DSN) — and 250 only once that is committed too.
    """
    statuses = {t: result[t].status for t in targets}
    failed = [t for t, st in statuses.items() if st != DELIVERED]
    if not failed:
        return Reply(250, "2.0.0", f"OK id={session.message_id}")
    if len(failed) < len(statuses):
        session.log(logging.WARNING, "partial delivery, queued for retry: "
                    + ", ".join(f"{t}={statuses[t]}" for t in failed), event="partial_delivery")
        await enqueue(app, event, raw, [(t, targets[t]) for t in failed], account_id)
        return Reply(250, "2.0.0", f"OK id={session.message_id}")
    values = set(statuses.values())
    for status in (FAILED, QUOTA_TEMP, QUOTA_PERM, UNKNOWN):
        if status in values:
            return outcome_reply(status, "")
    return R_TEMP


async def enqueue(app: Any, event: MessageComplete, raw: bytes,
                  recipients: list[tuple[str, RcptTo]], account_id: int | None) -> int:
    """Write ``raw`` for ``recipients`` (address, its RCPT with DSN parameters) to the outbound
    queue: blob first (durable), then the queue rows in one transaction."""
    blob_id = await app.blobs.put(raw)
    params = event.mail_from.params
    rows = []
    for address, r in recipients:
        orcpt = f"{r.params.orcpt[0]};{r.params.orcpt[1]}" if r.params.orcpt else None
        rows.append(q.Recipient(address, notify=r.params.notify, orcpt=orcpt))
    async with app.db.write() as conn:
        return await q.enqueue(
            conn, blob_id=blob_id, size=len(raw), sender=event.mail_from.address,
            recipients=rows, now=int(time.time()), ret=params.ret, envid=params.envid,
            body=params.body, smtputf8=params.smtputf8, requiretls=params.requiretls,
            account_id=account_id)


def strip_subaddress(address: str) -> str:
    local, at, domain = address.rpartition("@")
    if "+" in local and not local.startswith("+"):
        local = local.split("+", 1)[0]
    return f"{local}{at}{domain}"


def header_fields(data: bytes) -> tuple[int, list[tuple[str, bytes]]]:
    end = find_header_end(data, 0, len(data))
    return end, split_header_fields(data[:end])


@dataclass(frozen=True, slots=True)
class _RcptFacts:
    local: bool  # in a hosted domain
    found: bool  # resolves to at least one account or forward
    quotas: tuple[tuple[int, int], ...]  # (quota_bytes, used_bytes) of the local accounts
    only_local_account: bool  # exactly one account and no forward


class LocalRecipients:
    """RCPT-time checks of local addresses shared by MX, submission and LMTP.

    Addresses that exist are cached for ``ttl`` seconds (the profile of the ingest benchmark
    showed the directory queries of RCPT as the largest single cost). That is safe because the
    ingest path resolves and checks the quota again inside the delivery: a stale "yes" becomes
    the right 4xx/5xx after the data. Refusals are never cached, so a new address or domain is
    never refused (permanently) because of an old answer.
    """

    def __init__(self, app: Any, *, ttl: float = 5.0, max_entries: int = 10_000) -> None:
        self.app = app
        self.directory = app.directory
        self.ttl = ttl
        self.max_entries = max_entries
        self._postmaster: str | None = None
        self._cache: dict[str, tuple[float, _RcptFacts]] = {}

    async def postmaster(self) -> str:
        """RFC 5321 §4.1.1.3: "postmaster" without a domain goes to a hosted domain's."""
        if self._postmaster is None:
            host = self.app.config.server.effective_hostname()
            candidates = [host, host.partition(".")[2]]
            domains = [d.name for d in await self.directory.list_domains()]
            domain = next((c for c in candidates if c in domains), domains[0] if domains else host)
            self._postmaster = f"postmaster@{domain}"
        return self._postmaster

    async def check(self, address: str, size: int | None) -> tuple[str, Reply | None, bool]:
        """(address to deliver to, refusal or None, is_local) for one RCPT."""
        if "@" not in address:
            address = await self.postmaster()
        facts = await self._facts(address)
        if not facts.local:
            return address, None, False
        if not facts.found:
            return address, R_UNKNOWN_USER, True
        for quota, used in facts.quotas:
            if quota and size is not None and size > quota:
                return address, R_QUOTA_PERM, True
            if quota and used >= quota and facts.only_local_account:
                return address, R_MAILBOX_FULL, True
        return address, None, True

    async def _facts(self, address: str) -> _RcptFacts:
        key = address.lower()
        now = time.monotonic()
        hit = self._cache.get(key)
        if hit is not None and hit[0] > now:
            return hit[1]
        directory = self.directory

        async def read(conn) -> _RcptFacts:
            res = await directory.resolve(address, conn)
            if not res.found:
                hosted = await directory.is_hosted_domain(address.rpartition("@")[2], conn)
                return _RcptFacts(hosted, False, (), False)
            quotas = []
            for account_id in res.account_ids:
                try:
                    account = await directory.get_account_by_id(account_id, conn)
                except LookupError:
                    continue
                quotas.append((account.quota_bytes, account.used_bytes))
            return _RcptFacts(True, True, tuple(quotas),
                              len(res.account_ids) == 1 and not res.remote)

        facts = await self.app.db.read_inline(read)  # a few indexed rows: no thread hop
        if not facts.found:
            return facts
        if len(self._cache) >= self.max_entries:
            self._cache = {k: v for k, v in self._cache.items() if v[0] > now}
            if len(self._cache) >= self.max_entries:
                self._cache.clear()
        self._cache[key] = (now + self.ttl, facts)
        return facts


# =============================================================================================
# MX
# =============================================================================================


class MxDaemon(SmtpDaemon):
    name = "mx"

    def __init__(self, app: Any, section: Any) -> None:
        super().__init__(app, section)
        dns = app.config.dns
        self.resolver = Resolver(list(dns.nameservers) or None, port=dns.port,
                                 timeout=dns.timeout)
        self.rate = RateLimiter(section.max_messages_per_ip)
        self.local = LocalRecipients(app)
        self.policy = inbound.InboundPolicy(
            dmarc_reject=section.dmarc_reject, dmarc_quarantine=section.dmarc_quarantine,
            trusted_arc_sealers=frozenset(d.lower().rstrip(".")
                                          for d in section.trusted_arc_sealers))

    def session_config(self, conn: Connection) -> ServerConfig:
        return protocol_config(self.app, starttls=self.starttls_offered,
                               requiretls=True)

    async def on_mail(self, s: SmtpSession, event: MailFrom) -> Reply | None:
        if self.tls_mode == "required" and not s.conn.tls:
            return R_TLS_FIRST
        if not self.rate.allow(s.conn.peer_ip or "local"):
            s.log(logging.INFO, "message rate limit", event="rate_limited")
            return R_RATE
        s.data["spf"] = await self._spf(s, event.address)
        return None

    async def _spf(self, s: SmtpSession, mail_from: str) -> SpfResult | None:
        ip = s.conn.peer_ip
        if not ip:
            return None
        try:
            return await check_spf(ip, mail_from, s.sm.helo_name or "", self.resolver,
                                   receiver=self.hostname)
        except Exception:  # a resolver failure is a temperror, never a lost session
            s.log(logging.WARNING, "SPF check failed", event="spf_error", exc_info=True)
            return SpfResult("temperror", "internal error",
                             mail_from.rpartition("@")[2] or (s.sm.helo_name or ""))

    async def on_rcpt(self, s: SmtpSession, event: RcptTo) -> Reply | None:
        mail = s.sm.mail_from
        size = mail.params.size if mail is not None else None
        address, refusal, local = await self.local.check(event.address, size)
        if not local:
            s.log(logging.INFO, f"relay attempt to {event.domain[:255]}", event="relay_denied")
            return R_RELAY
        if refusal is not None:
            return refusal
        s.data.setdefault("rcpts", {})[event.address] = address
        return None

    async def authenticate(self, s: SmtpSession, data: bytes) -> tuple[bytes, str, str]:
        """(Authentication-Results field, DMARC disposition, reject reason) for ``data``."""
        ip = s.conn.peer_ip
        mail = s.sm.mail_from
        if not ip:  # a unix socket: nobody to authenticate
            return f"Authentication-Results: {self.hostname}; none\r\n".encode(), "none", ""
        try:
            verdict = await inbound.check_message(
                data, client_ip=ip, helo=s.sm.helo_name or "",
                mail_from=mail.address if mail is not None else "", resolver=self.resolver,
                authserv_id=self.hostname, spf=s.data.get("spf"), policy=self.policy)
        except Exception:  # documented never to raise; a bug must not lose the message
            s.log(logging.ERROR, "authentication checks failed", event="auth_check_error",
                  exc_info=True)
            spf: SpfResult | None = s.data.get("spf")
            clause = f"spf={spf.result}" if spf is not None else "none"
            return (f"Authentication-Results: {self.hostname}; {clause}\r\n".encode(),
                    "none", "")
        return verdict.auth_results_header, verdict.dmarc_disposition, verdict.reject_reason

    async def on_message(self, s: SmtpSession, event: MessageComplete) -> bytes:
        sm = s.sm
        # RFC 8601 §5: fields claiming our authserv-id were not written by us
        data = inbound.remove_auth_results(event.data, self.hostname)
        authres, disposition, reason = await self.authenticate(s, data)
        if disposition == "reject":  # RFC 7489 §6.7 / §10.3
            s.log(logging.INFO, f"DMARC reject: {reason}", event="dmarc_reject")
            return sm.send(Reply(550, "5.7.1", reason or "Rejected by DMARC policy"))
        mailbox = "Junk" if disposition == "quarantine" else None
        trace = (f"Return-Path: <{event.mail_from.address}>\r\n".encode("utf-8", "surrogateescape")
                 + self.received_header(s, event.recipients))
        raw = trace + authres + data
        rcpt_map: dict[str, str] = s.data.get("rcpts", {})
        targets = {rcpt_map.get(r.address, r.address): r for r in event.recipients}
        try:
            result = await self.app.deliverer.deliver(raw, list(targets), mailbox=mailbox)
            reply = await combined_reply(self.app, s, event, raw, result, targets)
        except Exception:
            s.log(logging.ERROR, "delivery failed", event="delivery_error", exc_info=True)
            return sm.send(R_TEMP)
        s.log(logging.INFO, f"message {len(raw)} octets for {len(targets)} recipient(s): "
              f"{reply.code}", event="message", size=len(raw), code=reply.code,
              dmarc=disposition)
        return sm.send(reply)


def _authres_value(value: str) -> str:
    # RFC 8601 §2.2 pvalue: quote what is not a plain token
    if value and all(c.isalnum() or c in "@.-_+=" for c in value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


# =============================================================================================
# Submission
# =============================================================================================


class SubmissionDaemon(SmtpDaemon):
    name = "submission"

    def __init__(self, app: Any, section: Any) -> None:
        super().__init__(app, section)
        self.throttle = app.login_throttle  # shared with every daemon (StoreLoginThrottle)
        self.local = LocalRecipients(app)
        self.dkim_keys = signing.SigningKeyCache(app.directory)

    def session_config(self, conn: Connection) -> ServerConfig:
        return protocol_config(
            self.app, starttls=self.starttls_offered,
            auth_mechanisms=("PLAIN", "LOGIN"),
            auth_requires_tls=self.tls_mode == "required",
            auth_required=True, requiretls=True)

    async def on_auth(self, s: SmtpSession, creds: sasl.Credentials) -> Reply:
        ip = s.conn.peer_ip
        try:
            login = normalize_address(creds.authcid)
        except InvalidName:
            login = creds.authcid.strip().lower()
        decision = await self.throttle.check(ip, login)
        if not decision.allowed:
            return R_AUTH_THROTTLED
        account = await self.app.directory.authenticate(login, creds.password)
        if account is not None and creds.authzid:
            try:
                if normalize_address(creds.authzid) != account.login:
                    account = None  # acting as someone else is not offered
            except InvalidName:
                account = None
        if account is None:
            decision = await self.throttle.failed(ip, login)
            if decision.delay:
                await asyncio.sleep(decision.delay)
            return R_AUTH_FAILED if decision.allowed else R_AUTH_THROTTLED
        await self.throttle.succeeded(ip, login)
        s.user = account.login
        s.account = account
        s.owned = None
        s.data = {}
        return Reply(235, "2.7.0", "Authentication successful")

    async def _owned(self, s: SmtpSession) -> set[str]:
        if s.owned is None:
            s.owned = {a.lower() for a in await self.app.directory.addresses_of(s.account.id)}
        return s.owned

    async def owns(self, s: SmtpSession, address: str) -> bool:
        try:
            address = normalize_address(address)
        except InvalidName:
            return False
        owned = await self._owned(s)
        return address.lower() in owned or strip_subaddress(address).lower() in owned

    async def on_mail(self, s: SmtpSession, event: MailFrom) -> Reply | None:
        if not event.address or not await self.owns(s, event.address):
            s.log(logging.INFO, "sender not owned", event="sender_refused")
            return R_NOT_OWNER
        return None

    async def on_rcpt(self, s: SmtpSession, event: RcptTo) -> Reply | None:
        mail = s.sm.mail_from
        size = mail.params.size if mail is not None else None
        address, refusal, local = await self.local.check(event.address, size)
        if refusal is not None:
            return refusal
        if not local:
            try:
                normalize_address(address)
            except InvalidName:
                return Reply(501, "5.1.3", "Bad recipient address syntax")
            s.data.setdefault("remote", []).append(event)
        else:
            s.data.setdefault("local", {})[address] = event
        return None

    async def on_message(self, s: SmtpSession, event: MessageComplete) -> bytes:
        sm = s.sm
        data = event.data
        _end, fields = header_fields(data)
        senders = [a.email for name, value in fields if name == "from"
                   for a in parse_addresses(header_text(value)) if a.email]
        if not senders:
            return sm.send(R_NO_FROM)
        for address in senders:
            if not await self.owns(s, address):
                s.log(logging.INFO, "From: not owned", event="from_refused")
                return sm.send(R_FROM_NOT_OWNER)
        names = {name for name, _ in fields}
        extra = b""
        if "message-id" not in names:  # RFC 6409 §8.3
            extra += f"Message-ID: <{secrets.token_hex(16)}@{self.hostname}>\r\n".encode()
        if "date" not in names:  # RFC 6409 §8.2
            extra += f"Date: {email.utils.formatdate(localtime=False)}\r\n".encode()
        raw = self.received_header(s, event.recipients) + extra + data
        raw = await self._sign(s, raw, senders[0].rpartition("@")[2])
        local: dict[str, RcptTo] = s.data.get("local", {})
        remote: list[RcptTo] = s.data.get("remote", [])
        account_id = s.account.id
        reply = Reply(250, "2.0.0", f"OK id={s.message_id}")
        try:
            if remote:
                await enqueue(self.app, event, raw, [(r.address, r) for r in remote], account_id)
            if local:
                # RFC 5321 §4.4: the final delivery writes Return-Path (vacation replies use it)
                trace = f"Return-Path: <{event.mail_from.address}>\r\n".encode(
                    "utf-8", "surrogateescape")
                result = await self.app.deliverer.deliver(trace + raw, list(local))
                reply = await combined_reply(self.app, s, event, raw, result, local, account_id)
                if reply.code >= 400 and remote:
                    # the remote copies are queued, so the message is accepted: the local
                    # ones go to the queue too (retried there, bounced if they fail for good)
                    await enqueue(self.app, event, raw, list(local.items()), account_id)
                    reply = Reply(250, "2.0.0", f"OK id={s.message_id}")
        except Exception:
            s.log(logging.ERROR, "submission failed", event="delivery_error", exc_info=True)
            return sm.send(R_TEMP)
        s.log(logging.INFO, f"submitted {len(raw)} octets, {len(local)} local, {len(remote)} "
              f"remote: {reply.code}", event="message", size=len(raw), code=reply.code)
        return sm.send(reply)

    async def _sign(self, s: SmtpSession, raw: bytes, domain: str) -> bytes:
        """DKIM-sign as the From: domain (DMARC alignment) with its active keys, if any."""
        try:
            return await signing.sign_message(raw, domain, self.dkim_keys)
        except Exception:
            s.log(logging.WARNING, "DKIM signing failed; sending unsigned", event="dkim_error",
                  exc_info=True)
            return raw


async def start_mx(app: Any, section: Any) -> MxDaemon:
    return await MxDaemon(app, section).start()  # type: ignore[return-value]


async def start_submission(app: Any, section: Any) -> SubmissionDaemon:
    return await SubmissionDaemon(app, section).start()  # type: ignore[return-value]
