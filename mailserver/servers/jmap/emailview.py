"""Rendering Email objects (RFC 8621 §4.1) from the stored summary and, when needed, the blob.

What needs the raw message: ``headers``, ``header:…`` properties, ``bodyValues`` and body-part
``headers``; everything else comes from the ``emails`` row and its stored MIME structure, so an
Email/get of the usual list properties never reads a blob.

- ``textBody``/``htmlBody``/``attachments`` follow the parseStructure algorithm of RFC 8621
  §4.1.4 literally. message/rfc822 parts are leaves (attachments), as JMAP wants.
- ``partId`` is the IMAP section number ("0" for the root); ``size`` of a leaf is the size after
  transfer decoding, exact when the blob is at hand and estimated from the encoded size
  (base64: 3/4, without line breaks) otherwise.
- ``sentAt`` is given in UTC (the zone of the Date: header is not stored).
"""

from __future__ import annotations

import datetime as dt
import functools
import itertools
import json
import re
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

from mailserver.message.headers import decode_rfc2047, header_text, parse_addresses, parse_msg_ids
from mailserver.message.mime import decode_body, part_text
from mailserver.message.model import MimePart
from mailserver.servers.jmap import errors, ids

EMAIL_DEFAULT_PROPERTIES = (
    "id", "blobId", "threadId", "mailboxIds", "keywords", "size", "receivedAt", "messageId",
    "inReplyTo", "references", "sender", "from", "to", "cc", "bcc", "replyTo", "subject",
    "sentAt", "hasAttachment", "preview", "bodyValues", "textBody", "htmlBody", "attachments")
EMAIL_PROPERTIES = frozenset(EMAIL_DEFAULT_PROPERTIES) | {"headers", "bodyStructure"}
BODY_DEFAULT_PROPERTIES = ("partId", "blobId", "size", "name", "type", "charset", "disposition",
                           "cid", "language", "location")
BODY_PROPERTIES = frozenset(BODY_DEFAULT_PROPERTIES) | {"headers", "subParts"}
HEADER_FORMS = frozenset({"asRaw", "asText", "asAddresses", "asGroupedAddresses",
                          "asMessageIds", "asDate", "asURLs"})
# RFC 8621 §4.1.2: which forms a known header field may be fetched in
_FORM_ALLOWED = {
    "asAddresses": {"from", "sender", "reply-to", "to", "cc", "bcc", "resent-from",
                    "resent-sender", "resent-reply-to", "resent-to", "resent-cc", "resent-bcc"},
    "asMessageIds": {"message-id", "in-reply-to", "references", "resent-message-id"},
    "asDate": {"date", "resent-date"},
    "asURLs": {"list-help", "list-unsubscribe", "list-subscribe", "list-post", "list-owner",
               "list-archive"},
}
_FORM_ALLOWED["asGroupedAddresses"] = _FORM_ALLOWED["asAddresses"]
_TEXT_HEADERS = {"subject", "comments", "keywords", "list-id"}


@dataclass(frozen=True, slots=True)
class HeaderProp:
    prop: str  # as requested (the response key)
    name: str  # lowercase field name
    form: str
    all: bool


def parse_header_prop(prop: str) -> HeaderProp:
    """``header:Name[:asForm][:all]``; invalidArguments when malformed (RFC 8621 §4.1.3)."""
    parts = prop.split(":")
    if len(parts) < 2 or parts[0] != "header" or not parts[1] or len(parts) > 4:
        raise errors.invalid_arguments(f"bad header property {prop!r}")
    name, rest = parts[1].lower(), parts[2:]
    want_all = bool(rest) and rest[-1] == "all"
    if want_all:
        rest = rest[:-1]
    form = rest[0] if rest else "asRaw"
    if len(rest) > 1 or form not in HEADER_FORMS:
        raise errors.invalid_arguments(f"bad header property {prop!r}")
    allowed = _FORM_ALLOWED.get(form)
    if allowed is not None and name not in allowed:
        raise errors.invalid_arguments(f"{prop!r}: {name} cannot be fetched {form}")
    if form == "asText" and (name in set().union(*_FORM_ALLOWED.values())
                             and name not in _TEXT_HEADERS):
        raise errors.invalid_arguments(f"{prop!r}: {name} cannot be fetched asText")
    return HeaderProp(prop, name, form, want_all)


# ---------------------------------------------------------------------------------------------
# Header fields with their raw values (case of the name and folding kept)
# ---------------------------------------------------------------------------------------------

def raw_fields(block: bytes) -> list[tuple[str, str]]:
    """(name as written, raw value up to but excluding the terminating CRLF) in order."""
    out: list[tuple[str, str]] = []
    name: str | None = None
    lines: list[bytes] = []

    def flush() -> None:
        if name is not None:
            out.append((name, _text(b"\n".join(lines))))

    for line in block.split(b"\n"):
        bare = line[:-1] if line.endswith(b"\r") else line
        if not bare:
            continue
        if bare[0] in (32, 9):
            if name is not None:
                lines.append(line)
            continue
        flush()
        name = None
        i = bare.find(b":")
        if i <= 0 or b" " in bare[:i].rstrip() or b"\t" in bare[:i].rstrip():
            continue
        name = bare[:i].rstrip(b" \t").decode("latin-1")
        lines = [line[i + 1:]]
    flush()
    # the terminating CRLF of the last line is not part of the value
    return [(n, v[:-1] if v.endswith("\r") else v) for n, v in out]


def _text(value: bytes) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return value.decode("latin-1")


def _unfold(value: str) -> str:
    return re.sub(r"\r?\n(?=[ \t])", "", value)


def header_value(raw_value: str, form: str) -> Any:
    """One raw header value in a parsed form (RFC 8621 §4.1.2)."""
    if form == "asRaw":
        return raw_value
    unfolded = _unfold(raw_value)
    if form == "asText":
        return re.sub(r"[ \t]+", " ", decode_rfc2047(header_text(unfolded.encode("utf-8",
                                                                              "surrogatepass"))))
    if form == "asAddresses":
        return [a.to_dict() for a in parse_addresses(unfolded) if a.email or a.name]
    if form == "asGroupedAddresses":
        return grouped_addresses(unfolded)
    if form == "asMessageIds":
        found = list(parse_msg_ids(unfolded))
        return found or None
    if form == "asDate":
        try:
            d = parsedate_to_datetime(unfolded.strip())
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        if d is None:
            return None
        if d.tzinfo is None:
            d = d.replace(tzinfo=dt.timezone.utc)
        return d.isoformat()
    if form == "asURLs":
        urls = re.findall(r"<([^>]*)>", unfolded)
        return [u.strip() for u in urls] or None
    raise ValueError(form)


def _split_groups(value: str) -> list[tuple[str | None, str]]:
    """RFC 5322 §3.4 address-list → [(group display name or None, its addresses' text)] at
    top level (quotes, comments and angle brackets respected)."""
    out: list[tuple[str | None, str]] = []
    buf, group_name, depth, quoted, angle, i = [], None, 0, False, False, 0
    comma = -1  # offset of the last top-level comma in buf (outside groups)
    while i < len(value):
        ch = value[i]
        if quoted:
            if ch == "\\" and i + 1 < len(value):
                buf.append(value[i:i + 2])
                i += 2
                continue
            quoted = ch != '"'
        elif depth:
            depth += {"(": 1, ")": -1}.get(ch, 0)
        elif ch == '"':
            quoted = True
        elif ch == "(":
            depth = 1
        elif ch == "<":
            angle = True
        elif ch == ">":
            angle = False
        elif ch == ":" and not angle and group_name is None:
            text = "".join(buf)
            cut = text.rfind(",", 0, comma + 1) if comma >= 0 else -1
            if cut >= 0:
                out.append((None, text[:cut]))  # ungrouped addresses before the group
            group_name = text[cut + 1:]
            buf, comma = [], -1
            i += 1
            continue
        elif ch == "," and not angle and group_name is None:
            comma = len("".join(buf))
        elif ch == ";" and not angle and group_name is not None:
            out.append((group_name, "".join(buf)))
            group_name, buf, comma = None, [], -1
            i += 1
            continue
        buf.append(ch)
        i += 1
    if group_name is not None:  # unterminated group
        out.append((group_name, "".join(buf)))
    elif "".join(buf).strip():
        out.append((None, "".join(buf)))
    return [(n, t) for n, t in out if n is not None or t.strip()]


def grouped_addresses(value: str) -> list[dict[str, Any]]:
    """asGroupedAddresses (RFC 8621 §4.1.2.4): consecutive ungrouped addresses form a group
    with a null name."""
    groups: list[dict[str, Any]] = []
    for name, text in _split_groups(value):
        addrs = [a.to_dict() for a in parse_addresses(text) if a.email or a.name]
        if name is None:
            if groups and groups[-1]["name"] is None:
                groups[-1]["addresses"].extend(addrs)
            elif addrs:
                groups.append({"name": None, "addresses": addrs})
        else:
            clean = " ".join(decode_rfc2047(name).replace('"', "").split()) or None
            groups.append({"name": clean, "addresses": addrs})
    return groups


def header_props(fields: list[tuple[str, str]], props: list[HeaderProp]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for hp in props:
        values = [v for n, v in fields if n.lower() == hp.name]
        if hp.all:
            out[hp.prop] = [header_value(v, hp.form) for v in values]
        else:
            out[hp.prop] = header_value(values[-1], hp.form) if values else None
    return out


# ---------------------------------------------------------------------------------------------
# Dates
# ---------------------------------------------------------------------------------------------

def utc_date(ts: int | None) -> str | None:
    if ts is None:
        return None
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_utc_date(value: Any) -> int | None:
    """RFC 8620 §1.4 UTCDate ("2014-10-30T06:12:00Z"); None when malformed."""
    if not isinstance(value, str) or not re.fullmatch(
            r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", value):
        return None
    try:
        d = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return int(d.timestamp())


# ---------------------------------------------------------------------------------------------
# Body parts
# ---------------------------------------------------------------------------------------------

def is_multipart(p: MimePart) -> bool:
    return p.content_type.startswith("multipart/")


def jmap_part_id(p: MimePart) -> str:
    return p.part_id or "0"


def leaves(p: MimePart):
    """Every part JMAP sees (not descending into message/rfc822), depth first."""
    yield p
    if is_multipart(p):
        for c in p.children:
            yield from leaves(c)


def find_part(root: MimePart, part: str) -> MimePart | None:
    for p in leaves(root):
        if p.part_id == part:
            return p
    return None


def _inline_media(t: str) -> bool:
    return t.startswith(("image/", "audio/", "video/"))


def body_lists(root: MimePart) -> tuple[list[MimePart], list[MimePart], list[MimePart]]:
    """(textBody, htmlBody, attachments): RFC 8621 §4.1.4 parseStructure."""
    text: list[MimePart] = []
    html: list[MimePart] = []
    attachments: list[MimePart] = []

    def walk(parts, multipart_type, in_alternative, html_body, text_body):
        text_len = len(text_body) if text_body is not None else -1
        html_len = len(html_body) if html_body is not None else -1
        for i, part in enumerate(parts):
            t = part.content_type
            multipart = is_multipart(part)
            inline = (part.disposition != "attachment"
                      and (t in ("text/plain", "text/html") or _inline_media(t))
                      and (i == 0 or (multipart_type != "related"
                                      and (_inline_media(t) or not part.filename))))
            if multipart:
                sub = t.split("/", 1)[1]
                walk(part.children, sub, in_alternative or sub == "alternative",
                     html_body, text_body)
            elif inline:
                if multipart_type == "alternative":
                    if t == "text/plain":
                        text_body.append(part)
                    elif t == "text/html":
                        html_body.append(part)
                    else:
                        attachments.append(part)
                    continue
                tb, hb = text_body, html_body
                if in_alternative:
                    if t == "text/plain":
                        hb = None
                    if t == "text/html":
                        tb = None
                if tb is not None:
                    tb.append(part)
                if hb is not None:
                    hb.append(part)
                if (tb is None or hb is None) and _inline_media(t):
                    attachments.append(part)
            else:
                attachments.append(part)
        if multipart_type == "alternative" and text_body is not None and html_body is not None:
            if text_len == len(text_body) and html_len != len(html_body):
                text_body.extend(html_body[html_len:])
            if html_len == len(html_body) and text_len != len(text_body):
                html_body.extend(text_body[text_len:])

    walk([root], "mixed", False, html, text)
    return text, html, attachments


def _decoded_size(p: MimePart, raw: bytes | None) -> int:
    if raw is not None:
        return len(decode_body(raw, p))
    if p.content_transfer_encoding == "base64":
        return (p.size - 2 * p.lines) * 3 // 4 if p.lines else p.size * 3 // 4
    return p.size


def body_part(p: MimePart, sha: str, raw: bytes | None, props: tuple[str, ...] | list[str],
              header_list: list[HeaderProp]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    multipart = is_multipart(p)
    fields = None
    for prop in props:
        if prop == "partId":
            out[prop] = None if multipart else jmap_part_id(p)
        elif prop == "blobId":
            out[prop] = None if multipart else ids.part_blob_id(sha, p.part_id)
        elif prop == "size":
            out[prop] = 0 if multipart else _decoded_size(p, raw)
        elif prop == "name":
            out[prop] = p.filename
        elif prop == "type":
            out[prop] = p.content_type
        elif prop == "charset":
            out[prop] = p.charset or ("us-ascii" if p.content_type.startswith("text/")
                                      else None)
        elif prop == "disposition":
            out[prop] = p.disposition
        elif prop == "cid":
            out[prop] = p.content_id.strip().strip("<>") if p.content_id else None
        elif prop == "language":
            out[prop] = list(p.content_language) or None
        elif prop == "location":
            out[prop] = p.content_location
        elif prop == "headers":
            fields = fields if fields is not None else _part_fields(p, raw)
            out[prop] = [{"name": n, "value": v} for n, v in fields]
        elif prop == "subParts":
            out[prop] = [body_part(c, sha, raw, props, header_list) for c in p.children] \
                if multipart else None
    if header_list:
        fields = fields if fields is not None else _part_fields(p, raw)
        out.update(header_props(fields, header_list))
    return out


def _part_fields(p: MimePart, raw: bytes | None) -> list[tuple[str, str]]:
    if raw is None:
        return []
    return raw_fields(raw[p.header_start:p.header_end])


def body_value(raw: bytes, p: MimePart, max_bytes: int) -> dict[str, Any]:
    """EmailBodyValue (RFC 8621 §4.1.4) of a text part, cut at ``max_bytes`` UTF-8 bytes."""
    problem = False
    try:
        value = part_text(raw, p)
    except Exception:  # noqa: BLE001 - undecodable body: report it, never fail the get
        value, problem = decode_body(raw, p).decode("utf-8", "replace"), True
    if "\ufffd" in value:
        problem = True
    truncated = False
    if max_bytes and len(value.encode("utf-8")) > max_bytes:
        value = value.encode("utf-8")[:max_bytes].decode("utf-8", "ignore")
        truncated = True
    return {"value": value, "isEncodingProblem": problem, "isTruncated": truncated}


# ---------------------------------------------------------------------------------------------
# The list view: Email/get of summary properties from a per-process cache
# ---------------------------------------------------------------------------------------------

# Served by ``render_listed`` without the MIME structure or the blob: what mail clients ask for
# when they show a mailbox. Everything else goes through ``render_email`` (mail.py).
LIST_PROPERTIES = frozenset({
    "id", "blobId", "threadId", "mailboxIds", "keywords", "size", "receivedAt", "messageId",
    "inReplyTo", "references", "sender", "from", "to", "cc", "bcc", "replyTo", "subject",
    "sentAt", "hasAttachment", "preview"})
_ADDRESS_PROPS = ("from", "sender", "replyTo", "to", "cc", "bcc")


@dataclass(frozen=True, slots=True)
class Summary:
    """The immutable properties of one Email (RFC 8621 §4.1: all but keywords and
    mailboxIds): ``props`` JSON-ready, ``members`` each as its serialized ``"name":value``.
    ``blob_id`` and ``created_modseq`` identify the stored email it was made from: a cached
    entry that does not match the row read now is not used."""

    blob_id: str
    created_modseq: int
    props: dict[str, Any]
    members: dict[str, str]
    views: dict[tuple[str, ...], Any]  # render_listed's work per property list


# what the daemon serializes responses with (service._dumps): fragments must be identical
_dumps = functools.partial(json.dumps, ensure_ascii=False, separators=(",", ":"))


def summary_from_row(r: Any) -> Summary:
    """A ``queries.SUMMARY_COLUMNS`` row → Summary (same values as ``render_email``)."""
    (_id, blob_id, created_modseq, size, received_at, sent_at, thread_id, subject, message_id,
     in_reply_to, references, preview, has_attachment, *addresses) = r
    props: dict[str, Any] = {
        "blobId": blob_id, "threadId": ids.thread_id(thread_id), "size": size,
        "receivedAt": utc_date(received_at), "messageId": [message_id] if message_id else None,
        "inReplyTo": in_reply_to.split() or None, "references": references.split() or None,
        "subject": subject or None, "sentAt": utc_date(sent_at),
        "hasAttachment": bool(has_attachment), "preview": preview}
    for prop, value in zip(_ADDRESS_PROPS, addresses):
        props[prop] = (json.loads(value) if value and value != "[]" else None) or None
    return Summary(blob_id, created_modseq, props,
                   {p: f'"{p}":{_dumps(v)}' for p, v in props.items()}, {})


class SummaryCache:
    """Email summaries by (account id, email id), owned by one JMAP process.

    Emails are immutable apart from keywords and mailboxes (which are read fresh every time),
    and email ids are never reused within an account, so an entry never needs invalidating;
    the blob id / creation MODSEQ check guards against an account id reused after deletion.
    Bounded: the oldest entries go first (~2 KiB each with their renderings)."""

    def __init__(self, max_entries: int = 10_000) -> None:
        self.max_entries = max_entries
        self._entries: dict[tuple[int, int], Summary] = {}
        self._keywords: dict[str, tuple[dict[str, bool], str]] = {}

    def get(self, key: tuple[int, int]) -> Summary | None:
        return self._entries.get(key)

    def put(self, key: tuple[int, int], summary: Summary) -> None:
        entries = self._entries
        entries.pop(key, None)
        entries[key] = summary
        if len(entries) > self.max_entries:
            for old in list(itertools.islice(entries, len(entries) - self.max_entries)):
                del entries[old]

    def keywords(self, stored: str) -> tuple[dict[str, bool], str]:
        """Stored keywords → (JMAP keywords object, its ``"keywords":…`` member): a mailbox
        has few distinct keyword sets."""
        hit = self._keywords.get(stored)
        if hit is None:
            value = dict.fromkeys(sorted(set(stored.split())), True)
            hit = (value, f'"keywords":{_dumps(value)}')
            if len(self._keywords) >= 1000:
                self._keywords.clear()
            self._keywords[stored] = hit
        return hit

    def __len__(self) -> int:
        return len(self._entries)


_HOLE = "\x00"  # never in JSON text (JSON escapes NUL): marks where a fresh member goes
_FRESH = frozenset({"keywords", "mailboxIds"})


def _view(email_id: int, props: tuple[str, ...], summary: Summary):
    """(dict with every property of ``props`` in order — fresh ones None —, the JSON text
    around the fresh members, which fresh members in order) for one Email and ``props``."""
    base: dict[str, Any] = {}
    members: list[str] = []
    fresh: list[str] = []
    for p in dict.fromkeys(props):  # a property asked twice is one member
        if p == "id":
            base[p] = ids.email_id(email_id)
            members.append(f'"id":"{base[p]}"')
        elif p in _FRESH:
            base[p] = None
            members.append(_HOLE)
            fresh.append(p)
        else:
            base[p] = summary.props[p]
            members.append(summary.members[p])
    return base, ("{" + ",".join(members) + "}").split(_HOLE), tuple(fresh)


def render_listed(cache: SummaryCache, email_id: int, props: tuple[str, ...],
                  summary: Summary, keywords: str,
                  mailboxes: list[int] | None) -> tuple[dict[str, Any], str]:
    """One Email of ``LIST_PROPERTIES`` (``props`` ⊆ them), the same as ``render_email``,
    and its JSON text (what ``_dumps`` would make of it). The immutable part of both is made
    once per email and property list (``Summary.views``); keywords and mailboxes are filled
    in. The values are shared with the cache: never mutated downstream."""
    view = summary.views.get(props)
    if view is None:
        if len(summary.views) >= 8:  # clients use one or two property lists; stay bounded
            summary.views.clear()
        view = summary.views[props] = _view(email_id, props, summary)
    base, segments, fresh = view
    out = base.copy()
    if not fresh:
        return out, segments[0]
    parts = [segments[0]]
    for i, p in enumerate(fresh, 1):
        if p == "keywords":
            value, text = cache.keywords(keywords)
            out[p] = dict(value)
        else:
            boxes = sorted(mailboxes or ())
            out[p] = {f"m{m}": True for m in boxes}
            text = '"mailboxIds":{' + ",".join([f'"m{m}":true' for m in boxes]) + "}"
        parts.append(text)
        parts.append(segments[i])
    return out, "".join(parts)


class StateCache:
    """Answers that hold for one account at one account MODSEQ (a list view's page of ids;
    an Email's keywords, mailboxes, summary and rendering), owned by one JMAP process.

    Exact, not a heuristic: every transaction that changes an account's mail bumps
    ``accounts.modseq`` inside it (``accountlock.begin_change``), and an entry is only used
    by a read whose own snapshot has the MODSEQ the entry was read at. A mail client polling
    an unchanged mailbox then costs one tiny SELECT per method. Bounded in entries over all
    accounts (dropped all at once past ``max_entries``: they are only a shortcut). ``at`` may
    be called from the reader threads, ``put`` from the event loop only."""

    MISSING = object()

    def __init__(self, max_entries: int = 20_000) -> None:
        self.max_entries = max_entries
        self._accounts: dict[int, tuple[int, dict[Any, Any]]] = {}
        self._count = 0

    def at(self, account_id: int, modseq: int) -> dict[Any, Any]:
        """What is known of the account at ``modseq`` (read it with ``get(key, MISSING)``)."""
        hit = self._accounts.get(account_id)
        return hit[1] if hit is not None and hit[0] == modseq else {}

    def put(self, account_id: int, modseq: int, key: Any, value: Any) -> None:
        """Record ``value`` as the answer for ``key`` read at ``modseq`` (ignored when a newer
        MODSEQ of the account is already known)."""
        hit = self._accounts.get(account_id)
        if hit is None or hit[0] < modseq:
            if hit is not None:
                self._count -= len(hit[1])
            hit = self._accounts[account_id] = (modseq, {})
        elif hit[0] > modseq:
            return
        if self._count >= self.max_entries:
            self._accounts.clear()
            self._count = 0
            hit = self._accounts[account_id] = (modseq, {})
        if key not in hit[1]:
            self._count += 1
        hit[1][key] = value


class PrerenderedList(dict):
    """A ``/get`` response whose ``list`` is also at hand as JSON text (``list_json``):
    ``service.dumps_response`` splices it in instead of encoding the list again. Still a plain
    dict for result references (RFC 8620 §3.7) and any other reader."""

    __slots__ = ("list_json",)

    def __init__(self, value: dict[str, Any], list_json: str) -> None:
        super().__init__(value)
        self.list_json = list_json
