"""ENVELOPE and BODY/BODYSTRUCTURE: exact bytes (RFC 3501 §7.4.2, RFC 9051 §7.5.2)."""

from __future__ import annotations

from imap_messages import RAW, build

from mailserver.message.model import Address, MimePart, ParsedMessage
from protocols.imap.envelope import body_structure, envelope, parse_address_list

RFC3501_HEADER = (
    b"Date: Wed, 17 Jul 1996 02:23:25 -0700 (PDT)\r\nFrom: Terry Gray <gray@cac.washington.edu>\r\n"
    b"Subject: IMAP4rev1 WG mtg summary and minutes\r\nTo: imap@cac.washington.edu\r\n"
    b"cc: minutes@CNRI.Reston.VA.US,\r\n John Klensin <KLENSIN@MIT.EDU>\r\n"
    b"Message-Id: <B27397-0100000@cac.washington.edu>\r\nMIME-Version: 1.0\r\n"
    b"Content-Type: TEXT/PLAIN; CHARSET=US-ASCII\r\n\r\n"
)
RFC3501_ENVELOPE = (
    b'("Wed, 17 Jul 1996 02:23:25 -0700 (PDT)" "IMAP4rev1 WG mtg summary and minutes" '
    b'(("Terry Gray" NIL "gray" "cac.washington.edu")) (("Terry Gray" NIL "gray" "cac.washington.edu")) '
    b'(("Terry Gray" NIL "gray" "cac.washington.edu")) ((NIL NIL "imap" "cac.washington.edu")) '
    b'((NIL NIL "minutes" "CNRI.Reston.VA.US")("John Klensin" NIL "KLENSIN" "MIT.EDU")) NIL NIL '
    b'"<B27397-0100000@cac.washington.edu>")'
)


def test_rfc3501_example_envelope_from_raw_headers():
    msg = ParsedMessage(
        size=0,
        header_end=0,
        envelope_raw=(
            ("date", "Wed, 17 Jul 1996 02:23:25 -0700 (PDT)"),
            ("from", "Terry Gray <gray@cac.washington.edu>"),
            ("subject", "IMAP4rev1 WG mtg summary and minutes"),
            ("to", "imap@cac.washington.edu"),
            ("cc", "minutes@CNRI.Reston.VA.US,\r\n John Klensin <KLENSIN@MIT.EDU>"),
            ("message-id", "<B27397-0100000@cac.washington.edu>"),
        ),
    )
    assert envelope(msg) == RFC3501_ENVELOPE


def test_rfc3501_example_with_real_parser():
    from mailserver.message import parse_message

    body = b"x\r\n" * 92
    msg = parse_message(RFC3501_HEADER + body)
    assert envelope(msg) == RFC3501_ENVELOPE
    assert body_structure(msg.structure, extensible=False) == (
        b'("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 276 92)'
    )


def test_envelope_groups_quotes_comments_and_folding():
    msg = build()
    assert envelope(msg) == (
        b'("Mon, 7 Feb 1994 21:52:25 -0800" "=?UTF-8?Q?Gr=C3=BC=C3=9Fe?= folded" '
        b'(("Doe, John" NIL "john" "example.com")) (("Doe, John" NIL "john" "example.com")) '
        b'(("Doe, John" NIL "john" "example.com")) '
        b'((NIL NIL "undisclosed-recipients" NIL)(NIL NIL NIL NIL)) '
        b'((NIL NIL "A Group" NIL)(NIL NIL "a" "x.org")("B" NIL "b" "y.org")(NIL NIL NIL NIL)'
        b'("Carl" NIL "c" "z.net")) '
        b'NIL "<abc@x>" "<1234@local.machine.example>")'
    )


def test_envelope_nil_rules_and_sender_defaults():
    empty = ParsedMessage(size=0, header_end=0)
    assert envelope(empty) == b"(NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL)"
    msg = ParsedMessage(
        size=0,
        header_end=0,
        envelope_raw=(
            ("from", "a@b.c"),
            ("sender", "s@b.c"),
            ("reply-to", "<r@b.c>"),
            ("subject", ""),
            ("bcc", "<@route,@r2:x@y.z>"),
        ),
    )
    assert envelope(msg) == (
        b'(NIL "" ((NIL NIL "a" "b.c")) ((NIL NIL "s" "b.c")) ((NIL NIL "r" "b.c")) NIL NIL '
        b'((NIL "@route,@r2" "x" "y.z")) NIL NIL)'
    )
    # fallback when the parser kept no raw headers: the decoded summary (8-bit → literals)
    summary = ParsedMessage(
        size=0,
        header_end=0,
        subject="Grüße",
        from_=(Address("Jöhn", "j@x.de"),),
        to=(Address("", "nodomain"),),
        message_id="id@x",
        in_reply_to=("p@x",),
        date_header="Mon, 7 Feb 1994 21:52:25 -0800",
    )
    john = b'(({5}\r\nJ\xc3\xb6hn NIL "j" "x.de"))'
    assert envelope(summary) == (
        b'("Mon, 7 Feb 1994 21:52:25 -0800" {7}\r\nGr\xc3\xbc\xc3\x9fe '
        + john
        + b" "
        + john
        + b" "
        + john
        + b' ((NIL NIL "nodomain" "MISSING_DOMAIN")) NIL NIL "<p@x>" "<id@x>")'
    )
    assert envelope(summary, utf8=True).startswith(
        b'("Mon, 7 Feb 1994 21:52:25 -0800" "Gr\xc3\xbc\xc3\x9fe" (("J\xc3\xb6hn"'
    )


def test_address_parser_edge_cases():
    assert parse_address_list("") == []
    assert parse_address_list('"Last, First" <a@b>, c@d') == [
        ("Last, First", None, "a", "b"),
        (None, None, "c", "d"),
    ]
    assert parse_address_list("=?utf-8?q?J=C3=B6rg?= <j@x>") == [
        ("=?utf-8?q?J=C3=B6rg?=", None, "j", "x")
    ]
    assert parse_address_list("g: ;") == [(None, None, "g", None), (None, None, None, None)]
    assert parse_address_list("<@a,@b:u@h>") == [(None, "@a,@b", "u", "h")]
    assert parse_address_list('"q\\"x"@h') == [(None, None, 'q"x', "h")]
    assert parse_address_list("broken <unterminated@x") == [("broken", None, "unterminated", "x")]
    assert parse_address_list("a@b (nested (comment))") == [("nested (comment)", None, "a", "b")]


def test_bodystructure_hand_built_tree():
    msg = build()
    inner_env = (
        b'(NIL "inner" ((NIL NIL "inner" "example.org")) ((NIL NIL "inner" "example.org")) '
        b'((NIL NIL "inner" "example.org")) NIL NIL NIL NIL NIL)'
    )
    p2 = msg.structure.children[1]
    assert body_structure(msg.structure) == (
        b'(("TEXT" "PLAIN" ("CHARSET" "utf-8") NIL NIL "QUOTED-PRINTABLE" 32 3 NIL NIL NIL NIL)'
        b'("MESSAGE" "RFC822" NIL NIL NIL "7BIT" ' + b"%d" % p2.size + b" " + inner_env + b" "
        b'(("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 5 1 NIL NIL NIL NIL)'
        b'("TEXT" "HTML" ("CHARSET" "utf-8") NIL NIL "7BIT" 11 1 NIL NIL NIL NIL) "ALTERNATIVE" '
        b'("BOUNDARY" "b2") NIL NIL NIL) ' + b"%d" % p2.lines + b" NIL NIL NIL NIL)"
        b'("APPLICATION" "PDF" ("NAME" "a.pdf") NIL NIL "BASE64" 14 "Q2hlY2sgSW50ZWdyaXR5IQ==" '
        b'("ATTACHMENT" ("FILENAME" "a.pdf")) ("en" "de") "http://x/a.pdf") '
        b'"MIXED" ("BOUNDARY" "b1") NIL NIL NIL)'
    )
    assert body_structure(msg.structure, extensible=False) == (
        b'(("TEXT" "PLAIN" ("CHARSET" "utf-8") NIL NIL "QUOTED-PRINTABLE" 32 3)'
        b'("MESSAGE" "RFC822" NIL NIL NIL "7BIT" ' + b"%d" % p2.size + b" " + inner_env + b" "
        b'(("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 5 1)'
        b'("TEXT" "HTML" ("CHARSET" "utf-8") NIL NIL "7BIT" 11 1) "ALTERNATIVE") '
        + b"%d"
        % p2.lines
        + b")"
        b'("APPLICATION" "PDF" ("NAME" "a.pdf") NIL NIL "BASE64" 14) "MIXED")'
    )


def test_bodystructure_single_language_id_description_and_broken_multipart():
    part = MimePart(
        "",
        0,
        10,
        10,
        20,
        "image/png",
        content_id="<x@y>",
        content_description="a picture",
        content_language=("en",),
        disposition="inline",
        content_transfer_encoding="base64",
    )
    assert body_structure(part) == (
        b'("IMAGE" "PNG" NIL "<x@y>" "a picture" "BASE64" 10 NIL ("INLINE" NIL) "en" NIL)'
    )
    broken = MimePart("", 0, 10, 10, 10, "multipart/mixed")
    assert body_structure(broken, extensible=False) == (
        b'(("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 0 0) "MIXED")'
    )
    rfc822_without_tree = MimePart("1", 0, 10, 10, 12, "message/rfc822", lines=1)
    assert body_structure(rfc822_without_tree, extensible=False) == (
        b'("MESSAGE" "RFC822" NIL NIL NIL "7BIT" 2 (NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL) '
        b'("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 0 0) 1)'
    )


def test_real_parser_on_the_same_message():
    from mailserver.message import parse_message

    msg = parse_message(RAW)
    bs = body_structure(msg.structure)
    assert bs.startswith(b'(("TEXT" "PLAIN" ("CHARSET" "utf-8") NIL NIL "QUOTED-PRINTABLE" 32 3 ')
    assert b'"MIXED" ("BOUNDARY" "b1") NIL NIL NIL)' in bs and b'"ALTERNATIVE"' in bs
    assert b'("ATTACHMENT" ("FILENAME" "a.pdf"))' in bs
    env = envelope(msg)
    assert env.startswith(b'("Mon, 7 Feb 1994 21:52:25 -0800" ')
    assert b'"<1234@local.machine.example>")' in env


def test_non_ascii_parameter_values():
    part = MimePart(
        "",
        0,
        0,
        0,
        0,
        "application/pdf",
        params=(("name", "Grüße.pdf"),),
        disposition="attachment",
        disposition_params=(("filename", "Grüße.pdf"),),
    )
    enc = b'"=?UTF-8?B?R3LDvMOfZS5wZGY=?="'
    assert body_structure(part) == (
        b'("APPLICATION" "PDF" ("NAME" '
        + enc
        + b') NIL NIL "7BIT" 0 NIL ("ATTACHMENT" ("FILENAME" '
        + enc
        + b")) NIL NIL)"
    )
    assert b'("NAME" "Gr\xc3\xbc\xc3\x9fe.pdf")' in body_structure(part, utf8=True)
