"""A toy daemon for the POP3 protocol tests: answers every event the way the real daemon
would, against an in-memory maildrop. Not a mock of our code — it drives the real machine."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from protocols.pop3 import (
    NEED_DATA,
    Apop,
    Closed,
    Connection,
    Event,
    Pop3Config,
    Reply,
    ResponseCode,
    Retrieve,
    SaslCancelled,
    SaslResponse,
    SaslStart,
    StartTLS,
    Update,
    UserPass,
)
from protocols import sasl

# RFC 1939 §7 APOP example: shared secret "tanstaaf".
USERS = {"mrose": "tanstaaf", "jörg": "pässword"}
LOCKED = {"busy"}


@dataclass
class ToyDaemon:
    conn: Connection
    messages: list[tuple[str, bytes]] = field(default_factory=list)  # (uid, raw)
    events: list[Event] = field(default_factory=list)
    out: bytearray = field(default_factory=bytearray)
    expunged: list[str] = field(default_factory=list)
    quit_ok: bool = True
    mech: sasl.PlainMechanism | sasl.LoginMechanism | None = None
    closed: bool = False

    def snapshot(self) -> list[tuple[int, str]]:
        return [(len(raw), uid) for uid, raw in self.messages]

    def _login(self, user: str, ok: bool) -> bytes:
        if not ok:
            return self.conn.auth_failed(ResponseCode.AUTH)
        if user in LOCKED:
            return self.conn.auth_failed(ResponseCode.IN_USE)
        return self.conn.auth_succeeded(self.snapshot())

    def _sasl(self, data: bytes | None) -> bytes:
        assert self.mech is not None
        try:
            value = self.mech.step(data)
        except sasl.SaslError:
            self.mech = None
            return self.conn.auth_failed(ResponseCode.AUTH)
        if isinstance(value, bytes):
            return self.conn.sasl_challenge(value)
        self.mech = None
        return self._login(value.authcid, USERS.get(value.authcid) == value.password)

    def handle(self, ev: Event) -> None:
        conn = self.conn
        if isinstance(ev, (Reply, SaslCancelled)):
            if isinstance(ev, SaslCancelled):
                self.mech = None
            self.out += ev.reply
        elif isinstance(ev, StartTLS):
            self.out += ev.reply
            conn.tls_started()
        elif isinstance(ev, UserPass):
            self.out += self._login(ev.user, USERS.get(ev.user) == ev.password)
        elif isinstance(ev, Apop):
            secret = USERS.get(ev.user, "")
            good = hashlib.md5((ev.timestamp + secret).encode()).hexdigest()
            self.out += self._login(ev.user, ev.user in USERS and good == ev.digest)
        elif isinstance(ev, SaslStart):
            try:
                self.mech = sasl.server_mechanism(ev.mechanism)  # the daemon's plug-in point
            except sasl.SaslError:
                self.out += conn.auth_failed(None, "mechanism not available")
                return
            self.out += self._sasl(ev.initial)
        elif isinstance(ev, SaslResponse):
            self.out += self._sasl(ev.data)
        elif isinstance(ev, Retrieve):
            uid, raw = self.messages[ev.index - 1]
            assert uid == ev.uid
            self.out += conn.send_message(raw)
        elif isinstance(ev, Update):
            self.expunged.extend(ev.deleted_uids)
            self.out += conn.send_quit_result(self.quit_ok)
        elif isinstance(ev, Closed):
            self.closed = True
        else:  # pragma: no cover
            raise AssertionError(ev)

    def feed(self, data: bytes) -> bytes:
        """Feed one read's worth; process every event; return what was written for it."""
        start = len(self.out)
        self.conn.receive_data(data)
        while not self.closed:
            ev = self.conn.next_event()
            if ev is NEED_DATA:
                break
            self.events.append(ev)
            self.handle(ev)
        return bytes(self.out[start:])


def make(config: Pop3Config | None = None, messages=None, **kw) -> ToyDaemon:
    config = config or Pop3Config(allow_plaintext_auth_without_tls=True)
    return ToyDaemon(Connection(config, **kw), list(messages or []))


def session(data_chunks, config=None, messages=None, **kw) -> ToyDaemon:
    d = make(config, messages, **kw)
    d.out += d.conn.greeting()
    for chunk in data_chunks:
        d.feed(chunk)
    return d
