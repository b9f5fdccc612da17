"""8BITMIME downgrade (RFC 6152 §3): a message with 8-bit content to a server without 8BITMIME
is re-encoded (quoted-printable for text parts, base64 otherwise) instead of being sent as is.

Only bodies can be converted: 8-bit header bytes (which need SMTPUTF8 anyway) make the message
undeliverable to that server (``DowngradeError`` → bounce 5.6.3). Re-encoding breaks a DKIM
body hash; signing happens before queuing, so such peers may see a failing signature — the
same trade-off Postfix makes.
"""

from __future__ import annotations

import base64
import email
import email.policy
import quopri

__all__ = ["DowngradeError", "has_8bit", "downgrade_8bit"]

_POLICY = email.policy.compat32.clone(linesep="\r\n")


class DowngradeError(Exception):
    pass


def has_8bit(raw: bytes) -> bool:
    return not raw.isascii()


def downgrade_8bit(raw: bytes) -> bytes:
    end = raw.find(b"\r\n\r\n")
    if not raw[: end if end >= 0 else len(raw)].isascii():
        raise DowngradeError("8-bit header bytes cannot be sent without SMTPUTF8")
    msg = email.message_from_bytes(raw, policy=_POLICY)
    for part in msg.walk():
        if part.is_multipart():
            continue
        payload = part.get_payload(decode=True)
        if payload is None:
            continue
        cte = (part.get("Content-Transfer-Encoding") or "7bit").strip().lower()
        if cte in ("quoted-printable", "base64") or payload.isascii():
            continue
        if part.get_content_maintype() == "text":
            encoded = quopri.encodestring(payload.replace(b"\r\n", b"\n")).decode("ascii")
            new_cte = "quoted-printable"
        else:
            encoded = base64.encodebytes(payload).decode("ascii")
            new_cte = "base64"
        del part["Content-Transfer-Encoding"]
        part["Content-Transfer-Encoding"] = new_cte
        part.set_payload(encoded)
    out = msg.as_bytes(policy=_POLICY)
    if not out.isascii():
        raise DowngradeError("the message could not be converted to 7-bit")
    return out
