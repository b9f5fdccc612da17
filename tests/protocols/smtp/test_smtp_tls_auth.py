"""STARTTLS (RFC 3207), AUTH (RFC 4954) with protocols.sasl, and submission rules."""

from __future__ import annotations

import base64

import pytest
from smtp_driver import EHLO, MAIL, RCPT, Session

from protocols import sasl
from protocols.smtp import (
    PAUSED,
    AuthCancelled,
    AuthRequest,
    AuthResponse,
    Command,
    Ehlo,
    MailFrom,
    ProtocolError,
    ServerConfig,
    ServerConnection,
    StartTls,
    State,
)

TLS = ServerConfig(hostname="mx.test", starttls=True, auth_mechanisms=("PLAIN", "LOGIN"))
USERS = {"alice": "wonderland"}


def b64(data: bytes) -> bytes:
    return base64.b64encode(data)


# --- STARTTLS ------------------------------------------------------------------------------


def test_starttls_flow_resets_session() -> None:
    conn = ServerConnection(TLS)
    conn.greet()
    conn.receive_data(EHLO)
    conn.next_event()
    conn.accept()
    conn.receive_data(b"STARTTLS\r\n")
    assert conn.next_event() == StartTls(discarded=0)
    assert conn.accept() == b"220 2.0.0 Ready to start TLS\r\n"
    assert conn.next_event() is PAUSED
    conn.receive_data(b"MAIL FROM:<plaintext@injected.example>\r\n")  # still plaintext: dropped
    conn.tls_started()
    assert conn.tls_active and conn.state is State.CONNECTED and conn.helo_name is None
    conn.receive_data(MAIL)
    ev = conn.next_event()
    assert isinstance(ev, ProtocolError) and ev.reply.code == 503  # must EHLO again
    conn.receive_data(EHLO)
    assert isinstance(conn.next_event(), Ehlo)
    reply = conn.accept()
    assert b"STARTTLS" not in reply and b"AUTH PLAIN LOGIN" in reply


def test_starttls_injection_defence() -> None:
    # RFC 3207 §4.2 / CVE-2011-0411: commands pipelined after STARTTLS must not run after TLS.
    s = Session(TLS)
    s.feed(EHLO)
    s.replies()
    evs = s.feed(b"STARTTLS\r\nMAIL FROM:<evil@example.com>\r\nRCPT TO:<x@example.net>\r\n")
    assert evs == [
        StartTls(discarded=len(b"MAIL FROM:<evil@example.com>\r\nRCPT TO:<x@example.net>\r\n"))
    ]
    assert s.replies() == b"220 2.0.0 Ready to start TLS\r\n"
    assert s.conn.tls_active and not s.conn.has_pending_input


def test_starttls_rejected_keeps_plaintext_session() -> None:
    s = Session(
        TLS,
        policy=lambda c, e: (
            c.reject(454, "4.7.0", "TLS not available") if isinstance(e, StartTls) else c.accept()
        ),
    )
    s.feed(EHLO, b"STARTTLS\r\n", MAIL)
    assert s.codes()[-2:] == ["454 4.7.0", "250 2.1.0"]
    assert not s.conn.tls_active


def test_starttls_errors() -> None:
    s = Session()  # not configured
    s.feed(EHLO)
    s.replies()
    s.feed(b"STARTTLS\r\n")
    assert s.codes() == ["502 5.5.1"]
    s = Session(TLS)
    s.conn.tls_active = True
    s.feed(EHLO)
    s.replies()
    s.feed(b"STARTTLS\r\n", b"STARTTLS now\r\n", MAIL, b"STARTTLS\r\n")
    assert s.codes() == ["503 5.5.1", "501 5.5.4", "250 2.1.0", "503 5.5.1"]


# --- AUTH ------------------------------------------------------------------------------------


def sasl_policy() -> object:
    state: dict[str, object] = {}

    def policy(conn: ServerConnection, ev: Command) -> bytes:
        if isinstance(ev, AuthRequest):
            state["mech"] = sasl.server_mechanism(ev.mechanism)
            data = ev.initial_response
        elif isinstance(ev, AuthResponse):
            data = ev.data
        else:
            return conn.accept()
        try:
            step = state["mech"].step(data)  # type: ignore[attr-defined]
        except sasl.SaslError:
            return conn.reject(501, "5.5.2", "Malformed SASL message")
        if isinstance(step, bytes):
            return conn.auth_challenge(step)
        if USERS.get(step.authcid) == step.password:
            return conn.accept()
        return conn.reject(535, "5.7.8", "Authentication credentials invalid")

    return policy


def auth_session(config: ServerConfig = TLS, tls: bool = True) -> Session:
    s = Session(config, policy=sasl_policy())  # type: ignore[arg-type]
    s.conn.tls_active = tls
    s.feed(EHLO)
    s.replies()
    return s


def test_auth_plain_initial_response() -> None:
    s = auth_session()
    evs = s.feed(b"AUTH PLAIN " + b64(b"\x00alice\x00wonderland") + b"\r\n")
    assert evs == [AuthRequest("PLAIN", b"\x00alice\x00wonderland")]
    assert s.replies() == b"235 2.7.0 Authentication successful\r\n"
    assert s.conn.authenticated
    s.feed(b"AUTH PLAIN =\r\n")
    assert s.replies() == b"503 5.5.1 Already authenticated\r\n"


def test_auth_plain_without_initial_response() -> None:
    s = auth_session()
    s.feed(b"AUTH plain\r\n")
    assert s.replies() == b"334 \r\n"
    assert s.conn.state is State.AUTH
    evs = s.feed(b64(b"authz\x00alice\x00wrong") + b"\r\n")
    assert evs == [AuthResponse(b"authz\x00alice\x00wrong")]
    assert s.replies() == b"535 5.7.8 Authentication credentials invalid\r\n"
    assert not s.conn.authenticated and s.conn.state is State.GREETED


def test_auth_login_two_steps() -> None:
    s = auth_session()
    s.feed(b"AUTH LOGIN\r\n", b64(b"alice") + b"\r\n", b64(b"wonderland") + b"\r\n")
    assert s.replies() == (
        b"334 " + b64(b"Username:") + b"\r\n" + b"334 " + b64(b"Password:") + b"\r\n"
        b"235 2.7.0 Authentication successful\r\n"
    )


def test_auth_login_with_initial_user() -> None:
    s = auth_session()
    s.feed(b"AUTH LOGIN " + b64(b"alice") + b"\r\n", b64(b"wonderland") + b"\r\n")
    assert s.codes() == ["334 UGFzc3dvcmQ6", "235 2.7.0"]


def test_auth_cancel_and_bad_base64() -> None:
    s = auth_session()
    evs = s.feed(b"AUTH LOGIN\r\n", b"*\r\n")
    assert isinstance(evs[-1], AuthCancelled)
    assert s.codes()[-1] == "501 5.0.0"
    s.feed(b"AUTH LOGIN\r\n", b"!!notbase64\r\n")
    assert s.codes()[-1] == "501 5.5.2"
    s.feed(b"AUTH PLAIN abc$\r\n")
    assert s.codes() == ["501 5.5.2"]


def test_auth_requires_tls_538() -> None:
    s = auth_session(tls=False)
    s.feed(b"AUTH PLAIN " + b64(b"\x00alice\x00wonderland") + b"\r\n")
    assert (
        s.replies() == b"538 5.7.11 Encryption required for requested authentication mechanism\r\n"
    )


def test_auth_unknown_mechanism_and_not_offered() -> None:
    s = auth_session()
    s.feed(b"AUTH CRAM-MD5\r\n")
    assert s.replies() == b"504 5.5.4 Unrecognized authentication type\r\n"
    s = Session()
    s.feed(EHLO)
    s.replies()
    s.feed(b"AUTH PLAIN\r\n")
    assert s.codes() == ["502 5.5.1"]


def test_auth_not_during_transaction() -> None:
    s = auth_session()
    s.feed(MAIL, b"AUTH PLAIN\r\n")
    assert s.codes() == ["250 2.1.0", "503 5.5.1"]


def test_auth_response_line_limit() -> None:
    s = auth_session()
    s.feed(b"AUTH PLAIN\r\n")
    s.replies()
    s.feed(b"A" * 20000 + b"\r\n")
    assert s.replies() == b"500 5.5.6 Authentication exchange line is too long\r\n"
    assert s.conn.state is State.GREETED


def test_auth_long_initial_response_allowed_up_to_12288() -> None:
    s = auth_session()
    blob = b64(b"\x00alice\x00" + b"p" * 3000)
    assert 512 < len(blob) < 12288
    s.feed(b"AUTH PLAIN " + blob + b"\r\n")
    assert s.codes() == ["501 5.5.2"]  # reaches the mechanism (which rejects > 255 octets)


def test_submission_requires_auth() -> None:
    cfg = ServerConfig(hostname="mx.test", auth_mechanisms=("PLAIN",), auth_required=True)
    s = auth_session(cfg)
    s.feed(MAIL)
    assert s.replies() == b"530 5.7.0 Authentication required\r\n"
    s.feed(b"AUTH PLAIN " + b64(b"\x00alice\x00wonderland") + b"\r\n", MAIL, RCPT)
    assert s.codes() == ["235 2.7.0", "250 2.1.0", "250 2.1.5"]
    assert isinstance(s.events[-2], MailFrom)


def test_tls_started_forgets_authentication() -> None:
    cfg = ServerConfig(
        hostname="mx.test", starttls=True, auth_mechanisms=("PLAIN",), auth_requires_tls=False
    )
    s = auth_session(cfg, tls=False)
    s.feed(b"AUTH PLAIN " + b64(b"\x00alice\x00wonderland") + b"\r\n", b"STARTTLS\r\n")
    assert s.conn.tls_active and not s.conn.authenticated


# --- protocols.sasl ----------------------------------------------------------------------------


def test_sasl_plain_decode() -> None:
    c = sasl.decode_plain("admin\x00jörg\x00pässword".encode())
    assert (c.authzid, c.authcid, c.password) == ("admin", "jörg", "pässword")
    assert "pässword" not in repr(c)


@pytest.mark.parametrize(
    "bad",
    [b"", b"\x00alice", b"\x00\x00pw", b"\x00alice\x00", b"a\x00b\x00c\x00d", b"\x00\xff\x00pw"],
)
def test_sasl_plain_malformed(bad: bytes) -> None:
    with pytest.raises(sasl.SaslError):
        sasl.decode_plain(bad)


def test_sasl_login_and_unknown() -> None:
    m = sasl.server_mechanism("login")
    assert m.step(None) == b"Username:"
    assert m.step(b"bob") == b"Password:"
    creds = m.step(b"pw")
    assert isinstance(creds, sasl.Credentials) and (creds.authcid, creds.password) == ("bob", "pw")
    with pytest.raises(sasl.SaslError):
        sasl.server_mechanism("GSSAPI")
