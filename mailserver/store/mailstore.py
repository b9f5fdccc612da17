"""``MailStore``: one call per mail-store operation for the daemons and the CLI.

Each write method opens a write transaction, calls ``begin_change``, runs the service function
of ``mailserver.store.mailboxes`` / ``mailserver.store.messages``, flushes the change set,
commits, and then publishes a ``ChangeEvent``. Reads use a read transaction. Adding messages
goes through ``mailserver.delivery.Deliverer`` (the one ingest path), not through here.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncConnection

from mailserver.events import ChangeBus, ChangeEvent
from mailserver.store import changes as changes_mod
from mailserver.store import mailboxes as mbx
from mailserver.store import messages as msg
from mailserver.store.accountlock import ChangeSet, begin_change

T = TypeVar("T")


class MailStore:
    def __init__(self, db, blobs=None, bus: ChangeBus | None = None) -> None:
        self.db = db
        self.blobs = blobs
        self.bus = bus

    async def change(self, account_id: int,
                     fn: Callable[[AsyncConnection, ChangeSet], Awaitable[T]]) -> T:
        """Run ``fn(conn, cs)`` in its own write transaction and publish the change."""
        async with self.db.write() as conn:
            cs = await begin_change(conn, account_id)
            result = await fn(conn, cs)
            types = frozenset(cs.types)
            await cs.flush(conn)
        if self.bus is not None and types:
            await self.bus.publish(ChangeEvent(account_id, cs.modseq, types))
        return result

    async def read(self, fn: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        async with self.db.read() as conn:
            return await fn(conn)

    # -- mailboxes -------------------------------------------------------------------------

    async def create_mailbox(self, account_id: int, path: str, *, role: str | None = None,
                             subscribed: bool = True) -> int:
        return await self.change(account_id, lambda c, cs: mbx.create_mailbox(
            c, cs, path, role=role, subscribed=subscribed))

    async def rename_mailbox(self, account_id: int, mailbox_id: int, new_path: str) -> int:
        return await self.change(account_id, lambda c, cs: mbx.rename_mailbox(
            c, cs, mailbox_id, new_path))

    async def delete_mailbox(self, account_id: int, mailbox_id: int) -> None:
        await self.change(account_id, lambda c, cs: mbx.delete_mailbox(c, cs, mailbox_id))

    async def set_subscribed(self, account_id: int, mailbox_id: int, subscribed: bool) -> None:
        await self.change(account_id, lambda c, cs: mbx.set_subscribed(
            c, cs, mailbox_id, subscribed))

    async def list_mailboxes(self, account_id: int) -> list[mbx.Mailbox]:
        return await self.read(lambda c: mbx.list_mailboxes(c, account_id))

    async def get_mailbox(self, account_id: int, mailbox_id: int) -> mbx.Mailbox | None:
        return await self.read(lambda c: mbx.get_mailbox(c, account_id, mailbox_id))

    async def get_mailbox_by_path(self, account_id: int, path: str) -> mbx.Mailbox | None:
        return await self.read(lambda c: mbx.get_mailbox_by_path(c, account_id, path))

    async def get_mailbox_by_role(self, account_id: int, role: str) -> mbx.Mailbox | None:
        return await self.read(lambda c: mbx.get_mailbox_by_role(c, account_id, role))

    # -- messages --------------------------------------------------------------------------

    async def copy(self, account_id: int, from_mailbox_id: int, uids: Iterable[int],
                   to_mailbox_id: int) -> list[tuple[int, int]]:
        uids = list(uids)
        return await self.change(account_id, lambda c, cs: msg.copy(
            c, cs, from_mailbox_id, uids, to_mailbox_id))

    async def move(self, account_id: int, from_mailbox_id: int, uids: Iterable[int],
                   to_mailbox_id: int) -> list[tuple[int, int]]:
        uids = list(uids)
        return await self.change(account_id, lambda c, cs: msg.move(
            c, cs, from_mailbox_id, uids, to_mailbox_id))

    async def set_keywords(self, account_id: int, **kwargs: Any) -> msg.KeywordUpdate:
        return await self.change(account_id, lambda c, cs: msg.set_keywords(c, cs, **kwargs))

    async def expunge(self, account_id: int, mailbox_id: int,
                      uids: Iterable[int] | None = None) -> list[int]:
        uids = None if uids is None else list(uids)
        return await self.change(account_id, lambda c, cs: msg.expunge(c, cs, mailbox_id, uids))

    async def destroy_emails(self, account_id: int, email_ids: Iterable[int]) -> list[int]:
        ids = list(email_ids)
        return await self.change(account_id, lambda c, cs: msg.destroy_emails(c, cs, ids))

    async def list_messages(self, account_id: int, mailbox_id: int,
                            **kwargs: Any) -> list[msg.Message]:
        return await self.read(lambda c: msg.list_messages(c, account_id, mailbox_id, **kwargs))

    async def get_messages_by_uid(self, account_id: int, mailbox_id: int,
                                  uids: Sequence[int]) -> list[msg.Message]:
        return await self.read(lambda c: msg.get_messages_by_uid(c, account_id, mailbox_id, uids))

    async def get_emails(self, account_id: int, email_ids: Iterable[int]) -> dict[int, msg.Email]:
        ids = list(email_ids)
        return await self.read(lambda c: msg.get_emails(c, account_id, ids))

    async def uid_map(self, account_id: int, mailbox_id: int) -> list[tuple[int, int, int]]:
        return await self.read(lambda c: msg.uid_map(c, account_id, mailbox_id))

    async def mailbox_status(self, account_id: int, mailbox_id: int) -> msg.MailboxStatus:
        return await self.read(lambda c: msg.mailbox_status(c, account_id, mailbox_id))

    async def changes_since(self, account_id: int, modseq: int,
                            **kwargs: Any) -> changes_mod.Changes:
        return await self.read(lambda c: changes_mod.changes_since(c, account_id, modseq,
                                                                   **kwargs))

    async def vanished_since(self, account_id: int, mailbox_id: int, modseq: int) -> list[int]:
        return await self.read(lambda c: changes_mod.vanished_since(c, account_id, mailbox_id,
                                                                    modseq))

    async def changed_since(self, account_id: int, mailbox_id: int,
                            modseq: int) -> list[msg.Message]:
        return await self.read(lambda c: msg.changed_since(c, account_id, mailbox_id, modseq))

    async def compact_changes(self, account_id: int, keep_after_modseq: int) -> int:
        return await changes_mod.compact_changes(self.db, account_id, keep_after_modseq)
