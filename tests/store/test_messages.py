"""Message services on both engines: append, copy, move, keywords, expunge, destroy, reads,
the change log, quota, and counters that always equal a recount."""

from __future__ import annotations

import hashlib
import random

import pytest
from sqlalchemy import func, select

from mailhelpers import create_account, make_raw, recount, stored_counters
from mailserver.message import parse_message
from mailserver.store import changes, messages, schema
from mailserver.store.mailstore import MailStore
from mailserver.store.messages import CannotCalculateChanges, QuotaExceeded


async def add(store: MailStore, acc: int, mailbox_id: int, raw: bytes | None = None, *,
              keywords=(), received_at: int = 1_700_000_000) -> tuple[int, int]:
    raw = raw if raw is not None else make_raw()
    parsed = parse_message(raw)
    blob_id = hashlib.sha256(raw).hexdigest()
    return await store.change(acc, lambda c, cs: messages.append(
        c, cs, mailbox_id, blob_id, parsed, keywords=keywords, received_at=received_at))


async def box(store: MailStore, acc: int, role: str) -> int:
    return (await store.get_mailbox_by_role(acc, role)).id


async def assert_counters_match(db, acc: int) -> None:
    async with db.read() as conn:
        assert await stored_counters(conn, acc) == await recount(conn, acc)


async def test_append_allocates_uids_modseq_and_counters(db, account):
    store = MailStore(db)
    inbox = await box(store, account, "inbox")
    before = (await store.mailbox_status(account, inbox)).highest_modseq
    e1, u1 = await add(store, account, inbox)
    e2, u2 = await add(store, account, inbox, keywords=["\\Seen", "Work"])
    e3, u3 = await add(store, account, inbox)
    assert (u1, u2, u3) == (1, 2, 3) and len({e1, e2, e3}) == 3
    st = await store.mailbox_status(account, inbox)
    assert (st.total, st.unseen, st.uid_next) == (3, 2, 4)
    assert st.highest_modseq > before
    msgs = await store.list_messages(account, inbox)
    assert [m.uid for m in msgs] == [1, 2, 3]
    assert msgs[1].keywords == {"$seen", "work"}
    assert msgs[0].modseq < msgs[1].modseq < msgs[2].modseq == st.highest_modseq
    emails = await store.get_emails(account, [e1])
    assert emails[e1].subject == "Hello" and emails[e1].mailboxes == {inbox: 1}
    assert emails[e1].from_ == [{"name": None, "email": "alice@example.org"}]
    async with db.read() as conn:
        refs = (await conn.execute(select(func.sum(schema.blobs.c.refcount)))).scalar_one()
        kinds = (await conn.execute(select(schema.changes.c.object_type, schema.changes.c.change)
                                    .where(schema.changes.c.modseq == msgs[0].modseq))).all()
    assert refs == 3
    assert {tuple(k) for k in kinds} >= {("Email", "c"), ("Membership", "c"), ("Mailbox", "u"),
                                          ("Thread", "c")}
    await assert_counters_match(db, account)


async def test_quota_exceeded_temporary_and_permanent(db):
    acc = await create_account(db, "q@example.com", quota=500)
    store = MailStore(db)
    inbox = await box(store, acc, "inbox")
    raw = make_raw(body="x" * 200 + "\r\n")
    await add(store, acc, inbox, raw)
    with pytest.raises(QuotaExceeded) as info:
        await add(store, acc, inbox, make_raw(body="y" * 200 + "\r\n"))
    assert not info.value.permanent
    with pytest.raises(QuotaExceeded) as info:
        await add(store, acc, inbox, make_raw(body="z" * 1000 + "\r\n"))
    assert info.value.permanent
    st = await store.mailbox_status(acc, inbox)
    assert (st.total, st.uid_next) == (1, 2)
    await assert_counters_match(db, acc)
    # a copy is not charged again: quota counts each email once per account
    await store.copy(acc, inbox, [1], await box(store, acc, "archive"))
    await assert_counters_match(db, acc)


async def test_copy_and_move_map_uids(db, account):
    store = MailStore(db)
    inbox, archive, trash = [await box(store, account, r) for r in ("inbox", "archive", "trash")]
    for _ in range(4):
        await add(store, account, inbox)
    await add(store, account, archive)  # archive uid 1 is taken
    mapping = await store.copy(account, inbox, [2, 3, 99], archive)
    assert mapping == [(2, 2), (3, 3)]
    # copying again reports the existing UIDs (an email sits once in a mailbox)
    assert await store.copy(account, inbox, [3], archive) == [(3, 3)]
    moved = await store.move(account, inbox, [1, 3], trash)
    assert moved == [(1, 1), (3, 2)]
    assert [u for u, _e, _m in await store.uid_map(account, inbox)] == [2, 4]
    async with db.read() as conn:
        n_emails = (await conn.execute(select(func.count()).select_from(schema.emails))).scalar()
        vanished = await changes.vanished_since(conn, account, inbox, 0)
    assert n_emails == 5 and vanished == [1, 3]
    await assert_counters_match(db, account)


async def test_keywords_follow_the_email_into_every_mailbox(db, account):
    store = MailStore(db)
    inbox, archive = await box(store, account, "inbox"), await box(store, account, "archive")
    e1, _ = await add(store, account, inbox)
    e2, _ = await add(store, account, inbox)
    await store.copy(account, inbox, [1], archive)
    res = await store.set_keywords(account, mailbox_id=inbox, uids=[1, 2], add=["\\Seen"])
    assert res.changed == {e1, e2} and res.keywords[e1] == {"$seen"}
    assert res.uids == {e1: 1, e2: 2}
    assert (await store.mailbox_status(account, inbox)).unseen == 0
    assert (await store.mailbox_status(account, archive)).unseen == 0
    st = await store.mailbox_status(account, archive)
    [m] = await store.get_messages_by_uid(account, archive, [1])
    assert m.modseq == st.highest_modseq and m.keywords == {"$seen"}
    # no-op change: nothing changes, no modseq bump for the messages
    res = await store.set_keywords(account, email_ids=[e1], add=["$SEEN"])
    assert res.changed == frozenset()
    res = await store.set_keywords(account, email_ids=[e1], replace=["$flagged", "custom"])
    assert res.keywords[e1] == {"$flagged", "custom"}
    assert (await store.mailbox_status(account, archive)).unseen == 1
    # CONDSTORE UNCHANGEDSINCE: uid 2 changed after the given modseq
    old = (await store.mailbox_status(account, inbox)).highest_modseq
    await store.set_keywords(account, mailbox_id=inbox, uids=[2], add=["$flagged"])
    res = await store.set_keywords(account, mailbox_id=inbox, uids=[1, 2], remove=["$flagged"],
                                   unchanged_since=old)
    assert res.conflicts == (2,) and res.changed == {e1}
    changed = await store.changed_since(account, inbox, old)
    assert [m.uid for m in changed] == [1, 2]
    await assert_counters_match(db, account)


async def test_expunge_destroys_orphans_and_never_reuses_uids(db, account):
    store = MailStore(db)
    inbox, archive = await box(store, account, "inbox"), await box(store, account, "archive")
    ids = [await add(store, account, inbox) for _ in range(4)]
    await store.copy(account, inbox, [4], archive)
    await store.set_keywords(account, mailbox_id=inbox, uids=[2, 3, 4], add=["$deleted"])
    state = (await store.mailbox_status(account, inbox)).highest_modseq
    assert await store.expunge(account, inbox, uids=[1, 2]) == [2]  # uid 1 lacks \Deleted
    assert await store.expunge(account, inbox) == [3, 4]
    _e, uid = await add(store, account, inbox)
    assert uid == 5
    assert await store.vanished_since(account, inbox, state) == [2, 3, 4]
    emails = await store.get_emails(account, [e for e, _u in ids])
    assert set(emails) == {ids[0][0], ids[3][0]}  # 2 and 3 destroyed; 4 lives in archive
    async with db.read() as conn:
        refs = (await conn.execute(select(func.sum(schema.blobs.c.refcount)))).scalar_one()
        ch = await changes.changes_since(conn, account, state)
    assert refs == 3
    assert sorted(ch["Email"].destroyed) == [ids[1][0], ids[2][0]]
    assert ids[3][0] in ch["Email"].updated
    await assert_counters_match(db, account)


async def test_destroy_emails_removes_every_membership(db, account):
    store = MailStore(db)
    inbox, archive = await box(store, account, "inbox"), await box(store, account, "archive")
    e1, _ = await add(store, account, inbox)
    await store.copy(account, inbox, [1], archive)
    state = (await store.mailbox_status(account, inbox)).highest_modseq
    assert await store.destroy_emails(account, [e1, 12345]) == [e1]
    assert await store.uid_map(account, inbox) == [] and await store.uid_map(account, archive) == []
    assert await store.vanished_since(account, archive, state) == [1]
    async with db.read() as conn:
        used = (await conn.execute(select(schema.accounts.c.used_bytes))).scalar_one()
        refs = (await conn.execute(select(func.sum(schema.blobs.c.refcount)))).scalar_one()
        ch = await changes.changes_since(conn, account, state, types=["Email", "Thread"])
    assert used == 0 and refs == 0
    assert ch["Email"].destroyed == [e1] and ch["Thread"].destroyed
    await assert_counters_match(db, account)


async def test_changes_since_semantics_paging_and_floor(db, account):
    store = MailStore(db)
    inbox = await box(store, account, "inbox")
    async with db.read() as conn:
        s0, _floor = await changes.account_state(conn, account)
    e1, _ = await add(store, account, inbox)
    e2, _ = await add(store, account, inbox)
    async with db.read() as conn:
        s1, _ = await changes.account_state(conn, account)
    await store.set_keywords(account, email_ids=[e1], add=["$seen"])
    e3, _ = await add(store, account, inbox)
    await store.set_keywords(account, email_ids=[e3], add=["$deleted"])
    await store.expunge(account, inbox)
    ch = await store.changes_since(account, s0, types=["Email"])
    assert ch["Email"].created == [e1, e2] and not ch["Email"].updated
    assert not ch["Email"].destroyed  # e3 created and destroyed inside the window
    ch = await store.changes_since(account, s1, types=["Email", "Mailbox"])
    assert ch["Email"].updated == [e1] and ch["Email"].destroyed == []
    assert ch["Mailbox"].updated == [inbox]
    page = await store.changes_since(account, s0, types=["Email"], max_changes=1)
    assert page.has_more and page["Email"].created == [e1]
    rest = await store.changes_since(account, page.new_modseq, types=["Email"])
    assert e2 in rest["Email"].created and not rest.has_more
    assert (await store.changes_since(account, rest.new_modseq)).by_type == {}
    await store.compact_changes(account, s1)
    with pytest.raises(CannotCalculateChanges):
        await store.changes_since(account, s0)
    with pytest.raises(CannotCalculateChanges):
        await store.vanished_since(account, inbox, s0)
    assert (await store.changes_since(account, s1))["Email"].updated == [e1]
    with pytest.raises(CannotCalculateChanges):
        await store.changes_since(account, 10**9)


async def test_list_sort_and_paging(db, account):
    store = MailStore(db)
    inbox = await box(store, account, "inbox")
    subjects = ["banana", "apple", "cherry"]
    for i, s in enumerate(subjects):
        await add(store, account, inbox, make_raw(s, frm=f"{'zyx'[i]}@example.org",
                                                   body="b" * (10 * (i + 1))),
                  received_at=1000 - i)
    by = lambda key, d="asc": store.list_messages(account, inbox, sort=[(key, d)])  # noqa: E731
    assert [m.uid for m in await by("subject")] == [2, 1, 3]
    assert [m.uid for m in await by("received_at")] == [3, 2, 1]
    assert [m.uid for m in await by("size", "desc")] == [3, 2, 1]
    assert [m.uid for m in await by("from")] == [3, 2, 1]
    page = await store.list_messages(account, inbox, sort=[("uid", "desc")], position=1, limit=1)
    assert [m.uid for m in page] == [2]
    assert [m.uid for m in await store.list_messages(account, inbox, uid_min=2)] == [2, 3]
    assert [m.uid for m in await store.get_messages_by_uid(account, inbox, [3, 1, 7])] == [1, 3]
    assert [(u, e) for u, e, _m in await store.uid_map(account, inbox)] == [(1, 1), (2, 2), (3, 3)]
    async with db.read() as conn:
        assert await messages.first_unseen_uid(conn, account, inbox) == 1


async def test_random_operations_keep_counters_exact(db):
    """A seeded random walk of ~200 operations; after it (and at checkpoints) every counter
    equals a recount, UIDs ascend per mailbox and are never reused, MODSEQ only grows."""
    rng = random.Random(1234)
    acc = await create_account(db, "walk@example.com")
    store = MailStore(db)
    boxes = [await box(store, acc, r) for r in ("inbox", "archive", "trash")]
    boxes.append(await store.create_mailbox(acc, "Projects/A"))
    issued: dict[int, set[int]] = {b: set() for b in boxes}
    last_uid = {b: 0 for b in boxes}
    last_modseq = 0

    def note(b: int, uid: int) -> None:
        assert uid > last_uid[b] and uid not in issued[b]
        issued[b].add(uid)
        last_uid[b] = uid

    for step in range(200):
        op = rng.choice(["append", "append", "append", "copy", "move", "flag", "flag",
                         "expunge", "destroy"])
        b = rng.choice(boxes)
        uids = [u for u, _e, _m in await store.uid_map(acc, b)]
        pick = rng.sample(uids, k=min(len(uids), rng.randint(1, 3))) if uids else []
        if op == "append":
            kw = rng.choice([(), ("$seen",), ("$deleted",), ("$seen", "$flagged")])
            _e, uid = await add(store, acc, b, make_raw(f"s{step % 7}"), keywords=kw)
            note(b, uid)
        elif op in ("copy", "move") and pick:
            dest = rng.choice([x for x in boxes if x != b])
            before = last_uid[dest]
            mapping = await (store.copy if op == "copy" else store.move)(acc, b, pick, dest)
            for _s, d in mapping:
                if d > before:
                    note(dest, d)
        elif op == "flag" and pick:
            kw = rng.choice(["$seen", "$deleted", "$flagged"])
            if rng.random() < 0.5:
                await store.set_keywords(acc, mailbox_id=b, uids=pick, add=[kw])
            else:
                await store.set_keywords(acc, mailbox_id=b, uids=pick, remove=[kw])
        elif op == "expunge":
            await store.expunge(acc, b)
        elif op == "destroy" and pick:
            msgs = await store.get_messages_by_uid(acc, b, pick)
            await store.destroy_emails(acc, [m.email_id for m in msgs])
        async with db.read() as conn:
            modseq, _ = await changes.account_state(conn, acc)
        assert modseq >= last_modseq  # (an op on an empty mailbox opens no transaction)
        last_modseq = modseq
        if step % 50 == 49:
            await assert_counters_match(db, acc)
    await assert_counters_match(db, acc)
    for b in boxes:
        st = await store.mailbox_status(acc, b)
        rows = await store.uid_map(acc, b)
        assert all(u < st.uid_next for u, _e, _m in rows)
        assert all(m <= st.highest_modseq for _u, _e, m in rows)
    async with db.read() as conn:
        blob_refs = (await conn.execute(select(func.coalesce(func.sum(
            schema.blobs.c.refcount), 0)))).scalar_one()
        n_emails = (await conn.execute(select(func.count()).select_from(schema.emails))).scalar()
        orphans = (await conn.execute(select(func.count()).select_from(schema.emails).where(
            ~select(schema.mailbox_messages.c.uid).where(
                schema.mailbox_messages.c.email_id == schema.emails.c.id).exists()))).scalar()
    assert blob_refs == n_emails and orphans == 0
