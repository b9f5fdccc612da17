"""Fixtures for the IMAP daemon tests: a running daemon and a byte-exact raw client.

``imap`` starts the daemon on SQLite in a temp dir (most tests); tests that must hold on both
engines use ``database_url`` themselves. ``RawImap`` speaks IMAP over a real socket and
returns whole responses (literals inlined), so tests assert on exact wire bytes.
"""

from __future__ import annotations

import asyncio
import re
import ssl
from collections.abc import AsyncIterator

import pytest

from mailserver.testing.daemons import DOMAIN, PASSWORD, daemon_env

LITERAL_END = re.compile(rb"~?\{(\d+)\+?\}\r\n$")
TIMEOUT = 30.0


class RawImap:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.n = 0

    @classmethod
    async def connect(cls, address, tls: ssl.SSLContext | None = None) -> "RawImap":
        host, port = address
        reader, writer = await asyncio.open_connection(host, port, ssl=tls,
                                                       limit=16 * 1024 * 1024)
        return cls(reader, writer)

    async def response(self) -> bytes:
        """One whole response (a line, with any literals and the rest of the line)."""
        out = b""
        while True:
            line = await asyncio.wait_for(self.reader.readline(), TIMEOUT)
            if not line:
                raise ConnectionError(f"connection closed; got so far {out!r}")
            out += line
            m = LITERAL_END.search(line)
            if m is None:
                return out
            out += await asyncio.wait_for(self.reader.readexactly(int(m.group(1))), TIMEOUT)

    async def greeting(self) -> bytes:
        return await self.response()

    def send(self, data: bytes | str) -> None:
        if isinstance(data, str):
            data = data.encode()
        self.writer.write(data)

    def tag(self) -> str:
        self.n += 1
        return f"t{self.n}"

    async def until_tagged(self, tag: str) -> list[bytes]:
        lines = []
        while True:
            r = await self.response()
            lines.append(r)
            if r.startswith(tag.encode() + b" "):
                return lines

    async def cmd(self, text: str | bytes) -> list[bytes]:
        """Send ``tag text`` and return every response up to and including the tagged one."""
        tag = self.tag()
        if isinstance(text, str):
            text = text.encode()
        self.send(tag.encode() + b" " + text + b"\r\n")
        return await self.until_tagged(tag)

    async def ok(self, text: str | bytes) -> list[bytes]:
        lines = await self.cmd(text)
        assert lines[-1].split(b" ")[1] == b"OK", lines
        return lines

    async def login(self, user: str = "alice") -> None:
        await self.ok(f'LOGIN {user}@{DOMAIN} "{PASSWORD}"')

    async def close(self) -> None:
        self.writer.close()
        try:
            await asyncio.wait_for(self.writer.wait_closed(), 5)
        except Exception:
            pass


def tagged(lines: list[bytes]) -> bytes:
    return lines[-1]


def untagged(lines: list[bytes], word: bytes) -> list[bytes]:
    return [r for r in lines if r.startswith(b"* ") and word in r.split(b"\r\n")[0]]


async def wait_for(predicate, timeout: float = TIMEOUT, interval: float = 0.05):
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while True:
        result = await predicate()
        if result:
            return result
        if loop.time() > end:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(interval)


def message(subject: str = "Hello", body: str = "hello world", *, msgid: str | None = None,
            extra: str = "", sender: str = "bob@example.test") -> bytes:
    head = f"From: Bob <{sender}>\r\nTo: alice@{DOMAIN}\r\nSubject: {subject}\r\n" \
           f"Date: Mon, 23 Nov 2026 10:00:00 +0000\r\n"
    if msgid:
        head += f"Message-ID: <{msgid}>\r\n"
    return (head + extra + "\r\n" + body + "\r\n").encode()


@pytest.fixture
async def env(tmp_path) -> AsyncIterator[object]:
    async with daemon_env(tmp_path, None, overrides={"imap": {"tls": "starttls"}}) as e:
        await e.start("imap")
        yield e


@pytest.fixture
async def client(env) -> AsyncIterator[RawImap]:
    c = await RawImap.connect(env.address("imap"))
    await c.greeting()
    await c.login()
    c.n = 0  # tests count their tags from t1
    yield c
    await c.close()


async def deliver(env, raw: bytes, user: str = "alice", mailbox: str | None = None):
    result = await env.app.deliverer.deliver(raw, [f"{user}@{DOMAIN}"], mailbox=mailbox)
    assert result.all_delivered
    return result
