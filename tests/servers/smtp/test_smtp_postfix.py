"""Interop with Debian's Postfix: a throwaway Postfix instance (its own config, queue and data
directories, ``postfix -c DIR``, on its own loopback port) relays into our MX over SMTP with
opportunistic STARTTLS, and delivers one address through our LMTP daemon."""

from __future__ import annotations

import asyncio
import os
import shutil
import smtplib
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from smtp_testlib import IN_CI, require_tool, stored

MASTER_CF = """\
127.0.0.1:{port} inet n - n - - smtpd
pickup    fifo  n - n 60 1 pickup
cleanup   unix  n - n - 0 cleanup
qmgr      fifo  n - n 300 1 qmgr
tlsmgr    unix  - - n 1000? 1 tlsmgr
rewrite   unix  - - n - - trivial-rewrite
bounce    unix  - - n - 0 bounce
defer     unix  - - n - 0 bounce
trace     unix  - - n - 0 bounce
verify    unix  - - n - 1 verify
flush     unix  n - n 1000? 0 flush
proxymap  unix  - - n - - proxymap
smtp      unix  - - n - - smtp
relay     unix  - - n - - smtp
showq     unix  n - n - - showq
error     unix  - - n - - error
retry     unix  - - n - - error
discard   unix  - - n - - discard
lmtp      unix  - - n - - lmtp
anvil     unix  - - n - 1 anvil
scache    unix  - - n - 1 scache
postlog   unix-dgram n - n - 1 postlogd
"""

MAIN_CF = """\
compatibility_level = 3.6
queue_directory = {base}/queue
data_directory = {base}/data
mail_owner = postfix
setgid_group = postdrop
myhostname = relay.pf.test
mydomain = pf.test
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
maillog_file_prefixes = /tmp
maillog_file = {base}/postfix.log
relay_domains = example.test
transport_maps = inline:{{ bob@example.test=lmtp:inet:127.0.0.1:{lmtp}, example.test=smtp:[127.0.0.1]:{mx} }}
smtp_tls_security_level = may
smtp_tls_loglevel = 1
smtp_dns_support_level = disabled
alias_maps =
alias_database =
local_recipient_maps =
biff = no
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Postfix:
    def __init__(self, mx: int, lmtp: int) -> None:
        self.exe = require_tool("postfix", "Debian package postfix")
        if os.geteuid() != 0:
            msg = "a throwaway Postfix instance needs root"
            if IN_CI:
                pytest.fail(msg)
            pytest.skip(msg)
        # not under pytest's tmp_path: its 0700 directories keep the postfix user out
        self.base = Path(tempfile.mkdtemp(prefix="mailserver-postfix-", dir="/tmp"))
        self.base.chmod(0o755)
        self.port = _free_port()
        (self.base / "conf").mkdir()
        (self.base / "queue").mkdir()
        (self.base / "data").mkdir()
        shutil.chown(self.base / "data", "postfix")
        (self.base / "conf" / "master.cf").write_text(MASTER_CF.format(port=self.port))
        (self.base / "conf" / "main.cf").write_text(
            MAIN_CF.format(base=self.base, mx=mx, lmtp=lmtp))

    def _postfix(self, *args: str) -> None:
        subprocess.run([self.exe, "-c", str(self.base / "conf"), *args], check=True,
                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=60)

    def start(self) -> None:
        try:
            self._postfix("start")
        except subprocess.CalledProcessError:
            raise RuntimeError("postfix did not start:\n" + self.log()) from None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), 1).close()
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("postfix is not listening:\n" + self.log())

    def stop(self) -> None:
        try:
            self._postfix("stop")
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired):
            pass
        shutil.rmtree(self.base, ignore_errors=True)

    def log(self) -> str:
        try:
            return (self.base / "postfix.log").read_text(errors="replace")
        except OSError:
            return ""


async def test_postfix_relays_into_mx_and_delivers_to_lmtp(make_env):
    async with make_env("mx", "lmtp", overrides={"lmtp": {"listen": ["127.0.0.1:0"]}}) as env:
        mx_port = env.address("mx")[1]
        lmtp_port = env.address("lmtp")[1]
        pf = Postfix(mx_port, lmtp_port)
        try:
            await asyncio.to_thread(pf.start)

            def submit():
                with smtplib.SMTP("127.0.0.1", pf.port, timeout=30) as s:
                    return s.sendmail(
                        "someone@pass.test", ["alice@example.test", "bob@example.test"],
                        b"From: someone@pass.test\r\nSubject: through postfix\r\n\r\nhello\r\n")
            assert await asyncio.to_thread(submit) == {}
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                if await stored(env, "alice") and await stored(env, "bob"):
                    break
                await asyncio.sleep(0.2)
            else:
                pytest.fail("not delivered in 60 s; postfix log:\n" + pf.log())
            [via_mx] = await stored(env, "alice")
            [via_lmtp] = await stored(env, "bob")
            log = pf.log()
        finally:
            await asyncio.to_thread(pf.stop)
    # through our MX: Postfix used STARTTLS, our trace and SPF result are on top
    assert via_mx.startswith(b"Return-Path: <someone@pass.test>\r\nReceived: from relay.pf.test")
    assert b"with ESMTPS id" in via_mx
    assert b"spf=pass smtp.mailfrom=someone@pass.test" in via_mx
    assert b"by relay.pf.test (Postfix)" in via_mx
    # through our LMTP
    assert b" with LMTP id " in via_lmtp and b"by relay.pf.test (Postfix)" in via_lmtp
    assert "status=sent" in log and "250 2.0.0 <bob@example.test> delivered" in log
