"""Hostile shapes: deep nesting, huge part counts, 100 KB header lines, binary, odd inputs."""

from __future__ import annotations

import time

from mailserver.message import parse_message
from mailserver.message.mime import MAX_DEPTH
from mailserver.message.parser import SEARCH_TEXT_MAX, parse_message_strict


def depth(part) -> int:
    return 1 + max((depth(c) for c in part.children), default=0)


def test_deeply_nested_multiparts_are_capped() -> None:
    n = 500
    raw = b"".join(
        b'Content-Type: multipart/mixed; boundary="b%d"\r\n\r\n--b%d\r\n' % (i, i) for i in range(n)
    )
    raw += b"Content-Type: text/plain\r\n\r\ndeep\r\n"
    pm = parse_message_strict(raw)
    # MAX_DEPTH multiparts, then one leaf-like multipart with its synthetic text child
    assert depth(pm.structure) == MAX_DEPTH + 2
    deepest = list(pm.structure.walk())[-1]
    assert deepest.content_type == "text/plain" and deepest.body_end == len(raw)


def test_deeply_nested_messages_are_capped() -> None:
    raw = b"Content-Type: message/rfc822\r\n\r\n" * 300 + b"Subject: x\r\n\r\nbody"
    pm = parse_message_strict(raw)
    assert depth(pm.structure) == MAX_DEPTH + 1
    assert all(p.part_id == "" for p in pm.structure.walk())


def test_many_parts_are_capped_and_fast() -> None:
    raw = b'Content-Type: multipart/mixed; boundary="x"\r\n\r\n' + b"--x\r\n\r\na\r\n" * 50000
    t = time.perf_counter()
    pm = parse_message_strict(raw)
    elapsed = time.perf_counter() - t
    assert len(pm.structure.children) < 5001
    assert pm.structure.children[-1].body_end == len(raw)  # the rest stays in the last part
    assert elapsed < 2.0


def test_100kb_folded_header() -> None:
    to = b",\r\n ".join(b"User %d <user%d@example.com>" % (i, i) for i in range(3500))
    assert len(to) > 100_000
    raw = b"From: a@x\r\nTo: " + to + b"\r\nSubject: big\r\n\r\nbody\r\n"
    t = time.perf_counter()
    pm = parse_message_strict(raw)
    elapsed = time.perf_counter() - t
    assert len(pm.to) == 3500 and pm.to[-1].email == "user3499@example.com"
    assert pm.subject == "big"
    assert raw[pm.header_end :] == b"body\r\n"
    assert elapsed < 1.0


def test_100kb_single_line_headers() -> None:
    raw = (
        b"Subject: " + b"x" * 100_000 + b"\r\nFrom: " + b"(" * 50_000 + b"\r\n"
        b"X-Junk: " + b"=?utf-8?q?" * 10_000 + b"\r\nReferences: " + b"<a@b>" * 20_000
        + b"\r\n\r\nbody"
    )  # fmt: skip
    t = time.perf_counter()
    pm = parse_message_strict(raw)
    assert time.perf_counter() - t < 1.0
    assert len(pm.subject) == 100_000
    assert len(pm.references) == 20_000


def test_search_text_is_capped() -> None:
    raw = b"Content-Type: text/plain\r\n\r\n" + (b"word " * 100 + b"\r\n") * 5000
    pm = parse_message_strict(raw)
    assert len(pm.search_text) == SEARCH_TEXT_MAX


def test_big_attachment_is_not_decoded() -> None:
    blob = b"QUJD" * 19 + b"\r\n"
    raw = (
        b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\n\r\nhi\r\n--b\r\n'
        b"Content-Type: application/zip; name=a.zip\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        + blob * 200_000  # 16 MB
        + b"--b--\r\n"
    )
    t = time.perf_counter()
    pm = parse_message_strict(raw)
    assert time.perf_counter() - t < 0.2
    assert pm.has_attachment and pm.search_text == "hi\na.zip"


def test_odd_inputs() -> None:
    for raw in (b"", b"\r\n", b"\n", b"\r", b":", b"--", b"\x00" * 10, b"\r\n\r\n\r\n"):
        pm = parse_message_strict(raw)
        assert pm.structure.body_end == len(raw)
    assert parse_message(bytearray(b"Subject: x\r\n\r\n")).subject == "x"
    assert parse_message(memoryview(b"Subject: y\r\n\r\n")).subject == "y"


def test_no_headers_at_all() -> None:
    raw = b"just a line of text\r\n\r\nand more"
    pm = parse_message_strict(raw)
    assert pm.header_end == 0 and pm.structure.body_start == 0
    assert pm.preview == "just a line of text and more"


def test_mbox_from_line_is_tolerated() -> None:
    raw = b"From alice@x Mon May  6 09:15:00 2024\r\nSubject: hi\r\n\r\nbody"
    pm = parse_message_strict(raw)
    assert pm.subject == "hi" and raw[pm.header_end :] == b"body"


def test_empty_parts_and_delimiters_without_line_ends() -> None:
    raw = (
        b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
        b"--b\r\n--b\r\n\r\n--b\r\n\r\n\r\n--b\r\nx\r\n--b--"
    )
    pm = parse_message_strict(raw)
    a, b, c, d = pm.structure.children
    for empty in (a, b):  # the only CRLF in b belongs to the next delimiter (RFC 2046 §5.1.1)
        assert empty.header_start == empty.header_end == empty.body_start == empty.body_end
    assert raw[c.header_start : c.header_end] == b"\r\n" and c.body_start == c.body_end
    assert d.header_end == d.header_start  # no header block: "x" is body
    assert raw[d.body_start : d.body_end] == b"x"


def test_encoded_message_rfc822_stays_a_leaf() -> None:
    raw = (
        b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\n'
        b"Content-Type: message/rfc822\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        b"U3ViamVjdDogeA0KDQp5\r\n--b--\r\n"
    )
    pm = parse_message_strict(raw)
    (msg,) = pm.structure.children
    assert msg.embedded is None and msg.children == ()
    assert pm.has_attachment


def test_8bit_boundaries() -> None:
    for enc in ("utf-8", "latin-1"):
        b = "grenzé".encode(enc)
        raw = (
            b'Content-Type: multipart/mixed; boundary="' + b + b'"\r\n\r\n--' + b
            + b"\r\n\r\nbody\r\n--" + b + b"--\r\n"
        )  # fmt: skip
        (child,) = parse_message_strict(raw).structure.children
        assert raw[child.body_start : child.body_end] == b"body", enc


def test_pathological_header_and_html_shapes_stay_linear() -> None:
    from mailserver.message.headers import parse_addresses, parse_params
    from mailserver.message.html2text import html_to_text

    cases = [
        lambda: parse_params("a" + "; x*%d=a" % 1 * 12_000),
        lambda: parse_params("a" + "".join("; x*%d*=%%41" % i for i in range(12_000))),
        lambda: parse_addresses("<" * 50_000),
        lambda: parse_addresses(":" * 100_000),
        lambda: parse_addresses('"' * 100_000),
        lambda: parse_addresses("(" * 50_000 + ")" * 50_000),
        lambda: html_to_text("<p" * 50_000),
        lambda: html_to_text("<script" * 30_000),
        lambda: html_to_text("<td<br" * 20_000),
        lambda: html_to_text("<!--" * 30_000),
    ]
    for case in cases:
        t = time.perf_counter()
        case()
        assert time.perf_counter() - t < 0.5
