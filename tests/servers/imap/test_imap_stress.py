"""20 concurrent sessions doing random operations on one shared mailbox.

Every session keeps a model of its view, built only from what the server told it (EXISTS,
EXPUNGE, FETCH with UID): sequence numbers in responses must always be in range and a
sequence number must never be reported with two different UIDs. At the end every session's
view must equal the mailbox as a fresh session sees it, flags included.
"""

from __future__ import annotations

import asyncio
import random
import re

from mailserver.testing.daemons import daemon_env
from tests.servers.imap.conftest import RawImap, deliver, message

SESSIONS = 20
OPS = 12
FLAGS = ["\\Seen", "\\Flagged", "\\Answered", "$Work"]
FETCH_RE = re.compile(rb"^\* (\d+) FETCH \((.*)\)\r\n$", re.S)


class Model:
    def __init__(self, name: str) -> None:
        self.name = name
        self.uids: list[int | None] = []
        self.flags: dict[int, set[str]] = {}

    def feed(self, lines: list[bytes]) -> None:
        for r in lines:
            if not r.startswith(b"* "):
                continue
            parts = r.split(b" ")
            if len(parts) >= 3 and parts[2].rstrip(b"\r\n") == b"EXISTS":
                n = int(parts[1])
                assert n >= len(self.uids), (self.name, "EXISTS shrank", n, len(self.uids))
                self.uids.extend([None] * (n - len(self.uids)))
            elif len(parts) >= 3 and parts[2].rstrip(b"\r\n") == b"EXPUNGE":
                n = int(parts[1])
                assert 1 <= n <= len(self.uids), (self.name, "EXPUNGE out of range", n)
                uid = self.uids.pop(n - 1)
                if uid is not None:
                    self.flags.pop(uid, None)
            else:
                m = FETCH_RE.match(r)
                if m is None:
                    continue
                n = int(m.group(1))
                assert 1 <= n <= len(self.uids), (self.name, "FETCH out of range", n,
                                                   len(self.uids), r)
                body = m.group(2)
                um = re.search(rb"UID (\d+)", body)
                if um:
                    uid = int(um.group(1))
                    known = self.uids[n - 1]
                    assert known in (None, uid), (self.name, "seq remapped", n, known, uid)
                    self.uids[n - 1] = uid
                fm = re.search(rb"FLAGS \(([^)]*)\)", body)
                if fm and self.uids[n - 1] is not None:
                    self.flags[self.uids[n - 1]] = set(fm.group(1).decode().split())


async def _worker(env, i: int, rng: random.Random) -> tuple[RawImap, Model]:
    c = await RawImap.connect(env.address("imap"))
    await c.greeting()
    await c.login()
    model = Model(f"s{i}")
    model.feed(await c.ok("SELECT INBOX"))
    model.feed(await c.ok("FETCH 1:* (UID FLAGS)"))
    for _ in range(OPS):
        op = rng.choice(["append", "store", "store", "fetch", "search", "expunge", "noop",
                         "copy", "uidstore"])
        n = len(model.uids)
        if op == "append":
            raw = message(f"from s{i}")
            c.send(b"a%d APPEND INBOX {%d+}\r\n%s\r\n" % (i, len(raw), raw))
            model.feed(await c.until_tagged(f"a{i}"))
        elif op == "store" and n:
            seq = rng.randint(1, n)
            mode = rng.choice(["+", "-"])
            model.feed(await c.ok(f"STORE {seq} {mode}FLAGS ({rng.choice(FLAGS)})"))
        elif op == "uidstore" and n:
            model.feed(await c.ok(f"UID STORE 1:* +FLAGS.SILENT ({rng.choice(FLAGS)})"))
        elif op == "fetch":
            model.feed(await c.ok("FETCH 1:* (UID FLAGS)"))
        elif op == "search":
            model.feed(await c.ok("SEARCH UNSEEN"))
        elif op == "expunge" and n:
            seq = rng.randint(1, n)
            model.feed(await c.ok(f"STORE {seq} +FLAGS.SILENT (\\Deleted)"))
            model.feed(await c.ok("EXPUNGE"))
        elif op == "copy" and n:
            model.feed(await c.ok(f"COPY {rng.randint(1, n)} Archive"))
        else:
            model.feed(await c.ok("NOOP"))
    return c, model


async def test_concurrent_sessions_stay_consistent(tmp_path, database_url):
    async with daemon_env(tmp_path, database_url, overrides={
            "imap": {"tls": "starttls"}, "limits": {"max_connections_per_ip": 50}}) as env:
        await env.start("imap")
        await _run(env)


async def _run(env):
    for k in range(8):
        await deliver(env, message(f"seed {k}"))
    rng = random.Random(1234)
    results = await asyncio.gather(*(_worker(env, i, random.Random(rng.random()))
                                     for i in range(SESSIONS)))
    # the truth, as a fresh session sees it
    fresh = await RawImap.connect(env.address("imap"))
    await fresh.greeting()
    await fresh.login()
    truth = Model("fresh")
    truth.feed(await fresh.ok("SELECT INBOX"))
    truth.feed(await fresh.ok("FETCH 1:* (UID FLAGS)"))
    assert None not in truth.uids and truth.uids == sorted(truth.uids)
    assert len(truth.uids) > 0
    for c, model in results:
        model.feed(await c.ok("NOOP"))
        model.feed(await c.ok("FETCH 1:* (UID FLAGS)"))
        assert model.uids == truth.uids, model.name
        assert model.flags == truth.flags, model.name
        await c.ok("LOGOUT")
        await c.close()
    await fresh.close()
