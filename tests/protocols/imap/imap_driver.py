"""Drive a ServerConnection with bytes and collect events (accepting every literal)."""

from __future__ import annotations

from protocols.imap import (
    NEED_DATA,
    LiteralContinuationNeeded,
    ServerConnection,
    State,
)


def events_of(
    data: bytes | list[bytes],
    *,
    state: State = State.SELECTED,
    conn: ServerConnection | None = None,
    accept: bool = True,
) -> list:
    conn = conn or ServerConnection(state=state)
    chunks = [data] if isinstance(data, bytes) else data
    out: list = []
    for chunk in chunks:
        conn.receive_data(chunk)
        while True:
            event = conn.next_event()
            if event is NEED_DATA:
                break
            out.append(event)
            if isinstance(event, LiteralContinuationNeeded):
                if accept:
                    conn.accept_literal()
                else:
                    conn.reject_literal()
    return out


def commands_of(data: bytes | list[bytes], **kw) -> list:
    return [e for e in events_of(data, **kw) if not isinstance(e, LiteralContinuationNeeded)]


def one(data: bytes, **kw):
    evs = commands_of(data, **kw)
    assert len(evs) == 1, evs
    return evs[0]
