"""The POP3 daemon over loopback with the standard library's poplib and a raw line client:
TLS modes, authentication, byte-exact RETR/TOP (small and streamed), UIDL, DELE/QUIT semantics,
pipelining and keep mode. The store is checked through its own services."""

from __future__ import annotations

import asyncio
import poplib

import pytest
from pop3_client import LineClient

from mailserver.store import mailboxes as mbx
from mailserver.store import messages as msg
from mailserver.store.changes import changes_since
from mailserver.store.mailstore import MailStore
from mailserver.testing.daemons import PASSWORD, daemon_env
from protocols.pop3 import message_response

MESSAGES = [
    b"From: a@example.org\r\nSubject: one\r\n\r\n.leading dot\r\nline 2\r\n..two dots\r\n",
    b"From: b@example.org\nSubject: two\n\nbare LF body\n.\nlast line without newline",
    b"Subject: three\r\n\r\n" + b"x" * 1000 + b"\r\n",
]


async def deliver(env, raw: bytes, user: str = "alice") -> None:
    result = await env.app.deliverer.deliver(raw, [env.login(user)])
    assert result.all_delivered


async def inbox_messages(env, user: str = "alice") -> list[msg.Message]:
    store = MailStore(env.app.db)
    account = env.account_ids[user]

    async def read(conn):
        inbox = await mbx.get_mailbox_by_role(conn, account, "inbox")
        return await msg.list_messages(conn, account, inbox.id)
    return await store.read(read)


def expected_body(raw: bytes) -> bytes:
    """What poplib hands back for RETR: the unstuffed lines of the CRLF-normalised message."""
    resp = message_response(raw, None)
    body = resp.split(b"\r\n", 1)[1][: -len(b".\r\n")]
    return body


def pop_lines(raw: bytes) -> list[bytes]:
    text = raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    if not text.endswith(b"\r\n"):
        text += b"\r\n"
    return text[:-2].split(b"\r\n")


# ------------------------------------------------------------------------------------------------
# poplib: plain + STLS, implicit TLS, TLS policy
# ------------------------------------------------------------------------------------------------

async def test_poplib_stls_session(env) -> None:
    for raw in MESSAGES:
        await deliver(env, raw)
    host, port = env.address("pop3")

    def session() -> dict:
        c = poplib.POP3(host, port, timeout=30)
        caps = c.capa()
        # [pop3] tls = "required": no cleartext passwords before STLS (RFC 2595 §3.2)
        assert "STLS" in caps and "USER" not in caps
        with pytest.raises(poplib.error_proto, match=r"\[AUTH\]"):
            c.user(env.login("alice"))
        c.stls(env.client_tls())
        caps = c.capa()
        assert "STLS" not in caps and "USER" in caps and caps["SASL"] == ["PLAIN", "LOGIN"]
        c.user(env.login("alice"))
        welcome = c.pass_(PASSWORD)
        out = {"welcome": welcome, "stat": c.stat(), "list": c.list()[1],
               "uidl": c.uidl()[1], "retr": [c.retr(i)[1] for i in (1, 2, 3)],
               "top0": c.top(1, 0)[1], "top1": c.top(2, 1)[1]}
        out["quit"] = c.quit()
        return out

    out = await asyncio.to_thread(session)
    assert out["welcome"].startswith(b"+OK")
    assert out["stat"][0] == 3
    assert [line.split()[0] for line in out["list"]] == [b"1", b"2", b"3"]
    for i, raw in enumerate(MESSAGES):
        assert out["retr"][i] == pop_lines(raw)
    assert out["top0"] == [b"From: a@example.org", b"Subject: one", b""]
    assert out["top1"] == [b"From: b@example.org", b"Subject: two", b"", b"bare LF body"]
    uidls = [line.split()[1] for line in out["uidl"]]
    assert len(set(uidls)) == 3
    assert out["quit"].startswith(b"+OK")
    assert len(await inbox_messages(env)) == 3  # nothing DELE'd, nothing gone


async def test_poplib_implicit_tls_and_sasl_plain(env) -> None:
    await deliver(env, MESSAGES[0])
    host, port = env.address("pop3", tls=True)

    def session() -> tuple:
        c = poplib.POP3_SSL(host, port, context=env.client_tls(), timeout=30)
        caps = c.capa()
        assert "STLS" not in caps and "USER" in caps  # already TLS
        import base64
        token = base64.b64encode(f"\0{env.login('alice')}\0{PASSWORD}".encode()).decode()
        resp = c._shortcmd(f"AUTH PLAIN {token}")
        stat = c.stat()
        c.quit()
        return resp, stat

    resp, stat = await asyncio.to_thread(session)
    assert resp.startswith(b"+OK") and stat[0] == 1


async def test_sasl_login_and_cancel(env) -> None:
    c = await LineClient.connect(env, tls=True)
    assert await c.cmd("AUTH LOGIN") == b"+ VXNlcm5hbWU6\r\n"  # "Username:"
    assert (await c.cmd("*")).startswith(b"-ERR")  # RFC 5034 §4: client cancels
    import base64
    assert await c.cmd("AUTH LOGIN") == b"+ VXNlcm5hbWU6\r\n"
    assert await c.cmd(base64.b64encode(env.login("bob").encode())) == b"+ UGFzc3dvcmQ6\r\n"
    assert (await c.cmd(base64.b64encode(PASSWORD.encode()))).startswith(b"+OK")
    assert (await c.cmd("STAT")) == b"+OK 0 0\r\n"
    assert (await c.cmd("QUIT")).startswith(b"+OK")
    await c.close()


async def test_starttls_mode_allows_plaintext_login(tmp_path) -> None:
    async with daemon_env(tmp_path, overrides={"pop3": {"tls": "starttls"}}) as env:
        await env.start("pop3")
        await deliver(env, MESSAGES[0])
        host, port = env.address("pop3")

        def session() -> int:
            c = poplib.POP3(host, port, timeout=30)
            assert "STLS" in c.capa()
            c.user(env.login("alice"))
            c.pass_(PASSWORD)
            n = c.stat()[0]
            c.quit()
            return n

        assert await asyncio.to_thread(session) == 1


async def test_wrong_password_and_unknown_user(env) -> None:
    c = await LineClient.connect(env, tls=True)
    assert await c.cmd(f"USER {env.login('alice')}") == b"+OK send PASS\r\n"
    assert (await c.cmd("PASS wrong")).startswith(b"-ERR [AUTH]")
    assert await c.cmd("USER nobody@example.test") == b"+OK send PASS\r\n"
    assert (await c.cmd("PASS wrong")).startswith(b"-ERR [AUTH]")
    assert (await c.login(env)).startswith(b"+OK")
    await c.close()


# ------------------------------------------------------------------------------------------------
# Byte-exact RETR / TOP, streaming, UIDL
# ------------------------------------------------------------------------------------------------

async def test_retr_bytes_are_exact(env) -> None:
    for raw in MESSAGES:
        await deliver(env, raw)
    c = await LineClient.connect(env, tls=True)
    assert (await c.login(env)).startswith(b"+OK")
    for i, raw in enumerate(MESSAGES, 1):
        c.send(b"RETR %d\r\n" % i)
        got = await c.multiline()
        assert got == message_response(raw, None)
    c.send(b"TOP 1 1\r\n")
    assert await c.multiline() == b"+OK\r\nFrom: a@example.org\r\nSubject: one\r\n\r\n..leading dot\r\n.\r\n"
    await c.cmd("QUIT")
    await c.close()


def big_message(size: int) -> bytes:
    # dots at line starts everywhere, bare LFs and CRLFs mixed, so chunk boundaries fall on
    # every kind of place: inside "\r\n", between "\r\n" and ".", inside "..".
    head = b"Subject: big\r\nFrom: x@example.org\r\n\r\n"
    lines = []
    n = 0
    i = 0
    while n < size:
        line = (b"." * (i % 3)) + b"line %d " % i + b"y" * (i % 97)
        line += b"\n" if i % 5 == 0 else b"\r\n"
        lines.append(line)
        n += len(line)
        i += 1
    return head + b"".join(lines) + b".last line, no newline"


@pytest.mark.parametrize("threshold", [0, 10 ** 9], ids=["streamed", "whole"])
async def test_large_message_streamed_byte_exact(env, threshold) -> None:
    from mailserver.servers import pop3 as pop3_server

    daemon = env.running["pop3"]
    daemon.stream_threshold = threshold
    raw = big_message(3 * pop3_server.STREAM_CHUNK + 12345)
    await deliver(env, raw)
    c = await LineClient.connect(env, tls=True)
    assert (await c.login(env)).startswith(b"+OK")
    c.send(b"RETR 1\r\n")
    got = await c.multiline()
    want = message_response(raw, None)
    status, body = got.split(b"\r\n", 1)
    assert body == want.split(b"\r\n", 1)[1]
    assert status.startswith(b"+OK ") and status.endswith(b" octets")
    c.send(b"TOP 1 3\r\n")
    assert await c.multiline() == message_response(raw, 3)
    c.send(b"TOP 1 0\r\n")
    assert await c.multiline() == message_response(raw, 0)
    assert (await c.cmd("NOOP")) == b"+OK\r\n"
    await c.cmd("QUIT")
    await c.close()


def test_stuffer_matches_the_protocol_writer_at_every_split() -> None:
    from mailserver.servers.pop3 import _Stuffer

    samples = [b"", b".", b"\r\n.\r\n", b"a\r", b"a\r\n", b"\n.\n..\r\n.", b".a\rb\n\r\n.",
               MESSAGES[0], MESSAGES[1], b"x\r\r\n.y"]
    for raw in samples:
        want = message_response(raw, None).split(b"\r\n", 1)[1]
        for size in range(1, max(len(raw), 1) + 1):
            s = _Stuffer()
            out = b"".join(s.feed(raw[i:i + size]) for i in range(0, len(raw), size))
            assert out + s.finish() == want, (raw, size)


async def test_uidl_stable_across_sessions_and_deletions(env) -> None:
    for raw in MESSAGES:
        await deliver(env, raw)

    async def uidls() -> dict[bytes, bytes]:
        c = await LineClient.connect(env, tls=True)
        assert (await c.login(env)).startswith(b"+OK")
        c.send(b"UIDL\r\n")
        body = await c.multiline()
        await c.cmd("QUIT")
        await c.close()
        return dict(line.split()[::-1] for line in body.split(b"\r\n")[1:-2])

    first = await uidls()
    assert len(first) == 3
    assert await uidls() == first
    c = await LineClient.connect(env, tls=True)
    await c.login(env)
    assert (await c.cmd("DELE 1")).startswith(b"+OK")
    assert (await c.cmd("QUIT")).startswith(b"+OK")
    await c.close()
    after = await uidls()
    assert set(after) < set(first) and len(after) == 2
    # the same messages keep their ids, only their numbers moved
    assert sorted(after) == sorted(u for u, n in first.items() if n != b"1")


# ------------------------------------------------------------------------------------------------
# DELE / QUIT / drop, keep mode, pipelining
# ------------------------------------------------------------------------------------------------

async def test_dele_then_quit_expunges_visibly(env) -> None:
    for raw in MESSAGES:
        await deliver(env, raw)
    before = await inbox_messages(env)
    store = MailStore(env.app.db)
    account = env.account_ids["alice"]
    state = (await store.read(lambda c: changes_since(c, account, 1))).new_modseq
    c = await LineClient.connect(env, tls=True)
    await c.login(env)
    assert (await c.cmd("DELE 1")).startswith(b"+OK")
    assert (await c.cmd("DELE 3")).startswith(b"+OK")
    assert (await c.cmd("RETR 1")).startswith(b"-ERR")  # marked messages are gone for RETR
    assert (await c.cmd("STAT")) == b"+OK 1 %d\r\n" % before[1].size
    # not yet: the store still holds everything until QUIT (RFC 1939 §6)
    assert len(await inbox_messages(env)) == 3
    assert (await c.cmd("QUIT")).startswith(b"+OK")
    assert await c.closed_by_server()
    left = await inbox_messages(env)
    assert [m.uid for m in left] == [before[1].uid]
    # an ordinary expunge: Membership destroyed rows with mailbox + uid (IMAP VANISHED)
    ch = await store.read(lambda conn: changes_since(conn, account, state))
    assert ch.new_modseq > state
    inbox_id = before[0].mailbox_id
    vanished = await store.vanished_since(account, inbox_id, state)
    assert sorted(vanished) == [before[0].uid, before[2].uid]


async def test_dropped_connection_deletes_nothing(env) -> None:
    for raw in MESSAGES:
        await deliver(env, raw)
    c = await LineClient.connect(env, tls=True)
    await c.login(env)
    assert (await c.cmd("DELE 1")).startswith(b"+OK")
    assert (await c.cmd("DELE 2")).startswith(b"+OK")
    await c.close()  # no QUIT
    # the lease is released once the server has seen the drop: a new session sees all three
    for _ in range(100):
        c = await LineClient.connect(env, tls=True)
        reply = await c.login(env)
        if not reply.startswith(b"-ERR [IN-USE]"):
            break
        await c.close()
        await asyncio.sleep(0.1)
    assert reply.startswith(b"+OK maildrop has 3 messages")
    assert (await c.cmd("RSET")).startswith(b"+OK")
    await c.cmd("QUIT")
    await c.close()
    assert len(await inbox_messages(env)) == 3


async def test_rset_undoes_dele(env) -> None:
    await deliver(env, MESSAGES[0])
    c = await LineClient.connect(env, tls=True)
    await c.login(env)
    assert (await c.cmd("DELE 1")).startswith(b"+OK")
    assert (await c.cmd("RSET")).startswith(b"+OK maildrop has 1 message")
    assert (await c.cmd("QUIT")).startswith(b"+OK")
    await c.close()
    assert len(await inbox_messages(env)) == 1


async def test_maildrop_is_the_inbox_at_login(env) -> None:
    await deliver(env, MESSAGES[0])
    c = await LineClient.connect(env, tls=True)
    assert (await c.login(env)).startswith(b"+OK maildrop has 1 message")
    await deliver(env, MESSAGES[1])  # arrives during the session: not in this maildrop
    assert await c.cmd("STAT") == b"+OK 1 %d\r\n" % len(MESSAGES[0])
    assert (await c.cmd("DELE 1")).startswith(b"+OK")
    assert (await c.cmd("QUIT")).startswith(b"+OK")
    await c.close()
    left = await inbox_messages(env)
    assert len(left) == 1 and left[0].size == len(MESSAGES[1])


async def test_keep_mode_marks_seen_and_hides(env) -> None:
    await env.app.directory.set_pop3_keep(env.login("alice"), True)
    for raw in MESSAGES[:2]:
        await deliver(env, raw)
    c = await LineClient.connect(env, tls=True)
    await c.login(env)
    assert (await c.cmd("DELE 1")).startswith(b"+OK")
    assert (await c.cmd("QUIT")).startswith(b"+OK")
    await c.close()
    kept = await inbox_messages(env)
    assert len(kept) == 2  # still there for IMAP/JMAP…
    assert "$seen" in kept[0].keywords and "$pop3deleted" in kept[0].keywords
    assert "$seen" not in kept[1].keywords
    c = await LineClient.connect(env, tls=True)
    assert (await c.login(env)).startswith(b"+OK maildrop has 1 message")  # …not for POP3
    await c.cmd("QUIT")
    await c.close()


async def test_pipelined_commands_answered_in_order(env) -> None:
    for raw in MESSAGES:
        await deliver(env, raw)
    c = await LineClient.connect(env, tls=True)
    assert "PIPELINING" in (await c.cmd("CAPA")).decode() + (await c.multiline()).decode()
    c.send(f"USER {env.login('alice')}\r\nPASS {PASSWORD}\r\nSTAT\r\nLIST\r\nRETR 2\r\n"
           "TOP 1 0\r\nUIDL 3\r\nDELE 2\r\nBOGUS\r\nRETR 2\r\nNOOP\r\nQUIT\r\n".encode())
    assert (await c.line()) == b"+OK send PASS\r\n"
    assert (await c.line()).startswith(b"+OK maildrop has 3 messages")
    assert (await c.line()).startswith(b"+OK 3 ")
    assert (await c.multiline()).startswith(b"+OK 3 messages")
    assert await c.multiline() == message_response(MESSAGES[1], None)
    assert await c.multiline() == message_response(MESSAGES[0], 0)
    assert (await c.line()).startswith(b"+OK 3 ")
    assert (await c.line()) == b"+OK message 2 deleted\r\n"
    assert (await c.line()).startswith(b"-ERR")
    assert (await c.line()).startswith(b"-ERR message 2 already deleted")
    assert (await c.line()) == b"+OK\r\n"
    assert (await c.line()).startswith(b"+OK")
    assert await c.closed_by_server()
    assert len(await inbox_messages(env)) == 2


async def test_idle_timeout_closes_without_deleting(tmp_path) -> None:
    async with daemon_env(tmp_path, overrides={"limits": {"idle_timeout": "1s"}}) as env:
        await env.start("pop3")
        await deliver(env, MESSAGES[0])
        c = await LineClient.connect(env, tls=True)
        await c.login(env)
        assert (await c.cmd("DELE 1")).startswith(b"+OK")
        assert (await c.line()).startswith(b"-ERR")  # the server's goodbye after 1 s
        assert await c.closed_by_server()
        assert len(await inbox_messages(env)) == 1


async def test_starttls_discards_pipelined_plaintext(env) -> None:
    c = await LineClient.connect(env)
    # CVE-2011-0411 class: a command injected after STLS in clear must not run inside TLS
    c.send(b"STLS\r\nCAPA\r\n")
    assert (await c.line()).startswith(b"+OK")
    await c.writer.start_tls(env.client_tls())
    assert (await c.cmd("NOOP")).startswith(b"-ERR")  # NOOP is not valid before login…
    assert (await c.login(env)).startswith(b"+OK")  # …and no stray CAPA reply came first
    await c.cmd("QUIT")
    await c.close()


async def test_bad_tls_handshake_does_not_hurt_the_daemon(env) -> None:
    c = await LineClient.connect(env)
    assert (await c.cmd("STLS")).startswith(b"+OK")
    c.send(b"this is not a TLS ClientHello\r\n" * 10)
    assert await c.closed_by_server()
    c2 = await LineClient.connect(env, tls=True)
    assert (await c2.login(env)).startswith(b"+OK")
    await c2.close()


@pytest.mark.parametrize("threshold", [0, 10 ** 9], ids=["streamed", "whole"])
async def test_missing_blob_is_an_error_not_a_crash(blobs_env, threshold) -> None:
    env = blobs_env
    env.running["pop3"].stream_threshold = threshold
    await deliver(env, MESSAGES[0])
    await deliver(env, MESSAGES[2])
    missing = (await inbox_messages(env))[0]
    await env.app.blobs.delete(missing.blob_id)  # the store lost it
    c = await LineClient.connect(env, tls=True)
    await c.login(env)
    assert (await c.cmd("RETR 1")).startswith(b"-ERR [SYS/PERM]")
    assert (await c.cmd("TOP 1 0")).startswith(b"-ERR [SYS/PERM]")
    c.send(b"RETR 2\r\n")
    assert await c.multiline() == message_response(MESSAGES[2], None)
    assert (await c.cmd("QUIT")).startswith(b"+OK")
    await c.close()
