"""The values parse_message produces (see the package docstring for the contract)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Address:
    """One mailbox of an address header. ``email`` is "" for a group name placeholder."""

    name: str
    email: str

    def to_dict(self) -> dict[str, str | None]:
        # JMAP EmailAddress (RFC 8621 §4.1.2.3): name is null when absent
        return {"name": self.name or None, "email": self.email}


@dataclass(frozen=True, slots=True)
class MimePart:
    """One node of the MIME tree. ``part_id`` is the IMAP section number ("" for the root)."""

    part_id: str
    header_start: int
    header_end: int
    body_start: int
    body_end: int
    content_type: str  # lowercase "type/subtype"; defaulted per RFC 2045 §5.2
    params: tuple[tuple[str, str], ...] = ()  # lowercase names, RFC 2231 decoded values
    disposition: str | None = None  # lowercase "inline" / "attachment"
    disposition_params: tuple[tuple[str, str], ...] = ()
    content_id: str | None = None
    content_description: str | None = None
    content_transfer_encoding: str = "7bit"  # lowercase
    content_language: tuple[str, ...] = ()
    content_location: str | None = None
    content_md5: str | None = None
    charset: str | None = None
    filename: str | None = None  # decoded (RFC 2231 / RFC 2047)
    lines: int = 0  # body line count (IMAP BODYSTRUCTURE for text/* and message/rfc822)
    children: tuple["MimePart", ...] = ()
    # message/rfc822: the encapsulated message's header summary (its MIME tree is children[0])
    embedded: "ParsedMessage | None" = None

    @property
    def size(self) -> int:
        return self.body_end - self.body_start

    def param(self, name: str) -> str | None:
        for key, value in self.params:
            if key == name:
                return value
        return None

    def walk(self):
        """Yield this part and every descendant, depth first, in document order."""
        yield self
        for child in self.children:
            yield from child.walk()

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "id": self.part_id,
            "hs": self.header_start,
            "he": self.header_end,
            "bs": self.body_start,
            "be": self.body_end,
            "type": self.content_type,
            "lines": self.lines,
            "cte": self.content_transfer_encoding,
        }
        optional = {
            "params": [list(p) for p in self.params],
            "disp": self.disposition,
            "dparams": [list(p) for p in self.disposition_params],
            "cid": self.content_id,
            "desc": self.content_description,
            "lang": list(self.content_language),
            "loc": self.content_location,
            "md5": self.content_md5,
            "charset": self.charset,
            "name": self.filename,
            "parts": [c.to_dict() for c in self.children],
            "msg": self.embedded.summary_dict() if self.embedded is not None else None,
        }
        d.update({k: v for k, v in optional.items() if v})
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "MimePart":
        return cls(
            part_id=d["id"],
            header_start=d["hs"],
            header_end=d["he"],
            body_start=d["bs"],
            body_end=d["be"],
            content_type=d["type"],
            params=tuple(tuple(p) for p in d.get("params", ())),  # type: ignore[misc]
            disposition=d.get("disp"),
            disposition_params=tuple(tuple(p) for p in d.get("dparams", ())),  # type: ignore[misc]
            content_id=d.get("cid"),
            content_description=d.get("desc"),
            content_transfer_encoding=d.get("cte", "7bit"),
            content_language=tuple(d.get("lang", ())),
            content_location=d.get("loc"),
            content_md5=d.get("md5"),
            charset=d.get("charset"),
            filename=d.get("name"),
            lines=d.get("lines", 0),
            children=tuple(cls.from_dict(c) for c in d.get("parts", ())),
            embedded=ParsedMessage.from_summary_dict(d["msg"]) if d.get("msg") else None,
        )


def _addrs(items: tuple[Address, ...]) -> list[list[str]]:
    return [[a.name, a.email] for a in items]


def _from_addrs(items: list[list[str]]) -> tuple[Address, ...]:
    return tuple(Address(n, e) for n, e in items)


@dataclass(frozen=True, slots=True)
class ParsedMessage:
    """Everything the store keeps about a message, computed in one parse."""

    size: int
    header_end: int
    subject: str = ""
    base_subject: str = ""
    from_: tuple[Address, ...] = ()
    sender: tuple[Address, ...] = ()
    reply_to: tuple[Address, ...] = ()
    to: tuple[Address, ...] = ()
    cc: tuple[Address, ...] = ()
    bcc: tuple[Address, ...] = ()
    sent_at: int | None = None
    date_header: str | None = None  # raw Date: value (IMAP ENVELOPE shows it verbatim)
    message_id: str = ""
    in_reply_to: tuple[str, ...] = ()
    references: tuple[str, ...] = ()
    preview: str = ""
    has_attachment: bool = False
    search_text: str = ""
    structure: MimePart | None = None
    # raw (undecoded) envelope header values for IMAP ENVELOPE, keyed by lowercase name
    envelope_raw: tuple[tuple[str, str], ...] = field(default=())

    def structure_json(self) -> str:
        return json.dumps(self.structure.to_dict() if self.structure else {}, separators=(",", ":"))

    def summary_dict(self) -> dict[str, Any]:
        """The header summary (no body text, no tree) for nesting inside message/rfc822."""
        return {
            "size": self.size,
            "he": self.header_end,
            "subject": self.subject,
            "from": _addrs(self.from_),
            "sender": _addrs(self.sender),
            "reply_to": _addrs(self.reply_to),
            "to": _addrs(self.to),
            "cc": _addrs(self.cc),
            "bcc": _addrs(self.bcc),
            "sent_at": self.sent_at,
            "date": self.date_header,
            "message_id": self.message_id,
            "in_reply_to": list(self.in_reply_to),
            "env": [list(p) for p in self.envelope_raw],
        }

    @classmethod
    def from_summary_dict(cls, d: dict[str, Any]) -> "ParsedMessage":
        return cls(
            size=d.get("size", 0),
            header_end=d.get("he", 0),
            subject=d.get("subject", ""),
            from_=_from_addrs(d.get("from", [])),
            sender=_from_addrs(d.get("sender", [])),
            reply_to=_from_addrs(d.get("reply_to", [])),
            to=_from_addrs(d.get("to", [])),
            cc=_from_addrs(d.get("cc", [])),
            bcc=_from_addrs(d.get("bcc", [])),
            sent_at=d.get("sent_at"),
            date_header=d.get("date"),
            message_id=d.get("message_id", ""),
            in_reply_to=tuple(d.get("in_reply_to", ())),
            envelope_raw=tuple(tuple(p) for p in d.get("env", ())),  # type: ignore[misc]
        )
