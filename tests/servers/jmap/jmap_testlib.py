"""Helpers of the JMAP daemon tests: a small aiohttp JMAP client and test messages."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

import aiohttp

from mailserver.testing.daemons import PASSWORD, DaemonEnv

CORE = "urn:ietf:params:jmap:core"
MAIL = "urn:ietf:params:jmap:mail"
USING = [CORE, MAIL]


def basic(user: str, password: str = PASSWORD) -> str:
    return "Basic " + base64.b64encode(f"{user}@example.test:{password}".encode()).decode()


@dataclass
class Jmap:
    env: DaemonEnv
    base: str
    http: aiohttp.ClientSession
    auth: str
    account: str  # JMAP accountId of alice

    async def session(self) -> dict[str, Any]:
        async with self.http.get(self.base + "/.well-known/jmap",
                                 headers={"Authorization": self.auth}) as r:
            assert r.status == 200, await r.text()
            return await r.json()

    async def post(self, body: Any, *, raw: bytes | None = None,
                   auth: str | None = None) -> tuple[int, Any]:
        data = raw if raw is not None else None
        kwargs: dict[str, Any] = {"data": data} if raw is not None else {"json": body}
        async with self.http.post(self.base + "/jmap/api/",
                                  headers={"Authorization": auth or self.auth},
                                  **kwargs) as r:
            return r.status, await r.json(content_type=None)

    async def request(self, calls: list, using: list[str] | None = None) -> list:
        status, body = await self.post({"using": using or USING, "methodCalls": calls})
        assert status == 200, body
        return body["methodResponses"]

    async def call(self, name: str, args: dict[str, Any], using: list[str] | None = None
                   ) -> tuple[str, dict[str, Any]]:
        args = {"accountId": self.account, **args}
        [(rname, result, _cid)] = await self.request([[name, args, "c"]], using)
        return rname, result

    async def ok(self, name: str, args: dict[str, Any], using: list[str] | None = None
                 ) -> dict[str, Any]:
        rname, result = await self.call(name, args, using)
        assert rname == name, result
        return result

    async def deliver(self, raw: bytes, to: str = "alice@example.test",
                      received_at: int | None = None) -> None:
        result = await self.env.app.deliverer.deliver(raw, [to], received_at=received_at)
        assert result.all_delivered

    async def mailbox(self, role: str) -> str:
        got = await self.ok("Mailbox/get", {"ids": None})
        return next(m["id"] for m in got["list"] if m["role"] == role)


def message(subject: str = "Hello", body: str = "Hello world", *, sender: str = "bob",
            msgid: str | None = None, extra: str = "") -> bytes:
    mid = msgid or f"{abs(hash((subject, body)))}@example.test"
    return (f"From: {sender.title()} <{sender}@example.test>\r\nTo: Alice <alice@example.test>\r\n"
            f"Subject: {subject}\r\nMessage-ID: <{mid}>\r\n"
            f"Date: Mon, 23 Nov 2026 10:00:00 +0100\r\n{extra}\r\n{body}\r\n").encode()




def jmapc_client(host: str, cafile: str):
    """A ``jmapc`` client for alice trusting the test CA (the certificate names
    mail.example.test while we dial 127.0.0.1)."""
    import ssl

    import jmapc
    from requests.adapters import HTTPAdapter

    ctx = ssl.create_default_context(cafile=cafile)
    ctx.check_hostname = False

    class TestCA(HTTPAdapter):
        def init_poolmanager(self, *args, **kwargs):
            kwargs["ssl_context"] = ctx
            kwargs["assert_hostname"] = False
            return super().init_poolmanager(*args, **kwargs)

    client = jmapc.Client.create_with_password(host, "alice@example.test", PASSWORD)
    session = client.requests_session
    session.trust_env = False
    session.verify = cafile
    session.mount("https://", TestCA())
    return client
