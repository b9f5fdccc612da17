"""IMAP SEARCH / SORT / THREAD answers are the same through the SQL-text search path
(``mailserver.store.search._SqlText``) and the general SQLAlchemy compiler, on both engines.

A real daemon over loopback; the switch ``search.FAST_SQL`` is flipped in this process (the
daemon runs in it) between two passes over the same commands, and the whole untagged answers
must be byte-identical.
"""

from __future__ import annotations

import pytest
from conftest import RawImap, message

from mailserver.store import search as store_search
from mailserver.testing.daemons import DOMAIN, daemon_env

SUBJECTS = ["topic 3", "Topic 30 notes", "re: topic 3", "xtopic 3", "café Zürich", "Straße",
            "hello world", "100% done_now", 'quoted "NEAR" (x)*', "topic three"]
COMMANDS = [
    'UID SEARCH UNSEEN SUBJECT "topic 3"',  # the benchmark's query
    "SEARCH ALL", "SEARCH UNSEEN", "SEARCH SEEN FLAGGED", "SEARCH OR SEEN NOT FLAGGED",
    'SEARCH SUBJECT "topic"', 'SEARCH SUBJECT "ell"',
    "SEARCH CHARSET UTF-8 SUBJECT {7+}\r\nzürich",
    'SEARCH SUBJECT "%"', 'SEARCH SUBJECT "_"', 'SEARCH SUBJECT "\\"NEAR\\""',
    "SEARCH BODY apple", "SEARCH BODY app", "SEARCH TEXT bob", "SEARCH FROM zed",
    "SEARCH TO alice", "SEARCH NOT FROM zed", 'SEARCH HEADER Message-ID "m3@"',
    "SEARCH LARGER 200", "SEARCH SMALLER 400", "SEARCH SINCE 1-Jan-2020",
    "SEARCH BEFORE 1-Jan-2020", "SEARCH SENTON 23-Nov-2026", "SEARCH KEYWORD $label1",
    "SEARCH UNKEYWORD $label1", "SEARCH 2:5", "UID SEARCH UID 3:7,9", "SEARCH NOT 1:3",
    "UID SEARCH RETURN (MIN MAX COUNT ALL) UNSEEN", "SEARCH OR (SUBJECT topic BODY apple) DELETED",
    'SEARCH NOT (OR SUBJECT "topic" NOT SEEN)', "SEARCH DELETED", "SEARCH UNDELETED ANSWERED",
    "SORT (SUBJECT) UTF-8 ALL", "SORT (REVERSE ARRIVAL) UTF-8 UNSEEN",
    "UID SORT (FROM SIZE) UTF-8 SUBJECT topic", "SORT (REVERSE DATE) UTF-8 NOT SEEN",
    "THREAD REFERENCES UTF-8 ALL", "THREAD ORDEREDSUBJECT UTF-8 SUBJECT topic",
]


async def test_imap_search_answers_equal_on_both_paths(tmp_path, database_url, monkeypatch):
    async with daemon_env(tmp_path, database_url, overrides={"imap": {"tls": "starttls"}}) as env:
        await env.start("imap")
        for i in range(24):
            raw = message(SUBJECTS[i % len(SUBJECTS)], "apple pie" if i % 3 == 0 else "bread",
                          msgid=f"m{i}@x", sender="zed@example.test" if i % 4 == 0 else
                          "bob@example.test",
                          extra="In-Reply-To: <m0@x>\r\n" if i % 5 == 1 else "")
            assert (await env.app.deliverer.deliver(raw, [f"alice@{DOMAIN}"])).all_delivered
        c = await RawImap.connect(env.address("imap"))
        await c.greeting()
        await c.login("alice")
        await c.ok("SELECT INBOX")
        await c.ok("STORE 1:8 +FLAGS (\\Seen)")
        await c.ok("STORE 3,6,9 +FLAGS (\\Flagged $label1)")
        await c.ok("STORE 4,10 +FLAGS (\\Deleted \\Answered)")
        answers = {}
        try:
            for fast in (True, False):
                monkeypatch.setattr(store_search, "FAST_SQL", fast)
                got = []
                for command in COMMANDS:
                    lines = await c.cmd(command)
                    assert lines[-1].split(b" ")[1] == b"OK", (command, lines)
                    got.append(b"".join(lines[:-1]).replace(b'"t%d"' % c.n, b"TAG"))
                answers[fast] = got
        finally:
            await c.close()
        for command, a, b in zip(COMMANDS, answers[True], answers[False]):
            assert a == b, command
        # and the answers are not trivially empty
        first = answers[True][0]
        assert first.startswith(b"* SEARCH ") and len(first.split()) > 3, first
        assert sum(len(a.split()) > 2 for a in answers[True]) > len(COMMANDS) // 2


@pytest.mark.parametrize("command", ['UID SEARCH UNSEEN SUBJECT "topic 3"'])
async def test_benchmark_search_uses_the_text_path(tmp_path, command, monkeypatch):
    async with daemon_env(tmp_path, None, overrides={"imap": {"tls": "starttls"}}) as env:
        await env.start("imap")
        for i in range(4):
            raw = message(SUBJECTS[i], "x", msgid=f"b{i}@x")
            assert (await env.app.deliverer.deliver(raw, [f"alice@{DOMAIN}"])).all_delivered
        calls = []
        real = store_search._text_statement

        def spy(*args, **kw):
            calls.append(args[2])
            return real(*args, **kw)

        monkeypatch.setattr(store_search, "_text_statement", spy)

        class Refused(store_search._Compiler):
            def compile(self, c, depth=0):
                raise AssertionError("general compiler used")

        monkeypatch.setattr(store_search, "_Compiler", Refused)
        c = await RawImap.connect(env.address("imap"))
        try:
            await c.greeting()
            await c.login("alice")
            await c.ok("SELECT INBOX")
            await c.ok("STORE 2 +FLAGS (\\Seen)")
            lines = await c.ok(command)
        finally:
            await c.close()
        # "topic 3", "re: topic 3", "xtopic 3" (substring); "Topic 30" matches but is seen
        assert lines[0] == b"* SEARCH 1 3 4\r\n"
        assert calls
