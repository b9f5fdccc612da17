"""Server session states and which commands are in sequence in each (RFC 5321 §4.1.4).

The table is data so it can be read top to bottom; ``connection.py`` looks a command up
here before it parses the arguments, and answers with the listed reply when it is out of
sequence.
"""

from __future__ import annotations

import enum

from ._events import Reply


class State(enum.Enum):
    GREETING = "GREETING"  # banner not sent yet
    REFUSED = "REFUSED"  # banner was 554: only QUIT (RFC 5321 §3.1)
    CONNECTED = "CONNECTED"  # banner sent, no EHLO/HELO/LHLO yet
    GREETED = "GREETED"  # EHLO/HELO/LHLO accepted, no transaction
    MAIL = "MAIL"  # MAIL accepted, no recipient accepted yet
    RCPT = "RCPT"  # at least one recipient accepted
    DATA = "DATA"  # reading a DATA body
    BDAT = "BDAT"  # reading the octets of a BDAT chunk
    CHUNKING = "CHUNKING"  # between BDAT chunks, before LAST (RFC 3030)
    AUTH = "AUTH"  # inside a SASL exchange (RFC 4954)
    TLS_HANDSHAKE = "TLS_HANDSHAKE"  # 220 sent to STARTTLS, waiting for tls_started()
    CLOSED = "CLOSED"


S = State
SESSION = frozenset({S.CONNECTED, S.GREETED, S.MAIL, S.RCPT, S.CHUNKING})
TRANSACTION = frozenset({S.MAIL, S.RCPT, S.CHUNKING})


def _bad(text: str, code: int = 503) -> Reply:
    return Reply(code, f"{code // 100}.5.1", text)


NEED_HELO = _bad("Send EHLO/HELO first")
NEED_LHLO = _bad("Send LHLO first")
NEED_MAIL = _bad("Need MAIL command")
NO_VALID_RCPT = _bad("No valid recipients", 554)  # RFC 5321 §3.3
NESTED_MAIL = _bad("Nested MAIL command")
IN_TRANSACTION = _bad("Not permitted during a mail transaction")
AFTER_BDAT = _bad("Not permitted after BDAT; use BDAT ... LAST or RSET")  # RFC 3030 §2

# verb -> (states where it is in sequence, reply per other state in SESSION)
SEQUENCE: dict[str, tuple[frozenset[State], dict[State, Reply]]] = {
    "EHLO": (SESSION, {}),
    "HELO": (SESSION, {}),
    "LHLO": (SESSION, {}),
    "MAIL": (
        frozenset({S.GREETED}),
        {S.CONNECTED: NEED_HELO, S.MAIL: NESTED_MAIL, S.RCPT: NESTED_MAIL, S.CHUNKING: NESTED_MAIL},
    ),
    "RCPT": (
        frozenset({S.MAIL, S.RCPT}),
        {S.CONNECTED: NEED_MAIL, S.GREETED: NEED_MAIL, S.CHUNKING: AFTER_BDAT},
    ),
    "DATA": (
        frozenset({S.RCPT}),
        {
            S.CONNECTED: NEED_MAIL,
            S.GREETED: NEED_MAIL,
            S.MAIL: NO_VALID_RCPT,
            S.CHUNKING: AFTER_BDAT,
        },
    ),
    "BDAT": (
        frozenset({S.RCPT, S.CHUNKING}),
        {S.CONNECTED: NEED_MAIL, S.GREETED: NEED_MAIL, S.MAIL: NO_VALID_RCPT},
    ),
    "STARTTLS": (
        frozenset({S.GREETED}),
        {
            S.CONNECTED: NEED_HELO,
            S.MAIL: IN_TRANSACTION,
            S.RCPT: IN_TRANSACTION,
            S.CHUNKING: IN_TRANSACTION,
        },
    ),
    "AUTH": (
        frozenset({S.GREETED}),
        {
            S.CONNECTED: NEED_HELO,
            S.MAIL: IN_TRANSACTION,
            S.RCPT: IN_TRANSACTION,
            S.CHUNKING: IN_TRANSACTION,
        },
    ),  # RFC 4954 §4
    "RSET": (SESSION, {}),
    "NOOP": (SESSION, {}),
    "QUIT": (SESSION, {}),
    "HELP": (SESSION, {}),
    "VRFY": (SESSION, {}),
    "EXPN": (SESSION, {}),
}


def out_of_sequence(verb: str, state: State, lmtp: bool) -> Reply | None:
    """None if ``verb`` may run in ``state``; else the reply to send."""
    allowed, replies = SEQUENCE[verb]
    if state in allowed:
        return None
    reply = replies.get(state, _bad("Bad sequence of commands"))
    if lmtp and reply is NEED_HELO:
        return NEED_LHLO
    return reply
