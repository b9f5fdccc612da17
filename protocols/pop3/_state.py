"""The POP3 session states and which commands and daemon answers are legal in each.

RFC 1939 §3: AUTHORIZATION → TRANSACTION → UPDATE. On top of those, the machine may be
*waiting* for the daemon (``Awaiting``): it has handed out an event and will not read the next
command until the matching answer method has been called — that is what keeps pipelined
replies in order (RFC 2449 §6.6).
"""

from __future__ import annotations

from enum import Enum


class State(Enum):
    AUTHORIZATION = "AUTHORIZATION"
    TRANSACTION = "TRANSACTION"
    UPDATE = "UPDATE"
    CLOSED = "CLOSED"


class Awaiting(Enum):
    AUTH = "AUTH"  # after UserPass / Apop / SaslStart / SaslResponse
    RETRIEVE = "RETRIEVE"  # after Retrieve
    QUIT_RESULT = "QUIT_RESULT"  # after Update
    TLS = "TLS"  # after StartTLS


# Commands by state (RFC 1939 §9 summary + RFC 2449 CAPA + RFC 2595 STLS + RFC 5034 AUTH +
# RFC 6856 UTF8). A known command outside its state gets "-ERR" and counts as a bad command.
COMMANDS: dict[State, frozenset[str]] = {
    State.AUTHORIZATION: frozenset(
        {"USER", "PASS", "APOP", "AUTH", "STLS", "UTF8", "CAPA", "QUIT"}
    ),
    State.TRANSACTION: frozenset(
        {"STAT", "LIST", "RETR", "DELE", "NOOP", "RSET", "TOP", "UIDL", "CAPA", "QUIT"}
    ),
    State.UPDATE: frozenset(),
    State.CLOSED: frozenset(),
}
KNOWN_COMMANDS: frozenset[str] = frozenset().union(*COMMANDS.values())

# Which Connection methods answer which wait.
ANSWERS: dict[Awaiting, frozenset[str]] = {
    Awaiting.AUTH: frozenset({"auth_succeeded", "auth_failed", "sasl_challenge", "open_maildrop"}),
    Awaiting.RETRIEVE: frozenset({"send_message", "retrieve_failed"}),
    Awaiting.QUIT_RESULT: frozenset({"send_quit_result"}),
    Awaiting.TLS: frozenset({"tls_started"}),
}
