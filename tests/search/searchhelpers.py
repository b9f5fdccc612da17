"""Helpers for the search and thread tests: accounts, mailboxes and emails inserted directly.

Emails go through the real thread assignment and index maintenance (``assign_thread``,
``index_email``) inside one write transaction, like the delivery path does, but the ``emails``
and ``mailbox_messages`` rows are plain inserts so these tests do not depend on the messages
service.
"""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import insert, select

from mailserver.store import schema

try:
    from mailserver.message.model import Address, MimePart, ParsedMessage
except ImportError:  # the parser module of the package may not exist yet: load the model alone
    _path = Path(__file__).resolve().parents[2] / "mailserver" / "message" / "model.py"
    _spec = importlib.util.spec_from_file_location("_search_test_model", _path)
    _model = importlib.util.module_from_spec(_spec)
    sys.modules["_search_test_model"] = _model
    _spec.loader.exec_module(_model)
    Address, MimePart, ParsedMessage = _model.Address, _model.MimePart, _model.ParsedMessage

__all__ = ["Address", "MimePart", "ParsedMessage", "msg"]


def _addrs(value) -> tuple:
    if not value:
        return ()
    if isinstance(value, (str, tuple)):  # one address; a list holds several
        value = [value]
    out = []
    for v in value:
        if isinstance(v, tuple):
            out.append(Address(v[0], v[1]))
        else:
            out.append(Address("", v))
    return tuple(out)


def msg(subject: str = "", *, from_=(), to=(), cc=(), bcc=(), reply_to=(), sender=(),
        body: str = "", message_id: str = "", in_reply_to=(), references=(),
        base_subject: str | None = None, attachments=(), size: int | None = None,
        sent_at: int | None = None):
    """A ParsedMessage built by hand (addresses: "a@b", ("Name", "a@b") or a list of them)."""
    children = tuple(
        MimePart(part_id=str(i + 2), header_start=0, header_end=0, body_start=0, body_end=0,
                 content_type="application/octet-stream", disposition="attachment",
                 filename=name)
        for i, name in enumerate(attachments))
    structure = MimePart(part_id="", header_start=0, header_end=0, body_start=0, body_end=0,
                         content_type="multipart/mixed" if children else "text/plain",
                         children=children)
    if base_subject is None:
        base_subject = subject
        while base_subject.lower().startswith(("re:", "fwd:")):
            base_subject = base_subject.split(":", 1)[1].strip()
    return ParsedMessage(
        size=size if size is not None else 100 + len(body), header_end=0, subject=subject,
        base_subject=base_subject, from_=_addrs(from_), to=_addrs(to), cc=_addrs(cc),
        bcc=_addrs(bcc), reply_to=_addrs(reply_to), sender=_addrs(sender), sent_at=sent_at,
        message_id=message_id, in_reply_to=tuple(in_reply_to), references=tuple(references),
        has_attachment=bool(attachments), search_text=body, structure=structure)


@dataclass
class Mail:
    db: object
    accounts: dict[str, int] = field(default_factory=dict)
    inbox: dict[int, int] = field(default_factory=dict)

    @property
    def dialect(self) -> str:
        return self.db.dialect

    async def account(self, login: str) -> int:
        from mailserver.store.accountlock import begin_change

        async with self.db.write() as conn:
            dom = (await conn.execute(select(schema.domains.c.id).where(
                schema.domains.c.name == "example.com"))).scalar()
            if dom is None:
                dom = (await conn.execute(insert(schema.domains).values(
                    name="example.com", created_at=1))).inserted_primary_key[0]
            acc = (await conn.execute(insert(schema.accounts).values(
                domain_id=dom, login=login, password_hash="x",
                created_at=1))).inserted_primary_key[0]
            cs = await begin_change(conn, acc)
            box = await self._mailbox(conn, cs, "INBOX")
            await cs.flush(conn)
        self.accounts[login] = acc
        self.inbox[acc] = box
        return acc

    async def mailbox(self, account_id: int, path: str) -> int:
        from mailserver.store.accountlock import begin_change

        async with self.db.write() as conn:
            cs = await begin_change(conn, account_id)
            box = await self._mailbox(conn, cs, path)
            await cs.flush(conn)
        return box

    async def _mailbox(self, conn, cs, path: str) -> int:
        box = cs.next_id("mailbox")
        await conn.execute(insert(schema.mailboxes).values(
            account_id=cs.account_id, id=box, name=path, path=path,
            uidvalidity=cs.next_uidvalidity(), created_modseq=cs.modseq))
        return box

    async def add(self, account_id: int, parsed, *, mailbox_id: int | None = None,
                  keywords: str = "", received_at: int = 1_700_000_000,
                  extra_mailboxes=()) -> int:
        """Store one email the way delivery does (thread, row, membership, index)."""
        from mailserver.store import search, threads
        from mailserver.store.accountlock import begin_change

        boxes = [mailbox_id or self.inbox[account_id], *extra_mailboxes]
        async with self.db.write() as conn:
            cs = await begin_change(conn, account_id)
            thread_id = await threads.assign_thread(conn, cs, parsed)
            email_id = cs.next_id("email")
            await conn.execute(insert(schema.emails).values(
                account_id=account_id, id=email_id, blob_id="0" * 64, size=parsed.size,
                received_at=received_at, sent_at=parsed.sent_at, thread_id=thread_id,
                keywords=keywords, subject=parsed.subject, sort_subject=parsed.base_subject,
                sort_from=parsed.from_[0].email if parsed.from_ else "",
                message_id=parsed.message_id, in_reply_to=" ".join(parsed.in_reply_to),
                references=" ".join(parsed.references), has_attachment=parsed.has_attachment,
                created_modseq=cs.modseq, updated_modseq=cs.modseq))
            for box in boxes:
                uid = (await conn.execute(select(schema.mailboxes.c.uid_next).where(
                    schema.mailboxes.c.account_id == account_id,
                    schema.mailboxes.c.id == box))).scalar_one()
                await conn.execute(schema.mailboxes.update().where(
                    schema.mailboxes.c.account_id == account_id,
                    schema.mailboxes.c.id == box).values(uid_next=uid + 1))
                await conn.execute(insert(schema.mailbox_messages).values(
                    account_id=account_id, mailbox_id=box, uid=uid, email_id=email_id,
                    modseq=cs.modseq, saved_at=1))
            await search.index_email(conn, self.dialect, account_id, email_id, parsed)
            cs.record("Email", email_id, "c")
            await cs.flush(conn)
        return email_id

    async def search(self, account_id: int, criteria, **kw):
        from mailserver.store import search

        async with self.db.read() as conn:
            return await search.search(conn, self.dialect, account_id, criteria, **kw)

    async def ids(self, account_id: int, criteria, **kw) -> set[int]:
        return set(await self.search(account_id, criteria, **kw))
