"""POP3 events: what ``Connection.next_event()`` hands the daemon.

Two kinds:

- events carrying ``reply`` (``Reply``, ``StartTLS``, ``SaslCancelled``) were answered by the
  machine itself; the daemon writes ``reply`` and carries on;
- the others wait for the daemon's answer through one ``Connection`` method (see the table in
  ``_state.py``) before ``next_event()`` may be called again.

Secrets (passwords, SASL payloads) are left out of ``repr`` so an event can be logged.
"""

from __future__ import annotations

from dataclasses import dataclass, field


class Event:
    """Base class of every POP3 event."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class Reply(Event):
    """A command the machine answered on its own (STAT, LIST, DELE, CAPA, errors…)."""

    command: str  # upper-cased keyword, "" when the line could not be parsed
    reply: bytes

    @property
    def ok(self) -> bool:
        return self.reply.startswith(b"+OK")


@dataclass(frozen=True, slots=True)
class StartTLS(Event):
    """RFC 2595 §4 STLS accepted: write ``reply``, start TLS, then ``conn.tls_started()``."""

    reply: bytes


@dataclass(frozen=True, slots=True)
class UserPass(Event):
    """USER + PASS (RFC 1939 §7): answer with ``auth_succeeded`` or ``auth_failed``."""

    user: str
    password: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class Apop(Event):
    """APOP (RFC 1939 §7): digest = MD5(timestamp + shared secret), lowercase hex."""

    user: str
    digest: str
    timestamp: str  # the greeting's "<...>" banner the digest was computed over


@dataclass(frozen=True, slots=True)
class SaslStart(Event):
    """AUTH mechanism [initial-response] (RFC 5034 §4). ``initial`` is None when absent and
    b"" when the client sent "=". Answer with ``sasl_challenge``, ``auth_succeeded`` or
    ``auth_failed``."""

    mechanism: str
    initial: bytes | None = field(repr=False)


@dataclass(frozen=True, slots=True)
class SaslResponse(Event):
    """The client's base64-decoded answer to the last ``sasl_challenge``."""

    data: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class SaslCancelled(Event):
    """The client sent "*" (or undecodable base64) during an AUTH exchange; the machine
    already rejected it (RFC 5034 §4) — drop the mechanism state and write ``reply``."""

    reply: bytes
    reason: str  # "cancelled" | "malformed"


@dataclass(frozen=True, slots=True)
class Retrieve(Event):
    """RETR (``top_lines`` None) or TOP: answer with ``send_message`` or ``retrieve_failed``."""

    index: int
    uid: str
    top_lines: int | None
    size: int  # as given to open_maildrop


@dataclass(frozen=True, slots=True)
class Update(Event):
    """QUIT in TRANSACTION (RFC 1939 §6): the UPDATE state. Delete exactly these messages,
    then answer with ``send_quit_result``. This is the only event that deletes anything."""

    deleted_indexes: tuple[int, ...]
    deleted_uids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Closed(Event):
    """The session is over; close the transport. Deletes nothing.

    reason: "quit", "eof", "too-many-bad-commands" or "too-many-auth-failures".
    """

    reason: str


class _NeedData:
    __slots__ = ()

    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA = _NeedData()
"""``next_event()`` has nothing more until ``receive_data()`` is called again."""
