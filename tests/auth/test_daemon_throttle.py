"""One failed-login budget across daemons: failures over SMTP submission and JMAP lock the
login out of IMAP and POP3 too (``App.login_throttle``, a ``StoreLoginThrottle``; the
cross-process sharing through the store is tested in test_store_throttle.py)."""

from __future__ import annotations

import asyncio
import base64
import imaplib
import poplib

import aiohttp
import aiosmtplib
import pytest

from mailserver.auth.throttle import ThrottlePolicy
from mailserver.testing.daemons import PASSWORD, daemon_env

USER = "carol@example.test"


async def test_failures_anywhere_lock_the_login_out_everywhere(tmp_path):
    async with daemon_env(tmp_path) as env:
        for name in ("submission", "jmap", "imap", "pop3"):
            await env.start(name)
        # the tarpit shortened so that the test is quick; lock-out at the 4th failure
        env.app.login_throttle.policy = ThrottlePolicy(base_delay=0.01, max_delay=0.01,
                                                       lockout_after=4, lockout=600)
        host, port = env.address("submission", tls=True)
        for _ in range(2):
            async with aiosmtplib.SMTP(hostname=host, port=port, use_tls=True,
                                       tls_context=env.client_tls(), timeout=30) as smtp:
                await smtp.ehlo()
                with pytest.raises(aiosmtplib.SMTPAuthenticationError):
                    await smtp.auth_plain(USER, "wrong")  # login() would try 2 mechanisms
        jhost, jport = env.address("jmap")
        wrong = "Basic " + base64.b64encode(f"{USER}:wrong".encode()).decode()
        async with aiohttp.ClientSession() as http:
            statuses = []
            for _ in range(3):
                async with http.get(f"http://{jhost}:{jport}/.well-known/jmap",
                                    headers={"Authorization": wrong}) as r:
                    statuses.append(r.status)
            # the 4th failure in all locks the login out: the next attempt is refused unchecked
            assert statuses == [401, 401, 429]

        def imap_login() -> str:
            ihost, iport = env.address("imap", tls=True)
            with imaplib.IMAP4_SSL(ihost, iport, ssl_context=env.client_tls()) as m:
                try:
                    m.login(USER, PASSWORD)  # the right password, refused all the same
                except imaplib.IMAP4.error as e:
                    return str(e)
                return "logged in"

        def pop3_login() -> str:
            phost, pport = env.address("pop3", tls=True)
            p = poplib.POP3_SSL(phost, pport, context=env.client_tls())
            try:
                p.user(USER)
                p.pass_(PASSWORD)
                return "logged in"
            except poplib.error_proto as e:
                return str(e)
            finally:
                p.close()

        assert "UNAVAILABLE" in await asyncio.to_thread(imap_login)
        assert "SYS/TEMP" in await asyncio.to_thread(pop3_login)
        # the client's network is locked out as well: another user from it waits too
        async with aiosmtplib.SMTP(hostname=host, port=port, use_tls=True,
                                   tls_context=env.client_tls(), timeout=30) as smtp:
            await smtp.ehlo()
            with pytest.raises(aiosmtplib.SMTPResponseException) as exc:
                await smtp.auth_plain("alice@example.test", PASSWORD)
            assert exc.value.code == 454
