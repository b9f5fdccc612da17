"""One ``* n FETCH (...)`` line from what the daemon knows about a message.

The daemon loads the message record (and the raw bytes only when a section is asked for:
``needs_raw``), builds a ``MessageView`` and calls ``fetch_response``.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from protocols.imap import _writers as w, responses
from protocols.imap.envelope import body_structure, envelope
from protocols.imap.sections import fetch_section
from protocols.imap.values import FetchAttribute

_RAW_ATTS = frozenset({"RFC822", "RFC822.HEADER", "RFC822.TEXT", "BINARY", "BINARY.SIZE"})


def needs_raw(attributes: Sequence[FetchAttribute]) -> bool:
    """Whether answering needs the message octets (not just the stored summary)."""
    return any(
        a.name in _RAW_ATTS or (a.name == "BODY" and a.section is not None) for a in attributes
    )


def needs_parsed(attributes: Sequence[FetchAttribute]) -> bool:
    return needs_raw(attributes) or any(
        a.name in ("ENVELOPE", "BODY", "BODYSTRUCTURE") for a in attributes
    )


@dataclass(frozen=True, slots=True)
class MessageView:
    seq: int
    uid: int
    flags: tuple[str, ...] = ()
    internal_date: datetime.datetime | None = None
    size: int = 0
    parsed: Any = None  # ParsedMessage (structure + envelope); needed for ENVELOPE/BODY*/sections
    raw: bytes | Callable[[], bytes] | None = None
    modseq: int | None = None
    email_id: str | None = None  # RFC 8474
    thread_id: str | None = None
    preview: str | None = None  # RFC 8970
    save_date: datetime.datetime | None = None  # RFC 8514
    envelope: bytes | None = None  # ENVELOPE already encoded (a cache); else from ``parsed``


def fetch_response(
    msg: MessageView,
    attributes: Sequence[FetchAttribute],
    *,
    uid_fetch: bool = False,
    add_flags: bool = False,
    add_modseq: bool = False,
    utf8: bool = False,
) -> bytes:
    """``uid_fetch``: UID is always included (RFC 9051 §6.4.9); ``add_flags``: FLAGS after an
    implicit \\Seen; ``add_modseq``: MODSEQ for CHANGEDSINCE (RFC 7162 §3.1.4.1).
    Raises ``sections.UnknownCteError`` for BINARY on an undecodable part (NO [UNKNOWN-CTE])."""
    atts = list(attributes)
    names = {a.name for a in atts}
    if uid_fetch and "UID" not in names:
        atts.insert(0, FetchAttribute("UID"))
    if add_flags and "FLAGS" not in names:
        atts.append(FetchAttribute("FLAGS"))
    if add_modseq and "MODSEQ" not in names:
        atts.append(FetchAttribute("MODSEQ"))
    raw_cache: list[bytes] = []

    def raw() -> bytes:
        if not raw_cache:
            data = msg.raw() if callable(msg.raw) else msg.raw
            raw_cache.append(data or b"")
        return raw_cache[0]

    items: list[tuple[str, object]] = []
    seen: set[str] = set()
    for att in atts:
        name = att.response_name()
        if name in seen:
            continue
        seen.add(name)
        items.append(_item(msg, att, raw, utf8))
    return responses.fetch(msg.seq, items, utf8)


def _item(
    msg: MessageView, att: FetchAttribute, raw: Callable[[], bytes], utf8: bool
) -> tuple[str, object]:
    n = att.name
    if n == "FLAGS":
        return n, responses.fetch_flags(msg.flags)
    if n == "UID":
        return n, msg.uid
    if n == "INTERNALDATE":
        return n, w.Raw(
            w.date_time(msg.internal_date or datetime.datetime.now(datetime.timezone.utc))
        )
    if n == "RFC822.SIZE":
        return n, msg.size
    if n == "MODSEQ":
        return n, (msg.modseq or 0,)
    if n in ("EMAILID", "THREADID"):
        value = msg.email_id if n == "EMAILID" else msg.thread_id
        return n, (w.Atom(value),) if value else None  # RFC 8474 §5.1: THREADID NIL when unknown
    if n == "PREVIEW":
        return n, msg.preview
    if n == "SAVEDATE":
        return n, w.Raw(w.date_time(msg.save_date)) if msg.save_date else None
    structure = msg.parsed.structure if msg.parsed is not None else None
    if n == "ENVELOPE":
        return n, w.Raw(msg.envelope if msg.envelope is not None else envelope(msg.parsed, utf8))
    if n in ("BODY", "BODYSTRUCTURE") and att.section is None:
        return n, w.Raw(body_structure(structure, n == "BODYSTRUCTURE", utf8))
    name, data = fetch_section(raw(), structure, att)
    if n == "BINARY.SIZE":
        return name, len(data or b"")
    return name, data  # None → NIL for a part that does not exist


# ---- the common case: only UID / FLAGS / MODSEQ / RFC822.SIZE --------------------------------

_SIMPLE = ("UID", "FLAGS", "MODSEQ", "RFC822.SIZE")


def simple_items(
    attributes: Sequence[FetchAttribute], *, uid_fetch: bool = False, add_modseq: bool = False
) -> tuple[str, ...] | None:
    """The item names ``fetch_response`` would answer, in its order, when every attribute is
    one of UID, FLAGS, MODSEQ, RFC822.SIZE (what clients sync flags with: ``FETCH 1:* (UID
    FLAGS)``, thousands of lines); None otherwise. ``simple_fetch`` then encodes a line
    byte-for-byte like ``fetch_response``, without the per-message objects."""
    names: list[str] = []
    for a in attributes:
        if a.name not in _SIMPLE or a.section is not None:
            return None
        if a.name not in names:
            names.append(a.name)
    if uid_fetch and "UID" not in names:
        names.insert(0, "UID")
    if add_modseq and "MODSEQ" not in names:
        names.append("MODSEQ")
    return tuple(names)


def simple_fetch(seq: int, items: tuple[str, ...], uid: int, flags: bytes, modseq: int,
                 size: int) -> bytes:
    """One ``* seq FETCH (...)`` line for ``simple_items``; ``flags``: ``_writers.flag_list``."""
    parts = []
    for n in items:
        if n == "UID":
            parts.append(b"UID %d" % uid)
        elif n == "FLAGS":
            parts.append(b"FLAGS " + flags)
        elif n == "MODSEQ":
            parts.append(b"MODSEQ (%d)" % (modseq or 0))
        else:
            parts.append(b"RFC822.SIZE %d" % size)
    return b"* %d FETCH (" % seq + b" ".join(parts) + b")\r\n"
