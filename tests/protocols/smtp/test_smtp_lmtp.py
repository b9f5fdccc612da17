"""LMTP mode (RFC 2033): LHLO, and one reply per accepted recipient after the data."""

from __future__ import annotations

import pytest
from smtp_driver import MAIL, Session

from protocols.smtp import (
    Command,
    Ehlo,
    MessageComplete,
    RcptTo,
    Reply,
    ServerConfig,
    ServerConnection,
    SmtpProtocolError,
)

LMTP = ServerConfig(hostname="lmtp.test", mode="lmtp", pipelining=False)
RCPTS = b"RCPT TO:<a@example.net>\r\nRCPT TO:<nobody@example.net>\r\nRCPT TO:<c@example.net>\r\n"


def policy(conn: ServerConnection, ev: Command) -> bytes:
    if isinstance(ev, RcptTo) and ev.address.startswith("nobody"):
        return conn.reject(550, "5.1.1", "No such user")
    if isinstance(ev, MessageComplete):
        return conn.send_lmtp_replies(
            [
                Reply(250, "2.0.0", f"<{r.address}> delivered")
                if r.address[0] == "a"
                else Reply(452, "4.2.2", "Mailbox full")
                for r in ev.recipients
            ]
        )
    return conn.accept()


def test_lhlo_and_banner() -> None:
    s = Session(LMTP, policy=policy)
    assert s.replies() == b"220 lmtp.test LMTP ready\r\n"
    assert s.feed(b"LHLO client\r\n") == [Ehlo("client", extended=True, lmtp=True)]
    lines = s.reply_lines()
    assert lines[0] == "250-lmtp.test greets client" and "250-PIPELINING" in lines  # RFC 2033 §4.1


def test_helo_ehlo_refused_in_lmtp() -> None:
    s = Session(LMTP, policy=policy)
    s.replies()
    s.feed(b"EHLO x\r\n", b"HELO x\r\n", MAIL)
    assert s.codes() == ["500 5.5.1", "500 5.5.1", "503 5.5.1"]


def test_per_recipient_replies_in_order() -> None:
    s = Session(LMTP, policy=policy)
    s.feed(b"LHLO client\r\n", MAIL, RCPTS, b"DATA\r\n")
    s.replies()
    s.feed(b"hello\r\n.\r\n")
    assert s.replies() == b"250 2.0.0 <a@example.net> delivered\r\n452 4.2.2 Mailbox full\r\n"


def test_lmtp_accept_and_single_reply_repeat() -> None:
    s = Session(LMTP)
    s.feed(b"LHLO client\r\n", MAIL, RCPTS, b"DATA\r\n")
    s.replies()
    s.feed(b"x\r\n.\r\n")
    assert s.codes() == ["250 2.0.0"] * 3
    s = Session(
        LMTP,
        policy=lambda c, e: (
            c.reject(451, "4.3.0", "Store down") if isinstance(e, MessageComplete) else c.accept()
        ),
    )
    s.feed(b"LHLO client\r\n", MAIL, RCPTS, b"DATA\r\n")
    s.replies()
    s.feed(b"x\r\n.\r\n")
    assert s.codes() == ["451 4.3.0"] * 3


def test_lmtp_machine_rejection_is_per_recipient() -> None:
    s = Session(LMTP, policy=policy)
    s.feed(b"LHLO client\r\n", MAIL, RCPTS, b"DATA\r\n")
    s.replies()
    s.feed(b"bare\nLF\r\n.\r\n")
    assert s.codes() == ["550 5.5.2"] * 2


def test_lmtp_bdat_last_per_recipient() -> None:
    s = Session(LMTP, policy=policy)
    s.feed(b"LHLO client\r\n", MAIL, RCPTS)
    s.replies()
    s.feed(b"BDAT 3\r\nabcBDAT 2 LAST\r\nde")
    assert s.codes() == ["250 2.0.0", "250 2.0.0", "452 4.2.2"]


def test_lmtp_reply_count_checked() -> None:
    s = Session(LMTP)
    s.feed(b"LHLO client\r\n", MAIL, RCPTS)
    conn = s.conn
    conn.receive_data(b"DATA\r\nx\r\n.\r\n")
    conn.next_event()  # DataStart
    assert isinstance(conn.next_event(), MessageComplete)
    with pytest.raises(SmtpProtocolError):
        conn.send_lmtp_replies([Reply(250, "2.0.0", "one")])
    assert conn.send_lmtp_replies([Reply(250, "2.0.0", "ok")] * 3).endswith(b"250 2.0.0 ok\r\n" * 3)
