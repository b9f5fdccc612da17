"""The examples from RFC 1939 (§§4-7, §10), RFC 2449 §5 and RFC 5034 §4, byte for byte where
the server text is ours to choose (daemon-chosen texts are passed as the RFC has them)."""

from __future__ import annotations

import hashlib

from pop3_driver import session

from protocols.pop3 import (
    NEED_DATA,
    Apop,
    Closed,
    Connection,
    Pop3Config,
    Reply,
    Retrieve,
    SaslResponse,
    SaslStart,
    Update,
    UserPass,
)

TIMESTAMP = "<1896.697170952@dbc.mtview.ca.us>"
CONFIG = Pop3Config(hostname="dewey", apop=True, allow_plaintext_auth_without_tls=True)


def sized(size: int, tag: bytes = b"x") -> bytes:
    head = b"Subject: " + tag + b"\r\n\r\n"
    return head + b"a" * (size - len(head) - 2) + b"\r\n"


def feed(conn: Connection, line: bytes):
    conn.receive_data(line)
    return conn.next_event()


def logged_in(messages=((120, "whqtswO00WBw418f9t5JxYwZ"), (200, "QhdPYR:00WBw1Ph7x7"))):
    conn = Connection(CONFIG, apop_timestamp=TIMESTAMP)
    conn.greeting()
    ev = feed(conn, b"USER mrose\r\n")
    assert ev == Reply("USER", b"+OK send PASS\r\n")
    ev = feed(conn, b"PASS secret\r\n")
    assert ev == UserPass("mrose", "secret")
    assert conn.auth_succeeded(list(messages)) == b"+OK maildrop has 2 messages (320 octets)\r\n"
    return conn


def test_rfc1939_section10_example_session_verbatim() -> None:
    m1, m2 = sized(120, b"1"), sized(200, b"2")
    conn = Connection(CONFIG, apop_timestamp=TIMESTAMP)
    assert conn.greeting() == b"+OK POP3 server ready <1896.697170952@dbc.mtview.ca.us>\r\n"

    ev = feed(conn, b"APOP mrose c4c9334bac560ecc979e58001b3e22fb\r\n")
    assert ev == Apop("mrose", "c4c9334bac560ecc979e58001b3e22fb", TIMESTAMP)
    # RFC 1939 §7: digest = MD5(timestamp + secret), the secret being "tanstaaf".
    assert hashlib.md5((TIMESTAMP + "tanstaaf").encode()).hexdigest() == ev.digest
    out = conn.auth_succeeded([(120, "u1"), (200, "u2")], text="mrose's maildrop has 2 messages (320 octets)")
    assert out == b"+OK mrose's maildrop has 2 messages (320 octets)\r\n"

    assert feed(conn, b"STAT\r\n") == Reply("STAT", b"+OK 2 320\r\n")
    assert feed(conn, b"LIST\r\n") == Reply(
        "LIST", b"+OK 2 messages (320 octets)\r\n1 120\r\n2 200\r\n.\r\n"
    )
    assert feed(conn, b"RETR 1\r\n") == Retrieve(1, "u1", None, 120)
    assert conn.send_message(m1) == b"+OK 120 octets\r\n" + m1 + b".\r\n"
    assert feed(conn, b"DELE 1\r\n") == Reply("DELE", b"+OK message 1 deleted\r\n")
    assert feed(conn, b"RETR 2\r\n") == Retrieve(2, "u2", None, 200)
    assert conn.send_message(m2) == b"+OK 200 octets\r\n" + m2 + b".\r\n"
    assert feed(conn, b"DELE 2\r\n") == Reply("DELE", b"+OK message 2 deleted\r\n")
    assert feed(conn, b"QUIT\r\n") == Update((1, 2), ("u1", "u2"))
    assert conn.send_quit_result(True) == b"+OK dewey POP3 server signing off (maildrop empty)\r\n"
    assert conn.next_event() == Closed("quit")


def test_rfc1939_section10_through_the_toy_daemon() -> None:
    """The same session pipelined in one write, answered by a daemon loop."""
    msgs = [("u1", sized(120, b"1")), ("u2", sized(200, b"2"))]
    d = session(
        [b"APOP mrose c4c9334bac560ecc979e58001b3e22fb\r\nSTAT\r\nLIST\r\nRETR 1\r\nDELE 1\r\n"
         b"RETR 2\r\nDELE 2\r\nQUIT\r\n"],
        config=CONFIG, messages=msgs, apop_timestamp=TIMESTAMP,
    )
    assert bytes(d.out) == (
        b"+OK POP3 server ready <1896.697170952@dbc.mtview.ca.us>\r\n"
        b"+OK maildrop has 2 messages (320 octets)\r\n"
        b"+OK 2 320\r\n"
        b"+OK 2 messages (320 octets)\r\n1 120\r\n2 200\r\n.\r\n"
        b"+OK 120 octets\r\n" + msgs[0][1] + b".\r\n"
        b"+OK message 1 deleted\r\n"
        b"+OK 200 octets\r\n" + msgs[1][1] + b".\r\n"
        b"+OK message 2 deleted\r\n"
        b"+OK dewey POP3 server signing off (maildrop empty)\r\n"
    )
    assert d.expunged == ["u1", "u2"] and d.closed


def test_rfc1939_section4_quit_in_authorization() -> None:
    conn = Connection(CONFIG)
    assert feed(conn, b"QUIT\r\n") == Reply("QUIT", b"+OK dewey POP3 server signing off\r\n")
    assert conn.next_event() == Closed("quit")


def test_rfc1939_section5_examples() -> None:
    conn = logged_in()
    assert feed(conn, b"STAT\r\n") == Reply("STAT", b"+OK 2 320\r\n")
    assert feed(conn, b"LIST 2\r\n") == Reply("LIST", b"+OK 2 200\r\n")
    assert feed(conn, b"LIST 3\r\n") == Reply(
        "LIST", b"-ERR no such message, only 2 messages in maildrop\r\n"
    )
    assert feed(conn, b"DELE 1\r\n") == Reply("DELE", b"+OK message 1 deleted\r\n")
    assert feed(conn, b"DELE 1\r\n") == Reply("DELE", b"-ERR message 1 already deleted\r\n")
    assert feed(conn, b"NOOP\r\n") == Reply("NOOP", b"+OK\r\n")
    assert feed(conn, b"RSET\r\n") == Reply("RSET", b"+OK maildrop has 2 messages (320 octets)\r\n")
    assert feed(conn, b"QUIT\r\n") == Update((), ())
    assert conn.send_quit_result(True) == b"+OK dewey POP3 server signing off (2 messages left)\r\n"


def test_rfc1939_section7_uidl_and_top_examples() -> None:
    conn = logged_in()
    assert feed(conn, b"UIDL\r\n") == Reply(
        "UIDL", b"+OK\r\n1 whqtswO00WBw418f9t5JxYwZ\r\n2 QhdPYR:00WBw1Ph7x7\r\n.\r\n"
    )
    assert feed(conn, b"UIDL 2\r\n") == Reply("UIDL", b"+OK 2 QhdPYR:00WBw1Ph7x7\r\n")
    assert feed(conn, b"UIDL 3\r\n") == Reply(
        "UIDL", b"-ERR no such message, only 2 messages in maildrop\r\n"
    )
    assert feed(conn, b"TOP 1 10\r\n") == Retrieve(1, "whqtswO00WBw418f9t5JxYwZ", 10, 120)
    conn.send_message(sized(120))
    assert feed(conn, b"TOP 100 3\r\n") == Reply(
        "TOP", b"-ERR no such message, only 2 messages in maildrop\r\n"
    )


def test_rfc2449_section5_capa_example() -> None:
    config = Pop3Config(
        sasl_mechanisms=("CRAM-MD5", "KERBEROS_V4"),
        login_delay=900,
        expire=60,
        implementation="Shlemazle-Plotz-v302",
        utf8=False,
        allow_plaintext_auth_without_tls=True,
    )
    conn = Connection(config)
    ev = feed(conn, b"CAPA\r\n")
    lines = ev.reply.split(b"\r\n")
    assert lines[0] == b"+OK Capability list follows" and lines[-2:] == [b".", b""]
    rfc = {b"TOP", b"USER", b"SASL CRAM-MD5 KERBEROS_V4", b"RESP-CODES", b"LOGIN-DELAY 900",
           b"PIPELINING", b"EXPIRE 60", b"UIDL", b"IMPLEMENTATION Shlemazle-Plotz-v302"}
    assert set(lines[1:-2]) == rfc | {b"AUTH-RESP-CODE"}


def test_rfc5034_plain_via_continuation() -> None:
    conn = Connection(tls=True)
    assert feed(conn, b"AUTH PLAIN\r\n") == SaslStart("PLAIN", None)
    assert conn.sasl_challenge(b"") == b"+ \r\n"
    assert feed(conn, b"dGVzdAB0ZXN0AHRlc3Q=\r\n") == SaslResponse(b"test\x00test\x00test")
    out = conn.auth_succeeded([], text="Maildrop locked and ready")
    assert out == b"+OK Maildrop locked and ready\r\n"
    assert conn.next_event() is NEED_DATA
