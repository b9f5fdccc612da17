"""Delivery throughput: N messages through Deliverer.deliver with C concurrent callers.

    python scripts/bench/delivery_bench.py [--url URL] [-n 3000] [-c 20] [--accounts 10]

Without --url it uses a fresh SQLite file in a temp dir. For PostgreSQL pass an empty database
(``postgresql://postgres@127.0.0.1:5432/bench``). Blobs go to a FileBlobStore in a temp dir
(fsync on, as in production). Prints msgs/s on the last line.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time


def message(i: int) -> bytes:
    body = ("Lorem ipsum dolor sit amet, consectetur adipiscing elit. " * 30 + "\r\n") * 3
    return (f"From: Sender {i} <sender{i % 50}@example.org>\r\n"
            f"To: user{i % 10}@example.com\r\n"
            f"Subject: benchmark message {i}\r\n"
            f"Date: Mon, 23 Nov 2026 10:00:00 +0000\r\n"
            f"Message-ID: <bench-{i}-{time.time_ns()}@example.org>\r\n"
            "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
            + body).encode()


async def main() -> None:
    from mailserver.auth.passwords import Argon2Params
    from mailserver.blobs.fs import FileBlobStore
    from mailserver.delivery import Deliverer
    from mailserver.events import LocalChangeBus
    from mailserver.store.directory import Directory
    from mailserver.store.engine import Database

    ap = argparse.ArgumentParser()
    ap.add_argument("--url")
    ap.add_argument("-n", type=int, default=3000)
    ap.add_argument("-c", type=int, default=20)
    ap.add_argument("--accounts", type=int, default=10)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--no-fsync", action="store_true", help="blob store without fsync")
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="bench-")
    db = Database(args.url or f"sqlite:///{tmp}/mail.sqlite3")
    await db.create_schema()
    directory = Directory(db, password_params=Argon2Params(time_cost=1, memory_cost=8))
    await directory.add_domain("example.com")
    for a in range(args.accounts):
        await directory.add_account(f"user{a}@example.com", "secret-password-1")
    blobs = FileBlobStore(f"{tmp}/blobs", fsync=not args.no_fsync)
    deliverer = Deliverer(db, blobs, directory, LocalChangeBus())
    raws = [message(i) for i in range(args.n)]
    queue = list(range(args.n))

    async def worker() -> None:
        while queue:
            i = queue.pop()
            res = await deliverer.deliver(raws[i], [f"user{i % args.accounts}@example.com"])
            assert all(o.ok for o in res.recipients.values()), res

    t0 = time.perf_counter()
    if args.profile:
        import cProfile
        import pstats
        prof = cProfile.Profile()
        prof.enable()
    await asyncio.gather(*(worker() for _ in range(args.c)))
    elapsed = time.perf_counter() - t0
    if args.profile:
        prof.disable()
        pstats.Stats(prof).sort_stats("tottime").print_stats(30)
    st = deliverer.committer.stats
    await deliverer.close()
    await db.close()
    print(f"engine={db.dialect} messages={args.n} concurrency={args.c} "
          f"batches={st.batches} avg_batch={st.jobs / max(st.batches, 1):.1f} "
          f"largest_batch={st.largest}")
    print(f"{args.n / elapsed:.0f} msgs/s ({elapsed:.2f} s)")


if __name__ == "__main__":
    asyncio.run(main())
