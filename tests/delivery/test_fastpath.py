"""The ingest fast path on both engines: driver SQL, appends deferred to the end of a group-commit
batch (one executemany per table), and the FTS5 body written as its distinct words.

A batch is driven through the real ``GroupCommitter._commit`` so that its contents are fixed
(concurrent callers would batch however the scheduler lets them).
"""

from __future__ import annotations

import asyncio
import sqlite3
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from mailhelpers import create_account, directory, make_raw, recount, stored_counters
from mailserver.blobs.fs import FileBlobStore
from mailserver.delivery import Deliverer, _Job, pick_mailbox
from mailserver.message import parse_message
from mailserver.store import messages, schema
from mailserver.store.fsck import fsck
from mailserver.store.search import Text, fts_body, search


@pytest.fixture
async def env(db, tmp_path):
    bob = await create_account(db, "bob@example.com")
    blobs = FileBlobStore(tmp_path / "blobs", fsync=False)
    deliverer = Deliverer(db, blobs, directory(db))
    yield {"db": db, "bob": bob, "dl": deliverer, "blobs": blobs}
    await deliverer.close()


async def _append_work(dl: Deliverer, account_id: int, raw: bytes, *, fail: bool = False):
    """A delivery's work function, as ``Deliverer.deliver`` builds it."""
    parsed = parse_message(raw)
    blob_id = await dl.blobs.put(raw)

    async def work(conn, cs):
        mailbox_id = await pick_mailbox(conn, account_id, None)
        email_id, uid = await messages.append(conn, cs, mailbox_id, blob_id, parsed,
                                              received_at=int(time.time()))
        if fail:  # after it wrote: the batch must be redone with savepoints
            raise RuntimeError("boom")
        return email_id, uid

    work.deferrable = True  # type: ignore[attr-defined]
    return work


async def _run(dl: Deliverer, account_id: int, works) -> list:
    loop = asyncio.get_running_loop()
    jobs = [_Job(account_id, w, loop.create_future()) for w in works]
    await dl.committer._commit(jobs)
    return [j.future.exception() or j.future.result() for j in jobs]


async def _threads(db, account_id: int) -> dict[str, int]:
    e = schema.emails
    async with db.read() as conn:
        rows = await conn.execute(select(e.c.subject, e.c.thread_id).where(
            e.c.account_id == account_id))
        return {r[0]: r[1] for r in rows}


async def _check_consistent(db, account_id: int, blobs) -> None:
    async with db.read() as conn:
        assert await stored_counters(conn, account_id) == await recount(conn, account_id)
        refs = (await conn.execute(select(func.sum(schema.blobs.c.refcount)))).scalar_one()
        n = (await conn.execute(select(func.count()).select_from(schema.emails))).scalar_one()
    assert refs == n
    report = await fsck(db, blobs)
    assert report.ok, report


async def test_one_batch_of_appends_threads_flushes_and_stays_consistent(env):
    db, dl, bob = env["db"], env["dl"], env["bob"]
    seen: list[int] = []

    async def reader(conn, cs):  # other work in the same batch sees the appends before it
        e = schema.emails
        seen.append((await conn.execute(select(func.count()).select_from(e).where(
            e.c.account_id == bob))).scalar_one())
        return "read"

    works = [
        await _append_work(dl, bob, make_raw("Plan", message_id="p1@x", body="alpha beta\r\n")),
        await _append_work(dl, bob, make_raw("Re: Plan", in_reply_to="p1@x")),
        await _append_work(dl, bob, make_raw("Other topic", in_reply_to="p1@x")),
        reader,
        await _append_work(dl, bob, make_raw("Re: Plan", message_id="p4@x", in_reply_to="p1@x",
                                             body="gamma gamma gamma delta\r\n")),
    ]
    out = await _run(dl, bob, works)
    assert out[3] == "read" and seen == [3]
    uids = [o[1] for o in out if isinstance(o, tuple)]
    assert uids == [1, 2, 3, 4]
    assert dl.committer.stats.largest == 5
    threads = await _threads(db, bob)
    # same base subject joins the parent's thread (the parent not yet written when it
    # arrived); a changed subject starts its own thread
    assert threads["Re: Plan"] == threads["Plan"] != threads["Other topic"]
    # the search index got every email, body words included
    async with db.read() as conn:
        for word, n in (("alpha", 1), ("gamma", 1), ("delta", 1), ("plan", 3)):
            hits = await search(conn, db.dialect, bob, Text("text", word))
            assert len(hits) == n, word
    await _check_consistent(db, bob, env["blobs"])


async def test_a_failure_after_writing_redoes_the_batch_with_savepoints(env):
    db, dl, bob = env["db"], env["dl"], env["bob"]
    works = [await _append_work(dl, bob, make_raw(f"ok {i}")) for i in range(3)]
    works.insert(1, await _append_work(dl, bob, make_raw("fails"), fail=True))
    out = await _run(dl, bob, works)
    assert isinstance(out[1], RuntimeError)
    assert [o[1] for o in out if isinstance(o, tuple)] == [1, 2, 3]  # no gap, ascending
    assert set(await _threads(db, bob)) == {"ok 0", "ok 1", "ok 2"}
    await _check_consistent(db, bob, env["blobs"])


async def test_the_same_blob_twice_in_a_batch_counts_two_references(env):
    db, dl, bob = env["db"], env["dl"], env["bob"]
    raw = make_raw("twice")
    out = await _run(dl, bob, [await _append_work(dl, bob, raw) for _ in range(2)])
    assert [o[1] for o in out] == [1, 2]
    async with db.read() as conn:
        assert (await conn.execute(select(schema.blobs.c.refcount))).scalar_one() == 2
    await _check_consistent(db, bob, env["blobs"])


# FTS5 gets each distinct run of a body once: the token set must be exactly the same.
_db = sqlite3.connect(":memory:")
_db.execute("CREATE VIRTUAL TABLE t USING fts5(body, tokenize = 'unicode61 remove_diacritics 2')")
_db.execute("CREATE VIRTUAL TABLE v USING fts5vocab(t, 'instance')")


def _tokens(text: str) -> set[str]:
    _db.execute("DELETE FROM t")
    _db.execute("INSERT INTO t (rowid, body) VALUES (1, ?)", (text,))
    return {r[0] for r in _db.execute("SELECT term FROM v")}


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=80)
       | st.text(alphabet=st.sampled_from(list("aAé\u0301 .,_=\u0338Σσİı\u212a-\u00a0ﬁ1\x00\t")),
                 max_size=30))
def test_fts_body_keeps_the_fts5_token_set(value: str) -> None:
    assert _tokens(fts_body(value)) == _tokens(value)


def test_fts_body_drops_repetitions() -> None:
    assert fts_body("Hello, hello HELLO world! naïve x_y hello") == "hello naïve world x y"
