"""Queue management for operators (``mailserver queue …``): list, inspect, retry, hold,
release, delete, flush, and the figures (depth, oldest age, deferrals per domain).

A ``Selection`` picks recipients by message ids and/or filters (domain, recipient substring,
minimum age). Changes never touch a recipient a worker holds a lease on except ``delete``,
whose row simply disappears (the worker's outcome is then refused, see ``store.finish``).
Deleting sends no DSN: it is the operator's decision.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import and_, case, delete, func, select, true, update
from sqlalchemy.ext.asyncio import AsyncConnection

from mailserver.queue.store import delete_messages_if_done
from mailserver.store import schema

__all__ = ["Selection", "list_entries", "show_message", "retry", "hold", "release",
           "delete_entries", "flush", "stats"]

_m = schema.queue_messages
_r = schema.queue_recipients


@dataclass(frozen=True, slots=True)
class Selection:
    message_ids: Sequence[int] = field(default_factory=tuple)
    domain: str | None = None
    recipient: str | None = None  # case-insensitive substring
    older_than: float | None = None  # seconds

    def where(self, now: int):
        cond = []
        if self.message_ids:
            cond.append(_r.c.message_id.in_(list(self.message_ids)))
        if self.domain:
            cond.append(_r.c.domain == self.domain.strip().lower().rstrip("."))
        if self.recipient:
            cond.append(func.lower(_r.c.recipient).contains(self.recipient.lower(),
                                                            autoescape=True))
        if self.older_than is not None:
            cond.append(_r.c.created_at <= now - int(self.older_than))
        return and_(true(), *cond)


def _entry(row: Any, now: int) -> dict[str, Any]:
    return {
        "message_id": row.message_id, "recipient_id": row.id, "sender": row.sender,
        "recipient": row.recipient, "domain": row.domain, "state": row.state,
        "attempts": row.attempts, "next_attempt_at": row.next_attempt_at,
        "age": now - row.created_at, "size": row.size,
        "leased": row.lease_expires_at is not None and row.lease_expires_at > now,
        "last_status": row.last_status, "last_error": row.last_error,
        "created_at": row.created_at,
    }


async def list_entries(conn: AsyncConnection, sel: Selection, now: int,
                       limit: int | None = None) -> list[dict[str, Any]]:
    q = (select(_r, _m.c.sender, _m.c.size).join(_m, _m.c.id == _r.c.message_id)
         .where(sel.where(now)).order_by(_r.c.message_id, _r.c.id))
    if limit:
        q = q.limit(limit)
    return [_entry(r, now) for r in (await conn.execute(q)).all()]


async def show_message(conn: AsyncConnection, message_id: int, now: int
                       ) -> dict[str, Any] | None:
    m = (await conn.execute(select(_m).where(_m.c.id == message_id))).first()
    if m is None:
        return None
    out = {k: v for k, v in m._mapping.items()}
    out["age"] = now - m.created_at
    out["recipients"] = await list_entries(conn, Selection(message_ids=[message_id]), now)
    return out


async def _ids(conn: AsyncConnection, sel: Selection, now: int, *extra) -> list[int]:
    return list((await conn.execute(select(_r.c.id).where(sel.where(now), *extra)))
                .scalars().all())


async def retry(conn: AsyncConnection, sel: Selection, now: int) -> int:
    """Make queued recipients due now."""
    return (await conn.execute(update(_r).where(sel.where(now), _r.c.state == "queued")
                               .values(next_attempt_at=now))).rowcount


async def hold(conn: AsyncConnection, sel: Selection, now: int) -> int:
    """No delivery attempts until released (a running attempt still finishes)."""
    return (await conn.execute(update(_r).where(sel.where(now), _r.c.state == "queued")
                               .values(state="held"))).rowcount


async def release(conn: AsyncConnection, sel: Selection, now: int) -> int:
    """Held recipients back into the queue, due now."""
    return (await conn.execute(update(_r).where(sel.where(now), _r.c.state == "held")
                               .values(state="queued", next_attempt_at=now))).rowcount


async def delete_entries(conn: AsyncConnection, sel: Selection, now: int) -> int:
    """Delete recipients (no DSN); messages left without recipients go with their blob
    reference."""
    msg_ids = list((await conn.execute(select(_r.c.message_id).distinct()
                                       .where(sel.where(now)))).scalars().all())
    n = (await conn.execute(delete(_r).where(sel.where(now)))).rowcount
    await delete_messages_if_done(conn, msg_ids, now)
    return n


async def flush(conn: AsyncConnection, sel: Selection, now: int) -> int:
    """Everything queued (of the selection) due now: ``retry`` without a required selection."""
    return await retry(conn, sel, now)


async def stats(conn: AsyncConnection, now: int) -> dict[str, Any]:
    """Queue depth, oldest age, and per domain: recipients, deferred (≥ 1 failed attempt),
    held."""
    messages = (await conn.execute(select(func.count()).select_from(_m))).scalar_one()
    rows = (await conn.execute(
        select(_r.c.domain, func.count(),
               func.sum(case((_r.c.attempts > 0, 1), else_=0)),
               func.sum(case((_r.c.state == "held", 1), else_=0)),
               func.min(_r.c.created_at))
        .group_by(_r.c.domain).order_by(func.count().desc(), _r.c.domain))).all()
    oldest = min((r[4] for r in rows), default=None)
    return {
        "messages": messages,
        "recipients": sum(r[1] for r in rows),
        "deferred": sum(int(r[2] or 0) for r in rows),
        "held": sum(int(r[3] or 0) for r in rows),
        "oldest_age": None if oldest is None else now - oldest,
        "domains": [{"domain": r[0], "recipients": r[1], "deferred": int(r[2] or 0),
                     "held": int(r[3] or 0), "oldest_age": now - r[4]} for r in rows],
    }
