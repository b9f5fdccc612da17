"""Header value decoding: RFC 2047, addresses, message ids, dates, RFC 2231 parameters, base
subject, header block scanning."""

from __future__ import annotations

import email.utils

import pytest

from mailserver.message import Address, parse_message
from mailserver.message.headers import (
    base_subject,
    decode_rfc2047,
    find_header_end,
    parse_addresses,
    parse_date,
    parse_msg_ids,
    parse_params,
    split_header_fields,
)

# ---------------------------------------------------------------------------------------------
# RFC 2047


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("plain", "plain"),
        ("=?utf-8?q?caf=C3=A9?=", "café"),
        ("=?UTF-8?B?Y2Fmw6k=?=", "café"),
        ("=?utf-8?q?a_b?= =?utf-8?q?_c?=", "a b c"),  # §6.2 whitespace between words dropped
        ("=?utf-8?q?a?==?utf-8?q?b?=", "ab"),  # adjacent without whitespace
        ("=?utf-8?q?a?= x =?utf-8?q?b?=", "a x b"),
        ("=?utf-8?q?=E2=82?= =?utf-8?q?=AC?=", "€"),  # multibyte char split across words
        ("=?iso-8859-1?q?caf=E9?= =?utf-8?q?_ol=C3=A9?=", "café olé"),
        ("=?utf-8*en?q?hi?=", "hi"),  # RFC 2231 §5 language suffix
        ("=?x-unknown?q?caf=C3=A9?=", "café"),  # unknown charset: UTF-8
        ("=?x-unknown?q?caf=E9?=", "café"),  # then latin-1
        ("=?utf-8?b?Y2Fmw6k?=", "café"),  # missing padding
        ("=?utf-8?b?!!!?=", ""),
        ("Re: =?utf-8?q?x?=", "Re: x"),
        ("=?utf-8?q?broken", "=?utf-8?q?broken"),
        ("=?base64?q?abc?=", "abc"),  # a bytes codec is not a charset
    ],
)
def test_rfc2047(raw: str, expected: str) -> None:
    assert decode_rfc2047(raw) == expected


# ---------------------------------------------------------------------------------------------
# addresses


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("a@b.c", [("", "a@b.c")]),
        ("Joe <joe@x.org>", [("Joe", "joe@x.org")]),
        ('"Smith, Joe" <joe@x.org>, ann@x.org', [("Smith, Joe", "joe@x.org"), ("", "ann@x.org")]),
        ("joe@x.org (Joe (the) Smith)", [("Joe (the) Smith", "joe@x.org")]),
        ("(comment) Joe <joe@x.org>", [("Joe", "joe@x.org")]),
        ('"Joe \\"Q\\" Smith" <j@x>', [('Joe "Q" Smith', "j@x")]),
        ("=?utf-8?q?J=C3=B6rg?= <j@x>", [("Jörg", "j@x")]),
        ('"=?utf-8?q?J=C3=B6rg?=" <j@x>', [("Jörg", "j@x")]),  # quoted encoded-word, seen
        ("team: a@x, B <b@x>;, c@x", [("", "a@x"), ("B", "b@x"), ("", "c@x")]),
        ("undisclosed-recipients:;", []),
        ("<@route.example:joe@x.org>", [("", "joe@x.org")]),
        ("joe @ x . org", [("", "joe@x.org")]),
        ('"joe smith"@x.org', [("", '"joe smith"@x.org')]),
        ("Jörg <jörg@bücher.de>", [("Jörg", "jörg@bücher.de")]),
        ("<>", []),
        ("Joe <joe@x.org", [("Joe", "joe@x.org")]),  # unterminated angle
        ('"unterminated <a@b>', [("unterminated <a@b>", "")]),
        (",,, ,", []),
        ("root", [("", "root")]),
        ("Joe Smith", [("Joe Smith", "")]),
    ],
)
def test_addresses(raw: str, expected: list[tuple[str, str]]) -> None:
    assert parse_addresses(raw) == tuple(Address(n, e) for n, e in expected)


def test_addresses_agree_with_email_utils_on_simple_lists() -> None:
    raw = 'Alice <a@x.org>, "Bob B." <b@x.org>, c@x.org (Carol), <d@x.org>'
    ours = [(a.name, a.email) for a in parse_addresses(raw)]
    assert ours == email.utils.getaddresses([raw])


# ---------------------------------------------------------------------------------------------
# ids and dates


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("<a@b>", ("a@b",)),
        ("<a@b> <c@d>\t<e@f>", ("a@b", "c@d", "e@f")),
        ("<a@b> (Joe's message of Monday)", ("a@b",)),
        ("a@b", ("a@b",)),  # brackets missing
        ("<a @b>", ("a@b",)),
        ("", ()),
        ("<>", ()),
    ],
)
def test_msg_ids(raw: str, expected: tuple[str, ...]) -> None:
    assert parse_msg_ids(raw) == expected


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("Mon, 6 May 2024 11:15:00 +0200", 1714986900),
        ("6 May 2024 09:15:00 GMT", 1714986900),
        ("Mon, 6 May 2024 09:15:00 -0000", 1714986900),  # no zone information: UTC
        ("Mon, 6 May 24 09:15:00 +0000", 1714986900),  # two-digit year
        ("garbage", None),
        ("", None),
        ("Mon, 32 Foo 2024 99:99:99 +0000", None),
        ("Mon, 6 May 99999999999 09:15:00 +0000", None),
    ],
)
def test_dates(raw: str, expected: int | None) -> None:
    assert parse_date(raw) == expected


# ---------------------------------------------------------------------------------------------
# MIME parameters


@pytest.mark.parametrize(
    "raw, main, params",
    [
        ("text/plain", "text/plain", []),
        ('Text/HTML; Charset="UTF-8"', "text/html", [("charset", "UTF-8")]),
        ('multipart/x; boundary="a;b"; x=y', "multipart/x", [("boundary", "a;b"), ("x", "y")]),
        ("text/plain; charset=us-ascii (Plain text)", "text/plain", [("charset", "us-ascii")]),
        ("attachment; filename=my file.pdf", "attachment", [("filename", "my file.pdf")]),
        ("a; filename*=UTF-8''%E2%82%AC%20rates.txt", "a", [("filename", "€ rates.txt")]),
        (
            "attachment; filename*0*=us-ascii'en'This%20is; filename*1=\" long\"; filename*2*=%2E",
            "attachment",
            [("filename", "This is long.")],
        ),
        # continuations out of order are sorted
        ('a; x*1="b"; x*0="a"', "a", [("x", "ab")]),
        # the RFC 2231 value wins over a plain one of the same name
        ('a; name="plain.txt"; name*=utf-8\'\'%C3%A9.txt', "a", [("name", "é.txt")]),
        ('a; name="=?utf-8?q?=C3=A9t=C3=A9.pdf?="', "a", [("name", "été.pdf")]),
        ("a; filename*=iso-8859-1''caf%E9", "a", [("filename", "café")]),
        ("a; filename*=x-bogus''caf%C3%A9", "a", [("filename", "café")]),
        ('a; broken; ="x"; y="unterminated', "a", [("y", "unterminated")]),
        ("", "", []),
    ],
)
def test_params(raw: str, main: str, params: list[tuple[str, str]]) -> None:
    assert parse_params(raw) == (main, tuple(params))


# ---------------------------------------------------------------------------------------------
# RFC 5256 §2.1 base subject


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("Hello", "hello"),
        ("Re: Hello", "hello"),
        ("RE: re: Fwd: FW: hello", "hello"),
        ("Re[2]: hello", "hello"),
        ("[list] Re: hello", "hello"),
        ("Re: [list] hello", "hello"),
        ("[list]", "[list]"),  # a blob alone is kept
        ("hello (fwd)", "hello"),
        ("hello (FWD) (fwd)  ", "hello"),
        ("[Fwd: hello]", "hello"),
        ("Re: [Fwd: Re: hello (fwd)]", "hello"),
        ("  many\t\tspaces   here ", "many spaces here"),
        ("Re:", ""),
        ("Reply: hello", "reply: hello"),
        ("", ""),
    ],
)
def test_base_subject(raw: str, expected: str) -> None:
    assert base_subject(raw) == expected


def test_base_subject_of_pathological_subject_is_fast() -> None:
    import time

    t = time.perf_counter()
    base_subject("[a]" * 40000 + "(fwd)" * 20000)
    assert time.perf_counter() - t < 0.5


# ---------------------------------------------------------------------------------------------
# header block


def test_find_header_end() -> None:
    raw = b"A: 1\r\nB: 2\r\n\r\nbody"
    assert find_header_end(raw, 0, len(raw)) == 14
    assert find_header_end(b"A: 1\nB: 2\n\nbody", 0, 15) == 11
    assert find_header_end(b"\r\nbody", 0, 6) == 2  # empty header block
    assert find_header_end(b"\nbody", 0, 5) == 1
    assert find_header_end(b"not a header\r\n\r\nx", 0, 17) == 0  # no header block at all
    assert find_header_end(b"A: 1", 0, 4) == 4  # no separator: all header
    assert find_header_end(b"From x Mon\r\nA: 1\r\n\r\n", 0, 20, allow_from_line=True) == 20
    # mixed endings: whichever blank line comes first
    assert find_header_end(b"A: 1\n\nB\r\n\r\n", 0, 11) == 6


def test_split_header_fields_unfolds() -> None:
    block = b"Subject: a\r\n b\r\n\tc\r\nX-Y : z\r\nbogus line\r\n cont\r\nTo:\r\n\r\n"
    assert split_header_fields(block) == [
        ("subject", b" a b\tc"),
        ("x-y", b" z"),
        ("to", b""),
    ]


def test_duplicate_headers_first_wins() -> None:
    pm = parse_message(b"Subject: one\r\nSubject: two\r\nFrom: a@x\r\nFrom: b@x\r\n\r\n")
    assert pm.subject == "one"
    assert pm.from_ == (Address("", "a@x"),)


def test_envelope_raw_is_unfolded_and_undecoded() -> None:
    raw = (
        b"Subject: =?utf-8?q?caf=C3=A9?=\r\n  and more\r\nTo: a@x,\r\n\tb@x\r\n"
        b"Message-ID: <m@x>\r\nX-Other: y\r\n\r\n"
    )
    pm = parse_message(raw)
    assert pm.envelope_raw == (
        ("subject", "=?utf-8?q?caf=C3=A9?=  and more"),
        ("to", "a@x,\tb@x"),
        ("message-id", "<m@x>"),
    )
    assert pm.subject == "café  and more"


def test_unusual_whitespace_in_addresses() -> None:
    # found by hypothesis: U+001C is whitespace to str.isspace and to \s
    assert parse_addresses("\x1c a@example.com\u2028") == (Address("", "a@example.com"),)
