"""Helpers for the mail-store and delivery tests: accounts, messages, recounts."""

from __future__ import annotations

import itertools

from sqlalchemy import func, select

from mailserver.store import schema

_counter = itertools.count(1)


def make_raw(subject: str = "Hello", *, frm: str = "alice@example.org",
             to: str = "bob@example.com", body: str = "Hi there.\r\n",
             message_id: str | None = None, in_reply_to: str | None = None,
             date: str = "Mon, 23 Nov 2026 10:00:00 +0000", extra: str = "") -> bytes:
    n = next(_counter)
    mid = message_id or f"m{n}@example.org"
    headers = [f"From: {frm}", f"To: {to}", f"Subject: {subject}", f"Date: {date}",
               f"Message-ID: <{mid}>"]
    if in_reply_to:
        headers += [f"In-Reply-To: <{in_reply_to}>", f"References: <{in_reply_to}>"]
    if extra:
        headers.append(extra)
    return ("\r\n".join(headers) + "\r\n\r\n" + body).encode()


def directory(db):
    """The real Directory, with a cheap password hash for tests."""
    from mailserver.auth.passwords import Argon2Params
    from mailserver.store.directory import Directory

    return Directory(db, password_params=Argon2Params(time_cost=1, memory_cost=8))


async def create_account(db, login: str = "bob@example.com", *, quota: int = 0) -> int:
    """An account with its default mailboxes, through Directory.add_account."""
    from mailserver.store.directory import AlreadyExists

    d = directory(db)
    try:
        await d.add_domain(login.split("@", 1)[1])
    except AlreadyExists:
        pass
    return (await d.add_account(login, "secret-password-1", quota_bytes=quota)).id


async def recount(conn, account_id: int) -> dict:
    """Counters recomputed from the rows: mailbox id → (total, unseen, size), and used bytes."""
    mm, e = schema.mailbox_messages, schema.emails
    rows = await conn.execute(
        select(mm.c.mailbox_id, func.count(), func.sum(e.c.size), e.c.keywords)
        .join(e, (e.c.account_id == mm.c.account_id) & (e.c.id == mm.c.email_id))
        .where(mm.c.account_id == account_id)
        .group_by(mm.c.mailbox_id, e.c.keywords))
    out: dict[int, list[int]] = {}
    for mbox, n, size, kw in rows:
        t = out.setdefault(mbox, [0, 0, 0])
        t[0] += n
        t[2] += size or 0
        if "$seen" not in kw.split():
            t[1] += n
    used = (await conn.execute(select(func.coalesce(func.sum(e.c.size), 0)).where(
        e.c.account_id == account_id))).scalar_one()
    return {"mailboxes": {k: tuple(v) for k, v in out.items()}, "used": used}


async def stored_counters(conn, account_id: int) -> dict:
    mb = schema.mailboxes
    rows = await conn.execute(select(mb.c.id, mb.c.total_count, mb.c.unseen_count,
                                     mb.c.total_size).where(mb.c.account_id == account_id))
    boxes = {r[0]: (r[1], r[2], r[3]) for r in rows if r[1] or r[2] or r[3]}
    used = (await conn.execute(select(schema.accounts.c.used_bytes).where(
        schema.accounts.c.id == account_id))).scalar_one()
    return {"mailboxes": boxes, "used": used}
