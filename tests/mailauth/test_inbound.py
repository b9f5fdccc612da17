"""``check_message``: SPF + DKIM + ARC + DMARC over real DNS, the Authentication-Results field,
the disposition after local policy, and hostile input."""

from __future__ import annotations

import asyncio
import re
import socket

import authres
import dkim as dkimpy
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailserver.dkimkeys import dns_txt_record, generate_dkim_key
from mailserver.mailauth.dns import Resolver
from mailserver.mailauth.inbound import (
    InboundPolicy, check_message, from_domains, remove_auth_results)
from mailserver.mailauth.signing import sign, signing_key
from mailserver.mailauth.spf import SpfResult

ED = generate_dkim_key("ed25519-sha256")
RSA = generate_dkim_key("rsa-sha256")
ARC = generate_dkim_key("rsa-sha256")
KEYS = [signing_key("example.test", "ed", ED.algorithm, ED.private_pem),
        signing_key("example.test", "rsa", RSA.algorithm, RSA.private_pem)]
ZONES = {
    ".": [],
    "example.test": [
        '@ IN TXT "v=spf1 ip4:192.0.2.1 -all"',
        '_dmarc IN TXT "v=DMARC1; p=reject"',
        dns_txt_record("example.test", "ed", ED.algorithm, ED.public).zone_line(),
        dns_txt_record("example.test", "rsa", RSA.algorithm, RSA.public).zone_line(),
    ],
    "quarantine.test": ['@ IN TXT "v=spf1 -all"', '_dmarc IN TXT "v=DMARC1; p=quarantine"'],
    "none.test": ['@ IN TXT "v=spf1 -all"', '_dmarc IN TXT "v=DMARC1; p=none"'],
    "evil.test": ['@ IN TXT "v=spf1 ip4:198.51.100.7 -all"'],
    "forwarder.test": [
        '@ IN TXT "v=spf1 ip4:203.0.113.5 -all"',
        dns_txt_record("forwarder.test", "arc", ARC.algorithm, ARC.public).zone_line(),
    ],
    "broken.test": None,
}
AUTHSERV = "mx.ourhost.test"


def message(from_: bytes = b"Alice <alice@example.test>", extra: bytes = b"") -> bytes:
    return (b"From: " + from_ + b"\r\nTo: bob@ourhost.test\r\n" + extra +
            b"Subject: Report\r\nDate: Mon, 23 Nov 2026 10:00:00 +0000\r\n"
            b"Message-ID: <report@example.test>\r\n\r\nNumbers attached.\r\n")


def parse_ar(header: bytes) -> authres.AuthenticationResultsHeader:
    assert header.startswith(b"Authentication-Results: ") and header.endswith(b"\r\n")
    assert all(len(line) < 998 for line in header.split(b"\r\n"))
    assert re.fullmatch(rb"[\x20-\x7e\r\n\t]*", header)
    unfolded = re.sub(rb"\r\n[ \t]", b" ", header).rstrip(b"\r\n").decode("ascii")
    return authres.core.AuthenticationResultsHeader.parse(authres.all_features(), unfolded)


def methods(ar: authres.AuthenticationResultsHeader) -> dict[str, str]:
    return {r.method: r.result for r in ar.results}


async def test_authenticated_message(resolver: Resolver) -> None:
    raw = message()
    signed = await sign(raw, "example.test", KEYS) + raw
    v = await check_message(signed, client_ip="192.0.2.1", helo="mail.example.test",
                            mail_from="bounce@example.test", resolver=resolver,
                            authserv_id=AUTHSERV)
    assert v.spf.result == "pass"
    assert [d.result for d in v.dkim] == ["pass", "pass"]
    assert (v.arc.result, v.dmarc.result, v.dmarc_disposition, v.reject_reason) == \
        ("none", "pass", "none", "")
    ar = parse_ar(v.auth_results_header)
    assert ar.authserv_id == AUTHSERV
    assert [(r.method, r.result) for r in ar.results] == [
        ("spf", "pass"), ("dkim", "pass"), ("dkim", "pass"), ("arc", "none"), ("dmarc", "pass")]
    assert ar.results[0].smtp_mailfrom == "bounce@example.test"
    assert {r.header_a for r in ar.results[1:3]} == {"ed25519-sha256", "rsa-sha256"}
    assert ar.results[1].header_d == "example.test" and ar.results[1].header_s == "ed"
    assert ar.results[4].header_from == "example.test"


async def test_spoofed_from_is_rejected(resolver: Resolver) -> None:
    v = await check_message(message(), client_ip="198.51.100.7", helo="evil.test",
                            mail_from="x@evil.test", resolver=resolver, authserv_id=AUTHSERV)
    assert (v.spf.result, v.dkim, v.dmarc.result) == ("pass", (), "fail")
    assert v.dmarc_disposition == "reject"
    assert "example.test" in v.reject_reason
    ar = parse_ar(v.auth_results_header)
    assert methods(ar) == {"spf": "pass", "dkim": "none", "arc": "none", "dmarc": "fail"}
    assert ar.results[-1].policy == "reject"
    # local policy may soften it
    soft = await check_message(message(), client_ip="198.51.100.7", helo="evil.test",
                               mail_from="x@evil.test", resolver=resolver,
                               authserv_id=AUTHSERV,
                               policy=InboundPolicy(dmarc_reject="quarantine"))
    assert (soft.dmarc_disposition, soft.reject_reason) == ("quarantine", "")


async def test_quarantine_and_none_policies(resolver: Resolver) -> None:
    for domain, want in (("quarantine.test", "quarantine"), ("none.test", "none")):
        v = await check_message(message(b"a@" + domain.encode()), client_ip="198.51.100.7",
                                helo="evil.test", mail_from="x@evil.test",
                                resolver=resolver, authserv_id=AUTHSERV)
        assert (v.dmarc.result, v.dmarc_disposition) == ("fail", want), domain


async def test_tampered_signed_message(resolver: Resolver) -> None:
    raw = message()
    signed = (await sign(raw, "example.test", KEYS) + raw).replace(b"Numbers", b"Payment")
    v = await check_message(signed, client_ip="198.51.100.7", helo="evil.test",
                            mail_from="x@evil.test", resolver=resolver, authserv_id=AUTHSERV)
    assert [d.result for d in v.dkim] == ["fail", "fail"]
    assert v.dmarc_disposition == "reject"


async def test_spf_from_mail_from_is_reused(resolver: Resolver) -> None:
    # evaluated at MAIL FROM: passed in, not looked up again (DNS would say "fail" here)
    earlier = SpfResult("pass", "", "example.test", "mailfrom")
    v = await check_message(message(), client_ip="198.51.100.99", helo="h.test",
                            mail_from="a@example.test", resolver=resolver,
                            authserv_id=AUTHSERV, spf=earlier)
    assert v.spf is earlier and v.dmarc.result == "pass"


async def test_null_sender_uses_helo_identity(resolver: Resolver) -> None:
    v = await check_message(message(b"a@evil.test"), client_ip="198.51.100.7",
                            helo="evil.test", mail_from="", resolver=resolver,
                            authserv_id=AUTHSERV)
    assert (v.spf.result, v.spf.identity) == ("pass", "helo")
    assert parse_ar(v.auth_results_header).results[0].smtp_helo == "evil.test"


async def test_several_from_domains_strictest_wins(resolver: Resolver) -> None:
    raw = message(b"a@none.test, b@example.test")
    assert from_domains(raw) == ("none.test", "example.test")
    v = await check_message(raw, client_ip="198.51.100.7", helo="evil.test",
                            mail_from="x@evil.test", resolver=resolver, authserv_id=AUTHSERV)
    assert (v.dmarc.from_domain, v.dmarc_disposition) == ("example.test", "reject")
    two_fields = message(b"a@none.test", extra=b"From: b@example.test\r\n")
    v = await check_message(two_fields, client_ip="198.51.100.7", helo="evil.test",
                            mail_from="x@evil.test", resolver=resolver, authserv_id=AUTHSERV)
    assert v.dmarc_disposition == "reject"


async def test_trusted_arc_sealer_lifts_dmarc_failure(resolver: Resolver) -> None:
    # a mailing list at forwarder.test changed the body (DKIM breaks), then ARC-sealed it
    raw = message()
    signed = await sign(raw, "example.test", KEYS) + raw
    changed = signed.replace(b"Numbers attached.", b"Numbers attached.\r\n-- list footer")
    with_ar = (b"Authentication-Results: forwarder.test; spf=pass; dkim=pass "
               b"header.d=example.test; dmarc=pass\r\n" + changed)
    arc_set = dkimpy.arc_sign(with_ar, b"arc", b"forwarder.test", ARC.private_pem.encode(),
                              b"forwarder.test")
    sealed = b"".join(arc_set) + with_ar
    kwargs = dict(client_ip="203.0.113.5", helo="forwarder.test",
                  mail_from="list-bounce@forwarder.test", resolver=resolver,
                  authserv_id=AUTHSERV)
    plain = await check_message(sealed, **kwargs)  # type: ignore[arg-type]
    assert (plain.arc.result, plain.dmarc.result, plain.dmarc_disposition) == \
        ("pass", "fail", "reject")
    trusted = await check_message(sealed, policy=InboundPolicy(  # type: ignore[arg-type]
        trusted_arc_sealers=frozenset({"forwarder.test"})), **kwargs)
    assert (trusted.dmarc_disposition, trusted.arc_override) == ("none", True)
    assert methods(parse_ar(trusted.auth_results_header))["dmarc"] == "fail"


async def test_dns_failure_gives_temperror(resolver: Resolver) -> None:
    raw = message(b"a@broken.test")
    signed = await sign(raw, "broken.test",
                        [signing_key("broken.test", "ed", ED.algorithm, ED.private_pem)]) + raw
    v = await check_message(signed, client_ip="192.0.2.1", helo="mail.broken.test",
                            mail_from="a@broken.test", resolver=resolver, authserv_id=AUTHSERV)
    assert (v.spf.result, v.dkim[0].result, v.dmarc.result, v.dmarc_disposition) == \
        ("temperror", "temperror", "temperror", "none")
    assert methods(parse_ar(v.auth_results_header))["dmarc"] == "temperror"


async def test_dns_timeout_everywhere_gives_temperror() -> None:
    raw = message()
    signed = await sign(raw, "example.test", KEYS) + raw
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:  # never answers
        silent.bind(("127.0.0.1", 0))
        dead = Resolver(["127.0.0.1"], port=silent.getsockname()[1], timeout=0.3)
        v = await check_message(signed, client_ip="192.0.2.1", helo="mail.example.test",
                                mail_from="a@example.test", resolver=dead, authserv_id=AUTHSERV)
    assert (v.spf.result, [d.result for d in v.dkim], v.dmarc.result, v.dmarc_disposition) == \
        ("temperror", ["temperror", "temperror"], "temperror", "none")
    parse_ar(v.auth_results_header)


def test_remove_auth_results() -> None:
    raw = (b"Authentication-Results: MX.OurHost.Test; spf=pass (forged)\r\n"
           b"Received: from a\r\n"
           b"Authentication-Results: (comment) mx.ourhost.test;\r\n\tdkim=pass\r\n"
           b"Authentication-Results: other.test; spf=fail\r\n"
           b"From: a@example.test\r\n\r\n"
           b"Authentication-Results: mx.ourhost.test; in the body stays\r\n")
    assert remove_auth_results(raw, AUTHSERV) == (
        b"Received: from a\r\nAuthentication-Results: other.test; spf=fail\r\n"
        b"From: a@example.test\r\n\r\n"
        b"Authentication-Results: mx.ourhost.test; in the body stays\r\n")
    untouched = b"From: a@example.test\r\n\r\nbody\r\n"
    assert remove_auth_results(untouched, AUTHSERV) is untouched


def test_from_domains_edge_cases() -> None:
    assert from_domains(b"To: x@y.test\r\n\r\n") == ()
    assert from_domains(b"From: undisclosed-recipients:;\r\n\r\n") == ()
    assert from_domains(b"From: \"Al\" <AL@Example.TEST.>\r\n\r\n") == ("example.test",)
    assert from_domains("From: a@bücher.test\r\n\r\n".encode()) == ("xn--bcher-kva.test",)
    assert from_domains(b"From: a@[192.0.2.1]\r\n\r\n") == ()
    assert from_domains(b"From: a@example.test,\r\n b@Example.test\r\n\r\n") == \
        ("example.test",)


# -- hypothesis: hostile headers never make check_message raise -----------------------------

_FIELD_NAMES = st.sampled_from([b"From", b"DKIM-Signature", b"ARC-Seal",
                                b"ARC-Message-Signature", b"ARC-Authentication-Results",
                                b"Authentication-Results", b"Subject", b"from", b"X"])
_VALUES = st.one_of(
    st.binary(max_size=60),
    st.sampled_from([b"a@example.test", b"<@>", b"i=1; d=forwarder.test; s=arc; cv=pass",
                     b"v=1; a=ed25519-sha256; d=example.test; s=ed; h=from; bh=; b=",
                     b"\xff\xfe@\xc3.test", b"=?utf-8?b?QUJD?= <x@example.test>", b";;;",
                     b"a@" + b"x" * 300 + b".test"]))


@settings(max_examples=100, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(fields=st.lists(st.tuples(_FIELD_NAMES, _VALUES), max_size=6),
       tail=st.binary(max_size=40))
def test_hostile_headers_never_raise(resolver: Resolver, fields: list[tuple[bytes, bytes]],
                                     tail: bytes) -> None:
    raw = b"".join(n + b": " + v + b"\r\n" for n, v in fields) + message() + tail

    async def run() -> None:
        v = await check_message(raw, client_ip="198.51.100.7", helo="evil.test",
                                mail_from="x@evil.test", resolver=resolver,
                                authserv_id=AUTHSERV,
                                spf=SpfResult("pass", "", "evil.test", "mailfrom"))
        assert v.dmarc_disposition in ("none", "quarantine", "reject")
        parse_ar(v.auth_results_header)
    asyncio.run(run())


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(client_ip=st.sampled_from(["192.0.2.1", "::1", "not-an-ip", "", "1.2.3.4.5"]),
       helo=st.one_of(st.text(max_size=30), st.sampled_from(["[192.0.2.1]", "evil.test"])),
       mail_from=st.one_of(st.text(max_size=30), st.sampled_from(
           ["", "a@example.test", "\"a b\"@example.test", "a@bücher.test", "a@", "@"])))
def test_odd_envelopes_never_raise(resolver: Resolver, client_ip: str, helo: str,
                                   mail_from: str) -> None:
    async def run() -> None:
        v = await check_message(message(), client_ip=client_ip, helo=helo,
                                mail_from=mail_from, resolver=resolver, authserv_id=AUTHSERV)
        assert v.spf.result in ("pass", "fail", "softfail", "neutral", "none", "temperror",
                                "permerror")
        parse_ar(v.auth_results_header)
    asyncio.run(run())
