"""Subprocess for the crash test: delivers messages forever, printing ``ACK <token>`` only after
``deliver()`` returned (i.e. after the commit that holds the message). Killed with SIGKILL.

    python deliver_worker.py DB_URL BLOB_DIR RECIPIENT PREFIX CONCURRENCY
"""

import asyncio
import os
import random
import sys

from mailserver.blobs.fs import FileBlobStore
from mailserver.blobs.inline import InlineBlobStore
from mailserver.delivery import Deliverer
from mailserver.events import LocalChangeBus
from mailserver.store.directory import Directory
from mailserver.store.engine import Database


def make_message(token: str, size: int) -> bytes:
    body = (("crash test line for " + token + " ") * 4 + "\r\n") * max(1, size // 100)
    return (f"From: sender@remote.test\r\nTo: rcpt@example.test\r\nSubject: {token}\r\n"
            f"Message-ID: <{token}@remote.test>\r\nDate: Mon, 23 Nov 2026 10:00:00 +0000\r\n"
            f"\r\n{body}").encode()


async def main() -> None:
    url, blob_dir, rcpt, prefix, concurrency = sys.argv[1:6]
    db = Database(url)
    # as configured by default: small messages inline in the database, large ones in files
    blobs = InlineBlobStore(db, FileBlobStore(blob_dir))
    deliverer = Deliverer(db, blobs, Directory(db), LocalChangeBus())
    counter = 0
    out = sys.stdout

    async def loop(worker: int) -> None:
        nonlocal counter
        rng = random.Random(os.getpid() * 100 + worker)
        while True:
            counter += 1
            token = f"{prefix}-{worker}-{counter}"
            await deliverer.deliver(make_message(token, rng.choice([500, 5000, 60000, 150000])), [rcpt])
            out.write(f"ACK {token}\n")
            out.flush()

    print("READY", flush=True)
    await asyncio.gather(*(loop(i) for i in range(int(concurrency))))


if __name__ == "__main__":
    asyncio.run(main())
