"""Every POP3 command in every state: bytes in, events and exact bytes out."""

from __future__ import annotations

import base64

import pytest
from pop3_driver import session

from protocols.pop3 import (
    NEED_DATA,
    Awaiting,
    Closed,
    Connection,
    LocalProtocolError,
    Pop3Config,
    Reply,
    ResponseCode,
    Retrieve,
    SaslCancelled,
    SaslResponse,
    SaslStart,
    StartTLS,
    State,
    Update,
    UserPass,
)

OPEN = Pop3Config(allow_plaintext_auth_without_tls=True)
MSGS = [("uid-a", b"Subject: a\r\n\r\nbody a\r\n"), ("uid-b", b"Subject: b\r\n\r\nbody b\r\n"),
        ("uid-c", b"Subject: c\r\n\r\n.dot\r\n")]


def one(conn: Connection, data: bytes):
    conn.receive_data(data)
    return conn.next_event()


def transaction(config: Pop3Config = OPEN, msgs=MSGS) -> Connection:
    conn = Connection(config)
    assert one(conn, b"USER mrose\r\nPASS tanstaaf\r\n") == Reply("USER", b"+OK send PASS\r\n")
    assert conn.next_event() == UserPass("mrose", "tanstaaf")
    conn.auth_succeeded([(len(raw), uid) for uid, raw in msgs])
    assert conn.state is State.TRANSACTION
    return conn


# ---------------------------------------------------------------- AUTHORIZATION


def test_greeting_without_and_with_apop() -> None:
    assert Connection().greeting() == b"+OK POP3 server ready\r\n"
    conn = Connection(Pop3Config(apop=True, hostname="mx.example"))
    assert conn.apop_timestamp and conn.apop_timestamp.endswith("@mx.example>")
    assert conn.greeting() == f"+OK POP3 server ready {conn.apop_timestamp}\r\n".encode()
    with pytest.raises(LocalProtocolError):
        Connection(Pop3Config(apop=True), apop_timestamp="no-brackets")


def test_user_pass_success_and_password_with_spaces() -> None:
    conn = Connection(OPEN)
    assert one(conn, b"user mrose\r\n") == Reply("USER", b"+OK send PASS\r\n")
    ev = one(conn, b"PASS correct horse battery\r\n")
    assert ev == UserPass("mrose", "correct horse battery")
    assert "correct" not in repr(ev)  # passwords never reach logs through repr
    assert conn.awaiting is Awaiting.AUTH
    assert conn.auth_succeeded([(10, "a")]) == b"+OK maildrop has 1 message (10 octets)\r\n"


def test_pass_without_user_and_user_usage() -> None:
    conn = Connection(OPEN)
    assert one(conn, b"PASS x\r\n") == Reply("PASS", b"-ERR USER first\r\n")
    assert one(conn, b"USER\r\n") == Reply("USER", b"-ERR usage: USER name\r\n")
    assert one(conn, b"USER a b\r\n") == Reply("USER", b"-ERR usage: USER name\r\n")
    assert one(conn, b"USER a\r\n").ok
    assert one(conn, b"PASS\r\n") == Reply("PASS", b"-ERR usage: PASS password\r\n")
    assert conn.bad_commands == 4


def test_auth_failed_codes_and_limit() -> None:
    conn = Connection(OPEN)
    one(conn, b"USER busy\r\nPASS x\r\n")
    conn.next_event()
    assert conn.auth_failed(ResponseCode.IN_USE) == (
        b"-ERR [IN-USE] maildrop is locked by another session\r\n"
    )
    for code, line in [
        (ResponseCode.SYS_TEMP, b"-ERR [SYS/TEMP] temporary failure, try later\r\n"),
        (ResponseCode.LOGIN_DELAY, b"-ERR [LOGIN-DELAY] logged in too recently, try later\r\n"),
        (ResponseCode.UTF8, b"-ERR [UTF8] this mailbox needs the UTF8 command\r\n"),
        (ResponseCode.SYS_PERM, b"-ERR [SYS/PERM] mailbox unavailable\r\n"),
    ]:
        one(conn, b"USER u\r\nPASS x\r\n")
        conn.next_event()
        assert conn.auth_failed(code) == line
    assert conn.auth_failures == 0  # not the client's fault: not counted
    for i in range(3):
        one(conn, b"USER u\r\nPASS wrong\r\n")
        assert isinstance(conn.next_event(), UserPass)
        out = conn.auth_failed()
        if i < 2:
            assert out == b"-ERR [AUTH] authentication failed\r\n"
    assert out == b"-ERR [AUTH] authentication failed; too many failures, closing connection\r\n"
    assert conn.auth_failures == 3
    assert conn.next_event() == Closed("too-many-auth-failures")
    conn.receive_data(b"USER again\r\n")
    assert conn.next_event() == Closed("too-many-auth-failures")


def test_plaintext_auth_refused_without_tls() -> None:
    conn = Connection(Pop3Config(stls=True, sasl_mechanisms=("PLAIN", "SCRAM-SHA-256")))
    caps = one(conn, b"CAPA\r\n").reply.split(b"\r\n")
    assert b"USER" not in caps and b"SASL SCRAM-SHA-256" in caps and b"STLS" in caps
    assert one(conn, b"USER a\r\n").reply == (
        b"-ERR [AUTH] plaintext authentication requires TLS (use STLS)\r\n"
    )
    assert one(conn, b"AUTH PLAIN\r\n").reply == (
        b"-ERR [AUTH] plaintext authentication requires TLS (use STLS)\r\n"
    )
    assert one(conn, b"AUTH SCRAM-SHA-256\r\n") == SaslStart("SCRAM-SHA-256", None)


def test_apop_event_and_usage() -> None:
    conn = Connection(Pop3Config(apop=True), apop_timestamp="<1.2@h>")
    ev = one(conn, b"APOP mrose C4C9334BAC560ECC979E58001B3E22FB\r\n")
    assert (ev.user, ev.digest, ev.timestamp) == ("mrose", "c4c9334bac560ecc979e58001b3e22fb", "<1.2@h>")
    conn.auth_failed()
    assert one(conn, b"APOP mrose short\r\n") == Reply("APOP", b"-ERR usage: APOP name digest\r\n")
    assert one(Connection(), b"APOP a " + b"0" * 32 + b"\r\n") == Reply(
        "APOP", b"-ERR APOP not supported\r\n"
    )


def test_capa_in_both_states() -> None:
    conn = Connection(Pop3Config(expire="NEVER", login_delay=0, implementation="ours"), tls=True)
    assert one(conn, b"CAPA\r\n") == Reply("CAPA", (
        b"+OK Capability list follows\r\nTOP\r\nUIDL\r\nUSER\r\nSASL PLAIN LOGIN\r\nUTF8 USER\r\n"
        b"RESP-CODES\r\nAUTH-RESP-CODE\r\nPIPELINING\r\nEXPIRE NEVER\r\nLOGIN-DELAY 0\r\n"
        b"IMPLEMENTATION ours\r\n.\r\n"
    ))
    one(conn, b"USER a\r\nPASS b\r\n")
    conn.next_event()
    conn.auth_succeeded([])
    assert one(conn, b"capa\r\n") == Reply("CAPA", (
        b"+OK Capability list follows\r\nTOP\r\nUIDL\r\nRESP-CODES\r\nAUTH-RESP-CODE\r\n"
        b"PIPELINING\r\nEXPIRE NEVER\r\nLOGIN-DELAY 0\r\nIMPLEMENTATION ours\r\n.\r\n"
    ))
    assert one(conn, b"CAPA x\r\n").reply == b"-ERR CAPA takes no arguments\r\n"


def test_transaction_commands_rejected_before_login_and_vice_versa() -> None:
    conn = Connection(OPEN)
    for cmd in (b"STAT", b"LIST", b"RETR 1", b"DELE 1", b"NOOP", b"RSET", b"TOP 1 1", b"UIDL"):
        kw = cmd.split()[0].decode()
        assert one(conn, cmd + b"\r\n") == Reply(
            kw, f"-ERR {kw} not valid in the AUTHORIZATION state\r\n".encode()
        )
        if conn.state is State.CLOSED:
            break
    conn = transaction()
    for cmd in (b"USER a", b"PASS b", b"AUTH PLAIN", b"STLS", b"UTF8", b"APOP a b"):
        kw = cmd.split()[0].decode()
        assert one(conn, cmd + b"\r\n").reply == f"-ERR {kw} not valid in the TRANSACTION state\r\n".encode()


def test_unknown_and_malformed_commands() -> None:
    conn = Connection(OPEN)
    assert one(conn, b"HELO x\r\n") == Reply("", b"-ERR unknown command\r\n")
    assert one(conn, b"XY\r\n") == Reply("", b"-ERR unknown command\r\n")
    assert one(conn, b"\r\n") == Reply("", b"-ERR unknown command\r\n")
    assert one(conn, b"\xff\xfe\xfd\r\n") == Reply("", b"-ERR unknown command\r\n")
    assert one(conn, b" STAT\r\n") == Reply("", b"-ERR unknown command\r\n")
    assert conn.bad_commands == 5


def test_too_many_bad_commands_closes() -> None:
    conn = Connection(Pop3Config(max_bad_commands=3))
    conn.receive_data(b"X1X\r\nX2X\r\nX3X\r\nCAPA\r\n")
    assert conn.next_event().reply == b"-ERR unknown command\r\n"
    assert conn.next_event().reply == b"-ERR unknown command\r\n"
    assert conn.next_event().reply == (
        b"-ERR unknown command; too many bad commands, closing connection\r\n"
    )
    assert conn.next_event() == Closed("too-many-bad-commands")
    assert not conn.has_pending_input


def test_keywords_case_insensitive_and_bare_lf() -> None:
    conn = transaction()
    assert one(conn, b"sTaT\n") == Reply("STAT", b"+OK 3 64\r\n")
    assert one(conn, b"noop\r\n") == Reply("NOOP", b"+OK\r\n")


# ---------------------------------------------------------------- TRANSACTION


def test_stat_list_uidl_exclude_deleted() -> None:
    conn = transaction()
    assert one(conn, b"DELE 2\r\n") == Reply("DELE", b"+OK message 2 deleted\r\n")
    assert one(conn, b"STAT\r\n") == Reply("STAT", b"+OK 2 42\r\n")
    assert one(conn, b"LIST\r\n") == Reply("LIST", b"+OK 2 messages (42 octets)\r\n1 22\r\n3 20\r\n.\r\n")
    assert one(conn, b"UIDL\r\n") == Reply("UIDL", b"+OK\r\n1 uid-a\r\n3 uid-c\r\n.\r\n")
    for cmd in (b"LIST 2", b"UIDL 2", b"RETR 2", b"TOP 2 0", b"DELE 2"):
        assert one(conn, cmd + b"\r\n").reply == b"-ERR message 2 already deleted\r\n"
    assert one(conn, b"RSET\r\n") == Reply("RSET", b"+OK maildrop has 3 messages (64 octets)\r\n")
    assert one(conn, b"LIST 2\r\n") == Reply("LIST", b"+OK 2 22\r\n")
    assert conn.bad_commands == 0  # "no such message" is an answer, not a bad command


def test_message_number_validation() -> None:
    conn = transaction(Pop3Config(allow_plaintext_auth_without_tls=True, max_bad_commands=100))
    no_such = b"-ERR no such message, only 3 messages in maildrop\r\n"
    assert one(conn, b"LIST 0\r\n").reply == no_such
    assert one(conn, b"LIST 4\r\n").reply == no_such
    assert one(conn, b"RETR 99999999999999999999999\r\n").reply == no_such
    assert one(conn, b"DELE 0001\r\n").reply == b"+OK message 1 deleted\r\n"
    bad = b"-ERR message number must be a positive integer\r\n"
    for arg in (b"-1", b"+2", b"1.0", b"one", b"\xd9\xa1"):
        assert one(conn, b"LIST " + arg + b"\r\n").reply == bad
    assert one(conn, b"LIST 1 2\r\n").reply == b"-ERR usage: LIST [msg]\r\n"
    assert one(conn, b"RETR\r\n").reply == b"-ERR usage: RETR msg\r\n"
    assert one(conn, b"DELE\r\n").reply == b"-ERR usage: DELE msg\r\n"
    for args in (b"TOP 1", b"TOP 1 -1", b"TOP 1 x", b"TOP 1 2 3", b"TOP"):
        assert one(conn, args + b"\r\n").reply == b"-ERR usage: TOP msg n (n >= 0)\r\n"
    assert one(conn, b"TOP x 1\r\n").reply == bad
    assert one(conn, b"STAT 1\r\n").reply == b"-ERR STAT takes no arguments\r\n"
    assert one(conn, b"NOOP 1\r\n").reply == b"-ERR NOOP takes no arguments\r\n"
    assert one(conn, b"RSET 1\r\n").reply == b"-ERR RSET takes no arguments\r\n"


def test_retr_top_events_and_huge_top_count() -> None:
    conn = transaction()
    assert one(conn, b"RETR 3\r\n") == Retrieve(3, "uid-c", None, 20)
    assert conn.awaiting is Awaiting.RETRIEVE
    assert conn.send_message(MSGS[2][1]) == b"+OK 20 octets\r\nSubject: c\r\n\r\n..dot\r\n.\r\n"
    assert one(conn, b"TOP 1 0\r\n") == Retrieve(1, "uid-a", 0, 22)
    assert conn.send_message(MSGS[0][1], 0) == b"+OK\r\nSubject: a\r\n\r\n.\r\n"
    assert one(conn, b"TOP 1 " + b"9" * 40 + b"\r\n").top_lines == 10**18
    assert conn.retrieve_failed() == b"-ERR [SYS/TEMP] message unavailable\r\n"
    assert one(conn, b"TOP 1 2\r\n").top_lines == 2
    with pytest.raises(LocalProtocolError):
        conn.send_message(b"x", None)  # differs from the pending TOP


def test_dele_rset_quit_update_semantics() -> None:
    conn = transaction()
    one(conn, b"DELE 1\r\n")
    one(conn, b"DELE 3\r\n")
    one(conn, b"RSET\r\n")
    assert conn.deleted == frozenset()
    one(conn, b"DELE 3\r\n")
    one(conn, b"DELE 1\r\n")
    assert one(conn, b"QUIT\r\nSTAT\r\n") == Update((1, 3), ("uid-a", "uid-c"))
    assert conn.state is State.UPDATE
    with pytest.raises(LocalProtocolError):
        conn.next_event()
    assert conn.send_quit_result(False) == b"-ERR [SYS/TEMP] some deleted messages not removed\r\n"
    assert conn.next_event() == Closed("quit")  # the pipelined STAT is never answered


def test_eof_in_transaction_deletes_nothing() -> None:
    d = session([b"USER mrose\r\nPASS tanstaaf\r\nDELE 1\r\nDELE 2\r\n", b""], messages=MSGS)
    assert d.events[-1] == Closed("eof")
    assert not any(isinstance(e, Update) for e in d.events) and d.expunged == []


def test_eof_with_partial_line_drops_it() -> None:
    conn = Connection(OPEN)
    conn.receive_data(b"CAPA\r\nQUI")
    conn.receive_data(b"")
    assert conn.next_event().command == "CAPA"
    assert conn.next_event() == Closed("eof")


# ---------------------------------------------------------------- daemon misuse


def test_daemon_misuse_raises_local_protocol_error() -> None:
    conn = Connection(OPEN)
    for call in (lambda: conn.auth_succeeded([]), lambda: conn.auth_failed(),
                 lambda: conn.send_message(b""), lambda: conn.send_quit_result(True),
                 lambda: conn.tls_started(), lambda: conn.sasl_challenge(b"")):
        with pytest.raises(LocalProtocolError):
            call()
    one(conn, b"USER a\r\nPASS b\r\nSTAT\r\n")
    conn.next_event()
    with pytest.raises(LocalProtocolError):
        conn.next_event()  # must answer UserPass first
    with pytest.raises(LocalProtocolError):
        conn.sasl_challenge(b"")  # not a SASL exchange
    with pytest.raises(LocalProtocolError):
        conn.auth_succeeded()  # no maildrop
    with pytest.raises(LocalProtocolError):
        conn.open_maildrop([(1, "dup"), (2, "dup")])
    with pytest.raises(LocalProtocolError):
        conn.open_maildrop([(1, "has space")])
    conn.open_maildrop([(5, "x")])
    assert conn.auth_succeeded() == b"+OK maildrop has 1 message (5 octets)\r\n"


# ---------------------------------------------------------------- limits


def test_line_length_limit_bounded_memory() -> None:
    conn = Connection(OPEN)  # max_command_line=512 incl. CRLF
    ok_line = b"USER " + b"a" * 505 + b"\r\n"
    assert len(ok_line) == 512
    assert one(conn, ok_line).ok
    conn.receive_data(b"USER " + b"a" * 600)
    assert conn.next_event() == Reply("", b"-ERR line too long\r\n")
    assert conn.next_event() is NEED_DATA
    for _ in range(1000):  # a megabyte without LF is dropped as it arrives
        conn.receive_data(b"b" * 1000)
        assert conn._reader.buffered == 0
    conn.receive_data(b"bbb\r\nCAPA\r\n")
    assert conn.next_event().command == "CAPA"
    assert conn.dropped_octets > 1_000_000


def test_line_too_long_within_one_chunk_then_next_command() -> None:
    conn = Connection(OPEN)
    conn.receive_data(b"NOOP" + b"x" * 600 + b"\r\nCAPA\r\n")
    assert conn.next_event().reply == b"-ERR line too long\r\n"
    assert conn.next_event().command == "CAPA"


def test_minimum_limit_enforced_by_config() -> None:
    with pytest.raises(ValueError):
        Pop3Config(max_command_line=100)
    conn = Connection(Pop3Config(max_command_line=255, allow_plaintext_auth_without_tls=True))
    assert one(conn, b"USER " + b"a" * 248 + b"\r\n").ok  # exactly 255 octets
    assert one(conn, b"USER " + b"a" * 249 + b"\r\n").reply == b"-ERR line too long\r\n"


def test_auth_lines_may_be_longer() -> None:
    conn = Connection(tls=True)
    blob = base64.b64encode(b"\x00user\x00" + b"p" * 3000)
    assert isinstance(one(conn, b"AUTH PLAIN " + blob + b"\r\n"), SaslStart)


# ---------------------------------------------------------------- PIPELINING


def test_pipelined_replies_in_order_with_daemon_answers_between() -> None:
    d = session([b"USER mrose\r\nPASS tanstaaf\r\nSTAT\r\nRETR 1\r\nNOOP\r\nTOP 3 0\r\nLIST 2\r\nQUIT\r\n"],
                messages=MSGS)
    assert bytes(d.out) == (
        b"+OK POP3 server ready\r\n+OK send PASS\r\n+OK maildrop has 3 messages (64 octets)\r\n"
        b"+OK 3 64\r\n+OK 22 octets\r\nSubject: a\r\n\r\nbody a\r\n.\r\n+OK\r\n"
        b"+OK\r\nSubject: c\r\n\r\n.\r\n+OK 2 22\r\n"
        b"+OK localhost POP3 server signing off (3 messages left)\r\n"
    )


def test_has_pending_input() -> None:
    conn = transaction()
    conn.receive_data(b"NOOP\r\nNOOP\r\nNO")
    assert conn.has_pending_input
    conn.next_event()
    assert conn.has_pending_input
    conn.next_event()
    assert not conn.has_pending_input
    assert conn.next_event() is NEED_DATA


# ---------------------------------------------------------------- STLS


def test_stls_discards_pipelined_injection() -> None:
    conn = Connection(Pop3Config(stls=True))
    conn.receive_data(b"STLS\r\nUSER evil\r\nPASS injected\r\n")
    ev = conn.next_event()
    assert ev == StartTLS(b"+OK Begin TLS negotiation\r\n")
    with pytest.raises(LocalProtocolError):
        conn.next_event()
    conn.receive_data(b"CAPA\r\n")  # still cleartext: the handshake has not finished
    conn.tls_started()
    assert conn.tls and conn.dropped_octets == len(b"USER evil\r\nPASS injected\r\nCAPA\r\n")
    assert conn.next_event() is NEED_DATA
    caps = one(conn, b"CAPA\r\n").reply.split(b"\r\n")
    assert b"STLS" not in caps and b"USER" in caps and b"SASL PLAIN LOGIN" in caps
    assert one(conn, b"STLS\r\n").reply == b"-ERR already using TLS\r\n"


def test_stls_resets_user_and_utf8() -> None:
    conn = Connection(Pop3Config(stls=True, allow_plaintext_auth_without_tls=True))
    one(conn, b"UTF8\r\n")
    one(conn, b"USER a\r\n")
    assert isinstance(one(conn, b"STLS\r\n"), StartTLS)
    conn.tls_started()
    assert not conn.utf8_enabled
    assert one(conn, b"PASS x\r\n").reply == b"-ERR USER first\r\n"


def test_stls_not_offered_or_wrong_state() -> None:
    assert one(Connection(), b"STLS\r\n").reply == b"-ERR STLS not supported\r\n"
    assert one(Connection(Pop3Config(stls=True)), b"STLS now\r\n").reply == (
        b"-ERR STLS takes no arguments\r\n"
    )
    conn = transaction(Pop3Config(stls=True, allow_plaintext_auth_without_tls=True))
    assert one(conn, b"STLS\r\n").reply == b"-ERR STLS not valid in the TRANSACTION state\r\n"


# ---------------------------------------------------------------- SASL (RFC 5034)

PLAIN = base64.b64encode(b"\x00mrose\x00tanstaaf")


def test_sasl_plain_with_initial_response() -> None:
    d = session([b"AUTH PLAIN " + PLAIN + b"\r\nSTAT\r\n"], messages=MSGS, tls=True)
    assert d.events[0] == SaslStart("PLAIN", b"\x00mrose\x00tanstaaf")
    assert bytes(d.out).endswith(b"+OK maildrop has 3 messages (64 octets)\r\n+OK 3 64\r\n")


def test_sasl_plain_via_continuation_and_empty_initial() -> None:
    d = session([b"AUTH plain\r\n", PLAIN + b"\r\n"], messages=MSGS, tls=True)
    assert d.events[:2] == [SaslStart("PLAIN", None), SaslResponse(b"\x00mrose\x00tanstaaf")]
    assert bytes(d.out) == b"+OK POP3 server ready\r\n+ \r\n+OK maildrop has 3 messages (64 octets)\r\n"
    conn = Connection(tls=True)
    assert one(conn, b"AUTH PLAIN =\r\n") == SaslStart("PLAIN", b"")


def test_sasl_login_two_challenges() -> None:
    d = session([b"AUTH LOGIN\r\n", base64.b64encode(b"mrose") + b"\r\n",
                 base64.b64encode(b"tanstaaf") + b"\r\n"], messages=MSGS, tls=True)
    assert bytes(d.out) == (b"+OK POP3 server ready\r\n+ VXNlcm5hbWU6\r\n+ UGFzc3dvcmQ6\r\n"
                            b"+OK maildrop has 3 messages (64 octets)\r\n")


def test_sasl_cancel_and_malformed() -> None:
    conn = Connection(tls=True)
    one(conn, b"AUTH PLAIN\r\n")
    conn.sasl_challenge(b"")
    assert one(conn, b"*\r\n") == SaslCancelled(b"-ERR authentication cancelled\r\n", "cancelled")
    assert conn.awaiting is None and conn.auth_failures == 1
    one(conn, b"AUTH PLAIN\r\n")
    conn.sasl_challenge(b"")
    assert one(conn, b"not base64!\r\n") == SaslCancelled(
        b"-ERR invalid base64 in response\r\n", "malformed"
    )
    assert one(conn, b"AUTH PLAIN\r\n") == SaslStart("PLAIN", None)
    conn.sasl_challenge(b"")
    assert one(conn, b"*\r\n").reason == "cancelled"
    assert conn.next_event() == Closed("too-many-auth-failures")


def test_sasl_line_after_challenge_is_not_a_command() -> None:
    conn = Connection(tls=True)
    one(conn, b"AUTH PLAIN\r\n")
    conn.sasl_challenge(b"")
    assert one(conn, b"QUIT\r\n") == SaslResponse(base64.b64decode(b"QUIT"))
    assert one(Connection(tls=True), b"AUTH PLAIN\r\n") == SaslStart("PLAIN", None)


def test_sasl_errors_before_exchange() -> None:
    conn = Connection(tls=True)
    assert one(conn, b"AUTH CRAM-MD5\r\n").reply == b"-ERR mechanism CRAM-MD5 not supported\r\n"
    assert one(conn, b"AUTH PLAIN abc\r\n").reply == b"-ERR invalid base64 in initial response\r\n"
    assert one(conn, b"AUTH PL@IN\r\n").reply == b"-ERR usage: AUTH mechanism [initial-response]\r\n"
    assert one(conn, b"AUTH\r\n") == Reply("AUTH", b"+OK\r\nPLAIN\r\nLOGIN\r\n.\r\n")


def test_sasl_long_response_limit() -> None:
    conn = Connection(tls=True)
    one(conn, b"AUTH PLAIN\r\n")
    conn.sasl_challenge(b"")
    conn.receive_data(b"A" * 9000)
    assert one(conn, b"\r\n") == SaslCancelled(b"-ERR response too long\r\n", "malformed")


# ---------------------------------------------------------------- UTF8 (RFC 6856)


def test_utf8_enables_utf8_user_pass() -> None:
    conn = Connection(OPEN)
    assert one(conn, "USER jörg\r\n".encode()).reply == (
        b"-ERR [UTF8] UTF-8 user names need the UTF8 command\r\n"
    )
    assert one(conn, b"UTF8\r\n") == Reply("UTF8", b"+OK UTF8 enabled\r\n")
    assert conn.utf8_enabled
    assert one(conn, "USER jörg\r\n".encode()).ok
    assert one(conn, "PASS pässword\r\n".encode()) == UserPass("jörg", "pässword")
    conn.auth_succeeded([])
    assert one(conn, b"UTF8\r\n").reply == b"-ERR UTF8 not valid in the TRANSACTION state\r\n"


def test_utf8_invalid_and_disabled() -> None:
    conn = Connection(OPEN)
    one(conn, b"UTF8\r\n")
    assert one(conn, b"USER \xff\xfe\r\n").reply == b"-ERR usage: USER name\r\n"
    off = Connection(Pop3Config(utf8=False))
    assert one(off, b"UTF8\r\n").reply == b"-ERR UTF8 not supported\r\n"
    assert b"UTF8" not in one(off, b"CAPA\r\n").reply
