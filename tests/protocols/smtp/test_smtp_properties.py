"""Property tests: random and mangled input never raises; chunking never changes the outcome."""

from __future__ import annotations

import base64

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from smtp_driver import Session

from protocols import sasl
from protocols.smtp import (
    AuthRequest,
    AuthResponse,
    Command,
    MessageComplete,
    RcptTo,
    Reply,
    ServerConfig,
    ServerConnection,
)

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

CONFIGS = [
    ServerConfig(hostname="mx.test", auth_mechanisms=("PLAIN", "LOGIN"), auth_requires_tls=False),
    ServerConfig(
        hostname="mx.test", starttls=True, auth_mechanisms=("PLAIN", "LOGIN"), requiretls=True
    ),
    ServerConfig(hostname="lmtp.test", mode="lmtp", max_recipients=3, max_errors=5),
    ServerConfig(
        hostname="sub.test",
        auth_mechanisms=("PLAIN",),
        auth_required=True,
        auth_requires_tls=False,
        max_message_size=300,
        vrfy_enabled=True,
    ),
]


class Daemon:
    """A deterministic policy: its answers depend only on the events, never on timing."""

    def __init__(self) -> None:
        self.mech: sasl.PlainMechanism | sasl.LoginMechanism | None = None

    def __call__(self, conn: ServerConnection, ev: Command) -> bytes:
        if isinstance(ev, RcptTo) and "bad" in ev.address:
            return conn.reject(550, "5.1.1", "No such user")
        if isinstance(ev, MessageComplete):
            if conn.config.lmtp:
                return conn.send_lmtp_replies(
                    [
                        Reply(250, "2.0.0", "ok") if i % 2 == 0 else Reply(452, "4.2.2", "full")
                        for i, _ in enumerate(ev.recipients)
                    ]
                )
            return conn.accept(f"queued {len(ev.data)}")
        if isinstance(ev, (AuthRequest, AuthResponse)):
            try:
                if isinstance(ev, AuthRequest):
                    self.mech = sasl.server_mechanism(ev.mechanism)
                    step = self.mech.step(ev.initial_response)
                else:
                    assert self.mech is not None
                    step = self.mech.step(ev.data)
            except sasl.SaslError:
                return conn.reject(501, "5.5.2", "Malformed")
            if isinstance(step, bytes):
                return conn.auth_challenge(step)
            return conn.accept() if step.password == "pw" else conn.reject(535, "5.7.8", "Invalid")
        return conn.accept()


def drive(config: ServerConfig, chunks: list[bytes], eof: bool = True) -> Session:
    s = Session(config, policy=Daemon())
    s.feed(*chunks)
    if eof:
        s.feed(b"")
    return s


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    out, prev = [], 0
    for p in points:
        out.append(data[prev:p])
        prev = p
    out.append(data[prev:])
    return [c for c in out if c]


PLAIN_OK = base64.b64encode(b"\x00u\x00pw")
PIECES = [
    b"EHLO client.example\r\n",
    b"HELO c\r\n",
    b"LHLO c\r\n",
    b"ehlo [127.0.0.1]\r\n",
    b"MAIL FROM:<a@b.example>\r\n",
    b"MAIL FROM:<>\r\n",
    b"MAIL FROM:<a@b.example> SIZE=100 BODY=8BITMIME\r\n",
    b"MAIL FROM:<a@b.example> BODY=BINARYMIME\r\n",
    "MAIL FROM:<jörg@b.example> SMTPUTF8\r\n".encode(),
    b"MAIL FROM:<@r.example:a@b.example> RET=HDRS ENVID=x+2By\r\n",
    b"MAIL FROM:<a@b.example> SIZE=99999999999\r\n",
    b"RCPT TO:<c@d.example>\r\n",
    b"RCPT TO:<bad@d.example>\r\n",
    b"RCPT TO:<postmaster>\r\n",
    b"RCPT TO:<e@d.example> NOTIFY=SUCCESS,DELAY ORCPT=rfc822;e@d.example\r\n",
    "RCPT TO:<ü@d.example>\r\n".encode(),
    b"DATA\r\n",
    b"Subject: hi\r\n\r\nbody\r\n.\r\n",
    b"..stuffed\r\n.\r\n",
    b".\r\n",
    b"x\n.\nMAIL FROM:<e@v.il>\r\n",
    b"a\r\n.\n",
    b"\r.\r\n",
    b"line\r\n" * 70,
    b"y" * 1200 + b"\r\n",
    b"BDAT 5\r\nhello",
    b"BDAT 7 LAST\r\n\r\n.\r\nab",
    b"BDAT 0 LAST\r\n",
    b"BDAT 3 LAST\r\nQUI",
    b"RSET\r\n",
    b"NOOP\r\n",
    b"HELP\r\n",
    b"VRFY user\r\n",
    b"EXPN list\r\n",
    b"QUIT\r\n",
    b"AUTH PLAIN\r\n",
    b"AUTH PLAIN " + PLAIN_OK + b"\r\n",
    b"AUTH LOGIN\r\n",
    PLAIN_OK + b"\r\n",
    b"dQ==\r\n",
    b"cHc=\r\n",
    b"*\r\n",
    b"AUTH PLAIN =\r\n",
    b"\r\n",
    b"\n",
    b"\r",
    b"\x00",
    b"FOO\r\n",
    b"MAIL FROM:<broken\r\n",
]
NO_TLS_PIECES = PIECES
piece = st.sampled_from(PIECES) | st.binary(max_size=30)
sessions = st.lists(piece, max_size=30).map(b"".join)
cuts = st.lists(st.integers(min_value=0, max_value=10_000), max_size=12)
configs = st.sampled_from(CONFIGS)


@SETTINGS
@given(config=configs, data=st.binary(max_size=3000), cuts=cuts)
def test_random_bytes_never_raise(config: ServerConfig, data: bytes, cuts: list[int]) -> None:
    drive(config, split(data, cuts))


@SETTINGS
@given(
    config=configs,
    prefix=sessions,
    noise=st.binary(max_size=500),
    cuts=cuts,
    truncate=st.integers(0, 5000),
    eof=st.booleans(),
)
def test_mangled_sessions_never_raise(
    config: ServerConfig, prefix: bytes, noise: bytes, cuts: list[int], truncate: int, eof: bool
) -> None:
    data = (prefix + noise)[: truncate if truncate < len(prefix + noise) else None]
    s = drive(config, split(data, cuts), eof=eof)
    # every reply line is well formed
    for line in bytes(s.out).split(b"\r\n")[:-1]:
        assert line[:3].isdigit() and line[3:4] in (b" ", b"-")


INVARIANT_CONFIGS = [
    c for c in CONFIGS if not c.starttls
]  # STARTTLS drops buffered plaintext by design


@SETTINGS
@given(config=st.sampled_from(INVARIANT_CONFIGS), data=sessions, cuts=cuts)
def test_chunking_invariance(config: ServerConfig, data: bytes, cuts: list[int]) -> None:
    whole = drive(config, [data])
    pieces = drive(config, split(data, cuts))
    assert pieces.events == whole.events
    assert bytes(pieces.out) == bytes(whole.out)


def test_every_split_point_and_byte_by_byte() -> None:
    config = CONFIGS[0]
    data = b"".join(
        [
            b"EHLO client.example\r\n",
            b"AUTH PLAIN " + PLAIN_OK + b"\r\n",
            b"MAIL FROM:<a@b.example>\r\n",
            b"RCPT TO:<c@d.example>\r\n",
            b"RCPT TO:<bad@d.example>\r\n",
            b"DATA\r\n",
            b"..x\r\n\r\n.\r\n",
            b"MAIL FROM:<>\r\n",
            b"RCPT TO:<c@d.example>\r\n",
            b"BDAT 7\r\n\r\n.\r\nabBDAT 0 LAST\r\n",
            b"QUIT\r\n",
        ]
    )
    reference = drive(config, [data])
    assert [type(e).__name__ for e in reference.events][-3:] == [
        "ChunkReceived",
        "MessageComplete",
        "Quit",
    ]
    for i in range(1, len(data)):
        s = drive(config, [data[:i], data[i:]])
        assert s.events == reference.events, i
        assert bytes(s.out) == bytes(reference.out), i
    s = drive(config, [data[i : i + 1] for i in range(len(data))])
    assert s.events == reference.events and bytes(s.out) == bytes(reference.out)
