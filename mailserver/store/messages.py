"""Message services: append, copy, move, keywords, expunge, destroy; and the reads IMAP/JMAP need.

Write functions take the transaction's connection and its ``ChangeSet`` and keep, in that one
transaction: the ``emails`` row, the memberships (UID from ``mailboxes.uid_next``, MODSEQ from
the change set), the mailbox counters (``total_count``, ``unseen_count``, ``total_size``,
``highest_modseq``), the account's ``used_bytes``, blob reference counts, the search index,
threads and the change log.

- **Quota** is counted once per email per account (``emails.size``), whatever the number of
  mailboxes holding it: COPY does not add to it, the last membership going (expunge, destroy)
  gives it back.
- **UIDs** are allocated by ``UPDATE mailboxes SET uid_next = uid_next + n … RETURNING``, so they
  are strictly ascending and never reused (RFC 9051 §2.3.1.1).
- An email sits at most once in a mailbox (JMAP ``mailboxIds`` is a set): COPY of a message into
  a mailbox that already holds that email reports the existing UID instead of a duplicate.
- Change log: append writes Email c, Membership c (mailbox, uid), Mailbox u, Thread c/u;
  keyword changes Email u and Membership u; removals Membership d (mailbox, uid — QRESYNC
  VANISHED), Email u or Email d, Thread u/d, Mailbox u.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass

from sqlalchemy import and_, bindparam, delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from mailserver.store import schema
from mailserver.store.accountlock import ChangeSet
from mailserver.store.keywords import (
    DELETED,
    SEEN,
    decode_keywords,
    encode_keywords,
    normalize_keywords,
)

E = schema.emails
MM = schema.mailbox_messages
MB = schema.mailboxes
A = schema.accounts
CH = schema.changes

CHUNK = 500  # ids per IN (…) list: far below SQLite's and asyncpg's parameter limits


class QuotaExceeded(Exception):
    """The account's quota would be exceeded. ``permanent``: the message alone is bigger than
    the quota (SMTP 552 5.2.2), else temporary (452 4.2.2 — the user may free space)."""

    clean = False  # True when raised before anything was written (see delivery)

    def __init__(self, account_id: int, size: int, used: int, quota: int) -> None:
        self.account_id, self.size, self.used, self.quota = account_id, size, used, quota
        self.permanent = size > quota
        super().__init__(f"quota exceeded for account {account_id}: "
                         f"{used} + {size} > {quota} bytes")


class MessageNotFound(LookupError):
    pass


class CannotCalculateChanges(Exception):
    """The client's state is older than the compacted change log (JMAP cannotCalculateChanges,
    IMAP: fall back to a full resync)."""


def _chunks(seq: Sequence, n: int = CHUNK):
    for i in range(0, len(seq), n):
        yield seq[i:i + n]


def _record_once(cs: ChangeSet, object_type: str, object_id: int, change: str) -> None:
    """Record unless this change set already holds a row for the object (newest first scan)."""
    for row in reversed(cs.rows):
        if row["object_type"] == object_type and row["object_id"] == object_id \
                and row["mailbox_id"] is None:
            if row["change"] == "d" or change != "d":
                return
            break
    cs.record(object_type, object_id, change)


def _recorded(cs: ChangeSet, object_type: str) -> set[int]:
    """Ids of ``object_type`` already in the change set (bulk operations dedupe with it)."""
    return {r["object_id"] for r in cs.rows
            if r["object_type"] == object_type and r["mailbox_id"] is None}


def _addresses_json(addresses) -> str:
    return json.dumps([a.to_dict() for a in addresses], ensure_ascii=False,
                      separators=(",", ":"))


def _sort_address(addresses) -> str:
    # RFC 5256 §3 SORT FROM/TO: the addr-mailbox of the first address (we keep the whole address)
    for a in addresses:
        if a.email:
            return a.email.lower()
    return ""


def email_row(account_id: int, email_id: int, blob_id: str, parsed, *, keywords: str,
              received_at: int, received_tz: int, thread_id: int, modseq: int) -> dict:
    """The ``emails`` row for a parsed message (the header summary the store keeps)."""
    return {
        "account_id": account_id, "id": email_id, "blob_id": blob_id, "size": parsed.size,
        "received_at": received_at, "received_tz": received_tz, "sent_at": parsed.sent_at,
        "thread_id": thread_id, "keywords": keywords,
        "subject": parsed.subject, "sort_subject": parsed.base_subject,
        "from_json": _addresses_json(parsed.from_),
        "sender_json": _addresses_json(parsed.sender),
        "reply_to_json": _addresses_json(parsed.reply_to),
        "to_json": _addresses_json(parsed.to), "cc_json": _addresses_json(parsed.cc),
        "bcc_json": _addresses_json(parsed.bcc),
        "sort_from": _sort_address(parsed.from_), "sort_to": _sort_address(parsed.to),
        "message_id": parsed.message_id, "in_reply_to": " ".join(parsed.in_reply_to),
        "references": " ".join(parsed.references), "preview": parsed.preview,
        "has_attachment": bool(parsed.has_attachment), "structure_json": parsed.structure_json(),
        "created_modseq": modseq, "updated_modseq": modseq,
    }


# ---------------------------------------------------------------------------------------------
# Append
# ---------------------------------------------------------------------------------------------

# Statements of the delivery hot path are built once: building a Core statement costs ~15×
# more than executing a prebuilt one with bound parameters (measured: 0.87 ms vs 0.05 ms).
_INSERT_EMAIL = insert(E)
_INSERT_MM = insert(MM)
_CHARGE_QUOTA = (
    update(A)
    .where(A.c.id == bindparam("p_a"),
           (A.c.quota_bytes == 0) | (A.c.used_bytes + bindparam("p_s") <= A.c.quota_bytes))
    .values(used_bytes=A.c.used_bytes + bindparam("p_s")))
_READ_QUOTA = select(A.c.used_bytes, A.c.quota_bytes).where(A.c.id == bindparam("p_a"))
_ALLOCATE_UID = (
    update(MB)
    .where(MB.c.account_id == bindparam("p_a"), MB.c.id == bindparam("p_m"))
    .values(uid_next=MB.c.uid_next + 1, total_count=MB.c.total_count + 1,
            unseen_count=MB.c.unseen_count + bindparam("p_u"),
            total_size=MB.c.total_size + bindparam("p_s"), highest_modseq=bindparam("p_h"))
    .returning(MB.c.uid_next))


async def _charge_quota(conn: AsyncConnection, account_id: int, size: int) -> None:
    """Add ``size`` to used_bytes unless that exceeds the quota (one conditional UPDATE)."""
    res = await conn.execute(_CHARGE_QUOTA, {"p_a": account_id, "p_s": size})
    if res.rowcount == 0:
        await _quota_exceeded(conn, account_id, size)


async def _quota_exceeded(conn: AsyncConnection, account_id: int, size: int) -> None:
    row = (await conn.execute(_READ_QUOTA, {"p_a": account_id})).one()
    exc = QuotaExceeded(account_id, size, row.used_bytes, row.quota_bytes)
    exc.clean = True  # nothing written: a group commit needs no rollback for it
    raise exc


# The same statements as driver SQL (``mailserver.store.engine.DriverSQL``): append is the
# ingest hot path, and through Core its ~10 statements cost more CPU than their work.
_EMAIL_COLUMNS = (
    "account_id", "id", "blob_id", "size", "received_at", "received_tz", "sent_at", "thread_id",
    "keywords", "subject", "sort_subject", "from_json", "sender_json", "reply_to_json",
    "to_json", "cc_json", "bcc_json", "sort_from", "sort_to", "message_id", "in_reply_to",
    "references", "preview", "has_attachment", "structure_json", "created_modseq",
    "updated_modseq")
_SQL_INSERT_EMAIL = ("INSERT INTO emails (" + ", ".join(f'"{c}"' for c in _EMAIL_COLUMNS)
                     + ") VALUES (" + ", ".join("?" for _ in _EMAIL_COLUMNS) + ")")
_SQL_INSERT_MM = ("INSERT INTO mailbox_messages (account_id, mailbox_id, uid, email_id, modseq, "
                  "saved_at) VALUES (?, ?, ?, ?, ?, ?)")
_SQL_CHARGE_QUOTA = ("UPDATE accounts SET used_bytes = used_bytes + ? WHERE id = ? "
                     "AND (quota_bytes = 0 OR used_bytes + ? <= quota_bytes)")
_SQL_ALLOCATE_UID = (
    "UPDATE mailboxes SET uid_next = uid_next + 1, total_count = total_count + 1, "
    "unseen_count = unseen_count + ?, total_size = total_size + ?, highest_modseq = ? "
    "WHERE account_id = ? AND id = ? RETURNING uid_next")


_SQL_ADD_BLOB_REF = ("INSERT INTO blobs (id, size, refcount, updated_at) VALUES (?, ?, ?, ?) "
                     "ON CONFLICT (id) DO UPDATE SET refcount = blobs.refcount + "
                     "excluded.refcount, updated_at = excluded.updated_at")
# after the reference (_SQL_ADD_BLOB_REF) in the same transaction: see mailserver.blobs.inline
_SQL_INSERT_BLOB_DATA = "INSERT INTO blob_data (id, data) VALUES (?, ?) ON CONFLICT (id) DO NOTHING"
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


class PendingAppends:
    """The plain INSERTs of the appends of one group-commit batch, written at its end with one
    executemany per table (``mailserver.delivery`` sets ``DEFERRED`` while it runs appends).

    Only rows nothing else in the batch reads are deferred: ``emails``, ``mailbox_messages``,
    the search index, blob reference counts and inline blob content. Quota, UID allocation and thread refs stay
    immediate (later appends of the batch read them); thread assignment consults
    ``thread_subjects`` for the emails not written yet. The batch flushes before running any
    other kind of work, so that work sees every earlier append. If the flush fails, the
    delivery module redoes the batch with each delivery written at once inside a SAVEPOINT.
    """

    __slots__ = ("blob_data", "blobs", "dialect", "emails", "index", "members",
                 "thread_subjects")

    def __init__(self, dialect: str) -> None:
        self.dialect = dialect
        self.emails: list[tuple] = []
        self.members: list[tuple] = []
        self.index: list[tuple] = []
        self.blobs: dict[str, list[int]] = {}  # blob id → [size, n, now]
        self.blob_data: dict[str, bytes] = {}  # blob id → content (inline blobs)
        # (account, thread) → base subjects of pending emails, lowered as the database's
        # lower() does (ASCII only on SQLite)
        self.thread_subjects: dict[tuple[int, int], set[str]] = {}

    def lower(self, value: str) -> str:
        return value.translate(_ASCII_LOWER) if self.dialect == "sqlite" else value.lower()

    def __bool__(self) -> bool:
        return bool(self.emails)

    async def flush(self, sql) -> None:
        """Write and forget the pending rows (``sql``: the batch's ``DriverSQL``)."""
        from mailserver.store.search import INDEX_SQL

        if not self.emails:
            return
        await sql.executemany(_SQL_INSERT_EMAIL, self.emails)
        await sql.executemany(_SQL_INSERT_MM, self.members)
        await sql.executemany(INDEX_SQL[self.dialect], self.index)
        # sorted: concurrent batches lock blob rows in one order (no deadlock on PostgreSQL)
        await sql.executemany(_SQL_ADD_BLOB_REF, [
            (blob_id, *self.blobs[blob_id]) for blob_id in sorted(self.blobs)])
        if self.blob_data:  # after the references (mailserver.blobs.inline)
            await sql.executemany(_SQL_INSERT_BLOB_DATA, sorted(self.blob_data.items()))
        self.emails, self.members, self.index = [], [], []
        self.blobs, self.blob_data, self.thread_subjects = {}, {}, {}


DEFERRED: ContextVar[PendingAppends | None] = ContextVar("DEFERRED", default=None)


async def append(conn: AsyncConnection, cs: ChangeSet, mailbox_id: int, blob_id: str, parsed, *,
                 keywords: Iterable[str] = (), received_at: int,
                 received_tz: int = 0, index_content: tuple | None = None,
                 blob_data: bytes | None = None) -> tuple[int, int]:
    """Store a parsed message in a mailbox; returns (email_id, uid).

    Raises QuotaExceeded before anything is written (``exc.clean``), MailboxNotFound when the
    mailbox does not exist. The blob must already be durable in the blob store, unless
    ``blob_data`` is its content: then this transaction writes it into ``blob_data``
    (``mailserver.blobs.inline``), after the reference, so that against a concurrent sweep
    either both survive or both are written again.
    ``index_content``: ``search.index_content(dialect, parsed)`` when the caller has it.
    """
    from mailserver.store import blobrefs, search, threads
    from mailserver.store.engine import driver_sql
    from mailserver.store.mailboxes import MailboxNotFound

    sql = driver_sql(conn)
    kw = normalize_keywords(keywords)
    size = parsed.size
    account_id = cs.account_id
    if not await sql.execute(_SQL_CHARGE_QUOTA, (size, account_id, size)):
        await _quota_exceeded(conn, account_id, size)  # raises before any other write
    unseen = 0 if SEEN in kw else 1
    rows = await sql.fetch(_SQL_ALLOCATE_UID, (unseen, size, cs.modseq, account_id, mailbox_id))
    if not rows:
        raise MailboxNotFound(mailbox_id)
    uid = rows[0][0] - 1
    thread_id = await threads.assign_thread(conn, cs, parsed)  # records Thread c/u
    email_id = cs.next_id("email")
    row = email_row(account_id, email_id, blob_id, parsed, keywords=encode_keywords(kw),
                    received_at=received_at, received_tz=received_tz, thread_id=thread_id,
                    modseq=cs.modseq)
    email = tuple(row[c] for c in _EMAIL_COLUMNS)
    member = (account_id, mailbox_id, uid, email_id, cs.modseq, cs.now)
    pending = DEFERRED.get()
    if pending is not None and pending.dialect == sql.dialect:
        index = search.index_params(sql.dialect, account_id, email_id, parsed, index_content)
        pending.emails.append(email)
        pending.members.append(member)
        pending.index.append(index)
        ref = pending.blobs.get(blob_id)
        if ref is None:
            pending.blobs[blob_id] = [size, 1, cs.now]
        else:
            ref[1] += 1
        if blob_data is not None:
            pending.blob_data[blob_id] = blob_data
        pending.thread_subjects.setdefault((account_id, thread_id), set()).add(
            pending.lower(row["sort_subject"] or ""))
    else:
        await sql.execute(_SQL_INSERT_EMAIL, email)
        await sql.execute(_SQL_INSERT_MM, member)
        await search.index_email(conn, sql.dialect, account_id, email_id, parsed, fresh=True,
                                 content=index_content)
        await blobrefs.add_ref(conn, blob_id, size, cs.now)
        if blob_data is not None:
            await sql.execute(_SQL_INSERT_BLOB_DATA, (blob_id, blob_data))
    cs.record("Email", email_id, "c")
    cs.record("Membership", email_id, "c", mailbox_id=mailbox_id, uid=uid)
    _record_once(cs, "Mailbox", mailbox_id, "u")
    return email_id, uid


# ---------------------------------------------------------------------------------------------
# Memberships: add (copy), remove (expunge, move, delete), destroy
# ---------------------------------------------------------------------------------------------


async def _add_memberships(conn: AsyncConnection, cs: ChangeSet, mailbox_id: int,
                           emails: list[tuple[int, int, str]]) -> dict[int, int]:
    """Add (email_id, size, keywords) to a mailbox in the given order; returns email_id → uid.
    Emails already in the mailbox keep their UID."""
    from mailserver.store.mailboxes import MailboxNotFound

    ids = [e[0] for e in emails]
    existing: dict[int, int] = {}
    for chunk in _chunks(ids):
        rows = await conn.execute(select(MM.c.email_id, MM.c.uid).where(
            MM.c.account_id == cs.account_id, MM.c.mailbox_id == mailbox_id,
            MM.c.email_id.in_(chunk)))
        existing.update((r[0], r[1]) for r in rows)
    new, seen_ids = [], set(existing)
    for e in emails:
        if e[0] not in seen_ids:
            seen_ids.add(e[0])
            new.append(e)
    n = len(new)
    unseen = sum(1 for e in new if SEEN not in decode_keywords(e[2]))
    size = sum(e[1] for e in new)
    row = (await conn.execute(
        update(MB).where(MB.c.account_id == cs.account_id, MB.c.id == mailbox_id)
        .values(uid_next=MB.c.uid_next + n, total_count=MB.c.total_count + n,
                unseen_count=MB.c.unseen_count + unseen, total_size=MB.c.total_size + size,
                highest_modseq=cs.modseq if n else MB.c.highest_modseq)
        .returning(MB.c.uid_next))).first()
    if row is None:
        raise MailboxNotFound(mailbox_id)
    first = row[0] - n
    mapping = dict(existing)
    rows = []
    emails_recorded = _recorded(cs, "Email")
    for i, (email_id, _size, _kw) in enumerate(new):
        uid = first + i
        mapping[email_id] = uid
        rows.append({"account_id": cs.account_id, "mailbox_id": mailbox_id, "uid": uid,
                     "email_id": email_id, "modseq": cs.modseq, "saved_at": cs.now})
        cs.record("Membership", email_id, "c", mailbox_id=mailbox_id, uid=uid)
        if email_id not in emails_recorded:  # mailboxIds changed
            emails_recorded.add(email_id)
            cs.record("Email", email_id, "u")
    if rows:
        await conn.execute(_INSERT_MM, rows)
        _record_once(cs, "Mailbox", mailbox_id, "u")
    return mapping


async def _select_members(conn: AsyncConnection, account_id: int, mailbox_id: int,
                          uids: Sequence[int] | None) -> list:
    """(uid, email_id, size, keywords) of memberships, ascending by uid."""
    q = (select(MM.c.uid, MM.c.email_id, E.c.size, E.c.keywords)
         .join(E, and_(E.c.account_id == MM.c.account_id, E.c.id == MM.c.email_id))
         .where(MM.c.account_id == account_id, MM.c.mailbox_id == mailbox_id))
    if uids is None:
        return (await conn.execute(q.order_by(MM.c.uid))).all()
    out = []
    for chunk in _chunks(sorted(set(uids))):
        out.extend((await conn.execute(q.where(MM.c.uid.in_(chunk)))).all())
    out.sort(key=lambda r: r[0])
    return out


async def _remove_memberships(conn: AsyncConnection, cs: ChangeSet, mailbox_id: int, members,
                              *, destroy_orphans: bool = True,
                              record_vanished: bool = True) -> None:
    """Remove the given (uid, email_id, size, keywords) memberships of one mailbox."""
    if not members:
        return
    uids = [m[0] for m in members]
    for chunk in _chunks(uids):
        await conn.execute(delete(MM).where(MM.c.account_id == cs.account_id,
                                            MM.c.mailbox_id == mailbox_id, MM.c.uid.in_(chunk)))
    unseen = sum(1 for m in members if SEEN not in decode_keywords(m[3]))
    size = sum(m[2] for m in members)
    await conn.execute(
        update(MB).where(MB.c.account_id == cs.account_id, MB.c.id == mailbox_id)
        .values(total_count=MB.c.total_count - len(members),
                unseen_count=MB.c.unseen_count - unseen, total_size=MB.c.total_size - size,
                highest_modseq=cs.modseq))
    if record_vanished:
        for m in members:
            cs.record("Membership", m[1], "d", mailbox_id=mailbox_id, uid=m[0])
    _record_once(cs, "Mailbox", mailbox_id, "u")
    if destroy_orphans:
        await _destroy_orphans(conn, cs, [m[1] for m in members])


async def _destroy_orphans(conn: AsyncConnection, cs: ChangeSet, email_ids: list[int]) -> list[int]:
    """Destroy those of ``email_ids`` that no longer sit in any mailbox; the others get Email u."""
    from mailserver.store import blobrefs, search

    if not email_ids:
        return []
    candidates = sorted(set(email_ids))
    still: set[int] = set()
    for chunk in _chunks(candidates):
        rows = await conn.execute(select(MM.c.email_id).distinct().where(
            MM.c.account_id == cs.account_id, MM.c.email_id.in_(chunk)))
        still.update(rows.scalars().all())
    emails_recorded = _recorded(cs, "Email")
    for email_id in candidates:
        if email_id in still and email_id not in emails_recorded:
            cs.record("Email", email_id, "u")
    orphans = [e for e in candidates if e not in still]
    if not orphans:
        return []
    info = []
    for chunk in _chunks(orphans):
        info.extend((await conn.execute(select(E.c.id, E.c.blob_id, E.c.size, E.c.thread_id)
                                        .where(E.c.account_id == cs.account_id,
                                               E.c.id.in_(chunk)))).all())
    orphans = sorted(r.id for r in info)  # ids that never existed are ignored
    if not orphans:
        return []
    await search.unindex_emails(conn, conn.dialect.name, cs.account_id, orphans)
    for chunk in _chunks(orphans):
        await conn.execute(delete(E).where(E.c.account_id == cs.account_id, E.c.id.in_(chunk)))
    freed = sum(r.size for r in info)
    await conn.execute(update(A).where(A.c.id == cs.account_id)
                       .values(used_bytes=A.c.used_bytes - freed))
    per_blob: dict[str, int] = defaultdict(int)
    for r in info:
        per_blob[r.blob_id] += 1
    for blob_id, n in per_blob.items():
        await blobrefs.drop_ref(conn, blob_id, cs.now, n=n)
    for r in info:
        cs.record("Email", r.id, "d")
    threads_hit = sorted({r.thread_id for r in info})
    alive: set[int] = set()
    for chunk in _chunks(threads_hit):
        rows = await conn.execute(select(E.c.thread_id).distinct().where(
            E.c.account_id == cs.account_id, E.c.thread_id.in_(chunk)))
        alive.update(rows.scalars().all())
    gone = [t for t in threads_hit if t not in alive]
    for t in threads_hit:
        _record_once(cs, "Thread", t, "u" if t in alive else "d")
    for chunk in _chunks(gone):
        # a later message referring to these ids starts a new thread
        await conn.execute(delete(schema.thread_refs).where(
            schema.thread_refs.c.account_id == cs.account_id,
            schema.thread_refs.c.thread_id.in_(chunk)))
    return orphans


async def remove_all_memberships(conn: AsyncConnection, cs: ChangeSet, mailbox_id: int) -> None:
    """Empty a mailbox that is being deleted (no Membership d rows: the mailbox itself goes)."""
    members = await _select_members(conn, cs.account_id, mailbox_id, None)
    await _remove_memberships(conn, cs, mailbox_id, members, record_vanished=False)


async def copy(conn: AsyncConnection, cs: ChangeSet, from_mailbox_id: int, uids: Iterable[int],
               to_mailbox_id: int) -> list[tuple[int, int]]:
    """IMAP COPY: the same emails get memberships (new UIDs) in another mailbox.

    Returns [(source uid, destination uid)] ascending by source uid (RFC 4315 COPYUID). Source
    UIDs that do not exist are ignored.
    """
    members = await _select_members(conn, cs.account_id, from_mailbox_id, list(uids))
    mapping = await _add_memberships(conn, cs, to_mailbox_id,
                                     [(m[1], m[2], m[3]) for m in members])
    return [(m[0], mapping[m[1]]) for m in members]


async def move(conn: AsyncConnection, cs: ChangeSet, from_mailbox_id: int, uids: Iterable[int],
               to_mailbox_id: int) -> list[tuple[int, int]]:
    """RFC 6851 MOVE: copy, then remove from the source in the same transaction."""
    if from_mailbox_id == to_mailbox_id:
        return []
    members = await _select_members(conn, cs.account_id, from_mailbox_id, list(uids))
    mapping = await _add_memberships(conn, cs, to_mailbox_id,
                                     [(m[1], m[2], m[3]) for m in members])
    await _remove_memberships(conn, cs, from_mailbox_id, members, destroy_orphans=False)
    return [(m[0], mapping[m[1]]) for m in members]


async def add_emails_to_mailbox(conn: AsyncConnection, cs: ChangeSet, mailbox_id: int,
                                email_ids: Iterable[int]) -> dict[int, int]:
    """JMAP mailboxIds/+id: existing emails get a membership; returns email_id → uid."""
    ids = sorted(set(email_ids))
    emails = []
    for chunk in _chunks(ids):
        emails.extend((await conn.execute(select(E.c.id, E.c.size, E.c.keywords).where(
            E.c.account_id == cs.account_id, E.c.id.in_(chunk)).order_by(E.c.id))).all())
    if len(emails) != len(ids):
        raise MessageNotFound(sorted(set(ids) - {e[0] for e in emails}))
    return await _add_memberships(conn, cs, mailbox_id, emails)


async def remove_emails_from_mailbox(conn: AsyncConnection, cs: ChangeSet, mailbox_id: int,
                                     email_ids: Iterable[int]) -> None:
    """JMAP mailboxIds/-id (emails left in no mailbox are destroyed)."""
    ids = sorted(set(email_ids))
    members = []
    for chunk in _chunks(ids):
        members.extend((await conn.execute(
            select(MM.c.uid, MM.c.email_id, E.c.size, E.c.keywords)
            .join(E, and_(E.c.account_id == MM.c.account_id, E.c.id == MM.c.email_id))
            .where(MM.c.account_id == cs.account_id, MM.c.mailbox_id == mailbox_id,
                   MM.c.email_id.in_(chunk)))).all())
    members.sort(key=lambda r: r[0])
    await _remove_memberships(conn, cs, mailbox_id, members)


async def expunge(conn: AsyncConnection, cs: ChangeSet, mailbox_id: int,
                  uids: Iterable[int] | None = None) -> list[int]:
    """IMAP EXPUNGE (uids None) / UID EXPUNGE (RFC 4315 §2.1): remove the memberships that have
    ``$deleted`` (and are in ``uids``). Returns the expunged UIDs, ascending."""
    members = await _select_members(conn, cs.account_id, mailbox_id,
                                    None if uids is None else list(uids))
    members = [m for m in members if DELETED in decode_keywords(m[3])]
    await _remove_memberships(conn, cs, mailbox_id, members)
    return [m[0] for m in members]


async def remove_uids(conn: AsyncConnection, cs: ChangeSet, mailbox_id: int,
                      uids: Iterable[int]) -> list[int]:
    """Remove memberships regardless of ``$deleted`` (POP3 DELE commit, internal moves)."""
    members = await _select_members(conn, cs.account_id, mailbox_id, list(uids))
    await _remove_memberships(conn, cs, mailbox_id, members)
    return [m[0] for m in members]


async def destroy_emails(conn: AsyncConnection, cs: ChangeSet,
                         email_ids: Iterable[int]) -> list[int]:
    """JMAP Email/set destroy: every membership goes, then the email. Returns destroyed ids."""
    ids = sorted(set(email_ids))
    by_mailbox: dict[int, list] = defaultdict(list)
    for chunk in _chunks(ids):
        rows = await conn.execute(
            select(MM.c.mailbox_id, MM.c.uid, MM.c.email_id, E.c.size, E.c.keywords)
            .join(E, and_(E.c.account_id == MM.c.account_id, E.c.id == MM.c.email_id))
            .where(MM.c.account_id == cs.account_id, MM.c.email_id.in_(chunk)))
        for r in rows:
            by_mailbox[r[0]].append(tuple(r[1:]))
    for mailbox_id in sorted(by_mailbox):
        members = sorted(by_mailbox[mailbox_id])
        await _remove_memberships(conn, cs, mailbox_id, members, destroy_orphans=False)
    # emails without any membership (should not exist, but destroy them all the same)
    return await _destroy_orphans(conn, cs, ids)


# ---------------------------------------------------------------------------------------------
# Keywords
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KeywordUpdate:
    keywords: dict[int, frozenset[str]]  # email_id → keywords now (every targeted email)
    changed: frozenset[int]  # email ids whose keywords changed
    uids: dict[int, int]  # email_id → uid (mailbox mode)
    conflicts: tuple[int, ...] = ()  # CONDSTORE UNCHANGEDSINCE failures (uids / email ids)


async def set_keywords(conn: AsyncConnection, cs: ChangeSet, *,
                       email_ids: Iterable[int] | None = None, mailbox_id: int | None = None,
                       uids: Iterable[int] | None = None, add: Iterable[str] = (),
                       remove: Iterable[str] = (), replace: Iterable[str] | None = None,
                       unchanged_since: int | None = None) -> KeywordUpdate:
    """Change keywords of emails (by id) or of messages (mailbox + uids).

    Keywords belong to the email, so a change bumps the MODSEQ of every membership of the email
    and the unseen counter of every mailbox holding it. ``unchanged_since`` (RFC 7162 §3.1.3):
    messages whose MODSEQ is higher are left alone and reported in ``conflicts``.
    """
    add_kw = normalize_keywords(add)
    remove_kw = normalize_keywords(remove)
    replace_kw = None if replace is None else normalize_keywords(replace)
    uid_of: dict[int, int] = {}
    conflicts: list[int] = []
    if mailbox_id is not None:
        if uids is None:
            raise ValueError("uids required with mailbox_id")
        ids: list[int] = []
        uid_list = sorted(set(uids))
        for chunk in _chunks(uid_list):
            rows = await conn.execute(select(MM.c.uid, MM.c.email_id, MM.c.modseq).where(
                MM.c.account_id == cs.account_id, MM.c.mailbox_id == mailbox_id,
                MM.c.uid.in_(chunk)))
            for uid, email_id, modseq in rows:
                if unchanged_since is not None and modseq > unchanged_since:
                    conflicts.append(uid)
                    continue
                uid_of[email_id] = uid
                ids.append(email_id)
    else:
        ids = sorted(set(email_ids or ()))
    current: dict[int, tuple[str, int]] = {}
    for chunk in _chunks(sorted(set(ids))):
        rows = await conn.execute(select(E.c.id, E.c.keywords, E.c.updated_modseq).where(
            E.c.account_id == cs.account_id, E.c.id.in_(chunk)))
        for email_id, kw, modseq in rows:
            if mailbox_id is None and unchanged_since is not None and modseq > unchanged_since:
                conflicts.append(email_id)
                continue
            current[email_id] = (kw, modseq)
    result: dict[int, frozenset[str]] = {}
    updates = []
    seen_delta: dict[int, int] = {}
    for email_id, (kw, _m) in current.items():
        old = decode_keywords(kw)
        new = replace_kw if replace_kw is not None else (old | add_kw) - remove_kw
        result[email_id] = new
        if new != old:
            updates.append({"a": cs.account_id, "i": email_id, "k": encode_keywords(new),
                            "m": cs.modseq})
            if (SEEN in new) != (SEEN in old):
                seen_delta[email_id] = -1 if SEEN in new else 1
    if updates:
        await conn.execute(
            update(E).where(E.c.account_id == bindparam("a"), E.c.id == bindparam("i"))
            .values(keywords=bindparam("k"), updated_modseq=bindparam("m")), updates)
        changed_ids = [u["i"] for u in updates]
        unseen_by_mailbox: dict[int, int] = defaultdict(int)
        touched: set[int] = set()
        for chunk in _chunks(changed_ids):
            rows = await conn.execute(
                update(MM).where(MM.c.account_id == cs.account_id, MM.c.email_id.in_(chunk))
                .values(modseq=cs.modseq).returning(MM.c.mailbox_id, MM.c.uid, MM.c.email_id))
            for mbox, uid, email_id in rows.all():
                touched.add(mbox)
                unseen_by_mailbox[mbox] += seen_delta.get(email_id, 0)
                cs.record("Membership", email_id, "u", mailbox_id=mbox, uid=uid)
        if touched:
            await conn.execute(
                update(MB).where(MB.c.account_id == bindparam("a"), MB.c.id == bindparam("i"))
                .values(unseen_count=MB.c.unseen_count + bindparam("d"),
                        highest_modseq=bindparam("m")),
                [{"a": cs.account_id, "i": m, "d": unseen_by_mailbox[m], "m": cs.modseq}
                 for m in sorted(touched)])
            for m in sorted(touched):
                _record_once(cs, "Mailbox", m, "u")
        emails_recorded = _recorded(cs, "Email")
        for email_id in changed_ids:
            if email_id not in emails_recorded:
                cs.record("Email", email_id, "u")
    return KeywordUpdate(result, frozenset(u["i"] for u in updates), uid_of, tuple(conflicts))


# ---------------------------------------------------------------------------------------------
# Reads
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Message:
    """An email as seen through one mailbox membership (an IMAP message)."""

    mailbox_id: int
    uid: int
    email_id: int
    modseq: int
    saved_at: int
    keywords: frozenset[str]
    size: int
    received_at: int
    received_tz: int
    sent_at: int | None
    thread_id: int
    blob_id: str


@dataclass(frozen=True, slots=True)
class Email:
    """The stored header summary of an email (JMAP Email) and where it sits."""

    id: int
    blob_id: str
    size: int
    received_at: int
    received_tz: int
    sent_at: int | None
    thread_id: int
    keywords: frozenset[str]
    subject: str
    from_: list
    sender: list
    reply_to: list
    to: list
    cc: list
    bcc: list
    message_id: str
    in_reply_to: tuple[str, ...]
    references: tuple[str, ...]
    preview: str
    has_attachment: bool
    structure: dict
    created_modseq: int
    updated_modseq: int
    mailboxes: dict[int, int]  # mailbox_id → uid


_MSG_COLS = (MM.c.mailbox_id, MM.c.uid, MM.c.email_id, MM.c.modseq, MM.c.saved_at, E.c.keywords,
             E.c.size, E.c.received_at, E.c.received_tz, E.c.sent_at, E.c.thread_id,
             E.c.blob_id)
_JOIN = MM.join(E, and_(E.c.account_id == MM.c.account_id, E.c.id == MM.c.email_id))


def _message(r) -> Message:
    return Message(r[0], r[1], r[2], r[3], r[4], decode_keywords(r[5]), *r[6:])


SORT_KEYS = {
    "received_at": E.c.received_at, "sent_at": E.c.sent_at, "size": E.c.size,
    "subject": E.c.sort_subject, "from": E.c.sort_from, "to": E.c.sort_to, "uid": MM.c.uid,
    "modseq": MM.c.modseq,
}


async def list_messages(conn: AsyncConnection, account_id: int, mailbox_id: int, *,
                        sort: Sequence[tuple[str, str]] = (("uid", "asc"),), position: int = 0,
                        limit: int | None = None, uid_min: int | None = None,
                        uid_max: int | None = None) -> list[Message]:
    """Messages of a mailbox, sorted (ties broken by UID), paged by position/limit and/or limited
    to a UID range."""
    q = select(*_MSG_COLS).select_from(_JOIN).where(
        MM.c.account_id == account_id, MM.c.mailbox_id == mailbox_id)
    if uid_min is not None:
        q = q.where(MM.c.uid >= uid_min)
    if uid_max is not None:
        q = q.where(MM.c.uid <= uid_max)
    order = []
    for key, direction in sort:
        col = SORT_KEYS[key]
        order.append(col.desc() if direction.lower().startswith("desc") else col.asc())
    if not any(k == "uid" for k, _d in sort):
        order.append(MM.c.uid.asc())
    q = q.order_by(*order).offset(position)
    if limit is not None:
        q = q.limit(limit)
    return [_message(r) for r in await conn.execute(q)]


async def get_messages_by_uid(conn: AsyncConnection, account_id: int, mailbox_id: int,
                              uids: Iterable[int]) -> list[Message]:
    """The messages with these UIDs (missing ones skipped), ascending by UID."""
    out: list[Message] = []
    base = select(*_MSG_COLS).select_from(_JOIN).where(
        MM.c.account_id == account_id, MM.c.mailbox_id == mailbox_id)
    for chunk in _chunks(sorted(set(uids))):
        out.extend(_message(r) for r in await conn.execute(base.where(MM.c.uid.in_(chunk))))
    out.sort(key=lambda m: m.uid)
    return out


async def get_emails(conn: AsyncConnection, account_id: int,
                     email_ids: Iterable[int]) -> dict[int, Email]:
    """JMAP Email/get: the stored summary of each existing email, with its mailboxes."""
    ids = sorted(set(email_ids))
    out: dict[int, Email] = {}
    for chunk in _chunks(ids):
        boxes: dict[int, dict[int, int]] = defaultdict(dict)
        for email_id, mbox, uid in await conn.execute(
                select(MM.c.email_id, MM.c.mailbox_id, MM.c.uid).where(
                    MM.c.account_id == account_id, MM.c.email_id.in_(chunk))):
            boxes[email_id][mbox] = uid
        for r in await conn.execute(select(E).where(E.c.account_id == account_id,
                                                    E.c.id.in_(chunk))):
            out[r.id] = Email(
                r.id, r.blob_id, r.size, r.received_at, r.received_tz, r.sent_at, r.thread_id,
                decode_keywords(r.keywords), r.subject, json.loads(r.from_json),
                json.loads(r.sender_json), json.loads(r.reply_to_json), json.loads(r.to_json),
                json.loads(r.cc_json), json.loads(r.bcc_json), r.message_id,
                tuple(r.in_reply_to.split()), tuple(r.references.split()), r.preview,
                bool(r.has_attachment), json.loads(r.structure_json), r.created_modseq,
                r.updated_modseq, boxes.get(r.id, {}))
    return out


async def uid_map(conn: AsyncConnection, account_id: int,
                  mailbox_id: int) -> list[tuple[int, int, int]]:
    """[(uid, email_id, modseq)] ascending by UID: what IMAP SELECT builds sequence numbers from
    (one primary-key range scan)."""
    rows = await conn.execute(select(MM.c.uid, MM.c.email_id, MM.c.modseq).where(
        MM.c.account_id == account_id, MM.c.mailbox_id == mailbox_id).order_by(MM.c.uid))
    return [tuple(r) for r in rows]


@dataclass(frozen=True, slots=True)
class MailboxStatus:
    total: int
    unseen: int
    uid_next: int
    uidvalidity: int
    highest_modseq: int
    size: int


async def mailbox_status(conn: AsyncConnection, account_id: int, mailbox_id: int) -> MailboxStatus:
    """IMAP STATUS / SELECT counts, from the counter columns (no scan)."""
    from mailserver.store.mailboxes import MailboxNotFound

    row = (await conn.execute(select(MB.c.total_count, MB.c.unseen_count, MB.c.uid_next,
                                     MB.c.uidvalidity, MB.c.highest_modseq, MB.c.total_size)
                              .where(MB.c.account_id == account_id, MB.c.id == mailbox_id))).first()
    if row is None:
        raise MailboxNotFound(mailbox_id)
    return MailboxStatus(*row)


async def first_unseen_uid(conn: AsyncConnection, account_id: int, mailbox_id: int) -> int | None:
    """IMAP SELECT [UNSEEN n] needs the first message without $seen."""
    rows = await conn.execute(select(MM.c.uid, E.c.keywords).select_from(_JOIN).where(
        MM.c.account_id == account_id, MM.c.mailbox_id == mailbox_id).order_by(MM.c.uid))
    for uid, kw in rows:
        if SEEN not in decode_keywords(kw):
            return uid
    return None


async def changed_since(conn: AsyncConnection, account_id: int, mailbox_id: int,
                        modseq: int) -> list[Message]:
    """RFC 7162 CHANGEDSINCE: memberships with MODSEQ > modseq (index on mailbox, modseq)."""
    q = (select(*_MSG_COLS).select_from(_JOIN)
         .where(MM.c.account_id == account_id, MM.c.mailbox_id == mailbox_id,
                MM.c.modseq > modseq).order_by(MM.c.uid))
    return [_message(r) for r in await conn.execute(q)]
