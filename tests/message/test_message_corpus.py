"""parse_message on the corpus in tests/message/corpus/: byte-exact offsets, header summary,
derived text, and a cross-check of every leaf against Python's ``email`` package."""

from __future__ import annotations

import email
import json
from pathlib import Path

import pytest

from mailserver.message import Address, MimePart, parse_message
from mailserver.message.mime import decode_body, part_text
from mailserver.message.parser import parse_message_strict

CORPUS = Path(__file__).parent / "corpus"
ALL = sorted(p.name for p in CORPUS.glob("*.eml"))


def load(name: str) -> bytes:
    return (CORPUS / name).read_bytes()


def parts(raw: bytes) -> dict[str, MimePart]:
    """part_id → part; for message/rfc822 the rfc822 part wins over its root (same id)."""
    out: dict[str, MimePart] = {}
    for p in parse_message_strict(raw).structure.walk():
        out.setdefault(p.part_id, p)
    return out


def body(raw: bytes, p: MimePart) -> bytes:
    return raw[p.body_start : p.body_end]


def head(raw: bytes, p: MimePart) -> bytes:
    return raw[p.header_start : p.header_end]


# ---------------------------------------------------------------------------------------------
# invariants and cross-checks over the whole corpus


def check_offsets(raw: bytes, part: MimePart) -> None:
    assert 0 <= part.header_start <= part.header_end <= part.body_start <= part.body_end
    assert part.body_end <= len(raw)
    assert part.header_end == part.body_start
    for child in part.children:
        assert part.body_start <= child.header_start
        assert child.body_end <= part.body_end
        check_offsets(raw, child)


@pytest.mark.parametrize("name", ALL)
def test_offsets_nest(name: str) -> None:
    raw = load(name)
    pm = parse_message_strict(raw)
    assert pm.size == len(raw)
    assert pm.structure.header_start == 0 and pm.structure.body_end == len(raw)
    assert pm.header_end == pm.structure.header_end
    check_offsets(raw, pm.structure)


@pytest.mark.parametrize("name", ALL)
def test_structure_json_round_trips(name: str) -> None:
    pm = parse_message(load(name))
    again = MimePart.from_dict(json.loads(pm.structure_json()))
    assert again == pm.structure


@pytest.mark.parametrize("name", [n for n in ALL if n != "boundary_never.eml"])
def test_leaves_match_email_package(name: str) -> None:
    # walk orders agree: a message/rfc822 part, then its message, then that message's parts
    raw = load(name)
    ours = list(parse_message_strict(raw).structure.walk())
    theirs = list(email.message_from_bytes(raw).walk())
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        assert a.content_type == b.get_content_type(), a.part_id
        if not a.children and not b.is_multipart():
            assert decode_body(raw, a) == b.get_payload(decode=True), a.part_id
        fn = b.get_filename()
        if fn and "=?" not in fn:
            assert a.filename == fn


# ---------------------------------------------------------------------------------------------
# individual messages


def test_alternative() -> None:
    raw = load("alternative.eml")
    pm = parse_message_strict(raw)
    p = parts(raw)
    root = p[""]
    assert root.content_type == "multipart/alternative"
    assert root.param("boundary") == "----=_Part_0_1"
    assert head(raw, root).endswith(b'boundary="----=_Part_0_1"\r\n\r\n')
    assert body(raw, p["1"]) == b"Hi Bob,\r\n\r\nHow about lunch on Friday at noon?\r\n\r\nAlice"
    assert head(raw, p["1"]) == (
        b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 7bit\r\n\r\n"
    )
    assert body(raw, p["2"]).startswith(b"<html><head>")
    assert body(raw, p["2"]).endswith(b"</body></html>")
    assert p["1"].lines == 5 and p["2"].lines == 3
    assert p["1"].charset == "utf-8"
    assert pm.subject == "Lunch on Friday?"
    assert pm.from_ == (Address("Alice Example", "alice@example.org"),)
    assert pm.to == (Address("Bob", "bob@example.net"), Address("Carol, C.", "carol@example.net"))
    assert pm.cc == (Address("Dave D", "dave@example.net"),)
    assert pm.sent_at == 1714986900
    assert pm.date_header == "Mon, 6 May 2024 11:15:00 +0200"
    assert pm.message_id == "20240506091500.1234@mail.example.org"
    assert pm.preview == "Hi Bob, How about lunch on Friday at noon? Alice"
    assert "lunch" in pm.search_text and "alert" not in pm.search_text
    assert not pm.has_attachment
    assert dict(pm.envelope_raw)["to"] == 'Bob <bob@example.net>, "Carol, C." <carol@example.net>'
    assert [n for n, _ in pm.envelope_raw] == ["date", "subject", "from", "to", "cc", "message-id"]


def test_html_part_to_text() -> None:
    raw = load("alternative.eml")
    from mailserver.message.html2text import html_to_text

    text = html_to_text(part_text(raw, parts(raw)["2"]))
    assert text == "Hi Bob,\nHow about lunch on Friday at noon? & more\nAlice"


def test_mixed_pdf_attachment() -> None:
    raw = load("mixed_pdf.eml")
    pm = parse_message_strict(raw)
    p = parts(raw)
    pdf = p["2"]
    assert pdf.content_type == "application/pdf"
    assert pdf.disposition == "attachment"
    assert pdf.filename == "invoice-42.pdf"
    assert pdf.content_transfer_encoding == "base64"
    assert decode_body(raw, pdf) == (CORPUS / "_pdf_bytes.bin").read_bytes()
    assert not body(raw, pdf).endswith(b"\n")  # the CRLF before the delimiter is excluded
    assert raw[pdf.body_end :] == b"\r\n--mix-1--\r\n"
    assert body(raw, p["1"]) == b"Please find your invoice attached."
    assert pm.has_attachment
    assert pm.sent_at == 1715083200
    assert "invoice-42.pdf" in pm.search_text


def test_forwarded_message_rfc822() -> None:
    raw = load("forward_rfc822.eml")
    pm = parse_message_strict(raw)
    msg = pm.structure.children[1]
    assert msg.part_id == "2" and msg.content_type == "message/rfc822"
    assert body(raw, msg).startswith(b"From: Alice Example")
    assert body(raw, msg).endswith(b"--inner--\r\n")  # the blank line before --outer-- stays
    assert msg.lines == 17
    emb = msg.embedded
    assert emb is not None
    assert emb.subject == "Lunch on Friday? \u2615"
    assert emb.from_ == (Address("Alice Example", "alice@example.org"),)
    assert emb.message_id == "20240506091500.1234@mail.example.org"
    assert emb.size == msg.body_end - msg.body_start
    assert dict(emb.envelope_raw)["subject"] == "=?utf-8?q?Lunch_on_Friday=3F_=E2=98=95?="
    (inner,) = msg.children
    assert inner.part_id == "2"  # same section as the message/rfc822 part (BODY[2.HEADER])
    assert inner.header_start == msg.body_start
    assert head(raw, inner).endswith(b'boundary="inner"\r\n\r\n')
    assert emb.header_end == inner.header_end
    assert inner.content_type == "multipart/alternative"
    assert [c.part_id for c in inner.children] == ["2.1", "2.2"]
    assert body(raw, inner.children[0]) == b"Inner plain text."
    assert body(raw, inner.children[1]) == b"<p>Inner <i>html</i></p>"
    assert pm.in_reply_to == ("20240506091500.1234@mail.example.org",)
    assert pm.references == ("20240506091500.1234@mail.example.org",)
    assert pm.base_subject == "lunch on friday?"
    assert pm.has_attachment  # a forwarded message counts (JMAP puts it in attachments)
    assert "Inner plain text." in pm.search_text


def test_related_inline_image_is_not_an_attachment() -> None:
    raw = load("related_inline.eml")
    pm = parse_message_strict(raw)
    p = parts(raw)
    assert p["1"].content_type == "text/plain" and body(raw, p["1"]) == b""
    assert p["2"].content_type == "multipart/related"
    assert p["2.2"].content_type == "image/png" and p["2.2"].content_id == "<logo@x>"
    assert decode_body(raw, p["2.2"]).startswith(b"\x89PNG")
    assert not pm.has_attachment
    # the plain alternative is empty, so the HTML one is indexed and previewed
    assert pm.preview == "News Big news today"


def test_missing_close_delimiter() -> None:
    raw = load("missing_close.eml")
    p = parts(raw)
    assert body(raw, p["1"]) == b"first part"
    assert body(raw, p["2"]) == b"second part, cut off"
    assert p["2"].body_end == len(raw)


def test_boundary_never_appears() -> None:
    raw = load("boundary_never.eml")
    pm = parse_message_strict(raw)
    root = pm.structure
    assert root.content_type == "multipart/mixed"
    (only,) = root.children  # synthetic header-less text/plain child over the whole body
    assert only.part_id == "1" and only.content_type == "text/plain"
    assert only.header_start == only.header_end == only.body_start == root.body_start
    assert body(raw, only) == b"Just some text that claims to be multipart.\r\n"
    assert "claims to be multipart" in pm.search_text


def test_bad_base64_is_tolerated() -> None:
    pm = parse_message_strict(load("bad_base64.eml"))
    assert pm.search_text.startswith("Hello world")


def test_unknown_charset() -> None:
    pm = parse_message_strict(load("unknown_charset.eml"))
    assert pm.subject == "café"
    assert pm.structure.charset == "x-made-up"
    assert pm.search_text.strip() == "café au lait"


def test_latin1_8bit_headers() -> None:
    pm = parse_message_strict(load("latin1_headers.eml"))
    assert pm.subject == "Café à la crème"
    assert pm.from_ == (Address("José Muñoz", "jose@example.es"),)
    assert pm.to == (Address("Renée", "renee@example.fr"),)
    assert pm.search_text.strip() == "Déjà vu."


def test_utf8_headers_rfc6532() -> None:
    pm = parse_message_strict(load("utf8_headers.eml"))
    assert pm.subject == "Grüße aus Köln"
    assert pm.from_ == (Address("Jörg Müller", "jörg@müller.example"),)
    assert pm.to == (Address("田中", "田中@例え.jp"),)
    assert pm.message_id == "ümlaut@example.de"
    assert pm.preview == "Schöne Grüße!"


def test_bare_lf_line_endings() -> None:
    raw = load("bare_lf.eml")
    assert b"\r" not in raw
    pm = parse_message_strict(raw)
    p = parts(raw)
    assert head(raw, pm.structure).endswith(b'boundary="lf"\n\n')
    assert head(raw, p["1"]) == b"Content-Type: text/plain\n\n"
    assert body(raw, p["1"]) == b"line one\nline two"
    assert body(raw, p["2"]) == b"-old\n+new"
    assert p["2"].filename == "fix.diff" and p["2"].disposition == "attachment"
    assert p["1"].lines == 2
    assert pm.has_attachment


def test_quoted_printable_soft_breaks() -> None:
    raw = load("qp_soft.eml")
    pm = parse_message_strict(raw)
    text = part_text(raw, pm.structure)
    assert text == (
        "This is a long line that is wrapped with a soft line break here and continues."
        " Café= \nSecond line.\n"
    )


def test_rfc2231_and_rfc2047_filenames() -> None:
    raw = load("rfc2231.eml")
    p = parts(raw)
    assert p["2"].filename == "日本語の report.txt"
    assert p["2"].disposition_params == (("filename", "日本語の report.txt"),)
    assert p["3"].filename == "übersicht.xls"
    assert p["3"].param("name") == "übersicht.xls"


def test_iso_2022_jp() -> None:
    raw = load("iso2022jp.eml")
    pm = parse_message_strict(raw)
    # two encoded-words separated by folding whitespace: joined without the space
    expected = "=?ISO-2022-JP?B?GyRCJEokcyQrGyhC?= =?ISO-2022-JP?B?GyRCJUYlOSVIGyhC?="
    assert pm.subject == str(email.header.make_header(email.header.decode_header(expected)))
    assert pm.subject == "なんかテスト"
    assert pm.preview == "こんにちは"


def test_boundaries_sharing_a_prefix() -> None:
    raw = load("prefix_boundary.eml")
    pm = parse_message_strict(raw)
    p = parts(raw)
    assert [x.part_id for x in pm.structure.walk()] == ["", "1", "1.1", "1.2", "2"]
    assert body(raw, p["1.1"]) == b"plain"
    assert body(raw, p["1.2"]) == b"<p>html</p>"
    assert body(raw, p["1"]).endswith(b"--=_B_alt--\r\n")
    assert body(raw, p["2"]) == b"/9j/4AAQ"
    assert pm.has_attachment  # image with a file name outside multipart/related


def test_digest_defaults_to_message_rfc822() -> None:
    raw = load("digest.eml")
    pm = parse_message_strict(raw)
    first, second = pm.structure.children
    assert first.content_type == "message/rfc822" and head(raw, first) == b"\r\n"
    assert first.embedded.subject == "first"
    assert body(raw, first.children[0]) == b"Body one."
    assert second.embedded.from_ == (Address("", "two@example.org"),)


def test_headers_only_without_separator() -> None:
    raw = load("headers_only.eml")
    pm = parse_message_strict(raw)
    assert pm.subject == "no body at all"
    assert pm.header_end == len(raw) and pm.structure.body_start == len(raw)
    assert pm.preview == "" and pm.search_text == ""


def test_signature_is_not_an_attachment() -> None:
    pm = parse_message_strict(load("signed.eml"))
    assert pm.structure.children[1].content_type == "application/pgp-signature"
    assert not pm.has_attachment


def _mixed(*parts: bytes, outer: bytes = b"multipart/mixed") -> bytes:
    body = b"".join(b"--b\r\n" + p + b"\r\n" for p in parts)
    return b"Content-Type: " + outer + b'; boundary="b"\r\n\r\n' + body + b"--b--\r\n"


@pytest.mark.parametrize(
    "part, outer, expected",
    [
        # Outlook signature image: inline, named, referenced by cid → not an attachment
        (b"Content-Type: image/png; name=image001.png\r\nContent-ID: <i1>\r\n"
         b"Content-Disposition: inline; filename=image001.png\r\n\r\nx",
         b"multipart/related", False),
        # the same image in multipart/mixed is one (a phone's inline photo)
        (b"Content-Type: image/png; name=image001.png\r\nContent-ID: <i1>\r\n\r\nx",
         b"multipart/mixed", True),
        (b"Content-Type: image/png\r\n\r\nx", b"multipart/mixed", False),  # no file name
        (b"Content-Type: text/plain\r\nContent-Disposition: attachment\r\n\r\nx",
         b"multipart/mixed", True),
        (b"Content-Type: text/csv; name=a.csv\r\n\r\nx", b"multipart/mixed", False),
        (b"Content-Type: application/pgp-signature; name=s.asc\r\n\r\nx", b"multipart/mixed", True),
    ],
)  # fmt: skip
def test_has_attachment_rule(part: bytes, outer: bytes, expected: bool) -> None:
    raw = _mixed(b"Content-Type: text/html\r\n\r\n<p>hi</p>", part, outer=outer)
    assert parse_message_strict(raw).has_attachment is expected
