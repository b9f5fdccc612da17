"""Section extraction for FETCH BODY[...] / BINARY[...] (RFC 9051 §6.4.5, RFC 3516).

Works on the raw message bytes plus the ``MimePart`` tree with byte offsets; every result is
a slice (or, for HEADER.FIELDS, a selection of whole header fields) of the original octets.
"""

from __future__ import annotations

import binascii
import re
from typing import Any

from protocols.imap.values import FetchAttribute, Section


class UnknownCteError(Exception):
    """BINARY on a part whose Content-Transfer-Encoding we cannot decode → NO [UNKNOWN-CTE]."""


def _is_multipart(part: Any) -> bool:
    return part.content_type.startswith("multipart/")


def _is_message(part: Any) -> bool:
    return part.content_type in ("message/rfc822", "message/global")


def find_part(root: Any, numbers: tuple[int, ...]) -> Any | None:
    """The MimePart a section-part names, or None. RFC 9051 §6.4.5: in a non-multipart
    message part "1" is the body itself; numbers below a message/rfc822 part address the
    encapsulated message's parts."""
    node = root
    for i, n in enumerate(numbers):
        if i > 0:
            if _is_message(node) and node.children:
                node = node.children[0]  # enter the encapsulated message
            elif not _is_multipart(node):
                return None  # a leaf has no sub-parts
        if _is_multipart(node):
            if not 1 <= n <= len(node.children):
                return None
            node = node.children[n - 1]
        elif n != 1:
            return None
    return node


_FIELD_START = re.compile(rb"([^\s:]+)[ \t]*:")


def _header_fields(block: bytes) -> list[tuple[bytes, bytes]]:
    """Split a header block into (upper-case name, field octets incl. folding and CRLF)."""
    lines = block.splitlines(keepends=True)
    fields: list[tuple[bytes, bytes]] = []
    for line in lines:
        if line in (b"\r\n", b"\n"):
            break
        if line[:1] in (b" ", b"\t") and fields:
            name, data = fields[-1]
            fields[-1] = (name, data + line)
            continue
        m = _FIELD_START.match(line)
        fields.append((m.group(1).upper() if m else b"", line))
    return fields


def filter_header(block: bytes, names: tuple[str, ...], exclude: bool = False) -> bytes:
    """HEADER.FIELDS / HEADER.FIELDS.NOT: the matching fields (names case-insensitive,
    folding kept, original order) followed by the blank line (RFC 9051 §6.4.5)."""
    wanted = {n.upper().encode("ascii", "replace") for n in names}
    out = [data for name, data in _header_fields(block) if name and ((name in wanted) != exclude)]
    # a last field without a line end still gets one so the blank line stays a blank line
    if out and not out[-1].endswith(b"\n"):
        out[-1] += b"\r\n"
    return b"".join(out) + b"\r\n"


def section_bytes(raw: bytes, root: Any, section: Section) -> bytes | None:
    """Octets of ``BODY[section]`` (None when the part does not exist: answer NIL / empty)."""
    if not section.part and section.text is None:
        return raw
    node = find_part(root, section.part) if section.part else root
    if node is None:
        return None
    text = section.text
    if text is None:
        return raw[node.body_start : node.body_end]
    if text == "MIME":
        if node is root:  # "1.MIME" of a single-part message: its header
            return raw[root.header_start : root.header_end]
        return raw[node.header_start : node.header_end]
    # HEADER / HEADER.FIELDS / TEXT address a message: the root or a message/rfc822 part
    if section.part:
        if not _is_message(node) or not node.children:
            return None
        node = node.children[0]
    header = raw[node.header_start : node.header_end]
    if text == "HEADER":
        return header
    if text == "TEXT":
        return raw[node.body_start : node.body_end]
    if text == "HEADER.FIELDS":
        return filter_header(header, section.fields)
    if text == "HEADER.FIELDS.NOT":
        return filter_header(header, section.fields, exclude=True)
    return None


def apply_partial(data: bytes, partial: tuple[int, int] | None) -> bytes:
    """``<start.count>``: a start past the end gives the empty string (RFC 9051 §6.4.5)."""
    if partial is None:
        return data
    start, count = partial
    return data[start : start + count]


def decode_cte(body: bytes, cte: str) -> bytes:
    cte = (cte or "7bit").lower()
    if cte in ("7bit", "8bit", "binary"):
        return body
    if cte == "base64":
        cleaned = re.sub(rb"[^A-Za-z0-9+/]", b"", body)
        cleaned = cleaned[: len(cleaned) - len(cleaned) % 4] if len(cleaned) % 4 == 1 else cleaned
        return binascii.a2b_base64(cleaned + b"=" * (-len(cleaned) % 4)) if cleaned else b""
    if cte == "quoted-printable":
        return binascii.a2b_qp(body)
    raise UnknownCteError(cte)


def binary_bytes(raw: bytes, root: Any, section: Section) -> bytes | None:
    """``BINARY[part]``: the decoded content of a leaf (RFC 3516 §4.2). Raises
    UnknownCteError for an encoding we cannot undo; None when the part does not exist."""
    if not section.part:
        return raw
    node = find_part(root, section.part)
    if node is None:
        return None
    body = raw[node.body_start : node.body_end]
    if _is_multipart(node) or _is_message(node):
        return body  # RFC 3516: only leaves are decoded; containers are sent as they are
    return decode_cte(body, node.content_transfer_encoding)


def fetch_section(raw: bytes, root: Any, att: FetchAttribute) -> tuple[str, bytes | None]:
    """(response item name, octets) for BODY[...]/BINARY[...]/BINARY.SIZE/RFC822.* atts.

    For BINARY.SIZE the octets are the decoded content (answer with its length)."""
    if att.name == "RFC822":
        return "RFC822", raw
    if att.name == "RFC822.HEADER":
        return "RFC822.HEADER", raw[root.header_start : root.header_end]
    if att.name == "RFC822.TEXT":
        return "RFC822.TEXT", raw[root.body_start : root.body_end]
    assert att.section is not None
    if att.name in ("BINARY", "BINARY.SIZE"):
        data = binary_bytes(raw, root, att.section)
    else:
        data = section_bytes(raw, root, att.section)
    if data is not None and att.name != "BINARY.SIZE":
        data = apply_partial(data, att.partial)
    return att.response_name(), data
