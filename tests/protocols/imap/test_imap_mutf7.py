"""Modified UTF-7 (RFC 3501 §5.1.3)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from protocols.imap import mutf7


@pytest.mark.parametrize(
    "text,encoded",
    [
        ("INBOX", b"INBOX"),
        ("~peter/mail/台北/日本語", b"~peter/mail/&U,BTFw-/&ZeVnLIqe-"),  # RFC 3501 §5.1.3 example
        ("&", b"&-"),
        ("a&b&", b"a&-b&-"),
        ("Entwürfe", b"Entw&APw-rfe"),
        ("Gelöschte Elemente", b"Gel&APY-schte Elemente"),
        ("😀", b"&2D3eAA-"),
        ("日本語 & ü", b"&ZeVnLIqe- &- &APw-"),
        ("", b""),
    ],
)
def test_known_values(text, encoded):
    assert mutf7.encode(text) == encoded
    assert mutf7.decode(encoded) == text


@pytest.mark.parametrize(
    "bad",
    [
        b"&Jjo!",
        b"&U,BTFw",
        b"&AGE-",  # unterminated, unterminated, encoded printable ASCII
        b"&U,BTFw-&ZeVnLIqe-",  # two adjacent encoded runs
        b"&2D0-",  # unpaired surrogate
        b"&AP-",  # odd octet count / non-zero padding bits
        b"&A-",  # a single base64 character
        b"&AP,/-",  # "/" is not modified base64
        b"\xc3\xa4",
        b"a\x01b",
        b"a\x7fb",
        b"&APw=-",
    ],
)
def test_invalid(bad):
    with pytest.raises(mutf7.Mutf7Error):
        mutf7.decode(bad)


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_round_trip(text):
    try:
        text.encode("utf-16-be")
    except UnicodeEncodeError:  # lone surrogates cannot be mailbox names
        return
    enc = mutf7.encode(text)
    assert enc.isascii()
    assert mutf7.decode(enc) == text


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=40))
def test_decode_never_raises_anything_else(data):
    try:
        text = mutf7.decode(data)
    except mutf7.Mutf7Error:
        return
    assert mutf7.encode(text) == data  # strictness: one valid spelling per name
