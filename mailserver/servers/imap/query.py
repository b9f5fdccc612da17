"""IMAP SEARCH / SORT / THREAD on top of ``mailserver.store.search``.

``to_criterion`` turns the parser's ``SearchKey`` tree into the store's criteria. Keys the
store cannot evaluate in SQL (sequence numbers, MODSEQ, SAVEDBEFORE/…, OLDER/YOUNGER, and the
RFC 8474 ids) become UID sets computed from the mailbox's message list, read once per search.

Decisions:
- No ``\\Recent`` (RFC 9051 dropped it): RECENT and NEW match nothing, OLD everything.
- Object ids (RFC 8474): EMAILID is ``M<email id>``, THREADID ``T<thread id>``, MAILBOXID
  ``F<mailbox id>`` — stable for the life of the object, as the RFC asks.
- THREAD=REFERENCES builds the RFC 5256 tree from Message-ID / In-Reply-To / References of
  the matching messages (no subject merging of roots: the store's thread ids already keep
  unrelated conversations apart); THREAD=ORDEREDSUBJECT groups by base subject.
"""

from __future__ import annotations

import datetime
import re
from collections import defaultdict
from typing import Any

from protocols.imap.values import SearchKey

from mailserver.store import search as s
from mailserver.store.keywords import (
    ANSWERED,
    DELETED,
    DRAFT,
    FLAGGED,
    SEEN,
    InvalidKeyword,
    keyword_from_imap,
)

_FLAG_KEYS = {
    "ANSWERED": (ANSWERED, True), "DELETED": (DELETED, True), "DRAFT": (DRAFT, True),
    "FLAGGED": (FLAGGED, True), "SEEN": (SEEN, True),
    "UNANSWERED": (ANSWERED, False), "UNDELETED": (DELETED, False), "UNDRAFT": (DRAFT, False),
    "UNFLAGGED": (FLAGGED, False), "UNSEEN": (SEEN, False),
}
_TEXT_KEYS = {"BCC": "bcc", "BODY": "body", "CC": "cc", "FROM": "from", "SUBJECT": "subject",
              "TEXT": "text", "TO": "to"}
_DATE_KEYS = {"BEFORE": ("received", "before"), "ON": ("received", "on"),
              "SINCE": ("received", "since"), "SENTBEFORE": ("sent", "before"),
              "SENTON": ("sent", "on"), "SENTSINCE": ("sent", "since")}
# evaluated in Python over the message list (see module docstring)
LOCAL_KEYS = frozenset({"SEQSET", "MODSEQ", "SAVEDBEFORE", "SAVEDON", "SAVEDSINCE", "OLDER",
                        "YOUNGER", "EMAILID", "THREADID"})
NOTHING = s.Not(s.All())


class BadSearch(Exception):
    pass


def needs_messages(key: SearchKey) -> bool:
    if key.op in LOCAL_KEYS:
        return True
    return any(isinstance(a, SearchKey) and needs_messages(a) for a in key.args)


def has_op(key: SearchKey, op: str) -> bool:
    if key.op == op:
        return True
    return any(isinstance(a, SearchKey) and has_op(a, op) for a in key.args)


def has_modseq(key: SearchKey) -> bool:
    return has_op(key, "MODSEQ")


def _day(d: datetime.date) -> int:
    return int(datetime.datetime(d.year, d.month, d.day, tzinfo=datetime.timezone.utc).timestamp())


def to_criterion(key: SearchKey, view, messages: list | None, now: float) -> Any:
    """``view``: the session's MailboxView; ``messages``: store Messages of the mailbox (only
    when ``needs_messages``)."""
    op, args = key.op, key.args
    if op == "AND":
        return s.And(*(to_criterion(a, view, messages, now) for a in args))
    if op == "OR":
        return s.Or(to_criterion(args[0], view, messages, now),
                    to_criterion(args[1], view, messages, now))
    if op == "NOT":
        return s.Not(to_criterion(args[0], view, messages, now))
    if op in ("ALL", "OLD"):
        return s.All()
    if op in ("RECENT", "NEW"):
        return NOTHING
    if op in _FLAG_KEYS:
        kw, present = _FLAG_KEYS[op]
        return s.Keyword(kw, present)
    if op in ("KEYWORD", "UNKEYWORD"):
        try:
            kw = keyword_from_imap(args[0])
        except InvalidKeyword:
            return NOTHING if op == "KEYWORD" else s.All()
        return s.Keyword(kw, op == "KEYWORD")
    if op in _TEXT_KEYS:
        return s.Text(_TEXT_KEYS[op], args[0])
    if op in _DATE_KEYS:
        field, cmp = _DATE_KEYS[op]
        return s.Date(field, cmp, args[0])
    if op == "LARGER":
        return s.Size("larger", args[0])
    if op == "SMALLER":
        return s.Size("smaller", args[0])
    if op == "HEADER":
        return s.Header(args[0].lower(), args[1])
    if op == "UID":
        uids = view.resolve(args[0], uid=True)
        return s.Uid.of(uids) if uids else NOTHING
    assert messages is not None
    if op == "SEQSET":
        uids = view.resolve(args[0], uid=False)
        return s.Uid.of(uids) if uids else NOTHING
    if op == "MODSEQ":
        return _uids(m for m in messages if m.modseq >= args[2])
    if op in ("SAVEDBEFORE", "SAVEDON", "SAVEDSINCE"):
        day = _day(args[0])
        if op == "SAVEDBEFORE":
            return _uids(m for m in messages if m.saved_at < day)
        if op == "SAVEDON":
            return _uids(m for m in messages if day <= m.saved_at < day + 86400)
        return _uids(m for m in messages if m.saved_at >= day)
    if op == "OLDER":  # RFC 5032: INTERNALDATE at least n seconds ago
        return _uids(m for m in messages if m.received_at <= now - args[0])
    if op == "YOUNGER":
        return _uids(m for m in messages if m.received_at >= now - args[0])
    if op == "EMAILID":
        return _uids(m for m in messages if f"M{m.email_id}" == args[0])
    if op == "THREADID":
        return _uids(m for m in messages if f"T{m.thread_id}" == args[0])
    raise BadSearch(f"unsupported search key {op}")


def _uids(messages) -> Any:
    uids = [m.uid for m in messages]
    return s.Uid.of(uids) if uids else NOTHING


SORT_FIELDS = {"ARRIVAL": "received", "DATE": "sent", "SIZE": "size", "SUBJECT": "subject",
               "FROM": "from", "TO": "to", "DISPLAYFROM": "from", "DISPLAYTO": "to",
               "CC": "to"}  # no sort column for Cc: sorted like TO (documented deviation)


def sort_keys(criteria) -> list[s.SortKey]:
    return [s.SortKey(SORT_FIELDS[c.key], c.reverse) for c in criteria]


# ---- THREAD (RFC 5256) ---------------------------------------------------------------------

_SUBJ_PREFIX = re.compile(r"^\s*((re|fwd?|aw|wg|sv|vs)(\[\d+\])?\s*:\s*|\[[^\]]*\]\s*)+", re.I)


def base_subject(subject: str) -> str:
    prev = None
    subj = " ".join(subject.split())
    while prev != subj:
        prev = subj
        subj = _SUBJ_PREFIX.sub("", subj).strip()
        if subj.lower().endswith("(fwd)"):
            subj = subj[:-5].strip()
    return subj.lower()


def thread_orderedsubject(items: list[tuple[int, Any]]) -> list:
    """``items``: (number, Email) in any order → RFC 5256 §3 ORDEREDSUBJECT threads."""
    groups: dict[str, list[tuple[int, int, Any]]] = defaultdict(list)
    for n, e in items:
        groups[base_subject(e.subject)].append((e.sent_at or e.received_at, n, e))
    threads = []
    for members in groups.values():
        members.sort(key=lambda t: (t[0], t[1]))
        first, *rest = [n for _d, n, _e in members]
        threads.append((members[0][0], members[0][1], [first, *[[r] for r in rest]]
                        if len(rest) > 1 else [first, *rest]))
    threads.sort(key=lambda t: (t[0], t[1]))
    return [_simplify(t[2]) for t in threads]


def thread_references(items: list[tuple[int, Any]]) -> list:
    """RFC 5256 §4 REFERENCES, over the matching messages only (see module docstring)."""
    by_mid: dict[str, int] = {}
    info = {}
    for n, e in items:
        info[n] = e
        if e.message_id and e.message_id not in by_mid:
            by_mid[e.message_id] = n
    parent: dict[int, int | None] = {}
    for n, e in items:
        p = None
        refs = list(e.references) or []
        if e.in_reply_to:
            refs = refs + [e.in_reply_to[-1]]
        for ref in reversed(refs):
            cand = by_mid.get(ref)
            if cand is not None and cand != n:
                p = cand
                break
        parent[n] = p
    # break cycles
    for n in list(parent):
        seen = {n}
        p = parent[n]
        while p is not None:
            if p in seen:
                parent[n] = None
                break
            seen.add(p)
            p = parent[p]
    children: dict[int | None, list[int]] = defaultdict(list)
    for n, p in parent.items():
        children[p].append(n)

    def date(n: int) -> tuple[int, int]:
        e = info[n]
        return (e.sent_at or e.received_at, n)

    def build(n: int) -> list:
        kids = sorted(children.get(n, []), key=date)
        if not kids:
            return [n]
        if len(kids) == 1:
            return [n, *build(kids[0])]
        return [n, *[build(k) for k in kids]]

    roots = sorted(children.get(None, []), key=date)
    return [_simplify(build(r)) for r in roots]


def _simplify(t: list) -> Any:
    return t[0] if len(t) == 1 and isinstance(t[0], int) else t
