"""The one ingest path on both engines: fan-out, per-recipient outcomes, group commit."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import func, select

from mailhelpers import create_account, directory, make_raw, recount, stored_counters
from mailserver.blobs.fs import FileBlobStore
from mailserver.delivery import (
    DELIVERED,
    QUOTA_PERM,
    QUOTA_TEMP,
    UNKNOWN,
    Deliverer,
)
from mailserver.events import LocalChangeBus
from mailserver.store import schema
from mailserver.store.mailstore import MailStore


@pytest.fixture
async def env(db, tmp_path):
    bob = await create_account(db, "bob@example.com")
    carol = await create_account(db, "carol@example.com", quota=2000)
    d = directory(db)
    await d.add_alias("team@example.com", "bob@example.com")
    await d.add_alias("team@example.com", "carol@example.com")
    await d.add_alias("team@example.com", "ext@remote.example")
    bus = LocalChangeBus()
    blobs = FileBlobStore(tmp_path / "blobs", fsync=False)
    deliverer = Deliverer(db, blobs, d, bus)
    yield {"db": db, "bob": bob, "carol": carol, "deliverer": deliverer, "bus": bus,
           "blobs": blobs, "store": MailStore(db)}
    await deliverer.close()


async def test_alias_fan_out_stores_the_blob_once(env):
    db, dl = env["db"], env["deliverer"]
    raw = make_raw("to the team")
    async with env["bus"].subscribe(env["bob"]) as events:
        res = await dl.deliver(raw, ["team@example.com", "bob@example.com", "nobody@example.com"])
        ev = await asyncio.wait_for(events.__anext__(), 5)
    assert ev.account_id == env["bob"] and "Email" in ev.types
    team = res["team@example.com"]
    assert team.status == DELIVERED and {d.account_id for d in team.deliveries} == {
        env["bob"], env["carol"]}
    assert team.forwards == ("ext@remote.example",) and res.forwards == ("ext@remote.example",)
    # bob is reached twice (alias + direct) but gets the message once
    assert res["bob@example.com"].deliveries == tuple(
        d for d in team.deliveries if d.account_id == env["bob"])
    assert res["nobody@example.com"].status == UNKNOWN and res["nobody@example.com"].permanent
    assert await env["blobs"].get(res.blob_id) == raw
    async with db.read() as conn:
        refcount = (await conn.execute(select(schema.blobs.c.refcount))).scalar_one()
        n_emails = (await conn.execute(select(func.count()).select_from(schema.emails))).scalar()
    assert refcount == 2 and n_emails == 2


async def test_quota_outcomes_and_mailbox_choice(env):
    dl, store = env["deliverer"], env["store"]
    carol = env["carol"]
    big = make_raw(body="x" * 3000 + "\r\n")
    res = await dl.deliver(big, ["carol@example.com"])
    assert res["carol@example.com"].status == QUOTA_PERM
    ok = await dl.deliver(make_raw(body="y" * 1200 + "\r\n"), ["carol@example.com"],
                          mailbox="Archive")
    d = ok["carol@example.com"].deliveries[0]
    assert d.mailbox_id == (await store.get_mailbox_by_path(carol, "Archive")).id
    res = await dl.deliver(make_raw(body="z" * 1200 + "\r\n"), ["carol@example.com"])
    assert res["carol@example.com"].status == QUOTA_TEMP and res["carol@example.com"].temporary
    # by role, and an unknown name falls back to INBOX
    r1 = await dl.deliver(make_raw(), ["bob@example.com"], mailbox="junk")
    r2 = await dl.deliver(make_raw(), ["bob@example.com"], mailbox="No Such Folder",
                          keywords=["\\Seen"])
    bob = env["bob"]
    assert r1["bob@example.com"].deliveries[0].mailbox_id == (
        await store.get_mailbox_by_role(bob, "junk")).id
    inbox = (await store.get_mailbox_by_role(bob, "inbox")).id
    assert r2["bob@example.com"].deliveries[0].mailbox_id == inbox
    assert (await store.mailbox_status(bob, inbox)).unseen == 0


async def test_group_commit_isolates_a_failing_delivery(env):
    """Many concurrent deliveries share transactions; the quota failures inside a batch roll
    back only themselves, every acknowledged message is there, UIDs are dense and ascending."""
    db, dl = env["db"], env["deliverer"]
    n = 40
    raws = [make_raw(f"m{i}", body=("q" * 900 if i % 10 == 3 else "short") + "\r\n")
            for i in range(n)]

    async def one(i: int):
        return await dl.deliver(raws[i], ["bob@example.com", "carol@example.com"])

    results = await asyncio.gather(*(one(i) for i in range(n)))
    st = dl.committer.stats
    assert st.batches < n  # they were grouped
    bob_uids = sorted(r["bob@example.com"].deliveries[0].uid for r in results)
    assert bob_uids == list(range(1, n + 1))
    carol_ok = [r for r in results if r["carol@example.com"].ok]
    carol_bad = [r for r in results if not r["carol@example.com"].ok]
    assert carol_bad and all(r["carol@example.com"].status == QUOTA_TEMP for r in carol_bad)
    carol_uids = sorted(r["carol@example.com"].deliveries[0].uid for r in carol_ok)
    assert carol_uids == list(range(1, len(carol_ok) + 1))  # no gap from rolled-back ones
    for acc in (env["bob"], env["carol"]):
        async with db.read() as conn:
            assert await stored_counters(conn, acc) == await recount(conn, acc)
    async with db.read() as conn:
        refs = (await conn.execute(select(func.sum(schema.blobs.c.refcount)))).scalar_one()
        n_emails = (await conn.execute(select(func.count()).select_from(schema.emails))).scalar()
    assert refs == n_emails == n + len(carol_ok)


async def test_append_to_mailbox_and_cancellation_safety(env):
    dl, store, bob = env["deliverer"], env["store"], env["bob"]
    drafts = (await store.get_mailbox_by_role(bob, "drafts")).id
    d1 = await dl.append_to_mailbox(bob, drafts, make_raw("draft"), ["$draft", "\\Seen"], 1000)
    assert d1.uid == 1
    [m] = await store.get_messages_by_uid(bob, drafts, [1])
    assert m.keywords == {"$draft", "$seen"} and m.received_at == 1000
    from mailserver.store.mailboxes import MailboxNotFound
    with pytest.raises(MailboxNotFound):
        await dl.append_to_mailbox(bob, 9999, make_raw(), (), None)
    d2 = await dl.append_to_mailbox(bob, drafts, make_raw("after"), (), None)
    assert d2.uid == 2
