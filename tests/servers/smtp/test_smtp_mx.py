"""The MX daemon against real clients (smtplib, aiosmtplib, raw bytes) over loopback."""

from __future__ import annotations

import asyncio
import smtplib

import aiosmtplib
import pytest

from smtp_testlib import RawClient, email_count, stored

MSG = b"From: x@pass.test\r\nTo: alice@example.test\r\nSubject: hello\r\n\r\nbody\r\n"


def _send(env, frm, to, msg=MSG, *, tls=True, **kw):
    def run():
        with smtplib.SMTP(*env.address("mx"), timeout=30) as s:
            if tls:
                s.starttls(context=env.client_tls())
            return s.sendmail(frm, to, msg, **kw)
    return asyncio.to_thread(run)


async def test_delivers_with_trace_and_spf(any_db_env):
    env = any_db_env
    assert await _send(env, "x@pass.test", ["alice@example.test"]) == {}
    [raw] = await stored(env, "alice")
    head = raw.split(b"\r\n\r\n", 1)[0].decode()
    assert head.startswith("Return-Path: <x@pass.test>\r\nReceived: from ")
    assert "with ESMTPS id" in head and "for <alice@example.test>" in head
    assert "(using TLSv1." in head
    assert "Authentication-Results: mail.example.test;\r\n\tspf=pass smtp.mailfrom=x@pass.test" \
        in head
    assert raw.endswith(MSG)
    assert await stored(env, "bob") == []


async def test_spf_fail_is_recorded_not_rejected(env):
    assert await _send(env, "x@fail.test", ["bob@example.test"], tls=False) == {}
    [raw] = await stored(env, "bob")
    assert b"spf=fail smtp.mailfrom=x@fail.test" in raw
    assert b"with ESMTP id" in raw  # no TLS: not ESMTPS


async def test_no_open_relay(env):
    c = await RawClient.connect(env.address("mx"))
    assert (await c.reply())[0] == 220
    assert (await c.cmd("EHLO client.test"))[0] == 250
    assert await c.cmd("MAIL FROM:<x@pass.test>") == (250, "2.1.0 OK")
    for rcpt in ("<someone@other.test>", "<@example.test:someone@other.test>",
                 "<alice@example.test.other.test>", "<x@[127.0.0.1]>"):
        code, text = await c.cmd(f"RCPT TO:{rcpt}")
        assert (code, text[:5]) == (554, "5.7.1"), rcpt
    # relay tricks that name a hosted domain are unknown users, not relays
    for rcpt in ("<someone%other.test@example.test>", "<other.test!someone@example.test>"):
        assert (await c.cmd(f"RCPT TO:{rcpt}"))[0] == 550, rcpt
    assert (await c.cmd("DATA"))[0] in (503, 554)  # RFC 5321 §3.3: no valid recipients
    assert (await c.cmd("QUIT"))[0] == 221
    await c.close()
    assert await email_count(env) == 0


async def test_unknown_user_550_511(env):
    with pytest.raises(smtplib.SMTPRecipientsRefused) as e:
        await _send(env, "x@pass.test", ["nobody@example.test"])
    assert e.value.recipients["nobody@example.test"] == (550, b"5.1.1 No such user here")
    # one good one bad: the good one is stored
    assert await _send(env, "x@pass.test", ["nobody@example.test", "carol@example.test"]) == {
        "nobody@example.test": (550, b"5.1.1 No such user here")}
    assert len(await stored(env, "carol")) == 1


async def test_postmaster_without_domain(env):
    await env.app.directory.add_alias("postmaster@example.test", "carol@example.test")
    c = await RawClient.connect(env.address("mx"))
    await c.reply()
    await c.cmd("EHLO client.test")
    await c.cmd("MAIL FROM:<>")
    assert (await c.cmd("RCPT TO:<Postmaster>"))[0] == 250
    assert (await c.cmd("DATA"))[0] == 354
    assert (await c.cmd(b"Subject: pm\r\n\r\nhi\r\n."))[0] == 250
    await c.close()
    assert len(await stored(env, "carol")) == 1


async def test_quota(env):
    await env.app.directory.set_quota("alice@example.test", 3000)
    big = MSG + b"x" * 2500 + b"\r\n"
    # SIZE over the whole quota: refused at RCPT, permanently
    c = await RawClient.connect(env.address("mx"))
    await c.reply()
    await c.cmd("EHLO client.test")
    await c.cmd("MAIL FROM:<x@pass.test> SIZE=5000")
    assert await c.cmd("RCPT TO:<alice@example.test>") == (
        552, "5.2.2 Message exceeds the mailbox quota")
    await c.cmd("RSET")
    # fits in the quota: stored
    assert (await c.cmd("MAIL FROM:<x@pass.test>"))[0] == 250
    assert (await c.cmd("RCPT TO:<alice@example.test>"))[0] == 250
    assert (await c.cmd("DATA"))[0] == 354
    code, _ = await c.cmd(big + b".")
    assert code == 250
    # now the mailbox is full at delivery time: a temporary failure after the data
    assert (await c.cmd("MAIL FROM:<x@pass.test>"))[0] == 250
    code, text = await c.cmd("RCPT TO:<alice@example.test>")
    if code == 250:  # not yet full at RCPT time: the commit refuses it
        assert (await c.cmd("DATA"))[0] == 354
        code, text = await c.cmd(big + b".")
    assert (code, text[:5]) == (452, "4.2.2")
    await c.cmd("RSET")
    # bigger than the whole quota with no SIZE: permanent failure after the data
    await env.app.directory.set_quota("bob@example.test", 100)
    await c.cmd("MAIL FROM:<x@pass.test>")
    assert (await c.cmd("RCPT TO:<bob@example.test>"))[0] == 250
    await c.cmd("DATA")
    code, text = await c.cmd(big + b".")
    assert (code, text[:5]) == (552, "5.2.2")
    await c.close()
    assert len(await stored(env, "alice")) == 1
    assert await stored(env, "bob") == []


async def test_forged_authentication_results_removed(env):
    msg = (b"Authentication-Results: mail.example.test; spf=pass smtp.mailfrom=evil@bank.test\r\n"
           b"Authentication-Results: other.test;\r\n\tdkim=pass\r\n" + MSG)
    await _send(env, "x@fail.test", ["alice@example.test"], msg)
    [raw] = await stored(env, "alice")
    assert b"evil@bank.test" not in raw
    assert b"Authentication-Results: other.test;\r\n\tdkim=pass\r\n" in raw
    assert raw.count(b"Authentication-Results: mail.example.test;") == 1


async def test_aiosmtplib_starttls_pipelining(env):
    host, port = env.address("mx")
    client = aiosmtplib.SMTP(hostname=host, port=port, tls_context=env.client_tls(),
                             start_tls=True, timeout=30)
    async with client:
        await client.ehlo()
        assert client.supports_extension("pipelining")
        errors, _ = await client.sendmail("x@pass.test", ["alice@example.test",
                                                          "bob@example.test"], MSG)
        assert errors == {}
        # 8-bit body
        errors, _ = await client.sendmail("x@pass.test", ["carol@example.test"],
                                          "Subject: ü\r\n\r\nGrüße\r\n".encode(),
                                          mail_options=["BODY=8BITMIME"])
        assert errors == {}
    assert len(await stored(env, "alice")) == len(await stored(env, "bob")) == 1
    assert "Grüße".encode() in (await stored(env, "carol"))[0]


async def test_tls_required_refuses_mail_before_starttls(make_env):
    async with make_env("mx", overrides={"smtp": {"mx": {"tls": "required"}}}) as env:
        c = await RawClient.connect(env.address("mx"))
        await c.reply()
        await c.cmd("EHLO client.test")
        assert await c.cmd("MAIL FROM:<x@pass.test>") == (
            530, "5.7.0 Must issue a STARTTLS command first")
        await c.close()
        assert await _send(env, "x@pass.test", ["alice@example.test"]) == {}


async def test_message_rate_limit(make_env):
    async with make_env("mx", overrides={"smtp": {"mx": {"max_messages_per_ip": 2}}}) as env:
        c = await RawClient.connect(env.address("mx"))
        await c.reply()
        await c.cmd("EHLO client.test")
        for _ in range(2):
            assert (await c.cmd("MAIL FROM:<x@pass.test>"))[0] == 250
            await c.cmd("RSET")
        assert await c.cmd("MAIL FROM:<x@pass.test>") == (
            450, "4.7.1 Too many messages from your address, try again later")
        await c.close()


async def test_connection_limit_per_ip(make_env):
    async with make_env("mx", overrides={"limits": {"max_connections_per_ip": 2}}) as env:
        first = [await RawClient.connect(env.address("mx")) for _ in range(2)]
        for c in first:
            assert (await c.reply())[0] == 220
        extra = await RawClient.connect(env.address("mx"))
        code, text = await extra.reply()
        assert code == 421 and "too many connections" in text
        await extra.close()
        await first[0].close()
        # a slot is free again once the first session ended
        for _ in range(100):
            again = await RawClient.connect(env.address("mx"))
            code, _ = await again.reply()
            await again.close()
            if code == 220:
                break
            await asyncio.sleep(0.05)
        assert code == 220
        await first[1].close()


async def test_proxy_protocol(make_env):
    async with make_env("mx", overrides={"smtp": {"mx": {"proxy_protocol": True}}}) as env:
        host, port = env.address("mx")
        c = await RawClient.connect((host, port))
        await c.send(b"PROXY TCP4 192.0.2.7 127.0.0.1 40000 25\r\n")
        assert (await c.reply())[0] == 220
        await c.cmd("EHLO client.test")
        await c.cmd("MAIL FROM:<x@pass.test>")
        await c.cmd("RCPT TO:<alice@example.test>")
        await c.cmd("DATA")
        assert (await c.cmd(MSG + b"."))[0] == 250
        await c.close()
        [raw] = await stored(env, "alice")
        assert b"(192.0.2.7)" not in raw and b"([192.0.2.7])" in raw
        # SPF was evaluated for the proxied client, which pass.test does not allow
        assert b"spf=fail smtp.mailfrom=x@pass.test" in raw
        # STARTTLS works behind the PROXY header too (v2 this time)
        import ipaddress
        import struct
        v2 = (b"\r\n\r\n\x00\r\nQUIT\n" + b"\x21\x11" + struct.pack("!H", 12)
              + ipaddress.ip_address("198.51.100.9").packed + ipaddress.ip_address("127.0.0.1").packed
              + struct.pack("!HH", 40001, 25))
        c = await RawClient.connect((host, port))
        await c.send(v2)
        assert (await c.reply())[0] == 220
        await c.cmd("EHLO client.test")
        assert (await c.cmd("STARTTLS"))[0] == 220
        await c.writer.start_tls(env.client_tls())
        await c.cmd("EHLO client.test")
        await c.send(b"MAIL FROM:<x@pass.test>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\n")
        assert [r[0] for r in await c.replies(3)] == [250, 250, 354]
        assert (await c.cmd(MSG + b"."))[0] == 250
        await c.close()
        [raw] = await stored(env, "bob")
        assert b"([198.51.100.9])" in raw and b"with ESMTPS id" in raw


async def test_command_timeout(make_env):
    async with make_env("mx", overrides={"limits": {"command_timeout": "1s"}}) as env:
        c = await RawClient.connect(env.address("mx"))
        await c.reply()
        assert await c.reply() == (421, "4.4.2 Timeout waiting for input, closing connection")
        await c.close()


async def test_dsn_parameters_accepted(env):
    c = await RawClient.connect(env.address("mx"))
    await c.reply()
    await c.cmd("EHLO client.test")
    assert (await c.cmd("MAIL FROM:<x@pass.test> RET=HDRS ENVID=QQ314159"))[0] == 250
    assert (await c.cmd("RCPT TO:<alice@example.test> NOTIFY=SUCCESS,FAILURE "
                        "ORCPT=rfc822;alice@example.test"))[0] == 250
    assert (await c.cmd("RCPT TO:<bob@example.test> NOTIFY=BOGUS"))[0] == 501
    await c.cmd("DATA")
    assert (await c.cmd(MSG + b"."))[0] == 250
    await c.close()


async def test_dmarc_reject_and_quarantine(env):
    def mail(domain):
        return f"From: boss@{domain}\r\nSubject: pay now\r\n\r\nx\r\n".encode()
    with pytest.raises(smtplib.SMTPDataError) as e:
        await _send(env, "boss@reject.test", ["alice@example.test"], mail("reject.test"))
    assert e.value.smtp_code == 550 and e.value.smtp_error.startswith(b"5.7.1")
    assert await stored(env, "alice") == []
    # p=quarantine: stored, in Junk
    assert await _send(env, "boss@quar.test", ["alice@example.test"], mail("quar.test")) == {}
    [raw] = await stored(env, "alice")
    assert b"dmarc=fail" in raw and b"spf=fail" in raw
    async with env.app.db.read() as conn:
        from sqlalchemy import select

        from mailserver.store import schema
        mb, mm = schema.mailboxes, schema.mailbox_messages
        roles = (await conn.execute(select(mb.c.role).select_from(
            mm.join(mb, (mm.c.mailbox_id == mb.c.id) & (mm.c.account_id == mb.c.account_id)))
            .where(mm.c.account_id == env.account_ids["alice"]))).scalars().all()
    assert roles == ["junk"]


async def test_dmarc_policy_is_configurable(make_env):
    async with make_env("mx", overrides={"smtp": {"mx": {"dmarc_reject": "quarantine"}}}) as env:
        msg = b"From: boss@reject.test\r\nSubject: x\r\n\r\nx\r\n"
        assert await _send(env, "boss@reject.test", ["alice@example.test"], msg) == {}
        [raw] = await stored(env, "alice")
        assert b"dmarc=fail" in raw


async def test_stop_tells_idle_sessions_421_and_finishes_transactions(make_env):
    async with make_env("mx") as env:
        idle = await RawClient.connect(env.address("mx"))
        await idle.reply()
        await idle.cmd("EHLO client.test")
        busy = await RawClient.connect(env.address("mx"))
        await busy.reply()
        await busy.send(b"EHLO client.test\r\nMAIL FROM:<x@pass.test>\r\n"
                        b"RCPT TO:<alice@example.test>\r\nDATA\r\n")
        await busy.replies(4)
        stopping = asyncio.create_task(env.running.pop("mx").stop())
        code, text = await idle.reply()
        assert (code, text[:5]) == (421, "4.3.2")
        # the session inside DATA may still finish its message: it is stored and acknowledged
        assert (await busy.cmd(MSG + b"."))[0] == 250
        assert (await busy.cmd("QUIT"))[0] in (221, 421)
        await stopping
        await idle.close()
        await busy.close()
        assert len(await stored(env, "alice")) == 1


async def test_partial_failure_goes_to_the_queue(any_db_env):
    """One reply for two recipients: alice is stored, bob's delivery fails (quota) after the
    data — bob's copy is handed to the outbound queue (retry, then bounce) before the 250."""
    env = any_db_env
    await env.app.directory.set_quota("bob@example.test", 100)
    c = await RawClient.connect(env.address("mx"))
    await c.reply()
    await c.cmd("EHLO client.test")
    await c.send(b"MAIL FROM:<x@pass.test> RET=HDRS\r\nRCPT TO:<alice@example.test>\r\n"
                 b"RCPT TO:<bob@example.test> NOTIFY=FAILURE\r\nDATA\r\n")
    assert [r[0] for r in await c.replies(4)] == [250, 250, 250, 354]
    assert (await c.cmd(MSG + b"."))[0] == 250
    await c.close()
    assert len(await stored(env, "alice")) == 1 and await stored(env, "bob") == []
    from sqlalchemy import select

    from mailserver.store import schema
    async with env.app.db.read() as conn:
        rows = (await conn.execute(select(
            schema.queue_recipients.c.recipient, schema.queue_recipients.c.notify,
            schema.queue_messages.c.sender, schema.queue_messages.c.ret).select_from(
            schema.queue_recipients.join(schema.queue_messages)))).all()
    assert [tuple(r) for r in rows] == [("bob@example.test", "FAILURE", "x@pass.test", "HDRS")]


async def test_tls_none_offers_no_starttls(make_env):
    async with make_env("mx", overrides={"smtp": {"mx": {"tls": "none"}}}) as env:
        def run():
            with smtplib.SMTP(*env.address("mx"), timeout=30) as s:
                s.ehlo()
                assert not s.has_extn("starttls")
                assert s.docmd("STARTTLS")[0] == 502
                return s.sendmail("x@pass.test", ["alice@example.test"], MSG)
        assert await asyncio.to_thread(run) == {}
