#!/usr/bin/env python3
"""Ingest benchmark: the one delivery path, on SQLite and on PostgreSQL.

10,000 generated messages (sizes 2–200 KB, log-uniform so that small mail dominates as it does in
real traffic; one third multipart/mixed with a base64 attachment) delivered to 100 accounts with
20 concurrent deliveries, split over --procs worker processes (default 2: one per core, each
with its own group-committing writer). Messages are generated before the clock starts. Blobs as
configured by default: up to ``--inline-max`` bytes in the database, larger ones in files.

Prints, per backend: msgs/s, p50/p99 delivery latency (call → acknowledged after commit), CPU
seconds per 1,000 messages (the delivering processes, and the whole machine from /proc/stat,
which includes the PostgreSQL server), and the peak RSS of a worker process.

    .venv/bin/python scripts/bench/ingest.py [--messages N] [--backend sqlite|postgresql|both]
        [--inline-max BYTES]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import math
import multiprocessing as mp
import os
import random
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from mailserver.blobs.fs import FileBlobStore  # noqa: E402
from mailserver.blobs.inline import DEFAULT_INLINE_MAX, InlineBlobStore  # noqa: E402
from mailserver.delivery import Deliverer  # noqa: E402
from mailserver.events import LocalChangeBus  # noqa: E402
from mailserver.store.directory import Directory  # noqa: E402
from mailserver.store.engine import Database  # noqa: E402

DOMAIN = "bench.test"
WORDS = ("mail server queue delivery message inbox subject report meeting invoice project "
         "update review draft budget schedule customer release network storage backup").split()


def _build_pool() -> str:
    rng = random.Random(1)
    return "".join(" ".join(rng.choice(WORDS) for _ in range(11)) + "\r\n"
                   for _ in range(40_000))


_POOL = _build_pool()  # ~3 MB of text lines; messages are slices of it


def make_message(i: int, rng: random.Random) -> bytes:
    size = int(math.exp(rng.uniform(math.log(2_000), math.log(200_000))))
    subject = " ".join(rng.choice(WORDS) for _ in range(6))
    head = (f"From: Sender {i % 97} <sender{i % 97}@remote{i % 13}.test>\r\n"
            f"To: user{i % 100}@{DOMAIN}\r\nSubject: {subject} #{i}\r\n"
            f"Date: Mon, 23 Nov 2026 10:{i % 60:02d}:00 +0000\r\n"
            f"Message-ID: <bench-{i}@remote.test>\r\nMIME-Version: 1.0\r\n")

    def text(n: int) -> str:
        start = rng.randrange(0, len(_POOL) - 200_000)
        cut = _POOL.rfind("\r\n", start, start + n)
        return _POOL[start:cut + 2] if cut > start else _POOL[start:start + n] + "\r\n"

    if i % 3 == 0:
        attach = rng.randbytes(max(1000, size * 2 // 3) * 3 // 4)
        b64 = base64.encodebytes(attach).decode().replace("\n", "\r\n")
        body = text(max(500, size - len(b64)))
        msg = (head + 'Content-Type: multipart/mixed; boundary="b1"\r\n\r\n'
               "--b1\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n" + body +
               "--b1\r\nContent-Type: application/pdf\r\n"
               'Content-Disposition: attachment; filename="report.pdf"\r\n'
               "Content-Transfer-Encoding: base64\r\n\r\n" + b64 + "--b1--\r\n")
    else:
        msg = head + "Content-Type: text/plain; charset=utf-8\r\n\r\n" + text(size)
    return msg.encode()


def machine_busy_seconds() -> float:
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + fields[4]
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


async def _worker_main(url: str, blob_dir: str, indexes: list[int], tasks: int,
                       start_at: float, inline_max: int) -> tuple[list[float], float, int]:
    rng = random.Random(indexes[0] if indexes else 0)
    messages = [(make_message(i, rng), f"user{i % 100}@{DOMAIN}") for i in indexes]
    db = Database(url)
    # the default configuration: messages up to [blobs] inline_max in the database
    blobs = FileBlobStore(blob_dir)
    if inline_max:
        blobs = InlineBlobStore(db, blobs, inline_max)
    deliverer = Deliverer(db, blobs, Directory(db), LocalChangeBus())
    latencies: list[float] = []
    queue = list(reversed(messages))
    await asyncio.sleep(max(0.0, start_at - time.time()))
    cpu0 = time.process_time()

    async def run() -> None:
        while queue:
            raw, rcpt = queue.pop()
            t0 = time.perf_counter()
            result = await deliverer.deliver(raw, [rcpt])
            latencies.append(time.perf_counter() - t0)
            if not result.all_delivered:
                raise RuntimeError(f"delivery failed: {result}")

    await asyncio.gather(*(run() for _ in range(tasks)))
    cpu = time.process_time() - cpu0
    await db.close()
    return latencies, cpu, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _worker(url: str, blob_dir: str, indexes: list[int], tasks: int, start_at: float,
            inline_max: int, out: "mp.Queue") -> None:
    out.put(asyncio.run(_worker_main(url, blob_dir, indexes, tasks, start_at, inline_max)))


async def _setup(url: str) -> None:
    db = Database(url)
    await db.create_schema()
    directory = Directory(db)
    await directory.add_domain(DOMAIN)
    for n in range(100):
        await directory.add_account(f"user{n}@{DOMAIN}", "benchpass")
    await db.close()


def run_backend(name: str, url: str, blob_dir: str, n: int, concurrency: int, procs: int,
                inline_max: int) -> dict:
    asyncio.run(_setup(url))
    ctx = mp.get_context("spawn")
    out: mp.Queue = ctx.Queue()
    per_proc = [list(range(p, n, procs)) for p in range(procs)]
    # generation of ~1 GB of test mail happens before start_at in every worker
    start_at = time.time() + 5 + n / 2000
    workers = [ctx.Process(target=_worker, args=(url, blob_dir, idx, concurrency // procs,
                                                 start_at, inline_max, out))
               for idx in per_proc]
    for w in workers:
        w.start()
    while time.time() < start_at:
        time.sleep(0.01)
    busy0, t0 = machine_busy_seconds(), time.perf_counter()
    results = [out.get() for _ in workers]
    elapsed, busy = time.perf_counter() - t0, machine_busy_seconds() - busy0
    for w in workers:
        w.join()
        if w.exitcode != 0:
            raise SystemExit(f"{name}: a worker failed (exit {w.exitcode})")
    lat = sorted(x for r in results for x in r[0])
    cpu = sum(r[1] for r in results)
    return {
        "backend": name, "messages": len(lat), "seconds": elapsed,
        "msgs_per_s": len(lat) / elapsed,
        "p50_ms": statistics.median(lat) * 1000,
        "p99_ms": lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000,
        "cpu_s_per_1000": cpu / len(lat) * 1000,
        "machine_cpu_s_per_1000": busy / len(lat) * 1000,
        "peak_rss_mb": max(r[2] for r in results) / 1024,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--messages", type=int, default=10_000)
    ap.add_argument("--concurrency", type=int, default=20)
    ap.add_argument("--procs", type=int, default=2)
    ap.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="both")
    ap.add_argument("--inline-max", type=int, default=DEFAULT_INLINE_MAX,
                    help="[blobs] inline_max in bytes (default 64 KiB; 0: every blob a file)")
    args = ap.parse_args()
    results = []
    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    for backend in backends:
        tmp = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
        cluster = None
        try:
            if backend == "sqlite":
                url = f"sqlite:///{tmp}/mail.sqlite3"
            else:
                from mailserver.testing.pgcluster import PgCluster
                cluster = PgCluster.start()
                url = cluster.url(cluster.create_database("bench"))
            results.append(run_backend(backend, url, str(tmp / "blobs"), args.messages,
                                       args.concurrency, args.procs, args.inline_max))
        finally:
            if cluster is not None:
                cluster.stop()
            shutil.rmtree(tmp, ignore_errors=True)
    print()
    print(f"ingest: {args.messages} messages, 2-200 KB, {args.concurrency} concurrent, "
          f"{args.procs} processes, 100 accounts, inline_max {args.inline_max}")
    for r in results:
        print(f"{r['backend']:>10}: {r['msgs_per_s']:8.0f} msgs/s  p50 {r['p50_ms']:6.1f} ms  "
              f"p99 {r['p99_ms']:6.1f} ms  cpu {r['cpu_s_per_1000']:5.2f} s/1000 "
              f"(machine {r['machine_cpu_s_per_1000']:5.2f} s/1000)  "
              f"peak rss {r['peak_rss_mb']:.0f} MB")


if __name__ == "__main__":
    main()
