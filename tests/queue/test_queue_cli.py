"""``mailserver queue …`` against a real store (through ``mailserver.cli.main``)."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from sqlalchemy import select

from mailserver.cli import main
from mailserver.queue import store
from mailserver.store import schema
from mailserver.testing.daemons import HOSTNAME, daemon_env


@pytest.fixture
def queued(tmp_path):
    """A data dir with two queued messages; returns (config path, [message ids], now)."""
    now = int(time.time())

    async def setup() -> list[int]:
        async with daemon_env(tmp_path) as env:
            ids = []
            for i, (rcpts, created) in enumerate(((["a@ok.test", "b@ok.test"], now - 7200),
                                                  (["c@other.test"], now))):
                raw = f"Subject: m{i}\r\n\r\nbody {i}\r\n".encode()
                blob_id = await env.app.blobs.put(raw)
                async with env.app.db.write() as conn:
                    ids.append(await store.enqueue(
                        conn, blob_id=blob_id, size=len(raw), sender="alice@example.test",
                        recipients=rcpts, now=created))
            async with env.app.db.write() as conn:  # one earlier failed attempt on b@ok.test
                await conn.execute(schema.queue_recipients.update()
                                   .where(schema.queue_recipients.c.recipient == "b@ok.test")
                                   .values(attempts=1, next_attempt_at=now + 600,
                                           last_status="4.4.1", last_error="connection refused"))
            return ids

    ids = asyncio.run(setup())
    cfg = tmp_path / "mailserver.toml"
    cfg.write_text(f'[server]\ndata_dir = "{tmp_path / "data"}"\nhostname = "{HOSTNAME}"\n'
                   '[log]\nformat = "text"\n')
    return str(cfg), ids, now


def _run(capsys, *argv: str):
    capsys.readouterr()
    rc = main(list(argv))
    out = capsys.readouterr()
    return rc, out.out, out.err


def _json(capsys, *argv: str):
    rc, out, err = _run(capsys, *argv, "--json")
    assert rc == 0, err
    return json.loads(out)


def test_list_filters_show_and_stats(queued, capsys):
    cfg, (m1, m2), now = queued
    entries = _json(capsys, "queue", "list", "-c", cfg)
    assert [(e["message_id"], e["recipient"]) for e in entries] == [
        (m1, "a@ok.test"), (m1, "b@ok.test"), (m2, "c@other.test")]
    assert [e["recipient"] for e in _json(capsys, "queue", "list", "-c", cfg,
                                          "--domain", "other.test")] == ["c@other.test"]
    assert [e["recipient"] for e in _json(capsys, "queue", "list", "-c", cfg,
                                          "--older-than", "1h")] == ["a@ok.test", "b@ok.test"]
    assert [e["recipient"] for e in _json(capsys, "queue", "list", "-c", cfg,
                                          "--recipient", "B@OK")] == ["b@ok.test"]
    shown = _json(capsys, "queue", "show", "-c", cfg, str(m1))
    assert shown["sender"] == "alice@example.test" and len(shown["recipients"]) == 2
    rc, out, _ = _run(capsys, "queue", "show", "-c", cfg, str(m1), "--raw")
    assert rc == 0 and "body 0" in out
    s = _json(capsys, "queue", "stats", "-c", cfg)
    assert (s["messages"], s["recipients"], s["deferred"], s["held"]) == (2, 3, 1, 0)
    assert s["oldest_age"] >= 7200
    assert s["domains"][0] == {"domain": "ok.test", "recipients": 2, "deferred": 1, "held": 0,
                               "oldest_age": s["domains"][0]["oldest_age"]}
    rc, out, _ = _run(capsys, "queue", "list", "-c", cfg)
    assert rc == 0 and "connection refused" in out and "c@other.test" in out
    rc, _out, err = _run(capsys, "queue", "show", "-c", cfg, "999")
    assert rc == 1 and "no queued message 999" in err


def test_hold_release_retry_delete_flush(queued, capsys):
    cfg, (m1, m2), now = queued
    assert _json(capsys, "queue", "hold", "-c", cfg, str(m1))["recipients"] == 2
    assert {e["state"] for e in _json(capsys, "queue", "list", "-c", cfg, str(m1))} == {"held"}
    assert _json(capsys, "queue", "retry", "-c", cfg, str(m1))["recipients"] == 0  # held
    assert _json(capsys, "queue", "release", "-c", cfg, "--domain", "ok.test")[
        "recipients"] == 2
    entries = _json(capsys, "queue", "list", "-c", cfg, str(m1))
    assert {e["state"] for e in entries} == {"queued"}
    assert all(e["next_attempt_at"] <= int(time.time()) for e in entries)

    rc, _out, err = _run(capsys, "queue", "delete", "-c", cfg)  # no selection: refused
    assert rc == 1 and "--all" in err
    assert _json(capsys, "queue", "delete", "-c", cfg, str(m2))["recipients"] == 1
    assert [e["message_id"] for e in _json(capsys, "queue", "list", "-c", cfg)] == [m1, m1]
    assert _json(capsys, "queue", "flush", "-c", cfg)["recipients"] == 2
    assert _json(capsys, "queue", "delete", "-c", cfg, "--all")["recipients"] == 2

    async def check():
        from mailserver.store.engine import Database

        db = Database(f"sqlite:///{cfg.rsplit('/', 1)[0]}/data/mailserver.sqlite3")
        try:
            async with db.read() as conn:
                msgs = (await conn.execute(select(schema.queue_messages))).all()
                refs = (await conn.execute(select(schema.blobs.c.refcount))).scalars().all()
        finally:
            await db.close()
        return msgs, refs

    msgs, refs = asyncio.run(check())
    assert msgs == [] and refs and all(r == 0 for r in refs)  # blob references dropped
