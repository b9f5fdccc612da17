"""POP3 server protocol, sans I/O (RFC 1939 + RFC 2449 CAPA, RFC 2595 STLS, RFC 3206 codes,
RFC 5034 SASL, RFC 6856 UTF8). See ``_connection.py`` for the daemon loop."""

from ._config import Pop3Config
from ._connection import Connection, LocalProtocolError
from ._events import (
    NEED_DATA,
    Apop,
    Closed,
    Event,
    Reply,
    Retrieve,
    SaslCancelled,
    SaslResponse,
    SaslStart,
    StartTLS,
    Update,
    UserPass,
)
from ._state import Awaiting, State
from ._writers import ResponseCode, dot_stuff, message_response, normalize_crlf, top_of_message

__all__ = [
    "NEED_DATA",
    "Apop",
    "Awaiting",
    "Closed",
    "Connection",
    "Event",
    "LocalProtocolError",
    "Pop3Config",
    "Reply",
    "ResponseCode",
    "Retrieve",
    "SaslCancelled",
    "SaslResponse",
    "SaslStart",
    "StartTLS",
    "State",
    "Update",
    "UserPass",
    "dot_stuff",
    "message_response",
    "normalize_crlf",
    "top_of_message",
]
