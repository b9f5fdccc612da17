"""Mailbox services: create, rename, delete, list, counts (see mailserver.store.schema)."""

from __future__ import annotations

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from mailserver.store import schema
from mailserver.store.accountlock import ChangeSet


async def create_default_mailboxes(conn: AsyncConnection, cs: ChangeSet) -> dict[str, int]:
    """Create INBOX and the special-use set for a new account; returns role → mailbox id."""
    ids: dict[str, int] = {}
    rows = []
    for order, (path, role) in enumerate(schema.SPECIAL_USE_MAILBOXES):
        mailbox_id = cs.next_id("mailbox")
        ids[role] = mailbox_id
        rows.append({
            "account_id": cs.account_id, "id": mailbox_id, "parent_id": None, "name": path,
            "path": path, "role": role, "sort_order": order, "subscribed": True,
            "uidvalidity": cs.next_uidvalidity(), "uid_next": 1, "highest_modseq": cs.modseq,
            "created_modseq": cs.modseq,
        })
        cs.record("Mailbox", mailbox_id, "c")
    await conn.execute(insert(schema.mailboxes), rows)
    return ids
