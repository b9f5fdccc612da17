"""Events the reader produces: one frozen class per command, plus the reader's own signals."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from protocols.imap.values import (
    AppendMessage,
    FetchAttribute,
    ListParams,
    QresyncParams,
    SearchKey,
    SequenceSet,
    SortCriterion,
)


class _Sentinel:
    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


#: next_event() found no complete command in the buffer: read more bytes.
NEED_DATA = _Sentinel("NEED_DATA")
NeedData = NEED_DATA


class Event:
    __slots__ = ()


@dataclass(frozen=True, slots=True)
class LiteralContinuationNeeded(Event):
    """A synchronizing literal ``{size}`` was announced: call ``accept_literal()`` (sends
    ``+ Ready``) or ``reject_literal()``. ``command`` is the upper-case command name so far
    (e.g. "APPEND"), "" when the tag or name was not readable yet."""

    tag: str
    command: str
    size: int
    binary: bool = False


@dataclass(frozen=True, slots=True)
class BadCommand(Event):
    """The command could not be parsed or is refused by a limit: answer it and go on.

    ``tag`` is None when even the tag was unreadable (answer untagged ``* BAD``).
    ``status`` is "BAD" or "NO" (e.g. NO [TOOBIG] for APPEND, NO [BADCHARSET])."""

    tag: str | None
    text: str
    code: str | None = None
    status: str = "BAD"

    def to_bytes(self) -> bytes:
        from protocols.imap import responses

        return responses.status_response(self.tag, self.status, self.text, self.code)


@dataclass(frozen=True, slots=True)
class ConnectionMustClose(Event):
    """The client broke the protocol in a way that cannot be recovered (RFC 7888 §4: an
    oversized non-synchronizing literal). Write ``to_bytes()`` and close."""

    tag: str | None
    text: str
    code: str | None = None

    def to_bytes(self) -> bytes:
        from protocols.imap import responses

        out = b""
        if self.tag is not None:
            out += responses.status_response(self.tag, "BAD", self.text, self.code)
        return out + responses.bye(self.text)


@dataclass(frozen=True, slots=True)
class IdleDone(Event):
    """``DONE`` ended the IDLE started with ``start_idle(tag)`` (RFC 2177)."""

    tag: str


@dataclass(frozen=True, slots=True)
class SaslResponse(Event):
    """One AUTHENTICATE continuation line, base64-decoded; ``cancelled`` for ``*``."""

    tag: str
    data: bytes
    cancelled: bool = False


# ---- commands -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Command(Event):
    tag: str
    name: ClassVar[str] = ""


def _simple(cmd_name: str, doc: str) -> type[Command]:
    cls = dataclass(frozen=True, slots=True)(
        type(
            cmd_name.title().replace(" ", ""),
            (Command,),
            {
                "__doc__": doc,
                "__annotations__": {},
                "name": cmd_name,
            },
        )
    )
    cls.__module__ = __name__
    return cls


Capability = _simple("CAPABILITY", "RFC 9051 §6.1.1")
Noop = _simple("NOOP", "RFC 9051 §6.1.2")
Logout = _simple("LOGOUT", "RFC 9051 §6.1.3")
StartTLS = _simple("STARTTLS", "RFC 9051 §6.2.1")
Namespace = _simple("NAMESPACE", "RFC 9051 §6.3.10")
Idle = _simple("IDLE", "RFC 9051 §6.3.13 — the daemon answers + and calls start_idle(tag)")
Check = _simple("CHECK", "RFC 3501 §6.4.1")
Close = _simple("CLOSE", "RFC 9051 §6.4.1")
Unselect = _simple("UNSELECT", "RFC 9051 §6.4.2")


@dataclass(frozen=True, slots=True)
class Authenticate(Command):
    """``initial_response`` is the decoded SASL-IR (RFC 4959); b"" for ``=``, None when absent."""

    mechanism: str = ""
    initial_response: bytes | None = None
    name: ClassVar[str] = "AUTHENTICATE"


@dataclass(frozen=True, slots=True)
class Login(Command):
    username: str = ""
    password: str = ""
    name: ClassVar[str] = "LOGIN"

    def __repr__(self) -> str:  # no passwords in logs
        return f"Login(tag={self.tag!r}, username={self.username!r}, password='***')"


@dataclass(frozen=True, slots=True)
class Enable(Command):
    capabilities: tuple[str, ...] = ()
    name: ClassVar[str] = "ENABLE"


@dataclass(frozen=True, slots=True)
class Compress(Command):
    mechanism: str = "DEFLATE"
    name: ClassVar[str] = "COMPRESS"


@dataclass(frozen=True, slots=True)
class Select(Command):
    """SELECT, or EXAMINE when ``readonly``; CONDSTORE / QRESYNC parameters (RFC 7162)."""

    mailbox: str = ""
    readonly: bool = False
    condstore: bool = False
    qresync: QresyncParams | None = None
    name: ClassVar[str] = "SELECT"


@dataclass(frozen=True, slots=True)
class Create(Command):
    mailbox: str = ""
    special_use: tuple[str, ...] = ()  # RFC 6154 §3: CREATE ... (USE (\Sent))
    name: ClassVar[str] = "CREATE"


@dataclass(frozen=True, slots=True)
class Delete(Command):
    mailbox: str = ""
    name: ClassVar[str] = "DELETE"


@dataclass(frozen=True, slots=True)
class Rename(Command):
    mailbox: str = ""
    new_name: str = ""
    name: ClassVar[str] = "RENAME"


@dataclass(frozen=True, slots=True)
class Subscribe(Command):
    mailbox: str = ""
    name: ClassVar[str] = "SUBSCRIBE"


@dataclass(frozen=True, slots=True)
class Unsubscribe(Command):
    mailbox: str = ""
    name: ClassVar[str] = "UNSUBSCRIBE"


@dataclass(frozen=True, slots=True)
class List(Command):
    """LIST with LIST-EXTENDED (RFC 5258) and LIST-STATUS (RFC 5819).

    ``patterns`` are decoded mailbox patterns (``*``/``%`` kept)."""

    reference: str = ""
    patterns: tuple[str, ...] = ()
    params: ListParams = ListParams()
    extended: bool = False  # any RFC 5258 syntax was used (selection/return options, pattern list)
    name: ClassVar[str] = "LIST"


@dataclass(frozen=True, slots=True)
class Lsub(Command):
    reference: str = ""
    pattern: str = ""
    name: ClassVar[str] = "LSUB"


@dataclass(frozen=True, slots=True)
class Status(Command):
    mailbox: str = ""
    items: tuple[str, ...] = ()
    name: ClassVar[str] = "STATUS"


@dataclass(frozen=True, slots=True)
class Append(Command):
    mailbox: str = ""
    messages: tuple[AppendMessage, ...] = ()
    name: ClassVar[str] = "APPEND"


@dataclass(frozen=True, slots=True)
class Expunge(Command):
    """EXPUNGE, or UID EXPUNGE (RFC 4315) when ``uid_set`` is given."""

    uid_set: SequenceSet | None = None
    name: ClassVar[str] = "EXPUNGE"

    @property
    def uid(self) -> bool:
        return self.uid_set is not None


@dataclass(frozen=True, slots=True)
class Search(Command):
    """``returns`` is None for classic SEARCH, a tuple for ESEARCH (RFC 4731: empty = ALL)."""

    uid: bool = False
    charset: str | None = None
    criteria: SearchKey = SearchKey("ALL")
    returns: tuple[str, ...] | None = None
    name: ClassVar[str] = "SEARCH"


@dataclass(frozen=True, slots=True)
class Fetch(Command):
    """``attributes`` has the macros (ALL/FAST/FULL) expanded; ``macro`` remembers which."""

    uid: bool = False
    sequence_set: SequenceSet = SequenceSet()
    attributes: tuple[FetchAttribute, ...] = ()
    macro: str | None = None
    changed_since: int | None = None  # RFC 7162 §3.1.4.1
    vanished: bool = False  # RFC 7162 §3.2.6
    name: ClassVar[str] = "FETCH"


@dataclass(frozen=True, slots=True)
class Store(Command):
    """``mode`` is "+" (add), "-" (remove) or "" (replace)."""

    uid: bool = False
    sequence_set: SequenceSet = SequenceSet()
    mode: str = ""
    silent: bool = False
    flags: tuple[str, ...] = ()
    unchanged_since: int | None = None  # RFC 7162 §3.1.3
    name: ClassVar[str] = "STORE"


@dataclass(frozen=True, slots=True)
class Copy(Command):
    uid: bool = False
    sequence_set: SequenceSet = SequenceSet()
    mailbox: str = ""
    name: ClassVar[str] = "COPY"


@dataclass(frozen=True, slots=True)
class Move(Command):
    uid: bool = False
    sequence_set: SequenceSet = SequenceSet()
    mailbox: str = ""
    name: ClassVar[str] = "MOVE"


@dataclass(frozen=True, slots=True)
class Sort(Command):
    uid: bool = False
    criteria: tuple[SortCriterion, ...] = ()
    charset: str = "UTF-8"
    search: SearchKey = SearchKey("ALL")
    returns: tuple[str, ...] | None = None  # RFC 5267 ESORT
    name: ClassVar[str] = "SORT"


@dataclass(frozen=True, slots=True)
class Thread(Command):
    uid: bool = False
    algorithm: str = "REFERENCES"
    charset: str = "UTF-8"
    search: SearchKey = SearchKey("ALL")
    name: ClassVar[str] = "THREAD"


@dataclass(frozen=True, slots=True)
class GetQuota(Command):
    root: str = ""
    name: ClassVar[str] = "GETQUOTA"


@dataclass(frozen=True, slots=True)
class GetQuotaRoot(Command):
    mailbox: str = ""
    name: ClassVar[str] = "GETQUOTAROOT"


@dataclass(frozen=True, slots=True)
class Id(Command):
    """RFC 2971: ``params`` None for ``ID NIL``."""

    params: tuple[tuple[str, str | None], ...] | None = None
    name: ClassVar[str] = "ID"


__all__ = [
    "NEED_DATA",
    "NeedData",
    "Event",
    "LiteralContinuationNeeded",
    "BadCommand",
    "ConnectionMustClose",
    "IdleDone",
    "SaslResponse",
    "Command",
    "Capability",
    "Noop",
    "Logout",
    "StartTLS",
    "Namespace",
    "Idle",
    "Check",
    "Close",
    "Unselect",
    "Authenticate",
    "Login",
    "Enable",
    "Compress",
    "Select",
    "Create",
    "Delete",
    "Rename",
    "Subscribe",
    "Unsubscribe",
    "List",
    "Lsub",
    "Status",
    "Append",
    "Expunge",
    "Search",
    "Fetch",
    "Store",
    "Copy",
    "Move",
    "Sort",
    "Thread",
    "GetQuota",
    "GetQuotaRoot",
    "Id",
]
