"""DKIM signing of outgoing mail (RFC 6376, RFC 8463): ``sign`` returns the field(s) to prepend.

- One signature per algorithm the domain has an active key for: ed25519-sha256 and
  rsa-sha256 together when both exist (a receiver that does not know ed25519 still has the
  RSA one), the newest active key of each. ``c=relaxed/relaxed``.
- Canonicalization and header selection are dkimpy's (``rfc822_parse``, ``CanonicalizationPolicy``,
  ``hash_headers``), so signer and verifier agree byte for byte; the private-key operations are
  ``cryptography``'s (OpenSSL). Measured (CPU time, shared 2-core machine): one RSA-2048
  signature 0.9 ms with OpenSSL against 9.9 ms with dkimpy's pure-Python RSA; a whole 5 KB
  message 1.4 ms signed RSA, 0.5 ms ed25519, 1.6 ms both (dkimpy's ``dkim.sign``: 10.2 ms).
- Header list: the fields RFC 6376 §5.4.1 recommends, each present instance once, and the
  fields a reader sees or that define the body's meaning listed once more than they occur
  ("oversigning", §8.15), so nobody can add a second From, Subject, … or one that was absent
  without breaking the signature. Trace and list-manager fields are left out on purpose.
- Signing is CPU only: inline for ordinary messages, in a worker thread above
  ``INLINE_LIMIT`` bytes.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from dkim import MessageFormatError, hash_headers, rfc822_parse
from dkim.canonicalization import CanonicalizationPolicy

from mailserver.mailauth import dkimpy_fast  # noqa: F401  (installs faster dkimpy hot spots)
from mailserver.store.directory import NotFound

__all__ = ["INLINE_LIMIT", "SIGNED_FIELDS", "OVERSIGNED_FIELDS", "SigningKey",
           "SigningKeyCache", "load_signing_keys", "sign", "sign_message", "signing_key"]

INLINE_LIMIT = 256 * 1024

# RFC 6376 §5.4.1, in the order they are listed in h=
SIGNED_FIELDS = (
    "from", "sender", "reply-to", "subject", "date", "message-id", "to", "cc",
    "in-reply-to", "references", "mime-version", "content-type", "content-transfer-encoding",
    "content-disposition", "content-id", "content-description", "content-language",
    "resent-date", "resent-from", "resent-sender", "resent-to", "resent-cc",
    "resent-message-id", "autocrypt", "openpgp",
)
# listed once more than they occur: adding one (or the first one) breaks the signature
OVERSIGNED_FIELDS = frozenset({
    "from", "sender", "reply-to", "subject", "date", "message-id", "to", "cc",
    "in-reply-to", "references", "mime-version", "content-type", "content-transfer-encoding",
})

_RELAXED = CanonicalizationPolicy.from_c_value(b"relaxed/relaxed")
_B64_LINE = 72  # characters of b= per folded line


@dataclass(frozen=True, slots=True)
class SigningKey:
    """A loaded private key of ``domain`` published under ``selector``."""

    domain: str
    selector: str
    algorithm: str  # "ed25519-sha256" | "rsa-sha256"
    private_key: Any  # cryptography Ed25519PrivateKey | RSAPrivateKey
    created_at: int = 0


def signing_key(domain: str, selector: str, algorithm: str, private_pem: str | bytes, *,
                created_at: int = 0) -> SigningKey:
    """Parse a PKCS#8 (or PKCS#1) PEM private key into a ``SigningKey``."""
    pem = private_pem.encode("ascii") if isinstance(private_pem, str) else private_pem
    key = serialization.load_pem_private_key(pem, password=None)
    if algorithm == "ed25519-sha256" and not isinstance(key, ed25519.Ed25519PrivateKey):
        raise ValueError(f"{domain}/{selector}: not an ed25519 key")
    if algorithm == "rsa-sha256" and not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError(f"{domain}/{selector}: not an RSA key")
    if algorithm not in ("ed25519-sha256", "rsa-sha256"):
        raise ValueError(f"unknown DKIM algorithm {algorithm!r}")
    return SigningKey(domain.rstrip(".").lower(), selector, algorithm, key, created_at)


def _choose(keys: Iterable[SigningKey], domain: str) -> list[SigningKey]:
    # the newest key of each algorithm for this domain; ed25519 first, as RFC 8463's example
    newest: dict[str, SigningKey] = {}
    for k in keys:
        if k.domain != domain:
            continue
        old = newest.get(k.algorithm)
        if old is None or k.created_at >= old.created_at:
            newest[k.algorithm] = k
    return [newest[a] for a in ("ed25519-sha256", "rsa-sha256") if a in newest]


def _header_list(headers: Sequence[Sequence[bytes]]) -> list[bytes]:
    counts: dict[bytes, int] = {}
    for name, _value in headers:
        lname = name.lower()
        counts[lname] = counts.get(lname, 0) + 1
    out: list[bytes] = []
    for field in SIGNED_FIELDS:
        name = field.encode("ascii")
        n = counts.get(name, 0) + (1 if field in OVERSIGNED_FIELDS else 0)
        out.extend([name] * n)
    return out


def _fold_b64(value: str) -> str:
    return "\r\n\t".join(value[i:i + _B64_LINE] for i in range(0, len(value), _B64_LINE))


def _sign_sync(raw: bytes, domain: str, keys: Sequence[SigningKey],
               now: Callable[[], float]) -> bytes:
    try:
        headers, body = rfc822_parse(raw)
    except MessageFormatError as exc:
        raise ValueError(f"message header cannot be parsed: {exc}"[:200]) from exc
    d = domain.encode("idna").decode("ascii")  # RFC 6376 §3.5: d= is a DNS name
    canon_headers = _RELAXED.canonicalize_headers(headers)
    body_hash = base64.b64encode(
        hashlib.sha256(_RELAXED.canonicalize_body(body)).digest()).decode("ascii")
    include = _header_list(headers)
    if b"from" not in include:  # cannot happen (from is oversigned), kept as a guard
        raise ValueError("From must be signed")
    h_value = ":".join(n.decode("ascii") for n in include)
    timestamp = int(now())
    out = []
    for key in keys:
        # b= comes last and empty: what is hashed is this field with an empty b=
        value = (f" v=1; a={key.algorithm}; c=relaxed/relaxed; d={d};\r\n"
                 f"\ts={key.selector}; t={timestamp};\r\n"
                 f"\th={_fold_h(h_value)};\r\n"
                 f"\tbh={body_hash};\r\n\tb=")
        hasher = hashlib.sha256()
        hash_headers(hasher, _RELAXED, canon_headers, list(include),
                     (b"DKIM-Signature", value.encode("ascii")), None)
        digest = hasher.digest()
        if key.algorithm == "ed25519-sha256":
            # RFC 8463 §3: ed25519 signs the SHA-256 hash of the canonicalized data
            signature = key.private_key.sign(digest)
        else:
            signature = key.private_key.sign(digest, padding.PKCS1v15(),
                                             Prehashed(hashes.SHA256()))
        b = _fold_b64(base64.b64encode(signature).decode("ascii"))
        out.append(b"DKIM-Signature:" + value.encode("ascii") + b.encode("ascii") + b"\r\n")
    return b"".join(out)


def _fold_h(h_value: str) -> str:
    # fold the h= list at colons so no line runs past ~78 characters (RFC 5322 §2.1.1)
    lines, line = [], ""
    for part in h_value.split(":"):
        piece = part if not line else ":" + part
        if line and len(line) + len(piece) > 64:
            lines.append(line + ":")
            line = part
        else:
            line += piece
    lines.append(line)
    return "\r\n\t".join(lines)


async def sign(raw: bytes, domain: str, keys: Iterable[SigningKey], *,
               now: Callable[[], float] = time.time) -> bytes:
    """DKIM-Signature field(s) for ``raw`` as ``d=domain``, CRLF-terminated, to prepend to
    the message; ``b""`` when ``keys`` holds no key of that domain.

    ``raw`` must be the message exactly as it will be sent (CRLF line ends). Raises
    ``ValueError`` for a header dkimpy cannot parse (a line that is no field).
    """
    domain = domain.rstrip(".").lower()
    chosen = _choose(keys, domain)
    if not chosen:
        return b""
    if len(raw) > INLINE_LIMIT:
        return await asyncio.to_thread(_sign_sync, raw, domain, chosen, now)
    return _sign_sync(raw, domain, chosen, now)


# -- keys from the directory ----------------------------------------------------------------


async def load_signing_keys(directory: Any, domain: str) -> list[SigningKey]:
    """The active DKIM keys of ``domain`` from ``app.directory``, parsed (empty if none, or
    if the domain is not hosted here)."""
    try:
        records = await directory.active_dkim_keys(domain.rstrip(".").lower())
    except NotFound:
        return []
    return await asyncio.to_thread(
        lambda: [signing_key(r.domain, r.selector, r.algorithm, r.private_key,
                             created_at=r.created_at) for r in records])


async def sign_message(raw: bytes, domain: str, keys_from: Any) -> bytes:
    """``raw`` with its DKIM-Signature field(s) prepended (unchanged when ``domain`` has no
    active key). ``keys_from`` is a ``SigningKeyCache`` (what a daemon should hold) or the
    directory itself (keys are then read and parsed on every call)."""
    if isinstance(keys_from, SigningKeyCache):
        keys = await keys_from.get(domain)
    else:
        keys = await load_signing_keys(keys_from, domain)
    return await sign(raw, domain, keys) + raw


class SigningKeyCache:
    """Parsed keys per domain for ``ttl`` seconds: parsing a PEM RSA key costs more than
    signing with it, and keys change rarely (activation takes effect within ``ttl``)."""

    def __init__(self, directory: Any, *, ttl: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._directory = directory
        self._ttl = ttl
        self._clock = clock
        self._entries: dict[str, tuple[float, list[SigningKey]]] = {}

    async def get(self, domain: str) -> list[SigningKey]:
        domain = domain.rstrip(".").lower()
        now = self._clock()
        entry = self._entries.get(domain)
        if entry is not None and entry[0] > now:
            return entry[1]
        keys = await load_signing_keys(self._directory, domain)
        self._entries[domain] = (now + self._ttl, keys)
        return keys

    def invalidate(self, domain: str | None = None) -> None:
        if domain is None:
            self._entries.clear()
        else:
            self._entries.pop(domain.rstrip(".").lower(), None)
