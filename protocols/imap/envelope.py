"""ENVELOPE and BODY/BODYSTRUCTURE encoders (RFC 3501 §7.4.2, RFC 9051 §7.5.2).

They read a ``ParsedMessage`` / ``MimePart`` (``mailserver.message.model``) by attribute
only, so this package never imports the message parser (protocols/ is the lowest layer).
"""

from __future__ import annotations

import base64
import re
from typing import Any

from protocols.imap import _writers as w

_FOLD = re.compile(r"\r?\n(?=[ \t])")


def _unfold(value: str) -> str:
    return _FOLD.sub("", value).replace("\r", "").replace("\n", "")


def _s(value: str | None, utf8: bool) -> bytes:
    return w.nstring(value, utf8)


# ---- address lists (RFC 5322 §3.4, tolerant) ------------------------------------------------

_TOKEN = re.compile(
    r"""
    (?P<ws>[ \t]+)
  | (?P<quoted>"(?:[^"\\]|\\.)*"?)
  | (?P<comment>\()
  | (?P<angle><[^>]*>?)
  | (?P<special>[,:;@])
  | (?P<word>[^\s"(),:;<>@]+)
  | (?P<other>.)
""",
    re.X | re.S,
)


def _tokens(text: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    i = 0
    while i < len(text):
        m = _TOKEN.match(text, i)
        assert m is not None
        kind = m.lastgroup or "other"
        if kind == "comment":
            depth, j = 0, i
            while j < len(text):
                ch = text[j]
                if ch == "\\":
                    j += 2
                    continue
                if ch == "(":
                    depth += 1
                elif ch == ")":
                    depth -= 1
                    if depth == 0:
                        break
                j += 1
            out.append(("comment", text[i + 1 : j]))
            i = j + 1
            continue
        if kind != "ws":
            out.append((kind, m.group(0)))
        i = m.end()
    return out


def _unquote(q: str) -> str:
    body = q[1:-1] if len(q) >= 2 and q.endswith('"') else q[1:]
    return re.sub(r"\\(.)", r"\1", body)


def _mailbox_from(tokens: list[tuple[str, str]]) -> tuple[str | None, str | None, str, str] | None:
    """One mailbox (name-addr or addr-spec) → (name, adl, local, host)."""
    words = [(k, v) for k, v in tokens if k != "comment"]
    comments = [v for k, v in tokens if k == "comment"]
    angle = next((v for k, v in words if k == "angle"), None)
    if angle is not None:
        phrase = []
        for k, v in words:
            if k == "angle":
                break
            phrase.append(_unquote(v) if k == "quoted" else v)
        name = " ".join(phrase).strip() or None
        spec = angle[1:-1] if angle.endswith(">") else angle[1:]
        adl = None
        if spec.startswith("@") and ":" in spec:  # obs-route
            adl, spec = spec.split(":", 1)
        addr = spec.strip()
    else:
        if not words:
            return None
        addr = "".join(_unquote(v) if k == "quoted" else v for k, v in words)
        name = " ".join(c.strip() for c in comments).strip() or None
        adl = None
    local, at, host = addr.rpartition("@")
    if not at:
        local, host = addr, ""
    if local.startswith('"') and local.endswith('"') and len(local) >= 2:
        local = _unquote(local)
    return name, adl, local or "MISSING_MAILBOX", host or "MISSING_DOMAIN"


def parse_address_list(value: str) -> list[tuple[str | None, str | None, str | None, str | None]]:
    """Raw header value → IMAP address tuples (name, adl, mailbox, host), groups included as
    ``(None, None, group, None)`` … ``(None, None, None, None)`` (RFC 3501 §7.4.2)."""
    toks = _tokens(_unfold(value))
    out: list[tuple[str | None, str | None, str | None, str | None]] = []
    current: list[tuple[str, str]] = []
    in_group = False

    def flush() -> None:
        mb = _mailbox_from(current)
        if mb is not None:
            out.append(mb)
        current.clear()

    for kind, tok in toks:
        if (
            kind == "special"
            and tok == ":"
            and not in_group
            and not any(k == "angle" for k, _ in current)
        ):
            phrase = " ".join(
                _unquote(v) if k == "quoted" else v for k, v in current if k in ("word", "quoted")
            )
            out.append((None, None, phrase, None))
            current.clear()
            in_group = True
        elif kind == "special" and tok == ";" and in_group:
            flush()
            out.append((None, None, None, None))
            in_group = False
        elif kind == "special" and tok == ",":
            flush()
        else:
            current.append((kind, tok))
    flush()
    if in_group:
        out.append((None, None, None, None))
    return out


def _address_list(
    addrs: list[tuple[str | None, str | None, str | None, str | None]], utf8: bool
) -> bytes:
    if not addrs:
        return b"NIL"
    return b"(" + b"".join(b"(" + b" ".join(_s(x, utf8) for x in a) + b")" for a in addrs) + b")"


def _from_model(addresses: Any) -> list[tuple[str | None, str | None, str | None, str | None]]:
    out = []
    for a in addresses:
        if not a.email:
            continue
        local, at, host = a.email.rpartition("@")
        if not at:
            local, host = a.email, "MISSING_DOMAIN"
        out.append((a.name or None, None, local, host))
    return out


def envelope(msg: Any, utf8: bool = False) -> bytes:
    """``ENVELOPE`` of a ParsedMessage: raw header values from ``envelope_raw`` when the parser
    kept them (the usual case), else the decoded summary fields."""
    raw = {k.lower().replace("_", "-"): v for k, v in (getattr(msg, "envelope_raw", ()) or ())}
    if raw:

        def addrs(name: str) -> list:
            v = raw.get(name)
            return parse_address_list(v) if v is not None else []

        date = raw.get("date")
        subject = raw.get("subject")
        in_reply_to = raw.get("in-reply-to")
        message_id = raw.get("message-id")
        lists = {n: addrs(n) for n in ("from", "sender", "reply-to", "to", "cc", "bcc")}
    else:
        date = msg.date_header
        subject = msg.subject or None
        in_reply_to = " ".join(f"<{i}>" for i in msg.in_reply_to) or None
        message_id = f"<{msg.message_id}>" if msg.message_id else None
        lists = {
            "from": _from_model(msg.from_),
            "sender": _from_model(msg.sender),
            "reply-to": _from_model(msg.reply_to),
            "to": _from_model(msg.to),
            "cc": _from_model(msg.cc),
            "bcc": _from_model(msg.bcc),
        }
    # RFC 3501 §7.4.2: sender and reply-to default to from
    if not lists["sender"]:
        lists["sender"] = lists["from"]
    if not lists["reply-to"]:
        lists["reply-to"] = lists["from"]
    fields = [
        _s(_unfold(date) if date is not None else None, utf8),
        _s(_unfold(subject) if subject is not None else None, utf8),
        *(_address_list(lists[n], utf8) for n in ("from", "sender", "reply-to", "to", "cc", "bcc")),
        _s(_unfold(in_reply_to).strip() if in_reply_to else None, utf8),
        _s(_unfold(message_id).strip() if message_id else None, utf8),
    ]
    return b"(" + b" ".join(fields) + b")"


# ---- BODY / BODYSTRUCTURE -------------------------------------------------------------------


def _param_value(value: str, utf8: bool) -> bytes:
    # The model keeps RFC 2231-decoded values. Without UTF8=ACCEPT a non-ASCII value goes out
    # as an RFC 2047 encoded-word, as Gmail and Cyrus do, which clients already decode.
    if not utf8 and not value.isascii():
        value = "=?UTF-8?B?" + base64.b64encode(value.encode("utf-8")).decode("ascii") + "?="
    return w.string(value, utf8)


def _params(params: Any, utf8: bool, extra: tuple[tuple[str, str], ...] = ()) -> bytes:
    items = list(params) + list(extra)
    if not items:
        return b"NIL"
    return (
        b"("
        + b" ".join(w.string(k.upper(), utf8) + b" " + _param_value(v, utf8) for k, v in items)
        + b")"
    )


def _disposition(part: Any, utf8: bool) -> bytes:
    if not part.disposition:
        return b"NIL"
    return (
        b"("
        + w.string(part.disposition.upper(), utf8)
        + b" "
        + _params(part.disposition_params, utf8)
        + b")"
    )


def _language(part: Any, utf8: bool) -> bytes:
    langs = tuple(part.content_language)
    if not langs:
        return b"NIL"
    if len(langs) == 1:
        return w.string(langs[0], utf8)
    return b"(" + b" ".join(w.string(x, utf8) for x in langs) + b")"


def _is_message(part: Any) -> bool:
    return part.content_type in ("message/rfc822", "message/global")


def body_structure(part: Any, extensible: bool = True, utf8: bool = False) -> bytes:
    """``BODYSTRUCTURE`` (extensible=True) or ``BODY`` of a MimePart tree."""
    mtype, _, subtype = part.content_type.partition("/")
    subtype = subtype or "plain"
    if mtype == "multipart":
        children = tuple(part.children)
        if children:
            inner = b"".join(body_structure(c, extensible, utf8) for c in children)
        else:  # RFC 9051 §9 needs 1*body: a broken multipart shows one empty text part
            inner = b'("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 0 0)'
        out = b"(" + inner + b" " + w.string(subtype.upper(), utf8)
        if extensible:
            out += (
                b" "
                + _params(part.params, utf8)
                + b" "
                + _disposition(part, utf8)
                + b" "
                + _language(part, utf8)
                + b" "
                + _s(part.content_location, utf8)
            )
        return out + b")"
    extra: tuple[tuple[str, str], ...] = ()
    if mtype == "text" and not any(k == "charset" for k, _ in part.params):
        extra = (("charset", "US-ASCII"),)  # RFC 2045 §5.2 default
    fields = [
        w.string(mtype.upper(), utf8),
        w.string(subtype.upper(), utf8),
        _params(part.params, utf8, extra),
        _s(part.content_id, utf8),
        _s(part.content_description, utf8),
        w.string((part.content_transfer_encoding or "7bit").upper(), utf8),
        b"%d" % part.size,
    ]
    if _is_message(part):
        embedded = part.embedded
        inner_part = part.children[0] if part.children else None
        fields.append(
            envelope(embedded, utf8)
            if embedded is not None
            else b"(NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL)"
        )
        fields.append(
            body_structure(inner_part, extensible, utf8)
            if inner_part is not None
            else b'("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 0 0)'
        )
        fields.append(b"%d" % part.lines)
    elif mtype == "text":
        fields.append(b"%d" % part.lines)
    if extensible:
        fields += [
            _s(part.content_md5, utf8),
            _disposition(part, utf8),
            _language(part, utf8),
            _s(part.content_location, utf8),
        ]
    return b"(" + b" ".join(fields) + b")"
