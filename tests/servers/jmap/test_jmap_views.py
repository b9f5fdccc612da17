"""One store, many views: LMTP delivery, IMAP (imaplib) and JMAP on the same account, each
daemon a real listener on loopback.

- a message delivered over LMTP is pushed to a JMAP EventSource client and is then in JMAP;
- a flag set over IMAP is a keyword (and an Email change) in JMAP, and the reverse;
- an Email given a second mailbox over JMAP is one Email with two mailboxIds and one IMAP
  message (own UID) in each mailbox.
"""

from __future__ import annotations

import asyncio
import imaplib
import re
import smtplib
import time

from jmap_testlib import message
from mailserver.testing.daemons import PASSWORD

TIMEOUT = 30


async def test_lmtp_imap_jmap_views(jmap):
    env = jmap.env
    await env.start("lmtp")
    await env.start("imap")
    lmtp_host, lmtp_port = env.address("lmtp")
    imap_host, imap_port = env.address("imap", tls=True)

    # 1. LMTP delivery → JMAP push
    url = f"{jmap.base}/jmap/eventsource/?types=Email&closeafter=state&ping=0"
    async with jmap.http.get(url, headers={"Authorization": jmap.auth}) as resp:
        def send() -> float:
            with smtplib.LMTP(lmtp_host, lmtp_port, timeout=TIMEOUT) as s:
                s.sendmail("bob@example.test", ["alice@example.test"],
                           message("Over LMTP", msgid="lmtp@x"))
            return time.monotonic()
        sent_at = await asyncio.to_thread(send)
        body = await asyncio.wait_for(resp.content.read(), TIMEOUT)  # closeafter=state
        pushed_at = time.monotonic()
    assert b"event: state" in body and b'"Email"' in body
    print(f"LMTP 250 → JMAP push: {(pushed_at - sent_at) * 1000:.0f} ms")
    [eid] = (await jmap.ok("Email/query", {}))["ids"]
    inbox = await jmap.mailbox("inbox")
    archive = await jmap.mailbox("archive")

    imap = await asyncio.to_thread(imaplib.IMAP4_SSL, imap_host, imap_port,
                                   ssl_context=env.client_tls(), timeout=TIMEOUT)
    try:
        await asyncio.to_thread(imap.login, "alice@example.test", PASSWORD)
        await asyncio.to_thread(imap.select, "INBOX")

        async def flags(uid: bytes) -> str:
            typ, data = await asyncio.to_thread(imap.uid, "FETCH", uid, "(FLAGS)")
            assert typ == "OK"
            return data[0].decode()

        typ, data = await asyncio.to_thread(imap.uid, "SEARCH", "ALL")
        [uid] = data[0].split()

        # 2a. IMAP STORE → JMAP keyword + Email/changes
        state = (await jmap.ok("Email/get", {"ids": []}))["state"]
        typ, _ = await asyncio.to_thread(imap.uid, "STORE", uid, "+FLAGS", "(\\Seen Work)")
        assert typ == "OK"
        got = await jmap.ok("Email/get", {"ids": [eid], "properties": ["keywords"]})
        assert got["list"][0]["keywords"] == {"$seen": True, "work": True}
        ch = await jmap.ok("Email/changes", {"sinceState": state})
        assert ch["updated"] == [eid]
        boxes = await jmap.ok("Mailbox/get", {"ids": [inbox], "properties": ["unreadEmails"]})
        assert boxes["list"][0]["unreadEmails"] == 0

        # 2b. JMAP keyword → IMAP flag
        await jmap.ok("Email/set", {"update": {eid: {"keywords/$flagged": True,
                                                     "keywords/work": None}}})
        f = await flags(uid)
        assert "\\Flagged" in f and "\\Seen" in f and "Work" not in f

        # 3. one Email, two mailboxes, two IMAP UIDs
        await jmap.ok("Email/set", {"update": {eid: {f"mailboxIds/{archive}": True}}})
        got = await jmap.ok("Email/get", {"ids": [eid], "properties": ["mailboxIds"]})
        assert got["list"][0]["mailboxIds"] == {inbox: True, archive: True}
        typ, data = await asyncio.to_thread(imap.select, "Archive")
        assert typ == "OK" and data[0] == b"1"
        typ, data = await asyncio.to_thread(imap.uid, "FETCH", "1:*", "(UID FLAGS)")
        m = re.search(rb"UID (\d+)", data[0])
        assert m is not None
        assert "\\Flagged" in data[0].decode()  # keywords belong to the Email
        assert (await jmap.ok("Email/query", {"calculateTotal": True}))["total"] == 1
    finally:
        try:
            await asyncio.to_thread(imap.logout)
        except Exception:  # noqa: BLE001 - the assertion above is what matters
            pass
