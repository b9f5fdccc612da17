"""Building the RFC 5322 message of an Email/set create (RFC 8621 §4.6) from its properties:
``bodyStructure``, or ``textBody``/``htmlBody``/``attachments``, with ``bodyValues`` and blobs;
addresses, subject and ``header:`` values are checked (no header injection) and RFC 2047-encoded
when they are not ASCII. ``Message-ID`` and ``Date`` are added when missing.
"""

from __future__ import annotations

import datetime as dt
import email.encoders
import re
import uuid
from email.mime.base import MIMEBase
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.policy import SMTP
from email.utils import format_datetime, formataddr
from typing import Any

from mailserver.servers.jmap.errors import SetFailure as _SetFailure
from mailserver.servers.jmap.errors import set_error

_ADDRESS_HEADERS = {"from": "From", "sender": "Sender", "replyTo": "Reply-To", "to": "To",
                    "cc": "Cc", "bcc": "Bcc"}


def _address_list(value: Any, prop: str) -> str:
    if not isinstance(value, list) or not all(
            isinstance(a, dict) and isinstance(a.get("email"), str) for a in value):
        raise _SetFailure(set_error("invalidProperties", properties=[prop]))
    out = []
    for a in value:
        if any(c in a["email"] for c in "\r\n<>,") or (
                a.get("name") is not None and not isinstance(a.get("name"), str)):
            raise _SetFailure(set_error("invalidProperties", properties=[prop]))
        out.append(formataddr((a.get("name") or "", a["email"])))
    return ", ".join(out)


def _encoded(value: str) -> str:
    """A header value as ASCII: RFC 2047 encoded-words when it is not."""
    if value.isascii():
        return value
    from email.header import Header

    return Header(value, "utf-8").encode()


async def build_message(obj: dict[str, Any], read_blob, hostname: str) -> bytes:
    allowed = {"mailboxIds", "keywords", "receivedAt", "from", "sender", "replyTo", "to", "cc",
               "bcc", "subject", "sentAt", "messageId", "inReplyTo", "references",
               "bodyStructure", "textBody", "htmlBody", "attachments", "bodyValues"}
    bad = [k for k in obj if k not in allowed and not k.startswith("header:")]
    if bad:
        raise _SetFailure(set_error("invalidProperties", properties=bad))
    values = obj.get("bodyValues") or {}
    if not isinstance(values, dict):
        raise _SetFailure(set_error("invalidProperties", properties=["bodyValues"]))

    async def leaf(part: dict[str, Any], default_type: str) -> MIMEBase:
        if not isinstance(part, dict):
            raise _SetFailure(set_error("invalidProperties", properties=["bodyStructure"]))
        ctype = part.get("type") or default_type
        if not isinstance(ctype, str) or "/" not in ctype:
            raise _SetFailure(set_error("invalidProperties", properties=["type"]))
        if ctype.startswith("multipart/"):
            sub = MIMEMultipart(ctype.split("/", 1)[1])
            for child in part.get("subParts") or []:
                sub.attach(await leaf(child, "text/plain"))
            return sub
        if part.get("partId") is not None:
            v = values.get(part["partId"])
            if not isinstance(v, dict) or not isinstance(v.get("value"), str):
                raise _SetFailure(set_error("invalidProperties", "partId without bodyValue",
                                            properties=["bodyValues"]))
            if not ctype.startswith("text/"):
                raise _SetFailure(set_error("invalidProperties", properties=["type"]))
            m: MIMEBase = MIMEText(v["value"], ctype.split("/", 1)[1], "utf-8")
        elif part.get("blobId") is not None:
            data = await read_blob(part["blobId"])
            if data is None:
                raise _SetFailure(set_error("blobNotFound", notFound=[part["blobId"]]))
            main, sub_t = ctype.split("/", 1)
            m = MIMEBase(main, sub_t)
            m.set_payload(data)
            email.encoders.encode_base64(m)
        else:
            raise _SetFailure(set_error("invalidProperties", "a body part needs partId or "
                                        "blobId", properties=["bodyStructure"]))
        if part.get("name") or part.get("disposition"):
            disp = part.get("disposition") or "attachment"
            if part.get("name"):
                m.add_header("Content-Disposition", disp, filename=part["name"])
            else:
                m.add_header("Content-Disposition", disp)
        if part.get("cid"):
            m.add_header("Content-ID", f"<{part['cid']}>")
        return m

    if obj.get("bodyStructure") is not None:
        body = await leaf(obj["bodyStructure"], "text/plain")
    else:
        text_parts = obj.get("textBody") or []
        html_parts = obj.get("htmlBody") or []
        attachments = obj.get("attachments") or []
        if not all(isinstance(x, list) for x in (text_parts, html_parts, attachments)) or \
                len(text_parts) > 1 or len(html_parts) > 1:
            raise _SetFailure(set_error("invalidProperties", "textBody/htmlBody take at most "
                                        "one part", properties=["textBody", "htmlBody"]))
        alts = [await leaf(p, "text/plain") for p in text_parts] + \
               [await leaf(p, "text/html") for p in html_parts]
        if not alts:
            alts = [MIMEText("", "plain", "utf-8")]
        body = alts[0]
        if len(alts) > 1:
            body = MIMEMultipart("alternative")
            for a in alts:
                body.attach(a)
        if attachments:
            mixed = MIMEMultipart("mixed")
            mixed.attach(body)
            for a in attachments:
                mixed.attach(await leaf(a, "application/octet-stream"))
            body = mixed
    for prop, header in _ADDRESS_HEADERS.items():
        if obj.get(prop) is not None:
            body[header] = _address_list(obj[prop], prop)
    subject = obj.get("subject")
    if subject is not None:
        if not isinstance(subject, str) or "\n" in subject or "\r" in subject:
            raise _SetFailure(set_error("invalidProperties", properties=["subject"]))
        body["Subject"] = _encoded(subject)
    sent = obj.get("sentAt")
    when = dt.datetime.now(dt.timezone.utc)
    if sent is not None:
        try:
            when = dt.datetime.fromisoformat(str(sent).replace("Z", "+00:00"))
        except ValueError:
            raise _SetFailure(set_error("invalidProperties", properties=["sentAt"])) from None
    body["Date"] = format_datetime(when)
    for prop, header in (("messageId", "Message-ID"), ("inReplyTo", "In-Reply-To"),
                         ("references", "References")):
        v = obj.get(prop)
        if v is None:
            continue
        if not isinstance(v, list) or not all(isinstance(i, str) and re.fullmatch(
                r"[^\s<>]+@?[^\s<>]*", i) for i in v):
            raise _SetFailure(set_error("invalidProperties", properties=[prop]))
        body[header] = " ".join(f"<{i}>" for i in v)
    if obj.get("messageId") is None:
        body["Message-ID"] = f"<{uuid.uuid4().hex}@{hostname}>"
    for key, v in obj.items():
        if key.startswith("header:"):
            name = key.split(":")[1]
            if (not isinstance(v, str) or "\n" in v.replace("\r\n ", "")
                    or not re.fullmatch(r"[!-9;-~]+", name)):
                raise _SetFailure(set_error("invalidProperties", properties=[key]))
            body[name] = _encoded(v.strip())
    if "MIME-Version" not in body:
        body["MIME-Version"] = "1.0"
    return body.as_bytes(policy=SMTP)
