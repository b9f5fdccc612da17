"""Property tests: random and mutated input in random chunkings never raises (only typed
events come out), and the events do not depend on how the bytes were chunked."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings, strategies as st

from protocols.imap import (
    NEED_DATA,
    BadCommand,
    Command,
    ConnectionMustClose,
    Event,
    ImapConfig,
    LiteralContinuationNeeded,
    ServerConnection,
    State,
)
from protocols.imap import responses

VALID = [
    b"A654 FETCH 2:4 (FLAGS BODY[HEADER.FIELDS (DATE FROM)])\r\n",
    b'3 select "INBOX" (CONDSTORE)\r\n',
    b"5 UID fetch 1:* (FLAGS) (CHANGEDSINCE 1234)\r\n",
    b'7 list (SPECIAL-USE) "" "*" return (SUBSCRIBED CHILDREN STATUS (MESSAGES UNSEEN))\r\n',
    b"A1 LOGIN {4}\r\nuser {4+}\r\npass\r\n",
    b'A003 APPEND saved-messages (\\Seen) "17-Jul-1996 02:44:25 -0700" {5}\r\nhello ~{3}\r\n\x00ab\r\n',
    b'A2 SEARCH OR (FROM "x" SINCE 1-Feb-1994) NOT 1:5,7 UNSEEN MODSEQ 5\r\n',
    b"A3 UID SEARCH RETURN (MIN MAX COUNT SAVE) CHARSET UTF-8 SUBJECT {4}\r\n\xc3\xa4bc\r\n",
    b"A4 UID STORE 1:* +FLAGS.SILENT (\\Deleted)\r\n",
    b"A5 STORE 2:4 (UNCHANGEDSINCE 12345) -FLAGS (\\Seen $Junk)\r\n",
    b"A6 SELECT INBOX (QRESYNC (67890007 20050715194045000 41,43:211,214:541 (1:3 4:6)))\r\n",
    b"A7 FETCH 1 (BODY.PEEK[1.2.HEADER.FIELDS.NOT (Subject)]<0.100> BINARY[1]<5.10> BINARY.SIZE[2])\r\n",
    b"A8 UID SORT (REVERSE DATE SUBJECT) UTF-8 ALL\r\n",
    b"A9 THREAD REFERENCES UTF-8 SINCE 5-MAR-2000\r\n",
    b'B1 ID ("name" "Thunderbird" "version" NIL)\r\n',
    b"B2 STATUS &ZeVnLIqe- (UIDNEXT MESSAGES HIGHESTMODSEQ)\r\n",
    b"B3 CREATE Sent (USE (\\Sent))\r\n",
    b"B4 AUTHENTICATE PLAIN AGZvbwBiYXI=\r\n",
    b"B5 UID EXPUNGE 3000:3002\r\n",
    b"B6 UID MOVE 1,3:5 Archive\r\n",
    b"B7 IDLE\r\n",
    b"B8 ENABLE UTF8=ACCEPT\r\n",
    b"B9 GETQUOTAROOT INBOX\r\n",
]

CFG = ImapConfig(max_line=300, max_literal=64, max_command_literals=100, check_state=False)


def drive(chunks: list[bytes], config: ImapConfig = CFG) -> list[Event]:
    conn = ServerConnection(config, State.SELECTED)
    out: list[Event] = []
    for chunk in chunks:
        conn.receive_data(chunk)
        while True:
            event = conn.next_event()
            if event is NEED_DATA:
                break
            assert isinstance(event, Event), event
            out.append(event)
            if isinstance(event, LiteralContinuationNeeded):
                conn.accept_literal()
            elif isinstance(event, (BadCommand, ConnectionMustClose)):
                assert event.to_bytes().endswith(b"\r\n")
        assert conn.buffered <= config.max_line + config.max_command_literals + 64
    return out


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces, last = [], 0
    for p in points:
        pieces.append(data[last:p])
        last = p
    pieces.append(data[last:])
    return pieces


@st.composite
def mutated(draw):
    data = bytearray(b"".join(draw(st.lists(st.sampled_from(VALID), min_size=1, max_size=3))))
    for _ in range(draw(st.integers(0, 4))):
        op = draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
        pos = draw(st.integers(0, max(0, len(data) - 1)))
        if op == "flip" and data:
            data[pos] = draw(st.integers(0, 255))
        elif op == "insert":
            data[pos:pos] = draw(
                st.sampled_from(
                    [
                        b"(",
                        b")",
                        b"{",
                        b"{5}\r\n",
                        b"{9+}\r\n",
                        b"~{2}\r\n",
                        b'"',
                        b"\\",
                        b" ",
                        b"\r\n",
                        b"*",
                        b"$",
                        b"[",
                        b"]",
                        b"<",
                        b"\x00",
                        b"\xff",
                        b"NOT ",
                        b"OR ",
                        b"&",
                        b"-",
                        b"4294967296",
                        b"{99999}\r\n",
                    ]
                )
            )
        elif op == "delete" and data:
            del data[pos : pos + draw(st.integers(1, 10))]
        elif op == "truncate":
            del data[pos:]
    return bytes(data)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=400), st.lists(st.integers(0, 10_000), max_size=6))
def test_random_bytes_only_typed_events(data, cuts):
    assert drive(chunked(data, cuts)) == drive([data])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated(), st.lists(st.integers(0, 10_000), max_size=8))
def test_mutated_commands_chunking_invariant(data, cuts):
    whole = drive([data])
    assert drive(chunked(data, cuts)) == whole
    assert drive([bytes([b]) for b in data]) == whole


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.sampled_from(VALID), min_size=1, max_size=5),
    st.lists(st.integers(0, 10_000), max_size=8),
)
def test_valid_commands_parse_in_any_chunking(lines, cuts):
    data = b"".join(lines)
    events = [
        e
        for e in drive(chunked(data, cuts), ImapConfig(check_state=False))
        if not isinstance(e, LiteralContinuationNeeded)
    ]
    assert all(isinstance(e, Command) for e in events), events
    assert len(events) == len(lines)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=30), st.binary(max_size=60), st.booleans())
def test_encoded_strings_reparse(name, blob, utf8):
    """What the writer encodes, the reader reads back identically (mailbox names, strings)."""
    from protocols.imap import _writers as w

    if any(ch < " " or ch == "\x7f" for ch in name) or not name.strip() or name.upper() == "INBOX":
        return
    try:
        name.encode("utf-16-be")
    except UnicodeEncodeError:
        return
    conn = ServerConnection(state=State.AUTHENTICATED)
    conn.utf8_enabled = utf8
    conn.receive_data(b"a CREATE " + w.mailbox(name, utf8) + b"\r\n")
    e = conn.next_event()
    if isinstance(e, LiteralContinuationNeeded):
        conn.accept_literal()
        e = conn.next_event()
    assert e.mailbox == name
    if b"\x00" in blob:
        return
    conn = ServerConnection(state=State.NOT_AUTHENTICATED)
    conn.receive_data(b"a ID (" + w.string(blob) + b" NIL)\r\n")
    e = conn.next_event()
    if isinstance(e, LiteralContinuationNeeded):
        conn.accept_literal()
        e = conn.next_event()
    try:
        expected = blob.decode("utf-8")
    except UnicodeDecodeError:
        assert isinstance(e, BadCommand)
        return
    assert e.params == ((expected, None),)


def test_responses_never_contain_bare_line_breaks_in_text():
    assert responses.no("a", "x\r\n* OK injected") == b"a NO x  * OK injected\r\n"


@st.composite
def messages(draw):
    from imap_messages import RAW

    data = bytearray(RAW)
    for _ in range(draw(st.integers(0, 6))):
        pos = draw(st.integers(0, len(data) - 1))
        op = draw(st.sampled_from(["flip", "delete", "insert"]))
        if op == "flip":
            data[pos] = draw(st.integers(0, 255))
        elif op == "delete":
            del data[pos : pos + draw(st.integers(1, 40))]
        else:
            data[pos:pos] = draw(
                st.sampled_from(
                    [
                        b"\r\n",
                        b"--b1\r\n",
                        b"--b2--\r\n",
                        b'"',
                        b"(",
                        b"<",
                        b",",
                        b":",
                        b";",
                        b"\xff",
                        b"=?",
                        b"\r\n\r\n",
                        b"\x00",
                    ]
                )
            )
    return bytes(data)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messages())
def test_encoders_accept_any_parser_output(raw):
    from mailserver.message import parse_message
    from protocols.imap.envelope import body_structure, envelope
    from protocols.imap.sections import UnknownCteError, binary_bytes, section_bytes
    from protocols.imap.values import Section

    msg = parse_message(raw)
    assert envelope(msg).startswith(b"(")
    assert body_structure(msg.structure).startswith(b"(")
    assert body_structure(msg.structure, extensible=False).endswith(b")")
    for part in msg.structure.walk():
        nums = tuple(int(x) for x in part.part_id.split(".")) if part.part_id else ()
        for text in (None, "HEADER", "TEXT", "MIME", "HEADER.FIELDS"):
            if text == "MIME" and not nums:
                continue
            data = section_bytes(raw, msg.structure, Section(nums, text, ("SUBJECT",)))
            assert data is None or isinstance(data, bytes)
        try:
            binary_bytes(raw, msg.structure, Section(nums))
        except UnknownCteError:
            pass
