"""The maildrop lock across sessions and daemons (SQLite and PostgreSQL), bad input, and
failed-login throttling. After every kind of abuse the daemon must still serve a new client."""

from __future__ import annotations

import asyncio

from pop3_client import LineClient

from mailserver.app import open_app
from mailserver.auth.throttle import MemoryLoginThrottle, ThrottlePolicy
from mailserver.servers.pop3 import LEASE_NAME
from mailserver.servers.pop3 import start as start_pop3
from mailserver.store.locks import holder_of


async def deliver(env, raw: bytes, user: str = "alice") -> None:
    assert (await env.app.deliverer.deliver(raw, [env.login(user)])).all_delivered


async def still_serves(env) -> None:
    c = await LineClient.connect(env, tls=True)
    assert (await c.login(env, "carol")).startswith(b"+OK")
    assert (await c.cmd("QUIT")).startswith(b"+OK")
    await c.close()


# ------------------------------------------------------------------------------------------------
# [IN-USE]
# ------------------------------------------------------------------------------------------------

async def test_second_session_gets_in_use(pg_or_sqlite_env) -> None:
    env = pg_or_sqlite_env
    await deliver(env, b"Subject: x\r\n\r\nbody\r\n")
    first = await LineClient.connect(env, tls=True)
    assert (await first.login(env)).startswith(b"+OK")
    second = await LineClient.connect(env, tls=True)
    assert (await second.login(env)).startswith(b"-ERR [IN-USE]")
    # another account is not affected
    other = await LineClient.connect(env, tls=True)
    assert (await other.login(env, "bob")).startswith(b"+OK")
    assert (await first.cmd("DELE 1")).startswith(b"+OK")
    assert (await first.cmd("QUIT")).startswith(b"+OK")
    await first.close()
    # released at QUIT: the second client may now log in (same connection, after the failure)
    assert (await second.login(env)).startswith(b"+OK maildrop has 0 messages")
    await second.cmd("QUIT")
    await second.close()
    await other.close()


async def test_lock_holds_across_two_daemons_on_one_database(pg_or_sqlite_env) -> None:
    """Two Apps (two engines, as two processes would have) on one database."""
    env = pg_or_sqlite_env
    account = env.account_ids["alice"]
    app2 = await open_app(env.app.config)
    try:
        daemon2 = await start_pop3(app2, app2.config.pop3)
        try:
            first = await LineClient.connect(env, tls=True)
            assert (await first.login(env)).startswith(b"+OK")
            assert await holder_of(env.app.db, account, LEASE_NAME) is not None
            host, port = next(name for lst, name in daemon2.group.bound if lst.implicit_tls)[:2]
            r, w = await asyncio.open_connection(host, port, ssl=env.client_tls())
            second = LineClient(r, w)
            assert (await second.line()).startswith(b"+OK")
            assert (await second.login(env)).startswith(b"-ERR [IN-USE]")
            await first.cmd("QUIT")
            await first.close()
            assert (await second.login(env)).startswith(b"+OK")
            await second.cmd("QUIT")
            await second.close()
        finally:
            await daemon2.stop()
    finally:
        await app2.close()
    assert await holder_of(env.app.db, account, LEASE_NAME) is None


# ------------------------------------------------------------------------------------------------
# Bad input
# ------------------------------------------------------------------------------------------------

async def test_bad_input_gets_err_and_daemon_keeps_serving(env) -> None:
    await deliver(env, b"Subject: x\r\n\r\nbody\r\n")
    c = await LineClient.connect(env, tls=True)
    assert (await c.cmd(b"X" * 5000)).startswith(b"-ERR")  # long line
    assert (await c.cmd("FROBNICATE")).startswith(b"-ERR")  # unknown command
    assert (await c.cmd("STAT")).startswith(b"-ERR")  # TRANSACTION command before login
    assert (await c.cmd(b"US\x00ER alice")).startswith(b"-ERR")  # NUL byte
    assert (await c.cmd(b"\xff\xfe\x80garbage")).startswith(b"-ERR")
    assert (await c.cmd("PASS nouser")).startswith(b"-ERR")  # PASS without USER
    assert (await c.login(env)).startswith(b"+OK")  # the session itself still works
    assert (await c.cmd("RETR 99")).startswith(b"-ERR")
    assert (await c.cmd("RETR -1")).startswith(b"-ERR")
    assert (await c.cmd("TOP 1")).startswith(b"-ERR")
    assert (await c.cmd("USER bob")).startswith(b"-ERR")  # AUTHORIZATION command after login
    await c.close()
    await still_serves(env)


async def test_too_many_bad_commands_close_without_deleting(env) -> None:
    await deliver(env, b"Subject: x\r\n\r\nbody\r\n")
    c = await LineClient.connect(env, tls=True)
    assert (await c.login(env)).startswith(b"+OK")
    assert (await c.cmd("DELE 1")).startswith(b"+OK")
    for _ in range(10):
        reply = await c.cmd("GARBAGE")
        assert reply.startswith(b"-ERR")
    assert b"closing" in reply
    assert await c.closed_by_server()
    await still_serves(env)
    c = await LineClient.connect(env, tls=True)
    assert (await c.login(env)).startswith(b"+OK maildrop has 1 message")
    await c.close()


async def test_endless_line_and_binary_flood(env) -> None:
    c = await LineClient.connect(env, tls=True)
    c.send(bytes(range(256)) * 4000)  # a megabyte of binary without a sensible line
    c.send(b"\r\n")
    reply = await c.line()
    assert reply.startswith(b"-ERR")
    await c.close()
    c = await LineClient.connect(env)
    c.send(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 300 + b"\r\n")  # TLS on 110
    assert (await c.line()).startswith(b"-ERR")
    await c.close()
    await still_serves(env)


async def test_client_vanishing_mid_retr(env) -> None:
    raw = b"Subject: big\r\n\r\n" + b"0123456789abcdef\r\n" * 200_000
    await deliver(env, raw)
    env.running["pop3"].stream_threshold = 0
    c = await LineClient.connect(env, tls=True)
    assert (await c.login(env)).startswith(b"+OK")
    assert (await c.cmd("DELE 1")).startswith(b"+OK")
    assert (await c.cmd("RSET")).startswith(b"+OK")
    c.send(b"RETR 1\r\nQUIT\r\n")
    await c.reader.readexactly(1000)
    c.writer.transport.abort()
    await still_serves(env)
    c = await LineClient.connect(env, tls=True)
    for _ in range(100):  # the aborted session may still be winding down and hold the lock
        reply = await c.login(env)
        if not reply.startswith(b"-ERR [IN-USE]"):
            break
        await asyncio.sleep(0.1)
    assert reply.startswith(b"+OK maildrop has 1 message")
    await c.close()


# ------------------------------------------------------------------------------------------------
# Throttling
# ------------------------------------------------------------------------------------------------

async def test_failed_logins_are_throttled(env) -> None:
    daemon = env.running["pop3"]
    daemon.throttle.policy = ThrottlePolicy(free_failures=1, base_delay=0.01, max_delay=0.05,
                                            lockout_after=3, lockout=600)
    c = await LineClient.connect(env, tls=True)
    for _ in range(3):
        assert (await c.cmd(f"USER {env.login('alice')}")).startswith(b"+OK")
        assert (await c.cmd("PASS wrong")).startswith(b"-ERR [AUTH]")
    await c.close()
    # locked out: even the right password is refused, without being checked, and the
    # connection is closed
    c = await LineClient.connect(env, tls=True)
    reply = await c.login(env)
    assert reply.startswith(b"-ERR [SYS/TEMP]") and b"too many failed logins" in reply
    assert await c.closed_by_server()
    # the lock-out is per network and per login: from loopback everyone is locked now
    c = await LineClient.connect(env, tls=True)
    assert (await c.login(env, "bob")).startswith(b"-ERR [SYS/TEMP]")
    await c.close()
    # a fresh budget (the lock-out above lasts 600 s, in the store when the throttle is shared)
    daemon.throttle = MemoryLoginThrottle()
    await still_serves(env)


async def test_auth_failures_per_connection_close_it(env) -> None:
    c = await LineClient.connect(env, tls=True)
    limit = env.app.config.limits.max_auth_failures
    daemon = env.running["pop3"]
    daemon.throttle.policy = ThrottlePolicy(free_failures=100, lockout_after=100)
    for i in range(limit):
        assert (await c.cmd("USER alice@example.test")).startswith(b"+OK")
        reply = await c.cmd("PASS wrong")
        assert reply.startswith(b"-ERR [AUTH]")
    assert b"closing" in reply
    assert await c.closed_by_server()
    await still_serves(env)


async def test_random_command_soup_never_breaks_a_session(env, caplog) -> None:
    """Deterministic fuzz over the live daemon: valid commands, mangled ones and binary junk,
    in random splits, before and after login. No session may end in a handler exception."""
    import logging
    import random

    from mailserver.testing.daemons import PASSWORD

    await deliver(env, b"Subject: x\r\n\r\n.body\r\n")
    rnd = random.Random(7)
    words = ["USER", "PASS", "STAT", "LIST", "RETR", "TOP", "DELE", "RSET", "NOOP", "UIDL",
             "CAPA", "AUTH", "STLS", "UTF8", "APOP", "XTND", "", "QUIT"]
    args = ["", " 1", " 0", " -1", " 99999999999999999999", " 1 1", " 1 -5", " PLAIN",
            " PLAIN =", " LOGIN", " PLAIN !!!", " a b c", " \x00", " \xff", " " + "9" * 400]
    caplog.set_level(logging.ERROR, logger="mailserver")
    for _ in range(25):
        c = await LineClient.connect(env, tls=True)
        if rnd.random() < 0.6:
            c.send(f"USER {env.login('bob')}\r\nPASS {PASSWORD}\r\n".encode())
        soup = b""
        for _ in range(rnd.randint(1, 30)):
            if rnd.random() < 0.15:
                soup += bytes(rnd.getrandbits(8) for _ in range(rnd.randint(1, 300)))
            else:
                soup += (rnd.choice(words) + rnd.choice(args)).encode("latin-1")
            soup += rnd.choice([b"\r\n", b"\n", b"\r\n", b""])
        while soup:
            cut = rnd.randint(1, 64)
            c.send(soup[:cut])
            soup = soup[cut:]
            await asyncio.sleep(0)
        c.send(b"\r\nQUIT\r\n")
        try:
            await asyncio.wait_for(c.reader.read(), 30)
        except (ConnectionError, asyncio.TimeoutError):
            pass
        await c.close()
    await still_serves(env)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]
