"""Reading and compacting the per-account change log (``changes``; see mailserver.store.schema).

- ``changes_since`` serves JMAP ``Foo/changes`` (RFC 8620 §5.2): per object type the ids
  created, updated and destroyed after a state (a MODSEQ). An object created and destroyed in
  the window is left out; created then updated reports created; updated then destroyed reports
  destroyed.
- ``vanished_since`` serves QRESYNC (RFC 7162 §3.2.10) VANISHED (EARLIER), from the
  ``Membership`` ``d`` rows that carry mailbox and UID.
- ``compact_changes`` deletes old rows and raises ``accounts.changes_floor``; asking for changes
  from a state below the floor raises ``CannotCalculateChanges``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from mailserver.store import schema
from mailserver.store.messages import CannotCalculateChanges, changed_since  # noqa: F401

CH = schema.changes
A = schema.accounts


@dataclass(slots=True)
class ObjectChanges:
    created: list[int] = field(default_factory=list)
    updated: list[int] = field(default_factory=list)
    destroyed: list[int] = field(default_factory=list)


@dataclass(slots=True)
class Changes:
    old_modseq: int
    new_modseq: int  # the state to hand out next
    has_more: bool
    by_type: dict[str, ObjectChanges]

    def __getitem__(self, object_type: str) -> ObjectChanges:
        return self.by_type.setdefault(object_type, ObjectChanges())


async def account_state(conn: AsyncConnection, account_id: int) -> tuple[int, int]:
    """(modseq, changes_floor) of an account."""
    row = (await conn.execute(select(A.c.modseq, A.c.changes_floor)
                              .where(A.c.id == account_id))).one()
    return row[0], row[1]


async def changes_since(conn: AsyncConnection, account_id: int, modseq: int, *,
                        types: Iterable[str] | None = None,
                        max_changes: int | None = None) -> Changes:
    """Objects changed after ``modseq``; raises CannotCalculateChanges below the floor or for a
    state from the future. With ``max_changes`` the answer stops at a MODSEQ boundary
    (``has_more``)."""
    current, floor = await account_state(conn, account_id)
    if modseq < floor or modseq > current:
        raise CannotCalculateChanges(modseq)
    q = (select(CH.c.modseq, CH.c.object_type, CH.c.object_id, CH.c.change)
         .where(CH.c.account_id == account_id, CH.c.modseq > modseq))
    type_list = None if types is None else sorted(set(types))
    if type_list is not None:
        q = q.where(CH.c.object_type.in_(type_list))
    rows = (await conn.execute(q.order_by(CH.c.modseq, CH.c.idx))).all()
    # first and last change of every object, in log order
    state: dict[tuple[str, int], list[str]] = {}
    new_modseq, has_more, count, last = current, False, 0, None
    for m, object_type, object_id, change in rows:
        key = (object_type, object_id)
        if max_changes is not None and m != last and key not in state and count >= max_changes:
            new_modseq, has_more = last, True
            break
        if m != last:
            last = m
        if key in state:
            state[key][1] = change
        else:
            state[key] = [change, change]
            count += 1
    out: dict[str, ObjectChanges] = {t: ObjectChanges() for t in (type_list or ())}
    for (object_type, object_id), (first, final) in state.items():
        oc = out.setdefault(object_type, ObjectChanges())
        if final == "d":
            if first != "c":
                oc.destroyed.append(object_id)
        elif first == "c":
            oc.created.append(object_id)
        else:
            oc.updated.append(object_id)
    return Changes(modseq, new_modseq, has_more, out)


async def vanished_since(conn: AsyncConnection, account_id: int, mailbox_id: int,
                         modseq: int) -> list[int]:
    """UIDs expunged from a mailbox after ``modseq``, ascending (QRESYNC VANISHED).

    Raises CannotCalculateChanges when that part of the log is compacted (the IMAP layer then
    answers from the client's known-UIDs list, RFC 7162 §3.2.5.2)."""
    _current, floor = await account_state(conn, account_id)
    if modseq < floor:
        raise CannotCalculateChanges(modseq)
    rows = await conn.execute(select(CH.c.uid).where(
        CH.c.account_id == account_id, CH.c.mailbox_id == mailbox_id, CH.c.modseq > modseq,
        CH.c.object_type == "Membership", CH.c.change == "d"))
    return sorted({r[0] for r in rows})


async def compact_changes(db, account_id: int, keep_after_modseq: int) -> int:
    """Delete change-log rows at or below ``keep_after_modseq`` and raise the floor to it.
    Returns the number of rows deleted."""
    async with db.write() as conn:
        row = (await conn.execute(select(A.c.changes_floor, A.c.modseq)
                                  .where(A.c.id == account_id).with_for_update())).one()
        floor = min(max(row[0], keep_after_modseq), row[1])
        res = await conn.execute(delete(CH).where(CH.c.account_id == account_id,
                                                  CH.c.modseq <= floor))
        await conn.execute(update(A).where(A.c.id == account_id).values(changes_floor=floor))
        return res.rowcount
