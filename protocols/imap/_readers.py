"""Parse one complete command (text with its literals) into a typed ``Command`` event.

The framing (lines, literals, limits) lives in ``connection.py``; this module sees the
command text with every ``{n}`` marker still in place and the literal bytes keyed by the
offset just after each marker.
"""

from __future__ import annotations

import binascii
import datetime
import re
from collections.abc import Callable

from protocols.imap import _abnf, _events as ev, mutf7
from protocols.imap.values import (
    AppendMessage,
    FetchAttribute,
    ListParams,
    QresyncParams,
    SearchKey,
    Section,
    SeqRange,
    SequenceSet,
    SortCriterion,
)


class ImapParseError(Exception):
    """Malformed command; becomes a ``BadCommand`` event (never escapes the connection)."""

    def __init__(self, text: str, code: str | None = None, status: str = "BAD") -> None:
        super().__init__(text)
        self.text = text
        self.code = code
        self.status = status


SYSTEM_FLAGS = {
    f.upper(): f for f in ("\\Seen", "\\Answered", "\\Flagged", "\\Deleted", "\\Draft", "\\Recent")
}
STATUS_ITEMS = frozenset(
    {
        "MESSAGES",
        "UIDNEXT",
        "UIDVALIDITY",
        "UNSEEN",
        "DELETED",
        "SIZE",
        "RECENT",
        "HIGHESTMODSEQ",
        "APPENDLIMIT",
        "MAILBOXID",
    }
)
SEARCH_RETURN_OPTS = frozenset({"MIN", "MAX", "ALL", "COUNT", "SAVE"})
SORT_KEYS = frozenset(
    {"ARRIVAL", "CC", "DATE", "FROM", "SIZE", "SUBJECT", "TO", "DISPLAYFROM", "DISPLAYTO"}
)
KNOWN_CHARSETS = {"UTF-8": "utf-8", "US-ASCII": "ascii", "ISO-8859-1": "latin-1"}
MAX_SEARCH_DEPTH = 32

# fetch macros, RFC 9051 §6.4.5
_F = FetchAttribute
FETCH_MACROS = {
    "ALL": (_F("FLAGS"), _F("INTERNALDATE"), _F("RFC822.SIZE"), _F("ENVELOPE")),
    "FAST": (_F("FLAGS"), _F("INTERNALDATE"), _F("RFC822.SIZE")),
    "FULL": (_F("FLAGS"), _F("INTERNALDATE"), _F("RFC822.SIZE"), _F("ENVELOPE"), _F("BODY")),
}
SIMPLE_FETCH_ATTS = frozenset(
    {
        "ENVELOPE",
        "FLAGS",
        "INTERNALDATE",
        "RFC822",
        "RFC822.HEADER",
        "RFC822.SIZE",
        "RFC822.TEXT",
        "BODY",
        "BODYSTRUCTURE",
        "UID",
        "MODSEQ",
        "EMAILID",
        "THREADID",
        "PREVIEW",
        "SAVEDATE",
    }
)


class Cursor:
    """Recursive-descent reader over one command's text."""

    def __init__(
        self,
        text: bytes,
        literals: dict[int, tuple[bytes, bool]],
        utf8: bool = False,
        search_depth: int = MAX_SEARCH_DEPTH,
    ) -> None:
        self.text = text
        self.pos = 0
        self.literals = literals
        self.utf8 = utf8
        self.search_depth = search_depth

    # ---- primitives -----------------------------------------------------------------------
    def error(self, what: str) -> ImapParseError:
        if self.at_end():
            return ImapParseError(f"{what}, but the command ends at offset {self.pos}")
        near = self.text[self.pos : self.pos + 20].decode("ascii", "replace")
        return ImapParseError(f"{what} at offset {self.pos} near {near!r}")

    def at_end(self) -> bool:
        return self.pos >= len(self.text)

    def peek(self, n: int = 1) -> bytes:
        return self.text[self.pos : self.pos + n]

    def expect(self, token: bytes, what: str | None = None) -> None:
        if self.text[self.pos : self.pos + len(token)] != token:
            raise self.error(f"expected {what}" if what else f"expected {token.decode()!r}")
        self.pos += len(token)

    def sp(self) -> None:
        self.expect(b" ", "space")

    def try_sp(self) -> bool:
        if self.peek() == b" ":
            self.pos += 1
            return True
        return False

    def end(self) -> None:
        if not self.at_end():
            raise self.error("unexpected extra arguments")

    def match(self, rx) -> bytes | None:
        m = rx.match(self.text, self.pos)
        if not m:
            return None
        self.pos = m.end()
        return m.group(0)

    def atom(self, what: str = "atom") -> str:
        m = self.match(_abnf.atom)
        if m is None:
            raise self.error(f"expected {what}")
        return m.decode("ascii")

    def keyword(self) -> str:
        return self.atom("keyword").upper()

    def try_keyword(self, *words: str) -> str | None:
        m = _abnf.atom.match(self.text, self.pos)
        if m and m.group(0).decode("ascii").upper() in words:
            self.pos = m.end()
            return m.group(0).decode("ascii").upper()
        return None

    def number(self, limit: int = _abnf.NZ_NUMBER_MAX, nonzero: bool = False) -> int:
        m = self.match(_abnf.number)
        if m is None or len(m) > 20:
            raise self.error("expected number")
        value = int(m)
        if value > limit or (nonzero and value == 0):
            raise self.error("number out of range")
        return value

    def literal(self) -> tuple[bytes, bool] | None:
        m = _abnf.literal_marker.match(self.text, self.pos)
        if not m:
            return None
        if m.end() not in self.literals:
            raise self.error("literal must end the line")
        self.pos = m.end()
        return self.literals[m.end()]

    def quoted(self) -> bytes | None:
        if self.peek() != b'"':
            return None
        rx = _abnf.quoted_8bit if self.utf8 else _abnf.quoted_7bit
        m = rx.match(self.text, self.pos)
        if not m:
            raise self.error('invalid quoted string (only \\" and \\\\ escapes, no 8-bit)')
        self.pos = m.end()
        return _abnf.quoted_unescape.sub(rb"\1", m.group(1))

    def string_bytes(self) -> bytes:
        q = self.quoted()
        if q is not None:
            return q
        lit = self.literal()
        if lit is not None:
            if lit[1]:
                raise self.error("literal8 not allowed here")
            return lit[0]
        raise self.error("expected string")

    def astring_bytes(self) -> bytes:
        if self.peek() == b'"' or _abnf.literal_marker.match(self.text, self.pos):
            return self.string_bytes()
        m = self.match(_abnf.astring_atom)
        if m is None:
            raise self.error("expected astring")
        return m

    def decode_text(self, data: bytes, what: str = "string") -> str:
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            raise ImapParseError(f"{what} is not valid UTF-8") from None

    def astring(self, what: str = "string") -> str:
        return self.decode_text(self.astring_bytes(), what)

    def nstring_or_nil(self) -> str | None:
        if self.try_keyword("NIL"):
            return None
        return self.decode_text(self.string_bytes())

    def mailbox(self) -> str:
        return self.decode_mailbox(self.astring_bytes())

    def decode_mailbox(self, raw: bytes, pattern: bool = False) -> str:
        if self.utf8:
            name = self.decode_text(raw, "mailbox name")
            if any(ch < " " or ch == "\x7f" for ch in name):
                raise ImapParseError("control character in mailbox name")
        else:
            try:
                name = mutf7.decode(raw)
            except mutf7.Mutf7Error as exc:
                raise ImapParseError(f"invalid mailbox name: {exc}") from None
        # RFC 3501 §5.1: INBOX is case-insensitive
        if not pattern and name.upper() == "INBOX":
            return "INBOX"
        return name

    def list_mailbox(self) -> str:
        if self.peek() == b'"' or _abnf.literal_marker.match(self.text, self.pos):
            raw = self.string_bytes()
        else:
            raw = self.match(_abnf.list_mailbox_atom)
            if raw is None:
                raise self.error("expected mailbox pattern")
        return self.decode_mailbox(raw, pattern=True)

    def paren_list(self, item: Callable[[], object], allow_empty: bool = True) -> list:
        self.expect(b"(")
        out = []
        if self.peek() == b")":
            if not allow_empty:
                raise self.error("empty list")
            self.pos += 1
            return out
        while True:
            out.append(item())
            if self.peek() == b")":
                self.pos += 1
                return out
            self.sp()

    def flag(self, allow_star: bool = False, allow_recent: bool = True) -> str:
        if self.peek() == b"\\":
            self.pos += 1
            if allow_star and self.peek() == b"*":
                self.pos += 1
                return "\\*"
            name = "\\" + self.atom("flag")
            canon = SYSTEM_FLAGS.get(name.upper())
            if canon is not None:
                if canon == "\\Recent" and not allow_recent:
                    raise ImapParseError("\\Recent cannot be stored or appended")
                return canon
            return name  # RFC 3501 §9 flag-extension
        return self.atom("flag keyword")

    def flag_list(self) -> tuple[str, ...]:
        return tuple(self.paren_list(lambda: self.flag(allow_recent=False)))

    def sequence_set(self) -> SequenceSet:
        m = self.match(_abnf.sequence_set)
        if m is None:
            raise self.error("expected sequence set")
        if m == b"$":
            return SequenceSet(saved=True)
        ranges = []
        for item in m.split(b","):
            a, _, b = item.partition(b":")
            lo = self._seq_number(a)
            hi = self._seq_number(b) if b else lo
            ranges.append(SeqRange(lo, hi))
        nxt = self.peek()
        if nxt and nxt not in b" )":
            raise self.error("invalid sequence set")
        return SequenceSet(tuple(ranges))

    def _seq_number(self, tok: bytes) -> int | None:
        if tok == b"*":
            return None
        value = int(tok)
        if value > _abnf.NZ_NUMBER_MAX:
            raise ImapParseError("sequence number out of range (must be 1..4294967295)")
        return value

    def date(self) -> datetime.date:
        quoted = self.peek() == b'"'
        if quoted:
            self.pos += 1
        m = _abnf.date_text.match(self.text, self.pos)
        if not m:
            raise self.error("expected date (e.g. 1-Feb-1994)")
        self.pos = m.end()
        if quoted:
            self.expect(b'"')
        try:
            month = _abnf.MONTHS.index(m.group(2).upper()) + 1
            return datetime.date(int(m.group(3)), month, int(m.group(1)))
        except ValueError:
            raise ImapParseError("invalid date") from None

    def date_time(self) -> datetime.datetime:
        m = _abnf.date_time.match(self.text, self.pos)
        if not m:
            raise self.error('expected date-time (e.g. "17-Jul-1996 02:44:25 -0700")')
        self.pos = m.end()
        day, mon, year, hh, mm, ss, sign, zh, zm = m.groups()
        try:
            month = _abnf.MONTHS.index(mon.upper()) + 1
            offset = datetime.timedelta(hours=int(zh), minutes=int(zm))
            if offset >= datetime.timedelta(days=1):
                raise ValueError
            tz = datetime.timezone(-offset if sign == b"-" else offset)
            return datetime.datetime(
                int(year), month, int(day.strip()), int(hh), int(mm), int(ss), tzinfo=tz
            )
        except ValueError:
            raise ImapParseError("invalid date-time") from None


# ---- command parsers ------------------------------------------------------------------------


def _no_args(cls):
    def parse(c: Cursor, tag: str) -> ev.Command:
        c.end()
        return cls(tag)

    return parse


def _authenticate(c: Cursor, tag: str) -> ev.Command:
    c.sp()
    mech = c.keyword()
    initial = None
    if c.try_sp():  # RFC 4959 SASL-IR
        if c.peek() == b"=":
            c.pos += 1
            initial = b""
        else:
            m = c.match(_abnf.base64_line)
            if not m:
                raise c.error("invalid base64 initial response")
            initial = binascii.a2b_base64(m)
    c.end()
    return ev.Authenticate(tag, mechanism=mech, initial_response=initial)


def _login(c: Cursor, tag: str) -> ev.Command:
    c.sp()
    user = c.astring("user name")
    c.sp()
    password = c.astring("password")
    c.end()
    return ev.Login(tag, username=user, password=password)


def _enable(c: Cursor, tag: str) -> ev.Command:
    caps = []
    while c.try_sp():
        caps.append(c.keyword())
    if not caps:
        raise c.error("ENABLE needs at least one capability")
    c.end()
    return ev.Enable(tag, capabilities=tuple(caps))


def _compress(c: Cursor, tag: str) -> ev.Command:
    c.sp()
    mech = c.keyword()
    c.end()
    return ev.Compress(tag, mechanism=mech)


def _select(readonly: bool):
    def parse(c: Cursor, tag: str) -> ev.Command:
        c.sp()
        mailbox = c.mailbox()
        condstore = False
        qresync = None
        if c.try_sp():
            # RFC 4466 select-params; RFC 7162 CONDSTORE / QRESYNC
            def param() -> None:
                nonlocal condstore, qresync
                name = c.keyword()
                if name == "CONDSTORE":
                    condstore = True
                elif name == "QRESYNC":
                    c.sp()
                    qresync = _qresync(c)
                else:
                    raise ImapParseError(f"unknown SELECT parameter {name}")

            c.paren_list(param, allow_empty=False)
        c.end()
        return ev.Select(
            tag, mailbox=mailbox, readonly=readonly, condstore=condstore, qresync=qresync
        )

    return parse


def _qresync(c: Cursor) -> QresyncParams:
    c.expect(b"(")
    uidvalidity = c.number(nonzero=True)
    c.sp()
    modseq = c.number(_abnf.NUMBER64_MAX, nonzero=True)
    known_uids = known_seq = known_seq_uids = None
    if c.try_sp():
        if c.peek() != b"(":
            known_uids = c.sequence_set()
            if known_uids.saved:
                raise ImapParseError("$ not allowed in QRESYNC")
            c.try_sp()
        if c.peek() == b"(":
            c.pos += 1
            known_seq = c.sequence_set()
            c.sp()
            known_seq_uids = c.sequence_set()
            c.expect(b")")
    c.expect(b")")
    return QresyncParams(uidvalidity, modseq, known_uids, known_seq, known_seq_uids)


def _create(c: Cursor, tag: str) -> ev.Command:
    c.sp()
    mailbox = c.mailbox()
    uses: list[str] = []
    if c.try_sp():

        def param() -> None:
            name = c.keyword()
            if name != "USE":
                raise ImapParseError(f"unknown CREATE parameter {name}")
            c.sp()
            uses.extend(c.paren_list(lambda: c.flag()))

        c.paren_list(param, allow_empty=False)
    c.end()
    return ev.Create(tag, mailbox=mailbox, special_use=tuple(uses))


def _one_mailbox(cls):
    def parse(c: Cursor, tag: str) -> ev.Command:
        c.sp()
        mailbox = c.mailbox()
        c.end()
        return cls(tag, mailbox=mailbox)

    return parse


def _rename(c: Cursor, tag: str) -> ev.Command:
    c.sp()
    old = c.mailbox()
    c.sp()
    new = c.mailbox()
    c.end()
    return ev.Rename(tag, mailbox=old, new_name=new)


LIST_SELECT_OPTS = frozenset({"SUBSCRIBED", "REMOTE", "RECURSIVEMATCH", "SPECIAL-USE"})
LIST_RETURN_OPTS = frozenset({"SUBSCRIBED", "CHILDREN", "SPECIAL-USE", "STATUS", "MYRIGHTS"})


def _list(c: Cursor, tag: str) -> ev.Command:
    c.sp()
    selection: list[str] = []
    extended = False
    if c.peek() == b"(":  # RFC 5258 list-select-opts
        extended = True
        selection = [s.upper() for s in c.paren_list(c.keyword)]
        for opt in selection:
            if opt not in LIST_SELECT_OPTS:
                raise ImapParseError(f"unknown LIST selection option {opt}")
        if selection == ["RECURSIVEMATCH"]:
            # RFC 5258 §3: RECURSIVEMATCH alone is an error
            raise ImapParseError("RECURSIVEMATCH needs another selection option")
        c.sp()
    reference = c.mailbox()
    c.sp()
    if c.peek() == b"(":
        extended = True
        patterns = c.paren_list(c.list_mailbox, allow_empty=False)
    else:
        patterns = [c.list_mailbox()]
    returns: list[str] = []
    status_items: list[str] = []
    if c.try_sp():
        if c.keyword() != "RETURN":
            raise c.error("expected RETURN")
        extended = True
        c.sp()

        def ret() -> str:
            opt = c.keyword()
            if opt not in LIST_RETURN_OPTS:
                raise ImapParseError(f"unknown LIST return option {opt}")
            if opt == "STATUS":  # RFC 5819
                c.sp()
                status_items.extend(c.paren_list(lambda: _status_item(c), allow_empty=False))
            return opt

        returns = c.paren_list(ret)
    c.end()
    return ev.List(
        tag,
        reference=reference,
        patterns=tuple(patterns),
        extended=extended,
        params=ListParams(tuple(selection), tuple(returns), tuple(status_items)),
    )


def _lsub(c: Cursor, tag: str) -> ev.Command:
    c.sp()
    reference = c.mailbox()
    c.sp()
    pattern = c.list_mailbox()
    c.end()
    return ev.Lsub(tag, reference=reference, pattern=pattern)


def _status_item(c: Cursor) -> str:
    item = c.keyword()
    if item not in STATUS_ITEMS:
        raise ImapParseError(f"unknown STATUS item {item}")
    return item


def _status(c: Cursor, tag: str) -> ev.Command:
    c.sp()
    mailbox = c.mailbox()
    c.sp()
    items = c.paren_list(lambda: _status_item(c), allow_empty=False)
    c.end()
    return ev.Status(tag, mailbox=mailbox, items=tuple(items))


def _append(c: Cursor, tag: str) -> ev.Command:
    c.sp()
    mailbox = c.mailbox()
    messages = []
    while True:
        c.sp()
        flags: tuple[str, ...] = ()
        when = None
        if c.peek() == b"(":
            flags = c.flag_list()
            c.sp()
        if c.peek() == b'"':
            when = c.date_time()
            c.sp()
        if c.try_keyword("UTF8"):
            # RFC 6855 §4: append-data =/ "UTF8" SP "(" literal8 ")" (UTF8=ACCEPT only)
            if not c.utf8:
                raise ImapParseError("APPEND UTF8 needs ENABLE UTF8=ACCEPT")
            c.sp()
            c.expect(b"(")
            lit = c.literal()
            if lit is None or not lit[1]:
                raise c.error("expected literal8")
            c.expect(b")")
            messages.append(AppendMessage(lit[0], flags, when, binary=True, utf8=True))
        else:
            lit = c.literal()
            if lit is None:
                raise c.error("expected message literal")
            messages.append(AppendMessage(lit[0], flags, when, lit[1]))
        if c.at_end():
            break
    return ev.Append(tag, mailbox=mailbox, messages=tuple(messages))


def _uid_expunge(c: Cursor, tag: str) -> ev.Command:
    c.sp()
    s = c.sequence_set()
    c.end()
    return ev.Expunge(tag, uid_set=s)


# --- SEARCH (RFC 9051 §6.4.4, RFC 3501 §6.4.4, RFC 7162, RFC 5032, RFC 8514, RFC 8474) ---

_SEARCH_FLAGLESS = frozenset(
    {
        "ALL",
        "ANSWERED",
        "DELETED",
        "DRAFT",
        "FLAGGED",
        "NEW",
        "OLD",
        "RECENT",
        "SEEN",
        "UNANSWERED",
        "UNDELETED",
        "UNDRAFT",
        "UNFLAGGED",
        "UNSEEN",
    }
)
_SEARCH_STRING = frozenset({"BCC", "BODY", "CC", "FROM", "SUBJECT", "TEXT", "TO"})
_SEARCH_DATE = frozenset(
    {
        "BEFORE",
        "ON",
        "SINCE",
        "SENTBEFORE",
        "SENTON",
        "SENTSINCE",
        "SAVEDBEFORE",
        "SAVEDON",
        "SAVEDSINCE",
    }
)
_SEARCH_NUMBER = frozenset({"LARGER", "SMALLER", "OLDER", "YOUNGER"})
_SEARCH_OBJECTID = frozenset({"EMAILID", "THREADID"})


class _SearchReader:
    def __init__(self, c: Cursor, charset: str | None) -> None:
        self.c = c
        self.codec = KNOWN_CHARSETS.get((charset or "US-ASCII").upper())
        if self.codec is None:
            # RFC 9051 §6.4.4: unknown charset -> NO [BADCHARSET (...)]
            raise ImapParseError(
                f"unsupported charset {charset}", code="BADCHARSET (UTF-8 US-ASCII)", status="NO"
            )

    def string(self) -> str:
        data = self.c.astring_bytes()
        try:
            return data.decode(self.codec if self.codec != "ascii" else "utf-8")
        except UnicodeDecodeError:
            raise ImapParseError("search string does not match the charset") from None

    def program(self) -> SearchKey:
        keys = [self.key(0)]
        while self.c.try_sp():
            keys.append(self.key(0))
        self.c.end()
        return keys[0] if len(keys) == 1 else SearchKey("AND", tuple(keys))

    def key(self, depth: int) -> SearchKey:
        c = self.c
        if depth > c.search_depth:
            raise ImapParseError("search nesting too deep")
        ch = c.peek()
        if ch == b"(":
            keys = c.paren_list(lambda: self.key(depth + 1), allow_empty=False)
            return keys[0] if len(keys) == 1 else SearchKey("AND", tuple(keys))
        if ch.isdigit() or ch in (b"*", b"$"):
            return SearchKey("SEQSET", (c.sequence_set(),))
        op = c.keyword()
        if op in _SEARCH_FLAGLESS:
            return SearchKey(op)
        c.sp()
        if op in _SEARCH_STRING:
            return SearchKey(op, (self.string(),))
        if op in _SEARCH_DATE:
            return SearchKey(op, (c.date(),))
        if op in _SEARCH_NUMBER:
            return SearchKey(op, (c.number(_abnf.NUMBER64_MAX),))
        if op in ("KEYWORD", "UNKEYWORD"):
            return SearchKey(op, (c.flag(),))
        if op == "HEADER":
            name = self.string()
            c.sp()
            return SearchKey(op, (name, self.string()))
        if op == "UID":
            return SearchKey(op, (c.sequence_set(),))
        if op == "NOT":
            return SearchKey(op, (self.key(depth + 1),))
        if op == "OR":
            a = self.key(depth + 1)
            c.sp()
            return SearchKey(op, (a, self.key(depth + 1)))
        if op == "MODSEQ":  # RFC 7162 §3.1.5
            entry = etype = None
            if c.peek() == b'"':
                entry = c.decode_text(c.string_bytes())
                c.sp()
                etype = c.keyword().lower()
                if etype not in ("priv", "shared", "all"):
                    raise ImapParseError("MODSEQ entry type must be priv, shared or all")
                c.sp()
            return SearchKey(op, (entry, etype, c.number(_abnf.NUMBER64_MAX)))
        if op in _SEARCH_OBJECTID:  # RFC 8474
            m = c.match(_abnf.astring_atom)
            if m is None:
                raise c.error("expected object id")
            return SearchKey(op, (m.decode("ascii"),))
        raise ImapParseError(f"unknown search key {op}")


def _search_returns(c: Cursor, allowed: frozenset[str] = SEARCH_RETURN_OPTS) -> tuple[str, ...]:
    def opt() -> str:
        o = c.keyword()
        if o not in allowed:
            raise ImapParseError(f"unknown RETURN option {o}")
        return o

    return tuple(c.paren_list(opt))


def _search(uid: bool):
    def parse(c: Cursor, tag: str) -> ev.Command:
        c.sp()
        returns = None
        charset = None
        if c.try_keyword("RETURN"):
            c.sp()
            returns = _search_returns(c)
            c.sp()
        if c.try_keyword("CHARSET"):
            c.sp()
            charset = c.astring("charset").upper()
            c.sp()
        criteria = _SearchReader(c, charset).program()
        return ev.Search(tag, uid=uid, charset=charset, criteria=criteria, returns=returns)

    return parse


def _sort(uid: bool):
    def parse(c: Cursor, tag: str) -> ev.Command:
        c.sp()
        returns = None
        if c.try_keyword("RETURN"):  # RFC 5267 ESORT
            c.sp()
            returns = _search_returns(c)
            c.sp()
        crit: list[SortCriterion] = []
        c.expect(b"(")
        while True:
            reverse = bool(c.try_keyword("REVERSE"))
            if reverse:
                c.sp()
            key = c.keyword()
            if key not in SORT_KEYS:
                raise ImapParseError(f"unknown sort key {key}")
            crit.append(SortCriterion(key, reverse))
            if c.peek() == b")":
                c.pos += 1
                break
            c.sp()
        c.sp()
        charset = c.astring("charset").upper()
        c.sp()
        search = _SearchReader(c, charset).program()
        return ev.Sort(
            tag, uid=uid, criteria=tuple(crit), charset=charset, search=search, returns=returns
        )

    return parse


def _thread(uid: bool):
    def parse(c: Cursor, tag: str) -> ev.Command:
        c.sp()
        algorithm = c.keyword()
        if algorithm not in ("REFERENCES", "ORDEREDSUBJECT", "REFS"):
            raise ImapParseError(f"unknown THREAD algorithm {algorithm}")
        c.sp()
        charset = c.astring("charset").upper()
        c.sp()
        search = _SearchReader(c, charset).program()
        return ev.Thread(tag, uid=uid, algorithm=algorithm, charset=charset, search=search)

    return parse


# --- FETCH ---

_FIELD_NAME = re.compile(r"[\x21-\x39\x3b-\x7e]+")


def _section(c: Cursor, binary: bool = False) -> Section:
    c.expect(b"[")
    if c.peek() == b"]":
        c.pos += 1
        return Section()
    part: tuple[int, ...] = ()
    m = c.match(_abnf.section_part)
    if m is not None:
        part = tuple(int(x) for x in m.split(b"."))
        if any(p > _abnf.NZ_NUMBER_MAX for p in part):
            raise ImapParseError("section part out of range")
        if c.peek() == b"]":
            c.pos += 1
            return Section(part)
        if binary:
            raise c.error("BINARY takes only a part number")
        c.expect(b".")
    elif binary:
        raise c.error("BINARY takes only a part number")
    word = c.match(_abnf.fetch_att_name)
    text = (word or b"").decode("ascii").upper()
    fields: tuple[str, ...] = ()
    if text in ("HEADER.FIELDS", "HEADER.FIELDS.NOT"):
        c.sp()
        # names keep the client's spelling: the response echoes them (matching ignores case)
        fields = tuple(c.paren_list(lambda: c.astring("header field name"), allow_empty=False))
        if not all(_FIELD_NAME.fullmatch(f) for f in fields):
            raise ImapParseError("invalid header field name")  # RFC 5322 §3.6.8 ftext
    elif text == "MIME":
        if not part:  # RFC 9051 §6.4.5: MIME needs a part number
            raise ImapParseError("MIME section needs a part number")
    elif text not in ("HEADER", "TEXT"):
        raise c.error("invalid section")
    c.expect(b"]")
    return Section(part, text, fields)


def _fetch_att(c: Cursor) -> FetchAttribute:
    m = c.match(_abnf.fetch_att_name)
    if m is None:
        raise c.error("expected fetch attribute")
    name = m.decode("ascii").upper()
    if name in ("BODY", "BODY.PEEK", "BINARY", "BINARY.PEEK", "BINARY.SIZE"):
        if c.peek() != b"[":
            if name == "BODY":
                return FetchAttribute("BODY")
            raise c.error(f"{name} needs a section")
        base = name.split(".")[0] if name != "BINARY.SIZE" else name
        section = _section(c, binary=base != "BODY")
        partial = None
        if base != "BINARY.SIZE" and c.peek() == b"<":
            pm = _abnf.partial.match(c.text, c.pos)
            if pm is None:
                raise c.error("invalid partial <start.count>")
            c.pos = pm.end()
            start, count = int(pm.group(1)), int(pm.group(2))
            if start > _abnf.NZ_NUMBER_MAX or count > _abnf.NZ_NUMBER_MAX:
                raise ImapParseError("partial out of range")
            partial = (start, count)
        return FetchAttribute(base, section, partial, peek=name.endswith(".PEEK"))
    if name in SIMPLE_FETCH_ATTS:
        return FetchAttribute(name)
    raise ImapParseError(f"unknown fetch attribute {name}")


def _fetch(uid: bool):
    def parse(c: Cursor, tag: str) -> ev.Command:
        c.sp()
        seqset = c.sequence_set()
        c.sp()
        macro = None
        if c.peek() == b"(":
            atts = tuple(c.paren_list(lambda: _fetch_att(c), allow_empty=False))
        else:
            word = c.try_keyword(*FETCH_MACROS)
            if word:
                macro = word
                atts = FETCH_MACROS[word]
            else:
                atts = (_fetch_att(c),)
        changed_since = None
        vanished = False
        if c.try_sp():  # RFC 4466 fetch-modifiers; RFC 7162

            def modifier() -> None:
                nonlocal changed_since, vanished
                name = c.keyword()
                if name == "CHANGEDSINCE":
                    c.sp()
                    changed_since = c.number(_abnf.NUMBER64_MAX)
                elif name == "VANISHED":
                    vanished = True
                else:
                    raise ImapParseError(f"unknown FETCH modifier {name}")

            c.paren_list(modifier, allow_empty=False)
            if vanished and (not uid or changed_since is None):
                # RFC 7162 §3.2.6: VANISHED only in UID FETCH with CHANGEDSINCE
                raise ImapParseError("VANISHED needs UID FETCH with CHANGEDSINCE")
        c.end()
        return ev.Fetch(
            tag,
            uid=uid,
            sequence_set=seqset,
            attributes=atts,
            macro=macro,
            changed_since=changed_since,
            vanished=vanished,
        )

    return parse


def _store(uid: bool):
    def parse(c: Cursor, tag: str) -> ev.Command:
        c.sp()
        seqset = c.sequence_set()
        c.sp()
        unchanged = None
        if c.peek() == b"(":

            def modifier() -> None:
                nonlocal unchanged
                if c.keyword() != "UNCHANGEDSINCE":
                    raise ImapParseError("unknown STORE modifier")
                c.sp()
                unchanged = c.number(_abnf.NUMBER64_MAX)

            c.paren_list(modifier, allow_empty=False)
            c.sp()
        mode = ""
        if c.peek() in (b"+", b"-"):
            mode = c.peek().decode()
            c.pos += 1
        word = c.keyword()
        if word not in ("FLAGS", "FLAGS.SILENT"):
            raise ImapParseError("expected FLAGS, +FLAGS or -FLAGS")
        c.sp()
        if c.peek() == b"(":
            flags = c.flag_list()
        else:  # RFC 3501 §9: store-att-flags allows a bare space-separated flag list
            flags_l = [c.flag(allow_recent=False)]
            while c.try_sp():
                flags_l.append(c.flag(allow_recent=False))
            flags = tuple(flags_l)
        c.end()
        return ev.Store(
            tag,
            uid=uid,
            sequence_set=seqset,
            mode=mode,
            silent=word.endswith(".SILENT"),
            flags=flags,
            unchanged_since=unchanged,
        )

    return parse


def _copy_move(cls, uid: bool):
    def parse(c: Cursor, tag: str) -> ev.Command:
        c.sp()
        seqset = c.sequence_set()
        c.sp()
        mailbox = c.mailbox()
        c.end()
        return cls(tag, uid=uid, sequence_set=seqset, mailbox=mailbox)

    return parse


def _getquota(c: Cursor, tag: str) -> ev.Command:
    c.sp()
    root = c.astring("quota root")
    c.end()
    return ev.GetQuota(tag, root=root)


def _id(c: Cursor, tag: str) -> ev.Command:
    c.sp()
    if c.try_keyword("NIL"):
        c.end()
        return ev.Id(tag, params=None)
    items: list[tuple[str, str | None]] = []
    if c.peek() == b"(" and c.peek(2) == b"()":  # tolerate "ID ()" like most servers
        c.pos += 2
        c.end()
        return ev.Id(tag, params=())
    c.expect(b"(")
    while True:
        key = c.decode_text(c.string_bytes())
        c.sp()
        value = c.nstring_or_nil()
        items.append((key, value))
        if len(items) > 30:  # RFC 2971 §3.3: at most 30 field-value pairs
            raise ImapParseError("too many ID fields")
        if c.peek() == b")":
            c.pos += 1
            break
        c.sp()
    c.end()
    return ev.Id(tag, params=tuple(items))


COMMANDS: dict[str, Callable[[Cursor, str], ev.Command]] = {
    "CAPABILITY": _no_args(ev.Capability),
    "NOOP": _no_args(ev.Noop),
    "LOGOUT": _no_args(ev.Logout),
    "STARTTLS": _no_args(ev.StartTLS),
    "AUTHENTICATE": _authenticate,
    "LOGIN": _login,
    "ENABLE": _enable,
    "COMPRESS": _compress,
    "SELECT": _select(False),
    "EXAMINE": _select(True),
    "CREATE": _create,
    "DELETE": _one_mailbox(ev.Delete),
    "RENAME": _rename,
    "SUBSCRIBE": _one_mailbox(ev.Subscribe),
    "UNSUBSCRIBE": _one_mailbox(ev.Unsubscribe),
    "LIST": _list,
    "LSUB": _lsub,
    "NAMESPACE": _no_args(ev.Namespace),
    "STATUS": _status,
    "APPEND": _append,
    "IDLE": _no_args(ev.Idle),
    "CHECK": _no_args(ev.Check),
    "CLOSE": _no_args(ev.Close),
    "UNSELECT": _no_args(ev.Unselect),
    "EXPUNGE": _no_args(ev.Expunge),
    "SEARCH": _search(False),
    "FETCH": _fetch(False),
    "STORE": _store(False),
    "COPY": _copy_move(ev.Copy, False),
    "MOVE": _copy_move(ev.Move, False),
    "SORT": _sort(False),
    "THREAD": _thread(False),
    "GETQUOTA": _getquota,
    "GETQUOTAROOT": _one_mailbox(ev.GetQuotaRoot),
    "ID": _id,
}
UID_COMMANDS: dict[str, Callable[[Cursor, str], ev.Command]] = {
    "EXPUNGE": _uid_expunge,
    "SEARCH": _search(True),
    "FETCH": _fetch(True),
    "STORE": _store(True),
    "COPY": _copy_move(ev.Copy, True),
    "MOVE": _copy_move(ev.Move, True),
    "SORT": _sort(True),
    "THREAD": _thread(True),
}


def read_tag(text: bytes) -> str | None:
    m = _abnf.tag.match(text)
    return m.group(0).decode("ascii") if m else None


def read_command_name(text: bytes) -> str:
    """Best-effort "TAG NAME" -> "NAME" (for LiteralContinuationNeeded / limit replies)."""
    parts = text.split(b" ", 3)
    if len(parts) < 2:
        return ""
    name = parts[1].upper()
    if name == b"UID" and len(parts) > 2:
        name = parts[2].upper()
    return name.decode("ascii", "replace") if _abnf.atom.fullmatch(name) else ""


def parse_command(
    text: bytes,
    literals: dict[int, tuple[bytes, bool]],
    utf8: bool = False,
    search_depth: int = MAX_SEARCH_DEPTH,
) -> ev.Command:
    """Parse a complete command; raises ImapParseError (with .tag set when known)."""
    c = Cursor(text, literals, utf8, search_depth)
    m = c.match(_abnf.tag)
    if m is None:
        raise ImapParseError("missing or invalid tag")
    tag = m.decode("ascii")
    label = ""  # "FETCH" / "UID FETCH" once known, to prefix error texts
    try:
        c.sp()
        name = c.keyword()
        table = COMMANDS
        if name == "UID":
            c.sp()
            name = c.keyword()
            table = UID_COMMANDS
            if name not in table:
                raise ImapParseError(f"UID {name} is not a UID command")
            label = "UID "
        parser = table.get(name)
        if parser is None:
            raise ImapParseError(f"unknown command {name}")
        label += name
        return parser(c, tag)
    except ImapParseError as exc:
        exc.tag = tag  # type: ignore[attr-defined]
        if label and exc.code is None:
            exc.text = f"{label}: {exc.text}"
        raise
