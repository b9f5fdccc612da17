"""Message data: DATA (dot-stuffing, end marker, smuggling defence, limits) and BDAT."""

from __future__ import annotations

import pytest
from smtp_driver import EHLO, MAIL, RCPT, Session

from protocols.smtp import (
    NEED_DATA,
    ChunkReceived,
    ConnectionLost,
    DataStart,
    MessageComplete,
    ProtocolError,
    ServerConfig,
)

START = EHLO + MAIL + RCPT + b"DATA\r\n"


def data_session(**kw: object) -> Session:
    s = Session(ServerConfig(hostname="mx.test", **kw)) if kw else Session()  # type: ignore[arg-type]
    s.feed(START)
    s.replies()
    return s


def completed(s: Session) -> list[bytes]:
    return [e.data for e in s.events if isinstance(e, MessageComplete)]


# --- DATA ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("wire", "data"),
    [
        (b".\r\n", b""),
        (b"\r\n.\r\n", b"\r\n"),
        (b"a\r\n.\r\n", b"a\r\n"),
        (b"..\r\n.\r\n", b".\r\n"),
        (b"...\r\n.\r\n", b"..\r\n"),
        (b"a\r\n..b\r\n.c\r\n.\r\n", b"a\r\n.b\r\nc\r\n"),
        (b"a.\r\n b .\r\n.\r\n", b"a.\r\n b .\r\n"),
        (
            b"8bit \xe9\xff\x00 ok\r\n.\r\n",
            b"8bit \xe9\xff\x00 ok\r\n",
        ),  # tolerated (BODY=7BIT too)
    ],
)
def test_dot_unstuffing_and_end(wire: bytes, data: bytes) -> None:
    s = data_session()
    s.feed(wire)
    assert completed(s) == [data]
    assert s.replies() == b"250 2.0.0 OK\r\n"


@pytest.mark.parametrize("split", [1, 2, 3, 5, 7])
def test_end_marker_split_across_reads(split: int) -> None:
    wire = b"line one\r\n..two\r\n.\r\nNOOP\r\n"
    s = data_session()
    s.feed(*(wire[i : i + split] for i in range(0, len(wire), split)))
    assert completed(s) == [b"line one\r\n.two\r\n"]
    assert s.codes() == ["250 2.0.0", "250 2.0.0"]


@pytest.mark.parametrize(
    "smuggle",
    [
        b"\n.\n",
        b"\r\n.\n",
        b"\n.\r\n",
        b"\r.\r",
        b"\r.\r\n",
        b"\r\n.\r",
    ],
)
def test_smuggling_variants_do_not_end_data(smuggle: bytes) -> None:
    # RFC 5321 §2.3.8 / SMTP smuggling: only CRLF.CRLF ends the data. The smuggled
    # commands stay inside the message, which is then rejected for its bare CR/LF.
    wire = (
        b"Subject: x\r\n\r\nhello"
        + smuggle
        + b"MAIL FROM:<evil@example.com>\r\nRCPT TO:<victim@example.net>\r\nDATA\r\nforged\r\n.\r\n"
    )
    s = data_session()
    evs = s.feed(wire)
    assert [type(e) for e in evs] == [ProtocolError]
    assert s.replies() == b"550 5.5.2 Bare CR or LF in message data (RFC 5321 section 2.3.8)\r\n"
    # session is in step: next command works, no transaction survived
    s.feed(b"RCPT TO:<x@example.net>\r\n")
    assert s.codes() == ["503 5.5.1"]


@pytest.mark.parametrize(
    "body", [b"bare\nLF\r\n", b"bare\rCR\r\n", b"end\r\r\n", b"\n\r\n", b"x\r\n\rx\r\n"]
)
def test_bare_cr_or_lf_mid_line_rejected(body: bytes) -> None:
    s = data_session()
    s.feed(body + b".\r\n")
    assert s.codes() == ["550 5.5.2"]
    assert completed(s) == []


def test_data_line_too_long_rejected_after_end_with_bounded_memory() -> None:
    s = data_session()
    s.feed(b"ok\r\n")
    for _ in range(16):  # a 1 MB line
        s.feed(b"x" * 65536)
        assert len(s.conn._buf) <= 1000
    evs = s.feed(b"\r\nmore\r\n.\r\nNOOP\r\n")
    assert isinstance(evs[0], ProtocolError)
    assert s.codes() == ["550 5.6.0", "250 2.0.0"]


def test_data_line_limit_boundary() -> None:
    s = data_session()
    s.feed(b"y" * 998 + b"\r\n.\r\n")  # 1000 octets with CRLF: allowed
    assert s.codes() == ["250 2.0.0"]
    s.feed(MAIL, RCPT, b"DATA\r\n", b"y" * 1001 + b"\r\n.\r\n")
    assert s.codes()[-1] == "550 5.6.0"


def test_size_exceeded_while_receiving() -> None:
    s = data_session(max_message_size=10_000)
    for _ in range(200):
        s.feed(b"z" * 78 + b"\r\n")
    assert s.conn._data is not None and s.conn._data.parts is None  # stopped buffering
    s.feed(b".\r\n")
    assert s.replies() == b"552 5.3.4 Message size exceeds fixed maximum message size\r\n"
    assert s.conn.mail_from is None


def test_size_limit_counts_unstuffed_octets() -> None:
    s = data_session(max_message_size=6)
    s.feed(b"..abc\r\n.\r\n")  # ".abc\r\n" = 6 octets
    assert completed(s) == [b".abc\r\n"]


def test_pipelined_commands_after_data() -> None:
    s = data_session()
    evs = s.feed(b"body\r\n.\r\nMAIL FROM:<>\r\nRCPT TO:<b@c.example>\r\nQUIT\r\n")
    assert [type(e).__name__ for e in evs] == ["MessageComplete", "MailFrom", "RcptTo", "Quit"]


def test_truncated_data() -> None:
    s = data_session()
    s.feed(b"partial message\r\n.")
    s.conn.receive_data(b"")
    assert s.conn.next_event() == ConnectionLost(during="DATA")


def test_binarymime_requires_bdat() -> None:
    s = Session()
    s.feed(EHLO, b"MAIL FROM:<a@b.example> BODY=BINARYMIME\r\n", RCPT)
    s.replies()
    s.feed(b"DATA\r\n")
    assert s.replies() == b"503 5.5.1 BODY=BINARYMIME requires BDAT\r\n"


def test_data_with_argument() -> None:
    s = Session()
    s.feed(EHLO, MAIL, RCPT)
    s.replies()
    s.feed(b"DATA now\r\n")
    assert s.codes() == ["501 5.5.4"]


# --- BDAT (RFC 3030) -------------------------------------------------------------------------


def bdat_session(**kw: object) -> Session:
    s = Session(ServerConfig(hostname="mx.test", **kw)) if kw else Session()  # type: ignore[arg-type]
    s.feed(EHLO, MAIL, RCPT)
    s.replies()
    return s


def test_bdat_binary_with_crlf_dot_crlf_inside() -> None:
    payload = b"head\r\n.\r\nstill data\r\n\x00\xff\n\r.\r\n"
    s = bdat_session()
    evs = s.feed(b"BDAT %d LAST\r\n" % len(payload) + payload)
    assert [type(e) for e in evs] == [MessageComplete]
    assert evs[0].data == payload and evs[0].chunked  # type: ignore[attr-defined]
    assert s.replies() == b"250 2.0.0 OK\r\n"


def test_bdat_pipelined_chunks() -> None:
    s = bdat_session()
    evs = s.feed(b"BDAT 5\r\nhelloBDAT 6\r\n world" + b"BDAT 0 LAST\r\nQUIT\r\n")
    assert [type(e).__name__ for e in evs] == [
        "ChunkReceived",
        "ChunkReceived",
        "MessageComplete",
        "Quit",
    ]
    assert evs[2].data == b"hello world"  # type: ignore[attr-defined]
    assert s.replies() == (
        b"250 2.0.0 5 octets received\r\n"
        b"250 2.0.0 6 octets received\r\n"
        b"250 2.0.0 OK\r\n"
        b"221 2.0.0 mx.test closing connection\r\n"
    )


def test_bdat_zero_last_alone() -> None:
    s = bdat_session()
    evs = s.feed(b"bdat 0 last\r\n")
    assert isinstance(evs[0], MessageComplete) and evs[0].data == b""


def test_bdat_chunk_split_byte_by_byte() -> None:
    s = bdat_session()
    wire = b"BDAT 7 LAST\r\n\r\n.\r\nab"
    s.feed(*(wire[i : i + 1] for i in range(len(wire))))
    assert completed(s) == [b"\r\n.\r\nab"]


def test_bdat_then_data_is_503() -> None:
    s = bdat_session()
    s.feed(b"BDAT 3\r\nabc", b"DATA\r\n", b"RCPT TO:<x@y.example>\r\n", b"BDAT 1 LAST\r\nd")
    assert s.codes() == ["250 2.0.0", "503 5.5.1", "503 5.5.1", "250 2.0.0"]
    assert completed(s) == [b"abcd"]


def test_bdat_without_recipient_discards_chunk() -> None:
    s = Session()
    s.feed(EHLO, MAIL)
    s.replies()
    evs = s.feed(b"BDAT 12 LAST\r\nNOOP\r\nNOOP\r\nNOOP\r\n")
    assert [type(e).__name__ for e in evs] == [
        "ProtocolError",
        "Noop",
    ]  # the chunk was not read as commands
    assert s.codes() == ["554 5.5.1", "250 2.0.0"]


def test_bdat_before_mail_discards_chunk() -> None:
    s = Session()
    s.feed(EHLO)
    s.replies()
    s.feed(b"BDAT 6\r\nQUIT\r\n")
    assert s.codes() == ["503 5.5.1"]
    assert s.conn.next_event() is NEED_DATA


def test_bdat_size_exceeded_discards_and_resets() -> None:
    s = bdat_session(max_message_size=8)
    s.feed(b"BDAT 5\r\n12345", b"BDAT 5\r\n67890", b"BDAT 1 LAST\r\nx")
    assert s.codes() == ["250 2.0.0", "552 5.3.4", "503 5.5.1"]
    assert completed(s) == []


def test_bdat_bad_syntax() -> None:
    s = bdat_session()
    s.feed(b"BDAT x\r\n", b"BDAT -1\r\n", b"BDAT 1 FIRST\r\n")
    assert s.codes() == ["501 5.5.4"] * 3


def test_bdat_when_chunking_disabled_still_consumes() -> None:
    s = bdat_session(chunking=False, binarymime=False)
    evs = s.feed(b"BDAT 6 LAST\r\nQUIT\r\n")
    assert [type(e) for e in evs] == [ProtocolError]
    assert s.codes() == ["502 5.5.1"]


def test_bdat_rset_between_chunks() -> None:
    s = bdat_session()
    evs = s.feed(b"BDAT 2\r\nab", b"RSET\r\n", b"BDAT 1 LAST\r\nc")
    assert [type(e).__name__ for e in evs] == ["ChunkReceived", "Rset", "ProtocolError"]


def test_data_start_event() -> None:
    s = Session()
    evs = s.feed(START)
    assert isinstance(evs[-1], DataStart)
    assert isinstance(ChunkReceived(1), ChunkReceived)


def test_bdat_more_octets_than_declared_are_read_as_commands() -> None:
    s = bdat_session()
    evs = s.feed(b"BDAT 3 LAST\r\nabcdef\r\n")
    assert [type(e) for e in evs] == [MessageComplete, ProtocolError]
    assert evs[0].data == b"abc"  # type: ignore[attr-defined]
    assert s.codes() == ["250 2.0.0", "500 5.5.2"]


def test_bdat_fewer_octets_than_declared_waits_then_loses() -> None:
    s = bdat_session()
    s.feed(b"BDAT 100 LAST\r\nshort")
    assert s.conn.next_event() is NEED_DATA
    s.conn.receive_data(b"")
    assert s.conn.next_event() == ConnectionLost(during="BDAT")


def test_eight_bit_data_with_body_7bit_tolerated() -> None:
    s = Session()
    s.feed(EHLO, b"MAIL FROM:<a@b.example> BODY=7BIT\r\n", RCPT, b"DATA\r\n")
    s.replies()
    s.feed(b"caf\xc3\xa9 \x80\xff\r\n.\r\n")
    assert completed(s) == [b"caf\xc3\xa9 \x80\xff\r\n"]
