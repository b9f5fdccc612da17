"""Workers as separate processes: kill -9 mid-delivery loses nothing; two workers on
PostgreSQL never deliver a recipient twice."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from qhelpers import FakeClock, make_qenv, message

from mailserver.queue import store
from mailserver.testing.daemons import HOSTNAME

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]

# The 2,000-message run (about 30 s on 2 cores); QUEUE_TEST_MESSAGES overrides it.
CONCURRENCY_MESSAGES = int(os.environ.get("QUEUE_TEST_MESSAGES", "2000"))


def _proc_config(q) -> dict:
    cfg = q.app.config
    return {"server": {"data_dir": str(q.env.data_dir), "hostname": HOSTNAME},
            "database": {"url": cfg.database.url},
            "log": {"format": "text", "level": "warning"},
            **q.overrides}


async def _spawn(q, *extra: str) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(HERE / "worker_proc.py"), json.dumps(_proc_config(q)), *extra,
        cwd=str(REPO), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(REPO)})
    line = await asyncio.wait_for(proc.stdout.readline(), 60)
    if line.strip() != b"ready":
        err = await proc.stderr.read()
        raise AssertionError(f"worker did not start: {line!r} {err.decode()[-2000:]}")
    return proc


async def test_worker_killed_mid_delivery_loses_nothing(tmp_path, dns_server, sink_port):
    async with make_qenv(tmp_path, dns_server, sink_port) as q:
        sink = await q.sink("127.0.0.4", hang_on_data=True)
        now = int(time.time())
        for i in range(3):
            await q.enqueue(message(f"crash {i}"), "alice@example.test",
                            [f"r{i}@ok.remote.test"], now=now)
        proc = await _spawn(q)
        try:
            await asyncio.wait_for(sink.data_seen.wait(), 60)  # mid-DATA, no reply yet
        finally:
            proc.send_signal(signal.SIGKILL)
            await proc.wait()
        rows = await q.queue_rows()
        assert len(rows) == 3 and all(r.lease_owner for r in rows)  # still leased, not lost
        assert sink.received == []

        sink.hang_on_data = False
        # before the lease expires nobody else may touch them …
        clock = FakeClock(now + 10)
        assert await q.worker(clock).run_until_idle() == 0
        # … after it, another worker takes over and delivers everything
        clock.t = max(r.lease_expires_at for r in rows) + 1
        assert await q.worker(clock).run_until_idle() == 3
        assert sorted(sink.recipients()) == [f"r{i}@ok.remote.test" for i in range(3)]
        assert await q.queue_rows() == []


@pytest.mark.slow
async def test_two_worker_processes_never_deliver_twice(tmp_path, dns_server, sink_port,
                                                        pg_cluster):
    url = pg_cluster.url(pg_cluster.create_database())
    # small batches so both workers claim over and over, racing on the same rows
    async with make_qenv(tmp_path, dns_server, sink_port, url,
                         queue={"batch_size": 10, "workers": 4}) as q:
        sink = await q.sink("127.0.0.4")
        now = int(time.time())
        expected, queued = [], []
        for i in range(CONCURRENCY_MESSAGES):
            rcpts = [f"u{i}@d{i % 10}.bulk.remote.test"]
            if i % 3 == 0:
                rcpts.append(f"v{i}@d{(i + 1) % 10}.bulk.remote.test")
            expected += rcpts
            raw = message(f"m{i}")
            queued.append((await q.app.blobs.put(raw), len(raw), rcpts))
        async with q.app.db.write() as conn:
            for blob_id, size, rcpts in queued:
                await store.enqueue(conn, blob_id=blob_id, size=size,
                                    sender="alice@example.test", recipients=rcpts, now=now)
        procs = [await _spawn(q, "--until-empty"), await _spawn(q, "--until-empty")]
        stats = []
        for p in procs:
            out, err = await asyncio.wait_for(p.communicate(), 60 + CONCURRENCY_MESSAGES / 5)
            assert p.returncode == 0, err.decode()[-2000:]
            stats.append(json.loads(out.decode().strip().splitlines()[-1]))
        print("worker stats", stats)
        delivered = Counter(sink.recipients())
        assert [a for a, n in delivered.items() if n > 1] == []  # nobody twice
        assert sorted(delivered) == sorted(expected)  # everybody once
        assert sum(s["delivered"] for s in stats) == len(expected)
        assert await q.queue_rows() == []
