"""DMARC: policy discovery over real DNS, alignment (relaxed/strict, org domain via the PSL),
dispositions, pct sampling and DNS failures."""

from __future__ import annotations

import pytest

from mailserver.mailauth.dkimverify import DkimResult
from mailserver.mailauth.dmarccheck import check_dmarc, org_domain
from mailserver.mailauth.dns import Resolver
from mailserver.mailauth.spf import SpfResult

ZONES = {
    ".": [],
    "example.test": ['_dmarc IN TXT "v=DMARC1; p=reject; rua=mailto:d@example.test"',
                     '_dmarc.other IN TXT "v=spf1 -all"'],  # not a DMARC record
    "quarantine.test": ['_dmarc IN TXT "v=DMARC1; p=quarantine"'],
    "none.test": ['_dmarc IN TXT "v=DMARC1; p=none"'],
    "strict.test": ['_dmarc IN TXT "v=DMARC1; p=reject; adkim=s; aspf=s"'],
    "org.test": ['_dmarc IN TXT "v=DMARC1; p=quarantine; sp=reject"'],
    "pct.test": ['_dmarc IN TXT "v=DMARC1; p=reject; pct=50"'],
    "two.test": ['_dmarc IN TXT "v=DMARC1; p=reject"', '_dmarc IN TXT "v=DMARC1; p=none"'],
    "bad.test": ['_dmarc IN TXT "v=DMARC1; pp=reject"'],
    "lower.test": ['_dmarc IN TXT "v=dmarc1; p=reject"'],  # "DMARC1" is case-sensitive
    "broken.test": None,
    "example.co.uk": ['_dmarc IN TXT "v=DMARC1; p=reject"'],
}


def spf(result: str, domain: str) -> SpfResult:
    return SpfResult(result, "", domain, "mailfrom")  # type: ignore[arg-type]


def dkim(result: str, domain: str) -> DkimResult:
    return DkimResult(result, domain, "sel", "ed25519-sha256")  # type: ignore[arg-type]


def test_org_domain_from_the_public_suffix_list() -> None:
    assert org_domain("mail.example.co.uk") == "example.co.uk"
    assert org_domain("a.b.example.com.") == "example.com"
    assert org_domain("example.test") == "example.test"  # unknown TLD: "*" rule
    assert org_domain("x.y.example.test") == "example.test"
    assert org_domain("co.uk") == "co.uk"
    assert org_domain("user.github.io") == "user.github.io"  # private section of the PSL


async def test_pass_through_aligned_dkim_or_spf(resolver: Resolver) -> None:
    r = await check_dmarc("example.test", spf("fail", "evil.test"),
                          [dkim("pass", "example.test")], resolver)
    assert (r.result, r.disposition, r.dkim_aligned, r.spf_aligned) == \
        ("pass", "none", True, False)
    assert r.policy == "reject" and r.policy_domain == "example.test"
    r = await check_dmarc("example.test", spf("pass", "example.test"), [], resolver)
    assert (r.result, r.spf_aligned, r.dkim_aligned) == ("pass", True, False)


async def test_fail_gives_the_published_disposition(resolver: Resolver) -> None:
    for domain, want in (("example.test", "reject"), ("quarantine.test", "quarantine"),
                         ("none.test", "none")):
        r = await check_dmarc(domain, spf("pass", "evil.test"),
                              [dkim("pass", "evil.test"), dkim("fail", domain)], resolver)
        assert (r.result, r.disposition, r.policy) == ("fail", want, want), domain


async def test_relaxed_alignment_uses_org_domains(resolver: Resolver) -> None:
    # relaxed (default): subdomains and siblings under one org domain align
    for auth in ("bounce.example.test", "mail.example.test"):
        assert (await check_dmarc("example.test", spf("pass", auth), [], resolver)).result \
            == "pass"
        assert (await check_dmarc("news.example.test", None, [dkim("pass", auth)],
                                  resolver)).result == "pass"
    # a public suffix is not an organizational domain (the dmarc package's suffix test
    # would call co.uk aligned with example.co.uk)
    r = await check_dmarc("example.co.uk", spf("pass", "co.uk"), [dkim("pass", "co.uk")],
                          resolver)
    assert (r.result, r.disposition) == ("fail", "reject")
    r = await check_dmarc("example.test", spf("pass", "notexample.test"), [], resolver)
    assert r.result == "fail"


async def test_strict_alignment(resolver: Resolver) -> None:
    r = await check_dmarc("strict.test", spf("pass", "bounce.strict.test"),
                          [dkim("pass", "mail.strict.test")], resolver)
    assert (r.result, r.disposition) == ("fail", "reject")
    r = await check_dmarc("strict.test", spf("pass", "bounce.strict.test"),
                          [dkim("pass", "strict.test")], resolver)
    assert (r.result, r.dkim_aligned) == ("pass", True)
    r = await check_dmarc("strict.test", spf("pass", "strict.test"), [], resolver)
    assert (r.result, r.spf_aligned) == ("pass", True)


async def test_only_passing_results_count(resolver: Resolver) -> None:
    for result in ("softfail", "neutral", "temperror", "none"):
        r = await check_dmarc("example.test", spf(result, "example.test"), [], resolver)
        assert r.result == "fail", result
    for result in ("fail", "permerror", "temperror"):
        r = await check_dmarc("example.test", None, [dkim(result, "example.test")], resolver)
        assert r.result == "fail", result


async def test_org_domain_record_and_sp(resolver: Resolver) -> None:
    # no record at mail.org.test: the org domain's record applies, with sp=
    r = await check_dmarc("mail.org.test", spf("fail", "org.test"), [], resolver)
    assert (r.result, r.policy_domain, r.policy, r.disposition) == \
        ("fail", "org.test", "reject", "reject")
    r = await check_dmarc("org.test", spf("fail", "org.test"), [], resolver)
    assert (r.policy_domain, r.policy, r.disposition) == ("org.test", "quarantine", "quarantine")
    # a TXT record that is not DMARC is ignored and discovery goes on to the org domain
    r = await check_dmarc("other.example.test", None, [], resolver)
    assert (r.result, r.policy_domain, r.disposition) == ("fail", "example.test", "reject")


async def test_pct_sampling(resolver: Resolver) -> None:
    inside = await check_dmarc("pct.test", None, [], resolver, rng=lambda: 0.2)
    assert (inside.disposition, inside.sampled_out) == ("reject", False)
    outside = await check_dmarc("pct.test", None, [], resolver, rng=lambda: 0.7)
    assert (outside.result, outside.disposition, outside.sampled_out) == \
        ("fail", "quarantine", True)


@pytest.mark.parametrize("domain,result", [
    ("unknown.test", "none"),  # NXDOMAIN
    ("two.test", "none"),  # RFC 7489 §6.6.3: more than one record = no policy
    ("lower.test", "none"),
    ("bad.test", "permerror"),  # no p= tag
    ("broken.test", "temperror"),  # SERVFAIL
    ("", "none"),
])
async def test_no_usable_policy(resolver: Resolver, domain: str, result: str) -> None:
    r = await check_dmarc(domain, spf("fail", "evil.test"), [], resolver)
    assert (r.result, r.disposition) == (result, "none")
