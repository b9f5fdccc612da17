"""The SQL-text search path (``search._SqlText``) against the general compiler.

``search()`` renders the common criteria as plain SQL text for the driver; the SQLAlchemy
compiler (``_Compiler``) remains the fallback. These tests run a varied corpus (unicode,
punctuation, quotes, FTS operators in the text, two accounts, an email in two mailboxes) through
both paths with many criteria — hand-picked and random trees — and require the same rows in the
same order, with and without a mailbox, sorts and limits, on SQLite and PostgreSQL. A third test
checks both engines against a Python model of the criteria on an ASCII corpus.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "search"))
from searchhelpers import Mail, msg

from mailserver.store import search as S
from mailserver.store.search import (
    All,
    And,
    Date,
    EmailIds,
    HasAttachment,
    Header,
    InMailbox,
    InThread,
    Keyword,
    Not,
    Or,
    Size,
    SortKey,
    Text,
    Uid,
)

DAY = 86400


@pytest.fixture
async def mail(db) -> Mail:
    return Mail(db)


BASE = 1_699_920_000  # 2023-11-14 00:00:00 UTC

SUBJECTS = ["Hello world", "Re: Hello world", "Meeting tomorrow", "topic 3 status",
            "Topic 30 notes", "Straße Überweisung", "café Zürich", 'quoted "NEAR" AND (x)*',
            "100% done_now", "C++ & pipes | bang!", "", "topic 3", "日本語のメール", "a_b%c\\d"]
NAMES = [("Bob Smith", "bob@example.com"), "carol@corp.test", ("Müller", "mueller@bank.de"),
         "alice@example.org", ("Eve \"E\" O'Neil", "eve@secret.test"), "dave@example.net"]
BODIES = ["The quick brown fox", "Let's meet at café Zürich", "Rechnung 12345",
          'Reply text with C++ and a "quoted" NEAR AND (parens) * stuff',
          "topic three body", "", "übermäßig lange Zeile mit Umlauten", "x" * 150]
KEYWORDS = ["", "$seen", "$flagged $seen", "$answered", "$deleted $seen", "custom $seen",
            "$draft"]


async def _corpus(mail: Mail, ascii_only: bool = False):
    rng = random.Random(7)
    a = await mail.account("a@example.com")
    b = await mail.account("b@example.com")  # a second account: must never leak into a's
    work = await mail.mailbox(a, "Work")
    subjects = [s for s in SUBJECTS if s.isascii()] if ascii_only else SUBJECTS
    names = [n for n in NAMES if str(n).isascii()] if ascii_only else NAMES
    bodies = [x for x in BODIES if x.isascii()] if ascii_only else BODIES
    meta = {}
    for i in range(36):
        account = b if i % 9 == 8 else a
        subject = subjects[i % len(subjects)]
        parsed = msg(subject, from_=names[i % len(names)], to=names[(i * 5 + 1) % len(names)],
                     cc=names[(i * 7 + 2) % len(names)] if i % 3 == 0 else (),
                     body=bodies[i % len(bodies)],
                     attachments=["report.pdf"] if i % 4 == 0 else (),
                     size=100 + 37 * i, message_id=f"m{i}@example.com",
                     in_reply_to=[f"m{i - 1}@example.com"] if i % 5 == 1 else (),
                     sent_at=None if i % 6 == 0 else BASE + i * 20_000 - 3600)
        kws = KEYWORDS[rng.randrange(len(KEYWORDS))]
        received = BASE + i * 20_000
        extra = [work] if account == a and i % 4 == 1 else []
        email_id = await mail.add(account, parsed, keywords=kws, received_at=received,
                                  extra_mailboxes=extra)
        if account == a:
            meta[email_id] = {"parsed": parsed, "keywords": set(kws.split()),
                              "received": received, "work": bool(extra)}
    return a, work, meta


HAND_PICKED = [
    All(), Not(All()), And(), Or(),
    Keyword("$seen"), Keyword("$seen", False), Keyword("custom"), Keyword("$Flagged"),
    Keyword(""), Keyword("two words"), Keyword("nul\x00"), Keyword("a%b_c"),
    Text("subject", "topic 3"), Text("subject", "hello"), Text("subject", "ell"),
    Text("subject", ""), Text("subject", "%"), Text("subject", "_"), Text("subject", "\\"),
    Text("subject", '"NEAR"'), Text("subject", "AND"), Text("subject", "*"),
    Text("subject", "straße"), Text("subject", "uberweisung"), Text("subject", "日本"),
    Text("subject", "'"), Text("subject", "it's"), Text("subject", "a\x00b"),
    Text("body", "quick"), Text("body", "qui"), Text("body", "uick"), Text("body", "cafe"),
    Text("body", "report"), Text("body", "(parens)"), Text("body", "x" * 120),
    Text("text", "bob"), Text("text", "b@ex"), Text("text", "hello bob"),
    Text("text", "zürich"), Text("from", "smith"), Text("from", "b@exa"),
    Text("to", "example"), Text("cc", "dave"), Text("bcc", "eve"), Text("addresses", "corp"),
    Text("from", "o'neil"), Text("from", '"e"'),
    Header("subject", "LO WOR"), Header("subject", ""), Header("from", "bob smith <bob@"),
    Header("to", "bob@example.com"), Header("message-id", "<m3@example.com>"),
    Header("Message-ID", "EXAMPLE"), Header("in-reply-to", "m1@"), Header("references", ""),
    Header("message-id", "<>"), Header("in-reply-to", "%"),
    Date("received", "before", BASE + DAY), Date("received", "on", BASE + 3 * DAY + 5),
    Date("received", "since", BASE + 5 * DAY), Date("sent", "on", BASE + 2 * DAY),
    Date("sent", "before", BASE + DAY), Date("sent", "since", BASE + 7 * DAY),
    Size("larger", 500), Size("smaller", 300), Size("larger", 10**9), Size("larger", 137),
    Size("smaller", 174),
    EmailIds([1, 3, 5, 7, 99]), EmailIds([]), InThread(1), InThread(2),
    HasAttachment(), HasAttachment(False),
    Not(Not(Keyword("$seen"))), Not(Not(Not(Text("subject", "topic")))), Not(And()), Not(Or()),
    And(Keyword("$seen", False), Text("subject", "topic 3")),
    Or(Keyword("$flagged"), Not(Size("larger", 400)), Text("body", "fox")),
    And(Or(Keyword("$seen"), Keyword("$draft")), Not(And(HasAttachment(), Size("smaller", 900)))),
    And(And(And(Keyword("$seen"), Text("text", "example")), All()), Not(Or(Or(InThread(3))))),
    Or(*[Keyword(f"k{i}") for i in range(1100)], Keyword("$flagged")),
    And(*[Size("smaller", 10_000 + i) for i in range(300)]),
]
MAILBOX_ONLY = [
    Uid(((1, 3),)), Uid(((2, 2), (5, 9), (11, 11), (30, 10**6))), Uid(()),
    Not(Uid(((1, 4), (6, 6)))), Uid.of(range(1, 40, 3)),
    Uid(tuple((i, i + 1) for i in range(3, 3 * (S.MAX_SQL_SPANS + 20), 3))),  # resolved first
    And(Uid(((1, 20),)), Keyword("$seen", False), Text("subject", "topic")),
]


def _random_tree(rng: random.Random, depth: int = 0):
    leaves = HAND_PICKED[4:70]
    if depth >= 3 or rng.random() < 0.4:
        return rng.choice(leaves)
    kind = rng.choice(["and", "or", "not"])
    if kind == "not":
        return Not(_random_tree(rng, depth + 1))
    items = [_random_tree(rng, depth + 1) for _ in range(rng.randint(1, 4))]
    return And(*items) if kind == "and" else Or(*items)


async def _both_paths(mail: Mail, monkeypatch, account_id: int, criteria, **kw):
    fast = await mail.search(account_id, criteria, **kw)
    monkeypatch.setattr(S, "FAST_SQL", False)
    try:
        general = await mail.search(account_id, criteria, **kw)
    finally:
        monkeypatch.setattr(S, "FAST_SQL", True)
    assert fast == general, (criteria, kw)
    return fast


async def test_sql_text_path_equals_general_compiler(mail, monkeypatch):
    a, work, _ = await _corpus(mail)
    inbox = mail.inbox[a]
    rng = random.Random(11)
    cases = HAND_PICKED + [_random_tree(rng) for _ in range(120)]
    nonempty = 0
    for c in cases:
        found = await _both_paths(mail, monkeypatch, a, c)
        nonempty += bool(found)
        for box in (inbox, work):
            await _both_paths(mail, monkeypatch, a, c, mailbox_id=box)
        await _both_paths(mail, monkeypatch, a, c, mailbox_id=inbox,
                          sort=[SortKey("subject"), SortKey("sent", True)], limit=5)
    for c in MAILBOX_ONLY:
        nonempty += bool(await _both_paths(mail, monkeypatch, a, c, mailbox_id=inbox))
        await _both_paths(mail, monkeypatch, a, Not(c), mailbox_id=work)
    assert nonempty > len(cases) // 2  # the corpus exercises the criteria, not just empties
    for sort in ([SortKey("received", True)], [SortKey("size")], [SortKey("from"), SortKey("id")],
                 [SortKey("to", True)], [SortKey("sent")], [SortKey("subject", True)]):
        for limit in (None, 3):
            rows = await _both_paths(mail, monkeypatch, a, Keyword("$draft", False), sort=sort,
                                     limit=limit)
            assert rows
    assert await _both_paths(mail, monkeypatch, a, All(), mailbox_id=inbox,
                             sort=[SortKey("uid", True)], limit=2)
    # the benchmark's query found something, in UID order
    rows = await _both_paths(mail, monkeypatch, a,
                             And(Keyword("$seen", False), Text("subject", "topic 3")),
                             mailbox_id=inbox)
    assert rows and rows == sorted(rows)


async def test_sql_text_path_is_taken_and_errors_unchanged(mail, monkeypatch):
    a, _work, _ = await _corpus(mail)
    inbox = mail.inbox[a]
    expected = await mail.search(a, And(Keyword("$seen", False), Text("subject", "topic 3")),
                                 mailbox_id=inbox)

    class Refused(S._Compiler):
        def compile(self, c, depth=0):
            raise AssertionError("general compiler used")

    monkeypatch.setattr(S, "_Compiler", Refused)
    assert await mail.search(a, And(Keyword("$seen", False), Text("subject", "topic 3")),
                             mailbox_id=inbox) == expected
    # what the text path does not cover goes to the general compiler, errors included
    monkeypatch.undo()
    for bad, kw in [(Text("nope", "x"), {}), (Date("sent", "after", BASE), {}),
                    (Size("equal", 3), {}), (Uid(((1, 2),)), {}),
                    (All(), {"sort": [SortKey("uid")]}), (All(), {"sort": [SortKey("nope")]})]:
        with pytest.raises(S.SearchError):
            await mail.search(a, bad, **kw)
    with pytest.raises(S.UnsupportedCriterion):
        await mail.search(a, Header("x-mailer", "mutt"))
    with pytest.raises(S.SearchTooComplex):
        await mail.search(a, Or(*[Keyword(f"k{i}") for i in range(S.MAX_NODES + 1)]))


# ---- both backends against a Python model (ASCII corpus) --------------------------------------

def _addr_text(addrs) -> str:
    return ", ".join(f"{x.name} <{x.email}>" if x.name else x.email for x in addrs)


def _model(c, m: dict, uid: int | None) -> bool:
    p = m["parsed"]
    if isinstance(c, All):
        return True
    if isinstance(c, And):
        return all(_model(i, m, uid) for i in c.items)
    if isinstance(c, Or):
        return any(_model(i, m, uid) for i in c.items)
    if isinstance(c, Not):
        return not _model(c.item, m, uid)
    if isinstance(c, Keyword):
        return (c.keyword.lower() in m["keywords"]) == c.present
    if isinstance(c, Size):
        return p.size > c.n if c.op == "larger" else p.size < c.n
    if isinstance(c, HasAttachment):
        return p.has_attachment == c.value
    if isinstance(c, InMailbox):
        return m["work"]
    if isinstance(c, Uid):
        return any(lo <= uid <= hi for lo, hi in c.ranges)
    if isinstance(c, Date):
        t = m["received"] if c.field == "received" or p.sent_at is None else p.sent_at
        start = c.day - c.day % DAY
        return {"before": t < start, "on": start <= t < start + DAY, "since": t >= start}[c.op]
    if isinstance(c, Text):
        text = p.subject if c.field == "subject" else _addr_text(p.from_)
        tokens = S.words(text)
        if all(any(t.startswith(w) for t in tokens) for w in S.words(c.value)):
            return True
        return c.value.lower() in text.lower()
    raise AssertionError(c)


async def test_both_backends_match_a_model(mail):
    a, work, meta = await _corpus(mail, ascii_only=True)
    inbox = mail.inbox[a]
    rng = random.Random(5)
    leaves = [Keyword("$seen"), Keyword("$seen", False), Keyword("$flagged"), Size("larger", 700),
              Size("smaller", 400), HasAttachment(), InMailbox(work), Text("subject", "topic 3"),
              Text("subject", "ell"), Text("subject", "note"), Text("from", "smith"),
              Text("from", "b@exa"), Date("received", "since", BASE + 4 * DAY),
              Date("sent", "on", BASE + 2 * DAY), Date("sent", "before", BASE + DAY),
              Uid(((1, 5), (9, 9), (20, 24)))]

    def tree(depth=0):
        if depth >= 3 or rng.random() < 0.35:
            return rng.choice(leaves)
        kind = rng.choice(["and", "or", "not"])
        if kind == "not":
            return Not(tree(depth + 1))
        items = [tree(depth + 1) for _ in range(rng.randint(1, 3))]
        return And(*items) if kind == "and" else Or(*items)

    uid_of = {e: u for u, e in await mail.search(a, All(), mailbox_id=inbox)}
    assert len(uid_of) == len(meta)  # every email of a is in its INBOX
    checked = 0
    for c in [*leaves, *(tree() for _ in range(60))]:
        want = [(uid_of[e], e) for e in sorted(meta) if _model(c, meta[e], uid_of[e])]
        assert await mail.search(a, c, mailbox_id=inbox) == want, c
        checked += bool(want)
    assert checked > 20
