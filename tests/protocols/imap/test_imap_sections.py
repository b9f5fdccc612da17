"""BODY[section]<partial> and BINARY[section]: byte-exact extraction."""

from __future__ import annotations

import pytest
from imap_driver import one
from imap_messages import (
    INNER_BODY,
    INNER_HEADER,
    OUTER_HEADER,
    P1_BODY,
    P1_HEADER,
    P3_BODY,
    P3_HEADER,
    RAW,
    build,
)

from mailserver.message.model import MimePart
from protocols.imap import FetchAttribute, Section
from protocols.imap import responses as r
from protocols.imap.sections import (
    UnknownCteError,
    apply_partial,
    binary_bytes,
    fetch_section,
    filter_header,
    find_part,
    section_bytes,
)

EXPECTED = {
    "": RAW,
    "HEADER": OUTER_HEADER,
    "TEXT": RAW[len(OUTER_HEADER) :],
    "1": P1_BODY,
    "1.MIME": P1_HEADER,
    "2": INNER_HEADER + INNER_BODY,
    "2.MIME": b"Content-Type: message/rfc822\r\n\r\n",
    "2.HEADER": INNER_HEADER,
    "2.TEXT": INNER_BODY,
    "2.HEADER.FIELDS (SUBJECT)": b"Subject: inner\r\n\r\n",
    "2.1": b"plain",
    "2.1.MIME": b"Content-Type: text/plain\r\n\r\n",
    "2.2": b"<p>html</p>",
    "3": P3_BODY,
    "3.MIME": P3_HEADER,
    "HEADER.FIELDS (subject FROM)": b'From: "Doe, John" <john@example.com>\r\n'
    b"Subject: =?UTF-8?Q?Gr=C3=BC=C3=9Fe?=\r\n folded\r\n\r\n",
    "HEADER.FIELDS.NOT (To Cc Subject Date Message-ID In-Reply-To Content-Type)": (
        b'From: "Doe, John" <john@example.com>\r\n\r\n'
    ),
    "HEADER.FIELDS (X-NOT-THERE)": b"\r\n",
}
MISSING = ["4", "0", "1.1", "1.HEADER", "3.TEXT", "2.3", "2.1.1", "1.2.3"]


def _section(spec: str) -> Section:
    e = one(b"a FETCH 1 (BODY[" + spec.encode() + b"])\r\n")
    return e.attributes[0].section


def _structures():
    yield "hand-built", build().structure
    from mailserver.message import parse_message

    yield "parser", parse_message(RAW).structure


@pytest.mark.parametrize("which,root", list(_structures()))
def test_sections_byte_exact(which, root):
    for spec, data in EXPECTED.items():
        assert section_bytes(RAW, root, _section(spec)) == data, (which, spec)
    for spec in MISSING:
        assert (
            section_bytes(
                RAW,
                root,
                Section(
                    tuple(int(x) for x in spec.split(".") if x.isdigit()),
                    "HEADER" if "HEADER" in spec else "TEXT" if "TEXT" in spec else None,
                ),
            )
            is None
        ), (which, spec)


@pytest.mark.parametrize("which,root", list(_structures()))
def test_binary_decoding(which, root):
    assert binary_bytes(RAW, root, Section((1,))) == "Grüße\r\nline2 joined".encode()
    assert binary_bytes(RAW, root, Section((3,))) == b"%PDF-1.4\n"
    assert binary_bytes(RAW, root, Section((2, 1))) == b"plain"
    assert binary_bytes(RAW, root, Section((9,))) is None


def test_unknown_cte():
    part = MimePart("", 0, 0, 0, 3, "text/plain", content_transfer_encoding="x-uuencode")
    with pytest.raises(UnknownCteError):
        binary_bytes(b"abc", part, Section((1,)))


def test_single_part_message_section_1_is_the_body():
    raw = b"Subject: hi\r\nContent-Type: text/plain\r\n\r\nbody text\r\n"
    root = MimePart("", 0, 41, 41, len(raw), "text/plain", lines=1)
    assert raw[41:] == b"body text\r\n"
    assert find_part(root, (1,)) is root
    assert section_bytes(raw, root, Section((1,))) == b"body text\r\n"
    assert section_bytes(raw, root, Section((1,), "MIME")) == raw[:41]
    assert section_bytes(raw, root, Section((), "TEXT")) == b"body text\r\n"
    assert section_bytes(raw, root, Section((2,))) is None


def test_partial_and_response_names():
    root = build().structure
    att = one(b"a FETCH 1 (BODY.PEEK[2.1]<1.3>)\r\n").attributes[0]
    assert fetch_section(RAW, root, att) == ("BODY[2.1]<1>", b"lai")
    att = one(b"a FETCH 1 (BODY[]<0.10>)\r\n").attributes[0]
    assert fetch_section(RAW, root, att) == ("BODY[]<0>", RAW[:10])
    att = one(b"a FETCH 1 (BODY[1]<1000.10>)\r\n").attributes[0]
    assert fetch_section(RAW, root, att) == ("BODY[1]<1000>", b"")
    att = one(b"a FETCH 1 (BINARY[3]<1.3>)\r\n").attributes[0]
    assert fetch_section(RAW, root, att) == ("BINARY[3]<1>", b"PDF")
    att = one(b"a FETCH 1 (BINARY.SIZE[3])\r\n").attributes[0]
    name, data = fetch_section(RAW, root, att)
    assert (name, len(data)) == ("BINARY.SIZE[3]", 9)
    for spec, name, data in [
        (b"RFC822", "RFC822", RAW),
        (b"RFC822.HEADER", "RFC822.HEADER", OUTER_HEADER),
        (b"RFC822.TEXT", "RFC822.TEXT", RAW[len(OUTER_HEADER) :]),
    ]:
        assert fetch_section(RAW, root, FetchAttribute(spec.decode())) == (name, data)
    assert apply_partial(b"abc", None) == b"abc"
    att = one(b"a FETCH 1 (BODY[HEADER.FIELDS (Subject)]<0.20>)\r\n").attributes[0]
    name, data = fetch_section(RAW, root, att)
    assert r.fetch(1, [(name, data)]) == (
        b"* 1 FETCH (BODY[HEADER.FIELDS (Subject)]<0> {20}\r\nSubject: =?UTF-8?Q?G)\r\n"
    )


def test_filter_header_folding_case_and_odd_input():
    block = b"X-A: 1\r\nx-a: 2\r\n\tcontinued\r\nX-B: 3\r\n\r\n"
    assert filter_header(block, ("x-A",)) == b"X-A: 1\r\nx-a: 2\r\n\tcontinued\r\n\r\n"
    assert filter_header(block, ("X-A",), exclude=True) == b"X-B: 3\r\n\r\n"
    assert filter_header(b"X-A: no newline", ("X-A",)) == b"X-A: no newline\r\n\r\n"
    assert filter_header(b"X-A:1\nX-B:2\n\n", ("X-B",)) == b"X-B:2\n\r\n"
    assert (
        filter_header(b"garbage line\r\nX-A : spaced\r\n\r\n", ("X-A",)) == b"X-A : spaced\r\n\r\n"
    )
    assert filter_header(b"", ("X",)) == b"\r\n"
