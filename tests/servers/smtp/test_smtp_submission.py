"""The submission daemon (587 STARTTLS, 465 implicit TLS) against smtplib, aiosmtplib and raw
bytes."""

from __future__ import annotations

import asyncio
import base64
import smtplib
import time

import aiosmtplib
import pytest
from sqlalchemy import select

from mailserver.store import schema
from smtp_testlib import PASSWORD, RawClient, stored

ALICE = "alice@example.test"


def msg(frm=ALICE, to="bob@example.test", extra=b""):
    return (f"From: Alice <{frm}>\r\nTo: {to}\r\nSubject: hi\r\n".encode() + extra
            + b"\r\nbody\r\n")


def _submit(env, frm, to, message, *, user=ALICE, password=PASSWORD, implicit=False):
    def run():
        if implicit:
            s = smtplib.SMTP_SSL(*env.address("submission", tls=True), timeout=30,
                                 context=env.client_tls())
        else:
            s = smtplib.SMTP(*env.address("submission"), timeout=30)
            s.starttls(context=env.client_tls())
        with s:
            s.login(user, password)
            return s.sendmail(frm, to, message)
    return asyncio.to_thread(run)


async def _plain_session(env):
    c = await RawClient.connect(env.address("submission"))
    assert (await c.reply())[0] == 220
    return c


async def test_auth_needs_tls_and_mail_needs_auth(env):
    c = await _plain_session(env)
    await c.send(b"EHLO client.test\r\n")
    lines = []
    while True:
        line = await c.reader.readline()
        lines.append(line)
        if line[3:4] == b" ":
            break
    assert any(x[4:] == b"STARTTLS\r\n" for x in lines)
    assert not any(b"AUTH" in x for x in lines)
    auth = base64.b64encode(f"\0{ALICE}\0{PASSWORD}".encode()).decode()
    assert (await c.cmd(f"AUTH PLAIN {auth}"))[0] == 538
    assert await c.cmd(f"MAIL FROM:<{ALICE}>") == (530, "5.7.0 Authentication required")
    await c.close()


async def test_starttls_auth_plain_local_delivery_adds_headers(any_db_env):
    env = any_db_env
    assert await _submit(env, ALICE, ["bob@example.test"], msg()) == {}
    [raw] = await stored(env, "bob")
    head = raw.split(b"\r\n\r\n", 1)[0]
    # RFC 5321 §4.4: the final delivery writes Return-Path first
    assert head.startswith(b"Return-Path: <alice@example.test>\r\nReceived: from ")
    assert b"(authenticated as alice@example.test)" in head and b"with ESMTPSA id" in head
    assert b"\r\nMessage-ID: <" in head and b"@mail.example.test>\r\n" in head
    assert b"\r\nDate: " in head
    assert raw.endswith(msg())


async def test_existing_message_id_and_date_kept(env):
    m = msg(extra=b"Message-ID: <mine@example.test>\r\nDate: Mon, 1 Jan 2024 00:00:00 +0000\r\n")
    await _submit(env, ALICE, ["bob@example.test"], m)
    [raw] = await stored(env, "bob")
    assert raw.count(b"Message-ID:") == 1 and raw.count(b"\r\nDate:") == 1


async def test_implicit_tls_auth_login(env):
    def run():
        with smtplib.SMTP_SSL(*env.address("submission", tls=True), timeout=30,
                              context=env.client_tls()) as s:
            s.ehlo()
            assert "LOGIN" in s.esmtp_features["auth"]
            s.user, s.password = ALICE, PASSWORD
            s.auth("LOGIN", s.auth_login, initial_response_ok=False)
            return s.sendmail(ALICE, ["carol@example.test"], msg(to="carol@example.test"))
    assert await asyncio.to_thread(run) == {}
    assert len(await stored(env, "carol")) == 1


async def test_sender_must_be_owned(env):
    await env.app.directory.add_alias("sales@example.test", ALICE)
    # an alias of the user and a sub-address are hers
    assert await _submit(env, "sales@example.test", ["bob@example.test"],
                         msg(frm="sales@example.test")) == {}
    assert await _submit(env, "alice+lists@example.test", ["bob@example.test"],
                         msg(frm="alice+lists@example.test")) == {}
    with pytest.raises(smtplib.SMTPSenderRefused) as e:
        await _submit(env, "carol@example.test", ["bob@example.test"], msg())
    assert e.value.smtp_code == 553 and e.value.smtp_error.startswith(b"5.7.1")
    with pytest.raises(smtplib.SMTPDataError) as e2:
        await _submit(env, ALICE, ["bob@example.test"], msg(frm="carol@example.test"))
    assert e2.value.smtp_code == 553 and e2.value.smtp_error.startswith(b"5.7.1")
    with pytest.raises(smtplib.SMTPDataError) as e3:
        await _submit(env, ALICE, ["bob@example.test"], b"Subject: no from\r\n\r\nx\r\n")
    assert e3.value.smtp_code == 553
    assert len(await stored(env, "bob")) == 2


async def test_bad_password_and_failure_limit(env):
    c = await _plain_session(env)
    await c.cmd("EHLO client.test")
    assert (await c.cmd("STARTTLS"))[0] == 220
    await c.writer.start_tls(env.client_tls())
    await c.cmd("EHLO client.test")
    bad = base64.b64encode(f"\0{ALICE}\0wrong".encode()).decode()
    for _ in range(4):
        assert await c.cmd(f"AUTH PLAIN {bad}") == (535, "5.7.8 Authentication credentials invalid")
    # the 5th failure on this connection (limits.max_auth_failures) ends it
    code, text = await c.cmd(f"AUTH PLAIN {bad}")
    assert code == 421 and text.startswith("4.7.0")
    assert await c.reader.read() == b""
    await c.close()


async def test_failed_logins_are_throttled_across_connections(env):
    """After the free failures each further one is answered late (tarpit); a success for the
    user afterwards still works."""
    bad = base64.b64encode(f"\0{ALICE}\0wrong".encode()).decode()
    t0 = 0.0
    for i in range(4):
        c = await RawClient.connect(env.address("submission", tls=True), tls=env.client_tls())
        await c.reply()
        await c.cmd("EHLO client.test")
        t0 = time.monotonic()
        assert (await c.cmd(f"AUTH PLAIN {bad}"))[0] == 535
        await c.close()
    assert time.monotonic() - t0 >= 0.9  # the 4th failure waited (base_delay 1 s)
    assert await _submit(env, ALICE, ["bob@example.test"], msg(), implicit=True) == {}


async def test_auth_login_exchange_and_cancel(env):
    c = await RawClient.connect(env.address("submission", tls=True), tls=env.client_tls())
    await c.reply()
    await c.cmd("EHLO client.test")
    assert await c.cmd("AUTH LOGIN") == (334, base64.b64encode(b"Username:").decode())
    assert (await c.cmd("*"))[0] == 501
    assert (await c.cmd("AUTH LOGIN " + base64.b64encode(ALICE.encode()).decode()))[0] == 334
    assert (await c.cmd(base64.b64encode(PASSWORD.encode())))[0] == 235
    assert (await c.cmd("AUTH LOGIN"))[0] == 503  # already authenticated
    await c.close()


async def test_remote_recipient_is_queued_with_dsn_params(any_db_env):
    env = any_db_env
    host, port = env.address("submission", tls=True)
    async with aiosmtplib.SMTP(hostname=host, port=port, use_tls=True,
                               tls_context=env.client_tls(), timeout=30) as client:
        await client.login(ALICE, PASSWORD)
        errors, _ = await client.sendmail(
            ALICE, ["friend@remote.test", "bob@example.test"], msg(to="friend@remote.test"),
            mail_options=["RET=HDRS", "ENVID=env-42"],
            rcpt_options=["NOTIFY=SUCCESS,DELAY ORCPT=rfc822;friend@remote.test"])
        assert errors == {}
    assert len(await stored(env, "bob")) == 1
    qm, qr = schema.queue_messages, schema.queue_recipients
    async with env.app.db.read() as conn:
        msgs = (await conn.execute(select(qm))).all()
        rcpts = (await conn.execute(select(qr))).all()
    assert len(msgs) == 1 and len(rcpts) == 1
    m, r = msgs[0], rcpts[0]
    assert (m.sender, m.ret, m.envid, m.account_id) == (ALICE, "HDRS", "env-42",
                                                        env.account_ids["alice"])
    assert (r.recipient, r.domain, r.notify, r.orcpt) == (
        "friend@remote.test", "remote.test", "DELAY,SUCCESS", "rfc822;friend@remote.test")
    raw = await env.app.blobs.get(m.blob_id)
    assert raw.endswith(msg(to="friend@remote.test")) and b"Message-ID:" in raw


async def test_unknown_local_recipient(env):
    with pytest.raises(smtplib.SMTPRecipientsRefused) as e:
        await _submit(env, ALICE, ["nobody@example.test"], msg())
    assert e.value.recipients["nobody@example.test"][0] == 550


async def test_dkim_signed_with_both_keys_and_verifies(env, dns):
    """ed25519 and RSA signatures from the domain's keys, checked by our verifier against the
    records published on the loopback DNS server."""
    from mailserver.dkimkeys import dns_txt_record
    from mailserver.mailauth.dkimverify import verify_dkim
    from mailserver.mailauth.dns import Resolver

    records = []
    for selector, algorithm in (("ed", "ed25519-sha256"), ("rsa", "rsa-sha256")):
        key = await env.app.directory.add_dkim_key("example.test", selector, algorithm)
        rec = dns_txt_record("example.test", selector, algorithm, key.public_key)
        records.append(f"{selector}._domainkey TXT " + " ".join(f'"{s}"' for s in rec.strings))
    await asyncio.to_thread(dns.add_zones, {"example.test": records})
    assert await _submit(env, ALICE, ["friend@remote.test"], msg(to="friend@remote.test")) == {}
    qm = schema.queue_messages
    async with env.app.db.read() as conn:
        blob_id = (await conn.execute(select(qm.c.blob_id))).scalar_one()
    raw = await env.app.blobs.get(blob_id)
    assert raw.count(b"DKIM-Signature:") == 2
    results = await verify_dkim(raw, Resolver([dns.host], port=dns.port, timeout=2.0))
    assert sorted((r.result, r.domain, r.algorithm) for r in results) == [
        ("pass", "example.test", "ed25519-sha256"), ("pass", "example.test", "rsa-sha256")]
