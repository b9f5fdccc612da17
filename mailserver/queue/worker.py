"""Queue workers: claim due recipients, deliver them per domain, record the outcome.

One ``QueueWorker`` per process (``mailserver serve queue``); any number of processes on any
number of nodes share the queue through the database (``mailserver.queue.store``: claims by
lease). Inside a process the worker claims up to ``batch_size`` due recipients at a time —
never of a domain it is already talking to — groups them by domain and runs one delivery task
per domain: one SMTP connection carries every claimed message and recipient of that domain
(per-recipient replies). At most ``workers`` connections are open at once. While a task runs its
leases are renewed; a worker that dies stops renewing, and its recipients are taken over when
the lease expires.

**Exactly-once, and its one hole.** A recipient is finished (row deleted) in the transaction
that records the remote 250. If the process dies after the remote 250 and before that commit,
the lease expires and the recipient is delivered again: the only duplicate window, inherent to
SMTP (RFC 1047). Outcomes are recorded as soon as a domain's connection is done, so the window
is one connection long. At stop, deliveries get ``STOP_GRACE`` seconds; the rest are cancelled
and their recipients released (the same window applies to a transaction cut off mid-DATA).

**Outcomes** (RFC 5321 §4.2.1): 2xx delivered; 5xx permanent (failure DSN now); 4xx and
connection failures temporary (retry per ``retry_schedule`` with jitter, delay DSN once after
``delay_dsn_after``, failure DSN when the recipient is older than ``max_age``). Host-level
trouble (no connection, 4xx greeting/EHLO/MAIL/end-of-DATA, TLS failure) moves the affected
recipients on to the next address and MX host in the same attempt; a 4xx to RCPT does not
(greylisting wants the same host later).

**Local domains** (hosted here: DSNs to our own senders, forwards) are delivered through the
ingest path (``app.deliverer``), never over SMTP to ourselves. DSNs are queued in the same
transaction as the outcome that causes them, with the null sender.

**TLS**: opportunistic STARTTLS without certificate checks (RFC 7435); a failed handshake is
retried once in clear text at the same address. A domain with an MTA-STS policy in enforce
mode (``mtasts``) gets only its listed MX hosts, over STARTTLS with a validated certificate, or
nothing (temporary failure). DANE (RFC 7672, ``mailserver.queue.dane``; ``[queue] dane``, on
by default, meaningful only behind a validating resolver): an MX host with secure usable TLSA
records gets STARTTLS with a certificate matching them, or is skipped (4.7.5, next host; no
clear-text retry); secure but unusable records mean TLS without authentication; a failed TLSA
lookup skips the host. DANE takes precedence over MTA-STS for a host that has TLSA records
(RFC 8461 §2). ``REQUIRETLS`` (RFC 8689) messages go only over TLS validated by MTA-STS or DANE
to a server announcing REQUIRETLS, else they bounce with 5.7.30.
Smarthost (``relay_host``): all mail goes there, with AUTH PLAIN over TLS when credentials are
configured.

**Limits**: at most ``workers`` connections per process and one per domain per process (all
claimed recipients of a domain share it); several processes each have their own.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import socket
import ssl
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from mailserver.blobs.base import BlobNotFound
from mailserver.config import QueueConfig
from mailserver.mailauth.dns import DnsTempError, Resolver
from mailserver.queue import dane as danemod
from mailserver.queue import dsn as dsnmod
from mailserver.queue import store
from mailserver.queue.downgrade import DowngradeError, downgrade_8bit, has_8bit
from mailserver.queue.mtasts import MtaSts
from mailserver.queue.retry import next_attempt_at
from mailserver.queue.routing import Route, RoutingError, host_addresses, route_domain
from mailserver.queue.smtpclient import Reply, SmtpClient, SmtpClientError, prepare_data, xtext
from mailserver.queue.store import ClaimedRecipient
from mailserver.store import submissions as submission_status

log = logging.getLogger(__name__)

__all__ = ["QueueWorker", "Outcome", "DELIVERED", "TEMPORARY", "PERMANENT"]

DELIVERED = "delivered"
TEMPORARY = "temporary"
STOP_GRACE = 10.0  # seconds running deliveries get to finish at stop
PERMANENT = "permanent"


@dataclass(frozen=True, slots=True)
class Outcome:
    rcpt: ClaimedRecipient
    kind: str  # delivered | temporary | permanent
    status: str  # enhanced status code
    diagnostic: str  # remote reply or local reason
    remote_mta: str = ""
    remote_dsn: bool = False  # the remote took over DSN duty (RFC 3461 §4.1 "relayed" not needed)
    forwards: tuple[str, ...] = ()


def _reply_outcome(rcpt: ClaimedRecipient, reply: Reply, host: str) -> Outcome:
    kind = DELIVERED if reply.ok else PERMANENT if reply.permanent else TEMPORARY
    return Outcome(rcpt, kind, reply.status if not reply.ok else "2.0.0", str(reply), host)


def _no_verify_context() -> ssl.SSLContext:
    # RFC 7435 opportunistic security: encrypt when offered, do not authenticate
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


class QueueWorker:
    """The delivery loop of one process (see the module docstring)."""

    def __init__(self, *, db, blobs, directory, deliverer, resolver: Resolver,
                 config: QueueConfig, hostname: str, clock: Callable[[], float] = time.time,
                 rng: random.Random | None = None, owner: str | None = None,
                 tls_context: ssl.SSLContext | None = None,
                 verify_context: ssl.SSLContext | None = None,
                 mta_sts: MtaSts | None = None) -> None:
        self.db = db
        self.blobs = blobs
        self.directory = directory
        self.deliverer = deliverer
        self.resolver = resolver
        self.config = config
        self.hostname = hostname
        self.helo_name = config.helo_name or hostname
        self.clock = clock
        self.rng = rng or random.Random()
        self.owner = owner or f"{socket.gethostname()[:30]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.tls_context = tls_context or _no_verify_context()
        # PKIX validation where a policy demands it (MTA-STS enforce)
        self.verify_context = verify_context or ssl.create_default_context()
        self.mta_sts = mta_sts
        self._connections = asyncio.Semaphore(config.workers)
        self._busy: set[str] = set()  # domains with a delivery task running
        self._held: set[int] = set()  # recipient ids this worker holds a lease on
        self._tasks: set[asyncio.Task] = set()
        self._wakeup = asyncio.Event()
        self._stopping = False
        self.stop_grace = STOP_GRACE
        self._local_domains: tuple[float, frozenset[str]] = (0.0, frozenset())
        self._to_commit: list[tuple[object, asyncio.Future]] = []
        self._committer: asyncio.Task | None = None
        self.stats = {"delivered": 0, "deferred": 0, "bounced": 0, "connections": 0}

    def now(self) -> int:
        return int(self.clock())

    # -- the loop ---------------------------------------------------------------------------

    def wake(self) -> None:
        """Look for due recipients now (an in-process enqueue calls this)."""
        self._wakeup.set()

    async def run(self) -> None:
        """Deliver until ``stop()``; never raises (errors are logged and retried)."""
        renewer = asyncio.create_task(self._renew_leases(), name="queue-lease-renewal")
        try:
            while not self._stopping:
                claimed = 0
                if len(self._tasks) < self.config.workers:
                    try:
                        claimed = await self._claim_and_spawn()
                    except Exception:
                        log.exception("queue claim failed")
                if self._stopping:
                    break
                if claimed and len(self._tasks) < self.config.workers:
                    continue
                self._wakeup.clear()
                waiters = [asyncio.ensure_future(self._wakeup.wait())]
                done, _ = await asyncio.wait([*waiters, *self._tasks],
                                             timeout=self.config.poll_interval,
                                             return_when=asyncio.FIRST_COMPLETED)
                for w in waiters:
                    w.cancel()
        finally:
            await self._drain()
            renewer.cancel()
            await asyncio.gather(renewer, return_exceptions=True)

    async def _drain(self) -> None:
        """At stop: let running deliveries finish for ``STOP_GRACE`` seconds, then cancel the
        rest and give their recipients back at once (rather than when the lease expires)."""
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=self.stop_grace)
        if not self._tasks:
            return
        for task in list(self._tasks):
            task.cancel()
        leftover = sorted(self._held)
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._committer is not None:  # outcomes already handed over get committed
            await asyncio.gather(self._committer, return_exceptions=True)
        try:
            async with self.db.write() as conn:
                await store.release_lease(conn, leftover, self.owner)
        except Exception:
            log.exception("queue: releasing %d leases at stop failed (they expire)",
                          len(leftover))

    async def stop(self) -> None:
        self._stopping = True
        self._wakeup.set()

    async def run_until_idle(self) -> int:
        """Claim and deliver until nothing is due at ``clock()`` (tests, benchmarks); returns
        how many recipients were handled."""
        total = 0
        while True:
            n = await self._claim_and_spawn() if len(self._tasks) < self.config.workers else 0
            total += n
            if not self._tasks and n == 0:
                return total
            if self._tasks and (n == 0 or len(self._tasks) >= self.config.workers):
                await asyncio.wait(list(self._tasks), return_when=asyncio.FIRST_COMPLETED)

    async def _claim_and_spawn(self) -> int:
        now = self.now()
        async with self.db.write() as conn:
            claimed = await store.claim(conn, owner=self.owner, now=now,
                                        lease_seconds=int(self.config.lease_time),
                                        limit=self.config.batch_size,
                                        exclude_domains=sorted(self._busy))
        if not claimed:
            return 0
        by_domain: dict[str, list[ClaimedRecipient]] = defaultdict(list)
        for c in claimed:
            by_domain[c.domain].append(c)
            self._held.add(c.id)
        for domain, rcpts in by_domain.items():
            self._busy.add(domain)
            task = asyncio.create_task(self._domain_task(domain, rcpts), name=f"queue:{domain}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return len(claimed)

    async def _renew_leases(self) -> None:
        interval = max(1.0, self.config.lease_time / 3)
        while True:
            await asyncio.sleep(interval)
            if not self._held:
                continue
            try:
                async with self.db.write() as conn:
                    await store.renew(conn, sorted(self._held), self.owner,
                                      self.now() + int(self.config.lease_time))
            except Exception:
                log.exception("queue lease renewal failed")

    async def _domain_task(self, domain: str, rcpts: list[ClaimedRecipient]) -> None:
        try:
            try:
                if await self._is_local(domain):
                    outcomes = await self._deliver_local(rcpts)
                else:
                    async with self._connections:
                        outcomes = await self._deliver_remote(domain, rcpts)
            except Exception as e:  # a bug or a store failure: retry later, never crash
                log.exception("queue delivery to %s failed", domain)
                outcomes = [Outcome(r, TEMPORARY, "4.3.0", f"local error: {e!r}") for r in rcpts]
            try:
                await self._record(outcomes)
            except Exception:
                # the leases expire and another attempt happens; nothing is lost
                log.exception("queue: recording outcomes for %s failed", domain)
        finally:
            self._busy.discard(domain)
            for r in rcpts:
                self._held.discard(r.id)
            self._wakeup.set()

    async def _is_local(self, domain: str) -> bool:
        """Hosted here? The list of hosted domains is re-read at most once a minute."""
        now = time.monotonic()
        expires, domains = self._local_domains
        if expires <= now:
            domains = frozenset(d.name for d in await self.directory.list_domains())
            self._local_domains = (now + 60.0, domains)
        return domain in domains

    # -- local delivery ---------------------------------------------------------------------

    async def _deliver_local(self, rcpts: list[ClaimedRecipient]) -> list[Outcome]:
        outcomes: list[Outcome] = []
        for msg_id, group in _by_message(rcpts):
            raw = await self.blobs.get(group[0].message.blob_id)
            result = await self.deliverer.deliver(raw, [r.recipient for r in group])
            forwards = result.forwards
            for r in group:
                o = result[r.recipient]
                if o.ok:
                    outcomes.append(Outcome(r, DELIVERED, "2.0.0", "delivered to mailbox",
                                            self.hostname, forwards=forwards))
                    forwards = ()  # queued once per message
                elif o.permanent:
                    status = "5.1.1" if o.status == "unknown" else "5.2.2"
                    text = ("550 5.1.1 no such user" if status == "5.1.1"
                            else "552 5.2.2 mailbox full")
                    outcomes.append(Outcome(r, PERMANENT, status, text, self.hostname))
                else:
                    status = "4.2.2" if o.status == "quota_temp" else "4.3.0"
                    outcomes.append(Outcome(r, TEMPORARY, status,
                                            f"451 {status} local delivery deferred",
                                            self.hostname))
        return outcomes

    # -- remote delivery --------------------------------------------------------------------

    async def _routes(self, domain: str) -> tuple[list[Route], int]:
        if self.config.relay_host:
            host, _, port = self.config.relay_host.rpartition(":")
            if not host or not port.isdigit():
                host, port = self.config.relay_host, "25"
            return [Route(host.strip("[]"), 0)], int(port)
        return await route_domain(self.resolver, domain, self.rng), self.config.port

    async def _deliver_remote(self, domain: str, rcpts: list[ClaimedRecipient]) -> list[Outcome]:
        final: dict[int, Outcome] = {}
        last: dict[int, Outcome] = {}
        pending = list(rcpts)

        def fail_all(kind: str, status: str, text: str, host: str = "") -> None:
            for r in pending:
                last[r.id] = Outcome(r, kind, status, text, host)

        try:
            routes, port = await self._routes(domain)
        except RoutingError as e:
            kind = PERMANENT if e.permanent else TEMPORARY
            return [Outcome(r, kind, e.status, str(e)) for r in rcpts]
        enforce = False
        if self.mta_sts is not None and not self.config.relay_host:
            try:
                policy = await self.mta_sts.policy(domain)
            except Exception:  # a policy we cannot read is no policy (RFC 8461 §5.1)
                log.exception("MTA-STS lookup for %s failed", domain)
                policy = None
            if policy is not None and policy.mode != "none":
                allowed = [r for r in routes if policy.allows(r.host)]
                if policy.enforce:
                    enforce = True
                    if not allowed:
                        return [Outcome(r, TEMPORARY, "4.7.0",
                                        f"MTA-STS: no MX of {domain} matches its policy")
                                for r in rcpts]
                    routes = allowed
                elif len(allowed) != len(routes):
                    log.info("MTA-STS (testing) %s: MX outside the policy", domain)
        fail_all(TEMPORARY, "4.4.4", f"no usable mail host for {domain}")
        raws: dict[int, bytes] = {}
        for route in routes:
            if not pending:
                break
            dane = await self._dane_policy(route, port)
            if dane is not None and dane.mode == danemod.FAIL:
                log.info("queue: DANE %s: %s", route.host, dane.reason)
                fail_all(TEMPORARY, "4.7.5", f"DANE: {dane.reason}", route.host)
                continue
            must_tls = enforce or (dane is not None and dane.requires_tls)
            try:
                addresses = await host_addresses(self.resolver, route)
            except DnsTempError as e:
                fail_all(TEMPORARY, "4.4.3", f"address lookup for {route.host}: {e}")
                continue
            if not addresses:
                fail_all(TEMPORARY, "4.4.4", f"MX host {route.host} has no address")
                continue
            for address in addresses:
                if not pending:
                    break
                for use_tls in ((True,) if must_tls else (True, False)):
                    try:
                        retry_clear = await self._session(route, address, port, pending, final,
                                                          last, raws, use_tls, enforce, dane)
                    except SmtpClientError as e:
                        fail_all(TEMPORARY, "4.4.1", str(e), route.host)
                        retry_clear = False
                    pending = [r for r in pending if r.id not in final]
                    if not retry_clear or not pending:
                        break
        for r in pending:
            final[r.id] = last[r.id]
        return [final[r.id] for r in rcpts]

    async def _dane_policy(self, route: Route, port: int) -> danemod.DanePolicy | None:
        """The host's DANE policy, or None when DANE is off (config, smarthost, literal)."""
        if not self.config.dane or self.config.relay_host or route.literal is not None \
                or not getattr(self.resolver, "dnssec", False):
            return None
        return await danemod.tlsa_policy(self.resolver, route.host, port,
                                         mx_secure=route.secure)

    async def _session(self, route: Route, address: str, port: int,
                       pending: list[ClaimedRecipient], final: dict[int, Outcome],
                       last: dict[int, Outcome], raws: dict[int, bytes], use_tls: bool,
                       verified: bool = False, dane: danemod.DanePolicy | None = None) -> bool:
        """One connection to ``address``; fills ``final`` for recipients done with, ``last``
        for those to try elsewhere. Returns True when an opportunistic TLS handshake failed
        (try again in clear text). ``verified``: TLS with a valid certificate for the MX name
        is required (MTA-STS enforce), else the host is skipped. ``dane``: the host's DANE
        policy; when it requires TLS it replaces the MTA-STS certificate check."""
        host = route.host
        if dane is not None and dane.requires_tls:
            verified = False  # RFC 8461 §2: TLSA records take precedence over MTA-STS
            use_tls = True
            label = "DANE: "
        else:
            dane = None
            label = "MTA-STS: " if verified else ""
        must_tls = verified or dane is not None
        client = await SmtpClient.connect(address, port,
                                          connect_timeout=self.config.connect_timeout,
                                          timeout=self.config.command_timeout)
        self.stats["connections"] += 1

        def host_level(reply: Reply, what: str) -> None:
            # a host that refuses the session: the next host may not (a 5xx here is not
            # about the recipients), so it stays temporary
            status = reply.status if reply.transient else "4.4.0"
            for r in pending:
                if r.id not in final:
                    last[r.id] = Outcome(r, TEMPORARY, status, f"{what}: {reply}", host)

        try:
            greeting = client.greeting
            assert greeting is not None
            if greeting.code != 220:
                host_level(greeting, "greeting")  # RFC 5321 §3.1: try the next host
                return False
            ehlo = await client.hello(self.helo_name)
            if not ehlo.ok:
                host_level(ehlo, "EHLO")
                return False
            if must_tls and not client.supports("STARTTLS"):
                for r in pending:  # RFC 8461 §5, RFC 7672 §2.2: TLS or not this host
                    last[r.id] = Outcome(r, TEMPORARY, "4.7.5",
                                         f"{label}{host} offers no STARTTLS", host)
                return False
            if use_tls and client.supports("STARTTLS"):
                try:
                    reply = await client.starttls(
                        self.verify_context if verified else self.tls_context, host)
                except SmtpClientError as e:
                    log.info("queue: STARTTLS with %s (%s) failed: %s", host, address, e)
                    client.abort()
                    for r in pending:
                        last[r.id] = Outcome(r, TEMPORARY, "4.7.5", f"{label}TLS: {e}", host)
                    return not must_tls
                if must_tls and reply.code != 220:
                    host_level(reply, f"STARTTLS ({label.rstrip(': ') or 'required'})")
                    return False
                if dane is not None and dane.mode == danemod.DANE:
                    problem = danemod.verify_chain(
                        dane, danemod.peer_chain(client.writer.get_extra_info("ssl_object")),
                        names=(host,))  # validity against the real time, not self.clock
                    if problem is not None:
                        log.warning("queue: DANE authentication of %s (%s) failed: %s",
                                    host, address, problem)
                        for r in pending:
                            last[r.id] = Outcome(r, TEMPORARY, "4.7.5",
                                                 f"DANE: {host}: {problem}", host)
                        return False
                    verified = True  # authenticated: good enough for REQUIRETLS
                if reply.code == 220:
                    ehlo = await client.hello(self.helo_name)
                    if not ehlo.ok:
                        host_level(ehlo, "EHLO after STARTTLS")
                        return False
            if self.config.relay_host and self.config.relay_username:
                if not client.tls:
                    for r in pending:
                        last[r.id] = Outcome(r, TEMPORARY, "4.7.10",
                                             "relay offers no TLS: AUTH not sent", host)
                    return False
                reply = await client.auth_plain(self.config.relay_username,
                                                self.config.relay_password)
                if reply.code != 235:
                    host_level(reply, "AUTH")
                    return False
            for msg_id, group in _by_message([r for r in pending if r.id not in final]):
                await self._transaction(client, host, group, final, last, raws, verified)
            await client.quit()
            client = None  # type: ignore[assignment]
            return False
        finally:
            if client is not None:
                client.abort()

    async def _transaction(self, client: SmtpClient, host: str, group: list[ClaimedRecipient],
                           final: dict[int, Outcome], last: dict[int, Outcome],
                           raws: dict[int, bytes], verified: bool = False) -> None:
        msg = group[0].message
        if msg.requiretls and not (verified and client.tls and client.supports("REQUIRETLS")):
            # RFC 8689 §4.2.1: only over TLS validated by MTA-STS or DANE to a server
            # announcing REQUIRETLS; another MX may qualify, bounce if none does
            for r in group:
                last[r.id] = Outcome(r, PERMANENT, "5.7.30",
                                     f"REQUIRETLS: no validated TLS with REQUIRETLS at {host}",
                                     host)
            return
        raw = raws.get(msg.id)
        if raw is None:
            raw = raws[msg.id] = await self.blobs.get(msg.blob_id)
        smtputf8 = msg.smtputf8
        if smtputf8 and not client.supports("SMTPUTF8"):
            if _needs_smtputf8(msg.sender, group, raw):
                for r in group:  # RFC 6531 §3.2: envelope and headers cannot be downgraded
                    final[r.id] = Outcome(r, PERMANENT, "5.6.7",
                                          f"{host} does not support SMTPUTF8", host)
                return
            smtputf8 = False  # all ASCII after all: send it as a plain message
        eight_bit = msg.body in ("8BITMIME", "BINARYMIME") or has_8bit(raw)
        params: list[str] = []
        if eight_bit and not client.supports("8BITMIME"):
            try:
                raw = downgrade_8bit(raw)  # RFC 6152 §3: convert, never send 8-bit to 7-bit
            except DowngradeError as e:
                for r in group:
                    final[r.id] = Outcome(r, PERMANENT, "5.6.3", str(e), host)
                return
            eight_bit = False
        if client.supports("SIZE"):
            params.append(f"SIZE={len(raw)}")
        if eight_bit:
            params.append("BODY=8BITMIME")
        if smtputf8:
            params.append("SMTPUTF8")
        dsn = client.supports("DSN")
        if dsn:
            if msg.ret:
                params.append(f"RET={msg.ret}")
            if msg.envid:
                params.append(f"ENVID={xtext(msg.envid)}")
        if msg.requiretls:
            params.append("REQUIRETLS")
        rcpt_args = []
        for r in group:
            p: list[str] = []
            if dsn:
                if r.notify:
                    p.append("NOTIFY=" + ",".join(sorted(r.notify)))
                kind, _, addr = (r.orcpt or f"rfc822;{r.recipient}").partition(";")
                p.append(f"ORCPT={kind or 'rfc822'};{xtext(addr)}")
            rcpt_args.append((r.recipient, p))
        mail, rcpt_replies, data_reply = await client.send(msg.sender, params, rcpt_args,
                                                           prepare_data(raw))
        if not mail.ok:
            for r in group:
                if mail.permanent:
                    final[r.id] = _reply_outcome(r, mail, host)
                else:
                    last[r.id] = _reply_outcome(r, mail, host)
            await client.rset()
            return
        accepted = []
        for r, reply in zip(group, rcpt_replies):
            if reply.ok:
                accepted.append(r)
            else:  # a 4xx to RCPT is deferred as is (greylisting wants this host later)
                final[r.id] = _reply_outcome(r, reply, host)
        if data_reply is None:
            await client.rset()
            return
        for r in accepted:
            o = _reply_outcome(r, data_reply, host)
            if data_reply.transient:
                last[r.id] = o
            else:
                if o.kind == DELIVERED and dsn:
                    o = Outcome(r, DELIVERED, o.status, o.diagnostic, host, remote_dsn=True)
                final[r.id] = o

    # -- recording outcomes -----------------------------------------------------------------

    async def _record(self, outcomes: Sequence[Outcome]) -> None:
        """Record outcomes (and queue their DSNs); returns once committed.

        Group commit: the outcomes of every domain task that finishes while a commit runs go
        into the next transaction together (one fsync for many connections' results)."""
        prepared = await self._prepare(outcomes)
        future = asyncio.get_running_loop().create_future()
        self._to_commit.append((prepared, future))
        if self._committer is None or self._committer.done():
            self._committer = asyncio.create_task(self._commit_loop(), name="queue-record")
        await future

    async def _commit_loop(self) -> None:
        while self._to_commit:
            batch, self._to_commit = self._to_commit, []
            try:
                async with self.db.write() as conn:
                    for prepared, _future in batch:
                        await self._apply(conn, prepared)
            except Exception as e:
                for _prepared, future in batch:
                    if not future.done():
                        future.set_exception(e)
            else:
                for _prepared, future in batch:
                    if not future.done():
                        future.set_result(None)

    async def _prepare(self, outcomes: Sequence[Outcome]):
        """What to write for ``outcomes``: the row changes, and the DSNs (their blobs are made
        durable here, before the transaction that queues them)."""
        now = self.now()
        cfg = self.config
        plan: list[tuple[Outcome, str, int | None, bool]] = []  # (outcome, step, next, delay)
        reports: dict[tuple[int, str], list[tuple[Outcome, dsnmod.DsnEntry]]] = defaultdict(list)
        for o in outcomes:
            r = o.rcpt
            msg = r.message
            age = now - r.created_at
            log.info("queue delivery %s", o.kind, extra={
                "queue_id": msg.id, "recipient": r.recipient, "outcome": o.kind,
                "status": o.status, "remote": o.remote_mta, "attempt": r.attempts + 1,
                "reply": o.diagnostic[:200]})
            if o.kind == DELIVERED:
                plan.append((o, "finish", None, False))
                self.stats["delivered"] += 1
                action = dsnmod.DELIVERED if not o.remote_mta or o.remote_mta == self.hostname \
                    else dsnmod.RELAYED
                if not o.remote_dsn and self._wants(msg, r.notify, action):
                    reports[(msg.id, action)].append((o, self._entry(o, action, now)))
            elif o.kind == PERMANENT or age >= cfg.max_age:
                plan.append((o, "finish", None, False))
                self.stats["bounced"] += 1
                if self._wants(msg, r.notify, dsnmod.FAILED):
                    reports[(msg.id, dsnmod.FAILED)].append(
                        (o, self._entry(o, dsnmod.FAILED, now)))
            else:
                nxt = next_attempt_at(now, r.attempts + 1, cfg.retry_schedule, self.rng)
                nxt = min(nxt, r.created_at + int(cfg.max_age)) if nxt > now else nxt
                delay = bool(cfg.delay_dsn_after) and age >= cfg.delay_dsn_after \
                    and not r.delay_notified \
                    and self._wants(msg, r.notify, dsnmod.DELAYED)
                plan.append((o, "defer", max(nxt, now + 1), delay))
                self.stats["deferred"] += 1
                if delay:
                    reports[(msg.id, dsnmod.DELAYED)].append(
                        (o, self._entry(o, dsnmod.DELAYED, now,
                                        until=r.created_at + int(cfg.max_age))))
        dsn_blobs: list[tuple[list[int], str, int, str]] = []
        originals: dict[str, bytes] = {}
        for (msg_id, action), items in reports.items():
            msg = items[0][0].rcpt.message
            if msg.blob_id not in originals:
                try:
                    originals[msg.blob_id] = await self.blobs.get(msg.blob_id)
                except BlobNotFound:  # a damaged store must not block the report
                    originals[msg.blob_id] = b"X-Note: message content not available\r\n"
            raw = dsnmod.build_dsn(reporting_mta=self.hostname, sender=msg.sender,
                                   original=originals[msg.blob_id],
                                   entries=[e for _o, e in items], ret=msg.ret,
                                   envid=msg.envid, arrival_date=msg.created_at, now=now)
            blob_id = await self.blobs.put(raw)
            dsn_blobs.append(([o.rcpt.id for o, _e in items], blob_id, len(raw), msg.sender))
        return now, plan, dsn_blobs

    async def _apply(self, conn, prepared) -> None:
        now, plan, dsn_blobs = prepared
        finishes = [o for o, step, _n, _d in plan if step == "finish"]
        done = await store.finish_many(conn, [o.rcpt for o in finishes], now)
        # EmailSubmission deliveryStatus: the final answer, before the queue row is gone
        await submission_status.record_final_outcomes(
            conn, [o for o in finishes if o.rcpt.id in done])
        for o in finishes:
            forwards = [a for a in o.forwards if store.domain_of(a)]
            if o.rcpt.id in done and forwards:
                m = o.rcpt.message
                await store.enqueue(conn, blob_id=m.blob_id, size=m.size, sender=m.sender,
                                    recipients=forwards, now=now, ret=m.ret,
                                    envid=m.envid, body=m.body, smtputf8=m.smtputf8)
        for o, step, nxt, delay in plan:
            if step == "defer":
                assert nxt is not None
                if await store.defer(conn, o.rcpt, now=now, next_attempt_at=nxt,
                                     status=o.status, error=o.diagnostic,
                                     delay_notified=True if delay else None):
                    done.add(o.rcpt.id)
            if o.rcpt.id not in done:
                log.warning("queue: lease on recipient %s lost before recording %s",
                            o.rcpt.id, o.kind)
        for ids, blob_id, size, sender in dsn_blobs:
            if all(i in done for i in ids):  # else the lease holder reports it
                await store.enqueue(conn, blob_id=blob_id, size=size, sender="",
                                    recipients=[sender], now=now, is_dsn=True)
        if dsn_blobs:
            self._wakeup.set()

    def _wants(self, msg, notify, action: str) -> bool:
        # a sender without a domain cannot be queued to (and must not fail the batch)
        return dsnmod.wants_dsn(msg.sender, msg.is_dsn, notify, action) \
            and bool(store.domain_of(msg.sender))

    def _entry(self, o: Outcome, action: str, now: int, until: int | None = None
               ) -> dsnmod.DsnEntry:
        status = o.status
        if action == dsnmod.FAILED and status.startswith("2"):
            status = "5.0.0"
        if action in (dsnmod.DELIVERED, dsnmod.RELAYED):
            status = "2.0.0"
        return dsnmod.DsnEntry(recipient=o.rcpt.recipient, action=action, status=status,
                               diagnostic=o.diagnostic, remote_mta=o.remote_mta,
                               orcpt=o.rcpt.orcpt, last_attempt_at=now, will_retry_until=until)


def _needs_smtputf8(sender: str, group: Sequence[ClaimedRecipient], raw: bytes) -> bool:
    end = raw.find(b"\r\n\r\n")
    return not (sender.isascii() and all(r.recipient.isascii() for r in group)
                and raw[:end if end >= 0 else len(raw)].isascii())


def _by_message(rcpts: Sequence[ClaimedRecipient]) -> list[tuple[int, list[ClaimedRecipient]]]:
    groups: dict[int, list[ClaimedRecipient]] = {}
    for r in rcpts:
        groups.setdefault(r.message.id, []).append(r)
    return list(groups.items())
