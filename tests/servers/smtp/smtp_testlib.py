"""Helpers of the SMTP/LMTP daemon tests: a raw byte client and store queries."""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

from sqlalchemy import func, select

from mailserver.store import schema

from mailserver.testing.tools import IN_CI, require_tool  # noqa: F401  (tests import them here)
PASSWORD = "correct horse battery staple"
TIMEOUT = 30.0





class RawClient:
    """Bytes to the server, replies back, without any client-side SMTP logic."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, address: Any, *, tls: ssl.SSLContext | None = None) -> "RawClient":
        if isinstance(address, str):
            r, w = await asyncio.open_unix_connection(address, limit=1 << 22)
        else:
            r, w = await asyncio.open_connection(*address, ssl=tls, limit=1 << 22)
        return cls(r, w)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def reply(self) -> tuple[int, str]:
        """One (possibly multi-line) reply: (code, text of the last line)."""
        lines = []
        while True:
            line = await asyncio.wait_for(self.reader.readline(), TIMEOUT)
            if not line:
                raise ConnectionError(f"closed after {lines!r}")
            lines.append(line)
            if line[3:4] != b"-":
                break
        return int(lines[-1][:3]), lines[-1][4:].decode("utf-8", "replace").strip()

    async def replies(self, n: int) -> list[tuple[int, str]]:
        return [await self.reply() for _ in range(n)]

    async def cmd(self, line: str | bytes) -> tuple[int, str]:
        await self.send((line.encode() if isinstance(line, str) else line) + b"\r\n")
        return await self.reply()

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except (ConnectionError, OSError, ssl.SSLError):
            pass


async def stored(env: Any, user: str) -> list[bytes]:
    """Raw messages stored for ``user`` (any mailbox), oldest first."""
    e = schema.emails
    async with env.app.db.read() as conn:
        blobs = (await conn.execute(select(e.c.blob_id).where(
            e.c.account_id == env.account_ids[user]).order_by(e.c.id))).scalars().all()
    return [await env.app.blobs.get(b) for b in blobs]


async def email_count(env: Any) -> int:
    async with env.app.db.read() as conn:
        return (await conn.execute(select(func.count()).select_from(schema.emails))).scalar_one()
