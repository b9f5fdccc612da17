"""Which command is legal in which connection state (RFC 9051 §3, §6)."""

from __future__ import annotations

import enum


class State(enum.Enum):
    NOT_AUTHENTICATED = "not authenticated"
    AUTHENTICATED = "authenticated"
    SELECTED = "selected"
    LOGOUT = "logout"


_NA, _AU, _SE = State.NOT_AUTHENTICATED, State.AUTHENTICATED, State.SELECTED
_ANY = frozenset({_NA, _AU, _SE})
_AUTHED = frozenset({_AU, _SE})

ALLOWED_STATES: dict[str, frozenset[State]] = {
    # RFC 9051 §6.1: any state; RFC 2971 ID: any state
    "CAPABILITY": _ANY,
    "NOOP": _ANY,
    "LOGOUT": _ANY,
    "ID": _ANY,
    # RFC 9051 §6.2: not authenticated
    "STARTTLS": frozenset({_NA}),
    "AUTHENTICATE": frozenset({_NA}),
    "LOGIN": frozenset({_NA}),
    # RFC 9051 §6.3: authenticated (and therefore selected)
    "ENABLE": _AUTHED,
    "SELECT": _AUTHED,
    "EXAMINE": _AUTHED,
    "CREATE": _AUTHED,
    "DELETE": _AUTHED,
    "RENAME": _AUTHED,
    "SUBSCRIBE": _AUTHED,
    "UNSUBSCRIBE": _AUTHED,
    "LIST": _AUTHED,
    "LSUB": _AUTHED,
    "NAMESPACE": _AUTHED,
    "STATUS": _AUTHED,
    "APPEND": _AUTHED,
    "IDLE": _AUTHED,
    "GETQUOTA": _AUTHED,
    "GETQUOTAROOT": _AUTHED,
    "COMPRESS": _AUTHED,  # RFC 4978 §3: after authentication
    # RFC 9051 §6.4: selected
    "CHECK": frozenset({_SE}),
    "CLOSE": frozenset({_SE}),
    "UNSELECT": frozenset({_SE}),
    "EXPUNGE": frozenset({_SE}),
    "SEARCH": frozenset({_SE}),
    "FETCH": frozenset({_SE}),
    "STORE": frozenset({_SE}),
    "COPY": frozenset({_SE}),
    "MOVE": frozenset({_SE}),
    "SORT": frozenset({_SE}),
    "THREAD": frozenset({_SE}),
}
