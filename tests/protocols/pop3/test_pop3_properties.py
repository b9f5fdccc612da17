"""Property tests: any input is answered, never raised on; chunking never changes the outcome;
dot-stuffing round-trips."""

from __future__ import annotations

import base64

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pop3_driver import ToyDaemon, session

from protocols.pop3 import (
    Closed,
    Connection,
    Pop3Config,
    Reply,
    SaslCancelled,
    StartTLS,
    message_response,
    normalize_crlf,
)

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
CONFIG = Pop3Config(
    allow_plaintext_auth_without_tls=True, apop=True, max_bad_commands=50, max_auth_failures=10
)
MESSAGES = [
    ("u1", b"Subject: one\r\n\r\n.dot\r\nbody\r\n"),
    ("u2", b"Subject: two\n\nbare lf\n..two dots\n"),
    ("u3", b"Subject: no body"),
    ("u4", b""),
]
LOGIN = b"USER mrose\r\nPASS tanstaaf\r\n"

keywords = st.sampled_from(
    [b"USER", b"PASS", b"APOP", b"AUTH", b"STLS", b"UTF8", b"CAPA", b"QUIT", b"STAT", b"LIST",
     b"RETR", b"DELE", b"NOOP", b"RSET", b"TOP", b"UIDL", b"uidl", b"top", b"XTND", b"*", b""]
)
params = st.one_of(
    st.sampled_from([b"1", b"2", b"3", b"4", b"5", b"0", b"007", b"-1", b"mrose", b"tanstaaf",
                     b"PLAIN", b"LOGIN", b"=", base64.b64encode(b"\x00mrose\x00tanstaaf"),
                     base64.b64encode(b"mrose"), b"c4c9334bac560ecc979e58001b3e22fb"]),
    st.binary(max_size=12).filter(lambda b: b"\n" not in b),
)
lines = st.builds(
    lambda kw, ps, end: b" ".join([kw, *ps]) + end,
    keywords,
    st.lists(params, max_size=3),
    st.sampled_from([b"\r\n", b"\r\n", b"\n"]),
)
valid_lines = st.builds(
    lambda cmd, n, m: cmd.replace(b"N", b"%d" % n).replace(b"M", b"%d" % m) + b"\r\n",
    st.sampled_from([b"RETR N", b"TOP N M", b"DELE N", b"LIST", b"LIST N", b"UIDL", b"UIDL N",
                     b"STAT", b"NOOP", b"RSET", b"CAPA"]),
    st.integers(min_value=1, max_value=5),
    st.integers(min_value=0, max_value=4),
)
sessions = st.builds(
    lambda login, body, quit: (LOGIN if login else b"") + b"".join(body) + (b"QUIT\r\n" if quit else b""),
    st.booleans(),
    st.lists(
        st.one_of(valid_lines, lines, st.sampled_from([b"*\r\n", b"AUTH PLAIN\r\n"])), max_size=25
    ),
    st.booleans(),
)


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    return [data[a:b] for a, b in zip(points, points[1:])]


def well_formed(d: ToyDaemon) -> None:
    for ev in d.events:
        if isinstance(ev, (Reply, SaslCancelled, StartTLS)):
            assert ev.reply.endswith(b"\r\n")
            assert ev.reply.startswith((b"+OK", b"-ERR"))
            # Single-line replies have exactly one CRLF; multi-line ones end with ".".
            assert ev.reply.count(b"\r\n") == 1 or ev.reply.endswith(b"\r\n.\r\n")


@SETTINGS
@given(data=sessions, cuts=st.lists(st.integers(min_value=0), max_size=12), eof=st.booleans())
def test_chunking_invariance(data: bytes, cuts: list[int], eof: bool) -> None:
    tail = [b""] if eof else []
    whole = session([*([data] if data else []), *tail], CONFIG, MESSAGES, apop_timestamp="<1.2@h>")
    parts = session([*chunked(data, cuts), *tail], CONFIG, MESSAGES, apop_timestamp="<1.2@h>")
    assert parts.events == whole.events
    assert parts.out == whole.out
    assert parts.expunged == whole.expunged
    well_formed(whole)
    if eof:
        assert isinstance(whole.events[-1], Closed)


@SETTINGS
@given(
    prefix=st.sampled_from([b"", LOGIN, b"AUTH PLAIN\r\n", b"UTF8\r\n"]),
    chunks=st.lists(st.binary(max_size=300), max_size=8),
    stls=st.booleans(),
)
def test_random_bytes_never_raise(prefix: bytes, chunks: list[bytes], stls: bool) -> None:
    config = Pop3Config(allow_plaintext_auth_without_tls=True, stls=stls, apop=True)
    d = session([prefix, *chunks, b""], config, MESSAGES)
    well_formed(d)
    assert isinstance(d.events[-1], Closed)


@SETTINGS
@given(junk=st.binary(min_size=1, max_size=5000), cut=st.integers(min_value=0, max_value=5000))
def test_random_bytes_after_login_with_small_limits(junk: bytes, cut: int) -> None:
    config = Pop3Config(max_command_line=255, max_sasl_line=300, allow_plaintext_auth_without_tls=True)
    d = session([LOGIN, junk[:cut], junk[cut:], b"QUIT\r\n"], config, MESSAGES)
    well_formed(d)
    assert d.conn._reader.buffered <= 300 + 5000  # never more than one read plus a line


@SETTINGS
@given(raw=st.binary(max_size=400).map(lambda b: b.replace(b"\x01", b".").replace(b"\x02", b"\r\n")
                                          .replace(b"\x03", b"\n")))
def test_retr_round_trips_and_terminates_once(raw: bytes) -> None:
    out = message_response(raw, None)
    status, _, rest = out.partition(b"\r\n")
    assert rest.endswith(b".\r\n")
    # The terminator appears exactly once, at the end.
    assert (b"\r\n" + rest).count(b"\r\n.\r\n") == 1
    expected = normalize_crlf(raw)
    if expected and not expected.endswith(b"\r\n"):
        expected += b"\r\n"
    assert status == b"+OK %d octets" % len(expected)
    body = rest[:-3]
    unstuffed = b"".join(
        (line[1:] if line.startswith(b".") else line) + b"\r\n" for line in body.split(b"\r\n")[:-1]
    )
    assert unstuffed == expected


@SETTINGS
@given(raw=st.binary(max_size=300).map(lambda b: b.replace(b"\x01", b".").replace(b"\x02", b"\r\n")),
       n=st.integers(min_value=0, max_value=30))
def test_top_is_terminated_once(raw: bytes, n: int) -> None:
    out = message_response(raw, n)
    assert out.startswith(b"+OK\r\n") and (out[3:]).count(b"\r\n.\r\n") == 1


def test_fuzz_entry_point_does_not_grow_without_bound() -> None:
    conn = Connection(Pop3Config())
    for _ in range(200):
        conn.receive_data(b"A" * 4096)
        conn.next_event()
    assert conn._reader.buffered < 4096 + 512
