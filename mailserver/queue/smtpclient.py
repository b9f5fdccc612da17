"""A small async SMTP client for the outbound queue (RFC 5321, with RFC 2920 PIPELINING).

Decision: our own client rather than aiosmtplib. The queue needs one transaction per message
with the per-recipient replies, MAIL/RCPT/DATA sent as one pipelined write (the round trips are
the cost on a connection that carries many messages), DSN/SMTPUTF8/REQUIRETLS parameters as
given, and explicit control of when STARTTLS happens; that is ~250 lines here, and leaves no
dependency to track.

Every read has a timeout; a reply line longer than ``MAX_LINE`` or a malformed reply is a
``ProtocolError`` (the peer is treated like an unreachable host: temporary failure).
"""

from __future__ import annotations

import asyncio
import base64
import re
import ssl
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Reply", "SmtpClient", "SmtpClientError", "ProtocolError", "prepare_data"]

MAX_LINE = 4096
_ENHANCED = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})(?:\s|$)")


class SmtpClientError(Exception):
    """Connection-level failure (network, timeout, protocol): try another host or later."""


class ProtocolError(SmtpClientError):
    pass


@dataclass(frozen=True, slots=True)
class Reply:
    code: int
    lines: tuple[str, ...]

    @property
    def text(self) -> str:
        return " ".join(self.lines)

    @property
    def status(self) -> str:
        """The enhanced status code (RFC 3463), or one derived from the basic code."""
        if self.lines:
            m = _ENHANCED.match(self.lines[0])
            if m and m.group(1) == str(self.code)[0]:
                return f"{m.group(1)}.{m.group(2)}.{m.group(3)}"
        return f"{self.code // 100}.0.0"

    @property
    def ok(self) -> bool:
        return 200 <= self.code < 400

    @property
    def transient(self) -> bool:
        return 400 <= self.code < 500

    @property
    def permanent(self) -> bool:
        return self.code >= 500

    def __str__(self) -> str:
        return f"{self.code} {self.text}".strip()


def prepare_data(raw: bytes) -> bytes:
    """The DATA payload: CRLF line endings, dot-stuffed (RFC 5321 §4.5.2), ``.`` terminator."""
    if raw.count(b"\n") != raw.count(b"\r\n"):
        raw = re.sub(rb"\r?\n", b"\r\n", raw)
    if not raw.endswith(b"\r\n"):
        raw += b"\r\n"
    stuffed = raw.replace(b"\r\n.", b"\r\n..")
    if stuffed.startswith(b"."):
        stuffed = b"." + stuffed
    return stuffed + b".\r\n"


def xtext(value: str) -> str:
    """RFC 3461 §4 xtext encoding (for ENVID and ORCPT)."""
    return "".join(c if 33 <= ord(c) <= 126 and c not in "+=" else f"+{ord(c):02X}"
                   for c in value)


class SmtpClient:
    """One SMTP connection. ``connect`` → ``hello`` → (``starttls`` → ``hello``) → ``send`` … →
    ``quit``. Methods raise ``SmtpClientError`` on network or protocol failure; SMTP error
    replies are returned, not raised."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *,
                 timeout: float, peer: str) -> None:
        self.reader = reader
        self.writer = writer
        self.timeout = timeout
        self.peer = peer
        self.extensions: dict[str, str] = {}
        self.tls = False
        self.greeting: Reply | None = None

    @classmethod
    async def connect(cls, host: str, port: int, *, connect_timeout: float,
                      timeout: float) -> "SmtpClient":
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(host, port, limit=MAX_LINE * 4), connect_timeout)
        except (OSError, asyncio.TimeoutError) as e:
            raise SmtpClientError(f"connect to {host}:{port}: {e or 'timeout'}") from None
        client = cls(reader, writer, timeout=timeout, peer=f"{host}:{port}")
        try:
            client.greeting = await client.read_reply()
        except BaseException:
            client.abort()
            raise
        return client

    # -- low level --------------------------------------------------------------------------

    async def read_reply(self) -> Reply:
        lines: list[str] = []
        code = None
        while True:
            try:
                async with asyncio.timeout(self.timeout):  # cheaper than wait_for (no task)
                    line = await self.reader.readline()
            except TimeoutError:
                raise SmtpClientError(f"{self.peer}: timeout waiting for a reply") from None
            except (OSError, ValueError) as e:  # ValueError: line over the stream limit
                raise SmtpClientError(f"{self.peer}: {e}") from None
            if not line:
                raise SmtpClientError(f"{self.peer}: connection closed")
            if len(line) > MAX_LINE or not line.endswith(b"\n"):
                raise ProtocolError(f"{self.peer}: reply line too long or truncated")
            text = line.rstrip(b"\r\n").decode("utf-8", "replace")
            if len(text) < 3 or not text[:3].isdigit() or (len(text) > 3 and text[3] not in " -"):
                raise ProtocolError(f"{self.peer}: malformed reply {text[:80]!r}")
            c = int(text[:3])
            if code is not None and c != code:
                raise ProtocolError(f"{self.peer}: inconsistent multi-line reply")
            code = c
            lines.append(text[4:])
            if len(text) == 3 or text[3] == " ":
                return Reply(code, tuple(lines))
            if len(lines) > 100:
                raise ProtocolError(f"{self.peer}: reply with too many lines")

    async def _write(self, data: bytes) -> None:
        try:
            self.writer.write(data)
            async with asyncio.timeout(self.timeout):
                await self.writer.drain()
        except TimeoutError:
            raise SmtpClientError(f"{self.peer}: timeout writing") from None
        except OSError as e:
            raise SmtpClientError(f"{self.peer}: {e}") from None

    async def command(self, line: str) -> Reply:
        await self._write(line.encode("utf-8") + b"\r\n")
        return await self.read_reply()

    # -- session ----------------------------------------------------------------------------

    async def hello(self, name: str) -> Reply:
        """EHLO (falling back to HELO when EHLO is refused); fills ``extensions``."""
        reply = await self.command(f"EHLO {name}")
        self.extensions = {}
        if reply.code == 250:
            for line in reply.lines[1:]:
                keyword, _, params = line.partition(" ")
                self.extensions[keyword.upper()] = params
            return reply
        if reply.code in (500, 501, 502, 504, 550):
            return await self.command(f"HELO {name}")
        return reply

    def supports(self, ext: str) -> bool:
        return ext.upper() in self.extensions

    async def starttls(self, context: ssl.SSLContext, server_hostname: str | None) -> Reply:
        """STARTTLS (RFC 3207); after a 220 the TLS handshake runs and ``hello`` must be sent
        again. A failed handshake raises ``SmtpClientError``."""
        reply = await self.command("STARTTLS")
        if reply.code != 220:
            return reply
        try:
            await asyncio.wait_for(
                self.writer.start_tls(context, server_hostname=server_hostname),
                self.timeout)
        except (OSError, ssl.SSLError, asyncio.TimeoutError, ConnectionError) as e:
            raise SmtpClientError(f"{self.peer}: TLS handshake failed: {e}") from None
        self.tls = True
        self.extensions = {}
        return reply

    async def auth_plain(self, username: str, password: str) -> Reply:
        """AUTH PLAIN (RFC 4616) with the initial response."""
        token = base64.b64encode(f"\0{username}\0{password}".encode()).decode("ascii")
        return await self.command(f"AUTH PLAIN {token}")

    async def send(self, mail_from: str, mail_params: Sequence[str],
                   rcpts: Sequence[tuple[str, Sequence[str]]], data: bytes
                   ) -> tuple[Reply, list[Reply], Reply | None]:
        """One mail transaction. Returns (MAIL reply, one reply per RCPT, final DATA reply —
        None when DATA was not reached). ``data`` must come from ``prepare_data``. With
        PIPELINING, MAIL, every RCPT and DATA go in one write (RFC 2920 §3.1)."""
        mail = " ".join([f"MAIL FROM:<{mail_from}>", *mail_params])
        rcpt_lines = [" ".join([f"RCPT TO:<{addr}>", *params]) for addr, params in rcpts]
        if self.supports("PIPELINING"):
            batch = [mail, *rcpt_lines, "DATA"]
            await self._write(("\r\n".join(batch) + "\r\n").encode("utf-8"))
            mail_reply = await self.read_reply()
            rcpt_replies = [await self.read_reply() for _ in rcpt_lines]
            data_reply = await self.read_reply()
            if data_reply.code != 354:
                return mail_reply, rcpt_replies, None if not mail_reply.ok else data_reply
            if not mail_reply.ok or not any(r.ok for r in rcpt_replies):
                # RFC 2920 §3.1: a server that accepted DATA without a valid transaction gets
                # an empty message terminated at once (and must reject it)
                await self._write(b".\r\n")
                await self.read_reply()
                return mail_reply, rcpt_replies, None
        else:
            mail_reply = await self.command(mail)
            if not mail_reply.ok:
                return mail_reply, [], None
            rcpt_replies = [await self.command(line) for line in rcpt_lines]
            if not any(r.ok for r in rcpt_replies):
                return mail_reply, rcpt_replies, None
            data_reply = await self.command("DATA")
            if data_reply.code != 354:
                return mail_reply, rcpt_replies, data_reply
        await self._write(data)
        return mail_reply, rcpt_replies, await self.read_reply()

    async def rset(self) -> Reply:
        return await self.command("RSET")

    async def quit(self) -> None:
        try:
            await asyncio.wait_for(self.command("QUIT"), min(self.timeout, 5.0))
        except (SmtpClientError, asyncio.TimeoutError):
            pass
        finally:
            await self.close()

    def abort(self) -> None:
        self.writer.transport.abort()

    async def close(self) -> None:
        self.writer.close()
        try:
            await asyncio.wait_for(self.writer.wait_closed(), 5.0)
        except (OSError, asyncio.TimeoutError, ssl.SSLError):
            pass
