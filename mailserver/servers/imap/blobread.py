"""Message headers for FETCH ENVELOPE without a parse per message and a thread hop per blob.

Profiled (FETCH 1:10 ENVELOPE): most of the CPU went to ``parse_message`` of each header
(the whole summary: decoded addresses, dates, MIME tree) and to one ``asyncio.to_thread``
per blob read. ENVELOPE only needs the raw values of ten header fields, and the stored
structure already says where the header ends; so the headers of a batch of messages are read
with one ``BlobStore.heads`` call (one thread hop for files, one read transaction for inline
blobs), and only split into fields.

``EnvelopeCache`` keeps encoded ENVELOPEs per blob for the daemon (the role of Dovecot's
index cache): a message never changes, so its ENVELOPE is computed once while it is in use.
Bounded by entries (each a few hundred bytes).
"""

from __future__ import annotations

from collections import OrderedDict

from mailserver.message.headers import header_text, split_header_fields
from mailserver.message.mime import ENVELOPE_FIELDS
from mailserver.message.model import MimePart, ParsedMessage


async def blob_headers(blobs, wanted: list[tuple[str, int]]) -> dict[str, bytes]:
    """blob id → its first ``header_end`` octets, for (blob id, header_end) pairs."""
    return await blobs.heads(wanted)


def envelope_message(header: bytes, size: int, structure: MimePart) -> ParsedMessage:
    """What ``protocols.imap.envelope`` reads from a ParsedMessage: the raw envelope fields
    (first occurrence of each, as ``mime.header_summary`` keeps them) and the structure."""
    first: dict[str, bytes] = {}
    for name, value in split_header_fields(header):
        if name in ENVELOPE_FIELDS and name not in first:
            first[name] = value
    env = tuple((n, header_text(first[n])) for n in ENVELOPE_FIELDS if n in first)
    return ParsedMessage(size=size, header_end=structure.header_end, structure=structure,
                         envelope_raw=env)


class EnvelopeCache:
    """LRU of encoded ENVELOPEs, keyed by (blob id, UTF-8 on)."""

    def __init__(self, max_entries: int = 10000) -> None:
        self.max_entries = max_entries
        self._data: OrderedDict[tuple[str, bool], bytes] = OrderedDict()

    def get(self, key: tuple[str, bool]) -> bytes | None:
        value = self._data.get(key)
        if value is not None:
            self._data.move_to_end(key)
        return value

    def __contains__(self, key: tuple[str, bool]) -> bool:
        return key in self._data

    def put(self, key: tuple[str, bool], value: bytes) -> None:
        self._data[key] = value
        self._data.move_to_end(key)
        while len(self._data) > self.max_entries:
            self._data.popitem(last=False)
