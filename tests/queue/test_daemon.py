"""``serve queue`` as a daemon with the real clock; smarthost with AUTH; hostile peers."""

from __future__ import annotations

import asyncio
import ssl
import time

from qhelpers import FakeClock, make_qenv, message


async def _until(predicate, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.05)


async def test_serve_queue_delivers_and_stops(tmp_path, dns_server, sink_port):
    async with make_qenv(tmp_path, dns_server, sink_port,
                         queue={"poll_interval": "100ms"}) as q:
        sink = await q.sink("127.0.0.4")
        daemon = await q.env.start("queue")
        await q.enqueue(message("live"), "alice@example.test", ["live@ok.remote.test"],
                        now=int(time.time()))
        await _until(lambda: sink.recipients() == ["live@ok.remote.test"])
        await daemon.stop()
        q.env.running.pop("queue")
        assert await q.queue_rows() == []


async def test_stop_does_not_wait_for_a_hung_peer(tmp_path, dns_server, sink_port):
    async with make_qenv(tmp_path, dns_server, sink_port,
                         queue={"poll_interval": "100ms"}) as q:
        sink = await q.sink("127.0.0.4", hang_on_data=True)
        daemon = await q.env.start("queue")
        daemon.worker.stop_grace = 0.5
        await q.enqueue(message("hung"), "alice@example.test", ["h@ok.remote.test"],
                        now=int(time.time()))
        await asyncio.wait_for(sink.data_seen.wait(), 30)
        t0 = time.monotonic()
        await daemon.stop()
        q.env.running.pop("queue")
        assert time.monotonic() - t0 < 15  # not the 20 s command timeout
        (row,) = await q.queue_rows()  # still queued, released for the next worker at once
        assert row.lease_owner is None and row.attempts == 0


def _server_tls(q) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls_dir = q.env.data_dir / "tls"
    ctx.load_cert_chain(tls_dir / "cert.pem", tls_dir / "key.pem")
    return ctx


async def test_smarthost_with_auth_instead_of_mx(tmp_path, dns_server, sink_port):
    relay = {"relay_host": f"relay.remote.test:{sink_port}", "relay_username": "relayuser",
             "relay_password": "s3cret"}
    async with make_qenv(tmp_path, dns_server, sink_port, queue=relay) as q:
        mx = await q.sink("127.0.0.4")  # the MX of ok.remote.test must not be used
        smarthost = await q.sink("127.0.0.8", auth=("relayuser", "s3cret"))
        smarthost.tls = _server_tls(q)
        await q.enqueue(message(), "alice@example.test",
                        ["a@ok.remote.test", "b@nullmx.remote.test"], now=1000)
        await q.worker(FakeClock(1000)).run_until_idle()
        assert mx.received == []
        assert sorted(smarthost.recipients()) == ["a@ok.remote.test", "b@nullmx.remote.test"]
        assert all(m.tls for m in smarthost.received)


async def test_smarthost_wrong_password_is_deferred(tmp_path, dns_server, sink_port):
    relay = {"relay_host": f"relay.remote.test:{sink_port}", "relay_username": "relayuser",
             "relay_password": "wrong"}
    async with make_qenv(tmp_path, dns_server, sink_port, queue=relay) as q:
        smarthost = await q.sink("127.0.0.8", auth=("relayuser", "s3cret"))
        smarthost.tls = _server_tls(q)
        await q.enqueue(message(), "alice@example.test", ["a@ok.remote.test"], now=1000)
        await q.worker(FakeClock(1000)).run_until_idle()
        (row,) = await q.queue_rows()
        assert row.attempts == 1 and "AUTH" in row.last_error and smarthost.received == []


async def _garbage_server(host: str, port: int, payload: bytes):
    async def session(reader, writer):
        writer.write(payload)
        await writer.drain()
        await asyncio.sleep(0.2)
        writer.close()
    return await asyncio.start_server(session, host, port)


async def test_hostile_peers_are_temporary_failures(qenv):
    # mx.temp answers garbage; the worker defers and keeps working for other domains
    server = await _garbage_server("127.0.0.5", qenv.sink_port, b"\x00\xffHELLO garbage\r\n")
    try:
        sink = await qenv.sink("127.0.0.4")
        await qenv.enqueue(message(), "alice@example.test", ["g@temp.remote.test"], now=1000)
        await qenv.enqueue(message("fine"), "alice@example.test", ["f@ok.remote.test"],
                           now=1000)
        await qenv.worker(FakeClock(1000)).run_until_idle()
        (row,) = await qenv.queue_rows()
        assert row.recipient == "g@temp.remote.test" and row.last_status == "4.4.1"
        assert "malformed reply" in row.last_error
        assert sink.recipients() == ["f@ok.remote.test"]
    finally:
        server.close()
        await server.wait_closed()
    # a peer with an endless reply line
    server = await _garbage_server("127.0.0.5", qenv.sink_port, b"220-" + b"x" * 100_000)
    try:
        clock = FakeClock(row.next_attempt_at)
        await qenv.worker(clock).run_until_idle()
        (row,) = await qenv.queue_rows()
        assert row.attempts == 2 and row.last_status == "4.4.1"
    finally:
        server.close()
        await server.wait_closed()
