"""Commands, replies and sequencing of protocols.smtp (bytes in, events out)."""

from __future__ import annotations

import pytest
from smtp_driver import EHLO, MAIL, RCPT, Session

from protocols.smtp import (
    CLOSED,
    NEED_DATA,
    Answered,
    ConnectionLost,
    DataStart,
    Ehlo,
    Help,
    MailFrom,
    MailParams,
    Noop,
    ProtocolError,
    Quit,
    RcptParams,
    RcptTo,
    Reply,
    Rset,
    ServerConfig,
    ServerConnection,
    SmtpProtocolError,
    Vrfy,
    write_reply,
)


def greeted(**kw: object) -> Session:
    s = Session(**kw)
    s.feed(EHLO)
    s.replies()
    return s


# --- greeting and EHLO -------------------------------------------------------------------


def test_greeting_bytes() -> None:
    assert Session().replies() == b"220 mx.test ESMTP ready\r\n"


def test_ehlo_reply_exact() -> None:
    s = Session()
    assert s.feed(EHLO) == [Ehlo("client.example", extended=True, lmtp=False, valid_name=True)]
    assert s.replies() == (
        b"220 mx.test ESMTP ready\r\n"
        b"250-mx.test greets client.example\r\n"
        b"250-PIPELINING\r\n"
        b"250-SIZE 52428800\r\n"
        b"250-8BITMIME\r\n"
        b"250-SMTPUTF8\r\n"
        b"250-ENHANCEDSTATUSCODES\r\n"
        b"250-CHUNKING\r\n"
        b"250-BINARYMIME\r\n"
        b"250 DSN\r\n"
    )


def test_ehlo_announces_starttls_and_auth_by_tls_state() -> None:
    cfg = ServerConfig(
        hostname="mx.test", starttls=True, auth_mechanisms=("PLAIN", "LOGIN"), requiretls=True
    )
    plain = ServerConnection(cfg)
    assert "STARTTLS" in plain.extensions
    assert not any(e.startswith("AUTH") for e in plain.extensions)  # auth_requires_tls
    assert "REQUIRETLS" not in plain.extensions  # RFC 8689: only under TLS
    tls = ServerConnection(cfg, tls_active=True)
    assert "STARTTLS" not in tls.extensions
    assert "AUTH PLAIN LOGIN" in tls.extensions
    assert "REQUIRETLS" in tls.extensions


def test_helo_single_line_and_invalid_name_flagged() -> None:
    s = Session()
    s.replies()
    assert s.feed(b"HELO not_a valid name!\r\n") == [
        Ehlo("not_a valid name!", extended=False, valid_name=False)
    ]
    assert s.replies() == b"250 mx.test greets not_a valid name!\r\n"


@pytest.mark.parametrize(
    "name", ["[192.0.2.1]", "[IPv6:2001:db8::1]", "mail.example.org", "xn--bcher-kva.example"]
)
def test_ehlo_valid_names(name: str) -> None:
    s = Session()
    (ev,) = s.feed(b"EHLO %s\r\n" % name.encode())
    assert isinstance(ev, Ehlo) and ev.valid_name


@pytest.mark.parametrize("name", ["[300.1.1.1]", "[IPv6:zz::1]", "-bad.example", "a..b"])
def test_ehlo_invalid_names_still_accepted_but_flagged(name: str) -> None:
    s = Session()
    (ev,) = s.feed(b"EHLO %s\r\n" % name.encode())
    assert isinstance(ev, Ehlo) and not ev.valid_name


def test_ehlo_without_name() -> None:
    s = Session()
    s.replies()
    (ev,) = s.feed(b"EHLO\r\n")
    assert isinstance(ev, ProtocolError)
    assert s.replies() == b"501 5.5.4 Syntax: EHLO hostname\r\n"


def test_ehlo_rejected_by_daemon_needs_new_ehlo() -> None:
    s = Session(
        policy=lambda c, e: c.reject(550, "5.7.1", "No") if isinstance(e, Ehlo) else c.accept()
    )
    s.feed(EHLO, MAIL)
    assert s.codes()[-2:] == ["550 5.7.1", "503 5.5.1"]


def test_lhlo_unknown_in_smtp_mode() -> None:
    s = Session()
    s.replies()
    s.feed(b"LHLO x\r\n")
    assert s.replies() == b"500 5.5.2 Command not recognized\r\n"


# --- a whole transaction -----------------------------------------------------------------


def test_transaction_exact_bytes() -> None:
    s = greeted()
    evs = s.feed(MAIL, RCPT, b"DATA\r\n", b"Subject: x\r\n\r\nbody\r\n.\r\n", b"QUIT\r\n")
    assert [type(e).__name__ for e in evs] == [
        "MailFrom",
        "RcptTo",
        "DataStart",
        "MessageComplete",
        "Quit",
    ]
    assert evs[3].data == b"Subject: x\r\n\r\nbody\r\n"  # type: ignore[attr-defined]
    assert s.replies() == (
        b"250 2.1.0 OK\r\n"
        b"250 2.1.5 OK\r\n"
        b"354 End data with <CR><LF>.<CR><LF>\r\n"
        b"250 2.0.0 OK\r\n"
        b"221 2.0.0 mx.test closing connection\r\n"
    )
    assert s.conn.next_event() is CLOSED


def test_message_complete_carries_envelope() -> None:
    s = greeted()
    evs = s.feed(MAIL, RCPT, b"RCPT TO:<carol@example.net>\r\nDATA\r\nx\r\n.\r\n")
    done = evs[-1]
    assert done.mail_from.address == "alice@example.org"  # type: ignore[attr-defined]
    assert [r.address for r in done.recipients] == ["bob@example.net", "carol@example.net"]  # type: ignore[attr-defined]


def test_rejected_rcpt_not_in_envelope_and_data_needs_valid_rcpt() -> None:
    def policy(c: ServerConnection, e: object) -> bytes:
        if isinstance(e, RcptTo):
            return c.reject(550, "5.1.1", "No such user")
        return c.accept()

    s = greeted(policy=policy)
    s.feed(MAIL, RCPT, b"DATA\r\n")
    assert s.codes() == ["250 2.1.0", "550 5.1.1", "554 5.5.1"]
    assert s.conn.recipients == ()


def test_quit_ignores_further_data() -> None:
    s = greeted()
    s.feed(b"QUIT\r\nNOOP\r\n")
    assert s.codes() == ["221 2.0.0"]
    s.conn.receive_data(b"NOOP\r\n")
    assert s.conn.next_event() is CLOSED
    assert not s.conn.has_pending_input


def test_rset_noop_help() -> None:
    s = greeted()
    evs = s.feed(MAIL, b"RSET\r\n", b"NOOP whatever\r\n", b"HELP\r\n", RCPT)
    assert [type(e) for e in evs] == [MailFrom, Rset, Noop, Help, ProtocolError]
    assert s.codes() == ["250 2.1.0", "250 2.0.0", "250 2.0.0", "214 2.0.0", "503 5.5.1"]


def test_rset_with_argument() -> None:
    s = greeted()
    s.feed(b"RSET now\r\n")
    assert s.replies() == b"501 5.5.4 Syntax: RSET (no arguments)\r\n"


def test_vrfy_disabled_252() -> None:
    s = greeted()
    (ev,) = s.feed(b"VRFY bob\r\n")
    assert isinstance(ev, Answered) and not isinstance(ev, ProtocolError)
    assert (
        s.replies()
        == b"252 2.1.5 Cannot VRFY user, but will accept message and attempt delivery\r\n"
    )


def test_vrfy_enabled_goes_to_daemon() -> None:
    s = Session(ServerConfig(hostname="mx.test", vrfy_enabled=True))
    s.feed(EHLO)
    s.replies()
    assert s.feed(b"VRFY bob\r\n") == [Vrfy("bob")]
    assert s.replies() == b"250 2.1.5 bob\r\n"


def test_expn_and_unknown() -> None:
    s = greeted()
    s.feed(b"EXPN list\r\n", b"FOO bar\r\n", b"\r\n")
    assert s.codes() == ["502 5.5.1", "500 5.5.2", "500 5.5.2"]


def test_verbs_case_insensitive() -> None:
    s = Session()
    evs = s.feed(
        b"ehlo x\r\n", b"mail from:<a@b.example>\r\n", b"RcPt To:<c@d.example>\r\n", b"data\r\n"
    )
    assert [type(e) for e in evs] == [Ehlo, MailFrom, RcptTo, DataStart]


def test_sequence_errors() -> None:
    s = Session()
    s.replies()
    s.feed(MAIL, RCPT, b"DATA\r\n", b"BDAT 0 LAST\r\n", b"STARTTLS\r\n", b"AUTH PLAIN\r\n")
    assert s.codes() == ["503 5.5.1"] * 3 + ["503 5.5.1", "503 5.5.1", "503 5.5.1"]
    s = greeted()
    s.feed(MAIL, MAIL)
    assert s.replies() == b"250 2.1.0 OK\r\n503 5.5.1 Nested MAIL command\r\n"


def test_ehlo_mid_transaction_resets() -> None:
    s = greeted()
    s.feed(MAIL, RCPT, EHLO, b"DATA\r\n")
    assert s.codes()[-1] == "503 5.5.1"
    assert s.conn.mail_from is None


# --- addresses ---------------------------------------------------------------------------


def mail_event(line: bytes, **kw: object) -> object:
    s = Session(**kw)
    s.feed(EHLO)
    s.replies()
    (ev,) = s.feed(line)
    return ev


@pytest.mark.parametrize(
    ("line", "address"),
    [
        (b"MAIL FROM:<>\r\n", ""),
        (b"MAIL FROM: <a@b.example>\r\n", "a@b.example"),
        (b"MAIL FROM:<@relay.example,@r2.example:user@c.example>\r\n", "user@c.example"),
        (b'MAIL FROM:<"john doe"@example.org>\r\n', '"john doe"@example.org'),
        (b'MAIL FROM:<"a\\"b@c"@example.org>\r\n', '"a\\"b@c"@example.org'),
        (b"MAIL FROM:<user@[127.0.0.1]>\r\n", "user@[127.0.0.1]"),
        (b"MAIL FROM:<user@[IPv6:2001:db8::1]>\r\n", "user@[IPv6:2001:db8::1]"),
        (b"MAIL FROM:<first.last+tag@sub.example.org>\r\n", "first.last+tag@sub.example.org"),
    ],
)
def test_mail_from_paths(line: bytes, address: str) -> None:
    ev = mail_event(line)
    assert isinstance(ev, MailFrom) and ev.address == address


def test_mail_address_parts() -> None:
    ev = mail_event(b'MAIL FROM:<"a@b"@example.org>\r\n')
    assert isinstance(ev, MailFrom) and (ev.local_part, ev.domain) == ('"a@b"', "example.org")


@pytest.mark.parametrize(
    "line",
    [
        b"MAIL FROM:a@b.example\r\n",
        b"MAIL FROM:<a@b.example\r\n",
        b"MAIL FROM:<a.@b.example>\r\n",
        b"MAIL FROM:<a@-b.example>\r\n",
        b"MAIL FROM:<a@[999.0.0.1]>\r\n",
        b"MAIL FROM:<a@[IPv6:1::2::3]>\r\n",
        b"MAIL FROM:<postmaster>\r\n",
        b"MAIL FROM:<a@b.example>x\r\n",
        b"MAIL FROM:<a@" + b"x" * 64 + b".example>\r\n",
    ],
)
def test_mail_from_bad_syntax(line: bytes) -> None:
    s = greeted()
    (ev,) = s.feed(line)
    assert isinstance(ev, ProtocolError)
    assert s.codes() == ["501 5.1.7"]


def test_mail_without_from() -> None:
    s = greeted()
    s.feed(b"MAIL TO:<a@b.example>\r\n")
    assert s.replies() == b"501 5.5.4 Syntax: MAIL FROM:<address>\r\n"


def test_rcpt_postmaster_without_domain() -> None:
    s = greeted()
    evs = s.feed(MAIL, b"RCPT TO:<Postmaster>\r\n", b"RCPT TO:<postmaster@example.net>\r\n")
    assert [e.address for e in evs[1:]] == ["Postmaster", "postmaster@example.net"]  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "line", [b"RCPT TO:<>\r\n", b"RCPT TO:<bob>\r\n", b"RCPT TO:bob@example.net\r\n"]
)
def test_rcpt_bad_syntax(line: bytes) -> None:
    s = greeted()
    s.feed(MAIL, line)
    assert s.codes() == ["250 2.1.0", "501 5.1.3"]


# --- ESMTP parameters ---------------------------------------------------------------------


def test_mail_params_parsed() -> None:
    ev = mail_event(
        b"MAIL FROM:<a@b.example> SIZE=1000 BODY=8bitmime SMTPUTF8 RET=hdrs ENVID=QQ+2B+3Dx\r\n"
    )
    assert isinstance(ev, MailFrom)
    assert ev.params == MailParams(
        size=1000, body="8BITMIME", smtputf8=True, ret="HDRS", envid="QQ+=x"
    )


def test_mail_auth_param_only_when_auth_offered() -> None:
    cfg = ServerConfig(hostname="mx.test", auth_mechanisms=("PLAIN",), auth_requires_tls=False)
    s = Session(cfg)
    s.feed(EHLO)
    (ev,) = s.feed(b"MAIL FROM:<a@b.example> AUTH=user+40example.org\r\n")
    assert isinstance(ev, MailFrom) and ev.params.auth == "user@example.org"
    s = greeted()
    s.feed(b"MAIL FROM:<a@b.example> AUTH=<>\r\n")
    assert s.replies() == b"555 5.5.4 Unsupported parameter AUTH\r\n"


def test_rcpt_params_parsed() -> None:
    s = greeted()
    evs = s.feed(
        MAIL,
        b"RCPT TO:<b@c.example> NOTIFY=success,failure ORCPT=rfc822;b+2Bx@c.example\r\n",
        b"RCPT TO:<d@c.example> NOTIFY=NEVER ORCPT=utf-8;j\\x{00F6}rg@c.example\r\n",
    )
    assert evs[1].params == RcptParams(
        notify=frozenset({"SUCCESS", "FAILURE"}), orcpt=("rfc822", "b+x@c.example")
    )  # type: ignore[attr-defined]
    assert evs[2].params == RcptParams(
        notify=frozenset({"NEVER"}), orcpt=("utf-8", "jörg@c.example")
    )  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("params", "code"),
    [
        (b"FOO=bar", "555 5.5.4"),
        (b"SIZE=abc", "501 5.5.4"),
        (b"SIZE", "501 5.5.4"),
        (b"BODY=9BIT", "501 5.5.4"),
        (b"SMTPUTF8=yes", "501 5.5.4"),
        (b"SIZE=1 SIZE=2", "501 5.5.4"),
        (b"RET=ALL", "501 5.5.4"),
        (b"ENVID=a+zz", "501 5.5.4"),
        (b"REQUIRETLS", "555 5.5.4"),  # not offered without TLS
        (b"SIZE=52428801", "552 5.3.4"),  # RFC 1870 §6.1
        (b"=x", "501 5.5.4"),
    ],
)
def test_mail_param_errors(params: bytes, code: str) -> None:
    s = greeted()
    s.feed(b"MAIL FROM:<a@b.example> " + params + b"\r\n")
    assert s.codes() == [code]


@pytest.mark.parametrize(
    ("params", "code"),
    [
        (b"NOTIFY=NEVER,SUCCESS", "501 5.5.4"),
        (b"NOTIFY=SOMETIMES", "501 5.5.4"),
        (b"ORCPT=rfc822", "501 5.5.4"),
        (b"X=1", "555 5.5.4"),
    ],
)
def test_rcpt_param_errors(params: bytes, code: str) -> None:
    s = greeted()
    s.feed(MAIL, b"RCPT TO:<b@c.example> " + params + b"\r\n")
    assert s.codes()[1:] == [code]


def test_params_after_helo_refused() -> None:
    s = Session()
    s.feed(b"HELO x\r\n")
    s.replies()
    s.feed(b"MAIL FROM:<a@b.example> SIZE=10\r\n")
    assert s.codes() == ["555 5.5.4"]


def test_dsn_params_unknown_when_dsn_off() -> None:
    s = Session(ServerConfig(hostname="mx.test", dsn=False))
    s.feed(EHLO)
    s.replies()
    s.feed(b"MAIL FROM:<a@b.example> RET=FULL\r\n")
    assert s.codes() == ["555 5.5.4"]


def test_requiretls_under_tls() -> None:
    s = Session(ServerConfig(hostname="mx.test", requiretls=True), policy=lambda c, e: c.accept())
    s.conn.tls_active = True
    s.feed(EHLO)
    (ev,) = s.feed(b"MAIL FROM:<a@b.example> REQUIRETLS\r\n")
    assert isinstance(ev, MailFrom) and ev.params.requiretls


# --- SMTPUTF8 (RFC 6531) -------------------------------------------------------------------


def test_utf8_address_with_smtputf8() -> None:
    s = greeted()
    evs = s.feed(
        "MAIL FROM:<jörg@bücher.example> SMTPUTF8\r\n".encode(),
        "RCPT TO:<用户@例子.广告>\r\n".encode(),
    )
    assert [e.address for e in evs] == ["jörg@bücher.example", "用户@例子.广告"]  # type: ignore[attr-defined]


def test_utf8_address_without_smtputf8_553() -> None:
    s = greeted()
    s.feed(
        "MAIL FROM:<jörg@example.org>\r\n".encode(), MAIL, "RCPT TO:<jörg@example.org>\r\n".encode()
    )
    assert s.codes() == ["553 5.6.7", "250 2.1.0", "553 5.6.7"]


def test_smtputf8_param_when_disabled() -> None:
    s = Session(ServerConfig(hostname="mx.test", smtputf8=False))
    s.feed(EHLO)
    s.replies()
    s.feed("MAIL FROM:<jörg@example.org> SMTPUTF8\r\n".encode())
    assert s.codes() == ["555 5.5.4"]


def test_invalid_utf8_in_command() -> None:
    s = greeted()
    s.feed(b"MAIL FROM:<j\xf6rg@example.org>\r\n")
    assert s.replies() == b"500 5.5.2 Command is not valid UTF-8\r\n"


# --- limits --------------------------------------------------------------------------------


def test_too_many_recipients_452() -> None:
    s = Session(ServerConfig(hostname="mx.test", max_recipients=2, max_errors=3))
    s.feed(EHLO, MAIL)
    s.replies()
    s.feed(*(b"RCPT TO:<u%d@example.net>\r\n" % i for i in range(6)))
    assert s.codes() == ["250 2.1.5"] * 2 + ["452 4.5.3"] * 4  # not counted as errors
    assert len(s.conn.recipients) == 2


def test_max_errors_closes_with_421() -> None:
    s = Session(ServerConfig(hostname="mx.test", max_errors=3))
    s.replies()
    s.feed(b"FOO\r\n", b"BAR\r\n", b"BAZ\r\n", b"NOOP\r\n")
    assert s.replies() == (
        b"500 5.5.2 Command not recognized\r\n"
        b"500 5.5.2 Command not recognized\r\n"
        b"421 4.7.0 mx.test Too many errors, closing connection\r\n"
    )
    assert s.conn.next_event() is CLOSED


def test_command_line_too_long() -> None:
    s = greeted()
    s.feed(b"NOOP " + b"x" * 600 + b"\r\n", b"NOOP\r\n")
    assert s.codes() == ["500 5.5.2", "250 2.0.0"]


def test_one_megabyte_line_is_not_buffered() -> None:
    s = greeted()
    for _ in range(16):
        s.feed(b"x" * 65536)
        assert len(s.conn._buf) <= 65536  # skipped, not kept
    s.feed(b"\r\nNOOP\r\n")
    assert s.replies() == b"500 5.5.2 Line too long\r\n250 2.0.0 OK\r\n"


def test_exactly_512_octets_is_allowed() -> None:
    s = greeted()
    s.feed(b"NOOP " + b"x" * (512 - 7) + b"\r\n")
    assert s.codes() == ["250 2.0.0"]
    s.feed(b"NOOP " + b"x" * (513 - 7) + b"\r\n")
    assert s.codes() == ["500 5.5.2"]


@pytest.mark.parametrize(
    "line", [b"NOOP\n", b"NO\rOP\r\n", b"NOOP\x00\r\n", b"MAIL FROM:<a\x00@b.example>\r\n"]
)
def test_bare_newlines_and_nul_in_commands(line: bytes) -> None:
    s = greeted()
    (ev,) = s.feed(line)
    assert isinstance(ev, ProtocolError) and ev.reply.code == 500


def test_truncated_input_reports_loss() -> None:
    s = greeted()
    s.feed(b"MAIL FROM:<a@b.exa")
    assert s.conn.next_event() is NEED_DATA
    s.conn.receive_data(b"")
    assert s.conn.next_event() == ConnectionLost(during="GREETED")
    assert s.conn.next_event() is CLOSED


# --- pipelining ----------------------------------------------------------------------------


def test_pipelined_replies_in_order_and_pending_input() -> None:
    s = Session()
    s.replies()
    conn = s.conn
    conn.receive_data(EHLO + MAIL + b"RCPT TO:<bad>\r\n" + RCPT + b"NOOP\r\n")
    order = []
    out = b""
    while (ev := conn.next_event()) is not NEED_DATA:
        order.append((type(ev).__name__, conn.has_pending_input))
        if isinstance(ev, (Ehlo, MailFrom, RcptTo)):
            out += conn.accept()
    assert order == [
        ("Ehlo", True),
        ("MailFrom", True),
        ("ProtocolError", True),
        ("RcptTo", True),
        ("Noop", False),
    ]
    lines = (out + conn.data_to_send()).decode().split("\r\n")
    finals = [ln[:9] for ln in lines if ln[3:4] == " "]
    assert finals == ["250 DSN", "250 2.1.0", "501 5.1.3", "250 2.1.5", "250 2.0.0"]


def test_send_returns_earlier_machine_replies_first() -> None:
    s = greeted()
    conn = s.conn
    conn.receive_data(b"FOO\r\n" + MAIL)
    assert isinstance(conn.next_event(), ProtocolError)
    assert isinstance(conn.next_event(), MailFrom)
    assert conn.accept() == b"500 5.5.2 Command not recognized\r\n250 2.1.0 OK\r\n"


# --- banner refusal, close, misuse --------------------------------------------------------


def test_554_banner_only_quit() -> None:
    conn = ServerConnection(ServerConfig(hostname="mx.test"))
    assert conn.send(Reply(554, None, "No SMTP service here")) == b"554 No SMTP service here\r\n"
    conn.receive_data(EHLO + b"QUIT\r\n")
    assert isinstance(conn.next_event(), ProtocolError)
    assert isinstance(conn.next_event(), Quit)
    assert (
        conn.data_to_send()
        == b"503 5.5.1 No SMTP service here, only QUIT\r\n221 2.0.0 mx.test closing connection\r\n"
    )


def test_daemon_close_421() -> None:
    s = greeted()
    assert s.conn.close(Reply(421, "4.4.2", "Timeout")) == b"421 4.4.2 Timeout\r\n"
    assert s.conn.next_event() is CLOSED


def test_421_as_answer_closes() -> None:
    s = greeted(
        policy=lambda c, e: (
            c.send(Reply(421, "4.3.2", "Shutting down")) if isinstance(e, MailFrom) else c.accept()
        )
    )
    s.feed(MAIL + RCPT)
    assert s.replies() == b"421 4.3.2 Shutting down\r\n"
    assert s.conn.next_event() is CLOSED


def test_misuse_raises() -> None:
    conn = ServerConnection(ServerConfig(hostname="mx.test"))
    with pytest.raises(SmtpProtocolError):
        conn.next_event()
    conn.greet()
    with pytest.raises(SmtpProtocolError):
        conn.accept()
    conn.receive_data(EHLO)
    conn.next_event()
    with pytest.raises(SmtpProtocolError):
        conn.next_event()  # EHLO not answered yet
    with pytest.raises(SmtpProtocolError):
        conn.send(Reply(354, None, "no"))
    with pytest.raises(SmtpProtocolError):
        conn.send(Reply(250, "2.0.0", "a\r\n250 injected"))
    with pytest.raises(SmtpProtocolError):
        conn.send(Reply(550, "4.0.0", "class mismatch"))
    with pytest.raises(SmtpProtocolError):
        conn.send_lmtp_replies([])
    with pytest.raises(SmtpProtocolError):
        conn.tls_started()


def test_write_reply_multiline_enhanced() -> None:
    assert (
        write_reply(Reply(550, "5.7.1", ("Rejected", "see policy")))
        == b"550-5.7.1 Rejected\r\n550 5.7.1 see policy\r\n"
    )
    assert write_reply(Reply(334, None, "")) == b"334 \r\n"


def test_config_validation() -> None:
    with pytest.raises(ValueError):
        ServerConfig(hostname="mx.test", chunking=False)  # BINARYMIME needs CHUNKING
    with pytest.raises(ValueError):
        ServerConfig(hostname="mx.test", auth_mechanisms=("CRAM-MD5",))
    with pytest.raises(ValueError):
        ServerConfig(hostname="mx.test", max_line_length=100)
    ServerConfig(hostname="mx.test", chunking=False, binarymime=False)


def test_long_client_input_echoed_in_replies_is_cut_not_raised() -> None:
    s = Session(ServerConfig(hostname="mx.test", vrfy_enabled=True))
    s.replies()
    s.feed(b"EHLO " + b"h" * 500 + b"\r\n", b"VRFY " + "ü".encode() * 250 + b"\r\n")
    lines = s.replies().split(b"\r\n")[:-1]
    assert lines[0] == b"250-mx.test greets " + b"h" * 64
    assert all(len(line) <= 510 for line in lines)
    lines[-1].decode()  # still valid UTF-8


def test_early_talker_visible_before_greeting() -> None:
    conn = ServerConnection(ServerConfig(hostname="mx.test"))
    conn.receive_data(EHLO)  # the client spoke before the banner (pregreet)
    assert conn.has_pending_input
    conn.greet()
    assert isinstance(conn.next_event(), Ehlo)
