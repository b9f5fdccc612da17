"""Crash test (no lost mail): a subprocess delivering messages is SIGKILLed at random moments,
20 times; after each kill every delivery that had returned is stored exactly once, and fsck finds
nothing wrong (an unreferenced blob file from an interrupted delivery is not an error: the
sweeper removes it).
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import select

from mailserver.blobs.fs import FileBlobStore
from mailserver.blobs.inline import InlineBlobStore
from mailserver.store import schema
from mailserver.store.directory import Directory
from mailserver.store.engine import Database
from mailserver.store.fsck import fsck

WORKER = Path(__file__).with_name("deliver_worker.py")
KILLS = 20
RCPT = "crash@example.test"

pytestmark = pytest.mark.slow


def _run_and_kill(url: str, blob_dir: str, prefix: str, rng: random.Random) -> set[str]:
    proc = subprocess.Popen(
        [sys.executable, str(WORKER), url, blob_dir, RCPT, prefix, "8"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    assert proc.stdout is not None
    first = proc.stdout.readline()
    assert first.strip() == "READY", (first, proc.stderr.read() if proc.poll() is not None else "")
    # Wait for its first acknowledgement (start-up and connecting take a variable time on a
    # loaded machine), let it deliver for a random while, then kill it without warning.
    second = proc.stdout.readline()
    time.sleep(rng.uniform(0.0, 0.5))
    os.kill(proc.pid, signal.SIGKILL)
    out, err = proc.communicate(timeout=30)
    acked = {line.split()[1] for line in (first + second + out).splitlines()
             if line.startswith("ACK ")}
    assert proc.returncode == -signal.SIGKILL, err
    return acked


async def _stored_subjects(db: Database) -> Counter[str]:
    async with db.read() as conn:
        rows = (await conn.execute(select(schema.emails.c.subject))).scalars().all()
    return Counter(rows)


async def _check_contents(db: Database, blobs: InlineBlobStore, tokens: set[str]) -> set[bool]:
    """Every acknowledged message of the round reads back whole, from the database (inline)
    or from a file (larger than ``inline_max``); returns which of the two were seen."""
    e = schema.emails
    async with db.read() as conn:
        rows = (await conn.execute(select(e.c.subject, e.c.blob_id, e.c.size)
                                   .where(e.c.subject.in_(sorted(tokens))))).all()
    for subject, blob_id, size in rows:
        raw = await blobs.get(blob_id)
        assert len(raw) == size and f"Subject: {subject}\r\n".encode() in raw, subject
    return {size > blobs.inline_max for _s, _b, size in rows}


async def test_sigkill_during_delivery_loses_nothing(database_url: str, tmp_path: Path):
    db = Database(database_url)
    await db.create_schema()
    directory = Directory(db)
    await directory.add_domain("example.test")
    await directory.add_account(RCPT, "secret-password")
    blob_dir = str(tmp_path / "blobs")
    blobs = InlineBlobStore(db, FileBlobStore(blob_dir))
    rng = random.Random(20261123)
    all_acked: set[str] = set()
    kinds: set[bool] = set()  # False: an inline blob was checked, True: a file
    try:
        for round_no in range(KILLS):
            acked = await asyncio.to_thread(
                _run_and_kill, database_url, blob_dir, f"r{round_no}", rng)
            all_acked |= acked
            stored = await _stored_subjects(db)
            missing = [t for t in all_acked if stored[t] != 1]
            assert not missing, f"round {round_no}: acknowledged but not stored once: {missing[:5]}"
            duplicated = [t for t, n in stored.items() if n > 1]
            assert not duplicated, f"round {round_no}: stored twice: {duplicated[:5]}"
            report = await fsck(db, blobs)
            assert report.ok, f"round {round_no}: fsck: {report}"
            kinds |= await _check_contents(db, blobs, acked)
        assert len(all_acked) > KILLS, "the worker acknowledged almost nothing; test is not probing"
        assert kinds == {True, False}, "both kinds of blob should have been probed"
    finally:
        await db.close()
