"""Events the server connection emits, and the ``Reply`` value the daemon sends back.

Two kinds of event:

- ``Command`` events wait for the daemon's decision: answer each with ``conn.send(Reply)``
  (or ``conn.accept()`` / ``conn.reject(...)``) before asking for the next event.
- Everything else is informational: the machine has already queued its reply
  (``ProtocolError``, ``Noop``, ``DataStart``, ...); the daemon may log it and carry on.
"""

from __future__ import annotations

from dataclasses import dataclass, field


class SmtpSentinel:
    """NEED_DATA / PAUSED / CLOSED: not events, states of the input side."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


NEED_DATA = SmtpSentinel("NEED_DATA")  # feed more bytes (and flush queued replies first)
PAUSED = SmtpSentinel("PAUSED")  # waiting for tls_started() after a 220 to STARTTLS
CLOSED = SmtpSentinel("CLOSED")  # the session is over: write data_to_send(), then close


@dataclass(frozen=True, slots=True)
class Reply:
    """An SMTP reply. ``text`` with several lines becomes a multi-line reply (RFC 5321 §4.2.1)."""

    code: int
    enhanced: str | None  # RFC 3463 "class.subject.detail", e.g. "2.1.0"
    text: str | tuple[str, ...] = "OK"

    @property
    def lines(self) -> tuple[str, ...]:
        return (self.text,) if isinstance(self.text, str) else self.text

    @property
    def positive(self) -> bool:
        return 200 <= self.code < 400


class Event:
    __slots__ = ()


class Command(Event):
    """An event the daemon must answer before calling ``next_event()`` again."""

    __slots__ = ()


# --- values carried by MAIL and RCPT -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MailParams:
    size: int | None = None  # RFC 1870
    body: str | None = None  # "7BIT" | "8BITMIME" | "BINARYMIME" (RFC 6152, RFC 3030)
    smtputf8: bool = False  # RFC 6531
    ret: str | None = None  # "FULL" | "HDRS" (RFC 3461 §4.3)
    envid: str | None = None  # xtext-decoded (RFC 3461 §4.4)
    auth: str | None = None  # xtext-decoded AUTH= mailbox, "<>" kept as is (RFC 4954 §5)
    requiretls: bool = False  # RFC 8689 §4.1


@dataclass(frozen=True, slots=True)
class RcptParams:
    notify: frozenset[str] | None = None  # {"NEVER"} or a subset of SUCCESS/FAILURE/DELAY
    orcpt: tuple[str, str] | None = None  # (addr-type, xtext-decoded address) RFC 3461 §4.2


def _split(address: str) -> tuple[str, str]:
    local, at, domain = address.rpartition("@")
    return (local, domain) if at else (address, "")


# --- commands (need a reply) ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Ehlo(Command):
    """EHLO, HELO or LHLO. ``valid_name``: the argument is a Domain or address-literal."""

    name: str
    extended: bool
    lmtp: bool = False
    valid_name: bool = True


@dataclass(frozen=True, slots=True)
class MailFrom(Command):
    address: str  # "" for the null reverse-path; source route stripped
    params: MailParams = field(default_factory=MailParams)

    @property
    def local_part(self) -> str:
        return _split(self.address)[0]

    @property
    def domain(self) -> str:
        return _split(self.address)[1]


@dataclass(frozen=True, slots=True)
class RcptTo(Command):
    address: str  # "postmaster" (no domain) is allowed, RFC 5321 §4.1.1.3
    params: RcptParams = field(default_factory=RcptParams)

    @property
    def local_part(self) -> str:
        return _split(self.address)[0]

    @property
    def domain(self) -> str:
        return _split(self.address)[1]


@dataclass(frozen=True, slots=True)
class MessageComplete(Command):
    """End of DATA (dot-unstuffed, CRLF line endings) or the last BDAT chunk.

    SMTP: answer with one reply. LMTP: ``send_lmtp_replies`` with one reply per recipient,
    in the order of ``recipients`` (RFC 2033 §4.2).
    """

    data: bytes
    mail_from: MailFrom
    recipients: tuple[RcptTo, ...]
    chunked: bool = False  # arrived by BDAT


@dataclass(frozen=True, slots=True)
class StartTls(Command):
    """STARTTLS. Accepting (220) pauses the connection until ``tls_started()``.

    ``discarded`` counts plaintext bytes that followed the command in the buffer and were
    dropped (RFC 3207 §4.2, STARTTLS command injection).
    """

    discarded: int = 0


@dataclass(frozen=True, slots=True)
class AuthRequest(Command):
    """AUTH. Answer with ``auth_challenge(bytes)``, ``accept()`` (235) or ``reject(...)``."""

    mechanism: str  # upper-cased
    initial_response: bytes | None  # base64-decoded; b"" for "="; None when absent


@dataclass(frozen=True, slots=True)
class AuthResponse(Command):
    """A client line during a SASL exchange, base64-decoded."""

    data: bytes


@dataclass(frozen=True, slots=True)
class Vrfy(Command):
    """VRFY, only when ``vrfy_enabled``; otherwise the machine answers 252 itself."""

    argument: str


# --- informational (already answered) ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DataStart(Event):
    """DATA accepted: 354 was queued; the message body follows."""


@dataclass(frozen=True, slots=True)
class ChunkReceived(Event):
    """A non-LAST BDAT chunk was read and acknowledged with 250."""

    size: int


@dataclass(frozen=True, slots=True)
class Noop(Event):
    pass


@dataclass(frozen=True, slots=True)
class Rset(Event):
    pass


@dataclass(frozen=True, slots=True)
class Help(Event):
    pass


@dataclass(frozen=True, slots=True)
class Quit(Event):
    """QUIT: 221 queued; the connection is closed after it."""


@dataclass(frozen=True, slots=True)
class AuthCancelled(Event):
    """The client answered a 334 with "*" (RFC 4954 §4); 501 queued."""


@dataclass(frozen=True, slots=True)
class Answered(Event):
    """A command the machine answered on its own (VRFY when disabled); ``reply`` is queued.

    ``command`` is the verb, upper-cased, or "LINE" for a line that had none.
    """

    reply: Reply
    command: str


@dataclass(frozen=True, slots=True)
class ProtocolError(Answered):
    """Something the machine rejected on its own (4xx/5xx); ``reply`` is already queued."""


@dataclass(frozen=True, slots=True)
class ConnectionLost(Event):
    """The peer closed the connection without QUIT; ``during`` names the state it was in."""

    during: str
