"""Low-level encoders: strings (atom / quoted / literal), lists, numbers, dates, mailbox names."""

from __future__ import annotations

import datetime
import re
from collections.abc import Iterable
from dataclasses import dataclass

from protocols.imap import _abnf, mutf7

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_QUOTED_MAX = 1024  # longer strings go out as literals, as most servers do
_PLAIN = re.compile(rb"[\x20\x21\x23-\x5b\x5d-\x7e]{0,%d}" % _QUOTED_MAX)


@dataclass(frozen=True, slots=True)
class Raw:
    """Bytes written verbatim (pre-encoded ENVELOPE / BODYSTRUCTURE / flag lists)."""

    data: bytes


@dataclass(frozen=True, slots=True)
class Atom:
    """Written as an atom (flags, keywords, capability names)."""

    value: str


@dataclass(frozen=True, slots=True)
class Literal:
    """Always written as a literal; ``binary`` makes it ``~{n}`` (RFC 3516 literal8)."""

    data: bytes
    binary: bool = False


def literal(data: bytes, binary: bool = False) -> bytes:
    return (b"~" if binary else b"") + b"{%d}\r\n" % len(data) + data


def quoted(data: bytes) -> bytes:
    return b'"' + data.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


def string(value: str | bytes, utf8: bool = False) -> bytes:
    """``string`` (RFC 3501 §9): quoted when it can be, literal otherwise.

    8-bit is quoted only when UTF8=ACCEPT / IMAP4rev2 is on and the octets are UTF-8;
    CR, LF and NUL always force a literal (NUL even a literal8 — the caller decides)."""
    data = value.encode("utf-8") if isinstance(value, str) else value
    if _PLAIN.fullmatch(data):  # the common case: printable ASCII without " or \
        return b'"' + data + b'"'
    if len(data) > _QUOTED_MAX or b"\r" in data or b"\n" in data or b"\x00" in data:
        return literal(data)
    if data.count(b'"') + data.count(b"\\") > 8:  # escape-heavy text reads better as a literal
        return literal(data)
    if not data.isascii():
        if not utf8:
            return literal(data)
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            return literal(data)
    return quoted(data)


def nstring(value: str | bytes | None, utf8: bool = False) -> bytes:
    return b"NIL" if value is None else string(value, utf8)


def astring(value: str | bytes, utf8: bool = False) -> bytes:
    data = value.encode("utf-8") if isinstance(value, str) else value
    if data and _abnf.astring_atom.fullmatch(data) and data.upper() != b"NIL":
        return data
    return string(data, utf8)


def mailbox(name: str, utf8: bool = False) -> bytes:
    """Mailbox names: modified UTF-7 unless UTF8=ACCEPT is on (RFC 9051 §5.1 / RFC 6855)."""
    if name.upper() == "INBOX":
        return b"INBOX"
    data = name.encode("utf-8") if utf8 else mutf7.encode(name)
    return astring(data, utf8)


def flag_list(flags: Iterable[str]) -> bytes:
    return b"(" + b" ".join(f.encode("ascii", "replace") for f in flags) + b")"


def date_time(value: datetime.datetime) -> bytes:
    """RFC 3501 §9 date-time: ``"17-Jul-1996 02:44:25 -0700"`` (day padded with a space)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=datetime.timezone.utc)
    offset = value.utcoffset() or datetime.timedelta(0)
    minutes = int(offset.total_seconds() // 60)
    sign = "+" if minutes >= 0 else "-"
    minutes = abs(minutes)
    s = (
        f'"{value.day:2d}-{_MONTHS[value.month - 1]}-{value.year:04d} '
        f"{value.hour:02d}:{value.minute:02d}:{value.second:02d} "
        f'{sign}{minutes // 60:02d}{minutes % 60:02d}"'
    )
    return s.encode("ascii")


def value(v: object, utf8: bool = False) -> bytes:
    """Encode a response value: None → NIL, int → number, str/bytes → string, list/tuple →
    parenthesised list, ``Raw``/``Atom``/``Literal`` as they say, datetime → date-time."""
    if v is None:
        return b"NIL"
    if isinstance(v, bool):
        raise TypeError("bool is not an IMAP value")
    if isinstance(v, int):
        return b"%d" % v
    if isinstance(v, Raw):
        return v.data
    if isinstance(v, Atom):
        return v.value.encode("ascii")
    if isinstance(v, Literal):
        return literal(v.data, v.binary)
    if isinstance(v, (str, bytes)):
        return string(v, utf8)
    if isinstance(v, datetime.datetime):
        return date_time(v)
    if isinstance(v, (list, tuple)):
        return b"(" + b" ".join(value(x, utf8) for x in v) + b")"
    raise TypeError(f"cannot encode {type(v).__name__} as an IMAP value")
