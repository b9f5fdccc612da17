"""Mailbox services on both engines."""

from __future__ import annotations

import pytest

from mailhelpers import make_raw
from mailserver.message import parse_message
from mailserver.store import mailboxes as mbx
from mailserver.store import messages
from mailserver.store.mailstore import MailStore


async def append(store, acc, mailbox_id, raw=None):
    raw = raw or make_raw()
    p = parse_message(raw)
    import hashlib
    return await store.change(acc, lambda c, cs: messages.append(
        c, cs, mailbox_id, hashlib.sha256(raw).hexdigest(), p, received_at=1))


def test_normalize_path():
    assert mbx.normalize_path("inbox") == "INBOX"
    assert mbx.normalize_path("Inbox/Sub") == "INBOX/Sub"
    assert mbx.normalize_path("a/b c/d") == "a/b c/d"
    for bad in ("", "a//b", "/a", "a/", "a\x01b", " ", "x" * 2000, "a\x7f"):
        with pytest.raises(mbx.InvalidMailboxName):
            mbx.normalize_path(bad)


async def test_create_hierarchy_duplicates_and_roles(db, account):
    store = MailStore(db)
    leaf = await store.create_mailbox(account, "Work/2026/Q4")
    boxes = {b.path: b for b in await store.list_mailboxes(account)}
    assert {"Work", "Work/2026", "Work/2026/Q4"} <= set(boxes)
    assert boxes["Work/2026/Q4"].id == leaf and boxes["Work/2026/Q4"].name == "Q4"
    assert boxes["Work/2026/Q4"].parent_id == boxes["Work/2026"].id
    assert boxes["Work/2026"].parent_id == boxes["Work"].id
    with pytest.raises(mbx.MailboxExists):
        await store.create_mailbox(account, "Work/2026")
    with pytest.raises(mbx.MailboxExists):
        await store.create_mailbox(account, "inbox")
    with pytest.raises(mbx.InvalidMailboxName):
        await store.create_mailbox(account, "Work//x")
    with pytest.raises(mbx.RoleInUse):
        await store.create_mailbox(account, "Sent2", role="sent")
    uv = {b.uidvalidity for b in await store.list_mailboxes(account)}
    assert len(uv) == len(await store.list_mailboxes(account))  # distinct UIDVALIDITY
    assert (await store.get_mailbox_by_path(account, "work/2026")) is None  # case-sensitive
    assert (await store.get_mailbox_by_path(account, "Inbox")).role == "inbox"


async def test_rename_moves_children_and_keeps_uidvalidity(db, account):
    store = MailStore(db)
    a = await store.create_mailbox(account, "A/B/C")
    top = (await store.get_mailbox_by_path(account, "A")).id
    uv = (await store.get_mailbox(account, top)).uidvalidity
    await store.rename_mailbox(account, top, "X/Y")
    paths = {b.path for b in await store.list_mailboxes(account)}
    assert {"X", "X/Y", "X/Y/B", "X/Y/B/C"} <= paths and "A" not in paths
    moved = await store.get_mailbox(account, top)
    assert moved.path == "X/Y" and moved.name == "Y" and moved.uidvalidity == uv
    assert (await store.get_mailbox(account, a)).path == "X/Y/B/C"
    with pytest.raises(mbx.InvalidMailboxName):  # into its own subtree
        await store.rename_mailbox(account, top, "X/Y/B/Z")
    with pytest.raises(mbx.MailboxExists):
        await store.rename_mailbox(account, top, "Sent")


async def test_rename_inbox_moves_messages(db, account):
    store = MailStore(db)
    inbox = (await store.get_mailbox_by_role(account, "inbox")).id
    await append(store, account, inbox)
    await append(store, account, inbox)
    new_id = await store.rename_mailbox(account, inbox, "Old Mail")
    assert new_id != inbox
    assert (await store.mailbox_status(account, inbox)).total == 0
    assert [u for u, _e, _m in await store.uid_map(account, new_id)] == [1, 2]
    assert (await store.get_mailbox(account, inbox)).path == "INBOX"
    # new mail still lands in INBOX with a fresh UID
    _e, uid = await append(store, account, inbox)
    assert uid == 3


async def test_delete_rules_and_orphans(db, account):
    store = MailStore(db)
    inbox = (await store.get_mailbox_by_role(account, "inbox")).id
    parent = await store.create_mailbox(account, "P")
    child = await store.create_mailbox(account, "P/C")
    e_only, _ = await append(store, account, child)
    e_shared, _ = await append(store, account, child)
    await store.copy(account, child, [2], inbox)
    with pytest.raises(mbx.MailboxHasChildren):
        await store.delete_mailbox(account, parent)
    with pytest.raises(mbx.CannotDeleteInbox):
        await store.delete_mailbox(account, inbox)
    await store.delete_mailbox(account, child)
    await store.delete_mailbox(account, parent)
    assert await store.get_mailbox(account, child) is None
    emails = await store.get_emails(account, [e_only, e_shared])
    assert set(emails) == {e_shared} and emails[e_shared].mailboxes == {inbox: 1}
    with pytest.raises(mbx.MailboxNotFound):
        await store.delete_mailbox(account, child)


async def test_subscribe_and_counts(db, account):
    store = MailStore(db)
    trash = (await store.get_mailbox_by_role(account, "trash")).id
    await store.set_subscribed(account, trash, False)
    assert not (await store.get_mailbox(account, trash)).subscribed
    await store.set_subscribed(account, trash, True)
    await append(store, account, trash)
    box = await store.get_mailbox(account, trash)
    assert box.subscribed and box.total_count == 1 and box.unseen_count == 1 and box.uid_next == 2
    with pytest.raises(mbx.MailboxNotFound):
        await store.set_subscribed(account, 9999, True)
