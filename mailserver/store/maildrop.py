"""The POP3 maildrop read: an account's INBOX (id, UIDVALIDITY) and its messages, in UID order,
with just what POP3 needs (uid, email id, size, blob id, keywords).

Two prebuilt statements instead of ``mailboxes.get_mailbox_by_role`` + ``messages.
list_messages``: every POP3 login runs this, inside the transaction that takes the maildrop
lease, and building the general-purpose queries (sorting, paging, twelve columns) cost more CPU
than running them.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from sqlalchemy import and_, bindparam, select

from mailserver.store import schema
from mailserver.store.mailboxes import MailboxNotFound

__all__ = ["Maildrop", "MaildropEntry", "read_maildrop"]

_MB, _MM, _E = schema.mailboxes, schema.mailbox_messages, schema.emails

_INBOX = (select(_MB.c.id, _MB.c.uidvalidity)
          .where(_MB.c.account_id == bindparam("account_id"), _MB.c.role == "inbox").limit(1))
_MESSAGES = (select(_MM.c.uid, _MM.c.email_id, _E.c.size, _E.c.blob_id, _E.c.keywords)
             .select_from(_MM.join(_E, and_(_E.c.account_id == _MM.c.account_id,
                                            _E.c.id == _MM.c.email_id)))
             .where(_MM.c.account_id == bindparam("account_id"),
                    _MM.c.mailbox_id == bindparam("mailbox_id"))
             .order_by(_MM.c.uid))


class MaildropEntry(NamedTuple):
    uid: int
    email_id: int
    size: int
    blob_id: str
    keywords: frozenset[str]


class Maildrop(NamedTuple):
    inbox_id: int
    uidvalidity: int
    messages: list[MaildropEntry]


async def read_maildrop(conn: Any, account_id: int) -> Maildrop:
    """The INBOX of ``account_id`` and its messages by ascending UID; ``MailboxNotFound`` when
    the account has no INBOX. ``conn`` may be any connection of the store (also the
    ``ThreadConnection`` of ``Database.run_read``/``run_write``)."""
    row = (await conn.execute(_INBOX, {"account_id": account_id})).first()
    if row is None:
        raise MailboxNotFound("INBOX")
    rows = await conn.execute(_MESSAGES, {"account_id": account_id, "mailbox_id": row[0]})
    return Maildrop(row[0], row[1], [
        MaildropEntry(uid, email_id, size, blob_id,
                      frozenset(keywords.split()) if keywords else frozenset())
        for uid, email_id, size, blob_id, keywords in rows])
