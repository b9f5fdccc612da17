"""MTA-STS (RFC 8461): policy parsing, and enforcement against a real HTTPS policy server and
TLS sinks with certificates for the MX names (trusted through the worker's verify context)."""

from __future__ import annotations

import asyncio
import ssl

import pytest
from qhelpers import FakeClock, message

from mailserver.mailauth.dns import Resolver
from mailserver.queue.mtasts import MtaSts, PolicyError, mx_matches, parse_policy, parse_txt
from mailserver.tlscert import make_self_signed

NOW = 1_800_000_000
POLICY = "version: STSv1\r\nmode: enforce\r\nmx: mx.sts.remote.test\r\nmax_age: 86400\r\n"


def test_parse_policy_and_txt():
    p = parse_policy("version: STSv1\nmode: testing\nmx: *.example.net\nmx: mx.example.org.\n"
                     "max_age: 604800\n", "abc")
    assert (p.mode, p.mx, p.max_age, p.id) == ("testing", ("*.example.net", "mx.example.org"),
                                               604800, "abc")
    assert p.allows("a.example.net") and not p.allows("a.b.example.net")
    assert p.allows("MX.example.org") and not p.allows("example.net")
    for bad in ("version: STSv2\nmode: enforce\nmx: a\nmax_age: 1\n",
                "version: STSv1\nmode: strict\nmx: a\nmax_age: 1\n",
                "version: STSv1\nmode: enforce\nmax_age: 1\n",
                "version: STSv1\nmode: enforce\nmx: a\nmax_age: 99999999999\n",
                "version: STSv1\ngarbage\n"):
        with pytest.raises(PolicyError):
            parse_policy(bad)
    assert parse_txt(["v=STSv1; id=20160831085700Z;"]) == "20160831085700Z"
    assert parse_txt(["v=STSv1; id=a", "v=STSv1; id=b"]) is None  # §3.1: several → none
    assert parse_txt(["v=spf1 -all"]) is None
    assert parse_txt(["v=STSv1; id=bad id!"]) is None
    assert mx_matches("*.mail.example", "a.mail.example")
    assert not mx_matches("*.mail.example", "mail.example")


class Certs:
    def __init__(self, tmp_path):
        self.dir = tmp_path
        self.pems = {}
        for name in ("mx.sts.remote.test", "mta-sts.sts.remote.test", "wrong.example"):
            cert, key = make_self_signed(name)
            (tmp_path / f"{name}.crt").write_bytes(cert)
            (tmp_path / f"{name}.key").write_bytes(key)
            self.pems[name] = cert

    def server(self, name: str) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.dir / f"{name}.crt", self.dir / f"{name}.key")
        return ctx

    def client(self) -> ssl.SSLContext:
        """Trusts all three certificates: wrong.example still fails the MX name check."""
        return ssl.create_default_context(cadata=(
            self.pems["mx.sts.remote.test"] + self.pems["mta-sts.sts.remote.test"]
            + self.pems["wrong.example"]).decode())


async def policy_server(host: str, port: int, ctx: ssl.SSLContext, body: str):
    async def handle(reader, writer):
        try:
            await reader.readuntil(b"\r\n\r\n")
            data = body.encode()
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: "
                         + str(len(data)).encode() + b"\r\nConnection: close\r\n\r\n" + data)
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        finally:
            writer.close()
    return await asyncio.start_server(handle, host, port, ssl=ctx)


def _worker(qenv, dns_server, certs, clock):
    resolver = Resolver([dns_server.host], port=dns_server.port, timeout=3.0)
    sts = MtaSts(resolver, context=certs.client(), port=qenv.sink_port, clock=clock)
    return qenv.worker(clock, mta_sts=sts, verify_context=certs.client())


async def test_enforce_uses_listed_mx_with_validated_tls(qenv, dns_server, tmp_path):
    certs = Certs(tmp_path)
    server = await policy_server("127.0.0.9", qenv.sink_port,
                                 certs.server("mta-sts.sts.remote.test"), POLICY)
    try:
        mx = await qenv.sink("127.0.0.8", tls=certs.server("mx.sts.remote.test"),
                             extensions=["PIPELINING", "8BITMIME", "REQUIRETLS"])
        outside = await qenv.sink("127.0.0.3")  # MX 20, not in the policy
        clock = FakeClock(NOW)
        await qenv.enqueue(message(), "alice@example.test", ["a@sts.remote.test"], now=NOW)
        await qenv.enqueue(message("rt"), "alice@example.test", ["b@sts.remote.test"],
                           now=NOW, requiretls=True)
        await _worker(qenv, dns_server, certs, clock).run_until_idle()
        assert sorted(mx.recipients()) == ["a@sts.remote.test", "b@sts.remote.test"]
        assert all(m.tls for m in mx.received)
        assert [m.mail_params for m in mx.received if "REQUIRETLS" in m.mail_params]
        assert outside.sessions == 0
        assert await qenv.queue_rows() == [] and await qenv.inbox("alice") == []
    finally:
        server.close()
        await server.wait_closed()


async def test_enforce_defers_when_the_certificate_does_not_match(qenv, dns_server, tmp_path):
    certs = Certs(tmp_path)
    server = await policy_server("127.0.0.9", qenv.sink_port,
                                 certs.server("mta-sts.sts.remote.test"), POLICY)
    try:
        mx = await qenv.sink("127.0.0.8", tls=certs.server("wrong.example"))
        outside = await qenv.sink("127.0.0.3")
        await qenv.enqueue(message(), "alice@example.test", ["c@sts.remote.test"], now=NOW)
        await _worker(qenv, dns_server, certs, FakeClock(NOW)).run_until_idle()
        assert mx.received == [] and outside.sessions == 0
        (row,) = await qenv.queue_rows()
        assert row.last_status == "4.7.5" and "MTA-STS" in row.last_error
    finally:
        server.close()
        await server.wait_closed()


async def test_no_policy_server_means_opportunistic_tls(qenv, dns_server, tmp_path):
    certs = Certs(tmp_path)  # TXT record published, but nothing serves the policy
    mx = await qenv.sink("127.0.0.8", tls=certs.server("wrong.example"))
    await qenv.enqueue(message(), "alice@example.test", ["d@sts.remote.test"], now=NOW)
    await _worker(qenv, dns_server, certs, FakeClock(NOW)).run_until_idle()
    assert mx.recipients() == ["d@sts.remote.test"] and mx.received[0].tls


async def test_policy_cache_survives_a_restart(qenv, dns_server, tmp_path):
    """A policy learned once is kept in the store: a new worker (another process, a restart)
    whose policy fetch fails still enforces it (RFC 8461 §5.1, §10.2)."""
    certs = Certs(tmp_path)
    clock = FakeClock(NOW)
    resolver = Resolver([dns_server.host], port=dns_server.port, timeout=3.0)
    server = await policy_server("127.0.0.9", qenv.sink_port,
                                 certs.server("mta-sts.sts.remote.test"), POLICY)
    try:
        first = MtaSts(resolver, context=certs.client(), port=qenv.sink_port, clock=clock,
                       db=qenv.app.db)
        assert (await first.policy("sts.remote.test")).enforce
    finally:
        server.close()
        await server.wait_closed()
    mx = await qenv.sink("127.0.0.8", tls=certs.server("wrong.example"))
    outside = await qenv.sink("127.0.0.3")
    fresh = MtaSts(resolver, context=certs.client(), port=qenv.sink_port, clock=clock,
                   db=qenv.app.db)
    await qenv.enqueue(message(), "alice@example.test", ["e@sts.remote.test"], now=NOW)
    await qenv.worker(clock, mta_sts=fresh, verify_context=certs.client()).run_until_idle()
    assert mx.received == [] and outside.sessions == 0  # still enforced: no downgrade
    (row,) = await qenv.queue_rows()
    assert row.last_status == "4.7.5" and "MTA-STS" in row.last_error
    clock.advance(86400 + 1)  # max_age over: the stored policy no longer applies
    expired = MtaSts(resolver, context=certs.client(), port=qenv.sink_port, clock=clock,
                     db=qenv.app.db)
    assert await expired.policy("sts.remote.test") is None
