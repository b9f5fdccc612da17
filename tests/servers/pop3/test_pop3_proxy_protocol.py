"""POP3 behind a load balancer: PROXY v1 on the cleartext port, v2 before the TLS handshake on
the implicit-TLS port; the client address the header names is the one throttling sees."""

from __future__ import annotations

import asyncio

from pop3_client import LineClient

from mailserver.auth.throttle import ThrottlePolicy
from mailserver.testing.daemons import daemon_env
from protocols.proxy import encode_v1, encode_v2


async def proxied(env, header: bytes, *, tls: bool) -> LineClient:
    host, port = env.address("pop3", tls=tls)
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(header)
    await writer.drain()
    if tls:
        await writer.start_tls(env.client_tls())
    c = LineClient(reader, writer)
    assert (await c.line()).startswith(b"+OK")
    return c


async def test_proxy_protocol_v1_v2_and_client_address(tmp_path) -> None:
    async with daemon_env(tmp_path, overrides={"pop3": {"proxy_protocol": True}}) as env:
        daemon = await env.start("pop3")
        daemon.throttle.policy = ThrottlePolicy(lockout_after=1)
        attacker = encode_v1(("203.0.113.7", 4000), ("192.0.2.1", 110))
        c = await proxied(env, attacker, tls=False)
        await c.starttls(env)
        assert (await c.cmd("USER mallory@example.test")).startswith(b"+OK")
        assert (await c.cmd("PASS guess")).startswith(b"-ERR [AUTH]")
        await c.close()
        # the proxied address is locked out now, whoever it claims to be…
        c = await proxied(env, encode_v2(("203.0.113.7", 4001), ("192.0.2.1", 995)), tls=True)
        assert (await c.login(env)).startswith(b"-ERR [SYS/TEMP]")
        await c.close()
        # …but the proxy's other clients (all arriving from 127.0.0.1) are not
        c = await proxied(env, encode_v2(("198.51.100.1", 4002), ("192.0.2.1", 995)), tls=True)
        assert (await c.login(env)).startswith(b"+OK")
        await c.cmd("QUIT")
        await c.close()


async def test_missing_proxy_header_is_refused(tmp_path) -> None:
    async with daemon_env(tmp_path, overrides={"pop3": {"proxy_protocol": True}}) as env:
        await env.start("pop3")
        host, port = env.address("pop3")
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(b"USER alice@example.test\r\n")
        try:  # closed (or reset: our line was left unread) without a greeting
            assert await asyncio.wait_for(reader.read(), 30) == b""
        except ConnectionResetError:
            pass
        writer.close()
