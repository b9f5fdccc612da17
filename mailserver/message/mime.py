"""The byte-level MIME scanner: raw bytes → ``MimePart`` tree with byte-exact offsets.

Owns part boundaries and numbering, content headers of each part, and decoding a part's body
(``decode_body``, ``part_text``). No ``email`` package: boundaries are found with
``bytes.find`` and nothing outside text parts is ever decoded.

Offsets (all absolute into the outer raw bytes):

- ``raw[header_start:header_end]`` is the part's header block including its terminating blank
  line; a part that starts with an empty line has that line as its header block, a part that
  does not start with a header field has an empty header block (``header_end == body_start ==
  header_start``); ``body_start == header_end`` always.
- In a multipart, a child's body ends before the CRLF (or bare LF) that precedes the next
  delimiter line: RFC 2046 §5.1.1, that line break belongs to the delimiter.
- A missing close delimiter ends the last part at the end of the enclosing body; a multipart
  whose boundary never appears (or that has none) gets one synthetic text/plain child with no
  headers spanning its whole body, so IMAP always sees at least one part (RFC 9051 §7.5.2
  body-type-mpart needs 1*body).

Numbering (IMAP section numbers, RFC 9051 §6.4.5): the top-level root is ``""``; children of
a multipart are ``N`` / ``parent.N``. A message/rfc822 (or message/global) part ``X`` has
``embedded`` (the encapsulated header summary) and ``children == (root,)`` where ``root`` is
the encapsulated message's root part, which carries the same id ``X`` (``BODY[X.HEADER]`` and
``BODY[X.TEXT]`` address it); if that root is a multipart its children are ``X.1``, ``X.2``….
When a message (top-level or encapsulated) is not multipart, IMAP section ``1`` (resp.
``X.1``) is that root's body: IMAP code maps it, there is no separate child node.

Values are kept as the header has them where IMAP shows them verbatim: ``content_id``
(with its angle brackets), ``content_description``, ``content_location``, ``content_md5``;
``params`` and ``filename`` are RFC 2231 / RFC 2047 decoded; ``charset`` is lowercased and
defaults to "us-ascii" for text/*; ``params`` gets ``charset=us-ascii`` only when the part has
no (or an invalid) Content-Type and defaults to text/plain.

Limits: nesting deeper than ``MAX_DEPTH`` multiparts/messages is kept as a leaf; after
``MAX_PARTS`` parts, further delimiters of a multipart are ignored (the rest stays in its last
part).
"""

from __future__ import annotations

import binascii

from mailserver.message.headers import (
    b64decode_lenient,
    base_subject,
    decode_bytes,
    decode_rfc2047,
    find_header_end,
    header_text,
    parse_addresses,
    parse_date,
    parse_msg_ids,
    parse_params,
    split_header_fields,
)
from mailserver.message.model import MimePart, ParsedMessage

MAX_DEPTH = 64
MAX_PARTS = 5000

# IMAP ENVELOPE fields, RFC 9051 §7.5.2, in envelope order
ENVELOPE_FIELDS = (
    "date",
    "subject",
    "from",
    "sender",
    "reply-to",
    "to",
    "cc",
    "bcc",
    "in-reply-to",
    "message-id",
)
_ENCAPSULATING = ("message/rfc822", "message/global")


class _Budget:
    """Per-parse part counter (passed down, never module state)."""

    __slots__ = ("parts",)

    def __init__(self) -> None:
        self.parts = 0


def first_fields(fields: list[tuple[str, bytes]]) -> dict[str, bytes]:
    """First occurrence of each header field."""
    d: dict[str, bytes] = {}
    for name, value in fields:
        if name not in d:
            d[name] = value
    return d


def header_summary(
    fields: dict[str, bytes], size: int, header_end: int, full: bool
) -> ParsedMessage:
    """The header part of a ``ParsedMessage``. ``full`` adds the fields that ``summary_dict``
    does not carry (base subject, references), so an encapsulated message's summary
    round-trips exactly through JSON."""

    def text(name: str) -> str | None:
        v = fields.get(name)
        return None if v is None else header_text(v)

    def addrs(name: str):
        v = text(name)
        return parse_addresses(v) if v else ()

    subject_raw = text("subject")
    subject = decode_rfc2047(subject_raw) if subject_raw else ""
    date = text("date")
    mid = parse_msg_ids(text("message-id") or "")
    envelope = tuple((n, header_text(fields[n])) for n in ENVELOPE_FIELDS if n in fields)
    return ParsedMessage(
        size=size,
        header_end=header_end,
        subject=subject,
        base_subject=base_subject(subject) if full else "",
        from_=addrs("from"),
        sender=addrs("sender"),
        reply_to=addrs("reply-to"),
        to=addrs("to"),
        cc=addrs("cc"),
        bcc=addrs("bcc"),
        sent_at=parse_date(date) if date else None,
        date_header=date,
        message_id=mid[0] if mid else "",
        in_reply_to=parse_msg_ids(text("in-reply-to") or ""),
        references=parse_msg_ids(text("references") or "") if full else (),
        envelope_raw=envelope,
    )


def _lines(raw: bytes, start: int, end: int) -> int:
    """Body line count: LFs, plus a final line without one (IMAP body-fld-lines)."""
    if end <= start:
        return 0
    n = raw.count(b"\n", start, end)
    if raw[end - 1] != 10:
        n += 1
    return n


def _opt(fields: dict[str, bytes], name: str) -> str | None:
    v = fields.get(name)
    if v is None:
        return None
    t = header_text(v)
    return t or None


def build_part(
    raw: bytes,
    start: int,
    end: int,
    part_id: str,
    default_type: str,
    depth: int,
    budget: _Budget,
    top_level: bool = False,
    fields: list[tuple[str, bytes]] | None = None,
    header_end: int | None = None,
) -> MimePart:
    """Parse the entity in ``raw[start:end]`` (headers + body) into a ``MimePart``."""
    budget.parts += 1
    if header_end is None:
        header_end = find_header_end(raw, start, end, allow_from_line=top_level)
    if fields is None:
        fields = split_header_fields(raw[start:header_end]) if header_end > start else []
    content: dict[str, bytes] = {}
    for name, value in fields:
        if name.startswith("content-") and name not in content:
            content[name] = value
    body_start = header_end

    # RFC 2045 §5.2: no or unparseable Content-Type → text/plain; charset=us-ascii
    ctype = default_type
    params: tuple[tuple[str, str], ...] = ()
    ct_raw = content.get("content-type")
    if ct_raw is not None:
        main, params = parse_params(header_text(ct_raw))
        typ, _, sub = main.partition("/")
        typ, sub = typ.strip(), sub.strip()
        if typ and sub and " " not in typ and " " not in sub:
            ctype = f"{typ}/{sub}"
        else:
            ctype = "text/plain"
            params = (("charset", "us-ascii"),)
    elif default_type == "text/plain":
        params = (("charset", "us-ascii"),)
    charset = None
    for k, v in params:
        if k == "charset":
            charset = v.strip().lower() or None
            break
    if charset is None and ctype.startswith("text/"):
        charset = "us-ascii"

    disposition = None
    dparams: tuple[tuple[str, str], ...] = ()
    cd_raw = content.get("content-disposition")
    if cd_raw is not None:
        disp, dparams = parse_params(header_text(cd_raw))
        disposition = disp or None
    filename = None
    for k, v in dparams:
        if k == "filename":
            filename = v
            break
    if filename is None:
        for k, v in params:
            if k == "name":
                filename = v
                break
    # RFC 2045 §6.1: default 7bit
    cte = (_opt(content, "content-transfer-encoding") or "7bit").lower()
    lang_raw = _opt(content, "content-language")
    language = tuple(t.strip() for t in lang_raw.split(",") if t.strip()) if lang_raw else ()

    children: tuple[MimePart, ...] = ()
    embedded = None
    lines = 0
    if ctype.startswith("multipart/"):
        # past MAX_DEPTH the boundary is ignored: the body becomes one synthetic leaf
        boundary = next((v for k, v in params if k == "boundary"), "") if depth < MAX_DEPTH else ""
        child_default = "message/rfc822" if ctype == "multipart/digest" else "text/plain"
        children = _multipart_children(
            raw, body_start, end, boundary, part_id, child_default, depth, budget
        )
    elif ctype.startswith("text/"):
        lines = _lines(raw, body_start, end)
    elif ctype in _ENCAPSULATING:
        lines = _lines(raw, body_start, end)
        # an encoded message/rfc822 (forbidden by RFC 2046 §5.2.1, seen anyway) stays a leaf
        if depth < MAX_DEPTH and cte in ("7bit", "8bit", "binary"):
            inner_he = find_header_end(raw, body_start, end)
            inner_fields = split_header_fields(raw[body_start:inner_he])
            embedded = header_summary(
                first_fields(inner_fields), end - body_start, inner_he, full=False
            )
            root = build_part(
                raw,
                body_start,
                end,
                part_id,
                "text/plain",
                depth + 1,
                budget,
                fields=inner_fields,
                header_end=inner_he,
            )
            children = (root,)

    return MimePart(
        part_id=part_id,
        header_start=start,
        header_end=header_end,
        body_start=body_start,
        body_end=end,
        content_type=ctype,
        params=params,
        disposition=disposition,
        disposition_params=dparams,
        content_id=_opt(content, "content-id"),
        content_description=_opt(content, "content-description"),
        content_transfer_encoding=cte,
        content_language=language,
        content_location=_opt(content, "content-location"),
        content_md5=_opt(content, "content-md5"),
        charset=charset,
        filename=filename or None,
        lines=lines,
        children=children,
        embedded=embedded,
    )


def _delimiters(raw: bytes, start: int, end: int, boundary: bytes):
    """Yield (line_start, after_line, is_close) for each delimiter line in raw[start:end].

    RFC 2046 §5.1.1: a delimiter is "--" boundary at the beginning of a line, optionally
    "--" (close), then transport padding (WSP) up to the line end.
    """
    dash = b"--" + boundary
    pos = start
    while pos < end:
        i = raw.find(dash, pos, end)
        if i < 0:
            return
        pos = i + 1
        if i != start and raw[i - 1] != 10:
            continue
        j = i + len(dash)
        close = raw.startswith(b"--", j) and j + 2 <= end
        k = j + 2 if close else j
        while k < end and raw[k] in (32, 9):
            k += 1
        if k >= end:
            after = end
        elif raw[k] == 10:
            after = k + 1
        elif raw[k] == 13 and (k + 1 >= end or raw[k + 1] == 10):
            after = min(k + 2, end)
        else:
            continue  # a longer boundary that merely starts with ours
        yield i, after, close
        if close:
            return
        pos = after


def _before_delimiter(raw: bytes, i: int, floor: int) -> int:
    """End of the content preceding a delimiter line at ``i`` (drop the CRLF / LF)."""
    if i - 2 >= floor and raw[i - 2 : i] == b"\r\n":
        return i - 2
    if i - 1 >= floor and raw[i - 1] == 10:
        return i - 1
    return i


def _multipart_children(
    raw: bytes,
    start: int,
    end: int,
    boundary: str,
    part_id: str,
    child_default: str,
    depth: int,
    budget: _Budget,
) -> tuple[MimePart, ...]:
    prefix = f"{part_id}." if part_id else ""
    spans: list[tuple[int, int]] = []
    # an 8-bit boundary was decoded as UTF-8 or, failing that, latin-1: try both spellings
    spellings = [boundary.encode("utf-8")] if boundary else []
    if not boundary.isascii():
        spellings.append(boundary.encode("latin-1", "replace"))
    for bnd in spellings:
        part_start = -1
        for line_start, after, close in _delimiters(raw, start, end, bnd):
            if part_start >= 0:
                spans.append((part_start, _before_delimiter(raw, line_start, part_start)))
                if budget.parts + len(spans) >= MAX_PARTS:
                    part_start = -1
                    break
            part_start = -1 if close else after
        if part_start >= 0:  # no close delimiter: the last part runs to the end
            spans.append((part_start, end))
        elif spans and budget.parts + len(spans) >= MAX_PARTS:
            s0, _ = spans[-1]
            spans[-1] = (s0, end)
        if spans:
            break
    if not spans:
        # boundary missing or never seen: one header-less text/plain part over the body
        budget.parts += 1
        return (
            MimePart(
                part_id=f"{prefix}1",
                header_start=start,
                header_end=start,
                body_start=start,
                body_end=end,
                content_type="text/plain",
                params=(("charset", "us-ascii"),),
                charset="us-ascii",
                lines=_lines(raw, start, end),
            ),
        )
    return tuple(
        build_part(raw, s, e, f"{prefix}{n}", child_default, depth + 1, budget)
        for n, (s, e) in enumerate(spans, 1)
    )


# ---------------------------------------------------------------------------------------------
# body decoding


def decode_transfer(data: bytes, cte: str) -> bytes:
    """Undo a Content-Transfer-Encoding (RFC 2045 §6); unknown encodings pass through."""
    if cte == "base64":
        return b64decode_lenient(data)
    if cte == "quoted-printable":
        try:
            return binascii.a2b_qp(data)
        except (binascii.Error, ValueError):
            return data
    return data


def decode_body(raw: bytes, part: MimePart, limit: int | None = None) -> bytes:
    """The part's body with its transfer encoding removed (at most ``limit`` raw bytes read)."""
    end = part.body_end if limit is None else min(part.body_end, part.body_start + limit)
    return decode_transfer(raw[part.body_start : end], part.content_transfer_encoding)


def part_text(raw: bytes, part: MimePart, limit: int | None = None) -> str:
    """A text part's body as str: transfer encoding and charset decoded, CRLF → LF."""
    text = decode_bytes(decode_body(raw, part, limit), part.charset)
    if "\r" in text:
        text = text.replace("\r\n", "\n")
    return text
