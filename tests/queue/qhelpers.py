"""Helpers of the queue tests: the DNS zone, scriptable SMTP sinks (the "remote" mail hosts),
an injectable clock and a ready-made single-node setup (``make_qenv``).

``Sink``: each listens on one loopback address (127.0.0.x, all on the same port, which the
worker is configured to use) and records every session and accepted message. Its answers come
from plain attributes the test sets: ``greeting``, ``extensions``, ``rcpt_reply(addr)``,
``mail_reply``, ``data_reply``; ``tls`` (an SSLContext) enables STARTTLS, ``auth`` requires
AUTH PLAIN; ``hang_on_data`` makes it stop answering once the message body arrived.
"""

from __future__ import annotations

import asyncio
import base64
import random
import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import select

from mailserver.servers.queue import make_worker
from mailserver.store import schema
from mailserver.testing.daemons import daemon_env
from mailserver.testing.dnsserver import KnotServer

ZONE = """
ok          MX 10 mx.ok
mx.ok       A 127.0.0.4
backup      MX 10 mx1.backup
backup      MX 20 mx2.backup
mx1.backup  A 127.0.0.2
mx2.backup  A 127.0.0.3
busy        MX 10 mx1.busy
busy        MX 20 mx2.busy
mx1.busy    A 127.0.0.7
mx2.busy    A 127.0.0.3
temp        MX 10 mx.temp
mx.temp     A 127.0.0.5
nullmx      MX 0 .
implicit    A 127.0.0.4
cname       MX 10 alias.cname
alias.cname CNAME mx.ok
plain       MX 10 mx.plain
mx.plain    A 127.0.0.6
tls         MX 10 mx.tls
mx.tls      A 127.0.0.8
*.bulk      MX 10 mx.ok
equal       MX 10 mxa.equal
equal       MX 10 mxb.equal
equal       MX 20 mxc.equal
mxa.equal   A 127.0.0.3
mxb.equal   A 127.0.0.4
mxb.equal   AAAA ::1
relay       A 127.0.0.8
sts         MX 10 mx.sts
sts         MX 20 other.sts
mx.sts      A 127.0.0.8
other.sts   A 127.0.0.3
_mta-sts.sts TXT "v=STSv1; id=20261123"
mta-sts.sts A 127.0.0.9
"""
ZONES = {"remote.test": ZONE}
SINK_HOSTS = ("127.0.0.3", "127.0.0.4", "127.0.0.5", "127.0.0.6", "127.0.0.7", "127.0.0.8",
              "127.0.0.9")


@dataclass
class Received:
    sink: str
    mail_from: str
    mail_params: list[str]
    rcpts: list[tuple[str, list[str]]]
    data: bytes
    tls: bool


@dataclass
class Sink:
    host: str
    port: int
    greeting: str = "220 sink ESMTP"
    extensions: list[str] = field(default_factory=lambda: [
        "PIPELINING", "8BITMIME", "SMTPUTF8", "SIZE 100000000", "ENHANCEDSTATUSCODES"])
    mail_reply: str = "250 2.1.0 ok"
    rcpt_reply: Callable[[str], str] = lambda addr: "250 2.1.5 ok"
    data_reply: str = "250 2.0.0 queued"
    tls: ssl.SSLContext | None = None
    hang_on_data: bool = False
    auth: tuple[str, str] | None = None  # (user, password): AUTH PLAIN required
    received: list[Received] = field(default_factory=list)
    sessions: int = 0
    data_seen: asyncio.Event = field(default_factory=asyncio.Event)
    _server: asyncio.AbstractServer | None = None
    _released: asyncio.Event = field(default_factory=asyncio.Event)

    async def start(self) -> "Sink":
        self._server = await asyncio.start_server(self._session, self.host, self.port)
        return self

    async def stop(self) -> None:
        self._released.set()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.sessions += 1
        tls = False

        async def send(line: str) -> None:
            writer.write(line.encode() + b"\r\n")
            await writer.drain()

        try:
            await send(self.greeting)
            if not self.greeting.startswith("220"):
                await reader.readline()
                await send("221 bye")
                return
            mail_from, mail_params, rcpts = "", [], []
            in_mail = authed = False
            while True:
                line = await reader.readline()
                if not line:
                    return
                cmd = line.decode("utf-8", "replace").rstrip("\r\n")
                verb = cmd.split(" ", 1)[0].upper()
                if verb in ("EHLO", "HELO"):
                    exts = list(self.extensions)
                    if self.tls is not None and not tls:
                        exts.append("STARTTLS")
                    if self.auth is not None and tls:
                        exts.append("AUTH PLAIN")
                    lines = ["sink", *exts]
                    for ln in lines[:-1]:
                        await send(f"250-{ln}")
                    await send(f"250 {lines[-1]}")
                elif verb == "STARTTLS" and self.tls is not None and not tls:
                    await send("220 2.0.0 go ahead")
                    await writer.start_tls(self.tls)
                    tls = True
                elif verb == "AUTH" and self.auth is not None and tls:
                    token = cmd.split(" ")[-1]
                    expected = f"\0{self.auth[0]}\0{self.auth[1]}".encode()
                    authed = base64.b64decode(token) == expected
                    await send("235 2.7.0 ok" if authed else "535 5.7.8 bad credentials")
                elif verb == "MAIL" and self.auth is not None and not authed:
                    await send("530 5.7.0 authentication required")
                elif verb == "MAIL":
                    head, _, rest = cmd[10:].partition(">")
                    mail_from, mail_params, rcpts = head.lstrip("<"), rest.split(), []
                    in_mail = self.mail_reply.startswith("2")
                    await send(self.mail_reply)
                elif verb == "RCPT" and not in_mail:
                    await send("503 5.5.1 need MAIL first")
                elif verb == "RCPT":
                    head, _, rest = cmd[8:].partition(">")
                    addr = head.lstrip("<")
                    reply = self.rcpt_reply(addr)
                    if reply.startswith("2"):
                        rcpts.append((addr, rest.split()))
                    await send(reply)
                elif verb == "DATA":
                    if not rcpts:
                        await send("554 5.5.1 no valid recipients")
                        continue
                    await send("354 go ahead")
                    chunks = []
                    while True:
                        chunk = await reader.readline()
                        if not chunk:
                            return
                        if chunk == b".\r\n":
                            break
                        chunks.append(chunk[1:] if chunk.startswith(b"..") else chunk)
                    data = b"".join(chunks)
                    if self.hang_on_data:
                        self.data_seen.set()
                        await self._released.wait()  # never answer: the client hangs
                        return
                    if self.data_reply.startswith("2"):
                        self.received.append(Received(self.host, mail_from, mail_params,
                                                      rcpts, data, tls))
                    self.data_seen.set()
                    await send(self.data_reply)
                    rcpts, in_mail = [], False
                elif verb == "RSET":
                    rcpts, in_mail = [], False
                    await send("250 2.0.0 ok")
                elif verb == "QUIT":
                    await send("221 2.0.0 bye")
                    return
                elif verb == "NOOP":
                    await send("250 2.0.0 ok")
                else:
                    await send("502 5.5.2 unknown command")
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError, OSError):
            pass
        finally:
            writer.close()

    def recipients(self) -> list[str]:
        return [addr for m in self.received for addr, _p in m.rcpts]


class FakeClock:
    """An injectable clock: epoch seconds that only move when the test says so."""

    def __init__(self, t: float = 1_800_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


class QueueEnv:
    def __init__(self, env, sink_port: int) -> None:
        self.env = env
        self.app = env.app
        self.sink_port = sink_port
        self.sinks: list[Sink] = []

    async def sink(self, host: str, **kw) -> Sink:
        s = await Sink(host, self.sink_port, **kw).start()
        self.sinks.append(s)
        return s

    def worker(self, clock=None, seed: int = 1, **kw):
        return make_worker(self.app, self.app.config.queue, clock=clock or FakeClock(),
                           rng=random.Random(seed), **kw)

    async def enqueue(self, raw: bytes, sender: str, recipients, now: int, **kw) -> int:
        from mailserver.queue import store

        blob_id = await self.app.blobs.put(raw)
        async with self.app.db.write() as conn:
            return await store.enqueue(conn, blob_id=blob_id, size=len(raw), sender=sender,
                                       recipients=recipients, now=now, **kw)

    async def queue_rows(self) -> list:
        async with self.app.db.read() as conn:
            return (await conn.execute(select(schema.queue_recipients)
                                       .order_by(schema.queue_recipients.c.id))).all()

    async def inbox(self, user: str) -> list[bytes]:
        """Raw messages in ``user``'s mailboxes (what local delivery stored)."""
        account_id = self.env.account_ids[user]
        async with self.app.db.read() as conn:
            blob_ids = (await conn.execute(
                select(schema.emails.c.blob_id).where(schema.emails.c.account_id == account_id)
                .order_by(schema.emails.c.id))).scalars().all()
        return [await self.app.blobs.get(b) for b in blob_ids]


@asynccontextmanager
async def make_qenv(tmp_path: Path, dns_server: KnotServer, sink_port: int,
                    url: str | None = None, queue: dict | None = None
                    ) -> AsyncIterator[QueueEnv]:
    overrides = {
        "dns": {"nameservers": [dns_server.host], "port": dns_server.port, "timeout": "3s"},
        "queue": {"port": sink_port, "connect_timeout": "5s", "command_timeout": "20s",
                  **(queue or {})},
    }
    async with daemon_env(tmp_path, url, overrides=overrides) as env:
        q = QueueEnv(env, sink_port)
        q.overrides = overrides
        try:
            yield q
        finally:
            for s in q.sinks:
                await s.stop()


def message(subject: str = "hello", frm: str = "alice@example.test",
            to: str = "someone@ok.remote.test", body: str = "Hello there.\r\n") -> bytes:
    return (f"From: {frm}\r\nTo: {to}\r\nSubject: {subject}\r\n"
            f"Message-ID: <{subject.replace(' ', '.')}@example.test>\r\n"
            f"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
            ).encode() + body.encode("utf-8")
