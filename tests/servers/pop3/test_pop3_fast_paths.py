"""The daemon's fast paths keep POP3 semantics: a login answered from the verified-login cache
(check + lease + snapshot in one group-committed transaction) still sees password changes,
disabled accounts and [IN-USE]; many logins at once share batches without mixing up their
maildrops; RETR read-ahead stays byte-exact in any order and reports a lost blob per message."""

from __future__ import annotations

import asyncio
import random

from pop3_client import LineClient

from mailserver.servers.pop3 import LEASE_NAME, READ_AHEAD_OCTETS
from mailserver.store import mailboxes as mbx
from mailserver.store import messages as msg
from mailserver.store.locks import holder_of
from mailserver.store.mailstore import MailStore
from mailserver.testing.daemons import PASSWORD
from protocols.pop3 import message_response


async def deliver(env, raw: bytes, user: str = "alice") -> None:
    assert (await env.app.deliverer.deliver(raw, [env.login(user)])).all_delivered


async def inbox_messages(env, user: str = "alice") -> list[msg.Message]:
    account = env.account_ids[user]

    async def read(conn):
        inbox = await mbx.get_mailbox_by_role(conn, account, "inbox")
        return await msg.list_messages(conn, account, inbox.id)
    return await MailStore(env.app.db).read(read)


async def login(env, user: str = "alice", password: str = PASSWORD) -> tuple[LineClient, bytes]:
    c = await LineClient.connect(env, tls=True)
    assert (await c.cmd(f"USER {env.login(user)}")).startswith(b"+OK")
    return c, await c.cmd(f"PASS {password}")


async def quit_(c: LineClient) -> None:
    assert (await c.cmd("QUIT")).startswith(b"+OK")
    await c.close()


async def test_cached_login_still_sees_password_changes_and_disabled(pg_or_sqlite_env) -> None:
    env = pg_or_sqlite_env
    directory = env.app.directory
    await deliver(env, b"Subject: one\r\n\r\nbody\r\n")
    c, reply = await login(env)
    assert reply.startswith(b"+OK maildrop has 1 message")
    await quit_(c)
    assert len(directory.login_cache) >= 1  # the next login is answered from the cache
    c, reply = await login(env)
    assert reply.startswith(b"+OK maildrop has 1 message")
    # a cached login still takes the maildrop lock
    second, refused = await login(env)
    assert refused.startswith(b"-ERR [IN-USE]")
    await quit_(c)
    await second.close()
    await directory.set_password(env.login("alice"), "the new password")
    c, reply = await login(env)
    assert reply.startswith(b"-ERR [AUTH]")
    await c.close()
    c, reply = await login(env, password="the new password")
    assert reply.startswith(b"+OK")
    await quit_(c)
    await directory.set_disabled(env.login("alice"), True)
    c, reply = await login(env, password="the new password")
    assert reply.startswith(b"-ERR [AUTH]")
    await c.close()
    assert await holder_of(env.app.db, env.account_ids["alice"], LEASE_NAME) is None


async def test_concurrent_logins_share_batches_and_keep_their_own_maildrops(env) -> None:
    """Three accounts with different maildrops log in at once, twice (the second round from
    the cache): each gets its own listing, and one [IN-USE] does not fail the others."""
    counts = {"alice": 1, "bob": 2, "carol": 3}
    for user, n in counts.items():
        for i in range(n):
            await deliver(env, b"Subject: %s %d\r\n\r\nbody\r\n" % (user.encode(), i), user)
    for _round in range(2):
        holder, _ = await login(env, "carol")  # carol's maildrop is busy this time
        results = await asyncio.gather(*(login(env, user) for user in counts))
        for (c, reply), (user, n) in zip(results, counts.items()):
            if user == "carol":
                assert reply.startswith(b"-ERR [IN-USE]")
                await c.close()
                continue
            assert reply.startswith(b"+OK maildrop has %d message" % n), (user, reply)
            assert (await c.cmd("STAT")).startswith(b"+OK %d " % n)
            await quit_(c)
        await quit_(holder)
    for user in counts:
        assert await holder_of(env.app.db, env.account_ids[user], LEASE_NAME) is None


def sample_messages(rng: random.Random) -> list[bytes]:
    out = []
    for i in range(24):
        size = rng.choice([10, 300, 5000, 40_000, READ_AHEAD_OCTETS // 3])
        body = b"".join(rng.choice([b"line\r\n", b".dot\r\n", b"bare lf\n", b"x" * 70 + b"\r\n"])
                        for _ in range(size // 8 + 1))
        out.append(b"Subject: m%d\r\n\r\n" % i + body[:size] + b"\r\n.\r\n"[: i % 4])
    return out


async def test_retr_read_ahead_is_byte_exact_in_any_order(blobs_env) -> None:
    env = blobs_env
    rng = random.Random(7)
    raws = sample_messages(rng)
    for raw in raws:
        await deliver(env, raw)
    c, reply = await login(env)
    assert reply.startswith(b"+OK maildrop has %d messages" % len(raws))
    order = [1, 2, 3, 2, 10, 4] + rng.sample(range(1, len(raws) + 1), len(raws))
    for n in order:
        c.send(b"RETR %d\r\n" % n)
        assert await c.multiline() == message_response(raws[n - 1], None), n
        if n % 5 == 0:  # TOP in between leaves the read-ahead alone
            c.send(b"TOP %d 1\r\n" % (n + 1 if n < len(raws) else 1))
            assert (await c.multiline()).startswith(b"+OK")
    # pipelined: many RETRs in one write
    c.send(b"".join(b"RETR %d\r\n" % n for n in range(1, len(raws) + 1)))
    for n in range(1, len(raws) + 1):
        assert await c.multiline() == message_response(raws[n - 1], None), n
    await quit_(c)


async def test_read_ahead_reports_a_lost_blob_for_that_message_only(blobs_env) -> None:
    env = blobs_env
    raws = [b"Subject: %d\r\n\r\nbody %d\r\n" % (i, i) for i in range(5)]
    for raw in raws:
        await deliver(env, raw)
    lost = (await inbox_messages(env))[2]
    await env.app.blobs.delete(lost.blob_id)  # the store lost message 3
    c, _ = await login(env)
    for n in (1, 2):
        c.send(b"RETR %d\r\n" % n)
        assert await c.multiline() == message_response(raws[n - 1], None)
    assert (await c.cmd("RETR 3")).startswith(b"-ERR [SYS/PERM]")
    for n in (4, 5):
        c.send(b"RETR %d\r\n" % n)
        assert await c.multiline() == message_response(raws[n - 1], None)
    await quit_(c)


# ------------------------------------------------------------------------------------------------
# The group commit of lease writes (_LeaseWrites) on the real database
# ------------------------------------------------------------------------------------------------

async def wait_idle(writes) -> None:
    for _ in range(1000):
        if writes._task is None and not writes._pending:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the lease writer did not finish")


async def test_a_failing_call_fails_alone_in_its_batch(pg_or_sqlite_env) -> None:
    from functools import partial

    from mailserver.servers.pop3 import _LeaseWrites, _take_maildrop

    env = pg_or_sqlite_env
    writes = _LeaseWrites(env.app.db)
    alice, bob = env.account_ids["alice"], env.account_ids["bob"]

    async def broken(txn, *args):
        raise ValueError("this call's own problem")

    took: list = []
    results = await asyncio.gather(
        writes.call(partial(_take_maildrop, keep=False, into=took), alice, LEASE_NAME, "h-a", 60),
        writes.call(broken),
        writes.call(partial(_take_maildrop, keep=False, into=[]), bob, LEASE_NAME, "h-b", 60),
        return_exceptions=True)
    assert results[0] is True and results[2] is True
    assert isinstance(results[1], ValueError)
    assert took and took[0].account_id == alice and took[0].entries == []
    assert await holder_of(env.app.db, alice, LEASE_NAME) == "h-a"
    assert await holder_of(env.app.db, bob, LEASE_NAME) == "h-b"
    from mailserver.store import locks

    assert await writes.call(locks.release, alice, LEASE_NAME, "h-a")
    assert await writes.call(locks.release, bob, LEASE_NAME, "h-b")


async def test_a_take_whose_session_was_cancelled_is_given_back(env) -> None:
    from functools import partial

    from mailserver.servers.pop3 import _LeaseWrites, _take_maildrop

    writes = _LeaseWrites(env.app.db)
    alice = env.account_ids["alice"]
    task = asyncio.create_task(writes.call(
        partial(_take_maildrop, keep=False, into=[]), alice, LEASE_NAME, "gone", 60))
    await asyncio.sleep(0)  # the call is queued and the batch started
    task.cancel()
    await wait_idle(writes)
    assert await holder_of(env.app.db, alice, LEASE_NAME) is None
    # and the maildrop is free for the next session
    c, reply = await login(env)
    assert reply.startswith(b"+OK")
    await quit_(c)
