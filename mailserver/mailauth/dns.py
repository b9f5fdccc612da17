"""The one async DNS resolver every mail authentication check goes through.

Built on dnspython's ``dns.asyncresolver`` with the nameservers, port and timeout from config
(tests point it at a knot server on 127.0.0.1:<port>), plus a bounded in-memory TTL cache.

Outcomes are typed, because SPF and DMARC treat them differently (RFC 7208 §2.6, RFC 7489 §6.6.3):

- an answer with records: ``Answer(status="ok")``;
- the name does not exist: ``Answer(status="nxdomain")``;
- the name exists but has no records of that type: ``Answer(status="nodata")``;
- the lookup failed (SERVFAIL, REFUSED, timeout, network): ``DnsTempError`` is raised.

The convenience methods (``txt``, ``mx``, ``a``, …) return empty lists for nxdomain/nodata and
raise ``DnsTempError``; use ``query`` when the difference between nxdomain and nodata matters.

DNSSEC (for DANE, RFC 7672): with ``dnssec=True`` every query carries the EDNS DO bit and
``Answer.secure`` is the AD bit of the reply — we do not validate signatures ourselves but trust
the configured resolver's validation, as Postfix does (``smtp_dns_support_level = dnssec``). That
is only meaningful when the resolver is a validating one reached over a trusted path (unbound or
knot-resolver on loopback); a bogus answer comes back from such a resolver as SERVFAIL, i.e.
``DnsTempError``.
"""

from __future__ import annotations

import ipaddress
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import dns.asyncresolver
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rdatatype
import dns.resolver
import dns.reversename

__all__ = ["Answer", "DnsError", "DnsTempError", "MxRecord", "MxResult", "Resolver"]

Status = Literal["ok", "nxdomain", "nodata"]

# RFC 2308 §5: cache negative answers no longer than the SOA minimum; bound it anyway
NEGATIVE_TTL_MAX = 300
POSITIVE_TTL_MAX = 86400


class DnsError(Exception):
    """Base class of resolver errors."""


class DnsTempError(DnsError):
    """SERVFAIL, REFUSED, timeout or network error: try again later (SPF/DMARC temperror)."""


@dataclass(frozen=True, slots=True)
class Answer:
    name: str  # the name asked for, lower case, no trailing dot
    rdtype: str  # "TXT", "MX", …
    status: Status
    rrset: tuple[object, ...] = ()  # dnspython rdata objects (after following CNAMEs)
    ttl: int = 0
    secure: bool = False  # DNSSEC-validated by the resolver (AD bit; only with dnssec=True)

    @property
    def nxdomain(self) -> bool:
        return self.status == "nxdomain"


@dataclass(frozen=True, slots=True)
class MxRecord:
    preference: int
    exchange: str  # no trailing dot; "" for the null MX target "."


@dataclass(frozen=True, slots=True)
class MxResult:
    records: tuple[MxRecord, ...]  # sorted by preference
    null: bool  # RFC 7505: a single "0 ." record — the domain accepts no mail


def _normalize(name: str) -> str:
    return name.rstrip(".").lower()


class Resolver:
    """Async DNS with a bounded TTL cache. One per process (or per test), passed in explicitly."""

    def __init__(self, nameservers: Sequence[str] | None = None, *, port: int = 53,
                 timeout: float = 5.0, cache_size: int = 10000,
                 clock: Callable[[], float] = time.monotonic, dnssec: bool = False) -> None:
        if nameservers:
            self._resolver = dns.asyncresolver.Resolver(configure=False)
            self._resolver.nameservers = list(nameservers)
        else:
            self._resolver = dns.asyncresolver.Resolver()  # /etc/resolv.conf
        self._resolver.port = port
        self._resolver.timeout = timeout
        self._resolver.lifetime = timeout
        # a SERVFAIL from the only server must surface as a failure, not be retried until timeout
        self._resolver.retry_servfail = False
        self.dnssec = dnssec
        if dnssec:  # ask for validation: the AD bit of the reply says whether it happened
            self._resolver.use_edns(0, dns.flags.DO, 1232)
        self.timeout = timeout
        self._cache: OrderedDict[tuple[str, str], tuple[float, Answer]] = OrderedDict()
        self._cache_size = cache_size
        self._clock = clock
        # results computed from cached answers (an SPF verdict), expiring with the first of them
        self._derived: OrderedDict[Hashable, tuple[float, Any]] = OrderedDict()

    # -- core -------------------------------------------------------------------------------

    async def query(self, name: str, rdtype: str) -> Answer:
        """One lookup with typed outcome; raises ``DnsTempError`` on temporary failure."""
        key = (_normalize(name), rdtype.upper())
        now = self._clock()
        cached = self._cache.get(key)
        if cached is not None:
            if cached[0] > now:
                self._cache.move_to_end(key)
                return cached[1]
            del self._cache[key]
        answer = await self._lookup(key[0], key[1])
        self._store(key, answer, now)
        return answer

    async def _lookup(self, name: str, rdtype: str) -> Answer:
        try:
            qname = dns.name.from_text(name or ".")
        except (dns.exception.DNSException, ValueError):  # too long, empty label, bad IDNA…
            # not a valid DNS name: nothing can exist there (RFC 7208 §4.3 treats it as none)
            return Answer(name, rdtype, "nxdomain")
        try:
            result = await self._resolver.resolve(qname, rdtype, search=False,
                                                  raise_on_no_answer=False)
        except dns.resolver.NXDOMAIN as exc:
            responses = exc.responses()
            return Answer(name, rdtype, "nxdomain", ttl=_negative_ttl(responses),
                          secure=self.dnssec and _authentic(responses.values()))
        except dns.resolver.NoNameservers as exc:  # every server answered SERVFAIL/REFUSED/…
            errors = [e[3] for e in exc.kwargs.get("errors", [])]
            if errors and all(isinstance(e, dns.message.ChainTooLong) for e in errors):
                # a CNAME loop is a broken zone, not a transient failure: no records
                # (RFC 1034 §3.6.2; RFC 7208 §5.5 then simply skips the name)
                return Answer(name, rdtype, "nodata")
            raise DnsTempError(f"{name}/{rdtype}: {exc}") from exc
        except dns.exception.Timeout as exc:
            raise DnsTempError(f"{name}/{rdtype}: timeout") from exc
        except (dns.exception.DNSException, OSError) as exc:
            raise DnsTempError(f"{name}/{rdtype}: {exc}") from exc
        secure = self.dnssec and _authentic((result.response,))
        if result.rrset is None:
            return Answer(name, rdtype, "nodata",
                          ttl=_negative_ttl({None: result.response}), secure=secure)
        return Answer(name, rdtype, "ok", tuple(result.rrset), result.rrset.ttl, secure)

    def _store(self, key: tuple[str, str], answer: Answer, now: float) -> None:
        if self._cache_size <= 0:
            return
        ttl = min(answer.ttl, POSITIVE_TTL_MAX if answer.status == "ok" else NEGATIVE_TTL_MAX)
        if ttl <= 0:
            return
        self._cache[key] = (now + ttl, answer)
        self._cache.move_to_end(key)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)

    def clear_cache(self) -> None:
        self._cache.clear()
        self._derived.clear()

    def expiry(self, name: str, rdtype: str) -> float:
        """When the cached answer to (name, rdtype) expires, on this resolver's clock; 0 when
        it is not cached (a TTL of 0, or the cache is off)."""
        cached = self._cache.get((_normalize(name), rdtype.upper()))
        return cached[0] if cached is not None else 0.0

    def derived(self, key: Hashable) -> Any | None:
        """A result ``remember``ed under ``key`` whose answers have not expired yet."""
        hit = self._derived.get(key)
        if hit is None:
            return None
        if hit[0] <= self._clock():
            del self._derived[key]
            return None
        self._derived.move_to_end(key)
        return hit[1]

    def remember(self, key: Hashable, value: Any, expires: float) -> None:
        """Keep ``value`` — computed only from answers of this resolver — until ``expires``
        (the earliest ``expiry`` of those answers); bounded like the answer cache."""
        if self._cache_size <= 0 or expires <= self._clock():
            return
        self._derived[key] = (expires, value)
        self._derived.move_to_end(key)
        while len(self._derived) > self._cache_size:
            self._derived.popitem(last=False)

    # -- typed helpers ----------------------------------------------------------------------

    async def txt(self, name: str) -> list[str]:
        """TXT records, each record's character-strings joined (RFC 7208 §3.3, RFC 6376 §3.6.2.2)."""
        return [b.decode("utf-8", "replace") for b in await self.txt_bytes(name)]

    async def txt_bytes(self, name: str) -> list[bytes]:
        answer = await self.query(name, "TXT")
        return [b"".join(r.strings) for r in answer.rrset]  # type: ignore[attr-defined]

    async def mx(self, name: str) -> MxResult:
        answer = await self.query(name, "MX")
        records = tuple(sorted(
            (MxRecord(r.preference, _normalize(r.exchange.to_text()))  # type: ignore[attr-defined]
             for r in answer.rrset),
            key=lambda m: (m.preference, m.exchange)))
        null = len(records) == 1 and records[0].exchange == ""  # RFC 7505 §3
        return MxResult(records, null)

    async def a(self, name: str) -> list[str]:
        answer = await self.query(name, "A")
        return [r.address for r in answer.rrset]  # type: ignore[attr-defined]

    async def aaaa(self, name: str) -> list[str]:
        answer = await self.query(name, "AAAA")
        return [r.address for r in answer.rrset]  # type: ignore[attr-defined]

    async def ptr(self, ip: str) -> list[str]:
        rev = dns.reversename.from_address(str(ipaddress.ip_address(ip))).to_text()
        answer = await self.query(rev, "PTR")
        return [_normalize(r.target.to_text()) for r in answer.rrset]  # type: ignore[attr-defined]


def _authentic(responses) -> bool:
    """Every reply that made the answer has the AD bit (RFC 4035 §3.2.3)."""
    seen = False
    for response in responses:
        if response is None:
            continue
        if not response.flags & dns.flags.AD:
            return False
        seen = True
    return seen


def _negative_ttl(responses: dict[object, dns.message.Message | None]) -> int:
    # RFC 2308 §5: min(SOA TTL, SOA minimum) from the authority section
    for response in responses.values():
        if response is None:
            continue
        for rrset in response.authority:
            if rrset.rdtype == dns.rdatatype.SOA:
                return min(rrset.ttl, rrset[0].minimum, NEGATIVE_TTL_MAX)
    return 0
