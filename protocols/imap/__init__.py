"""IMAP4rev1/IMAP4rev2 server side, sans-I/O (RFC 3501, RFC 9051 and extensions).

Reader: ``ServerConnection`` turns bytes into command events (``_events``), framing literals
and enforcing limits (``ImapConfig``). Writer: ``responses`` (status lines, codes, untagged
data), ``fetch`` (a whole FETCH line from a ``MessageView``), ``envelope`` (ENVELOPE,
BODY/BODYSTRUCTURE), ``sections`` (BODY[...] / BINARY[...] octets), ``mutf7`` (mailbox
names), ``compress`` (COMPRESS=DEFLATE streams).

A daemon drives it like this::

    conn = ServerConnection(ImapConfig())
    write(responses.greeting(CAPS))
    while True:
        event = conn.next_event()
        if event is NEED_DATA:
            conn.receive_data(await read()); continue
        if isinstance(event, LiteralContinuationNeeded):
            write(conn.accept_literal() if event.size <= limit else conn.reject_literal())
        elif isinstance(event, (BadCommand, ConnectionMustClose)):
            write(event.to_bytes())  # then close on ConnectionMustClose
        elif isinstance(event, Command):
            write(await handle(event))  # uses responses.*, sets conn.state / start_idle ...

The handler keeps the connection in step: ``conn.state`` after LOGIN/SELECT/CLOSE,
``conn.utf8_enabled`` after ENABLE UTF8=ACCEPT, ``conn.start_idle(tag)`` after ``+ idling``
(then ``IdleDone``), ``conn.start_authenticate(tag)`` after a ``+`` challenge (then
``SaslResponse`` events, ``end_authenticate()``), ``conn.start_tls()`` after STARTTLS OK,
``compress.wrap(conn)`` after COMPRESS OK.
"""

from protocols.imap import responses
from protocols.imap._events import *  # noqa: F401,F403
from protocols.imap._events import (
    NEED_DATA,
    BadCommand,
    Command,
    ConnectionMustClose,
    Event,
    IdleDone,
    LiteralContinuationNeeded,
    NeedData,
    SaslResponse,
)
from protocols.imap._readers import ImapParseError
from protocols.imap._state import ALLOWED_STATES, State
from protocols.imap.connection import ImapConfig, ImapProtocolError, Mode, ServerConnection
from protocols.imap.values import (
    AppendMessage,
    FetchAttribute,
    ListParams,
    QresyncParams,
    SearchKey,
    Section,
    SeqRange,
    SequenceSet,
    SortCriterion,
)

__all__ = [
    "ALLOWED_STATES",
    "AppendMessage",
    "BadCommand",
    "Command",
    "ConnectionMustClose",
    "Event",
    "FetchAttribute",
    "IdleDone",
    "ImapConfig",
    "ImapParseError",
    "ImapProtocolError",
    "ListParams",
    "LiteralContinuationNeeded",
    "Mode",
    "NEED_DATA",
    "NeedData",
    "QresyncParams",
    "SaslResponse",
    "SearchKey",
    "Section",
    "SeqRange",
    "SequenceSet",
    "ServerConnection",
    "SortCriterion",
    "State",
    "responses",
]
