"""Frozen value classes shared by the reader and the writer: sequence sets, sections,
fetch attributes, search keys, status items."""

from __future__ import annotations

import datetime
from collections.abc import Iterator
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class SeqRange:
    """One ``a:b`` (or a single number when start == end). ``None`` stands for ``*``."""

    start: int | None
    end: int | None

    def bounds(self, largest: int) -> tuple[int, int]:
        """Resolve ``*`` to ``largest`` and order the ends (RFC 3501 §9: 4:2 == 2:4)."""
        a = largest if self.start is None else self.start
        b = largest if self.end is None else self.end
        return (a, b) if a <= b else (b, a)

    def __str__(self) -> str:
        a = "*" if self.start is None else str(self.start)
        if self.start == self.end:
            return a
        b = "*" if self.end is None else str(self.end)
        return f"{a}:{b}"


@dataclass(frozen=True, slots=True)
class SequenceSet:
    """A sequence set kept as ranges (never materialised: ``1:4294967295`` is one range).

    ``saved`` is RFC 5182 ``$`` (the result of the last SEARCH ... RETURN (SAVE)).
    """

    ranges: tuple[SeqRange, ...] = ()
    saved: bool = False

    @classmethod
    def of(cls, *items: int | tuple[int | None, int | None]) -> "SequenceSet":
        ranges = []
        for it in items:
            ranges.append(SeqRange(it, it) if isinstance(it, int) else SeqRange(*it))
        return cls(tuple(ranges))

    def resolved(self, largest: int) -> list[tuple[int, int]]:
        """Merged, sorted inclusive ranges, ``*`` being ``largest`` (0 for an empty mailbox)."""
        spans = sorted(r.bounds(largest) for r in self.ranges)
        merged: list[tuple[int, int]] = []
        for a, b in spans:
            if merged and a <= merged[-1][1] + 1:
                if b > merged[-1][1]:
                    merged[-1] = (merged[-1][0], b)
            else:
                merged.append((a, b))
        return merged

    def contains(self, n: int, largest: int) -> bool:
        return any(a <= n <= b for a, b in (r.bounds(largest) for r in self.ranges))

    def iter(self, largest: int, limit: int | None = None) -> Iterator[int]:
        """Numbers in ascending order, each once, clipped to ``1..limit`` (default ``largest``)."""
        top = largest if limit is None else limit
        for a, b in self.resolved(largest):
            yield from range(max(a, 1), min(b, top) + 1)

    def __str__(self) -> str:
        return "$" if self.saved else ",".join(str(r) for r in self.ranges)


def _astring(name: str) -> str:
    from protocols.imap import _abnf

    if _abnf.astring_atom.fullmatch(name.encode("utf-8")):
        return name
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass(frozen=True, slots=True)
class Section:
    """``section-spec`` of BODY[...] / BINARY[...] (RFC 9051 §6.4.5).

    ``part`` is the section-part numbers; ``text`` one of None, "HEADER", "HEADER.FIELDS",
    "HEADER.FIELDS.NOT", "TEXT", "MIME"; ``fields`` the header names of the HEADER.FIELDS
    forms as the client spelled them (echoed back; matched case-insensitively).
    """

    part: tuple[int, ...] = ()
    text: str | None = None
    fields: tuple[str, ...] = ()

    def __str__(self) -> str:
        bits = [".".join(str(p) for p in self.part)] if self.part else []
        if self.text:
            bits.append(self.text)
        s = ".".join(bits)
        if self.text in ("HEADER.FIELDS", "HEADER.FIELDS.NOT"):
            s += " (" + " ".join(_astring(f) for f in self.fields) + ")"
        return s


@dataclass(frozen=True, slots=True)
class FetchAttribute:
    """One ``fetch-att``. ``name`` is upper-case: FLAGS, UID, BODY, BODYSTRUCTURE, BINARY,
    BINARY.SIZE, RFC822.HEADER, ... ``BODY`` with a ``section`` is ``BODY[...]`` (``peek`` for
    BODY.PEEK); ``partial`` is ``(start, count)`` of ``<start.count>``."""

    name: str
    section: Section | None = None
    partial: tuple[int, int] | None = None
    peek: bool = False

    @property
    def sets_seen(self) -> bool:
        """RFC 9051 §6.4.5: BODY[...], BINARY[...], RFC822 and RFC822.TEXT set \\Seen."""
        if self.name in ("RFC822", "RFC822.TEXT"):
            return True
        return self.name in ("BODY", "BINARY") and self.section is not None and not self.peek

    def response_name(self) -> str:
        """The item name echoed in the FETCH response, e.g. ``BODY[HEADER]<0>`` (no PEEK)."""
        if self.section is None:
            return self.name
        s = f"{self.name}[{self.section}]"
        if self.partial is not None:
            s += f"<{self.partial[0]}>"
        return s


@dataclass(frozen=True, slots=True)
class SearchKey:
    """A node of a search program.

    ``op`` is the upper-case key (``ALL``, ``FROM``, ``OR``, ``NOT``, ``AND`` for a
    parenthesised list or the implicit top-level conjunction, ``SEQSET`` for a bare sequence
    set, ``UID``, ``HEADER``, ``BEFORE``, ``MODSEQ``, ...). ``args`` holds its typed
    operands: str for strings, int for numbers, ``datetime.date`` for dates,
    ``SequenceSet`` for sets, ``SearchKey`` children for AND/OR/NOT; MODSEQ is
    ``(entry_name | None, entry_type | None, modseq)``.
    """

    op: str
    args: tuple = ()


@dataclass(frozen=True, slots=True)
class SortCriterion:
    key: str  # ARRIVAL CC DATE FROM SIZE SUBJECT TO DISPLAYFROM DISPLAYTO
    reverse: bool = False


@dataclass(frozen=True, slots=True)
class QresyncParams:
    """RFC 7162 §3.2.5: SELECT ... (QRESYNC (uidvalidity modseq [known-uids [seq-match]]))."""

    uidvalidity: int
    modseq: int
    known_uids: SequenceSet | None = None
    known_seq: SequenceSet | None = None
    known_seq_uids: SequenceSet | None = None


@dataclass(frozen=True, slots=True)
class AppendMessage:
    """One message of (MULTI)APPEND (RFC 3502). ``binary`` for literal8 (RFC 3516)."""

    message: bytes
    flags: tuple[str, ...] = ()
    internal_date: datetime.datetime | None = None  # aware; None = server picks "now"
    binary: bool = False
    utf8: bool = False  # RFC 6855 §4 "UTF8 (~{n})": an internationalized (RFC 6532) message


@dataclass(frozen=True, slots=True)
class ListParams:
    """LIST-EXTENDED (RFC 5258) selection and return options, upper-case."""

    selection: tuple[str, ...] = ()
    returns: tuple[str, ...] = ()
    status_items: tuple[str, ...] = field(default=())  # RFC 5819 RETURN (STATUS (...))
