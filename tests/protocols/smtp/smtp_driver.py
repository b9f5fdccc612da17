"""Test driver for protocols.smtp: feed bytes, collect events and the reply bytes.

Not a test module (no ``test_`` prefix); imported by the SMTP tests beside it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from protocols.smtp import (
    CLOSED,
    NEED_DATA,
    PAUSED,
    Command,
    Event,
    ServerConfig,
    ServerConnection,
    StartTls,
)

Policy = Callable[[ServerConnection, Command], bytes]


def accept_all(conn: ServerConnection, event: Command) -> bytes:
    return conn.accept()


class Session:
    """A connection plus everything it said and emitted, fed chunk by chunk."""

    def __init__(
        self, config: ServerConfig | None = None, *, policy: Policy = accept_all, **kw: object
    ) -> None:
        self.conn = ServerConnection(config or ServerConfig(hostname="mx.test", **kw))  # type: ignore[arg-type]
        self.policy = policy
        self.events: list[Event] = []
        self.out = bytearray(self.conn.greet())
        self.start_tls_on_accept = True

    def feed(self, *chunks: bytes) -> list[Event]:
        """Feed chunks one by one, draining events after each; returns the new events."""
        before = len(self.events)
        for chunk in chunks:
            self.conn.receive_data(chunk)
            self.drain()
        return self.events[before:]

    def drain(self) -> None:
        while True:
            ev = self.conn.next_event()
            if ev is NEED_DATA or ev is CLOSED or ev is PAUSED:
                self.out += self.conn.data_to_send()
                return
            self.events.append(ev)  # type: ignore[arg-type]
            if isinstance(ev, Command):
                self.out += self.policy(self.conn, ev)
                if (
                    isinstance(ev, StartTls)
                    and self.start_tls_on_accept
                    and self.conn.state.value == "TLS_HANDSHAKE"
                ):
                    self.conn.tls_started()

    def replies(self) -> bytes:
        """Reply bytes since the last call."""
        out = bytes(self.out)
        self.out.clear()
        return out

    def reply_lines(self) -> list[str]:
        return self.replies().decode().split("\r\n")[:-1]

    def codes(self) -> list[str]:
        """Status code + enhanced code of each final reply line, e.g. '250 2.1.0'."""
        return [" ".join(line.split(" ")[:2]) for line in self.reply_lines() if line[3:4] == " "]


def run(
    data: Iterable[bytes], config: ServerConfig | None = None, policy: Policy = accept_all
) -> Session:
    s = Session(config, policy=policy)
    s.feed(*data)
    return s


EHLO = b"EHLO client.example\r\n"
MAIL = b"MAIL FROM:<alice@example.org>\r\n"
RCPT = b"RCPT TO:<bob@example.net>\r\n"
