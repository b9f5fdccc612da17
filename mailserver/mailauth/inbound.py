"""Inbound mail authentication: one call after DATA gives SPF, DKIM, ARC and DMARC results,
the ``Authentication-Results`` field (RFC 8601, written with authres) and the disposition.

The MX daemon calls ``check_message`` once per message. SPF is usually evaluated at MAIL FROM
(pass the ``SpfResult`` in, so it is not looked up twice); otherwise it runs here, concurrently
with the DKIM and ARC key lookups. DMARC follows, since it needs both.

Local policy (``InboundPolicy``) maps a failing DMARC policy to what we do: by default
``p=reject`` → reject (the daemon answers 550 5.7.1 with ``reject_reason``), ``p=quarantine``
→ quarantine (the daemon files into Junk). A message whose ARC chain passes and was last
sealed by a trusted forwarder (RFC 8617 §7 use cases, RFC 7489 §6.7 local policy) is not
rejected or quarantined for DMARC; its Authentication-Results still say ``dmarc=fail``.

With several From addresses (RFC 7489 §6.6.1) each distinct domain is evaluated and the
strictest disposition wins, so a second From cannot smuggle mail past a reject policy.

``remove_auth_results`` drops Authentication-Results fields that claim our authserv-id
(RFC 8601 §5: a receiver must not trust, and should remove, fields it did not add).
"""

from __future__ import annotations

import asyncio
import email.utils
import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import authres
import authres.arc
import authres.dmarc

from mailserver.mailauth.dkimverify import (
    MAX_SIGNATURES, ArcResult, DkimResult, verify_arc, verify_dkim)
from mailserver.mailauth.dmarccheck import DmarcResult, check_dmarc
from mailserver.mailauth.dns import Resolver
from mailserver.mailauth.spf import SpfResult, check_spf

__all__ = ["InboundPolicy", "InboundVerdict", "check_message", "from_domains",
           "remove_auth_results"]

Disposition = Literal["none", "quarantine", "reject"]
_RANK: dict[str, int] = {"none": 0, "quarantine": 1, "reject": 2}
MAX_FROM_DOMAINS = 5
MAX_HEADER_SCAN = 1 << 20  # a "header" with no end in sight is not read past 1 MiB


@dataclass(frozen=True, slots=True)
class InboundPolicy:
    """What we do with mail that fails DMARC (the sender's policy is a request, RFC 7489 §6.7)."""

    dmarc_reject: Disposition = "reject"  # applied when p=reject fails
    dmarc_quarantine: Disposition = "quarantine"  # applied when p=quarantine fails
    trusted_arc_sealers: frozenset[str] = frozenset()  # forwarders whose ARC pass we honour
    max_signatures: int = MAX_SIGNATURES
    rng: Callable[[], float] = field(default=random.random, compare=False)  # pct= sampling


DEFAULT_POLICY = InboundPolicy()


@dataclass(frozen=True, slots=True)
class InboundVerdict:
    auth_results_header: bytes  # "Authentication-Results: …\r\n", folded, ready to prepend
    dmarc_disposition: Disposition  # after local policy
    spf: SpfResult
    dkim: tuple[DkimResult, ...]  # one per DKIM-Signature checked, top first
    arc: ArcResult
    dmarc: DmarcResult  # the strictest of the From domains' results
    reject_reason: str  # for the SMTP reply when dmarc_disposition == "reject", else ""
    arc_override: bool = False  # a trusted ARC sealer lifted the DMARC disposition


# -- header helpers ---------------------------------------------------------------------------


def _header_fields(raw: bytes) -> tuple[list[tuple[bytes, bytes, bytes]], int]:
    """The header's fields as (lower-case name, unfolded value, the field's raw bytes with its
    line ends), and the header's length in bytes (where the blank line starts)."""
    fields: list[tuple[bytes, bytes, bytes]] = []
    pos, size = 0, min(len(raw), MAX_HEADER_SCAN)
    while pos < size:
        end = raw.find(b"\n", pos)
        end = size if end < 0 else end + 1
        line = raw[pos:end]
        if line in (b"\r\n", b"\n"):
            break  # the blank line that ends the header
        if line[:1] in (b" ", b"\t") and fields:
            name, value, whole = fields[-1]
            fields[-1] = (name, value + line.rstrip(b"\r\n"), whole + line)
        else:
            name, sep, value = line.partition(b":")
            fields.append((name.strip().lower() if sep else b"", value.rstrip(b"\r\n"), line))
        pos = end
    return fields, pos


_HOSTNAME = re.compile(r"[a-z0-9_](?:[a-z0-9_.-]{0,252}[a-z0-9_])?")


def _domain(address: str) -> str:
    """The domain of ``address`` as lower-case ASCII (IDNA), or "" if it is not a host name."""
    domain = address.rpartition("@")[2].strip().strip(".").lower()
    try:
        domain = domain.encode("idna").decode("ascii")
    except UnicodeError:
        return ""
    return domain if _HOSTNAME.fullmatch(domain) else ""


def from_domains(raw: bytes) -> tuple[str, ...]:
    """The distinct RFC5322.From domains, in order (RFC 7489 §6.6.1)."""
    values = [v.decode("utf-8", "replace") for n, v, _ in _header_fields(raw)[0]
              if n == b"from"]
    out: list[str] = []
    for _name, addr in email.utils.getaddresses(values):
        d = _domain(addr) if "@" in addr else ""
        if d and d not in out:
            out.append(d)
    return tuple(out)


def remove_auth_results(raw: bytes, authserv_id: str) -> bytes:
    """``raw`` without the Authentication-Results fields that carry ``authserv_id``."""
    ours = authserv_id.lower().encode("ascii", "replace")
    fields, head_len = _header_fields(raw)
    kept, dropped = [], False
    for name, value, whole in fields:
        if name == b"authentication-results":
            sid = re.match(rb"\s*(?:\([^)]*\)\s*)*([^\s;(]+)", value)
            if sid and sid.group(1).lower() == ours:
                dropped = True
                continue
        kept.append(whole)
    return b"".join(kept) + raw[head_len:] if dropped else raw


# -- Authentication-Results -------------------------------------------------------------------

_UNSAFE = re.compile(r"[^\x21-\x7e]")
_ADDRESS = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9.-]+")


def _safe(value: str, limit: int = 255) -> str:
    return _UNSAFE.sub("", value)[:limit]


class _Quoted(str):
    # authres leaves any value containing "@" unquoted; a free-text reason must always be
    # a quoted-string (RFC 8601 §2.2 reasonspec = "reason" "=" value)
    def quote_if_needed(self) -> str:
        text = re.sub(r"[^\x20-\x7e]", "?", self)[:200]
        return '"' + re.sub(r'(["\\])', r"\\\1", text) + '"'


def _with_reason(result: authres.core.AuthenticationResult, reason: str) -> str:
    if reason:
        result.reason = _Quoted(reason)
    return str(result)


def _spf_clause(spf: SpfResult, mail_from: str, helo: str) -> str:
    if spf.identity == "helo" or not mail_from:
        r = authres.SPFAuthenticationResult(result=spf.result,
                                            smtp_helo=_domain("@" + helo) or None)
    else:
        who = mail_from if _ADDRESS.fullmatch(mail_from) else _domain("@" + spf.domain)
        r = authres.SPFAuthenticationResult(result=spf.result, smtp_mailfrom=_safe(who) or None)
    return str(r)


def _dkim_clause(d: DkimResult) -> str:
    r = authres.DKIMAuthenticationResult(
        result=d.result, header_d=_safe(d.domain) or None,
        header_i=_safe(d.identity) or None, header_s=_safe(d.selector) or None,
        header_a=_safe(d.algorithm) or None)
    if d.b_prefix:
        r.properties.append(authres.core.AuthenticationResultProperty(
            "header", "b", _safe(d.b_prefix)))
    return _with_reason(r, d.reason)


def _arc_clause(arc: ArcResult, client_ip: str) -> str:
    r = authres.arc.ARCAuthenticationResult(
        result=arc.result, smtp_remote_ip=_safe(client_ip) or None)
    return _with_reason(r, arc.reason)


def _dmarc_clause(dm: DmarcResult, applied: Disposition) -> str:
    r = authres.dmarc.DMARCAuthenticationResult(
        result=dm.result, header_from=_safe(dm.from_domain) or None,
        policy=applied if dm.result == "fail" else None)
    return _with_reason(r, dm.reason if dm.result in ("permerror", "temperror") else "")


def _header(authserv_id: str, clauses: list[str]) -> bytes:
    # one clause per line (RFC 5322 §2.2.3 folding), so many signatures stay under 998 octets
    text = f"Authentication-Results: {_safe(authserv_id)};\r\n\t" + ";\r\n\t".join(clauses)
    return text.encode("ascii", "replace") + b"\r\n"


# -- the check ----------------------------------------------------------------------------------


async def _spf(spf: SpfResult | None, client_ip: str, mail_from: str, helo: str,
               resolver: Resolver, authserv_id: str) -> SpfResult:
    if spf is not None:
        return spf
    return await check_spf(client_ip, mail_from, helo, resolver, receiver=authserv_id)


async def check_message(raw: bytes, *, client_ip: str, helo: str, mail_from: str,
                        resolver: Resolver, authserv_id: str, spf: SpfResult | None = None,
                        policy: InboundPolicy = DEFAULT_POLICY) -> InboundVerdict:
    """Authenticate a received message; never raises for anything in ``raw``.

    ``raw`` should already be without Authentication-Results fields of ``authserv_id``
    (``remove_auth_results``); the caller prepends ``auth_results_header``.
    """
    spf_result, dkim_results, arc_result = await asyncio.gather(
        _spf(spf, client_ip, mail_from, helo, resolver, authserv_id),
        verify_dkim(raw, resolver, max_signatures=policy.max_signatures),
        verify_arc(raw, resolver))

    domains = from_domains(raw)[:MAX_FROM_DOMAINS]
    if domains:
        results = await asyncio.gather(*(
            check_dmarc(d, spf_result, dkim_results, resolver, rng=policy.rng)
            for d in domains))
        dmarc_result = max(results, key=lambda r: (_RANK[r.disposition],
                                                   r.result == "fail", r.result == "temperror"))
    else:
        dmarc_result = DmarcResult("none", reason="no From domain")

    applied: Disposition = "none"
    if dmarc_result.disposition == "reject":
        applied = policy.dmarc_reject
    elif dmarc_result.disposition == "quarantine":
        applied = policy.dmarc_quarantine
    override = False
    if applied != "none" and arc_result.result == "pass" and arc_result.sealers \
            and arc_result.sealers[0] in policy.trusted_arc_sealers:
        applied, override = "none", True

    reject_reason = ""
    if applied == "reject":
        reject_reason = (f"DMARC policy of {dmarc_result.policy_domain or dmarc_result.from_domain}"
                         " rejects mail that fails SPF and DKIM alignment")

    clauses = [_spf_clause(spf_result, mail_from, helo)]
    clauses += [_dkim_clause(d) for d in dkim_results] or ["dkim=none"]
    clauses.append(_arc_clause(arc_result, client_ip))
    clauses.append(_dmarc_clause(dmarc_result, applied))
    return InboundVerdict(
        auth_results_header=_header(authserv_id, clauses),
        dmarc_disposition=applied, spf=spf_result, dkim=tuple(dkim_results), arc=arc_result,
        dmarc=dmarc_result, reject_reason=reject_reason, arc_override=override)
