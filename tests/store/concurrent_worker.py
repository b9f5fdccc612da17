"""Run by test_concurrency.py in separate processes: tasks appending to one mailbox.

    python concurrent_worker.py URL ACCOUNT_ID MAILBOX_ID TASKS PER_TASK TAG

Half of the tasks go through the Deliverer (group commit), half open their own transactions.
Prints a JSON list of [task, uid] in each task's order of acknowledgement.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import sys
import tempfile

from mailhelpers import directory, make_raw
from mailserver.blobs.fs import FileBlobStore
from mailserver.delivery import Deliverer
from mailserver.message import parse_message
from mailserver.store import messages
from mailserver.store.engine import Database
from mailserver.store.mailstore import MailStore


async def main(url: str, account: int, mailbox: int, tasks: int, per_task: int, tag: str) -> None:
    db = Database(url)
    dl = Deliverer(db, FileBlobStore(tempfile.mkdtemp(), fsync=False), directory(db))
    store = MailStore(db)
    out: list[tuple[int, int]] = []

    async def task(t: int) -> None:
        for i in range(per_task):
            raw = make_raw(f"{tag}-{t}-{i}", message_id=f"{tag}-{t}-{i}@test")
            if t % 2:
                uid = (await dl.append_to_mailbox(account, mailbox, raw, (), 1)).uid
            else:
                p = parse_message(raw)
                _e, uid = await store.change(account, lambda c, cs: messages.append(
                    c, cs, mailbox, hashlib.sha256(raw).hexdigest(), p, received_at=1))
            out.append((t, uid))

    await asyncio.gather(*(task(t) for t in range(tasks)))
    await dl.close()
    await db.close()
    print(json.dumps(out))


if __name__ == "__main__":
    a = sys.argv[1:]
    asyncio.run(main(a[0], int(a[1]), int(a[2]), int(a[3]), int(a[4]), a[5]))
