"""The session loop shared by the MX, submission and LMTP daemons.

``SmtpDaemon`` owns what one daemon shares (the ``App``, its listeners, the protocol
``ServerConfig``); ``SmtpSession`` runs one connection: read bytes → ``protocols.smtp`` →
on a ``Command`` event ask the daemon's policy (``on_ehlo``, ``on_mail``, ``on_rcpt``,
``on_message``, AUTH) → write the reply. The daemons in ``smtp.py`` and ``lmtp.py`` only
override the policy methods.

Decisions:

- Replies are flushed when the machine needs more input (RFC 2920 §3.2 batching), so a
  pipelining client gets one write per batch and replies stay in command order.
- Every read waits at most ``limits.command_timeout`` (RFC 5321 §4.5.3.2: at least 5 minutes
  for a command and for each data block); a timeout answers 421 4.4.2 and closes.
- ``limits.max_errors`` protocol errors end the session with 421 (counted by the machine).
- On shutdown a session that is between transactions is told 421 4.3.2 before its next read;
  one inside a transaction finishes it (or is cancelled after the group's grace period, losing
  only what was never acknowledged).
- Nothing is acknowledged before it is durable: ``on_message`` returns its reply only after
  the ingest path (or the queue) has committed.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import secrets
import time
from typing import Any

from mailserver.servers.base import Connection, ListenerGroup, listeners_from, server_tls_context
from protocols import sasl
from protocols.smtp import (
    CLOSED,
    NEED_DATA,
    PAUSED,
    AuthRequest,
    AuthResponse,
    Command,
    ConnectionLost,
    Ehlo,
    MailFrom,
    MessageComplete,
    ProtocolError,
    RcptTo,
    Reply,
    ServerConfig,
    ServerConnection,
    StartTls,
    State,
    Vrfy,
)

log = logging.getLogger("mailserver.smtp")

R_TIMEOUT = Reply(421, "4.4.2", "Timeout waiting for input, closing connection")
R_TEMP = Reply(451, "4.3.0", "Temporary local problem, try again later")
R_AUTH_FAILED = Reply(535, "5.7.8", "Authentication credentials invalid")  # RFC 4954 §6
R_AUTH_THROTTLED = Reply(454, "4.7.0", "Too many failed logins, try again later")
R_AUTH_SYNTAX = Reply(501, "5.5.2", "Malformed authentication message")
R_AUTH_TOO_MANY = Reply(421, "4.7.0", "Too many failed logins, closing connection")


def protocol_config(app: Any, *, lmtp: bool = False, **kw: Any) -> ServerConfig:
    """The machine's limits from ``[limits]``; extensions and AUTH from the caller."""
    limits = app.config.limits
    line = max(512, limits.max_line_length)
    return ServerConfig(
        hostname=app.config.server.effective_hostname(),
        mode="lmtp" if lmtp else "smtp",
        max_message_size=limits.max_message_size,
        max_recipients=limits.max_recipients,
        max_line_length=line,
        max_auth_line_length=max(line, 12288),
        # RFC 5321 §4.5.3.1.6 says 1000, but real mail often has longer lines; the configured
        # line limit is the hard one (longer lines get 550 5.6.0).
        max_text_line_length=max(1000, limits.max_line_length),
        max_errors=limits.max_errors,
        **kw)


class SmtpDaemon:
    """One SMTP-family daemon: listeners plus the policy of its sessions (override below)."""

    name = "smtp"
    protocol = "ESMTP"  # for Received: (RFC 3848 adds S/A/SA)

    def __init__(self, app: Any, section: Any, *, implicit_tls_ok: bool = True) -> None:
        self.app = app
        self.section = section
        self.hostname = app.config.server.effective_hostname()
        self.limits = app.config.limits
        self.tls_context = None
        tls_mode = getattr(section, "tls", "none")
        needs_tls = tls_mode != "none" or bool(getattr(section, "listen_tls", ()))
        if needs_tls:
            self.tls_context = server_tls_context(app.config.tls)
        self.tls_mode = tls_mode
        self.group = ListenerGroup(self.name, listeners_from(section), self._handle,
                                   tls_context=self.tls_context, limits=app.config.limits,
                                   refuse=self._refuse)
        self.listeners = self.group  # for mailserver.testing.daemons.DaemonEnv.address
        self.sessions: set[SmtpSession] = set()

    @property
    def starttls_offered(self) -> bool:
        """STARTTLS on the plain listeners: a certificate and ``tls`` other than "none"."""
        return self.tls_context is not None and self.tls_mode != "none"

    @property
    def bound(self) -> list:
        return self.group.bound

    async def start(self) -> "SmtpDaemon":
        await self.group.start()
        return self

    async def stop(self) -> None:
        # Sessions idle between transactions are told 421 now rather than after the grace
        # period; the others finish their transaction first (see the module docstring).
        self.group.stopping.set()
        for session in list(self.sessions):
            session.close_if_idle()
        await self.group.stop()

    # --- policy (override) -------------------------------------------------------------------

    def session_config(self, conn: Connection) -> ServerConfig:
        raise NotImplementedError

    async def on_ehlo(self, s: "SmtpSession", event: Ehlo) -> Reply | None:
        return None  # None = conn.accept()

    async def on_mail(self, s: "SmtpSession", event: MailFrom) -> Reply | None:
        return None

    async def on_rcpt(self, s: "SmtpSession", event: RcptTo) -> Reply | None:
        return None

    async def on_message(self, s: "SmtpSession", event: MessageComplete) -> bytes:
        """Store or queue the message; return ``s.sm.accept()`` / ``send(...)`` bytes."""
        raise NotImplementedError

    async def on_auth(self, s: "SmtpSession", creds: sasl.Credentials) -> Reply:
        return R_AUTH_FAILED

    # --- plumbing ------------------------------------------------------------------------------

    async def _refuse(self, conn: Connection, why: str) -> None:
        conn.write(f"421 4.7.0 {self.hostname} {why}, try again later\r\n".encode())
        await conn.drain()

    async def _handle(self, conn: Connection) -> None:
        session = SmtpSession(self, conn)
        self.sessions.add(session)
        try:
            await session.run()
        finally:
            self.sessions.discard(session)

    def received_header(self, s: "SmtpSession", recipients: tuple[RcptTo, ...]) -> bytes:
        """RFC 5321 §4.4 trace field; RFC 3848 protocol names; RFC 8314 §4.3 TLS comment."""
        proto = "LMTP" if self.protocol == "LMTP" else ("ESMTP" if s.sm.extended else "SMTP")
        if proto != "LMTP":
            if s.conn.tls:
                proto += "S"
            if s.user is not None:
                proto += "A"
        ip = s.conn.peer_ip
        origin = f"[{ip}]" if ip else "localhost"
        helo = (s.sm.helo_name or "unknown")[:255]
        tls = ""
        info = s.conn.tls_info
        if info is not None:
            tls = f"\r\n\t(using {info[0]} with cipher {info[1]})"
        who = f"\r\n\t(authenticated as {s.user})" if s.user is not None else ""
        rcpt = f"\r\n\tfor <{recipients[0].address}>" if len(recipients) == 1 else ""
        date = email.utils.formatdate(localtime=False, usegmt=True)
        text = (f"Received: from {helo} ({origin}){tls}{who}\r\n\tby {self.hostname} "
                f"(mailserver) with {proto} id {s.message_id}{rcpt};\r\n\t{date}\r\n")
        return text.encode("utf-8", "surrogateescape")


class SmtpSession:
    """One connection (see the module docstring)."""

    def __init__(self, daemon: SmtpDaemon, conn: Connection) -> None:
        self.daemon = daemon
        self.conn = conn
        self.id = secrets.token_hex(6)
        self.sm = ServerConnection(daemon.session_config(conn), tls_active=conn.tls)
        self.user: str | None = None  # login after a successful AUTH
        self.account: Any = None
        self.owned: set[str] | None = None  # submission: addresses of ``account`` (lazy)
        self.auth_failures = 0
        self.data: dict[str, Any] = {}  # per-transaction state of the daemon's policy
        self.messages = 0
        self._mech: Any = None
        self._mech_name = ""
        self._idle = False  # waiting for the next command between transactions

    @property
    def message_id(self) -> str:
        """The id of the current message in logs, ``Received:`` and the 250 reply."""
        return f"{self.id}.{self.messages}"

    @property
    def peer(self) -> str:
        return self.conn.peer_ip or "local"

    def log(self, level: int, msg: str, **extra: Any) -> None:
        extra.update(session=self.id, peer=self.peer, daemon=self.daemon.name)
        if self.user:
            extra["user"] = self.user
        log.log(level, "%s %s %s", self.daemon.name, self.id, msg, extra=extra)

    async def run(self) -> None:
        conn, sm = self.conn, self.sm
        timeout = self.daemon.limits.command_timeout
        conn.write(sm.greet(f"{self.daemon.hostname} {'LMTP' if sm.config.lmtp else 'ESMTP'} "
                            "ready"))
        self.log(logging.DEBUG, "connected", event="connect")
        try:
            while True:
                event = sm.next_event()
                if event is NEED_DATA:
                    conn.write(sm.data_to_send())
                    await conn.drain()
                    if conn.closing:
                        return
                    if conn.stopping.is_set() and sm.state in (State.CONNECTED, State.GREETED):
                        conn.write(sm.close())  # 421 4.3.2 shutting down
                        return
                    self._idle = sm.state in (State.CONNECTED, State.GREETED)
                    try:
                        data = await asyncio.wait_for(conn.read(), timeout)
                    except asyncio.TimeoutError:
                        conn.write(sm.close(R_TIMEOUT))
                        self.log(logging.INFO, "timeout", event="timeout")
                        return
                    finally:
                        self._idle = False
                    sm.receive_data(data)
                    conn.cork()  # the replies to this input leave together, at the next drain
                elif event is CLOSED:
                    conn.write(sm.data_to_send())
                    return
                elif event is PAUSED:  # pragma: no cover - STARTTLS is handled inline
                    raise AssertionError("paused outside STARTTLS")
                elif isinstance(event, Command):
                    if not await self._command(event):
                        return
                elif isinstance(event, ConnectionLost):
                    if event.during in ("data", "bdat", "chunking"):
                        self.log(logging.INFO, f"connection lost during {event.during}: "
                                 "nothing stored", event="lost")
                elif isinstance(event, ProtocolError):
                    self.log(logging.DEBUG, f"protocol error {event.reply.code} "
                             f"{event.reply.enhanced} on {event.command}", event="protocol_error")
        finally:
            await conn.drain()

    def close_if_idle(self) -> None:
        """Shutdown: a session waiting between transactions gets 421 and is closed."""
        if self._idle and not self.conn.closing:
            self.conn.write(self.sm.close())
            self.conn.writer.close()

    async def _command(self, event: Command) -> bool:
        """Answer one command; False ends the session."""
        conn, sm, d = self.conn, self.sm, self.daemon
        try:
            if isinstance(event, Ehlo):
                conn.write(self._answer(await d.on_ehlo(self, event)))
            elif isinstance(event, MailFrom):
                self.data = {}
                conn.write(self._answer(await d.on_mail(self, event)))
            elif isinstance(event, RcptTo):
                conn.write(self._answer(await d.on_rcpt(self, event)))
            elif isinstance(event, MessageComplete):
                self.messages += 1
                out = await d.on_message(self, event)
                self.data = {}
                conn.write(out)
            elif isinstance(event, StartTls):
                if conn.tls_context is None or conn.tls:
                    conn.write(sm.reject(454, "4.7.0", "TLS not available"))
                    return True
                conn.write(sm.accept())
                await conn.drain()
                try:
                    await conn.start_tls()
                except ConnectionError as e:
                    self.log(logging.INFO, f"TLS handshake failed: {e}", event="tls_failed")
                    return False
                sm.tls_started()
                self.user = None
                self.account = None
                self.owned = None
            elif isinstance(event, (AuthRequest, AuthResponse)):
                return await self._auth(event)
            elif isinstance(event, Vrfy):
                conn.write(sm.send(Reply(252, "2.1.5", "Cannot VRFY user")))
            else:  # pragma: no cover - every Command subclass is handled above
                conn.write(sm.reject(502, "5.5.1", "Command not implemented"))
        except asyncio.CancelledError:
            raise
        except Exception:
            self.log(logging.ERROR, f"error handling {type(event).__name__}",
                     event="internal_error", exc_info=True)
            if sm.awaiting_reply is not None:
                if isinstance(event, MessageComplete) and sm.config.lmtp:
                    conn.write(sm.send_lmtp_replies([R_TEMP] * len(event.recipients)))
                else:
                    conn.write(sm.send(R_TEMP))
        return True

    def _answer(self, reply: Reply | None) -> bytes:
        return self.sm.accept() if reply is None else self.sm.send(reply)

    # --- AUTH (RFC 4954) -----------------------------------------------------------------------

    async def _auth(self, event: AuthRequest | AuthResponse) -> bool:
        sm, conn = self.sm, self.conn
        try:
            if isinstance(event, AuthRequest):
                self._mech = sasl.server_mechanism(event.mechanism)
                self._mech_name = event.mechanism
                step = self._mech.step(event.initial_response)
            else:
                if self._mech is None:  # pragma: no cover - the machine sequences this
                    conn.write(sm.send(R_AUTH_SYNTAX))
                    return True
                step = self._mech.step(event.data)
        except sasl.SaslError:
            self._mech = None
            conn.write(sm.send(R_AUTH_SYNTAX))
            return True
        if isinstance(step, bytes):
            conn.write(sm.auth_challenge(step))
            return True
        self._mech = None
        reply = await self.daemon.on_auth(self, step)
        if reply.code == 235:
            self.log(logging.INFO, f"authenticated with {self._mech_name}", event="auth_ok")
            conn.write(sm.send(reply))
            return True
        self.auth_failures += 1
        self.log(logging.INFO, f"authentication failed ({reply.code})", event="auth_failed",
                 login=step.authcid[:256])
        if self.auth_failures >= self.daemon.limits.max_auth_failures:
            conn.write(sm.send(R_AUTH_TOO_MANY))
            return False
        conn.write(sm.send(reply))
        return True


class RateLimiter:
    """Sliding one-minute window of events per key (the MX's messages per client IP)."""

    def __init__(self, per_minute: int, clock: Any = time.monotonic,
                 max_keys: int = 100_000) -> None:
        self.per_minute = per_minute
        self.clock = clock
        self.max_keys = max_keys
        self._hits: dict[str, list[float]] = {}

    def allow(self, key: str) -> bool:
        """Count one event for ``key``; False when over the limit (then nothing is counted)."""
        if self.per_minute <= 0:
            return True
        now = self.clock()
        hits = self._hits.get(key)
        if hits is None:
            if len(self._hits) >= self.max_keys:
                self._expire(now)
            hits = self._hits[key] = []
        cutoff = now - 60.0
        i = 0
        while i < len(hits) and hits[i] <= cutoff:
            i += 1
        if i:
            del hits[:i]
        if len(hits) >= self.per_minute:
            return False
        hits.append(now)
        return True

    def _expire(self, now: float) -> None:
        cutoff = now - 60.0
        for key in [k for k, v in self._hits.items() if not v or v[-1] <= cutoff]:
            del self._hits[key]
        while len(self._hits) >= self.max_keys:  # still full: drop the oldest keys
            del self._hits[next(iter(self._hits))]
