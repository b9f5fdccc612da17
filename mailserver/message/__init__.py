"""Message parsing: one pass over the raw RFC 5322 bytes into everything the store keeps.

``parse_message(raw)`` never raises on any input: broken MIME, 8-bit headers, missing
boundaries and the like are tolerated the way real clients tolerate them.

Contract used by the store, the ingest path, IMAP and JMAP (names are fixed; the
implementation lives in the modules of this package):

- ``ParsedMessage.subject`` (decoded), ``base_subject`` (RFC 5256 §2.1 base subject, for
  threading and SORT SUBJECT), ``from_``/``sender``/``reply_to``/``to``/``cc``/``bcc``
  (tuples of ``Address``), ``sent_at`` (epoch seconds of ``Date:`` or None), ``message_id``
  (without angle brackets, "" when absent), ``in_reply_to`` and ``references`` (tuples of ids
  without brackets), ``preview`` (about 256 characters of body text), ``has_attachment``,
  ``search_text`` (decoded body text, HTML turned into text, for the full-text index),
  ``structure`` (the root ``MimePart`` with byte offsets), ``header_end`` (offset of the body).
- ``MimePart`` offsets index the raw bytes: ``raw[header_start:header_end]`` is the part's
  header block including the blank line that ends it (IMAP ``BODY[1.2.MIME]``, and for the root
  ``BODY[HEADER]``), ``raw[body_start:body_end]`` its body (IMAP ``BODY[1.2]``, ``BODY[TEXT]``
  for the root). Byte-exact, never re-encoded.
"""

from mailserver.message.model import Address, MimePart, ParsedMessage
from mailserver.message.parser import parse_message

__all__ = ["Address", "MimePart", "ParsedMessage", "parse_message"]
