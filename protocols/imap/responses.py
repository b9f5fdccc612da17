"""Response encoders: exact bytes for status responses, response codes and untagged data.

Functions return ``bytes`` ending in CRLF. Mailbox names take ``utf8`` (UTF8=ACCEPT on);
everything else that may carry 8-bit text takes it too.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Mapping, Sequence

from protocols.imap import _writers as w, mutf7
from protocols.imap._writers import Atom, Literal, Raw  # noqa: F401  (re-exported)
from protocols.imap.values import SequenceSet

CRLF = b"\r\n"


def _text(text: str) -> bytes:
    # resp-text: TEXT-CHAR only (no CR/LF); never empty
    clean = text.replace("\r", " ").replace("\n", " ") or "."
    return clean.encode("utf-8", "replace")


def status_response(tag: str | None, status: str, text: str, code: str | None = None) -> bytes:
    """``tag OK|NO|BAD [code] text`` (``*`` when tag is None)."""
    out = (tag or "*").encode("ascii", "replace") + b" " + status.encode("ascii") + b" "
    if code:
        out += b"[" + code.encode("utf-8", "replace") + b"] "
    return out + _text(text) + CRLF


def ok(tag: str, text: str = "Completed", code: str | None = None) -> bytes:
    return status_response(tag, "OK", text, code)


def no(tag: str, text: str, code: str | None = None) -> bytes:
    return status_response(tag, "NO", text, code)


def bad(tag: str | None, text: str, code: str | None = None) -> bytes:
    return status_response(tag, "BAD", text, code)


def untagged_ok(text: str, code: str | None = None) -> bytes:
    return status_response(None, "OK", text, code)


def untagged_no(text: str, code: str | None = None) -> bytes:
    return status_response(None, "NO", text, code)


def bye(text: str = "Logging out", code: str | None = None) -> bytes:
    return status_response(None, "BYE", text, code)


def preauth(text: str, code: str | None = None) -> bytes:
    return status_response(None, "PREAUTH", text, code)


def greeting(capabilities: Iterable[str], text: str = "IMAP server ready") -> bytes:
    return untagged_ok(text, code.capability(capabilities))


def continuation(text: str | bytes = "Ready") -> bytes:
    """``+ text``; bytes are sent as base64 (AUTHENTICATE challenges, RFC 9051 §7.6)."""
    if isinstance(text, bytes):
        import base64

        return b"+ " + base64.b64encode(text) + CRLF
    return b"+ " + _text(text) + CRLF


class code:
    """Response codes (RFC 9051 §7.1 and extensions) as the text between the brackets."""

    ALERT = "ALERT"
    PARSE = "PARSE"
    READ_ONLY = "READ-ONLY"
    READ_WRITE = "READ-WRITE"
    TRYCREATE = "TRYCREATE"
    NOMODSEQ = "NOMODSEQ"  # RFC 7162
    TOOBIG = "TOOBIG"  # RFC 7889 / RFC 9051
    LIMIT = "LIMIT"  # RFC 5530
    NONEXISTENT = "NONEXISTENT"
    ALREADYEXISTS = "ALREADYEXISTS"
    AUTHENTICATIONFAILED = "AUTHENTICATIONFAILED"
    AUTHORIZATIONFAILED = "AUTHORIZATIONFAILED"
    UNAVAILABLE = "UNAVAILABLE"
    EXPIRED = "EXPIRED"
    PRIVACYREQUIRED = "PRIVACYREQUIRED"
    CONTACTADMIN = "CONTACTADMIN"
    NOPERM = "NOPERM"
    INUSE = "INUSE"
    EXPUNGEISSUED = "EXPUNGEISSUED"
    CORRUPTION = "CORRUPTION"
    SERVERBUG = "SERVERBUG"
    CLIENTBUG = "CLIENTBUG"
    CANNOT = "CANNOT"
    OVERQUOTA = "OVERQUOTA"
    HASCHILDREN = "HASCHILDREN"
    CLOSED = "CLOSED"  # RFC 7162 §3.2.11
    UNKNOWN_CTE = "UNKNOWN-CTE"  # RFC 3516
    UIDNOTSTICKY = "UIDNOTSTICKY"
    COMPRESSIONACTIVE = "COMPRESSIONACTIVE"  # RFC 4978
    NOTSAVED = "NOTSAVED"  # RFC 5182
    USEATTR = "USEATTR"  # RFC 6154

    @staticmethod
    def capability(caps: Iterable[str]) -> str:
        return "CAPABILITY " + " ".join(caps)

    @staticmethod
    def uidvalidity(n: int) -> str:
        return f"UIDVALIDITY {n}"

    @staticmethod
    def uidnext(n: int) -> str:
        return f"UIDNEXT {n}"

    @staticmethod
    def unseen(n: int) -> str:
        return f"UNSEEN {n}"

    @staticmethod
    def permanentflags(flags: Iterable[str]) -> str:
        return "PERMANENTFLAGS (" + " ".join(flags) + ")"

    @staticmethod
    def highestmodseq(n: int) -> str:
        return f"HIGHESTMODSEQ {n}"

    @staticmethod
    def appenduid(uidvalidity: int, uids: SequenceSet | str) -> str:  # RFC 4315
        return f"APPENDUID {uidvalidity} {uids}"

    @staticmethod
    def copyuid(uidvalidity: int, source: SequenceSet | str, dest: SequenceSet | str) -> str:
        return f"COPYUID {uidvalidity} {source} {dest}"

    @staticmethod
    def modified(s: SequenceSet | str) -> str:  # RFC 7162 §3.1.3
        return f"MODIFIED {s}"

    @staticmethod
    def badcharset(charsets: Iterable[str] = ("UTF-8", "US-ASCII")) -> str:
        return "BADCHARSET (" + " ".join(charsets) + ")"

    @staticmethod
    def mailboxid(mailbox_id: str) -> str:  # RFC 8474
        return f"MAILBOXID ({mailbox_id})"

    @staticmethod
    def appendlimit(n: int) -> str:  # RFC 7889
        return f"APPENDLIMIT {n}"

    @staticmethod
    def referral(url: str) -> str:
        return f"REFERRAL {url}"


# ---- untagged data ------------------------------------------------------------------------


def _line(*parts: bytes) -> bytes:
    return b"* " + b" ".join(parts) + CRLF


def capability(caps: Iterable[str]) -> bytes:
    return _line(b"CAPABILITY", *(c.encode("ascii") for c in caps))


def enabled(caps: Iterable[str]) -> bytes:
    return _line(b"ENABLED", *(c.encode("ascii") for c in caps))


def exists(n: int) -> bytes:
    return b"* %d EXISTS\r\n" % n


def recent(n: int) -> bytes:
    return b"* %d RECENT\r\n" % n


def expunge(seq: int) -> bytes:
    return b"* %d EXPUNGE\r\n" % seq


def vanished(uids: SequenceSet | str, earlier: bool = False) -> bytes:
    """RFC 7162 §3.2.10: ``* VANISHED [(EARLIER)] uid-set``."""
    return b"* VANISHED " + (b"(EARLIER) " if earlier else b"") + str(uids).encode("ascii") + CRLF


def flags(flag_names: Iterable[str]) -> bytes:
    return b"* FLAGS " + w.flag_list(flag_names) + CRLF


def fetch(
    seq: int, items: Sequence[tuple[str, object]] | Mapping[str, object], utf8: bool = False
) -> bytes:
    """``* seq FETCH (name value ...)``. Values go through ``_writers.value``: use
    ``fetch_flags``/``Raw`` for pre-encoded data and ``Literal`` (or bytes) for sections."""
    pairs = items.items() if isinstance(items, Mapping) else items
    body = b" ".join(name.encode("ascii") + b" " + _fetch_value(v, utf8) for name, v in pairs)
    return b"* %d FETCH (" % seq + body + b")" + CRLF


def _fetch_value(v: object, utf8: bool) -> bytes:
    if isinstance(v, bytes):  # body sections: always a literal (8-bit / CRLF safe)
        return w.literal(v, binary=b"\x00" in v)
    return w.value(v, utf8)


def fetch_flags(flag_names: Iterable[str]) -> Raw:
    return Raw(w.flag_list(flag_names))


def internaldate(value: datetime.datetime) -> Raw:
    return Raw(w.date_time(value))


def list_response(
    attributes: Iterable[str],
    delimiter: str | None,
    name: str,
    *,
    utf8: bool = False,
    child_info: Iterable[str] = (),
    old_name: str | None = None,
    kind: str = "LIST",
) -> bytes:
    """``* LIST (attrs) "/" name [(CHILDINFO (...)) (OLDNAME (...))]`` (RFC 5258 §3.5, RFC 9051)."""
    delim = b"NIL" if delimiter is None else w.quoted(delimiter.encode("ascii"))
    out = (
        b"* "
        + kind.encode("ascii")
        + b" ("
        + b" ".join(a.encode("ascii") for a in attributes)
        + b") "
        + delim
        + b" "
        + w.mailbox(name, utf8)
    )
    ext = []
    child_info = tuple(child_info)
    if child_info:
        ext.append(
            b'"CHILDINFO" (' + b" ".join(w.quoted(c.encode("ascii")) for c in child_info) + b")"
        )
    if old_name is not None:
        ext.append(b'"OLDNAME" (' + w.mailbox(old_name, utf8) + b")")
    if ext:
        out += b" (" + b" ".join(ext) + b")"
    return out + CRLF


def lsub_response(
    attributes: Iterable[str], delimiter: str | None, name: str, *, utf8: bool = False
) -> bytes:
    return list_response(attributes, delimiter, name, utf8=utf8, kind="LSUB")


def status(
    name: str,
    items: Mapping[str, int | str] | Sequence[tuple[str, int | str]],
    *,
    utf8: bool = False,
) -> bytes:
    """``* STATUS name (MESSAGES 3 UIDNEXT 4 ...)``; MAILBOXID values go in parentheses."""
    pairs = items.items() if isinstance(items, Mapping) else items
    parts = []
    for key, val in pairs:
        if key == "MAILBOXID":  # RFC 8474 §4.2
            parts.append(b"MAILBOXID (" + str(val).encode("ascii") + b")")
        else:
            parts.append(key.encode("ascii") + b" %d" % int(val))
    return b"* STATUS " + w.mailbox(name, utf8) + b" (" + b" ".join(parts) + b")" + CRLF


def search(numbers: Iterable[int], modseq: int | None = None) -> bytes:
    """``* SEARCH 2 3 6 [(MODSEQ 917162500)]`` (RFC 7162 §3.1.5)."""
    out = b"* SEARCH"
    for n in numbers:
        out += b" %d" % n
    if modseq is not None:
        out += b" (MODSEQ %d)" % modseq
    return out + CRLF


def esearch(
    tag: str | None,
    *,
    uid: bool = False,
    min: int | None = None,
    max: int | None = None,
    all: SequenceSet | str | None = None,
    count: int | None = None,
    modseq: int | None = None,
) -> bytes:
    """RFC 4731 / RFC 9051 §7.3.4: ``* ESEARCH (TAG "a1") UID MIN 2 COUNT 3``."""
    out = b"* ESEARCH"
    if tag is not None:
        out += b" (TAG " + w.quoted(tag.encode("ascii")) + b")"
    if uid:
        out += b" UID"
    if min is not None:
        out += b" MIN %d" % min
    if max is not None:
        out += b" MAX %d" % max
    if all is not None and str(all):
        out += b" ALL " + str(all).encode("ascii")
    if count is not None:
        out += b" COUNT %d" % count
    if modseq is not None:
        out += b" MODSEQ %d" % modseq
    return out + CRLF


def sort(numbers: Iterable[int], modseq: int | None = None) -> bytes:
    out = b"* SORT"
    for n in numbers:
        out += b" %d" % n
    if modseq is not None:
        out += b" (MODSEQ %d)" % modseq
    return out + CRLF


ThreadNode = "int | list[ThreadNode]"


def thread(threads: Iterable[object]) -> bytes:
    """RFC 5256 §4: one entry per thread; a thread is an int or a list of ids followed by
    branch lists: ``[2, [3, 6, [4, 23], [44, 7, 96]]]`` → ``* THREAD (2)(3 6 (4 23)(44 7 96))``."""
    body = b"".join(_thread_list(t) for t in threads)
    return b"* THREAD" + (b" " + body if body else b"") + CRLF


def _thread_list(t: object) -> bytes:
    if isinstance(t, int):
        return b"(%d)" % t
    items = list(t)  # type: ignore[call-overload]
    ints = [x for x in items if isinstance(x, int)]
    branches = items[len(ints) :]
    if any(isinstance(x, int) for x in branches):
        raise ValueError("thread ids must come before the branches")
    head = b" ".join(b"%d" % n for n in ints)
    tail = b"".join(_thread_list(b) for b in branches)
    return b"(" + head + (b" " if head and tail else b"") + tail + b")"


Namespace = Sequence[tuple[str, str | None]]


def namespace(
    personal: Namespace | None,
    other: Namespace | None = None,
    shared: Namespace | None = None,
    *,
    utf8: bool = False,
) -> bytes:
    """RFC 2342 / RFC 9051 §7.3.5: ``* NAMESPACE (("" "/")) NIL NIL``."""

    def one(ns: Namespace | None) -> bytes:
        if not ns:
            return b"NIL"
        return (
            b"("
            + b"".join(
                b"("
                + w.string(prefix.encode("utf-8") if utf8 else mutf7.encode(prefix), utf8)
                + b" "
                + (b"NIL" if delim is None else w.quoted(delim.encode("ascii")))
                + b")"
                for prefix, delim in ns
            )
            + b")"
        )

    return b"* NAMESPACE " + one(personal) + b" " + one(other) + b" " + one(shared) + CRLF


def id_response(params: Mapping[str, str | None] | None, *, utf8: bool = False) -> bytes:
    """RFC 2971: ``* ID ("name" "mailserver" ...)`` or ``* ID NIL``."""
    if not params:
        return b"* ID NIL" + CRLF
    parts = []
    for k, v in params.items():
        parts.append(w.string(k, utf8) + b" " + w.nstring(v, utf8))
    return b"* ID (" + b" ".join(parts) + b")" + CRLF


def quota(root: str, resources: Iterable[tuple[str, int, int]], *, utf8: bool = False) -> bytes:
    """RFC 9208: ``* QUOTA "" (STORAGE 10 512 MESSAGE 1 1000)`` (usage, limit)."""
    parts = b" ".join(
        name.encode("ascii") + b" %d %d" % (usage, limit) for name, usage, limit in resources
    )
    return b"* QUOTA " + w.astring(root, utf8) + b" (" + parts + b")" + CRLF


def quotaroot(mailbox: str, roots: Iterable[str], *, utf8: bool = False) -> bytes:
    out = b"* QUOTAROOT " + w.mailbox(mailbox, utf8)
    for r in roots:
        out += b" " + w.astring(r, utf8)
    return out + CRLF
