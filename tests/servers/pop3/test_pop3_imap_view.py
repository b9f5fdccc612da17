"""POP3 deletions as IMAP sees them: an IMAP session that has the INBOX selected gets ordinary
EXPUNGE responses after a POP3 DELE + QUIT, and QRESYNC-style state moved on."""

from __future__ import annotations

import asyncio
import imaplib

import pytest
from pop3_client import LineClient

from mailserver import servers
from mailserver.testing.daemons import PASSWORD


async def test_pop3_dele_is_an_imap_expunge(env) -> None:
    if servers.resolve("imap") is None:
        pytest.skip("the IMAP daemon is not part of this tree")
    await env.start("imap")
    for i in range(3):
        raw = b"Subject: m%d\r\n\r\nbody %d\r\n" % (i, i)
        assert (await env.app.deliverer.deliver(raw, [env.login("alice")])).all_delivered
    host, port = env.address("imap", tls=True)
    imap = await asyncio.to_thread(imaplib.IMAP4_SSL, host, port,
                                   ssl_context=env.client_tls(), timeout=30)
    try:
        await asyncio.to_thread(imap.login, env.login("alice"), PASSWORD)
        typ, data = await asyncio.to_thread(imap.select, "INBOX")
        assert typ == "OK" and data == [b"3"]
        typ, data = await asyncio.to_thread(imap.uid, "SEARCH", "ALL")
        uids = data[0].split()
        assert len(uids) == 3

        c = await LineClient.connect(env, tls=True)
        assert (await c.login(env)).startswith(b"+OK maildrop has 3 messages")
        assert (await c.cmd("DELE 1")).startswith(b"+OK")
        assert (await c.cmd("DELE 3")).startswith(b"+OK")
        assert (await c.cmd("QUIT")).startswith(b"+OK")
        await c.close()

        expunged: list[bytes] = []
        for _ in range(100):  # the IMAP session reports it at its next command
            await asyncio.to_thread(imap.noop)
            expunged += [x for x in imap.response("EXPUNGE")[1] if x is not None]
            if len(expunged) >= 2:
                break
            await asyncio.sleep(0.1)
        assert len(expunged) == 2  # "* n EXPUNGE" for each, like any IMAP expunge
        typ, data = await asyncio.to_thread(imap.uid, "SEARCH", "ALL")
        assert data[0].split() == [uids[1]]  # the middle message is all that is left
    finally:
        try:
            await asyncio.to_thread(imap.logout)
        except Exception:
            pass
