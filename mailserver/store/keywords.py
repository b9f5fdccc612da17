"""IMAP flags ↔ JMAP keywords: one normalised form, stored in ``emails.keywords``.

The store keeps keywords in JMAP form, lowercased (RFC 8621 §4.1.1: keywords are
case-insensitive): ``\\Seen`` ↔ ``$seen``, ``\\Answered`` ↔ ``$answered``, ``\\Flagged`` ↔
``$flagged``, ``\\Draft`` ↔ ``$draft``, ``\\Deleted`` ↔ ``$deleted``. ``\\Recent`` is a session
property in IMAP (RFC 3501 §2.3.2) and is never stored. ``emails.keywords`` is the sorted set
joined by single spaces ("" when empty).
"""

from __future__ import annotations

from collections.abc import Iterable

SEEN = "$seen"
ANSWERED = "$answered"
FLAGGED = "$flagged"
DRAFT = "$draft"
DELETED = "$deleted"

_SYSTEM_TO_KEYWORD = {
    "\\seen": SEEN,
    "\\answered": ANSWERED,
    "\\flagged": FLAGGED,
    "\\draft": DRAFT,
    "\\deleted": DELETED,
}
_KEYWORD_TO_SYSTEM = {
    SEEN: "\\Seen",
    ANSWERED: "\\Answered",
    FLAGGED: "\\Flagged",
    DRAFT: "\\Draft",
    DELETED: "\\Deleted",
}


class InvalidKeyword(ValueError):
    """A flag/keyword that cannot be stored (empty, whitespace, control chars, \\Recent…)."""


def _check_atom(value: str) -> None:
    # RFC 9051 §9 flag-keyword = atom; RFC 8621 §4.1.1: ASCII %x21-%x7e minus ( ) { ] % * " \
    if not value or any(ord(ch) < 0x21 or ord(ch) > 0x7E or ch in '(){]%*"\\' for ch in value):
        raise InvalidKeyword(value)


def keyword_from_imap(flag: str) -> str:
    """IMAP flag → stored keyword (``\\Seen`` → ``$seen``, ``Junk`` → ``junk``)."""
    low = flag.lower()
    if low.startswith("\\"):
        try:
            return _SYSTEM_TO_KEYWORD[low]
        except KeyError:
            raise InvalidKeyword(flag) from None  # \Recent and unknown system flags
    _check_atom(low)
    return low


def keyword_to_imap(keyword: str) -> str:
    """Stored keyword → IMAP flag (``$seen`` → ``\\Seen``; others unchanged)."""
    return _KEYWORD_TO_SYSTEM.get(keyword, keyword)


def normalize_keyword(keyword: str) -> str:
    """Accept either form (JMAP keyword or IMAP flag) and return the stored one."""
    if keyword.startswith("\\"):
        return keyword_from_imap(keyword)
    low = keyword.lower()
    _check_atom(low)
    return low


def normalize_keywords(keywords: Iterable[str]) -> frozenset[str]:
    return frozenset(normalize_keyword(k) for k in keywords)


def flags_from_imap(flags: Iterable[str]) -> frozenset[str]:
    return frozenset(keyword_from_imap(f) for f in flags)


def flags_to_imap(keywords: Iterable[str]) -> list[str]:
    return [keyword_to_imap(k) for k in sorted(keywords)]


def encode_keywords(keywords: Iterable[str]) -> str:
    """The column value: sorted, space separated."""
    return " ".join(sorted(set(keywords)))


def decode_keywords(value: str) -> frozenset[str]:
    return frozenset(value.split()) if value else frozenset()
