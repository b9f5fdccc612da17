"""DKIM signing keys: generation and the DNS TXT record that publishes them.

- ``ed25519-sha256`` (RFC 8463): the ``p=`` value is the raw 32-byte public key in base64.
- ``rsa-sha256`` (RFC 6376 §3.6.1): 2048-bit keys; ``p=`` is the DER SubjectPublicKeyInfo in
  base64 (what every verifier expects; RFC 6376's "RSAPublicKey" wording is loose on this).

Private keys are PEM PKCS#8, unencrypted (they live in the metadata store, ``dkim_keys``).
Storage of keys per domain is ``mailserver.store.directory``; signing is ``mailauth``.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

__all__ = ["ALGORITHMS", "DkimKeyPair", "DkimTxtRecord", "generate_dkim_key", "dns_txt_record"]

ALGORITHMS = ("ed25519-sha256", "rsa-sha256")
RSA_BITS = 2048


@dataclass(frozen=True, slots=True)
class DkimKeyPair:
    algorithm: str
    private_pem: str  # PKCS#8 PEM
    public: str  # base64 of the p= value


@dataclass(frozen=True, slots=True)
class DkimTxtRecord:
    name: str  # "<selector>._domainkey.<domain>." (absolute)
    value: str  # the full record text
    strings: tuple[str, ...]  # value cut into ≤255-character character-strings (RFC 1035 §3.3)

    def zone_line(self, ttl: int | None = None) -> str:
        """The record as a zone file line, e.g. ``sel._domainkey.example.com. IN TXT ( "…" "…" )``."""
        ttl_part = f" {ttl}" if ttl is not None else ""
        quoted = " ".join(f'"{s}"' for s in self.strings)
        if len(self.strings) > 1:
            quoted = f"( {quoted} )"
        return f"{self.name}{ttl_part} IN TXT {quoted}"


def _check_algorithm(algorithm: str) -> None:
    if algorithm not in ALGORITHMS:
        raise ValueError(f"unknown DKIM algorithm {algorithm!r} (use one of {', '.join(ALGORITHMS)})")


def generate_dkim_key(algorithm: str = "ed25519-sha256", *, rsa_bits: int = RSA_BITS) -> DkimKeyPair:
    """A new key pair. RSA generation takes ~0.1–0.5 s: call it off the event loop."""
    _check_algorithm(algorithm)
    private: ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey
    if algorithm == "ed25519-sha256":
        private = ed25519.Ed25519PrivateKey.generate()
        raw = private.public_key().public_bytes(serialization.Encoding.Raw,
                                                serialization.PublicFormat.Raw)
    else:
        private = rsa.generate_private_key(public_exponent=65537, key_size=rsa_bits)
        raw = private.public_key().public_bytes(serialization.Encoding.DER,
                                                serialization.PublicFormat.SubjectPublicKeyInfo)
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode("ascii")
    return DkimKeyPair(algorithm, pem, base64.b64encode(raw).decode("ascii"))


def dns_txt_record(domain: str, selector: str, algorithm: str, public: str) -> DkimTxtRecord:
    """The TXT record publishing ``public`` (the ``p=`` base64) under ``selector``."""
    _check_algorithm(algorithm)
    k = "ed25519" if algorithm == "ed25519-sha256" else "rsa"
    value = f"v=DKIM1; k={k}; p={public}"
    strings = tuple(value[i:i + 255] for i in range(0, len(value), 255))
    name = f"{selector}._domainkey.{domain.rstrip('.')}."
    return DkimTxtRecord(name, value, strings)
