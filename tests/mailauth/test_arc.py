"""ARC chain validation (RFC 8617) of messages sealed with dkimpy's ``arc_sign``, over real DNS."""

from __future__ import annotations

import dkim as dkimpy

from mailserver.dkimkeys import dns_txt_record, generate_dkim_key
from mailserver.mailauth.dkimverify import verify_arc
from mailserver.mailauth.dns import Resolver

HOP1 = generate_dkim_key("rsa-sha256")
HOP2 = generate_dkim_key("rsa-sha256")
ZONES = {
    ".": [],
    "forwarder.test": [dns_txt_record("forwarder.test", "arc", HOP1.algorithm,
                                      HOP1.public).zone_line()],
    "list.test": [dns_txt_record("list.test", "seal", HOP2.algorithm, HOP2.public).zone_line()],
    "broken.test": None,
}

MESSAGE = (b"From: Alice <alice@example.test>\r\nTo: list@list.test\r\n"
           b"Subject: Agenda\r\nDate: Mon, 23 Nov 2026 10:00:00 +0000\r\n"
           b"Message-ID: <agenda@example.test>\r\n\r\nItem 1.\r\nItem 2.\r\n")


def seal(message: bytes, domain: str, selector: str, pem: str, results: str) -> bytes:
    """What a forwarder does: record its Authentication-Results, then add an ARC set."""
    with_ar = f"Authentication-Results: {domain}; {results}\r\n".encode() + message
    arc_set = dkimpy.arc_sign(with_ar, selector.encode(), domain.encode(), pem.encode(),
                              domain.encode())
    assert arc_set, "dkimpy produced no ARC set"
    return b"".join(arc_set) + with_ar


async def test_no_arc_headers(resolver: Resolver) -> None:
    result = await verify_arc(MESSAGE, resolver)
    assert (result.result, result.instances) == ("none", 0)


async def test_one_and_two_hop_chains_pass(resolver: Resolver) -> None:
    one = seal(MESSAGE, "forwarder.test", "arc", HOP1.private_pem,
               "spf=pass smtp.mailfrom=example.test; dkim=pass header.d=example.test")
    result = await verify_arc(one, resolver)
    assert (result.result, result.instances, result.sealers) == ("pass", 1, ("forwarder.test",))

    # the mailing list changes the subject, then seals with the chain's state (cv=pass)
    modified = one.replace(b"Subject: Agenda", b"Subject: [list] Agenda")
    two = seal(modified, "list.test", "seal", HOP2.private_pem,
               "arc=pass; dkim=fail header.d=example.test")
    result = await verify_arc(two, resolver)
    assert (result.result, result.instances) == ("pass", 2)
    assert result.sealers == ("list.test", "forwarder.test")


async def test_tampered_chain_fails(resolver: Resolver) -> None:
    one = seal(MESSAGE, "forwarder.test", "arc", HOP1.private_pem, "spf=pass")
    assert b"forwarder.test;\r\n spf=pass" in one
    body = await verify_arc(one.replace(b"Item 2.", b"Item 3."), resolver)
    assert body.result == "fail"
    aar = await verify_arc(one.replace(b"forwarder.test;\r\n spf=pass",
                                       b"forwarder.test;\r\n spf=fail"), resolver)
    assert aar.result == "fail"
    # a seal that reported cv=fail ends the chain
    broken = seal(one.replace(b"Item 2.", b"Item 3."), "list.test", "seal",
                  HOP2.private_pem, "arc=fail")
    assert (await verify_arc(broken, resolver)).result == "fail"


async def test_missing_and_unreachable_keys(resolver: Resolver) -> None:
    unknown = seal(MESSAGE, "nokeys.test", "arc", HOP1.private_pem, "spf=pass")
    assert (await verify_arc(unknown, resolver)).result == "fail"
    dead = seal(MESSAGE, "broken.test", "arc", HOP1.private_pem, "spf=pass")
    result = await verify_arc(dead, resolver)
    assert result.result == "fail" and "temporarily" in result.reason


async def test_malformed_arc_sets_fail_without_raising(resolver: Resolver) -> None:
    one = seal(MESSAGE, "forwarder.test", "arc", HOP1.private_pem, "spf=pass")
    cases = [
        b"ARC-Seal: i=1; garbage\r\n" + MESSAGE,
        b"ARC-Seal: i=1\r\nARC-Message-Signature: i=1\r\n"
        b"ARC-Authentication-Results: i=1\r\n" + MESSAGE,
        one.replace(b"ARC-Seal: i=1", b"ARC-Seal: i=7"),
        b"ARC-Seal: i=1; a=rsa-sha256; cv=none; d=forwarder.test; s=arc; b=AAAA\r\n" + one,
        b"ARC-Message-Signature: i=99999999999999999999; d=x\r\n" + MESSAGE,
        b"ARC-Authentication-Results: i=1; forwarder.test; spf=pass\r\n" + MESSAGE,
        # 21 different keys to look up: refused before any DNS query
        b"".join(b"ARC-Seal: i=%d; a=rsa-sha256; cv=pass; d=d%d.test; s=s; b=AAAA\r\n"
                 % (i, i) for i in range(1, 21)) + one,
    ]
    for message in cases:
        assert (await verify_arc(message, resolver)).result == "fail", message[:100]
    assert "21 different keys" in (await verify_arc(cases[-1], resolver)).reason
