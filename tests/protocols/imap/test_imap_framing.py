"""Lines, literals, limits and reader modes (IDLE, AUTHENTICATE, STARTTLS, COMPRESS)."""

from __future__ import annotations

import pytest
from imap_driver import commands_of, events_of

from protocols.imap import (
    NEED_DATA,
    BadCommand,
    ConnectionMustClose,
    IdleDone,
    ImapConfig,
    ImapProtocolError,
    LiteralContinuationNeeded,
    Mode,
    SaslResponse,
    ServerConnection,
    State,
    _events as ev,
)
from protocols.imap.compress import Deflater, Inflater, wrap

AUTH = State.AUTHENTICATED


def test_pipelined_commands_and_bare_lf():
    evs = commands_of(b"a NOOP\r\nb NOOP\nc CAPABILITY\r\n\r\n")
    assert [e.tag for e in evs] == ["a", "b", "c"]


def test_literal_split_across_every_boundary():
    data = b'A1 APPEND "INBOX" (\\Seen) {11}\r\nHello\r\nWorl {3}\r\nxyz\r\nA2 NOOP\r\n'
    expected = commands_of(data, state=AUTH)
    assert len(expected) == 2 and expected[0].messages[0].message == b"Hello\r\nWorl"
    for i in range(1, len(data)):
        assert commands_of([data[:i], data[i:]], state=AUTH) == expected
    assert commands_of([bytes([b]) for b in data], state=AUTH) == expected


def test_synchronizing_literal_waits_for_decision():
    conn = ServerConnection(state=State.NOT_AUTHENTICATED)
    conn.receive_data(b"a LOGIN {4}\r\n")
    e = conn.next_event()
    assert e == LiteralContinuationNeeded("a", "LOGIN", 4)
    with pytest.raises(ImapProtocolError):
        conn.next_event()
    assert conn.accept_literal() == b"+ Ready for literal data\r\n"
    assert conn.next_event() is NEED_DATA
    conn.receive_data(b"user pass\r\n")
    assert conn.next_event() == ev.Login("a", username="user", password="pass")


def test_reject_literal_skips_the_command():
    conn = ServerConnection(state=AUTH)
    conn.receive_data(b"a APPEND INBOX {100000}\r\nb NOOP\r\n")
    e = conn.next_event()
    assert e.size == 100000 and e.command == "APPEND"
    assert conn.reject_literal() == b"a NO [TOOBIG] Literal too big\r\n"
    assert conn.next_event() == ev.Noop("b")


def test_oversized_synchronizing_literal_is_refused_unread():
    conn = ServerConnection(ImapConfig(max_literal=10), state=AUTH)
    conn.receive_data(b"a APPEND INBOX {11}\r\n")
    e = conn.next_event()
    assert e == BadCommand("a", "Literal too big", "TOOBIG", "NO")
    assert e.to_bytes() == b"a NO [TOOBIG] Literal too big\r\n"
    conn.receive_data(b"b LOGIN {4000000000}\r\n")
    e = conn.next_event()
    assert (e.status, e.code) == ("BAD", "TOOBIG")
    conn.receive_data(b"c NOOP\r\n")
    assert conn.next_event() == ev.Noop("c")
    assert conn.buffered == 0


def test_oversized_nonsync_literal_closes():
    conn = ServerConnection(ImapConfig(max_literal=10), state=AUTH)
    conn.receive_data(b"a APPEND INBOX {11+}\r\nhello world\r\n")
    e = conn.next_event()
    assert isinstance(e, ConnectionMustClose) and e.code == "TOOBIG"
    assert e.to_bytes() == b"a BAD [TOOBIG] Literal too big\r\n* BYE Literal too big\r\n"
    assert conn.closed and conn.next_event() is NEED_DATA


def test_literal_minus():
    cfg = ImapConfig(literal_plus=False, literal_minus=True)
    evs = events_of(
        b"a APPEND INBOX {4096+}\r\n" + b"x" * 4096 + b"\r\n", conn=ServerConnection(cfg, AUTH)
    )
    assert len(evs[0].messages[0].message) == 4096
    evs = events_of(
        b"a APPEND INBOX {4097+}\r\n" + b"x" * 4097 + b"\r\n", conn=ServerConnection(cfg, AUTH)
    )
    assert isinstance(evs[0], ConnectionMustClose)


def test_total_literal_budget_per_command():
    cfg = ImapConfig(max_literal=10, max_command_literals=15)
    evs = events_of(
        b"a APPEND INBOX {8+}\r\n12345678 {8}\r\nb NOOP\r\n", conn=ServerConnection(cfg, AUTH)
    )
    assert isinstance(evs[0], BadCommand) and evs[0].code == "TOOBIG"
    assert evs[1] == ev.Noop("b")


def test_line_too_long_is_skipped_without_buffering():
    conn = ServerConnection(ImapConfig(max_line=100), state=AUTH)
    conn.receive_data(b"a1 LIST " + b"x" * 200)
    e = conn.next_event()
    assert isinstance(e, BadCommand) and e.tag == "a1" and e.code == "TOOBIG"
    assert conn.buffered == 0
    conn.receive_data(b"y" * 10_000)
    assert conn.next_event() is NEED_DATA and conn.buffered == 0
    conn.receive_data(b"zzz\r\nb NOOP\r\n")
    assert conn.next_event() == ev.Noop("b")


def test_line_too_long_complete_line():
    evs = events_of(
        b"a1 LIST " + b"x" * 200 + b"\r\nb NOOP\r\n",
        conn=ServerConnection(ImapConfig(max_line=100), AUTH),
    )
    assert isinstance(evs[0], BadCommand) and evs[1] == ev.Noop("b")


def test_line_too_long_ending_in_nonsync_literal_closes():
    # the literal's octets would otherwise be read as commands
    evs = events_of(
        b"a1 APPEND " + b"x" * 200 + b" {20+}\r\nb LOGOUT\r\n",
        conn=ServerConnection(ImapConfig(max_line=100), AUTH),
    )
    assert (
        isinstance(evs[0], BadCommand) and isinstance(evs[1], ConnectionMustClose) and len(evs) == 2
    )
    evs = events_of(
        [b"a1 APPEND " + b"x" * 200, b" {20+}\r\nb LOGOUT\r\n"],
        conn=ServerConnection(ImapConfig(max_line=100), AUTH),
    )
    assert isinstance(evs[0], BadCommand) and isinstance(evs[1], ConnectionMustClose)


def test_command_text_budget_counts_all_segments():
    conn = ServerConnection(ImapConfig(max_line=60), state=AUTH)
    data = (
        b"a APPEND INBOX ("
        + b"\\Seen " * 5
        + b") {1+}\r\nx"
        + b" (\\Seen) {1+}\r\nx" * 5
        + b"\r\nb NOOP\r\n"
    )
    evs = events_of(data, conn=conn)
    # the segment that overflows announces a non-synchronizing literal: unrecoverable
    assert (
        isinstance(evs[0], BadCommand)
        and isinstance(evs[1], ConnectionMustClose)
        and "too long" in evs[1].text
    )
    conn = ServerConnection(ImapConfig(max_line=60), state=AUTH)
    data = (
        b"a APPEND INBOX ("
        + b"\\Seen " * 5
        + b") {1}\r\nx"
        + b" (\\Seen) {1}\r\nx" * 5
        + b"\r\nb NOOP\r\n"
    )
    evs = commands_of(data, conn=conn)
    assert isinstance(evs[0], BadCommand) and "too long" in evs[0].text
    assert evs[-1] == ev.Noop("b")


def test_idle_mode():
    conn = ServerConnection(state=AUTH)
    conn.receive_data(b"a IDLE\r\nDONE\r\nb NOOP\r\n")
    e = conn.next_event()
    assert e == ev.Idle("a")
    conn.start_idle("a")
    assert conn.mode is Mode.IDLE
    assert conn.next_event() == IdleDone("a")
    assert conn.next_event() == ev.Noop("b")
    conn.start_idle("c")
    conn.receive_data(b"c NOOP\r\n")
    assert conn.next_event() == BadCommand("c", "Expected DONE")
    assert conn.mode is Mode.COMMAND
    conn.start_idle("d")
    conn.receive_data(b"done\n")
    assert conn.next_event() == IdleDone("d")


def test_authenticate_mode():
    conn = ServerConnection()
    conn.receive_data(b"a AUTHENTICATE PLAIN\r\nAGZvbwBiYXI=\r\n")
    assert conn.next_event() == ev.Authenticate("a", mechanism="PLAIN")
    conn.start_authenticate("a")
    assert conn.next_event() == SaslResponse("a", b"\0foo\0bar")
    conn.receive_data(b"\r\n")  # an empty response
    assert conn.next_event() == SaslResponse("a", b"")
    conn.end_authenticate()
    conn.receive_data(b"b AUTHENTICATE LOGIN\r\n*\r\n")
    conn.next_event()
    conn.start_authenticate("b")
    assert conn.next_event() == SaslResponse("b", b"", cancelled=True)
    assert conn.mode is Mode.COMMAND
    conn.receive_data(b"c AUTHENTICATE LOGIN\r\n!!!\r\n")
    conn.next_event()
    conn.start_authenticate("c")
    assert conn.next_event() == BadCommand("c", "Invalid base64 in authentication exchange")


def test_starttls_drops_pipelined_plaintext():
    conn = ServerConnection()
    conn.receive_data(b"a STARTTLS\r\nb LOGIN evil injected\r\n")
    assert conn.next_event() == ev.StartTLS("a")
    assert conn.start_tls() == len(b"b LOGIN evil injected\r\n")
    assert conn.next_event() is NEED_DATA


def test_compress_roundtrip_and_pipelined_input():
    conn = ServerConnection(state=AUTH)
    client_out = Deflater()
    conn.receive_data(b"a COMPRESS DEFLATE\r\n" + client_out.compress(b"b NOOP\r\n"))
    assert conn.next_event() == ev.Compress("a", mechanism="DEFLATE")
    inflater, deflater = wrap(conn)
    assert conn.next_event() == ev.Noop("b")
    conn.receive_data(inflater.decompress(client_out.compress(b"c LOGOUT\r\n")))
    assert conn.next_event() == ev.Logout("c")
    client_in = Inflater()
    assert client_in.decompress(deflater.compress(b"* OK x\r\n")) == b"* OK x\r\n"


def test_inflater_bounds_output():
    bomb = Deflater().compress(b"\0" * 5_000_000)
    inf = Inflater(max_output=1000)
    first = inf.decompress(bomb)
    assert len(first) == 1000 and inf.pending
    total = len(first)
    while inf.pending:
        total += len(inf.decompress(b""))
    assert total == 5_000_000


def test_utf8_mode_allows_8bit_quoted():
    conn = ServerConnection(state=AUTH)
    conn.utf8_enabled = True
    [e] = commands_of(b'a SELECT "\xc3\xa4"\r\n', conn=conn)
    assert e.mailbox == "ä"


def test_literal_without_a_tag_is_refused():
    evs = events_of(b"+x LOGIN {5}\r\na NOOP\r\n", state=State.NOT_AUTHENTICATED)
    assert evs == [BadCommand(None, "Missing or invalid tag"), ev.Noop("a")]
    assert evs[0].to_bytes() == b"* BAD Missing or invalid tag\r\n"


def test_state_table():
    from protocols.imap import ALLOWED_STATES

    assert State.NOT_AUTHENTICATED in ALLOWED_STATES["LOGIN"]
    assert (
        State.SELECTED not in ALLOWED_STATES["SELECT"]
        or State.AUTHENTICATED in ALLOWED_STATES["SELECT"]
    )
    assert ALLOWED_STATES["FETCH"] == frozenset({State.SELECTED})
    for state in State:
        conn = ServerConnection(state=state)
        [e] = events_of(b"a CAPABILITY\r\n", conn=conn)
        assert isinstance(e, ev.Capability) or state is State.LOGOUT
    conn = ServerConnection(ImapConfig(check_state=False), state=State.NOT_AUTHENTICATED)
    assert isinstance(events_of(b"a FETCH 1 UID\r\n", conn=conn)[0], ev.Fetch)
