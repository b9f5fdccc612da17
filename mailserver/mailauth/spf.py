"""SPF (RFC 7208): ``check_spf`` evaluates the sender's policy through our async resolver.

The evaluator is pyspf (``spf.query``), which passes the whole RFC 7208 test suite and keeps
the §4.6.4 limits (10 DNS-querying terms, 2 void lookups) and §7 macro expansion. pyspf is
synchronous, so a check runs in a worker thread; each DNS lookup it makes is sent back to the
event loop and answered by ``Resolver.query`` (``run_coroutine_threadsafe``), so all DNS goes
through the one resolver and its cache. The verdict itself is cached on the resolver, keyed
by every input of the evaluation (client IP, sender, HELO, receiver) and expiring with the first
DNS answer it used, so a busy sender's mail is checked once per TTL instead of once per message
(temperror is never kept). A typical uncached check costs a thread hop plus one loop
round trip per lookup (well under 1 ms of overhead against the DNS round trips themselves);
writing our own async evaluator would save that but re-implement ~1,500 lines already
proven by the suite.

pyspf's only DNS hook is its module global ``spf.DNSLookup``. We install, once, a dispatcher
that reads the lookup function from a ContextVar set per check (``asyncio.to_thread`` copies
the context into the worker), so concurrent checks with different resolvers never mix.
"""

from __future__ import annotations

import asyncio
import contextvars
import ipaddress
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import spf as pyspf

from mailserver.mailauth.dns import Answer, DnsTempError, Resolver

__all__ = ["SpfResult", "check_spf"]

SpfOutcome = Literal["pass", "fail", "softfail", "neutral", "none", "temperror", "permerror"]

# RFC 7208 §4.6.4 recommends an overall limit; pyspf's querytime is that budget (seconds)
DEFAULT_QUERY_TIME = 20.0

# pyspf's pre-RFC 7208 names
_LEGACY = {"unknown": "permerror", "error": "temperror", "ambiguous": "permerror"}

_Lookup = Callable[[str, str], list[tuple[tuple[str, str], Any]]]
_current_lookup: contextvars.ContextVar[_Lookup | None] = contextvars.ContextVar(
    "mailserver_spf_lookup", default=None)


def _dispatch(name: str, qtype: str, strict: object = True, timeout: object = None) -> Any:
    lookup = _current_lookup.get()
    if lookup is None:
        raise pyspf.TempError("SPF DNS lookup outside check_spf (no resolver)")
    return lookup(name, qtype)


if getattr(pyspf.DNSLookup, "__name__", "") != "_dispatch":
    pyspf.DNSLookup = _dispatch


@dataclass(frozen=True, slots=True)
class SpfResult:
    result: SpfOutcome
    explanation: str  # the exp= text for fail, else pyspf's reason
    domain: str  # the domain whose policy was checked (MAIL FROM domain, or HELO)
    identity: Literal["mailfrom", "helo"] = "mailfrom"


def _converter(resolver: Resolver, loop: asyncio.AbstractEventLoop, timeout: float,
               expiries: list[float]) -> _Lookup:
    """pyspf's lookup function; appends the cache expiry of every answer to ``expiries``."""
    async def query(name: str, qtype: str) -> Answer:
        answer = await resolver.query(name, qtype)
        expiries.append(resolver.expiry(name, qtype))  # on the loop, like the cache itself
        return answer

    def lookup(name: str, qtype: str) -> list[tuple[tuple[str, str], Any]]:
        if qtype == "SPF":  # RFC 7208 §3.1: type 99 records are no longer looked up
            return []
        future = asyncio.run_coroutine_threadsafe(query(name, qtype), loop)
        try:
            answer = future.result(timeout + 1.0)
        except DnsTempError as exc:
            raise pyspf.TempError(f"DNS {exc}") from exc
        except TimeoutError as exc:
            future.cancel()
            raise pyspf.TempError(f"DNS {name}/{qtype}: timeout") from exc
        return [((name, qtype), _value(qtype, r)) for r in answer.rrset]
    return lookup


def _value(qtype: str, rdata: Any) -> Any:
    # the shapes pyspf's own dnspython driver produces
    if qtype in ("A", "AAAA"):
        return rdata.address
    if qtype == "MX":
        return (rdata.preference, rdata.exchange.to_text(True))
    if qtype == "PTR":
        return rdata.target.to_text(True)
    if qtype == "TXT":
        return tuple(rdata.strings)
    return rdata.to_text()


def _run_query(ip: str, sender: str, helo: str, lookup: _Lookup, query_time: float,
               receiver: str | None, default_explanation: str | None) -> tuple[str, str, str]:
    _current_lookup.set(lookup)
    try:
        ipaddress.ip_address(ip)
    except ValueError:  # pyspf accepts "" and then fails with an AttributeError
        return "permerror", f"invalid client IP {ip!r}"[:200], ""
    try:
        q = pyspf.query(i=ip, s=sender, h=helo, receiver=receiver, querytime=query_time)
    except pyspf.PermError as exc:  # e.g. a malformed client IP
        return "permerror", str(exc), ""
    if default_explanation is not None:
        q.set_default_explanation(default_explanation)
    try:
        result, _code, explanation = q.check()
    except Exception as exc:  # noqa: BLE001 — a pyspf bug on hostile input is not our crash
        return "permerror", f"SPF evaluation failed: {exc!r}"[:200], q.d or ""
    return result, explanation or "", q.d or ""


async def check_spf(ip: str, mail_from: str, helo: str, resolver: Resolver, *,
                    receiver: str | None = None,
                    query_time: float = DEFAULT_QUERY_TIME,
                    default_explanation: str | None = None) -> SpfResult:
    """Evaluate SPF for a client ``ip``; an empty ``mail_from`` checks the HELO identity
    (RFC 7208 §2.4: ``postmaster@<helo>``)."""
    identity: Literal["mailfrom", "helo"] = "mailfrom" if mail_from else "helo"
    sender = mail_from if mail_from else (f"postmaster@{helo}" if helo else "")
    key = ("spf", ip, sender, helo, receiver, default_explanation)
    cached = resolver.derived(key)
    if cached is not None:
        return cached  # type: ignore[no-any-return]
    expiries: list[float] = []
    lookup = _converter(resolver, asyncio.get_running_loop(), resolver.timeout, expiries)
    result, explanation, domain = await asyncio.to_thread(
        _run_query, ip, sender, helo, lookup, query_time, receiver, default_explanation)
    result = _LEGACY.get(result, result)
    if not domain:
        domain = sender.rpartition("@")[2] if "@" in sender else helo
    verdict = SpfResult(result, explanation, domain.lower(), identity)  # type: ignore[arg-type]
    if result != "temperror" and expiries and min(expiries) > 0:
        # the same inputs and the same answers give the same verdict (RFC 7208 evaluation
        # is a function of them): kept until the first answer it used expires
        resolver.remember(key, verdict, min(expiries))
    return verdict

