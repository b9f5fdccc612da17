"""The per-account write discipline every mail write transaction starts with.

``begin_change(conn, account_id)`` locks the account row (PostgreSQL ``FOR UPDATE``; SQLite
writers are already serialised by ``BEGIN IMMEDIATE``), bumps ``accounts.modseq`` by one and
returns a ``ChangeSet`` that hands out per-account ids and records change-log rows, all under
that one MODSEQ. ``ChangeSet.flush()`` writes the change-log rows and the counters back; call it
once, last, before the transaction commits.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from sqlalchemy import insert, update
from sqlalchemy.ext.asyncio import AsyncConnection

from mailserver.store import schema

_COUNTERS = ("next_mailbox_id", "next_email_id", "next_thread_id", "last_uidvalidity")


class AccountNotFound(LookupError):
    pass


@dataclass(slots=True)
class ChangeSet:
    account_id: int
    modseq: int
    now: int
    counters: dict[str, int]
    rows: list[dict] = field(default_factory=list)
    types: set[str] = field(default_factory=set)
    _dirty: bool = False

    def next_id(self, kind: str) -> int:
        """Allocate a per-account id: kind is "mailbox", "email" or "thread"."""
        key = f"next_{kind}_id"
        value = self.counters[key]
        self.counters[key] = value + 1
        self._dirty = True
        return value

    def next_uidvalidity(self) -> int:
        # RFC 9051 §2.3.1.1: a recreated name must get a new UIDVALIDITY; keep it monotonic per
        # account and close to the clock, within 32 bits and never 0.
        value = max(self.now & 0xFFFFFFFF, self.counters["last_uidvalidity"] + 1)
        if value > 0xFFFFFFFF:
            value = 1
        self.counters["last_uidvalidity"] = value
        self._dirty = True
        return value

    def record(self, object_type: str, object_id: int, change: str,
               mailbox_id: int | None = None, uid: int | None = None) -> None:
        """Append a change-log row (change is "c", "u" or "d") under this MODSEQ."""
        self.rows.append({
            "account_id": self.account_id, "modseq": self.modseq, "idx": len(self.rows),
            "object_type": object_type, "object_id": object_id, "change": change,
            "mailbox_id": mailbox_id, "uid": uid, "created_at": self.now,
        })
        self.types.add(object_type)

    async def flush(self, conn: AsyncConnection) -> None:
        if self.rows:
            await conn.execute(insert(schema.changes), self.rows)
            self.rows = []
        if self._dirty:
            await conn.execute(
                update(schema.accounts).where(schema.accounts.c.id == self.account_id)
                .values(**self.counters))
            self._dirty = False


async def begin_change(conn: AsyncConnection, account_id: int, now: int | None = None) -> ChangeSet:
    a = schema.accounts
    stmt = (update(a).where(a.c.id == account_id).values(modseq=a.c.modseq + 1)
            .returning(a.c.modseq, *(a.c[c] for c in _COUNTERS)))
    # UPDATE … RETURNING takes the row lock on PostgreSQL and is atomic on SQLite.
    row = (await conn.execute(stmt)).first()
    if row is None:
        raise AccountNotFound(account_id)
    counters = {c: row[i + 1] for i, c in enumerate(_COUNTERS)}
    return ChangeSet(account_id, row[0], int(time.time()) if now is None else now, counters)
