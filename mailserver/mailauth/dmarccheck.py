"""DMARC (RFC 7489): policy discovery through our resolver, evaluation with the ``dmarc`` package.

- Record parsing and the pass/fail/disposition rules are the ``dmarc`` package's
  (``Policy.parse_record``, ``DMARC.get_result``).
- Alignment is ours: ``dmarc``'s ``check_alignment`` compares domain suffixes, which calls
  ``co.uk`` aligned with ``example.co.uk``. RFC 7489 §3.2 defines relaxed alignment as equal
  Organizational Domains, which we take from ``publicsuffixlist`` (its bundled list, offline;
  unknown TLDs such as ``.test`` count as public suffixes, so ``example.test`` is an org domain).
- Discovery (§6.6.3): ``_dmarc.<From domain>``; when that holds no DMARC record, the org
  domain's record, whose ``sp=`` then applies. More than one record = no policy. A DNS
  temporary failure gives ``temperror``.
- ``pct`` (§6.6.4): a failing message outside the sampled percentage gets the next weaker
  disposition (reject → quarantine → none); the random source is injectable for tests.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import dmarc as dmarclib
from publicsuffixlist import PublicSuffixList

from mailserver.mailauth.dkimverify import DkimResult
from mailserver.mailauth.dns import DnsTempError, Resolver
from mailserver.mailauth.spf import SpfResult

__all__ = ["DmarcResult", "check_dmarc", "org_domain"]

DmarcOutcome = Literal["pass", "fail", "none", "temperror", "permerror"]
Disposition = Literal["none", "quarantine", "reject"]


@functools.cache
def _psl() -> PublicSuffixList:
    return PublicSuffixList()  # the list bundled with the package: no network


def org_domain(domain: str) -> str:
    """The Organizational Domain (RFC 7489 §3.2); a public suffix itself is its own."""
    domain = domain.rstrip(".").lower()
    return _psl().privatesuffix(domain) or domain


class _Alignment(dmarclib.DMARC):
    def check_alignment(self, fd: str, ad: str, mode: dmarclib.DMARCAlignment,
                        psl: object = None) -> bool:
        fd, ad = fd.rstrip(".").lower(), ad.rstrip(".").lower()
        if not fd or not ad:
            return False
        if fd == ad:
            return True
        # RFC 7489 §3.1.1/§3.1.2: relaxed = same Organizational Domain
        return mode is dmarclib.DMARCAlignment.RELAXED and org_domain(fd) == org_domain(ad)


@dataclass(frozen=True, slots=True)
class DmarcResult:
    result: DmarcOutcome
    from_domain: str = ""  # the RFC5322.From domain evaluated ("" when none was found)
    policy: Disposition | None = None  # the published p= (or sp=) that applies
    disposition: Disposition = "none"  # what the policy asks for this message (after pct)
    policy_domain: str = ""  # where the record was found (From domain or its org domain)
    spf_aligned: bool = False
    dkim_aligned: bool = False
    sampled_out: bool = False  # pct= excluded this message from the policy
    reason: str = ""


async def _records(resolver: Resolver, domain: str) -> list[str]:
    # RFC 7489 §6.6.3 step 3: only records that start with v=DMARC1 count
    txts = await resolver.txt(f"_dmarc.{domain}")
    return [t for t in txts if t.lstrip().startswith("v=DMARC1")
            and t.lstrip()[8:9] in ("", ";", " ", "\t")]


async def _discover(resolver: Resolver, domain: str) -> tuple[list[str], str, bool]:
    """(records, where found, found at the org domain)."""
    records = await _records(resolver, domain)
    if records:
        return records, domain, False
    org = org_domain(domain)
    if org != domain:
        records = await _records(resolver, org)
        if records:
            return records, org, True
    return [], domain, False


_WEAKER: dict[Disposition, Disposition] = {"reject": "quarantine", "quarantine": "none",
                                           "none": "none"}


async def check_dmarc(from_domain: str, spf: SpfResult | None, dkim: Sequence[DkimResult],
                      resolver: Resolver, *,
                      rng: Callable[[], float] = random.random) -> DmarcResult:
    """Evaluate the DMARC policy of ``from_domain`` against SPF and DKIM results."""
    domain = from_domain.rstrip(".").lower()
    if not domain:
        return DmarcResult("none", reason="no From domain")
    try:
        records, where, at_org = await _discover(resolver, domain)
    except DnsTempError as exc:
        return DmarcResult("temperror", domain, reason=str(exc)[:200])
    if not records:
        return DmarcResult("none", domain, reason="no DMARC record")
    if len(records) > 1:  # §6.6.3 step 5
        return DmarcResult("none", domain, policy_domain=where,
                           reason="more than one DMARC record")
    try:
        policy = dmarclib.Policy("DMARC1", domain, where if at_org else None)
        policy.parse_record(records[0], strict=False)
    except dmarclib.Error as exc:
        return DmarcResult("permerror", domain, policy_domain=where, reason=str(exc)[:200])

    spf_auth = None
    if spf is not None and spf.domain:
        try:
            spf_auth = dmarclib.SPF(spf.domain, dmarclib.SPFResult(spf.result))
        except ValueError:
            spf_auth = None
    dkim_auth = [dmarclib.DKIM(r.domain, dmarclib.DKIMResult(r.result), r.selector)
                 for r in dkim if r.domain and r.result in
                 {m.value for m in dmarclib.DKIMResult}]
    result = _Alignment().get_result(
        policy, auth_results=dmarclib.AuthResults(spf=spf_auth, dkim=dkim_auth or None))
    published: Disposition = result.disposition.value or "none"  # type: ignore[assignment]
    applies = policy.sp if at_org and policy.sp is not dmarclib.DMARCDisposition.UNSPECIFIED \
        else policy.p
    applies_value: Disposition = applies.value or "none"  # type: ignore[assignment]
    if result.result is dmarclib.DMARCResult.PASS:
        return DmarcResult("pass", domain, applies_value, "none", where,
                           result.spf is dmarclib.DMARCResult.PASS,
                           result.dkim is dmarclib.DMARCResult.PASS)
    disposition, sampled_out = published, False
    if policy.pct < 100 and rng() * 100 >= policy.pct:  # §6.6.4
        disposition, sampled_out = _WEAKER[published], True
    return DmarcResult("fail", domain, applies_value, disposition, where,
                       sampled_out=sampled_out,
                       reason="neither SPF nor DKIM aligned with a pass")
