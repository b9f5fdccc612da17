"""Mailbox services: create, rename, delete, list, look up, subscribe (see mailserver.store.schema).

Every write function takes the transaction's connection and its ``ChangeSet`` (from
``mailserver.store.accountlock.begin_change``) and records ``Mailbox`` change-log rows under its
MODSEQ; the caller flushes the change set and commits. ``mailserver.store.mailstore.MailStore``
wraps them into one call each.

Names: ``path`` is the full "/"-separated name (IMAP), ``name`` the leaf (JMAP). ``INBOX`` is
case-insensitive (RFC 9051 §5.1) and always stored as "INBOX". Hierarchy follows IMAP CREATE
(RFC 9051 §6.3.4): missing parents are created. Deleting follows Dovecot: a mailbox with children
cannot be deleted (delete the children first); INBOX can never be deleted.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import and_, delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from mailserver.store import schema
from mailserver.store.accountlock import ChangeSet

SEPARATOR = "/"
MAX_PATH_LENGTH = 1000
MAX_DEPTH = 32
ROLES = frozenset({"inbox", "sent", "drafts", "trash", "junk", "archive", "all", "flagged",
                   "important", "scheduled", "snoozed", "memos"})

mb = schema.mailboxes


class MailboxError(Exception):
    """Base class of the mailbox errors a client can cause (IMAP NO, JMAP SetError)."""


class MailboxNotFound(MailboxError, LookupError):
    pass


class MailboxExists(MailboxError):
    """RFC 9051 §7.1: [ALREADYEXISTS]."""


class InvalidMailboxName(MailboxError, ValueError):
    """Empty level, control character, too long or too deep ([CANNOT])."""


class MailboxHasChildren(MailboxError):
    """Dovecot behaviour: delete the children first ([HASCHILDREN] in RFC 9051 terms)."""


class CannotDeleteInbox(MailboxError):
    pass


class RoleInUse(MailboxError):
    """A special-use role is held by at most one mailbox per account (RFC 8621 §2)."""


@dataclass(frozen=True, slots=True)
class Mailbox:
    account_id: int
    id: int
    parent_id: int | None
    name: str
    path: str
    role: str | None
    sort_order: int
    subscribed: bool
    uidvalidity: int
    uid_next: int
    highest_modseq: int
    total_count: int
    unseen_count: int
    total_size: int

    @property
    def is_inbox(self) -> bool:
        return self.path == "INBOX"


_COLUMNS = (mb.c.account_id, mb.c.id, mb.c.parent_id, mb.c.name, mb.c.path, mb.c.role,
            mb.c.sort_order, mb.c.subscribed, mb.c.uidvalidity, mb.c.uid_next,
            mb.c.highest_modseq, mb.c.total_count, mb.c.unseen_count, mb.c.total_size)


def _mailbox(row) -> Mailbox:
    return Mailbox(*row[:7], bool(row[7]), *row[8:])


def normalize_path(path: str) -> str:
    """Validate a mailbox path and canonicalise INBOX; raises InvalidMailboxName."""
    if not isinstance(path, str) or not path or len(path) > MAX_PATH_LENGTH:
        raise InvalidMailboxName(path)
    levels = path.split(SEPARATOR)
    if len(levels) > MAX_DEPTH:
        raise InvalidMailboxName(path)
    for level in levels:
        if not level.strip():
            raise InvalidMailboxName(path)
        if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in level):
            raise InvalidMailboxName(path)
    if levels[0].upper() == "INBOX":
        levels[0] = "INBOX"
    return SEPARATOR.join(levels)


def _parent_paths(path: str) -> list[str]:
    levels = path.split(SEPARATOR)
    return [SEPARATOR.join(levels[:i]) for i in range(1, len(levels))]


# ---------------------------------------------------------------------------------------------
# Reads
# ---------------------------------------------------------------------------------------------


async def list_mailboxes(conn: AsyncConnection, account_id: int) -> list[Mailbox]:
    """All mailboxes of an account with their counters, ordered by path."""
    rows = await conn.execute(select(*_COLUMNS).where(mb.c.account_id == account_id)
                              .order_by(mb.c.path))
    return [_mailbox(r) for r in rows]


async def get_mailbox(conn: AsyncConnection, account_id: int, mailbox_id: int) -> Mailbox | None:
    row = (await conn.execute(select(*_COLUMNS).where(
        mb.c.account_id == account_id, mb.c.id == mailbox_id))).first()
    return _mailbox(row) if row else None


async def get_mailbox_by_path(conn: AsyncConnection, account_id: int, path: str) -> Mailbox | None:
    try:
        path = normalize_path(path)
    except InvalidMailboxName:
        return None
    row = (await conn.execute(select(*_COLUMNS).where(
        mb.c.account_id == account_id, mb.c.path == path))).first()
    return _mailbox(row) if row else None


async def get_mailbox_by_role(conn: AsyncConnection, account_id: int, role: str) -> Mailbox | None:
    row = (await conn.execute(select(*_COLUMNS).where(
        mb.c.account_id == account_id, mb.c.role == role.lower()).limit(1))).first()
    return _mailbox(row) if row else None


async def require_mailbox(conn: AsyncConnection, account_id: int, mailbox_id: int) -> Mailbox:
    box = await get_mailbox(conn, account_id, mailbox_id)
    if box is None:
        raise MailboxNotFound(mailbox_id)
    return box


async def has_children(conn: AsyncConnection, account_id: int, mailbox_id: int) -> bool:
    row = (await conn.execute(select(mb.c.id).where(
        mb.c.account_id == account_id, mb.c.parent_id == mailbox_id).limit(1))).first()
    return row is not None


# ---------------------------------------------------------------------------------------------
# Writes
# ---------------------------------------------------------------------------------------------


async def create_default_mailboxes(conn: AsyncConnection, cs: ChangeSet) -> dict[str, int]:
    """Create INBOX and the special-use set for a new account; returns role → mailbox id."""
    ids: dict[str, int] = {}
    rows = []
    for order, (path, role) in enumerate(schema.SPECIAL_USE_MAILBOXES):
        mailbox_id = cs.next_id("mailbox")
        ids[role] = mailbox_id
        rows.append(_new_row(cs, mailbox_id, None, path, path, role, order, True))
        cs.record("Mailbox", mailbox_id, "c")
    await conn.execute(insert(schema.mailboxes), rows)
    return ids


def _new_row(cs: ChangeSet, mailbox_id: int, parent_id: int | None, name: str, path: str,
             role: str | None, sort_order: int, subscribed: bool) -> dict:
    return {
        "account_id": cs.account_id, "id": mailbox_id, "parent_id": parent_id, "name": name,
        "path": path, "role": role, "sort_order": sort_order, "subscribed": subscribed,
        "uidvalidity": cs.next_uidvalidity(), "uid_next": 1, "highest_modseq": cs.modseq,
        "created_modseq": cs.modseq,
    }


async def _check_role(conn: AsyncConnection, account_id: int, role: str | None,
                      except_id: int | None = None) -> str | None:
    if role is None:
        return None
    role = role.lower()
    if not role or len(role) > 16:
        raise MailboxError(f"invalid role {role!r}")
    held = await get_mailbox_by_role(conn, account_id, role)
    if held is not None and held.id != except_id:
        raise RoleInUse(role)
    return role


async def _ensure_parents(conn: AsyncConnection, cs: ChangeSet, path: str,
                          subscribed: bool) -> int | None:
    """Create the missing ancestors of ``path``; returns the direct parent's id (or None)."""
    parents = _parent_paths(path)
    if not parents:
        return None
    rows = await conn.execute(select(mb.c.path, mb.c.id).where(
        mb.c.account_id == cs.account_id, mb.c.path.in_(parents)))
    existing = dict(rows.all())
    parent_id: int | None = None
    new_rows = []
    for p in parents:
        if p in existing:
            parent_id = existing[p]
            continue
        mailbox_id = cs.next_id("mailbox")
        new_rows.append(_new_row(cs, mailbox_id, parent_id, p.rsplit(SEPARATOR, 1)[-1], p,
                                 None, 0, subscribed))
        cs.record("Mailbox", mailbox_id, "c")
        parent_id = mailbox_id
    if new_rows:
        await conn.execute(insert(mb), new_rows)
    return parent_id


async def create_mailbox(conn: AsyncConnection, cs: ChangeSet, path: str, *,
                         role: str | None = None, subscribed: bool = True,
                         sort_order: int = 0) -> int:
    """Create a mailbox (and its missing parents); returns its id.

    Raises InvalidMailboxName, MailboxExists, RoleInUse.
    """
    path = normalize_path(path)
    if (await conn.execute(select(mb.c.id).where(
            mb.c.account_id == cs.account_id, mb.c.path == path))).first():
        raise MailboxExists(path)
    role = await _check_role(conn, cs.account_id, role)
    parent_id = await _ensure_parents(conn, cs, path, subscribed)
    mailbox_id = cs.next_id("mailbox")
    await conn.execute(insert(mb).values(**_new_row(
        cs, mailbox_id, parent_id, path.rsplit(SEPARATOR, 1)[-1], path, role, sort_order,
        subscribed)))
    cs.record("Mailbox", mailbox_id, "c")
    return mailbox_id


async def rename_mailbox(conn: AsyncConnection, cs: ChangeSet, mailbox_id: int,
                         new_path: str) -> int:
    """Rename a mailbox; its children follow. Returns the id now holding the name.

    RFC 9051 §6.3.6: renaming INBOX creates a new mailbox with the new name, moves every message
    of INBOX into it and leaves INBOX (empty) in place; INBOX's children are not moved. The id of
    that new mailbox is returned. Every other rename keeps the id and UIDVALIDITY.
    """
    new_path = normalize_path(new_path)
    box = await require_mailbox(conn, cs.account_id, mailbox_id)
    if new_path == box.path:
        return mailbox_id
    if (await conn.execute(select(mb.c.id).where(
            mb.c.account_id == cs.account_id, mb.c.path == new_path))).first():
        raise MailboxExists(new_path)
    if new_path == "INBOX" or new_path.startswith(box.path + SEPARATOR):
        raise InvalidMailboxName(new_path)
    if box.is_inbox:
        from mailserver.store import messages

        target = await create_mailbox(conn, cs, new_path)
        uids = [uid for uid, _e, _m in await messages.uid_map(conn, cs.account_id, mailbox_id)]
        if uids:
            await messages.move(conn, cs, mailbox_id, uids, target)
        return target
    parent_id = await _ensure_parents(conn, cs, new_path, box.subscribed)
    await conn.execute(update(mb).where(mb.c.account_id == cs.account_id, mb.c.id == mailbox_id)
                       .values(path=new_path, name=new_path.rsplit(SEPARATOR, 1)[-1],
                               parent_id=parent_id))
    cs.record("Mailbox", mailbox_id, "u")
    prefix = box.path + SEPARATOR
    rows = (await conn.execute(select(mb.c.id, mb.c.path).where(
        mb.c.account_id == cs.account_id))).all()
    moved = [{"a": cs.account_id, "i": r.id, "p": new_path + SEPARATOR + r.path[len(prefix):]}
             for r in rows if r.path.startswith(prefix)]
    if moved:
        from sqlalchemy import bindparam

        await conn.execute(
            update(mb).where(mb.c.account_id == bindparam("a"), mb.c.id == bindparam("i"))
            .values(path=bindparam("p")), moved)
        for m in moved:
            cs.record("Mailbox", m["i"], "u")  # JMAP: the name did not change, IMAP's did
    return mailbox_id


async def delete_mailbox(conn: AsyncConnection, cs: ChangeSet, mailbox_id: int) -> None:
    """Delete a mailbox without children: memberships go, emails left in no mailbox are destroyed.

    Raises MailboxNotFound, CannotDeleteInbox, MailboxHasChildren.
    """
    from mailserver.store import messages

    box = await require_mailbox(conn, cs.account_id, mailbox_id)
    if box.is_inbox or box.role == "inbox":
        raise CannotDeleteInbox(box.path)
    if await has_children(conn, cs.account_id, mailbox_id):
        raise MailboxHasChildren(box.path)
    await messages.remove_all_memberships(conn, cs, mailbox_id)
    await conn.execute(delete(mb).where(mb.c.account_id == cs.account_id, mb.c.id == mailbox_id))
    cs.record("Mailbox", mailbox_id, "d")


async def set_subscribed(conn: AsyncConnection, cs: ChangeSet, mailbox_id: int,
                         subscribed: bool) -> None:
    """IMAP SUBSCRIBE/UNSUBSCRIBE, JMAP isSubscribed. (Subscriptions to names that do not exist
    are not kept: RFC 9051 §6.3.7 allows it, and clients do not need it.)"""
    res = await conn.execute(update(mb).where(
        mb.c.account_id == cs.account_id, mb.c.id == mailbox_id).values(subscribed=subscribed))
    if res.rowcount == 0:
        raise MailboxNotFound(mailbox_id)
    cs.record("Mailbox", mailbox_id, "u")


async def set_role(conn: AsyncConnection, cs: ChangeSet, mailbox_id: int,
                   role: str | None) -> None:
    role = await _check_role(conn, cs.account_id, role, except_id=mailbox_id)
    box = await require_mailbox(conn, cs.account_id, mailbox_id)
    if box.is_inbox:
        raise MailboxError("INBOX keeps its role")
    await conn.execute(update(mb).where(
        mb.c.account_id == cs.account_id, mb.c.id == mailbox_id).values(role=role))
    cs.record("Mailbox", mailbox_id, "u")


async def count_mailboxes(conn: AsyncConnection, account_id: int) -> int:
    return (await conn.execute(select(func.count()).select_from(mb).where(
        and_(mb.c.account_id == account_id)))).scalar_one()
