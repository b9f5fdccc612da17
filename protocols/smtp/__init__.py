"""Sans-I/O ESMTP / LMTP server side (RFC 5321, 2033, 1870, 2920, 3030, 3207, 3461, 4954,
6152, 6531, 8689): bytes in, events out; replies in, bytes out.

A daemon drives it like this::

    conn = ServerConnection(ServerConfig(hostname="mx.example.org", starttls=True))
    writer.write(conn.greet())
    while True:
        event = conn.next_event()
        if event is NEED_DATA:                      # flush the batch, then read (RFC 2920)
            writer.write(conn.data_to_send()); await writer.drain()
            conn.receive_data(await reader.read(65536))   # b"" at EOF
        elif event is CLOSED:
            writer.write(conn.data_to_send()); break
        elif isinstance(event, StartTls):
            writer.write(conn.accept()); await writer.drain()
            await writer.start_tls(ssl_context); conn.tls_started()
        elif isinstance(event, Command):            # policy: MAIL, RCPT, message, AUTH, ...
            writer.write(await decide(conn, event))   # conn.accept() / conn.reject(...)
        # anything else is informational: already answered, log it
"""

from ._config import ServerConfig
from ._events import (
    CLOSED,
    NEED_DATA,
    PAUSED,
    Answered,
    AuthCancelled,
    AuthRequest,
    AuthResponse,
    ChunkReceived,
    Command,
    ConnectionLost,
    DataStart,
    Ehlo,
    Event,
    Help,
    MailFrom,
    MailParams,
    MessageComplete,
    Noop,
    ProtocolError,
    Quit,
    RcptParams,
    RcptTo,
    Reply,
    Rset,
    SmtpSentinel,
    StartTls,
    Vrfy,
)
from ._state import State
from ._util import SmtpProtocolError
from ._writers import write_reply
from .connection import ServerConnection

__all__ = [
    "CLOSED",
    "NEED_DATA",
    "PAUSED",
    "Answered",
    "AuthCancelled",
    "AuthRequest",
    "AuthResponse",
    "ChunkReceived",
    "Command",
    "ConnectionLost",
    "DataStart",
    "Ehlo",
    "Event",
    "Help",
    "MailFrom",
    "MailParams",
    "MessageComplete",
    "Noop",
    "ProtocolError",
    "Quit",
    "RcptParams",
    "RcptTo",
    "Reply",
    "Rset",
    "ServerConfig",
    "ServerConnection",
    "SmtpProtocolError",
    "SmtpSentinel",
    "State",
    "StartTls",
    "Vrfy",
    "write_reply",
]
