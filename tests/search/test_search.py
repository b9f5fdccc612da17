"""Full-text index and search queries, on SQLite (FTS5) and PostgreSQL (tsvector)."""

from __future__ import annotations

import datetime as dt

import pytest
from searchhelpers import msg

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
BASE = 1_699_920_000  # 2023-11-14 00:00:00 UTC


async def corpus(mail):
    """Account "a" with four emails (ids 1-4) and a Work mailbox holding #2."""
    a = await mail.account("a@example.com")
    work = await mail.mailbox(a, "Work")
    e1 = await mail.add(a, msg(
        "Hello world", from_=("Bob Smith", "bob@example.com"), to="alice@example.org",
        body="The quick brown fox", attachments=["report.pdf"], size=150,
        message_id="m1@example.com", sent_at=BASE - 3600),
        keywords="$seen", received_at=BASE + 10 * 3600)
    e2 = await mail.add(a, msg(
        "Meeting tomorrow", from_="carol@corp.test", to="bob@example.com", cc="dave@example.net",
        body="Let's meet at café Zürich", size=5000, message_id="m2@corp.test"),
        keywords="$flagged $seen", received_at=BASE + DAY + 86399, extra_mailboxes=[work])
    e3 = await mail.add(a, msg(
        "Re: Hello world", from_="alice@example.org", to="bob@example.com",
        bcc="eve@secret.test", size=300, message_id="m3@example.org",
        in_reply_to=["m1@example.com"], references=["m1@example.com"],
        body='Reply text with C++ and a "quoted" NEAR AND (parens) * stuff: colon & pipe | '
             "bang ! it's 100% done_now"),
        received_at=BASE + 2 * DAY)
    e4 = await mail.add(a, msg(
        "Straße Überweisung", from_=("Müller", "mueller@bank.de"), reply_to="noreply@bank.de",
        sender="robot@bank.de", body="Rechnung 12345", size=100),
        received_at=BASE + 3 * DAY + 1)
    assert (e1, e2, e3, e4) == (1, 2, 3, 4)
    return a, work


async def test_text_token_and_substring(mail):
    a, _ = await corpus(mail)
    cases = [
        (Text("subject", "hello"), {1, 3}),
        (Text("subject", "ell"), {1, 3}),  # substring on the subject
        (Text("subject", "LO WOR"), {1, 3}),
        (Text("subject", "world hello"), {1, 3}),  # every word, any order
        (Text("subject", "hello meeting"), set()),
        (Text("body", "quick"), {1}),
        (Text("body", "qui"), {1}),  # prefix of a token
        (Text("body", "uick"), set()),  # the body is token-prefix only
        (Text("body", "report"), {1}),  # attachment filename
        (Text("body", "hello"), set()),  # subject is not body
        (Text("from", "bob"), {1}),
        (Text("from", "example"), {1, 3}),  # domain part of bob@example.com / alice@example.org
        (Text("from", "b@exa"), {1}),  # substring across the @
        (Text("from", "smith"), {1}),  # display name
        (Text("to", "bob"), {2, 3}),
        (Text("cc", "dave"), {2}),
        (Text("bcc", "eve"), {3}),
        (Text("cc", "bob"), set()),
        (Text("addresses", "bob"), {1, 2, 3}),
        (Text("addresses", "noreply"), {4}),  # reply-to counts as an address
        (Text("addresses", "robot"), {4}),  # and sender
        (Text("text", "bob"), {1, 2, 3}),
        (Text("text", "hello fox"), {1}),  # words may sit in different fields
        (Text("text", "fox"), {1}),
        (Text("text", "cafe"), {2}),  # diacritics folded
        (Text("body", "ZURICH"), {2}),
        (Text("subject", "straße"), {4}),
        (Text("subject", "uberweisung"), {4}),
        (Text("subject", "Überw"), {4}),
        (Text("from", "MÜLLER"), {4}),
        (Text("from", "MUELLER@BANK"), {4}),
        (Text("body", "12345"), {4}),
        (Text("body", "123"), {4}),
        (Text("text", ""), {1, 2, 3, 4}),  # every string contains ""
    ]
    for criterion, expected in cases:
        assert await mail.ids(a, criterion) == expected, criterion


async def test_fts_syntax_is_never_interpreted(mail):
    a, _ = await corpus(mail)
    hostile = ['"', '""', "*", "NEAR", "NEAR(a b)", "AND", "OR", "NOT", ":", "subject:hello",
               "{subject}: hello", "(", ")", "((", "&", "|", "!", "a & b | !c", "'", "''",
               "'':*", "\\", "\\'", "%", "_", "-", "^", "+", "hello*", '"hello', "x:*A",
               "\x00", "🙂", "a" * 5000, "ü" * 3000 + " x", "f:bob", "t:bob"]
    for value in hostile:
        await mail.ids(a, Not(Text("text", value)))
        for field in ("subject", "body", "from"):
            await mail.ids(a, Text(field, value))
        await mail.ids(a, Header("subject", value))
        await mail.ids(a, Keyword(value))
    cases = [
        (Text("body", "NEAR"), {3}),
        (Text("body", "AND"), {3}),
        (Text("body", "c++"), {2, 3}),  # the word "c" as a prefix: café, colon
        (Text("body", '"quoted"'), {3}),
        (Text("body", "(parens)"), {3}),
        (Text("body", "colon & pipe | bang !"), {3}),
        (Text("body", "it's"), {3}),
        (Text("subject", "hello*"), {1, 3}),
        (Text("subject", "%"), set()),  # LIKE wildcards are literal
        (Text("subject", "_"), set()),
        (Text("subject", "'"), set()),
        (Text("from", "f:bob"), set()),  # the words f and bob: no From word starts with f
        (Text("text", "f"), {1}),  # fox; never #4 through PostgreSQL's "f:mueller" tag lexeme
        (Text("addresses", "f"), set()),
        (Text("from", "f"), set()),  # nor by substring
        (Text("subject", "\x00hello"), {1, 3}),
        (Text("body", "f"), {1}),  # "fox"; "stuff" contains f but does not start with it
        (Text("subject", "*"), set()),
        (Keyword("%"), set()),
        (Keyword("_seen"), set()),
    ]
    for criterion, expected in cases:
        assert await mail.ids(a, criterion) == expected, criterion


async def test_other_criteria(mail):
    a, work = await corpus(mail)
    cases = [
        (All(), {1, 2, 3, 4}),
        (Keyword("$seen"), {1, 2}),
        (Keyword("$SEEN"), {1, 2}),
        (Keyword("$seen", False), {3, 4}),
        (Keyword("$see"), set()),
        (Keyword("$flagged"), {2}),
        (Date("received", "on", BASE + 5), {1}),
        (Date("received", "on", dt.date(2023, 11, 15)), {2}),  # 23:59:59 still that day
        (Date("received", "before", BASE + DAY + 7), {1}),
        (Date("received", "since", BASE + 2 * DAY), {3, 4}),
        (Date("received", "since", BASE + 3 * DAY + 50_000), {4}),
        (Date("sent", "on", BASE - DAY), {1}),  # sent the evening before
        (Date("sent", "on", BASE + 2 * DAY), {3}),  # no Date: → received time
        (Size("larger", 299), {2, 3}),
        (Size("larger", 300), {2}),
        (Size("smaller", 150), {4}),
        (EmailIds([2, 4, 99]), {2, 4}),
        (EmailIds([]), set()),
        (InMailbox(work), {2}),
        (InMailbox(mail.inbox[a]), {1, 2, 3, 4}),
        (InThread(1), {1, 3}),
        (HasAttachment(True), {1}),
        (HasAttachment(False), {2, 3, 4}),
        (Header("subject", "LO WOR"), {1, 3}),
        (Header("subject", ""), {1, 2, 3, 4}),
        (Header("from", "bob smith <bob@"), {1}),
        (Header("to", "bob@example.com"), {2, 3}),
        (Header("reply-to", "noreply"), {4}),
        (Header("sender", "robot"), {4}),
        (Header("message-id", "<m2@corp.test>"), {2}),
        (Header("Message-ID", "corp"), {2}),
        (Header("in-reply-to", "m1@"), {3}),
        (Header("references", "M1@EXAMPLE"), {3}),
    ]
    for criterion, expected in cases:
        assert await mail.ids(a, criterion) == expected, criterion


async def test_boolean_combinations(mail):
    a, work = await corpus(mail)
    hello = Text("subject", "hello")
    cases = [
        (And(hello, Not(Keyword("$seen"))), {3}),
        (And([hello, Keyword("$seen")]), {1}),
        (Or(Size("larger", 4000), Text("from", "mueller")), {2, 4}),
        (Not(Or(Size("larger", 4000), Text("from", "mueller"))), {1, 3}),
        (Not(Not(hello)), {1, 3}),
        (Not(Text("body", "quick")), {2, 3, 4}),
        (And(), {1, 2, 3, 4}),
        (Or(), set()),
        (Or(And(hello, HasAttachment()), And(InMailbox(work), Text("body", "cafe"))), {1, 2}),
        (And(Text("text", "bob"), Not(Text("to", "bob"))), {1}),
        (Or(Text("body", "quick"), Text("body", "rechnung"), Text("cc", "dave")), {1, 2, 4}),
        (And(Date("received", "since", BASE + DAY), Date("received", "before", BASE + 3 * DAY)),
         {2, 3}),
    ]
    for criterion, expected in cases:
        assert await mail.ids(a, criterion) == expected, criterion


async def test_mailbox_scope_uids_sort_limit(mail):
    a, work = await corpus(mail)
    inbox = mail.inbox[a]
    rows = await mail.search(a, All(), mailbox_id=inbox)
    assert rows == [(1, 1), (2, 2), (3, 3), (4, 4)]
    assert await mail.search(a, All(), mailbox_id=work) == [(1, 2)]
    assert await mail.search(a, Uid(((2, 3),)), mailbox_id=inbox) == [(2, 2), (3, 3)]
    assert await mail.search(a, Uid.of([1, 4, 9]), mailbox_id=inbox) == [(1, 1), (4, 4)]
    assert await mail.search(a, Not(Uid(((2, 3),))), mailbox_id=inbox) == [(1, 1), (4, 4)]
    assert await mail.search(a, Text("subject", "hello"), mailbox_id=work) == []
    assert await mail.search(a, All(), sort=[SortKey("size", True)]) == [2, 3, 1, 4]
    assert await mail.search(a, All(), sort=[SortKey("size")], limit=2) == [4, 1]
    assert await mail.search(a, All(), mailbox_id=inbox, sort=[SortKey("uid", True)],
                             limit=1) == [(4, 4)]
    assert await mail.search(a, All(), sort=[SortKey("received", True)]) == [4, 3, 2, 1]
    assert await mail.search(a, Keyword("$seen"), sort=[SortKey("sent")]) == [1, 2]
    with pytest.raises(S.SearchError):
        await mail.search(a, Uid(((1, 2),)))
    with pytest.raises(S.SearchError):
        await mail.search(a, All(), sort=[SortKey("nope")])
    with pytest.raises(S.SearchError):
        await mail.search(a, Text("nope", "x"))


async def test_no_cross_account_leakage(mail):
    a, _ = await corpus(mail)
    b = await mail.account("b@example.com")
    for i in range(6):  # email ids 1..6 in b collide with a's ids
        await mail.add(b, msg("Hello world", from_="bob@example.com", to="zed@example.com",
                              body=f"zebra number {i}", message_id="m1@example.com"))
    assert await mail.ids(a, Text("subject", "hello")) == {1, 3}
    assert await mail.ids(a, Text("body", "zebra")) == set()
    assert await mail.ids(a, Text("to", "zed")) == set()
    assert await mail.ids(a, Text("to", "ze")) == set()
    assert await mail.ids(b, Text("subject", "hello")) == {1, 2, 3, 4, 5, 6}
    assert await mail.ids(b, Text("body", "quick")) == set()
    assert await mail.ids(b, Not(Text("body", "zebra"))) == set()
    assert await mail.ids(b, Text("from", "bob")) == {1, 2, 3, 4, 5, 6}
    assert await mail.ids(a, Text("from", "bob")) == {1}
    # b's messages share a's Message-ID but live in their own thread(s)
    assert await mail.ids(b, InThread(1)) == {1, 2, 3, 4, 5, 6}
    assert await mail.ids(a, InThread(1)) == {1, 3}


async def test_unindex_and_reindex(mail):
    a, _ = await corpus(mail)
    b = await mail.account("b@example.com")
    await mail.add(b, msg("Hello", body="quick"))
    async with mail.db.write() as conn:
        await S.unindex_emails(conn, mail.dialect, a, [1, 3])
        await S.unindex_emails(conn, mail.dialect, a, [])
    assert await mail.ids(a, Text("body", "quick")) == set()
    assert await mail.ids(a, Text("subject", "hello")) == set()
    assert await mail.ids(a, Not(Text("body", "quick"))) == {1, 2, 3, 4}
    assert await mail.ids(a, Text("body", "cafe")) == {2}
    assert await mail.ids(b, Text("body", "quick")) == {1}
    async with mail.db.write() as conn:  # re-indexing replaces, never duplicates
        await S.index_email(conn, mail.dialect, a, 2, msg("Other", body="fresh words"))
        await S.index_email(conn, mail.dialect, a, 2, msg("Other", body="fresher words"))
    assert await mail.ids(a, Text("body", "cafe")) == set()
    assert await mail.ids(a, Text("body", "fresher")) == {2}
    assert await mail.search(a, Text("body", "words")) == [2]
    # a huge body: PostgreSQL keeps the first ~900 kB of distinct lexemes (1 MB tsvector limit)
    huge = "z" * 3000 + " " + " ".join(f"w{i}x" for i in range(120_000))
    async with mail.db.write() as conn:
        await S.index_email(conn, mail.dialect, a, 4, msg("Big", body=huge))
    assert await mail.ids(a, Text("body", "w17x")) == {4}
    assert await mail.ids(a, Text("body", "z" * 200)) == {4}  # long runs: by their prefix
    assert await mail.ids(a, Text("subject", "big")) == {4}
    async with mail.db.write() as conn:
        await S.unindex_account(conn, mail.dialect, a)
    assert await mail.ids(a, Text("text", "words")) == set()
    assert await mail.ids(b, Text("text", "hello")) == {1}


async def test_arbitrary_headers(mail):
    a, _ = await corpus(mail)
    blocks = {1: b"X-Mailer: Mutt 2.0\r\nX-Tag: =?utf-8?q?caf=C3=A9?=\r\n\r\n",
              2: b"X-Mailer: Outlook\r\n\r\n", 3: b"Subject: x\r\n\r\n", 4: b"\r\n"}
    fetched: list[int] = []

    async def fetch(email_id: int) -> bytes:
        fetched.append(email_id)
        return blocks[email_id]

    with pytest.raises(S.UnsupportedCriterion):
        await mail.search(a, Header("X-Mailer", "mutt"))
    assert await mail.ids(a, Header("X-Mailer", "mutt"), fetch_header=fetch) == {1}
    assert await mail.ids(a, Header("x-mailer", ""), fetch_header=fetch) == {1, 2}
    assert await mail.ids(a, Header("X-Tag", "CAFÉ"), fetch_header=fetch) == {1}
    assert await mail.ids(a, Not(Header("X-Mailer", "o")), fetch_header=fetch) == {1, 3, 4}
    fetched.clear()
    # top-level conjuncts narrow the blobs read
    assert await mail.ids(a, And(Keyword("$flagged"), Header("X-Mailer", "outlook")),
                          fetch_header=lambda i: blocks[i]) == {2}
    assert await mail.ids(a, And(HasAttachment(), Header("X-Mailer", "outlook")),
                          fetch_header=fetch) == set()
    assert fetched == [1]


async def test_limits_deep_wide_and_large(mail):
    a, _ = await corpus(mail)
    c = All()
    for _ in range(S.MAX_DEPTH):
        c = Not(c)
    assert await mail.ids(a, c) == {1, 2, 3, 4}  # 64 negations: fine
    with pytest.raises(S.SearchTooComplex):
        await mail.ids(a, Not(c))
    nested = Text("body", "quick")
    for _ in range(S.MAX_DEPTH + 5):
        nested = And(nested, All())
    with pytest.raises(S.SearchTooComplex):
        await mail.ids(a, nested)
    with pytest.raises(S.SearchTooComplex):
        await mail.ids(a, Or(*[Keyword(f"k{i}") for i in range(S.MAX_NODES + 1)]))
    wide = Or(*[Text("body", f"w{i}") for i in range(100)], Text("body", "quick"))
    assert await mail.ids(a, wide) == {1}
    # a flat chain of 1100 ORs would be an expression 1100 deep: SQLite's limit is 1000
    n = 1100
    assert await mail.ids(a, Or(*[Keyword(f"k{i}") for i in range(n)], Keyword("$flagged"))) \
        == {2}
    assert await mail.ids(a, And(*[Size("smaller", 10_000 + i) for i in range(n)],
                                 InThread(1))) == {1, 3}
    inbox = mail.inbox[a]
    many = list(range(5, 40_000)) + [2]
    assert await mail.ids(a, EmailIds(many)) == {2}
    uids = Uid.of([1, 3, *range(10, 40_000, 2)])
    assert await mail.search(a, uids, mailbox_id=inbox) == [(1, 1), (3, 3)]
    spans = Uid(tuple((i, i + 1) for i in range(3, 30_000, 3)))
    assert await mail.search(a, spans, mailbox_id=inbox) == [(3, 3), (4, 4)]
    assert await mail.search(a, Not(spans), mailbox_id=inbox) == [(1, 1), (2, 2)]
    few = Uid(tuple((i, i + 1) for i in range(3, 3 * S.MAX_SQL_SPANS, 3)))  # stays in SQL
    assert await mail.search(a, few, mailbox_id=inbox) == [(3, 3), (4, 4)]
    assert await mail.search(a, Not(few), mailbox_id=inbox) == [(1, 1), (2, 2)]
