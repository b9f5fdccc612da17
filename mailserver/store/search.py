"""Full-text search index (SQLite FTS5 / PostgreSQL tsvector + GIN) and search queries.

The index is written in the delivery transaction (``index_email``) and removed on expunge
(``unindex_emails``), so search never lags the mailbox. ``search`` compiles a criteria tree
(``And``/``Or``/``Not``/``Text``/``Header``/…, the frozen dataclasses below) into ONE SQL
statement over ``emails`` (and ``mailbox_messages`` when a mailbox is given), the full-text parts
being ``IN`` subqueries on the index. That statement is written as SQL text with ``?``
parameters and run through the driver (``_SqlText``: ~0.01 ms instead of ~1.5 ms of
SQLAlchemy expression building and compiling per search); the SQLAlchemy compiler
(``_Compiler``, the same SQL) is the fallback for what the text path does not cover and the
reference the tests compare it with.

Index layout
------------
Fields: ``subject``; the address fields ``from``, ``to``, ``cc``, ``bcc``, ``reply-to``,
``sender`` (each address as ``name <email>``; "addresses" is all six); ``body`` (the parser's
``search_text`` plus the attachment filenames).

- SQLite: FTS5 table ``email_fts(subject, from_addr, to_addr, cc_addr, bcc_addr, reply_to_addr,
  sender_addr, body)`` with ``rowid = (account_id << 32) | email_id``, so an account's rows are
  one rowid range and every index query carries ``rowid BETWEEN lo AND hi`` (email ids are below
  2**32 per account). Tokenizer ``unicode61 remove_diacritics 2``: letters and digits form
  tokens, case and Latin diacritics are folded ("bob@example.com" → bob, example, com). Field
  queries use FTS5 column filters (``{from_addr} : (…)``). The subject/address columns hold the
  lowercased text, which the substring (LIKE) half of a query scans. FTS5 has no foreign keys:
  expunge must call ``unindex_emails``.
- PostgreSQL: ``email_search(account_id, email_id, tsv, subject, from_addr, …)``. ``tsv`` is one
  tsvector with one GIN index; lexemes are produced by ``tokenize`` below (same splitting rules
  as unicode61, casefolded, diacritics stripped) and passed as a quoted tsvector literal, so no
  PostgreSQL text-search parser or language configuration is involved (language-neutral like
  the 'simple' configuration, and it cannot mangle e-mail addresses into single tokens).
  Weights select the field: **A** subject, **B** every address field, **C** field-tagged address
  lexemes (``f:bob`` for From, ``t:`` To, ``c:`` Cc, ``b:`` Bcc), **D** body and filenames.
  A "from" query is ``'f:bob':*C``, a "text" query ``'bob':*ABD`` (C excluded so the tags never
  leak into it). The address/subject text columns are lowercased for substring matching; the
  row cascades away with its email. Long bodies are capped (``MAX_TSV_BYTES``) below
  PostgreSQL's 1 MB tsvector limit; tokens are cut to ``MAX_TOKEN_CHARS`` (query words too).

Text semantics (``Text(field, value)``)
---------------------------------------
IMAP SEARCH is substring-based, FTS token-based. We split ``value`` into words (runs of letters
and digits) and require EVERY word to occur in the field(s) as a prefix of a token (FTS5
``"word"*``, tsquery ``'word':*``), not necessarily adjacent nor in order, and for "text" not
necessarily in the same field. Case and (Latin) diacritics are ignored. For the summary fields
(subject and the address fields; for "text" these too), a case-insensitive substring match of
the whole value on the stored text is accepted as well, so "SUBJECT ell" finds "Hello" and
"FROM b@ex" finds "bob@example.com". The body is token-prefix only ("BODY ell" does not find
"hello"). "" matches every message (RFC 3501: every string contains ""); a value without any
word (punctuation only) matches by substring on summary fields and never on the body. Only the
first ``MAX_QUERY_WORDS`` words are used. Words are the only part of the input that reaches the
FTS query, each wrapped in double quotes with inner quotes doubled (FTS5) or in single quotes
with quotes and backslashes escaped (tsquery), so FTS operators in user input (``"`` ``*``
``NEAR`` ``AND`` ``:`` ``(`` ``&|!``) are plain text, never syntax; LIKE wildcards are escaped.
Known differences: CJK text without spaces is one token per run (no word segmentation), so such
words are found by prefix only; PostgreSQL casefolds ("straße" = "strasse"), SQLite does not.

Other criteria
--------------
- ``Header(name, value)``: case-insensitive substring. subject/from/to/cc/bcc/reply-to/sender
  use the stored text above; message-id/in-reply-to/references the ``emails`` columns (angle
  brackets stripped from the value). Any other header needs ``fetch_header`` (email id → the raw
  header block); matching messages are found first and fed back into the SQL as an id set.
  Without it such a criterion raises ``UnsupportedCriterion``. An empty value matches every
  message for summary headers (we do not record whether an empty header was present).
- ``Keyword(keyword, present)``: keywords in JMAP form, lowercased (``$seen`` for ``\\Seen``).
- ``Date(field, op, day)``: RFC 3501 day semantics (time of day ignored), days are UTC days;
  ``day`` is any epoch second of that day (or a ``datetime.date``). "sent" uses the Date: header
  time and falls back to the received time when the message has none (as RFC 5256 SORT does).
- ``Size(op, n)``: "larger" is size > n, "smaller" size < n (RFC 3501).
- ``Uid(ranges)`` needs ``mailbox_id``; more than ``MAX_SQL_SPANS`` ranges are first resolved
  against the mailbox's UIDs (SQLite takes seconds to plan thousands of BETWEENs).
  ``InMailbox`` is membership in that mailbox, ``EmailIds`` an explicit id set.
- Nesting deeper than ``MAX_DEPTH`` or more than ``MAX_NODES`` criteria: ``SearchTooComplex``.
  Long AND/OR lists are emitted as a tree of parenthesised groups (SQLite refuses expressions
  more than 1000 deep, which a flat chain of 1000 ORs is).

Scaling note: the GIN index is on ``tsv`` alone, so a common word's posting list spans all
accounts before the ``account_id`` filter; with the ``btree_gin`` extension an index on
``(account_id, tsv)`` would confine it (not done: it needs the extension installed).
"""

from __future__ import annotations

import bisect
import datetime as _dt
import email
import email.policy
import inspect
import re
import unicodedata
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Union

from sqlalchemy import (
    BigInteger,
    Boolean,
    ColumnElement,
    Text as SAText,
    and_,
    bindparam,
    cast,
    delete,
    false,
    func,
    literal,
    literal_column,
    not_,
    or_,
    select,
    true,
)
from sqlalchemy import column as sa_column
from sqlalchemy import table as sa_table
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.visitors import InternalTraversal
from sqlalchemy.types import UserDefinedType

from mailserver.store import schema

if TYPE_CHECKING:
    from mailserver.message.model import Address, ParsedMessage

MAX_DEPTH = 64
MAX_NODES = 2000
MAX_TOKEN_CHARS = 100  # longer runs (base64 debris) are indexed and searched by this prefix
MAX_TSV_BYTES = 900_000  # PostgreSQL refuses tsvectors over 1 MB
MAX_QUERY_WORDS = 64
MAX_SQL_SPANS = 200  # more UID ranges than this are resolved against the mailbox first

_ADDRESS_FIELDS = ("from", "to", "cc", "bcc", "reply-to", "sender")
_COLUMN_OF = {
    "subject": "subject", "from": "from_addr", "to": "to_addr", "cc": "cc_addr",
    "bcc": "bcc_addr", "reply-to": "reply_to_addr", "sender": "sender_addr",
}
_SUMMARY_COLUMNS = tuple(_COLUMN_OF.values())
_ADDRESS_COLUMNS = tuple(_COLUMN_OF[f] for f in _ADDRESS_FIELDS)
_FTS_COLUMNS = (*_SUMMARY_COLUMNS, "body")
_PG_TAG = {"from": "f:", "to": "t:", "cc": "c:", "bcc": "b:"}
TEXT_FIELDS = frozenset({"text", "body", "subject", "from", "to", "cc", "bcc", "addresses"})


# --------------------------------------------------------------------------------------------
# DDL
# --------------------------------------------------------------------------------------------

def search_ddl(dialect: str) -> list[str]:
    """Statements that create the engine-specific full-text index (idempotent)."""
    if dialect == "sqlite":
        return [
            "CREATE VIRTUAL TABLE IF NOT EXISTS email_fts USING fts5("
            + ", ".join(_FTS_COLUMNS)
            + ", tokenize = 'unicode61 remove_diacritics 2', prefix = '2 3')",
        ]
    text_cols = "".join(f" {c} TEXT NOT NULL DEFAULT ''," for c in _SUMMARY_COLUMNS)
    return [
        "CREATE TABLE IF NOT EXISTS email_search ("
        " account_id BIGINT NOT NULL, email_id BIGINT NOT NULL, tsv TSVECTOR NOT NULL,"
        + text_cols
        + " PRIMARY KEY (account_id, email_id),"
        " FOREIGN KEY (account_id, email_id) REFERENCES emails (account_id, id) ON DELETE CASCADE)",
        "CREATE INDEX IF NOT EXISTS ix_email_search_tsv ON email_search USING GIN (tsv)",
    ]


class _TSQuery(UserDefinedType):
    cache_ok = True

    def get_col_spec(self, **kw: Any) -> str:
        return "TSQUERY"


# FTS5's hidden column named like the table is the MATCH target
_fts = sa_table("email_fts", sa_column("rowid"), sa_column("email_fts"),
                *(sa_column(c) for c in _FTS_COLUMNS))
_pgs = sa_table("email_search", sa_column("account_id"), sa_column("email_id"),
                sa_column("tsv"), *(sa_column(c) for c in _SUMMARY_COLUMNS))


# --------------------------------------------------------------------------------------------
# Tokens
# --------------------------------------------------------------------------------------------

_WORD = re.compile(r"[^\W_]+")


def _clean(value: str) -> str:
    # PostgreSQL text cannot hold NUL; treat it as a separator everywhere
    return value.replace("\x00", " ")


def words(value: str) -> list[str]:
    """Split text into words the way unicode61 does (letters and digits), lowercased, NFC."""
    return _WORD.findall(unicodedata.normalize("NFC", value).lower())


def fold(word: str) -> str:
    """Casefold and strip diacritics (the PostgreSQL lexeme form; unicode61 does this itself)."""
    decomposed = unicodedata.normalize("NFKD", word.casefold())
    return unicodedata.normalize("NFC", "".join(c for c in decomposed
                                                if not unicodedata.combining(c)))


# bytes.translate table: ASCII letters lowercased, ASCII digits kept, every other ASCII byte
# (punctuation, controls, "_") a space — all separators for unicode61 and for ``_WORD`` — and
# the bytes of non-ASCII UTF-8 sequences untouched.
_ASCII_SPLIT = bytes(c if (c >= 0x80 or chr(c).isdigit() or chr(c).islower())
                     else c + 32 if chr(c).isupper() else 0x20 for c in range(256))


def _chunks(value: str) -> dict[bytes, None]:
    """The distinct runs of ``value`` between ASCII separators, ASCII lowercased, in order of
    first appearance. C speed (encode, translate, split); a run is either a plain ASCII word or
    holds non-ASCII characters, whose splitting is left to the caller."""
    return dict.fromkeys(value.encode("utf-8", "surrogatepass").translate(_ASCII_SPLIT).split())


def tokenize(value: str) -> list[str]:
    """Index lexemes of a text (PostgreSQL) in order of first appearance, from each distinct
    word once (two words may still fold to one lexeme); a word may yield several after NFKD.

    Only distinct words are folded, and ASCII words (already lowercase letters and digits)
    are their own lexeme: folding every occurrence character by character cost ~10 ms of CPU
    per 40 KB message, more than everything else in a delivery. The text is first cut into
    distinct runs at ASCII separators in C (``_chunks``); only runs holding non-ASCII text go
    through ``words`` (the result is the same: a run is bounded by separators on both sides,
    and NFC never composes an ASCII separator into a letter or digit). 2.3 → 0.3 ms per
    37 KB of text.
    """
    out: list[str] = []
    folded: set[str] = set()
    for chunk in _chunks(value):
        if chunk.isascii():
            out.append(chunk[:MAX_TOKEN_CHARS].decode("ascii"))
            continue
        for w in words(chunk.decode("utf-8", "surrogatepass")):
            if w.isascii():
                out.append(w[:MAX_TOKEN_CHARS])
            elif w not in folded:
                folded.add(w)
                out.extend(t[:MAX_TOKEN_CHARS] for t in _WORD.findall(fold(w)))
    return list(dict.fromkeys(out))


def fts_body(value: str) -> str:
    """The body text as handed to FTS5: each distinct run between ASCII separators once.

    FTS5 sees exactly the same set of tokens (the dropped characters are separators for
    unicode61 too, and its case folding makes the ASCII lowercasing a no-op), but no repeated
    occurrences: queries here are token-prefix matches without phrases, positions or ranking
    (module docstring), so repetitions bought nothing but tokenizing and posting-list work in
    the writer, ~1 ms per 37 KB body.
    """
    runs = set(value.encode("utf-8", "surrogatepass").translate(_ASCII_SPLIT).split())
    # a set (not _chunks' first-appearance order: FTS5 keeps no positions we use), sorted so
    # that the same text always gives the same column: ~40% less CPU on a 50 KB body
    return b" ".join(sorted(runs)).decode("utf-8", "surrogatepass")


def _fts5_string(word: str) -> str:
    return '"' + word.replace('"', '""') + '"'


def _ts_lexeme(word: str) -> str:
    # tsvector/tsquery literal: single quotes, quote and backslash escaped
    return "'" + word.replace("\\", "\\\\").replace("'", "''") + "'"


def _addresses_text(items: Iterable[Address]) -> str:
    return ", ".join(f"{a.name} <{a.email}>" if a.name else a.email for a in items)


def _attachment_names(parsed: ParsedMessage) -> list[str]:
    if parsed.structure is None:
        return []
    return [p.filename for p in parsed.structure.walk() if p.filename]


def _tsvector_literal(weighted: list[tuple[str, Iterable[str]]]) -> str:
    """A tsvector literal: each lexeme with one position per weight (A=1, B=2, C=3, D=4)."""
    positions = {"A": 1, "B": 2, "C": 3, "D": 4}
    lexemes: dict[str, set[str]] = {}
    size = 0
    for weight, tokens in weighted:
        for tok in tokens:
            ws = lexemes.get(tok)
            if ws is None:
                size += len(tok.encode()) + 16  # entry header and up to 4 positions
                if size > MAX_TSV_BYTES:
                    break
                lexemes[tok] = ws = set()
            ws.add(weight)
    parts = []
    for tok, ws in lexemes.items():
        pos = ",".join(f"{positions[w]}{w if w != 'D' else ''}" for w in sorted(ws))
        parts.append(f"{_ts_lexeme(tok)}:{pos}")
    return " ".join(parts)


# --------------------------------------------------------------------------------------------
# Index maintenance
# --------------------------------------------------------------------------------------------

def _rowid(account_id: int, email_id: int) -> int:
    return (account_id << 32) | email_id


_SQL_FTS_INSERT = ("INSERT INTO email_fts (rowid, " + ", ".join(_FTS_COLUMNS) + ") VALUES (?, "
                   + ", ".join("?" for _ in _FTS_COLUMNS) + ")")
_SQL_PG_INDEX = (
    "INSERT INTO email_search (account_id, email_id, tsv, " + ", ".join(_SUMMARY_COLUMNS)
    + ") VALUES (?, ?, CAST(CAST(? AS TEXT) AS tsvector), "
    + ", ".join("?" for _ in _SUMMARY_COLUMNS)
    + ") ON CONFLICT (account_id, email_id) DO UPDATE SET "
    + ", ".join(f"{c} = EXCLUDED.{c}" for c in ("tsv", *_SUMMARY_COLUMNS)))


def index_content(dialect: str, parsed: ParsedMessage) -> tuple[tuple[str, ...], str]:
    """What the index holds for a message whatever its account: (the lowercased summary
    columns, the FTS5 body or the tsvector literal). The ingest path computes it before it
    queues for the writer, once for all recipients, so the tokenizing is not done while the
    write lock is held."""
    fields = {
        "subject": parsed.subject, "from": _addresses_text(parsed.from_),
        "to": _addresses_text(parsed.to), "cc": _addresses_text(parsed.cc),
        "bcc": _addresses_text(parsed.bcc), "reply-to": _addresses_text(parsed.reply_to),
        "sender": _addresses_text(parsed.sender),
    }
    summary = tuple(_clean(fields[f].lower()) for f in _COLUMN_OF)
    names = [n for n in _attachment_names(parsed) if n not in parsed.search_text]
    body = _clean("\n".join([parsed.search_text, *names]))
    if dialect == "sqlite":
        return summary, fts_body(body)
    weighted: list[tuple[str, Iterable[str]]] = [("A", tokenize(fields["subject"]))]
    for f in _ADDRESS_FIELDS:
        toks = tokenize(fields[f])
        weighted.append(("B", toks))
        if f in _PG_TAG:
            weighted.append(("C", [_PG_TAG[f] + t for t in toks]))
    weighted.append(("D", tokenize(body)))
    return summary, _tsvector_literal(weighted)


def index_params(dialect: str, account_id: int, email_id: int, parsed: ParsedMessage,
                 content: tuple[tuple[str, ...], str] | None = None) -> tuple:
    """The parameters of ``INDEX_SQL[dialect]`` for one email (the group commit of the ingest
    path collects them and writes a whole batch with one executemany). ``content``: the
    message's ``index_content`` if already computed."""
    summary, document = content if content is not None else index_content(dialect, parsed)
    if dialect == "sqlite":
        return (_rowid(account_id, email_id), *summary, document)
    return (account_id, email_id, document, *summary)


INDEX_SQL = {"sqlite": _SQL_FTS_INSERT, "postgresql": _SQL_PG_INDEX}


async def index_email(conn: AsyncConnection, dialect: str, account_id: int, email_id: int,
                      parsed: ParsedMessage, *, fresh: bool = False,
                      content: tuple[tuple[str, ...], str] | None = None) -> None:
    """Index one email (or replace its index entry). Call inside the delivery transaction.

    ``fresh``: the email id was just allocated (ids are never reused within an account, and
    account deletion drops the account's rows), so there is no old entry to delete.
    Driver SQL (``mailserver.store.engine.DriverSQL``): this is on the ingest hot path.
    """
    from mailserver.store.engine import driver_sql

    sql = driver_sql(conn)
    if dialect == "sqlite" and not fresh:
        await sql.execute("DELETE FROM email_fts WHERE rowid = ?", (_rowid(account_id, email_id),))
    await sql.execute(INDEX_SQL[dialect],
                      index_params(dialect, account_id, email_id, parsed, content))


async def unindex_emails(conn: AsyncConnection, dialect: str, account_id: int,
                         email_ids: Iterable[int]) -> None:
    """Remove emails from the index (expunge / destroy), in the same transaction."""
    ids = sorted(set(email_ids))
    if not ids:
        return
    for i in range(0, len(ids), 500):
        chunk = ids[i:i + 500]
        if dialect == "sqlite":
            await conn.execute(delete(_fts).where(
                _fts.c.rowid.in_([_rowid(account_id, e) for e in chunk])))
        else:
            await conn.execute(delete(_pgs).where(
                _pgs.c.account_id == account_id, _pgs.c.email_id.in_(chunk)))


async def unindex_account(conn: AsyncConnection, dialect: str, account_id: int) -> None:
    """Drop every index row of an account (account deletion) in one statement."""
    if dialect == "sqlite":
        base = account_id << 32
        await conn.execute(delete(_fts).where(_fts.c.rowid.between(base, base + 0xFFFFFFFF)))
    else:
        await conn.execute(delete(_pgs).where(_pgs.c.account_id == account_id))


# --------------------------------------------------------------------------------------------
# Criteria
# --------------------------------------------------------------------------------------------

class SearchError(ValueError):
    """A criteria tree we refuse (the protocol layer answers BAD / invalidArguments)."""


class SearchTooComplex(SearchError):
    pass


class UnsupportedCriterion(SearchError):
    pass


@dataclass(frozen=True, slots=True)
class All:
    pass


@dataclass(frozen=True, slots=True)
class And:
    items: tuple["Criterion", ...]

    def __init__(self, *items: Any) -> None:
        object.__setattr__(self, "items", _items(items))


@dataclass(frozen=True, slots=True)
class Or:
    items: tuple["Criterion", ...]

    def __init__(self, *items: Any) -> None:
        object.__setattr__(self, "items", _items(items))


def _items(items: tuple[Any, ...]) -> tuple[Any, ...]:
    # And(a, b) and And([a, b]) both work
    if len(items) == 1 and isinstance(items[0], (list, tuple)):
        return tuple(items[0])
    return tuple(items)


@dataclass(frozen=True, slots=True)
class Not:
    item: "Criterion"


@dataclass(frozen=True, slots=True)
class Text:
    field: str  # one of TEXT_FIELDS
    value: str


@dataclass(frozen=True, slots=True)
class Header:
    name: str
    value: str


@dataclass(frozen=True, slots=True)
class Keyword:
    keyword: str
    present: bool = True


@dataclass(frozen=True, slots=True)
class Date:
    field: str  # "received" | "sent"
    op: str  # "before" | "on" | "since"
    day: int | _dt.date  # any epoch second of the (UTC) day, or a date


@dataclass(frozen=True, slots=True)
class Size:
    op: str  # "larger" | "smaller"
    n: int


@dataclass(frozen=True, slots=True)
class Uid:
    """UIDs in the searched mailbox: inclusive (lo, hi) ranges (IMAP "*" resolved by the caller)."""

    ranges: tuple[tuple[int, int], ...]

    @classmethod
    def of(cls, uids: Iterable[int]) -> "Uid":
        return cls(tuple((u, u) for u in sorted(set(uids))))


@dataclass(frozen=True, slots=True)
class EmailIds:
    ids: frozenset[int]

    def __init__(self, ids: Iterable[int]) -> None:
        object.__setattr__(self, "ids", frozenset(ids))


@dataclass(frozen=True, slots=True)
class InMailbox:
    mailbox_id: int


@dataclass(frozen=True, slots=True)
class InThread:
    thread_id: int


@dataclass(frozen=True, slots=True)
class HasAttachment:
    value: bool = True


Criterion = Union[All, And, Or, Not, Text, Header, Keyword, Date, Size, Uid, EmailIds,
                  InMailbox, InThread, HasAttachment]


@dataclass(frozen=True, slots=True)
class SortKey:
    """field: received, sent, size, subject, from, to, id, uid (uid needs a mailbox)."""

    field: str
    descending: bool = False


HeaderFetcher = Callable[[int], "bytes | Awaitable[bytes]"]

_STORED_HEADERS = {"message-id": "message_id", "in-reply-to": "in_reply_to",
                   "references": "references"}


# --------------------------------------------------------------------------------------------
# Compilation
# --------------------------------------------------------------------------------------------

def _like_pattern(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _day_start(day: int | _dt.date) -> int:
    if isinstance(day, _dt.date):
        return int(_dt.datetime(day.year, day.month, day.day, tzinfo=_dt.UTC).timestamp())
    return int(day) - int(day) % 86400


class _Compiler:
    def __init__(self, dialect: str, account_id: int, in_mailbox: bool,
                 header_matches: dict[Header, frozenset[int]],
                 resolved_uids: dict[Uid, list[int]] | None = None) -> None:
        self.resolved_uids = resolved_uids or {}
        self.dialect = dialect
        self.account_id = account_id
        self.in_mailbox = in_mailbox
        self.header_matches = header_matches
        self.e = schema.emails
        self.mm = schema.mailbox_messages

    def compile(self, c: Criterion, depth: int = 0) -> ColumnElement[bool]:
        e = self.e
        if isinstance(c, All):
            return true()
        if isinstance(c, And):
            return _balanced(and_, [self.compile(i, depth + 1) for i in c.items], true())
        if isinstance(c, Or):
            return _balanced(or_, [self.compile(i, depth + 1) for i in c.items], false())
        if isinstance(c, Not):
            return not_(self.compile(c.item, depth + 1))
        if isinstance(c, Text):
            return self._text(c.field, c.value)
        if isinstance(c, Header):
            return self._header(c)
        if isinstance(c, Keyword):
            kw = c.keyword.lower()
            if not kw or "\x00" in kw or any(ch.isspace() for ch in kw):
                cond: ColumnElement[bool] = false()  # cannot be a stored keyword
            else:
                padded = literal(" ") + e.c.keywords + literal(" ")
                cond = padded.like(_like_pattern(" " + kw + " "), escape="\\")
            return cond if c.present else not_(cond)
        if isinstance(c, Date):
            if c.field == "received":
                col = e.c.received_at
            elif c.field == "sent":
                col = func.coalesce(e.c.sent_at, e.c.received_at)
            else:
                raise SearchError(f"unknown date field {c.field!r}")
            start = _day_start(c.day)
            if c.op == "before":
                return col < start
            if c.op == "on":
                return and_(col >= start, col < start + 86400)
            if c.op == "since":
                return col >= start
            raise SearchError(f"unknown date operator {c.op!r}")
        if isinstance(c, Size):
            if c.op == "larger":
                return e.c.size > c.n
            if c.op == "smaller":
                return e.c.size < c.n
            raise SearchError(f"unknown size operator {c.op!r}")
        if isinstance(c, Uid):
            if not self.in_mailbox:
                raise SearchError("Uid criterion needs a mailbox")
            if c in self.resolved_uids:
                return _id_in(self.mm.c.uid, self.resolved_uids[c])
            ranges = _merge_ranges(c.ranges)
            singles = [lo for lo, hi in ranges if lo == hi]
            spans = [(lo, hi) for lo, hi in ranges if lo != hi]
            parts = [_id_in(self.mm.c.uid, singles)] if singles else []
            if spans:
                # plain integers rendered as SQL text: SQLAlchemy takes seconds to compile
                # thousands of BETWEENs, a string join takes microseconds
                parts.append(literal_column(_balanced_sql(
                    [f"mailbox_messages.uid BETWEEN {lo} AND {hi}" for lo, hi in spans], "OR"),
                    Boolean()))
            return or_(false(), *parts)
        if isinstance(c, EmailIds):
            return _id_in(e.c.id, c.ids)
        if isinstance(c, InMailbox):
            m2 = self.mm.alias("m2")
            return (select(literal(1)).select_from(m2)
                    .where(m2.c.account_id == e.c.account_id, m2.c.email_id == e.c.id,
                           m2.c.mailbox_id == c.mailbox_id).exists())
        if isinstance(c, InThread):
            return e.c.thread_id == c.thread_id
        if isinstance(c, HasAttachment):
            return e.c.has_attachment == bool(c.value)
        raise SearchError(f"unknown criterion {type(c).__name__}")

    # ---- full text ----------------------------------------------------------------------

    def _ids_where(self, cond: ColumnElement[bool], fts_only: bool = False) -> ColumnElement[bool]:
        """emails.id IN (ids of this account's index rows satisfying cond)."""
        if self.dialect == "sqlite":
            base = self.account_id << 32
            sub = (select(_fts.c.rowid - base).select_from(_fts)
                   .where(_fts.c.rowid.between(base, base + 0xFFFFFFFF), cond))
        else:
            sub = select(_pgs.c.email_id).where(_pgs.c.account_id == self.account_id, cond)
        return self.e.c.id.in_(sub)

    def _text(self, field: str, value: str) -> ColumnElement[bool]:
        if field not in TEXT_FIELDS:
            raise SearchError(f"unknown text field {field!r}")
        value = _clean(value)
        if value == "":
            return true()
        ws = [w[:MAX_TOKEN_CHARS] for w in words(value)[:MAX_QUERY_WORDS]]
        parts: list[ColumnElement[bool]] = []
        if ws:
            parts.append(self._ids_where(self._fts_match(field, ws)))
        if field == "text":
            like_cols: tuple[str, ...] = _SUMMARY_COLUMNS
        elif field == "addresses":
            like_cols = _ADDRESS_COLUMNS
        elif field == "body":
            like_cols = ()
        else:
            like_cols = (_COLUMN_OF[field],)
        if like_cols:
            parts.append(self._substring(like_cols, value))
        return or_(false(), *parts)

    def _fts_match(self, field: str, ws: list[str]) -> ColumnElement[bool]:
        if self.dialect == "sqlite":
            expr = " AND ".join(_fts5_string(w) + "*" for w in ws)
            if field == "text":
                query = expr
            else:
                if field == "body":
                    cols = ["body"]
                elif field == "addresses":
                    cols = list(_ADDRESS_COLUMNS)
                else:
                    cols = [_COLUMN_OF[field]]
                query = "{" + " ".join(cols) + "} : (" + expr + ")"
            return _fts.c.email_fts.op("MATCH")(literal(query, SAText()))
        weights = {"text": "ABD", "subject": "A", "addresses": "B", "body": "D"}.get(field, "C")
        tag = _PG_TAG.get(field, "")
        lexemes = []
        for w in ws:
            for t in _WORD.findall(fold(w)):
                t = t[:MAX_TOKEN_CHARS]
                lexemes.append(f"{_ts_lexeme(tag + t)}:*{weights}")
        if not lexemes:
            return false()
        q = cast(literal(" & ".join(lexemes), SAText()), _TSQuery())
        return _pgs.c.tsv.op("@@")(q)

    def _substring(self, cols: Iterable[str], value: str) -> ColumnElement[bool]:
        pattern = _like_pattern(_clean(value).lower())
        table = _fts if self.dialect == "sqlite" else _pgs
        cond = or_(*(table.c[c].like(literal(pattern, SAText()), escape="\\") for c in cols))
        return self._ids_where(cond)

    def _header(self, c: Header) -> ColumnElement[bool]:
        name = c.name.lower()
        if name in _COLUMN_OF:
            if c.value == "":
                return true()
            return self._substring((_COLUMN_OF[name],), c.value)
        if name in _STORED_HEADERS:
            value = _clean(c.value).strip()
            if name == "message-id":
                value = value.strip("<>")
            if value == "":
                return true()
            col = self.e.c[_STORED_HEADERS[name]]
            return col.ilike(_like_pattern(value), escape="\\")
        ids = self.header_matches.get(c)
        if ids is None:
            raise UnsupportedCriterion(f"header {c.name!r} cannot be searched without the blob")
        return _id_in(self.e.c.id, ids)


# --------------------------------------------------------------------------------------------
# Criteria straight to SQL text (the common path on both engines)
# --------------------------------------------------------------------------------------------

FAST_SQL = True  # the SQL-text path below; tests turn it off to compare with the general one


class _Fallback(Exception):
    """Something the SQL-text compiler leaves to ``_Compiler`` (which also owns the errors)."""


_ESC = " ESCAPE '\\'"
_DATE_COL = {"received": "emails.received_at",
             "sent": "coalesce(emails.sent_at, emails.received_at)"}
_SORT_SQL = {"received": "emails.received_at", "sent": _DATE_COL["sent"], "size": "emails.size",
             "subject": "emails.sort_subject", "from": "emails.sort_from",
             "to": "emails.sort_to", "id": "emails.id"}
_STORED_SQL = {"message-id": 'emails."message_id"', "in-reply-to": 'emails."in_reply_to"',
               "references": 'emails."references"'}
_FTS_FILTER = {"body": "{body} : (", "addresses": "{" + " ".join(_ADDRESS_COLUMNS) + "} : (",
               **{f: "{" + col + "} : (" for f, col in _COLUMN_OF.items()}}
_PG_WEIGHTS = {"text": "ABD", "subject": "A", "addresses": "B", "body": "D"}
_SQL_MM_FROM = ("SELECT mailbox_messages.uid, emails.id FROM mailbox_messages JOIN emails "
                "ON emails.account_id = mailbox_messages.account_id "
                "AND emails.id = mailbox_messages.email_id "
                "WHERE mailbox_messages.account_id = ? AND mailbox_messages.mailbox_id = ? AND ")
_SQL_E_FROM = "SELECT emails.id FROM emails WHERE emails.account_id = ? AND "


def _flat(c: Any, kind: type) -> list[Any]:
    out: list[Any] = []
    for i in c.items:
        if type(i) is kind:
            out.extend(_flat(i, kind))
        else:
            out.append(i)
    return out


class _SqlText:
    """The SQL of ``_Compiler`` as plain text with ``?`` parameters, run through the driver
    (``engine.driver_sql``: sqlite3 itself, asyncpg with ``$n``).

    Why: building and compiling the SQLAlchemy expression was over half of the server CPU of
    an IMAP ``UID SEARCH UNSEEN SUBJECT "x"`` on SQLite (~1.5 of ~3 ms); joining strings takes
    tens of microseconds. The SQL is the one ``_Compiler`` produces for the dialect (same
    subqueries, same NULL behaviour, so the same plans and results; nested ANDs/ORs spliced
    and NOT NOT dropped as SQLAlchemy does); tests/store/test_search_fast.py compares the two
    paths on a varied corpus on both engines. User text only ever travels as a parameter;
    integers (ids, UIDs, days) are rendered after ``int()``.
    Anything unusual (an unknown field or operator, a blob header without its matches, a sort
    by uid without a mailbox) raises ``_Fallback`` and the general compiler handles it,
    errors included.
    """

    def __init__(self, dialect: str, account_id: int, in_mailbox: bool,
                 header_matches: dict[Header, frozenset[int]],
                 resolved_uids: dict[Uid, list[int]]) -> None:
        self.sqlite = dialect == "sqlite"
        # the account's index rows: parameters, so that the SQL of one criteria shape is the
        # same for every account (the drivers' prepared-statement caches are keyed by it)
        if self.sqlite:
            base = int(account_id) << 32
            self.sub_sql = ("emails.id IN (SELECT email_fts.rowid - ? FROM email_fts "
                            "WHERE email_fts.rowid BETWEEN ? AND ? AND ")
            self.sub_params: tuple[int, ...] = (base, base, base + 0xFFFFFFFF)
            self.true, self.false, self.index = "1", "0", "email_fts"
        else:
            self.sub_sql = ("emails.id IN (SELECT email_search.email_id FROM email_search "
                            "WHERE email_search.account_id = ? AND ")
            self.sub_params = (int(account_id),)
            self.true, self.false, self.index = "true", "false", "email_search"
        self.in_mailbox = in_mailbox
        self.header_matches = header_matches
        self.resolved_uids = resolved_uids
        self.params: list[Any] = []

    def _sub(self) -> str:
        """The start of an ``emails.id IN (index rows of the account …)`` subquery."""
        self.params.extend(self.sub_params)
        return self.sub_sql

    def _ids(self, col: str, ids: Iterable[int]) -> str:
        values = sorted({int(i) for i in ids})
        if not values:
            return self.false
        return f"{col} IN ({','.join(map(str, values))})"

    def compile(self, c: Any) -> str:
        t = type(c)
        if t is And or t is Or:
            # nested ANDs in an AND (ORs in an OR) are spliced in, like SQLAlchemy does:
            # SQLite's parser stack overflows at ~100 levels of parentheses
            items = _flat(c, t)
            if not items:
                return self.true if t is And else self.false
            return _balanced_sql([self.compile(i) for i in items], "AND" if t is And else "OR")
        if t is Not:
            inner, negate = c.item, True
            while type(inner) is Not:  # NOT NOT x is x (NULL too)
                inner, negate = inner.item, not negate
            sql = self.compile(inner)
            if not negate:
                return sql
            return "NOT " + sql if type(inner) in (And, Or) else f"NOT ({sql})"
        if t is All:
            return self.true
        if t is Keyword:
            kw = c.keyword.lower()
            if not kw or "\x00" in kw or any(ch.isspace() for ch in kw):
                return self.false if c.present else self.true
            self.params.append(_like_pattern(" " + kw + " "))
            cond = "(' ' || emails.keywords || ' ') LIKE ?" + _ESC
            return cond if c.present else f"NOT ({cond})"
        if t is Text:
            return self._text(c.field, c.value)
        if t is Header:
            return self._header(c)
        if t is Date:
            col = _DATE_COL.get(c.field)
            if col is None or c.op not in ("before", "on", "since"):
                raise _Fallback
            start = _day_start(c.day)
            if c.op == "before":
                return f"{col} < {start}"
            if c.op == "since":
                return f"{col} >= {start}"
            return f"({col} >= {start} AND {col} < {start + 86400})"
        if t is Size:
            if c.op not in ("larger", "smaller") or type(c.n) is not int:
                raise _Fallback
            return f"emails.size > {c.n}" if c.op == "larger" else f"emails.size < {c.n}"
        if t is Uid:
            if not self.in_mailbox:
                raise _Fallback
            if c in self.resolved_uids:
                return self._ids("mailbox_messages.uid", self.resolved_uids[c])
            ranges = _merge_ranges(c.ranges)
            singles = [lo for lo, hi in ranges if lo == hi]
            parts = [self._ids("mailbox_messages.uid", singles)] if singles else []
            parts += [f"mailbox_messages.uid BETWEEN {lo} AND {hi}"
                      for lo, hi in ranges if lo != hi]
            return _balanced_sql(parts, "OR") if parts else self.false
        if t is EmailIds:
            return self._ids("emails.id", c.ids)
        if t is InMailbox:
            return ("EXISTS (SELECT 1 FROM mailbox_messages AS m2 "
                    "WHERE m2.account_id = emails.account_id AND m2.email_id = emails.id "
                    f"AND m2.mailbox_id = {int(c.mailbox_id)})")
        if t is InThread:
            return f"emails.thread_id = {int(c.thread_id)}"
        if t is HasAttachment:
            return "emails.has_attachment = " + (self.true if c.value else self.false)
        raise _Fallback

    def _text(self, field: str, value: str) -> str:
        if field not in TEXT_FIELDS:
            raise _Fallback
        value = _clean(value)
        if value == "":
            return self.true
        ws = [w[:MAX_TOKEN_CHARS] for w in words(value)[:MAX_QUERY_WORDS]]
        parts: list[str] = []
        if ws:
            parts.append(self._fts_match(field, ws))
        if field == "text":
            like_cols: tuple[str, ...] = _SUMMARY_COLUMNS
        elif field == "addresses":
            like_cols = _ADDRESS_COLUMNS
        elif field == "body":
            like_cols = ()
        else:
            like_cols = (_COLUMN_OF[field],)
        if like_cols:
            parts.append(self._substring(like_cols, value))
        if not parts:
            return self.false
        return parts[0] if len(parts) == 1 else "(" + " OR ".join(parts) + ")"

    def _fts_match(self, field: str, ws: list[str]) -> str:
        if self.sqlite:
            expr = " AND ".join(_fts5_string(w) + "*" for w in ws)
            sql = self._sub() + "email_fts MATCH ?)"
            self.params.append(expr if field == "text" else _FTS_FILTER[field] + expr + ")")
            return sql
        weights = _PG_WEIGHTS.get(field, "C")
        tag = _PG_TAG.get(field, "")
        lexemes = [f"{_ts_lexeme(tag + t[:MAX_TOKEN_CHARS])}:*{weights}"
                   for w in ws for t in _WORD.findall(fold(w))]
        if not lexemes:
            return self.false
        sql = self._sub() + "email_search.tsv @@ CAST(CAST(? AS TEXT) AS TSQUERY))"
        self.params.append(" & ".join(lexemes))
        return sql

    def _substring(self, cols: tuple[str, ...], value: str) -> str:
        pattern = _like_pattern(_clean(value).lower())
        sql = self._sub()
        self.params.extend(pattern for _ in cols)
        return sql + "(" + " OR ".join(f"{self.index}.{c} LIKE ?{_ESC}" for c in cols) + "))"

    def _header(self, c: Header) -> str:
        name = c.name.lower()
        if name in _COLUMN_OF:
            if c.value == "":
                return self.true
            return self._substring((_COLUMN_OF[name],), c.value)
        if name in _STORED_SQL:
            value = _clean(c.value).strip()
            if name == "message-id":
                value = value.strip("<>")
            if value == "":
                return self.true
            self.params.append(_like_pattern(value))
            if self.sqlite:  # what SQLAlchemy's ilike() is on each engine
                return f"lower({_STORED_SQL[name]}) LIKE lower(?){_ESC}"
            return f"{_STORED_SQL[name]} ILIKE ?{_ESC}"
        ids = self.header_matches.get(c)
        if ids is None:
            raise _Fallback
        return self._ids("emails.id", ids)


def _text_statement(dialect: str, account_id: int, criteria: Any, mailbox_id: int | None,
                    sort: Sequence[SortKey] | None, limit: int | None,
                    header_matches: dict[Header, frozenset[int]],
                    resolved_uids: dict[Uid, list[int]]) -> tuple[str, tuple]:
    """(SQL with ``?`` parameters, parameters) of ``search``'s statement; ``_Fallback`` when
    the criteria or the sort are not covered."""
    comp = _SqlText(dialect, account_id, mailbox_id is not None, header_matches, resolved_uids)
    if mailbox_id is not None:
        comp.params += [account_id, mailbox_id]
        head, tiebreak = _SQL_MM_FROM, "mailbox_messages.uid"
    else:
        comp.params.append(account_id)
        head, tiebreak = _SQL_E_FROM, "emails.id"
    try:
        cond = comp.compile(criteria)
    except (TypeError, ValueError) as exc:  # a malformed value: the general path's answer
        raise _Fallback from exc
    order = []
    for key in sort or ():
        if key.field == "uid":
            if mailbox_id is None:
                raise _Fallback
            col = "mailbox_messages.uid"
        else:
            col = _SORT_SQL.get(key.field)
            if col is None:
                raise _Fallback
        order.append(col + (" DESC" if key.descending else " ASC"))
    if not any(k.field in ("uid", "id") for k in sort or ()):
        order.append(tiebreak + " ASC")
    sql = head + cond + " ORDER BY " + ", ".join(order)
    if limit is not None:
        if type(limit) is not int:
            raise _Fallback
        sql += f" LIMIT {limit}"
    return sql, tuple(comp.params)

class _Paren(ColumnElement[bool]):
    """A boolean expression always rendered in parentheses (SQLAlchemy drops them around an
    OR inside an OR, which is what _balanced needs)."""

    inherit_cache = True
    _traverse_internals = [("clause", InternalTraversal.dp_clauseelement)]
    type = Boolean()

    def __init__(self, clause: ColumnElement[bool]) -> None:
        self.clause = clause


@compiles(_Paren)
def _compile_paren(element: _Paren, compiler: Any, **kw: Any) -> str:
    return "(" + compiler.process(element.clause, **kw) + ")"


def _balanced(op: Any, items: list[Any], empty: Any, fan: int = 32) -> Any:
    """op(*items) as a tree of parenthesised groups: SQLite parses a flat chain of n ANDs/ORs
    as an expression n deep and refuses depth > 1000."""
    if not items:
        return empty
    while len(items) > fan:
        items = [_Paren(op(*items[i:i + fan])) for i in range(0, len(items), fan)]
    return op(*items) if len(items) > 1 else items[0]


def _balanced_sql(items: list[str], op: str, fan: int = 32) -> str:
    while len(items) > fan:
        items = ["(" + f" {op} ".join(items[i:i + fan]) + ")"
                 for i in range(0, len(items), fan)]
    return "(" + f" {op} ".join(items) + ")"


def _merge_ranges(ranges: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sorted, overlapping and adjacent ranges merged; ints checked (they end up in SQL text)."""
    out: list[tuple[int, int]] = []
    for lo, hi in sorted((min(int(a), int(b)), max(int(a), int(b))) for a, b in ranges):
        if out and lo <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return out


def _id_in(col: Any, ids: Iterable[int]) -> ColumnElement[bool]:
    values = sorted({int(i) for i in ids})
    if not values:
        return false()
    return col.in_(bindparam(None, values, type_=BigInteger(), expanding=True,
                             literal_execute=True))


def _check(c: Any, depth: int, counter: list[int]) -> None:
    if depth > MAX_DEPTH:
        raise SearchTooComplex(f"criteria nested deeper than {MAX_DEPTH}")
    counter[0] += 1
    if counter[0] > MAX_NODES:
        raise SearchTooComplex(f"more than {MAX_NODES} criteria")
    if isinstance(c, (And, Or)):
        for i in c.items:
            _check(i, depth + 1, counter)
    elif isinstance(c, Not):
        _check(c.item, depth + 1, counter)


def _blob_headers(c: Any, out: list[Header]) -> None:
    if isinstance(c, (And, Or)):
        for i in c.items:
            _blob_headers(i, out)
    elif isinstance(c, Not):
        _blob_headers(c.item, out)
    elif isinstance(c, Header):
        name = c.name.lower()
        if name not in _COLUMN_OF and name not in _STORED_HEADERS and c not in out:
            out.append(c)


def _header_values(raw: bytes, name: str) -> list[str]:
    try:
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        return [str(v) for v in (msg.get_all(name) or [])]
    except Exception:  # noqa: BLE001 - broken headers: fall back to the raw text
        msg = email.message_from_bytes(raw, policy=email.policy.compat32)
        return [str(v) for v in (msg.get_all(name) or [])]


async def search(conn: AsyncConnection, dialect: str, account_id: int, criteria: Criterion, *,
                 mailbox_id: int | None = None, sort: Sequence[SortKey] | None = None,
                 limit: int | None = None,
                 fetch_header: HeaderFetcher | None = None) -> list[Any]:
    """Emails of one account matching ``criteria``.

    Without ``mailbox_id``: a list of email ids (default order: id ascending). With it: a list of
    ``(uid, email_id)`` for that mailbox's messages (default order: uid ascending). ``sort``
    overrides the order (ties broken by uid / id); ``limit`` caps the result.
    """
    _check(criteria, 0, [0])
    header_matches: dict[Header, frozenset[int]] = {}
    blob_headers: list[Header] = []
    _blob_headers(criteria, blob_headers)
    if blob_headers:
        if fetch_header is None:
            raise UnsupportedCriterion(
                f"header {blob_headers[0].name!r} cannot be searched without the blob")
        # Narrow the candidates with the top-level conjuncts SQL can evaluate, then read the
        # header blocks of those only.
        top = criteria.items if isinstance(criteria, And) else (criteria,)
        pure = [i for i in top if not _has_blob_header(i)]
        candidates = await search(conn, dialect, account_id, And(pure), mailbox_id=mailbox_id)
        if mailbox_id is not None:
            candidates = [row[1] for row in candidates]
        raw_headers: dict[int, bytes] = {}
        for email_id in candidates:
            raw = fetch_header(email_id)
            if inspect.isawaitable(raw):
                raw = await raw
            raw_headers[email_id] = raw  # type: ignore[assignment]
        for h in blob_headers:
            needle = h.value.casefold()
            header_matches[h] = frozenset(
                eid for eid, raw in raw_headers.items()
                if any(needle in v.casefold() for v in _header_values(raw, h.name)))

    resolved_uids: dict[Uid, list[int]] = {}
    wide = [u for u in _nodes(criteria, Uid)
            if sum(1 for lo, hi in _merge_ranges(u.ranges) if lo != hi) > MAX_SQL_SPANS]
    if wide and mailbox_id is not None:
        # Thousands of BETWEENs take SQLite seconds to plan: resolve such sets against the
        # mailbox's UIDs here (one index-only scan) and query the matching UIDs as a list.
        from mailserver.store.engine import driver_sql

        uids = [r[0] for r in await driver_sql(conn).fetch(
            "SELECT uid FROM mailbox_messages WHERE account_id = ? AND mailbox_id = ? "
            "ORDER BY uid", (account_id, mailbox_id))]
        for u in wide:
            matched: list[int] = []
            for lo, hi in _merge_ranges(u.ranges):
                matched.extend(uids[bisect.bisect_left(uids, lo):bisect.bisect_right(uids, hi)])
            resolved_uids[u] = matched
    if FAST_SQL:
        try:
            sql, params = _text_statement(dialect, account_id, criteria, mailbox_id, sort, limit,
                                          header_matches, resolved_uids)
        except _Fallback:
            pass
        else:
            from mailserver.store.engine import driver_sql

            rows = await driver_sql(conn).fetch(sql, params)
            if mailbox_id is not None:
                return [(r[0], r[1]) for r in rows]
            return [r[0] for r in rows]
    comp = _Compiler(dialect, account_id, mailbox_id is not None, header_matches,
                     resolved_uids)
    cond = comp.compile(criteria)
    e, mm = schema.emails, schema.mailbox_messages
    if mailbox_id is not None:
        stmt = (select(mm.c.uid, e.c.id)
                .select_from(mm.join(e, and_(e.c.account_id == mm.c.account_id,
                                             e.c.id == mm.c.email_id)))
                .where(mm.c.account_id == account_id, mm.c.mailbox_id == mailbox_id, cond))
        tiebreak = mm.c.uid
    else:
        stmt = select(e.c.id).where(e.c.account_id == account_id, cond)
        tiebreak = e.c.id
    order = []
    for key in sort or ():
        col = _sort_column(key.field, mailbox_id is not None)
        order.append(col.desc() if key.descending else col.asc())
    if not any(k.field in ("uid", "id") for k in sort or ()):
        order.append(tiebreak.asc())
    stmt = stmt.order_by(*order)
    if limit is not None:
        stmt = stmt.limit(limit)
    rows = (await conn.execute(stmt)).all()
    if mailbox_id is not None:
        return [(r[0], r[1]) for r in rows]
    return [r[0] for r in rows]


def _nodes(c: Any, kind: type) -> list[Any]:
    if isinstance(c, kind):
        return [c]
    if isinstance(c, (And, Or)):
        return [n for i in c.items for n in _nodes(i, kind)]
    if isinstance(c, Not):
        return _nodes(c.item, kind)
    return []


def _has_blob_header(c: Any) -> bool:
    out: list[Header] = []
    _blob_headers(c, out)
    return bool(out)


def _sort_column(field: str, in_mailbox: bool) -> Any:
    e = schema.emails
    columns = {
        "received": e.c.received_at, "sent": func.coalesce(e.c.sent_at, e.c.received_at),
        "size": e.c.size, "subject": e.c.sort_subject, "from": e.c.sort_from,
        "to": e.c.sort_to, "id": e.c.id,
    }
    if field == "uid":
        if not in_mailbox:
            raise SearchError("sorting by uid needs a mailbox")
        return schema.mailbox_messages.c.uid
    if field not in columns:
        raise SearchError(f"unknown sort field {field!r}")
    return columns[field]
