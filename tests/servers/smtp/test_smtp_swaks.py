"""Interop with Debian's swaks: STARTTLS, implicit TLS, AUTH PLAIN/LOGIN, PIPELINING, against
the MX, submission and LMTP daemons. (swaks 20201014 in Debian 12 has no BDAT; BDAT is
covered by the raw-byte tests.)"""

from __future__ import annotations

import asyncio

import pytest

from smtp_testlib import PASSWORD, require_tool, stored


async def swaks(*args: str) -> tuple[int, str]:
    exe = require_tool("swaks", "Debian package swaks")
    proc = await asyncio.create_subprocess_exec(
        exe, "--no-hints", "--timeout", "30", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode("utf-8", "replace")


def server(env, name, tls=False):
    host, port = env.address(name, tls=tls)
    return ["--server", host, "--port", str(port)]


async def test_mx_starttls_pipelining(env):
    code, out = await swaks(*server(env, "mx"), "--tls", "--pipeline",
                            "--from", "x@pass.test", "--to", "alice@example.test,bob@example.test",
                            "--header", "Subject: swaks mx")
    assert code == 0, out
    assert "220 2.0.0 Ready to start TLS" in out and "TLS started" in out
    assert "250 2.0.0 OK id=" in out
    [raw] = await stored(env, "alice")
    assert b"Subject: swaks mx" in raw and b"with ESMTPS id" in raw
    assert len(await stored(env, "bob")) == 1


async def test_mx_relay_refused(env):
    code, out = await swaks(*server(env, "mx"), "--from", "x@pass.test",
                            "--to", "victim@elsewhere.test")
    assert code != 0
    assert "554 5.7.1 Relaying denied" in out


@pytest.mark.parametrize("mech", ["PLAIN", "LOGIN"])
async def test_submission_starttls_auth_pipelining(env, mech):
    code, out = await swaks(*server(env, "submission"), "--tls", "--pipeline",
                            "--auth", mech, "--auth-user", "alice@example.test",
                            "--auth-password", PASSWORD,
                            "--from", "alice@example.test", "--to", "carol@example.test",
                            "--header", "From: alice@example.test",
                            "--header", "Subject: swaks submission")
    assert code == 0, out
    assert "235 2.7.0 Authentication successful" in out
    [raw] = await stored(env, "carol")
    assert b"with ESMTPSA id" in raw and raw.lower().count(b"\nmessage-id: <") == 1


async def test_submission_implicit_tls_wrong_password(env):
    code, out = await swaks(*server(env, "submission", tls=True), "--tls-on-connect",
                            "--auth", "PLAIN", "--auth-user", "alice@example.test",
                            "--auth-password", "nope", "--from", "alice@example.test",
                            "--to", "carol@example.test")
    assert code != 0
    assert "535 5.7.8" in out
    assert await stored(env, "carol") == []


async def test_lmtp_socket(env):
    code, out = await swaks("--socket", env.address("lmtp"), "--protocol", "LMTP",
                            "--from", "x@pass.test", "--to", "bob@example.test",
                            "--header", "Subject: swaks lmtp")
    assert code == 0, out
    assert "250 2.0.0 <bob@example.test> delivered" in out
    assert len(await stored(env, "bob")) == 1
