"""``mailserver import|export``: move mail between an account and mbox / Maildir files.

Import goes through the one ingest path (``Deliverer.append_to_mailbox``): parse, blob put,
UID/MODSEQ, thread, search index, quota and change log exactly as for mail arriving by SMTP or
IMAP APPEND. Messages are appended one after the other so UIDs follow the file order. File
formats: ``mailserver.mailfiles``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Iterator

from mailserver.cli_common import CliError, open_services
from mailserver.mailfiles import MailFile, maildir_folders, mbox_entry, read_maildir_folder, \
    read_mbox

PAGE = 500


def _messages(args: argparse.Namespace) -> Iterator[MailFile]:
    if args.format == "mbox":
        if not os.path.isfile(args.path):
            raise CliError(f"{args.path}: no such mbox file")
        return read_mbox(args.path)
    try:
        folders = maildir_folders(args.path)
    except FileNotFoundError as e:
        raise CliError(str(e)) from None

    def walk() -> Iterator[MailFile]:
        for path, directory in folders:
            yield from read_maildir_folder(directory, path)
    return walk()


async def cmd_import(args: argparse.Namespace) -> int:
    from mailserver.store.mailboxes import InvalidMailboxName, normalize_path
    from mailserver.store.mailstore import MailStore
    from mailserver.store.messages import QuotaExceeded

    messages = _messages(args)
    base = args.mailbox or "INBOX"
    async with open_services(args) as app:
        account = await app.directory.get_account(args.user)
        store = MailStore(app.db, app.blobs, app.bus)
        ids: dict[str, int] = {}
        counts: dict[str, int] = {}

        async def mailbox_id(folder: str) -> int:
            if folder and args.mailbox:
                wanted = f"{base}/{folder}"
            else:
                wanted = folder or base
            try:
                path = normalize_path(wanted)
            except InvalidMailboxName:
                raise CliError(f"cannot import into mailbox {wanted!r}: invalid name") from None
            if path not in ids:
                mb = await store.get_mailbox_by_path(account.id, path)
                if mb is None:
                    ids[path] = await store.create_mailbox(account.id, path)
                    print(f"created mailbox {path}", file=sys.stderr)
                else:
                    ids[path] = mb.id
            counts.setdefault(path, 0)
            return ids[path]

        total = 0
        try:
            for message in messages:
                mid = await mailbox_id(message.folder)
                try:
                    await app.deliverer.append_to_mailbox(
                        account.id, mid, message.raw, sorted(message.keywords),
                        message.received_at)
                except QuotaExceeded:
                    raise CliError(f"quota of {account.login} exceeded after {total} "
                                   "message(s); raise it with `mailserver user quota`") from None
                counts[next(p for p, i in ids.items() if i == mid)] += 1
                total += 1
        except OSError as e:
            raise CliError(f"{args.path}: {e.strerror or e}") from None
    for path, n in counts.items():
        print(f"{path}: {n} message(s) imported")
    print(f"{total} message(s) imported into {account.login}")
    return 0


async def cmd_export(args: argparse.Namespace) -> int:
    from mailserver.store.mailboxes import InvalidMailboxName, normalize_path
    from mailserver.store.mailstore import MailStore

    to_stdout = args.path == "-"
    if not to_stdout and os.path.exists(args.path) and not args.force:
        raise CliError(f"{args.path} exists (use --force to overwrite)")
    try:
        wanted = normalize_path(args.mailbox)
    except InvalidMailboxName:
        raise CliError(f"invalid mailbox name {args.mailbox!r}") from None
    async with open_services(args) as app:
        account = await app.directory.get_account(args.user)
        store = MailStore(app.db, app.blobs, app.bus)
        mailbox = await store.get_mailbox_by_path(account.id, wanted)
        if mailbox is None:
            names = ", ".join(m.path for m in await store.list_mailboxes(account.id))
            raise CliError(f"{account.login} has no mailbox {wanted!r} (it has: {names})")
        if to_stdout:
            out = sys.stdout.buffer
            tmp = None
        else:
            directory = os.path.dirname(os.path.abspath(args.path))
            try:
                fd, tmp = tempfile.mkstemp(prefix=".export-", dir=directory)
            except OSError as e:
                raise CliError(f"{args.path}: {e.strerror}") from None
            out = os.fdopen(fd, "wb")
        n = 0
        try:
            uid_min = 1
            while True:
                page = await store.list_messages(account.id, mailbox.id, uid_min=uid_min,
                                                 limit=PAGE)
                for m in page:
                    raw = await app.blobs.get(m.blob_id)
                    out.write(mbox_entry(raw, m.keywords, m.received_at))
                    n += 1
                if len(page) < PAGE:
                    break
                uid_min = page[-1].uid + 1
            out.flush()
            if tmp is not None:
                os.fsync(out.fileno())
                out.close()
                os.replace(tmp, args.path)
                tmp = None
        finally:
            if tmp is not None:
                out.close()
                os.unlink(tmp)
    print(f"{n} message(s) of {account.login} {wanted} exported to "
          f"{'standard output' if to_stdout else args.path}", file=sys.stderr)
    return 0
