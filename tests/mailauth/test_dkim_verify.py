"""DKIM verification through our resolver and a real knot server: the RFC 8463 example,
our own signatures, tampering, key problems, DNS failures and hostile signature fields."""

from __future__ import annotations

import asyncio
import socket

import dkim as dkimpy
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailserver.dkimkeys import dns_txt_record, generate_dkim_key
from mailserver.mailauth.dkimverify import verify_dkim
from mailserver.mailauth.dns import Resolver
from mailserver.mailauth.signing import sign, signing_key

# RFC 8463 Appendix A: the example message, signed by football.example.com with both
# algorithms, and the two key records of A.2
RFC8463_MESSAGE = (
    b"DKIM-Signature: v=1; a=ed25519-sha256; c=relaxed/relaxed;\r\n"
    b" d=football.example.com; i=@football.example.com;\r\n"
    b" q=dns/txt; s=brisbane; t=1528637909; h=from : to :\r\n"
    b" subject : date : message-id : from : subject : date;\r\n"
    b" bh=2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8=;\r\n"
    b" b=/gCrinpcQOoIfuHNQIbq4pgh9kyIK3AQUdt9OdqQehSwhEIug4D11Bus\r\n"
    b" Fa3bT3FY5OsU7ZbnKELq+eXdp1Q1Dw==\r\n"
    b"DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed;\r\n"
    b" d=football.example.com; i=@football.example.com;\r\n"
    b" q=dns/txt; s=test; t=1528637909; h=from : to : subject :\r\n"
    b" date : message-id : from : subject : date;\r\n"
    b" bh=2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8=;\r\n"
    b" b=F45dVWDfMbQDGHJFlXUNB2HKfbCeLRyhDXgFpEL8GwpsRe0IeIixNTe3\r\n"
    b" DhCVlUrSjV4BwcVcOF6+FF3Zo9Rpo1tFOeS9mPYQTnGdaSGsgeefOsk2Jz\r\n"
    b" dA+L10TeYt9BgDfQNZtKdN1WO//KgIqXP7OdEFE4LjFYNcUxZQ4FADY+8=\r\n"
    b"From: Joe SixPack <joe@football.example.com>\r\n"
    b"To: Suzie Q <suzie@shopping.example.net>\r\n"
    b"Subject: Is dinner ready?\r\n"
    b"Date: Fri, 11 Jul 2003 21:00:37 -0700 (PDT)\r\n"
    b"Message-ID: <20030712040037.46341.5F8J@football.example.com>\r\n"
    b"\r\n"
    b"Hi.\r\n"
    b"\r\n"
    b"We lost the game.  Are you hungry yet?\r\n"
    b"\r\n"
    b"Joe.\r\n"
)
RFC8463_ZONE = [
    'brisbane._domainkey IN TXT '
    '"v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="',
    'test._domainkey IN TXT ( '
    '"v=DKIM1; k=rsa; p=MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQDkHlOQoBTzWR" '
    '"iGs5V6NpP3idY6Wk08a5qhdR6wy5bdOKb2jLQiY/J16JYi0Qvx/byYzCNb3W91y3FutAC" '
    '"DfzwQ/BC/e/8uBsCR+yz1Lxj+PL6lHvqMKrM3rG4hstT5QjvHO9PzoxZyVYLzBfO2EeC3" '
    '"Ip3G+2kryOTIKT+l/K4w3QIDAQAB" )',
]

ED = generate_dkim_key("ed25519-sha256")
RSA = generate_dkim_key("rsa-sha256")


def _key(domain: str, selector: str, pair):  # type: ignore[no-untyped-def]
    return signing_key(domain, selector, pair.algorithm, pair.private_pem)


ZONES = {
    ".": [],  # every other name: an authoritative NXDOMAIN
    "football.example.com": RFC8463_ZONE,
    "example.test": [
        dns_txt_record("example.test", "ed", ED.algorithm, ED.public).zone_line(),
        dns_txt_record("example.test", "rsa", RSA.algorithm, RSA.public).zone_line(),
        'revoked._domainkey IN TXT "v=DKIM1; k=ed25519; p="',
        # an RSA record where the ed25519 signature's selector points
        dns_txt_record("example.test", "wrongtype", RSA.algorithm, RSA.public).zone_line(),
        'garbage._domainkey IN TXT "v=DKIM1; k=ed25519; p=!!notbase64!!"',
    ],
    "broken.test": None,  # SERVFAIL: the key lookup fails temporarily
}

MESSAGE = (b"From: Alice <alice@example.test>\r\nTo: bob@example.org\r\n"
           b"Subject: Lunch\r\nDate: Mon, 23 Nov 2026 10:00:00 +0000\r\n"
           b"Message-ID: <lunch-1@example.test>\r\nMIME-Version: 1.0\r\n"
           b"Content-Type: text/plain; charset=utf-8\r\n\r\n"
           b"Shall we meet at noon?\r\n\r\n-- \r\nAlice\r\n")


async def _signed(domain: str = "example.test", selectors=(("ed", ED), ("rsa", RSA)),
                  message: bytes = MESSAGE) -> bytes:
    keys = [_key(domain, s, pair) for s, pair in selectors]
    return await sign(message, domain, keys) + message


async def test_rfc8463_example_verifies(resolver: Resolver) -> None:
    results = await verify_dkim(RFC8463_MESSAGE, resolver)
    assert [(r.result, r.domain, r.selector, r.algorithm) for r in results] == [
        ("pass", "football.example.com", "brisbane", "ed25519-sha256"),
        ("pass", "football.example.com", "test", "rsa-sha256"),
    ]
    assert results[0].identity == "@football.example.com"
    assert results[0].b_prefix == "/gCrinpc"


async def test_rfc8463_example_tampered(resolver: Resolver) -> None:
    body = await verify_dkim(RFC8463_MESSAGE.replace(b"hungry", b"angry"), resolver)
    assert [r.result for r in body] == ["fail", "fail"]
    assert all("body hash" in r.reason for r in body)
    header = await verify_dkim(RFC8463_MESSAGE.replace(b"dinner", b"lunch"), resolver)
    assert [r.result for r in header] == ["fail", "fail"]


async def test_our_signatures_pass(resolver: Resolver) -> None:
    results = await verify_dkim(await _signed(), resolver)
    assert [(r.result, r.domain, r.selector, r.algorithm) for r in results] == [
        ("pass", "example.test", "ed", "ed25519-sha256"),
        ("pass", "example.test", "rsa", "rsa-sha256"),
    ]


async def test_tampered_messages_fail(resolver: Resolver) -> None:
    signed = await _signed()
    cases = {
        "body": signed.replace(b"noon", b"one"),
        "signed header": signed.replace(b"Subject: Lunch", b"Subject: Dinner"),
        # From is oversigned: a second From above the signed one breaks the signature
        "added From": signed.replace(b"From: Alice", b"From: Mallory <m@evil.test>\r\nFrom: Alice"),
        # Reply-To was absent and is signed as absent
        "added Reply-To": signed.replace(b"To: bob", b"Reply-To: m@evil.test\r\nTo: bob"),
    }
    for what, message in cases.items():
        results = await verify_dkim(message, resolver)
        assert [r.result for r in results] == ["fail", "fail"], what
    # a field no signature covers may be added by a relay
    relayed = b"Received: from relay.example.org\r\nX-Spam: no\r\n" + signed
    assert [r.result for r in await verify_dkim(relayed, resolver)] == ["pass", "pass"]
    # relaxed canonicalization: re-folding and trailing whitespace do not matter
    refolded = signed.replace(b"Subject: Lunch", b"Subject:   Lunch \r\n ").replace(
        b"Alice\r\n", b"Alice  \r\n\r\n\r\n")
    assert [r.result for r in await verify_dkim(refolded, resolver)] == ["pass", "pass"]


async def test_no_signature(resolver: Resolver) -> None:
    assert await verify_dkim(MESSAGE, resolver) == []


async def test_key_problems_are_permerrors(resolver: Resolver) -> None:
    missing = await _signed(selectors=(("nokey", ED),))
    revoked = await _signed(selectors=(("revoked", ED),))
    wrongtype = await _signed(selectors=(("wrongtype", ED),))
    garbage = await _signed(selectors=(("garbage", ED),))
    other_domain = await _signed(domain="nowhere.test", selectors=(("ed", ED),))
    for message, why in ((missing, "no key"), (revoked, "unusable key"),
                         (wrongtype, "does not match"), (garbage, "unusable key"),
                         (other_domain, "no key")):
        [result] = await verify_dkim(message, resolver)
        assert result.result == "permerror", (why, result)
        assert why in result.reason


async def test_key_lookup_failure_is_temperror(resolver: Resolver) -> None:
    [result] = await verify_dkim(await _signed(domain="broken.test",
                                               selectors=(("ed", ED),)), resolver)
    assert result.result == "temperror"
    assert result.domain == "broken.test"


async def test_dns_timeout_is_temperror() -> None:
    # a UDP socket that never answers: the resolver times out
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        resolver = Resolver(["127.0.0.1"], port=silent.getsockname()[1], timeout=0.3)
        results = await verify_dkim(await _signed(), resolver)
    assert [r.result for r in results] == ["temperror", "temperror"]


async def test_signature_count_is_bounded(resolver: Resolver) -> None:
    signed = await _signed(selectors=(("ed", ED),))
    sig = signed[:signed.index(b"From:")]
    many = sig * 15 + MESSAGE
    results = await verify_dkim(many, resolver, max_signatures=4)
    assert [r.result for r in results] == ["pass"] * 4


async def test_large_message_verified_off_loop(resolver: Resolver) -> None:
    big = MESSAGE + b"x" * 100 + b"\r\n" + (b"y" * 76 + b"\r\n") * 5000  # > INLINE_LIMIT
    results = await verify_dkim(await _signed(message=big), resolver)
    assert [r.result for r in results] == ["pass", "pass"]


async def test_malformed_signatures_are_permerrors(resolver: Resolver) -> None:
    signed = await _signed(selectors=(("ed", ED),))
    cases = [
        b"DKIM-Signature: garbage\r\n" + MESSAGE,
        b"DKIM-Signature: v=1; a=ed25519-sha256; d=example.test; s=ed\r\n" + MESSAGE,  # no b=
        b"DKIM-Signature:\r\n" + MESSAGE,
        signed.replace(b"a=ed25519-sha256", b"a=rsa-sha1024"),
        signed.replace(b"d=example.test", b"d=exa mple.test"),
        signed.replace(b"s=ed;", b"s=ed; s=ed;"),  # duplicate tag
        signed.replace(b"v=1;", b"v=2;"),
        signed.replace(b"d=example.test", b"d=example.test; i=@other.test"),
    ]
    for message in cases:
        [result] = await verify_dkim(message, resolver)
        assert result.result == "permerror", (message[:120], result)


async def test_rsa_sha1_is_not_accepted(resolver: Resolver) -> None:
    # a valid rsa-sha1 signature (dkimpy still makes and accepts them); RFC 8301 §3.1 says no
    field = dkimpy.sign(MESSAGE, b"rsa", b"example.test", RSA.private_pem.encode(),
                        signature_algorithm=b"rsa-sha1")
    [result] = await verify_dkim(field + MESSAGE, resolver)
    assert (result.result, result.algorithm) == ("permerror", "rsa-sha1")


async def test_body_length_limit_counts_only_when_it_covers_the_body(
        resolver: Resolver) -> None:
    field = dkimpy.sign(MESSAGE, b"rsa", b"example.test", RSA.private_pem.encode(),
                        canonicalize=(b"relaxed", b"relaxed"), length=True)
    assert b" l=" in field
    [whole] = await verify_dkim(field + MESSAGE, resolver)
    assert whole.result == "pass"
    appended = field + MESSAGE + b"Click here: http://evil.test/\r\n"
    assert dkimpy.verify(appended, dnsfunc=lambda name, timeout=5: dict(
        [(b"rsa._domainkey.example.test.", f"v=DKIM1; k=rsa; p={RSA.public}".encode())]
    ).get(name))  # dkimpy calls this a pass
    [result] = await verify_dkim(appended, resolver)
    assert result.result == "policy" and "l=" in result.reason


# -- hypothesis: nothing in a signature field makes verification raise ----------------------

_TAGS = st.sampled_from([b"v", b"a", b"b", b"bh", b"c", b"d", b"h", b"i", b"l", b"q", b"s",
                         b"t", b"x", b"z", b"B", b""])
_VALUES = st.one_of(
    st.sampled_from([b"1", b"rsa-sha256", b"ed25519-sha256", b"relaxed/relaxed", b"simple",
                     b"example.test", b"ed", b"rsa", b"from:to", b"from", b"dns/txt",
                     b"AAAA", b"====", b"12", b"99999999999999999999", b"-1", b"", b"@"]),
    st.binary(max_size=30))
_FIELD = st.lists(st.tuples(_TAGS, _VALUES), max_size=12).map(
    lambda tv: b"; ".join(t + b"=" + v for t, v in tv))


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(fields=st.lists(st.one_of(_FIELD, st.binary(max_size=80)), min_size=1, max_size=3),
       body=st.binary(max_size=60))
def test_hostile_signature_fields_never_raise(resolver: Resolver, fields: list[bytes],
                                               body: bytes) -> None:
    message = b"".join(b"DKIM-Signature: " + f + b"\r\n" for f in fields) + MESSAGE + body

    async def run() -> None:
        results = await verify_dkim(message, resolver)
        assert len(results) <= 10  # MAX_SIGNATURES
        for r in results:
            assert r.result in ("pass", "fail", "policy", "permerror", "temperror", "neutral")
            assert r.result != "pass"  # nobody can forge one of our keys from tag soup
    asyncio.run(run())
