"""Serializing replies (RFC 5321 §4.2) with enhanced status codes (RFC 2034, RFC 3463)."""

from __future__ import annotations

import re

from ._events import Reply
from ._util import SmtpProtocolError

_enhanced_re = re.compile(r"([245])\.([0-9]{1,3})\.([0-9]{1,3})")
MAX_REPLY_LINE = 512  # RFC 5321 §4.5.3.1.5, incl. CRLF


def write_reply(reply: Reply) -> bytes:
    """``250-first\\r\\n250 last\\r\\n``; every line carries the enhanced code if given."""
    if not 200 <= reply.code <= 599:
        raise SmtpProtocolError(f"reply code out of range: {reply.code}")
    prefix = str(reply.code)
    if reply.enhanced is not None:
        m = _enhanced_re.fullmatch(reply.enhanced)
        # RFC 3463 §2: the class digit must match the reply's first digit
        if m is None or m.group(1) != prefix[0]:
            raise SmtpProtocolError(f"bad enhanced status code {reply.enhanced!r} for {reply.code}")
        prefix_text = reply.enhanced + " "
    else:
        prefix_text = ""
    lines = reply.lines
    if not lines:
        raise SmtpProtocolError("a reply needs at least one line")
    out = []
    last = len(lines) - 1
    for i, line in enumerate(lines):
        if "\r" in line or "\n" in line:
            # Our own output must never be able to inject a reply line.
            raise SmtpProtocolError("CR or LF in reply text")
        separator = "-" if i < last else " "
        encoded = f"{prefix}{separator}{prefix_text}{line}".encode()
        if len(encoded) > MAX_REPLY_LINE - 2:
            # Replies often echo client input (addresses, names); cut rather than fail,
            # on a UTF-8 character boundary.
            encoded = encoded[: MAX_REPLY_LINE - 2].decode("utf-8", "ignore").encode()
        out.append(encoded + b"\r\n")
    return b"".join(out)
