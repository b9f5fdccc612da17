"""The LMTP daemon (RFC 2033) over its unix socket and over TCP."""

from __future__ import annotations

import asyncio
import smtplib

from smtp_testlib import RawClient, stored

MSG = b"From: x@pass.test\r\nSubject: via lmtp\r\n\r\nbody\r\n"


async def _session(address):
    c = await RawClient.connect(address)
    code, text = await c.reply()
    assert code == 220 and "LMTP" in text
    await c.send(b"LHLO mta.test\r\n")
    while True:
        line = await c.reader.readline()
        if line[3:4] == b" ":
            break
    return c


async def test_one_reply_per_recipient_after_data(any_db_env):
    env = any_db_env
    await env.app.directory.set_quota("bob@example.test", 100)  # smaller than the message
    c = await _session(env.address("lmtp"))
    # pipelined, as an MTA does (LMTP requires PIPELINING)
    await c.send(b"MAIL FROM:<x@pass.test>\r\nRCPT TO:<alice@example.test>\r\n"
                 b"RCPT TO:<nobody@example.test>\r\nRCPT TO:<bob@example.test>\r\n"
                 b"RCPT TO:<carol@example.test>\r\nDATA\r\n")
    replies = await c.replies(6)
    assert [r[0] for r in replies] == [250, 250, 550, 250, 250, 354]
    await c.send(MSG + b".\r\n")
    # RFC 2033 §4.2: one reply per accepted RCPT, in order
    alice, bob, carol = await c.replies(3)
    assert alice == (250, "2.0.0 <alice@example.test> delivered")
    assert bob[0] == 552 and bob[1].startswith("5.2.2")
    assert carol == (250, "2.0.0 <carol@example.test> delivered")
    assert await c.cmd("QUIT") == (221, "2.0.0 mail.example.test closing connection")
    await c.close()
    [raw] = await stored(env, "alice")
    assert raw.startswith(b"Return-Path: <x@pass.test>\r\nReceived: from mta.test (localhost)")
    assert b" with LMTP id " in raw and raw.endswith(MSG)
    assert await stored(env, "bob") == []
    assert len(await stored(env, "carol")) == 1


async def test_smtplib_lmtp_over_unix_socket(env):
    path = env.address("lmtp")
    assert isinstance(path, str)

    def run():
        with smtplib.LMTP(path, timeout=30) as s:
            return s.sendmail("x@pass.test", ["alice@example.test", "nobody@example.test",
                                              "relay@other.test"], MSG)
    refused = await asyncio.to_thread(run)
    assert set(refused) == {"nobody@example.test", "relay@other.test"}
    assert all(code == 550 for code, _ in refused.values())
    assert len(await stored(env, "alice")) == 1


async def test_bdat_in_lmtp(env):
    c = await _session(env.address("lmtp"))
    await c.send(b"MAIL FROM:<x@pass.test> BODY=BINARYMIME\r\nRCPT TO:<alice@example.test>\r\n"
                 b"RCPT TO:<bob@example.test>\r\n")
    assert [r[0] for r in await c.replies(3)] == [250, 250, 250]
    half = len(MSG) // 2
    await c.send(b"BDAT %d\r\n" % half + MSG[:half])
    assert (await c.reply())[0] == 250
    await c.send(b"BDAT %d LAST\r\n" % (len(MSG) - half) + MSG[half:])
    assert [r[0] for r in await c.replies(2)] == [250, 250]
    await c.close()
    assert (await stored(env, "alice"))[0].endswith(MSG)
    assert (await stored(env, "bob"))[0].endswith(MSG)


async def test_lmtp_over_tcp(make_env, tmp_path):
    async with make_env("lmtp", overrides={"lmtp": {"listen": ["127.0.0.1:0"]}}) as env:
        c = await _session(env.address("lmtp"))
        assert (await c.cmd("EHLO mta.test"))[0] == 500  # RFC 2033 §4.1: LHLO only
        await c.send(b"MAIL FROM:<>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n")
        assert [r[0] for r in await c.replies(3)] == [250, 250, 354]
        assert (await c.cmd(MSG + b"."))[0] == 250
        await c.close()
        assert len(await stored(env, "alice")) == 1
