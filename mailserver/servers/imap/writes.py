"""IMAP's most frequent writes in plain ``sqlite3`` statements on SQLite.

Profiled (server CPU per command, one client): ``STORE`` cost ~5 ms, of which the change-set
bookkeeping (``accountlock.begin_change`` + ``ChangeSet.flush``) took ~0.9 ms and
``messages.set_keywords`` ~3.8 ms — five SQLAlchemy Core statements, each mostly statement
construction, cache-key generation and execution context rather than SQLite. The same
statements straight on the transaction's ``sqlite3`` connection cost a few hundredths of a
millisecond each.

Profiled the same way, ``UID EXPUNGE`` of one message cost ~9 ms: ``messages.expunge``
runs 11 Core statements (memberships, counters, the orphaned email, its search-index row,
blob reference and thread); ``expunge`` below runs them as plain sqlite3.

These functions run inside ``ImapStore.change`` (SQLite: in ``Database.run_write``'s writer
thread, in its ``BEGIN IMMEDIATE`` transaction) and do exactly what the store functions they
stand for do — same rows, same counters, same change-log records — so JMAP, POP3 and the
change log see no difference; ``tests/servers/imap/test_imap_fastpaths.py`` compares the rows
both leave, so a change to those store functions that is not mirrored here fails there. On
PostgreSQL (or any connection that is not ``inthread.ThreadConnection`` over sqlite3) they
call the store functions.
"""

from __future__ import annotations

import sqlite3
import time
from collections import defaultdict

from mailserver.store import messages as msg
from mailserver.store.accountlock import (
    _COUNTERS,
    AccountNotFound,
    ChangeSet,
    begin_change,
)
from mailserver.store.keywords import (
    DELETED,
    SEEN,
    decode_keywords,
    encode_keywords,
    normalize_keywords,
)


def raw_sqlite(conn) -> sqlite3.Connection | None:
    """The sqlite3 connection under an ``inthread.ThreadConnection``, else None."""
    sync = getattr(conn, "sync", None)
    if sync is None or conn.dialect.name != "sqlite":
        return None
    return sync.connection.driver_connection


async def begin(conn, account_id: int) -> ChangeSet:
    """``accountlock.begin_change``."""
    db = raw_sqlite(conn)
    if db is None:
        return await begin_change(conn, account_id)
    row = db.execute(
        "UPDATE accounts SET modseq = modseq + 1 WHERE id = ? RETURNING modseq, "
        + ", ".join(_COUNTERS), (account_id,)).fetchone()
    if row is None:
        raise AccountNotFound(account_id)
    return ChangeSet(account_id, row[0], int(time.time()), dict(zip(_COUNTERS, row[1:])))


async def flush(conn, cs: ChangeSet) -> None:
    """``ChangeSet.flush``: the change-log rows and the id counters."""
    db = raw_sqlite(conn)
    if db is None:
        await cs.flush(conn)
        return
    if cs.rows:
        db.executemany(
            "INSERT INTO changes (account_id, modseq, idx, object_type, object_id, change, "
            "mailbox_id, uid, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [(r["account_id"], r["modseq"], r["idx"], r["object_type"], r["object_id"],
              r["change"], r["mailbox_id"], r["uid"], r["created_at"]) for r in cs.rows])
        cs.rows = []
    if cs._dirty:  # an id was allocated (ChangeSet.next_id / next_uidvalidity)
        db.execute("UPDATE accounts SET " + ", ".join(f"{c} = ?" for c in _COUNTERS)
                   + " WHERE id = ?", (*(cs.counters[c] for c in _COUNTERS), cs.account_id))
        cs._dirty = False


async def store_flags(conn, cs: ChangeSet, mailbox_id: int, uids: list[int], *,
                      add=(), remove=(), replace=None, unchanged_since: int | None = None
                      ) -> tuple[msg.KeywordUpdate, dict[int, tuple[frozenset[str], int]]]:
    """IMAP STORE: ``messages.set_keywords`` in mailbox mode, plus the state of each message
    it touched afterwards (uid → (keywords, MODSEQ)) for the FETCH responses."""
    db = raw_sqlite(conn)
    if db is None:
        upd = await msg.set_keywords(conn, cs, mailbox_id=mailbox_id, uids=uids, add=add,
                                     remove=remove, replace=replace,
                                     unchanged_since=unchanged_since)
        rows = await msg.get_messages_by_uid(conn, cs.account_id, mailbox_id,
                                             list(upd.uids.values()))
        return upd, {m.uid: (m.keywords, m.modseq) for m in rows}
    account_id = cs.account_id
    add_kw = normalize_keywords(add)
    remove_kw = normalize_keywords(remove)
    replace_kw = None if replace is None else normalize_keywords(replace)
    uid_of: dict[int, int] = {}
    modseq_of: dict[int, int] = {}  # uid → MODSEQ before
    conflicts: list[int] = []
    uid_list = sorted(set(uids))
    for chunk in msg._chunks(uid_list):
        for uid, email_id, modseq in db.execute(
                "SELECT uid, email_id, modseq FROM mailbox_messages WHERE account_id = ? "
                f"AND mailbox_id = ? AND uid IN ({','.join('?' * len(chunk))})",
                (account_id, mailbox_id, *chunk)):
            if unchanged_since is not None and modseq > unchanged_since:
                conflicts.append(uid)
                continue
            uid_of[email_id] = uid
            modseq_of[uid] = modseq
    ids = sorted(uid_of)
    result: dict[int, frozenset[str]] = {}
    updates: list[tuple[str, int, int, int]] = []
    seen_delta: dict[int, int] = {}
    for chunk in msg._chunks(ids):
        for email_id, kw in db.execute(
                "SELECT id, keywords FROM emails WHERE account_id = ? "
                f"AND id IN ({','.join('?' * len(chunk))})", (account_id, *chunk)):
            old = decode_keywords(kw)
            new = replace_kw if replace_kw is not None else (old | add_kw) - remove_kw
            result[email_id] = new
            if new != old:
                updates.append((encode_keywords(new), cs.modseq, account_id, email_id))
                if (SEEN in new) != (SEEN in old):
                    seen_delta[email_id] = -1 if SEEN in new else 1
    changed_ids = [u[3] for u in updates]
    if updates:
        db.executemany("UPDATE emails SET keywords = ?, updated_modseq = ? "
                       "WHERE account_id = ? AND id = ?", updates)
        unseen_by_mailbox: dict[int, int] = defaultdict(int)
        touched: set[int] = set()
        for chunk in msg._chunks(changed_ids):
            # keywords belong to the email: every membership of it gets the new MODSEQ
            for mbox, uid, email_id in db.execute(
                    "UPDATE mailbox_messages SET modseq = ? WHERE account_id = ? "
                    f"AND email_id IN ({','.join('?' * len(chunk))}) "
                    "RETURNING mailbox_id, uid, email_id",
                    (cs.modseq, account_id, *chunk)).fetchall():
                touched.add(mbox)
                unseen_by_mailbox[mbox] += seen_delta.get(email_id, 0)
                cs.record("Membership", email_id, "u", mailbox_id=mbox, uid=uid)
        if touched:
            db.executemany(
                "UPDATE mailboxes SET unseen_count = unseen_count + ?, highest_modseq = ? "
                "WHERE account_id = ? AND id = ?",
                [(unseen_by_mailbox[m], cs.modseq, account_id, m) for m in sorted(touched)])
            for m in sorted(touched):
                msg._record_once(cs, "Mailbox", m, "u")
        emails_recorded = msg._recorded(cs, "Email")
        for email_id in changed_ids:
            if email_id not in emails_recorded:
                cs.record("Email", email_id, "u")
    changed = frozenset(changed_ids)
    state = {uid: (result[e], cs.modseq if e in changed else modseq_of[uid])
             for e, uid in uid_of.items() if e in result}
    return msg.KeywordUpdate(result, changed, uid_of, tuple(conflicts)), state


def _in(n: int) -> str:
    return "(" + ",".join("?" * n) + ")"


async def expunge(conn, cs: ChangeSet, mailbox_id: int, uids: list[int] | None) -> list[int]:
    """IMAP EXPUNGE / UID EXPUNGE: ``messages.expunge`` (memberships with ``$deleted`` go;
    an email left in no mailbox is destroyed: search index, blob reference, thread).
    Profiled at ~9 ms for one message through Core (11 statements)."""
    db = raw_sqlite(conn)
    if db is None:
        return await msg.expunge(conn, cs, mailbox_id, uids)
    account_id = cs.account_id
    select = ("SELECT mm.uid, mm.email_id, e.size, e.keywords FROM mailbox_messages mm "
              "JOIN emails e ON e.account_id = mm.account_id AND e.id = mm.email_id "
              "WHERE mm.account_id = ? AND mm.mailbox_id = ?")
    if uids is None:
        members = db.execute(select + " ORDER BY mm.uid", (account_id, mailbox_id)).fetchall()
    else:
        members = []
        wanted = sorted(set(uids))
        for chunk in msg._chunks(wanted):
            members.extend(db.execute(select + " AND mm.uid IN " + _in(len(chunk)),
                                      (account_id, mailbox_id, *chunk)).fetchall())
        members.sort(key=lambda r: r[0])
    members = [m for m in members if DELETED in decode_keywords(m[3])]
    if not members:
        return []
    # messages._remove_memberships
    gone_uids = [m[0] for m in members]
    for chunk in msg._chunks(gone_uids):
        db.execute("DELETE FROM mailbox_messages WHERE account_id = ? AND mailbox_id = ? "
                   "AND uid IN " + _in(len(chunk)), (account_id, mailbox_id, *chunk))
    unseen = sum(1 for m in members if SEEN not in decode_keywords(m[3]))
    size = sum(m[2] for m in members)
    db.execute("UPDATE mailboxes SET total_count = total_count - ?, "
               "unseen_count = unseen_count - ?, total_size = total_size - ?, "
               "highest_modseq = ? WHERE account_id = ? AND id = ?",
               (len(members), unseen, size, cs.modseq, account_id, mailbox_id))
    for m in members:
        cs.record("Membership", m[1], "d", mailbox_id=mailbox_id, uid=m[0])
    msg._record_once(cs, "Mailbox", mailbox_id, "u")
    _destroy_orphans(db, cs, [m[1] for m in members])
    return gone_uids


def _present(db, table: str, column: str, account_id: int, values: list[int]) -> set[int]:
    """Which of ``values`` the account's rows of ``table`` hold in ``column``."""
    found: set[int] = set()
    for chunk in msg._chunks(values):
        found.update(r[0] for r in db.execute(
            f"SELECT DISTINCT {column} FROM {table} WHERE account_id = ? "
            f"AND {column} IN " + _in(len(chunk)), (account_id, *chunk)))
    return found


def _destroy_orphans(db, cs: ChangeSet, email_ids: list[int]) -> None:
    """``messages._destroy_orphans``: emails of ``email_ids`` left in no mailbox go."""
    import logging

    account_id = cs.account_id
    candidates = sorted(set(email_ids))
    still = _present(db, "mailbox_messages", "email_id", account_id, candidates)
    emails_recorded = msg._recorded(cs, "Email")
    for email_id in candidates:
        if email_id in still and email_id not in emails_recorded:
            cs.record("Email", email_id, "u")
    orphans = [e for e in candidates if e not in still]
    info = []
    for chunk in msg._chunks(orphans):
        info.extend(db.execute("SELECT id, blob_id, size, thread_id FROM emails "
                               "WHERE account_id = ? AND id IN " + _in(len(chunk)),
                               (account_id, *chunk)).fetchall())
    orphans = sorted(r[0] for r in info)  # ids that never existed are ignored
    if not orphans:
        return
    base = account_id << 32  # search._rowid
    for chunk in msg._chunks(orphans):
        db.execute("DELETE FROM email_fts WHERE rowid IN " + _in(len(chunk)),
                   tuple(base | e for e in chunk))
        db.execute("DELETE FROM emails WHERE account_id = ? AND id IN " + _in(len(chunk)),
                   (account_id, *chunk))
    db.execute("UPDATE accounts SET used_bytes = used_bytes - ? WHERE id = ?",
               (sum(r[2] for r in info), account_id))
    per_blob: dict[str, int] = defaultdict(int)
    for r in info:
        per_blob[r[1]] += 1
    log = logging.getLogger("mailserver.store.blobrefs")
    for blob_id, n in per_blob.items():  # blobrefs.drop_ref
        row = db.execute("UPDATE blobs SET refcount = refcount - ?, updated_at = ? WHERE id = ? "
                         "RETURNING refcount", (n, cs.now, blob_id)).fetchone()
        if row is None:
            log.warning("blob refcount: drop of unknown blob %s", blob_id)
        elif row[0] < 0:
            log.warning("blob refcount: %s went to %d, held at 0", blob_id, row[0])
            db.execute("UPDATE blobs SET refcount = 0 WHERE id = ?", (blob_id,))
    for r in info:
        cs.record("Email", r[0], "d")
    threads_hit = sorted({r[3] for r in info})
    alive = _present(db, "emails", "thread_id", account_id, threads_hit)
    gone = [t for t in threads_hit if t not in alive]
    for t in threads_hit:
        msg._record_once(cs, "Thread", t, "u" if t in alive else "d")
    for chunk in msg._chunks(gone):
        # a later message referring to these ids starts a new thread
        db.execute("DELETE FROM thread_refs WHERE account_id = ? AND thread_id IN "
                   + _in(len(chunk)), (account_id, *chunk))
