"""A raw POP3 line client over asyncio streams, for tests that need exact bytes."""

from __future__ import annotations

import asyncio
import ssl

from mailserver.testing.daemons import DaemonEnv


class LineClient:
    """Raw POP3 over asyncio streams: exact bytes in and out."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, env: DaemonEnv, *, tls: bool = False) -> "LineClient":
        host, port = env.address("pop3", tls=tls)
        ctx = env.client_tls() if tls else None
        reader, writer = await asyncio.open_connection(host, port, ssl=ctx, limit=1 << 24)
        client = cls(reader, writer)
        greeting = await client.line()
        assert greeting.startswith(b"+OK"), greeting
        return client

    async def line(self) -> bytes:
        data = await asyncio.wait_for(self.reader.readline(), 30)
        assert data.endswith(b"\r\n"), data
        return data

    async def multiline(self) -> bytes:
        """The body of a multi-line response, exactly as sent (stuffed), up to ".CRLF"."""
        data = await asyncio.wait_for(self.reader.readuntil(b"\r\n.\r\n"), 30)
        return data

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    async def cmd(self, line: str | bytes) -> bytes:
        self.send((line.encode() if isinstance(line, str) else line) + b"\r\n")
        return await self.line()

    async def starttls(self, env: DaemonEnv) -> None:
        assert (await self.cmd("STLS")).startswith(b"+OK")
        await self.writer.start_tls(env.client_tls())

    async def login(self, env: DaemonEnv, user: str = "alice") -> bytes:
        from mailserver.testing.daemons import PASSWORD

        assert (await self.cmd(f"USER {env.login(user)}")).startswith(b"+OK")
        return await self.cmd(f"PASS {PASSWORD}")

    async def close(self) -> None:
        self.writer.close()
        try:
            await asyncio.wait_for(self.writer.wait_closed(), 5)
        except (ConnectionError, ssl.SSLError, asyncio.TimeoutError, OSError):
            pass

    async def closed_by_server(self) -> bool:
        """True when the server closes the connection (EOF) within the timeout."""
        try:
            rest = await asyncio.wait_for(self.reader.read(), 30)
        except (ConnectionError, ssl.SSLError):
            return True
        return rest == b""
