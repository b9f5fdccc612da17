"""Delivery status notifications: RFC 3464 ``multipart/report; report-type=delivery-status``.

Who gets one (RFC 3461 §4.1, RFC 5321 §6.1): the envelope sender of the original message,
never the null sender (no bounce loops), never about a DSN we generated; ``NOTIFY=NEVER``
suppresses all, an explicit NOTIFY list selects SUCCESS/FAILURE/DELAY; without NOTIFY the
default is FAILURE and DELAY.

What it carries (RFC 3461 §4.3): the whole message for ``RET=FULL`` and, when RET was not
given, for failures; only the headers (``text/rfc822-headers``, RFC 6522) for ``RET=HDRS``
and for delay and success reports. The DSN is queued with the null sender and delivered like
any other message (locally through the ingest path when the sender is ours).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from email.utils import format_datetime, formatdate
from datetime import datetime, timezone

__all__ = ["DsnEntry", "build_dsn", "wants_dsn", "FAILED", "DELAYED", "DELIVERED", "RELAYED"]

FAILED = "failed"
DELAYED = "delayed"
DELIVERED = "delivered"
RELAYED = "relayed"

_SUBJECTS = {
    FAILED: "Undelivered Mail Returned to Sender",
    DELAYED: "Delayed Mail (still being retried)",
    DELIVERED: "Successful Mail Delivery Report",
    RELAYED: "Successful Mail Delivery Report",
}
_NOTIFY_OF = {FAILED: "FAILURE", DELAYED: "DELAY", DELIVERED: "SUCCESS", RELAYED: "SUCCESS"}


@dataclass(frozen=True, slots=True)
class DsnEntry:
    """One per-recipient block of the report (RFC 3464 §2.3)."""

    recipient: str
    action: str  # failed | delayed | delivered | relayed
    status: str  # enhanced status code "5.1.1"
    diagnostic: str = ""  # the remote reply ("550 5.1.1 no such user") or our reason
    remote_mta: str = ""
    orcpt: str | None = None
    last_attempt_at: int | None = None
    will_retry_until: int | None = None


def wants_dsn(sender: str, is_dsn: bool, notify: frozenset[str] | None, action: str) -> bool:
    if not sender or is_dsn:
        return False
    if notify is None:
        return action in (FAILED, DELAYED)
    return _NOTIFY_OF[action] in notify


def _date(ts: int) -> str:
    return format_datetime(datetime.fromtimestamp(ts, timezone.utc))


def _headers_of(raw: bytes) -> bytes:
    end = raw.find(b"\r\n\r\n")
    if end < 0:
        end2 = raw.find(b"\n\n")
        return raw if end2 < 0 else raw[:end2 + 1]
    return raw[:end + 2]


def _one_line(value: str) -> str:
    return " ".join(value.replace("\r", " ").replace("\n", " ").split())


def build_dsn(*, reporting_mta: str, sender: str, original: bytes, entries: Sequence[DsnEntry],
              ret: str | None, envid: str | None, arrival_date: int, now: int | None = None
              ) -> bytes:
    """The DSN message (CRLF line endings) to ``sender`` about ``entries`` (all of one action)
    of the message ``original``."""
    now = int(time.time()) if now is None else now
    action = entries[0].action
    boundary = f"=_dsn_{secrets.token_hex(12)}"
    hostname = reporting_mta
    lines = [
        f"From: Mail Delivery System <MAILER-DAEMON@{hostname}>",
        f"To: <{sender}>",
        f"Subject: {_SUBJECTS[action]}",
        f"Date: {formatdate(now, usegmt=True)}",
        f"Message-ID: <{now}.{secrets.token_hex(8)}@{hostname}>",
        "Auto-Submitted: auto-replied",  # RFC 3834 §5
        "MIME-Version: 1.0",
        f'Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary="{boundary}"',
        "",
        "This is a MIME-encapsulated message.",
        "",
        f"--{boundary}",
        "Content-Type: text/plain; charset=utf-8",
        "Content-Transfer-Encoding: 8bit",
        "",
    ]
    if action == FAILED:
        lines += [f"This is the mail system at host {hostname}.", "",
                  "Your message could not be delivered to one or more recipients.",
                  "It is attached below.", ""]
    elif action == DELAYED:
        lines += [f"This is the mail system at host {hostname}.", "",
                  "Your message could not be delivered yet to the recipients below.",
                  "Delivery will be retried; you do not need to send it again.", ""]
    else:
        lines += [f"This is the mail system at host {hostname}.", "",
                  "Your message was successfully delivered to the recipients below.", ""]
    for e in entries:
        lines.append(f"<{e.recipient}>: {_one_line(e.diagnostic) or e.status}")
    lines += ["", f"--{boundary}", "Content-Type: message/delivery-status", ""]
    # RFC 3464 §2.2: per-message fields
    if envid:
        lines.append(f"Original-Envelope-Id: {_one_line(envid)}")
    lines += [f"Reporting-MTA: dns; {hostname}", f"Arrival-Date: {_date(arrival_date)}"]
    for e in entries:
        lines.append("")
        # RFC 3464 §2.3: per-recipient fields
        if e.orcpt:
            kind, _, addr = e.orcpt.partition(";")
            lines.append(f"Original-Recipient: {kind.strip() or 'rfc822'}; {addr.strip()}")
        lines += [f"Final-Recipient: rfc822; {e.recipient}", f"Action: {e.action}",
                  f"Status: {e.status}"]
        if e.remote_mta:
            lines.append(f"Remote-MTA: dns; {e.remote_mta}")
        if e.diagnostic:
            kind = "smtp" if e.diagnostic[:3].isdigit() else "x-local"
            lines.append(f"Diagnostic-Code: {kind}; {_one_line(e.diagnostic)}")
        if e.last_attempt_at is not None:
            lines.append(f"Last-Attempt-Date: {_date(e.last_attempt_at)}")
        if e.will_retry_until is not None:
            lines.append(f"Will-Retry-Until: {_date(e.will_retry_until)}")
    lines.append("")
    full = ret == "FULL" or (ret is None and action == FAILED)
    body = original if full else _headers_of(original)
    if body.count(b"\n") != body.count(b"\r\n"):
        body = body.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    eight_bit = any(b > 127 for b in body)
    lines += [f"--{boundary}",
              "Content-Type: " + ("message/rfc822" if full else "text/rfc822-headers"),
              f"Content-Transfer-Encoding: {'8bit' if eight_bit else '7bit'}",
              "", ""]
    head = "\r\n".join(lines).encode("utf-8")
    if not body.endswith(b"\r\n"):
        body += b"\r\n"
    return head + body + f"\r\n--{boundary}--\r\n".encode()
