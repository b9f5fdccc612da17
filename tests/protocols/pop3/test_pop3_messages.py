"""RETR/TOP output: CRLF normalisation, dot-stuffing (RFC 1939 §3) and TOP (§7) edge cases."""

from __future__ import annotations

import pytest

from protocols.pop3 import dot_stuff, message_response, normalize_crlf, top_of_message


def unstuff(response: bytes) -> bytes:
    """What a client (poplib) reconstructs: drop the status line and ".", undo the stuffing."""
    status, _, rest = response.partition(b"\r\n")
    assert status.startswith(b"+OK") and rest.endswith(b"\r\n.\r\n") or rest == b".\r\n"
    lines = rest[:-3].split(b"\r\n")[:-1] if rest != b".\r\n" else []
    return b"".join((line[1:] if line.startswith(b".") else line) + b"\r\n" for line in lines)


@pytest.mark.parametrize(
    ("raw", "stuffed"),
    [
        (b"", b""),
        (b"a\r\n", b"a\r\n"),
        (b".\r\n", b"..\r\n"),
        (b".a\r\n.\r\n..b\r\n", b"..a\r\n..\r\n...b\r\n"),
        (b"x\r\n.\r\n", b"x\r\n..\r\n"),
        (b"no final newline", b"no final newline\r\n"),
        (b"x\r\n.", b"x\r\n..\r\n"),
        (b"a. b\r\n .c\r\n", b"a. b\r\n .c\r\n"),
    ],
)
def test_dot_stuff(raw: bytes, stuffed: bytes) -> None:
    assert dot_stuff(raw) == stuffed


@pytest.mark.parametrize(
    ("raw", "normal"),
    [
        (b"a\nb\n", b"a\r\nb\r\n"),
        (b"a\r\nb\n", b"a\r\nb\r\n"),
        (b"a\r\r\n", b"a\r\r\n"),
        (b"\n.\n", b"\r\n.\r\n"),
    ],
)
def test_normalize_crlf(raw: bytes, normal: bytes) -> None:
    assert normalize_crlf(raw) == normal


def test_already_crlf_is_not_copied() -> None:
    raw = b"Subject: x\r\n\r\nbody\r\n"
    assert normalize_crlf(raw) is raw


def test_retr_bare_lf_and_dots() -> None:
    raw = b"Subject: x\n\n.line one\n..two\nthree"
    out = message_response(raw, None)
    assert out == (b"+OK 39 octets\r\nSubject: x\r\n\r\n..line one\r\n...two\r\nthree\r\n.\r\n")
    assert unstuff(out) == b"Subject: x\r\n\r\n.line one\r\n..two\r\nthree\r\n"


def test_retr_message_ending_with_dot_line_cannot_terminate_early() -> None:
    raw = b"Subject: x\r\n\r\nfoo\r\n.\r\nbar\r\n"
    out = message_response(raw, None)
    assert out.count(b"\r\n.\r\n") == 1 and out.endswith(b"\r\n.\r\n")


def test_empty_message() -> None:
    assert message_response(b"", None) == b"+OK 0 octets\r\n.\r\n"
    assert message_response(b"", 5) == b"+OK\r\n\r\n.\r\n"


HDR = b"From: a@b\r\nSubject: s\r\n"
BODY = b"l1\r\n.l2\r\n..l3\r\nl4\r\n"


@pytest.mark.parametrize(
    ("raw", "n", "top"),
    [
        (HDR + b"\r\n" + BODY, 0, HDR + b"\r\n"),
        (HDR + b"\r\n" + BODY, 1, HDR + b"\r\nl1\r\n"),
        (HDR + b"\r\n" + BODY, 3, HDR + b"\r\nl1\r\n.l2\r\n..l3\r\n"),
        (HDR + b"\r\n" + BODY, 4, HDR + b"\r\n" + BODY),
        (HDR + b"\r\n" + BODY, 10**18, HDR + b"\r\n" + BODY),
        (HDR + b"\r\nno newline at end", 5, HDR + b"\r\nno newline at end"),
        (HDR + b"\r\nl1\r\nlast", 1, HDR + b"\r\nl1\r\n"),
        (HDR + b"\r\nl1\r\nlast", 2, HDR + b"\r\nl1\r\nlast"),
        (HDR + b"\r\n", 3, HDR + b"\r\n"),  # header and blank line, empty body
        (HDR, 3, HDR + b"\r\n"),  # no blank line at all: still header + blank line
        (b"Subject: x", 3, b"Subject: x\r\n\r\n"),
        (b"\r\nbody only\r\n", 1, b"\r\nbody only\r\n"),  # empty header
        (HDR + b"\r\n\r\n\r\nx\r\n", 2, HDR + b"\r\n\r\n\r\n"),  # blank body lines count
    ],
)
def test_top_of_message(raw: bytes, n: int, top: bytes) -> None:
    assert top_of_message(raw, n) == top


def test_top_response_stuffs_and_terminates() -> None:
    raw = HDR + b"\r\n" + BODY
    assert message_response(raw, 3) == (
        b"+OK\r\n" + HDR + b"\r\nl1\r\n..l2\r\n...l3\r\n.\r\n"
    )
    assert message_response(raw.replace(b"\r\n", b"\n"), 1) == b"+OK\r\n" + HDR + b"\r\nl1\r\n.\r\n"
    assert unstuff(message_response(raw, 4)) == raw


def test_header_line_starting_with_dot() -> None:
    # Not valid RFC 5322, but stored mail is whatever arrived: it must not end the response.
    raw = b".weird: header\r\n\r\n.\r\n"
    assert message_response(raw, None) == b"+OK 21 octets\r\n..weird: header\r\n\r\n..\r\n.\r\n"
    assert message_response(raw, 0) == b"+OK\r\n..weird: header\r\n\r\n.\r\n"
