"""Hostile and broken input against the MX: huge lines, NUL bytes, garbage, bare LF,
disconnects in the middle of the data. Every case gets a correct reply (or a clean close),
the daemon keeps serving, and nothing half-received is stored."""

from __future__ import annotations

import asyncio
import os
import smtplib

import aiosmtplib

from smtp_testlib import RawClient, email_count, stored

MSG = b"From: x@pass.test\r\nSubject: t\r\n\r\nbody\r\n"


async def _greeted(env, daemon="mx"):
    c = await RawClient.connect(env.address(daemon))
    assert (await c.reply())[0] == 220
    assert (await c.cmd("EHLO client.test"))[0] == 250
    return c


async def _deliver_ok(env, user="carol"):
    """A well-behaved session still works (run while another one misbehaves)."""
    def run():
        with smtplib.SMTP(*env.address("mx"), timeout=30) as s:
            return s.sendmail("x@pass.test", [f"{user}@example.test"], MSG)
    assert await asyncio.to_thread(run) == {}


async def test_disconnect_mid_data_stores_nothing(any_db_env):
    env = any_db_env
    c = await _greeted(env)
    await c.send(b"MAIL FROM:<x@pass.test>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n")
    assert [r[0] for r in await c.replies(3)] == [250, 250, 354]
    await c.send(MSG + b"partial line without the end")
    c.writer.transport.abort()  # RST, no QUIT, no final dot
    await _deliver_ok(env)
    # same with BDAT: one chunk acknowledged, the LAST one never completes
    c = await _greeted(env)
    await c.send(b"MAIL FROM:<x@pass.test>\r\nRCPT TO:<alice@example.test>\r\n")
    await c.replies(2)
    await c.send(b"BDAT 10\r\n0123456789")
    assert (await c.reply())[0] == 250
    await c.send(b"BDAT 100 LAST\r\nonly some of it")
    await c.close()
    await _deliver_ok(env, "bob")
    assert await stored(env, "alice") == []
    assert await email_count(env) == 2


async def test_megabyte_command_line(env):
    c = await _greeted(env)
    code, text = await c.cmd(b"MAIL FROM:<" + b"a" * (1 << 20) + b"@pass.test>")
    assert (code, text) == (500, "5.5.2 Line too long")
    code, text = await c.cmd(b"X" * (1 << 20))
    assert code == 500
    # the session is still in order
    assert (await c.cmd("MAIL FROM:<x@pass.test>"))[0] == 250
    await c.close()


async def test_megabyte_data_line_is_refused_after_the_data(env):
    c = await _greeted(env)
    await c.send(b"MAIL FROM:<x@pass.test>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n")
    await c.replies(3)
    await c.send(MSG + b"y" * (1 << 20) + b"\r\nmore\r\n.\r\n")
    code, text = await c.reply()
    assert code == 550 and text.startswith("5.6.0")
    # next transaction in the same session works
    await c.send(b"MAIL FROM:<x@pass.test>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n")
    assert [r[0] for r in await c.replies(3)] == [250, 250, 354]
    assert (await c.cmd(MSG + b"."))[0] == 250
    await c.close()
    assert len(await stored(env, "alice")) == 1


async def test_nul_bytes(env):
    c = await _greeted(env)
    code, _ = await c.cmd(b"MAIL FROM:<x\x00@pass.test>")
    assert code == 500
    code, _ = await c.cmd(b"\x00\x00\x00")
    assert code == 500
    await c.send(b"MAIL FROM:<x@pass.test>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n")
    assert [r[0] for r in await c.replies(3)] == [250, 250, 354]
    code, _ = await c.cmd(MSG + b"nul \x00 inside\r\n.")
    assert code in (250, 550)  # stored as sent or refused: never a crash
    assert (await c.cmd("NOOP"))[0] == 250
    await c.close()


async def test_pipelined_garbage_then_error_limit(env):
    c = await _greeted(env)
    garbage = os.urandom(4096).replace(b"\n", b"").replace(b"\r", b"")
    lines = [b"HELLO?", b"MAIL TO:<x>", b"RCPT TO:<alice@example.test>", b"DATA", b"\xff\xfe",
             b"BDAT x"]
    await c.send(b"\r\n".join(lines) + b"\r\n")
    replies = await c.replies(len(lines))
    assert all(400 <= code < 600 for code, _ in replies), replies
    assert (await c.cmd("NOOP"))[0] == 250
    # max_errors (10) ends the session with 421
    await c.send((garbage[:200] + b"\r\n") * 20)
    codes = []
    while True:
        try:
            code, _ = await c.reply()
        except ConnectionError:
            break
        codes.append(code)
        if code == 421:
            break
    assert codes[-1] == 421 and all(c == 500 for c in codes[:-1])
    await c.close()
    await _deliver_ok(env)


async def test_bare_lf_in_data_is_refused(env):
    """SMTP smuggling (RFC 5321 §2.3.8): "\\n.\\n" is not the end of the data, and a message
    with bare LF is refused as a whole."""
    c = await _greeted(env)
    await c.send(b"MAIL FROM:<x@pass.test>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n")
    await c.replies(3)
    smuggled = (b"Subject: a\r\n\r\nx\n.\nMAIL FROM:<ceo@pass.test>\nRCPT TO:<bob@example.test>\n"
                b"DATA\nSubject: forged\n\n.\n")
    await c.send(smuggled + b"\r\n.\r\n")
    code, text = await c.reply()
    assert code == 550 and text.startswith("5.5.2")
    assert (await c.cmd("NOOP"))[0] == 250  # no smuggled command was executed
    await c.close()
    assert await email_count(env) == 0


async def test_bdat_chunking_binarymime(env):
    c = await _greeted(env)
    body = b"From: x@pass.test\r\nSubject: bin\r\n\r\n" + bytes(range(1, 256)) + b"\r\n.\r\n"
    await c.send(b"MAIL FROM:<x@pass.test> BODY=BINARYMIME\r\nRCPT TO:<alice@example.test>\r\n")
    assert [r[0] for r in await c.replies(2)] == [250, 250]
    await c.send(b"BDAT 20\r\n" + body[:20] + b"BDAT %d\r\n" % (len(body) - 20) + body[20:]
                 + b"BDAT 0 LAST\r\n")
    assert [r[0] for r in await c.replies(3)] == [250, 250, 250]
    await c.close()
    [raw] = await stored(env, "alice")
    assert raw.endswith(body)  # no dot-stuffing or line-ending changes in BDAT


async def test_too_many_recipients(make_env):
    async with make_env("mx", overrides={"limits": {"max_recipients": 2}}) as env:
        c = await _greeted(env)
        await c.cmd("MAIL FROM:<x@pass.test>")
        assert (await c.cmd("RCPT TO:<alice@example.test>"))[0] == 250
        assert (await c.cmd("RCPT TO:<bob@example.test>"))[0] == 250
        code, text = await c.cmd("RCPT TO:<carol@example.test>")
        assert (code, text[:5]) == (452, "4.5.3")
        await c.close()


async def test_message_size_limit(make_env):
    async with make_env("mx", overrides={"limits": {"max_message_size": 2000}}) as env:
        c = await _greeted(env)
        code, text = await c.cmd("MAIL FROM:<x@pass.test> SIZE=5000")
        assert (code, text[:5]) == (552, "5.3.4")
        await c.send(b"MAIL FROM:<x@pass.test>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n")
        await c.replies(3)
        code, text = await c.cmd(MSG + (b"z" * 70 + b"\r\n") * 100 + b".")
        assert (code, text[:5]) == (552, "5.3.4")
        await c.close()
        assert await email_count(env) == 0


async def test_many_concurrent_sessions_with_one_hostile(env):
    hostile = await _greeted(env)
    await hostile.send(b"MAIL FROM:<x@pass.test>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n")
    await hostile.replies(3)
    await hostile.send(b"z" * (3 << 20))  # a 3 MB line that never ends, left hanging

    async def one(i):
        host, port = env.address("mx")
        async with aiosmtplib.SMTP(hostname=host, port=port, start_tls=False,
                                   timeout=30) as client:
            errors, _ = await client.sendmail("x@pass.test", ["bob@example.test"], MSG)
            return errors
    # (not smtplib in threads: the default executor also runs the MX's SPF checks)
    assert await asyncio.gather(*(one(i) for i in range(8))) == [{}] * 8
    hostile.writer.transport.abort()
    assert len(await stored(env, "bob")) == 8
    assert await stored(env, "alice") == []


async def test_replies_to_a_pipelined_batch_come_in_order(env):
    """RFC 2920: the replies to MAIL, RCPT, RCPT and DATA sent in one packet (held by
    ``Connection.cork`` until the input is used up, then sent together) come in order."""
    c = await _greeted(env)
    await c.send(b"MAIL FROM:<x@pass.test>\r\nRCPT TO:<alice@example.test>\r\n"
                 b"RCPT TO:<nobody@example.test>\r\nDATA\r\n")
    assert [code for code, _ in await c.replies(4)] == [250, 250, 550, 354]
    await c.send(b"Subject: batch\r\n\r\nbody\r\n.\r\nQUIT\r\n")
    assert [code for code, _ in await c.replies(2)] == [250, 221]
    await c.close()
    assert len(await stored(env, "alice")) == 1


async def test_cork_holds_writes_until_flush():
    """``Connection.cork``: nothing reaches the socket until ``flush`` (or ``drain``), then
    everything in one piece, in order; uncorked writes go straight out."""
    import socket

    from mailserver.servers.base import Connection

    ours, peer = socket.socketpair()
    peer.setblocking(False)
    reader, writer = await asyncio.open_connection(sock=ours)
    conn = Connection(reader, writer, peer=None, local=None, listener=None,  # type: ignore[arg-type]
                      tls_context=None, stopping=asyncio.Event())

    def received() -> bytes:
        try:
            return peer.recv(65536)
        except BlockingIOError:
            return b""

    try:
        conn.cork()
        for part in (b"250 a\r\n", b"", b"250 b\r\n", b"354 c\r\n"):
            conn.write(part)
        await asyncio.sleep(0.05)
        assert received() == b""
        conn.flush()
        await asyncio.sleep(0.05)
        assert received() == b"250 a\r\n250 b\r\n354 c\r\n"
        conn.write(b"250 d\r\n")  # not corked any more
        await asyncio.sleep(0.05)
        assert received() == b"250 d\r\n"
        conn.cork()
        conn.write(b"221 e\r\n")
        await conn.drain()  # drain flushes too
        await asyncio.sleep(0.05)
        assert received() == b"221 e\r\n"
    finally:
        writer.close()
        peer.close()
