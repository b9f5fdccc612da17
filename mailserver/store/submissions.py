"""EmailSubmission delivery status (RFC 8621 §7 ``deliveryStatus``) ↔ the outbound queue.

``email_submissions.delivery_status`` is JSON ``{recipient: {"smtpReply", "delivered",
"displayed"}}`` written at submission ("queued" for remote recipients). While a recipient's
queue row exists its status is read from the row (``queue_status``: last attempt's reply,
still "queued"). The row is deleted when the recipient is finished, so the queue worker
records the final answer first: ``record_final_outcomes(conn, outcomes)`` in the transaction
that finishes them (``QueueWorker._apply``, right after ``store.finish_many``) — one indexed
read per queue message, nothing for messages without an ``account_id`` (forwards, DSNs); each
updated submission is recorded as changed, so the account's EmailSubmission state moves and
``/changes`` reports it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from mailserver.store import schema
from mailserver.store.accountlock import begin_change

ES = schema.email_submissions
QR = schema.queue_recipients


def smtp_reply(kind: str, status: str, diagnostic: str) -> str:
    """An SMTP reply string for ``smtpReply`` from a queue outcome / last attempt."""
    text = " ".join((diagnostic or "").split())[:500]
    if len(text) >= 3 and text[:3].isdigit():
        return text
    code = {"2": "250", "4": "451", "5": "550"}.get((status or "")[:1],
                                                    "250" if kind == "delivered" else "451")
    return f"{code} {status or ''} {text}".replace("  ", " ").strip()


async def record_final_outcomes(conn: AsyncConnection, outcomes: Iterable[Any]) -> int:
    """Write the final ``delivered`` ("yes" / "no") and ``smtpReply`` of finished queue
    recipients into their EmailSubmission, if any. ``outcomes`` are the queue worker's
    ``Outcome`` objects (``rcpt.message.id``/``.account_id``, ``rcpt.recipient``, ``kind``,
    ``status``, ``diagnostic``) of recipients that were delivered or failed for good. Returns
    how many submissions were updated."""
    by_message: dict[tuple[int, int], list[Any]] = {}
    for o in outcomes:
        m = o.rcpt.message
        if m.account_id is not None and not m.is_dsn:
            by_message.setdefault((m.account_id, m.id), []).append(o)
    changed = 0
    for (account_id, queue_id), items in sorted(by_message.items()):
        rows = (await conn.execute(select(ES.c.id, ES.c.delivery_status).where(
            ES.c.account_id == account_id, ES.c.queue_message_id == queue_id))).all()
        cs = None
        if rows:  # a property changed: the EmailSubmission state moves (RFC 8620 §5.2)
            cs = await begin_change(conn, account_id)
        for row in rows:
            status = json.loads(row.delivery_status)
            lower = {k.lower(): k for k in status}
            for o in items:
                key = lower.get(o.rcpt.recipient.lower(), o.rcpt.recipient)
                status[key] = {
                    "smtpReply": smtp_reply(o.kind, o.status, o.diagnostic),
                    "delivered": "yes" if o.kind == "delivered" else "no",
                    "displayed": "unknown"}
            await conn.execute(update(ES).where(ES.c.account_id == account_id,
                                                ES.c.id == row.id)
                               .values(delivery_status=json.dumps(status)))
            changed += 1
            cs.record("EmailSubmission", row.id, "u")
        if cs is not None:
            await cs.flush(conn)
    return changed


async def queue_status(conn: AsyncConnection, queue_ids: Sequence[int]
                       ) -> dict[int, dict[str, dict[str, str]]]:
    """The recipients still in the queue per queue message id, as deliveryStatus entries
    (keys lowercased)."""
    out: dict[int, dict[str, dict[str, str]]] = {}
    if not queue_ids:
        return out
    rows = (await conn.execute(select(
        QR.c.message_id, QR.c.recipient, QR.c.state, QR.c.attempts, QR.c.last_status,
        QR.c.last_error).where(QR.c.message_id.in_(sorted(set(queue_ids)))))).all()
    for r in rows:
        if r.attempts and r.last_error:
            reply = smtp_reply("temporary", r.last_status or "4.0.0", r.last_error)
        else:
            reply = "250 2.0.0 queued"
        out.setdefault(r.message_id, {})[r.recipient.lower()] = {
            "smtpReply": reply, "delivered": "queued", "displayed": "unknown"}
    return out
