"""fetch_response: a whole FETCH line from a MessageView."""

from __future__ import annotations

import datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st
from imap_driver import one
from imap_messages import RAW, build

from protocols.imap import _writers as _w
from protocols.imap.fetch import (
    MessageView,
    fetch_response,
    needs_parsed,
    needs_raw,
    simple_fetch,
    simple_items,
)
from protocols.imap.sections import UnknownCteError
from protocols.imap.values import FetchAttribute
from mailserver.message.model import MimePart, ParsedMessage

WHEN = datetime.datetime(
    1996, 7, 17, 2, 44, 25, tzinfo=datetime.timezone(-datetime.timedelta(hours=7))
)


def atts(spec: bytes, uid: bool = False):
    return one(b"a " + (b"UID " if uid else b"") + b"FETCH 1 " + spec + b"\r\n").attributes


def test_simple_items_and_uid_added_for_uid_fetch():
    view = MessageView(
        seq=12,
        uid=4827313,
        flags=("\\Seen",),
        internal_date=WHEN,
        size=4286,
        modseq=7,
        email_id="M6d99ac3275bb4e",
        preview="Hello",
    )
    assert not needs_raw(atts(b"FAST")) and not needs_parsed(atts(b"FAST"))
    assert fetch_response(view, atts(b"FAST")) == (
        b'* 12 FETCH (FLAGS (\\Seen) INTERNALDATE "17-Jul-1996 02:44:25 -0700" RFC822.SIZE 4286)\r\n'
    )
    assert fetch_response(
        view, atts(b"(FLAGS MODSEQ EMAILID THREADID PREVIEW SAVEDATE)"), uid_fetch=True
    ) == (
        b"* 12 FETCH (UID 4827313 FLAGS (\\Seen) MODSEQ (7) EMAILID (M6d99ac3275bb4e) THREADID NIL "
        b'PREVIEW "Hello" SAVEDATE NIL)\r\n'
    )
    assert fetch_response(
        view, atts(b"(UID)"), uid_fetch=True, add_flags=True, add_modseq=True
    ) == (b"* 12 FETCH (UID 4827313 FLAGS (\\Seen) MODSEQ (7))\r\n")


def test_sections_structure_and_lazy_raw():
    calls = []

    def load() -> bytes:
        calls.append(1)
        return RAW

    view = MessageView(seq=1, uid=9, parsed=build(), raw=load, size=len(RAW))
    a = atts(b"(BODY.PEEK[2.1] BODY[2.1]<1.2> BINARY[3] BINARY.SIZE[3] BODY[9] BODY)")
    assert needs_raw(a)
    out = fetch_response(view, a)
    assert out.startswith(
        b"* 1 FETCH (BODY[2.1] {5}\r\nplain BODY[2.1]<1> {2}\r\nla BINARY[3] {9}\r\n%PDF-1.4\n "
        b'BINARY.SIZE[3] 9 BODY[9] NIL BODY (("TEXT" "PLAIN"'
    )
    assert calls == [1]
    assert fetch_response(view, atts(b"(ENVELOPE)")).startswith(
        b'* 1 FETCH (ENVELOPE ("Mon, 7 Feb 1994'
    )
    assert calls == [1]


def test_binary_unknown_cte():
    root = MimePart("", 0, 0, 0, 3, "text/plain", content_transfer_encoding="x-uuencode")
    view = MessageView(
        seq=1, uid=1, parsed=ParsedMessage(size=3, header_end=0, structure=root), raw=b"abc"
    )
    with pytest.raises(UnknownCteError):
        fetch_response(view, atts(b"(BINARY[1])"))
    assert fetch_response(view, atts(b"(BODY[1])")) == b"* 1 FETCH (BODY[1] {3}\r\nabc)\r\n"


# ---- the flags-only fast path: byte-for-byte what fetch_response answers -------------------

_SIMPLE_NAMES = ("UID", "FLAGS", "MODSEQ", "RFC822.SIZE")


@given(names=st.lists(st.sampled_from(_SIMPLE_NAMES), min_size=1, max_size=6),
       uid_fetch=st.booleans(), add_modseq=st.booleans(),
       flags=st.lists(st.sampled_from(["\\Seen", "\\Deleted", "$Label1", "custom"]),
                      unique=True),
       seq=st.integers(1, 10**6), uid=st.integers(1, 2**32 - 1),
       modseq=st.integers(0, 2**63 - 1), size=st.integers(0, 10**9))
def test_simple_fetch_matches_fetch_response(names, uid_fetch, add_modseq, flags, seq, uid,
                                             modseq, size):
    atts = [FetchAttribute(n) for n in names]
    items = simple_items(atts, uid_fetch=uid_fetch, add_modseq=add_modseq)
    assert items is not None
    view = MessageView(seq=seq, uid=uid, flags=tuple(flags), size=size, modseq=modseq)
    assert simple_fetch(seq, items, uid, _w.flag_list(flags), modseq, size) == fetch_response(
        view, atts, uid_fetch=uid_fetch, add_modseq=add_modseq)


def test_simple_items_refuses_anything_else():
    assert simple_items([FetchAttribute("FLAGS"), FetchAttribute("ENVELOPE")]) is None
    assert simple_items([FetchAttribute("INTERNALDATE")]) is None
    assert simple_items([FetchAttribute("UID"), FetchAttribute("FLAGS")]) == ("UID", "FLAGS")
