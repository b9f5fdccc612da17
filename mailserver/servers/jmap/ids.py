"""JMAP ids (RFC 8620 §1.2: 1–255 characters of ``A-Za-z0-9-_``) ↔ store ids.

- Account ``a<id>``, mailbox ``m<id>``, email ``e<id>``, thread ``t<id>``: a prefix per type so
  that an id of one type never names an object of another.
- Blobs: an email's raw message is the blob store's sha256 hex. A body part is
  ``<sha256>_p<part>`` (``part`` = the IMAP section number with "." → "-", "0" for the root),
  read by decoding that part of the email's blob. An upload is ``<sha256>_u<mac>`` where
  ``mac`` is an HMAC of (account, sha256) under the server secret: uploads need no table to
  prove who may use them, and one user cannot use another's upload id.
- States are decimal MODSEQs of the account (one counter for every type: a state changes when
  anything in the account changed, which RFC 8620 §1.2 allows).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass

_ID = re.compile(r"[A-Za-z0-9_-]{1,255}")
_SHA = re.compile(r"[0-9a-f]{64}")


def valid_id(value: object) -> bool:
    return isinstance(value, str) and _ID.fullmatch(value) is not None


def encode(prefix: str, n: int) -> str:
    return f"{prefix}{n}"


def decode(prefix: str, value: object) -> int | None:
    """The store id of ``value`` when it is a well-formed id of that type, else None."""
    if not isinstance(value, str) or not value.startswith(prefix):
        return None
    digits = value[len(prefix):]
    if not digits.isdigit() or len(digits) > 18 or (digits[0] == "0" and len(digits) > 1):
        return None
    return int(digits)


def account_id(n: int) -> str:
    return f"a{n}"


def mailbox_id(n: int) -> str:
    return f"m{n}"


def email_id(n: int) -> str:
    return f"e{n}"


def thread_id(n: int) -> str:
    return f"t{n}"


def state(modseq: int) -> str:
    return str(modseq)


def parse_state(value: object) -> int | None:
    if not isinstance(value, str) or not value.isdigit() or len(value) > 18:
        return None
    return int(value)


@dataclass(frozen=True, slots=True)
class BlobRef:
    sha: str
    kind: str  # "raw" | "part" | "upload"
    part: str = ""  # IMAP section number ("" = root) for kind "part"
    mac: str = ""


def part_blob_id(sha: str, part_id: str) -> str:
    return f"{sha}_p{(part_id or '0').replace('.', '-')}"


def upload_blob_id(secret: bytes, account: int, sha: str) -> str:
    return f"{sha}_u{_mac(secret, account, sha)}"


def _mac(secret: bytes, account: int, sha: str) -> str:
    return hmac.new(secret, f"{account}:{sha}".encode(), hashlib.sha256).hexdigest()[:32]


def parse_blob_id(value: object) -> BlobRef | None:
    if not isinstance(value, str) or len(value) > 255:
        return None
    sha, sep, rest = value.partition("_")
    if _SHA.fullmatch(sha) is None:
        return None
    if not sep:
        return BlobRef(sha, "raw")
    if rest.startswith("p") and re.fullmatch(r"\d+(-\d+)*", rest[1:]):
        part = rest[1:].replace("-", ".")
        return BlobRef(sha, "part", "" if part == "0" else part)
    if rest.startswith("u") and re.fullmatch(r"[0-9a-f]{32}", rest[1:]):
        return BlobRef(sha, "upload", mac=rest[1:])
    return None


def upload_mac_ok(secret: bytes, account: int, ref: BlobRef) -> bool:
    return hmac.compare_digest(ref.mac, _mac(secret, account, ref.sha))
