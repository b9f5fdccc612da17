"""Consistency check of the mail store (``mailserver fsck``): metadata against itself and
against the blob store.

Checked: every email's blob exists in the blob store; ``blobs.refcount`` equals the number of
references (``emails`` rows; other referrers — the outbound queue, uploads — add theirs here
when they exist); a ``blobs`` row exists for every referenced blob; every UID is below its
mailbox's ``uid_next`` and every membership MODSEQ at most ``highest_modseq``; the mailbox
counters (``total_count``, ``unseen_count``, ``total_size``) and ``accounts.used_bytes`` equal
recounts; no email is without a membership; no membership points at a missing email.

``repair=True`` fixes what can be fixed without guessing: counters, ``used_bytes``,
``uid_next``/``highest_modseq`` (raised, never lowered), refcounts (and missing ``blobs`` rows)
and memberships of missing emails (deleted). Missing blobs and emails without a mailbox are
reported only: they need a human (restore the blob from a backup; decide where an orphan goes).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from sqlalchemy import and_, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from mailserver.store import schema
from mailserver.store.keywords import SEEN, decode_keywords

E = schema.emails
MM = schema.mailbox_messages
MB = schema.mailboxes
A = schema.accounts
B = schema.blobs


@dataclass(slots=True)
class FsckReport:
    missing_blobs: list[str] = field(default_factory=list)
    refcount_mismatches: list[tuple[str, int, int]] = field(default_factory=list)  # id, row, real
    missing_blob_rows: list[str] = field(default_factory=list)
    uid_next_errors: list[tuple[int, int, int, int]] = field(default_factory=list)  # a, mb, max, next
    modseq_errors: list[tuple[int, int, int, int]] = field(default_factory=list)
    counter_mismatches: list[tuple[int, int, tuple, tuple]] = field(default_factory=list)
    used_bytes_mismatches: list[tuple[int, int, int]] = field(default_factory=list)
    emails_without_mailbox: list[tuple[int, int]] = field(default_factory=list)
    memberships_without_email: list[tuple[int, int, int]] = field(default_factory=list)
    repaired: int = 0

    @property
    def ok(self) -> bool:
        return not any((self.missing_blobs, self.refcount_mismatches, self.missing_blob_rows,
                        self.uid_next_errors, self.modseq_errors, self.counter_mismatches,
                        self.used_bytes_mismatches, self.emails_without_mailbox,
                        self.memberships_without_email))

    def summary(self) -> str:
        parts = [f"{name}={len(getattr(self, name))}" for name in (
            "missing_blobs", "refcount_mismatches", "missing_blob_rows", "uid_next_errors",
            "modseq_errors", "counter_mismatches", "used_bytes_mismatches",
            "emails_without_mailbox", "memberships_without_email")]
        return ("ok" if self.ok else "problems: " + " ".join(parts)) + f" repaired={self.repaired}"


async def fsck(db, blobs=None, repair: bool = False) -> FsckReport:
    """Check (and with ``repair`` fix) the store; ``blobs`` None skips the blob-existence check."""
    report = FsckReport()
    ctx = db.write() if repair else db.read()
    async with ctx as conn:
        await _memberships_without_email(conn, report, repair)
        await _blob_refs(conn, report, repair)
        await _mailboxes(conn, report, repair)
        await _used_bytes(conn, report, repair)
        rows = await conn.execute(select(E.c.account_id, E.c.id).where(
            ~select(MM.c.uid).where(MM.c.account_id == E.c.account_id,
                                    MM.c.email_id == E.c.id).exists()))
        report.emails_without_mailbox = [tuple(r) for r in rows]
        blob_ids = (await conn.execute(select(E.c.blob_id).distinct())).scalars().all()
    if blobs is not None:
        for blob_id in blob_ids:
            if not await blobs.exists(blob_id):
                report.missing_blobs.append(blob_id)
    return report


async def _memberships_without_email(conn: AsyncConnection, report: FsckReport,
                                     repair: bool) -> None:
    rows = (await conn.execute(select(MM.c.account_id, MM.c.mailbox_id, MM.c.uid).where(
        ~select(E.c.id).where(E.c.account_id == MM.c.account_id,
                              E.c.id == MM.c.email_id).exists()))).all()
    report.memberships_without_email = [tuple(r) for r in rows]
    if repair:
        for a, m, u in report.memberships_without_email:
            await conn.execute(MM.delete().where(MM.c.account_id == a, MM.c.mailbox_id == m,
                                                 MM.c.uid == u))
            report.repaired += 1


async def _blob_refs(conn: AsyncConnection, report: FsckReport, repair: bool) -> None:
    real = {r[0]: (r[1], r[2]) for r in await conn.execute(
        select(E.c.blob_id, func.count(), func.max(E.c.size)).group_by(E.c.blob_id))}
    rows = {r[0]: r[1] for r in await conn.execute(select(B.c.id, B.c.refcount))}
    for blob_id, (n, size) in sorted(real.items()):
        if blob_id not in rows:
            report.missing_blob_rows.append(blob_id)
            if repair:
                await conn.execute(insert(B).values(id=blob_id, size=size, refcount=n,
                                                    updated_at=0))
                report.repaired += 1
        elif rows[blob_id] != n:
            report.refcount_mismatches.append((blob_id, rows[blob_id], n))
    for blob_id, count in sorted(rows.items()):
        if blob_id not in real and count != 0:
            report.refcount_mismatches.append((blob_id, count, 0))
    if repair:
        for blob_id, _old, n in report.refcount_mismatches:
            await conn.execute(update(B).where(B.c.id == blob_id).values(refcount=n))
            report.repaired += 1


async def _mailboxes(conn: AsyncConnection, report: FsckReport, repair: bool) -> None:
    counts: dict[tuple[int, int], list[int]] = defaultdict(lambda: [0, 0, 0, 0, 0])
    rows = await conn.execute(
        select(MM.c.account_id, MM.c.mailbox_id, func.count(), func.sum(E.c.size),
               func.max(MM.c.uid), func.max(MM.c.modseq), E.c.keywords)
        .join(E, and_(E.c.account_id == MM.c.account_id, E.c.id == MM.c.email_id))
        .group_by(MM.c.account_id, MM.c.mailbox_id, E.c.keywords))
    for a, m, n, size, max_uid, max_modseq, kw in rows:
        c = counts[(a, m)]
        c[0] += n
        c[1] += 0 if SEEN in decode_keywords(kw) else n
        c[2] += size or 0
        c[3] = max(c[3], max_uid or 0)
        c[4] = max(c[4], max_modseq or 0)
    boxes = await conn.execute(select(MB.c.account_id, MB.c.id, MB.c.total_count,
                                      MB.c.unseen_count, MB.c.total_size, MB.c.uid_next,
                                      MB.c.highest_modseq))
    for a, m, total, unseen, size, uid_next, highest in boxes.all():
        c = counts.get((a, m), [0, 0, 0, 0, 0])
        values = {}
        if (total, unseen, size) != tuple(c[:3]):
            report.counter_mismatches.append((a, m, (total, unseen, size), tuple(c[:3])))
            values.update(total_count=c[0], unseen_count=c[1], total_size=c[2])
        if c[3] >= uid_next:
            report.uid_next_errors.append((a, m, c[3], uid_next))
            values["uid_next"] = c[3] + 1
        if c[4] > highest:
            report.modseq_errors.append((a, m, c[4], highest))
            values["highest_modseq"] = c[4]
        if repair and values:
            await conn.execute(update(MB).where(MB.c.account_id == a, MB.c.id == m)
                               .values(**values))
            report.repaired += 1


async def _used_bytes(conn: AsyncConnection, report: FsckReport, repair: bool) -> None:
    real = {r[0]: r[1] for r in await conn.execute(
        select(E.c.account_id, func.sum(E.c.size)).group_by(E.c.account_id))}
    for a, used in (await conn.execute(select(A.c.id, A.c.used_bytes))).all():
        should = real.get(a, 0) or 0
        if used != should:
            report.used_bytes_mismatches.append((a, used, should))
            if repair:
                await conn.execute(update(A).where(A.c.id == a).values(used_bytes=should))
                report.repaired += 1
