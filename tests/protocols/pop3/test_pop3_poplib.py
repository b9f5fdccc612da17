"""The machine against a real client: the standard library's poplib over loopback, with the
toy daemon loop (sans-I/O machine + blocking socket) on a thread."""

from __future__ import annotations

import poplib
import socket
import threading
from collections.abc import Iterator

import pytest
from pop3_driver import make

from protocols.pop3 import Pop3Config

MSGS = [
    ("uid-1", b"Subject: one\r\n\r\n.leading dot\r\nline 2\r\nline 3\r\n"),
    ("uid-2", b"Subject: two\n\nbare LF body\n..\n"),
]


@pytest.fixture
def server() -> Iterator[tuple[int, list[str], threading.Event]]:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    expunged: list[str] = []
    done = threading.Event()

    def serve() -> None:
        sock, _ = listener.accept()
        with sock:
            d = make(Pop3Config(allow_plaintext_auth_without_tls=True, apop=True), MSGS,
                     apop_timestamp="<42.1@test>")
            sock.sendall(d.conn.greeting())
            while not d.closed:
                data = sock.recv(4096)
                out = d.feed(data)
                if out:
                    sock.sendall(out)
                if not data:
                    break
            expunged.extend(d.expunged)
            done.set()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    yield port, expunged, done
    t.join(timeout=5)
    listener.close()


def test_poplib_session(server) -> None:
    port, expunged, done = server
    c = poplib.POP3("127.0.0.1", port, timeout=5)
    assert c.getwelcome() == b"+OK POP3 server ready <42.1@test>"
    caps = c.capa()
    assert {"TOP", "UIDL", "USER", "PIPELINING", "RESP-CODES"} <= caps.keys()
    assert caps["SASL"] == ["PLAIN", "LOGIN"]
    with pytest.raises(poplib.error_proto, match=r"\[AUTH\]"):
        c.user("mrose")
        c.pass_("wrong")
    c.apop("mrose", "tanstaaf")
    assert c.stat() == (2, len(MSGS[0][1]) + len(MSGS[1][1]))
    resp, listing, _ = c.list()
    assert listing == [b"1 %d" % len(MSGS[0][1]), b"2 %d" % len(MSGS[1][1])]
    assert c.uidl()[1] == [b"1 uid-1", b"2 uid-2"]
    resp, lines, octets = c.retr(1)
    assert resp == b"+OK %d octets" % len(MSGS[0][1])
    assert lines == [b"Subject: one", b"", b".leading dot", b"line 2", b"line 3"]
    assert c.retr(2)[1] == [b"Subject: two", b"", b"bare LF body", b".."]
    assert c.top(1, 1)[1] == [b"Subject: one", b"", b".leading dot"]
    assert c.top(2, 0)[1] == [b"Subject: two", b""]
    c.dele(1)
    with pytest.raises(poplib.error_proto, match="already deleted"):
        c.retr(1)
    c.rset()
    c.dele(2)
    assert c.quit() == b"+OK localhost POP3 server signing off (1 message left)"
    assert done.wait(5) and expunged == ["uid-2"]


def test_poplib_utf8_and_drop_deletes_nothing(server) -> None:
    port, expunged, done = server
    c = poplib.POP3("127.0.0.1", port, timeout=5)
    assert c.utf8() == b"+OK UTF8 enabled"
    c.user("jörg")  # poplib encodes UTF-8 once utf8() succeeded
    c.pass_("pässword")
    c.dele(1)
    c.close()  # no QUIT: the connection just drops
    assert done.wait(5) and expunged == []
