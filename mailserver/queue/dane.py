"""DANE for SMTP (RFC 7672): TLSA records decide whether and how an MX host must authenticate.

Per MX host, before connecting (``tlsa_policy``):

- the MX RRset (or, for an implicit MX, the domain's address records) and the host's address
  records must be DNSSEC-secure, else DANE does not apply (RFC 7672 §2.2.1-2.2.2: an insecure
  MX or address could have been forged, so its TLSA records prove nothing) → ``NONE``;
- the TLSA RRset at ``_<port>._tcp.<host>``: secure with at least one usable record → ``DANE``
  (authenticated TLS or not this host); secure but every record unusable → ``ENCRYPT``
  (mandatory TLS without authentication, §2.2); secure denial or insecure → ``NONE``
  (opportunistic TLS as usual); the lookup failed — SERVFAIL, which a validating resolver also
  answers for bogus data — → ``FAIL``: the host is skipped as a TLS failure (§2.2: the client
  must not fall back to cleartext or unauthenticated TLS on an indeterminate answer).

Usable records (§3.1): DANE-EE(3) and DANE-TA(2); PKIX-TA(0) and PKIX-EE(1) are unusable for
SMTP. Selectors Cert(0) and SPKI(1); matching Full(0), SHA2-256(1), SHA2-512(2).

Matching the peer (``verify_chain``, after the handshake with no PKIX checks):
- DANE-EE: the leaf certificate (or its key) matches; no name or expiry checks (§3.1.1).
- DANE-TA: some certificate of the chain the server sent matches (the server must include its
  trust anchor, §3.1.2 — a TA that is only a bare key outside the chain is not supported); each
  certificate from the leaf up to it must be signed by the next, each must be within its
  validity period, and the leaf must name the MX host (or the TLSA base name) in its DNS
  subject alternative names (RFC 6125 wildcards in the left-most label only).

The server's chain comes from the TLS object; Python 3.11 has no public API for it, so the
private ``_sslobj.get_unverified_chain`` is used (public in 3.13 as ``get_unverified_chain``).

CNAMEs: the TLSA base name is the MX host name as published (the resolver follows CNAMEs of
the address lookup, but we do not try the CNAME-expanded name first as §2.2.2 suggests); a
documented simplification.
"""

from __future__ import annotations

import _ssl
import hashlib
import ssl
import time
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from mailserver.mailauth.dns import DnsTempError, Resolver

__all__ = ["DANE", "ENCRYPT", "FAIL", "NONE", "DanePolicy", "Tlsa", "peer_chain",
           "tlsa_policy", "verify_chain"]

NONE = "none"  # no DANE: opportunistic TLS as usual
DANE = "dane"  # authenticated TLS against the TLSA records, or skip the host
ENCRYPT = "encrypt"  # secure TLSA records, none usable: TLS required, not authenticated
FAIL = "fail"  # TLSA lookup failed: do not use this host now

# _ssl.Certificate.public_bytes format (ssl exposes no name for it before 3.13)
_ENCODING_DER = getattr(ssl, "ENCODING_DER", None) or getattr(_ssl, "ENCODING_DER", 2)

USAGES = (2, 3)
SELECTORS = (0, 1)
MATCHING = (0, 1, 2)


@dataclass(frozen=True, slots=True)
class Tlsa:
    usage: int
    selector: int
    mtype: int
    data: bytes

    @property
    def usable(self) -> bool:
        return self.usage in USAGES and self.selector in SELECTORS and self.mtype in MATCHING

    def matches(self, cert: x509.Certificate) -> bool:
        if self.selector == 0:
            blob = cert.public_bytes(Encoding.DER)
        else:
            blob = cert.public_key().public_bytes(Encoding.DER,
                                                  PublicFormat.SubjectPublicKeyInfo)
        if self.mtype == 1:
            blob = hashlib.sha256(blob).digest()
        elif self.mtype == 2:
            blob = hashlib.sha512(blob).digest()
        return blob == self.data


@dataclass(frozen=True, slots=True)
class DanePolicy:
    mode: str  # NONE | DANE | ENCRYPT | FAIL
    base: str = ""  # the TLSA base domain (the MX host name)
    records: tuple[Tlsa, ...] = ()  # the usable ones
    reason: str = ""

    @property
    def requires_tls(self) -> bool:
        return self.mode in (DANE, ENCRYPT)


async def tlsa_policy(resolver: Resolver, host: str, port: int, *, mx_secure: bool
                      ) -> DanePolicy:
    """The DANE policy of one MX host (see the module docstring). ``mx_secure``: the MX
    RRset (or, for an implicit MX, the domain's own lookup) was DNSSEC-validated."""
    if not mx_secure:
        return DanePolicy(NONE, host, reason="MX RRset not DNSSEC-validated")
    try:
        a = await resolver.query(host, "A")
        aaaa = await resolver.query(host, "AAAA")
    except DnsTempError as e:
        return DanePolicy(FAIL, host, reason=f"address lookup: {e}")
    answers = [x for x in (a, aaaa) if x.status == "ok"]
    if not answers or not all(x.secure for x in answers):
        return DanePolicy(NONE, host, reason="address records not DNSSEC-validated")
    name = f"_{port}._tcp.{host}"
    try:
        answer = await resolver.query(name, "TLSA")
    except DnsTempError as e:
        return DanePolicy(FAIL, host, reason=f"TLSA lookup for {name} failed: {e}")
    if not answer.secure or answer.status != "ok":
        return DanePolicy(NONE, host, reason="no secure TLSA records")
    records = tuple(Tlsa(r.usage, r.selector, r.mtype, bytes(r.cert))  # type: ignore[attr-defined]
                    for r in answer.rrset)
    usable = tuple(r for r in records if r.usable)
    if not usable:
        return DanePolicy(ENCRYPT, host, reason="TLSA records present, none usable")
    return DanePolicy(DANE, host, usable)


def peer_chain(ssl_object: Any) -> list[x509.Certificate]:
    """The certificates the server sent, leaf first (DER from the TLS object)."""
    getter = getattr(ssl_object, "get_unverified_chain", None)  # Python >= 3.13
    if getter is None:
        getter = getattr(getattr(ssl_object, "_sslobj", None), "get_unverified_chain", None)
    chain: list[x509.Certificate] = []
    if getter is not None:
        for cert in getter() or ():
            der = cert if isinstance(cert, bytes) else cert.public_bytes(_ENCODING_DER)
            chain.append(x509.load_der_x509_certificate(der))
    if not chain:
        der = ssl_object.getpeercert(binary_form=True)
        if der:
            chain.append(x509.load_der_x509_certificate(der))
    return chain


def verify_chain(policy: DanePolicy, chain: list[x509.Certificate], *,
                 names: tuple[str, ...] = (), now: float | None = None) -> str | None:
    """None when ``chain`` satisfies the policy's TLSA records, else the reason it does not.
    ``names``: reference identifiers for DANE-TA (the MX host; the base name is added)."""
    if not chain:
        return "the server sent no certificate"
    leaf = chain[0]
    if any(r.usage == 3 and r.matches(leaf) for r in policy.records):
        return None  # DANE-EE: the key is the identity
    ta_records = [r for r in policy.records if r.usage == 2]
    if not ta_records:
        return "no TLSA record matches the server's certificate"
    anchor = next((i for i, cert in enumerate(chain)
                   if any(r.matches(cert) for r in ta_records)), None)
    if anchor is None:
        return "no certificate in the server's chain matches a DANE-TA record"
    when = time.time() if now is None else now
    for i in range(anchor + 1):
        cert = chain[i]
        if not cert.not_valid_before_utc.timestamp() <= when \
                <= cert.not_valid_after_utc.timestamp():
            return f"certificate {cert.subject.rfc4514_string()} is not valid now"
        if i < anchor:
            try:
                cert.verify_directly_issued_by(chain[i + 1])
            except (ValueError, TypeError, InvalidSignature) as e:
                return f"chain does not verify up to the trust anchor: {type(e).__name__}"
    wanted = {n.rstrip(".").lower() for n in (*names, policy.base) if n}
    if not _names_match(leaf, wanted):
        return f"certificate names none of {sorted(wanted)}"
    return None


def _names_match(cert: x509.Certificate, wanted: set[str]) -> bool:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns_names = san.get_values_for_type(x509.DNSName)
    except x509.ExtensionNotFound:
        dns_names = []
    for pattern in dns_names:
        pattern = pattern.rstrip(".").lower()
        for name in wanted:
            if pattern == name:
                return True
            if pattern.startswith("*.") and "." in name:
                head, _, rest = name.partition(".")
                if head and rest == pattern[2:]:
                    return True
    return False
