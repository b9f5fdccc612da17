"""DKIM signing: our signatures verify with independent verifiers — dkimpy (with plain
dnspython, not our resolver) and Debian's opendkim-testmsg (libopendkim) — over real DNS."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import dkim as dkimpy
import dns.resolver
import pytest

from mailserver.dkimkeys import dns_txt_record, generate_dkim_key
from mailserver.mailauth.dkimverify import verify_dkim
from mailserver.mailauth.dns import Resolver
from mailserver.mailauth.signing import (
    SigningKeyCache, load_signing_keys, sign, sign_message, signing_key)
from mailserver.testing.dnsserver import KnotServer

from mailserver.testing.tools import IN_CI, missing_tool  # noqa: E402,F401


ED = generate_dkim_key("ed25519-sha256")
RSA = generate_dkim_key("rsa-sha256")
DOMAIN = "example.test"
ZONES = {
    ".": [],
    DOMAIN: [
        dns_txt_record(DOMAIN, "ed", ED.algorithm, ED.public).zone_line(),
        dns_txt_record(DOMAIN, "rsa", RSA.algorithm, RSA.public).zone_line(),
    ],
}
KEYS = [signing_key(DOMAIN, "ed", ED.algorithm, ED.private_pem),
        signing_key(DOMAIN, "rsa", RSA.algorithm, RSA.private_pem)]

MESSAGE = (b"From: Alice <alice@example.test>\r\nTo: Bob <bob@example.org>\r\n"
           b"Cc: carol@example.org\r\nSubject: =?utf-8?q?Caf=C3=A9?= tomorrow\r\n"
           b"Date: Mon, 23 Nov 2026 10:00:00 +0000\r\n"
           b"Message-ID: <cafe-1@example.test>\r\nMIME-Version: 1.0\r\n"
           b"Content-Type: text/plain; charset=utf-8\r\n"
           b"Content-Transfer-Encoding: 8bit\r\n\r\n"
           b"Caf\xc3\xa9 at ten?\r\n.leading dot\r\n\r\ntrailing spaces   \r\n\r\n\r\n")


def _dnsfunc(server: KnotServer):  # type: ignore[no-untyped-def]
    # dkimpy's own lookup style (first TXT record, strings joined) with plain dnspython
    res = dns.resolver.Resolver(configure=False)
    res.nameservers, res.port = [server.host], server.port

    def get_txt(name: bytes, timeout: float = 5) -> bytes | None:
        try:
            answer = res.resolve(name.decode(), "TXT")
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return None
        return b"".join(answer[0].strings)
    return get_txt


def _dkimpy_verify_all(message: bytes, server: KnotServer) -> list[bool]:
    d = dkimpy.DKIM(message)
    count = sum(1 for n, _ in d.headers if n.lower() == b"dkim-signature")
    return [dkimpy.DKIM(message).verify(idx=i, dnsfunc=_dnsfunc(server)) for i in range(count)]


async def test_signs_with_both_algorithms(dns_server: KnotServer, resolver: Resolver) -> None:
    fields = await sign(MESSAGE, DOMAIN, KEYS)
    assert fields.startswith(b"DKIM-Signature: v=1; a=ed25519-sha256; c=relaxed/relaxed;")
    assert fields.count(b"DKIM-Signature:") == 2 and fields.endswith(b"\r\n")
    assert b"a=rsa-sha256" in fields
    assert all(len(line) <= 78 for line in fields.split(b"\r\n"))
    signed = fields + MESSAGE
    assert _dkimpy_verify_all(signed, dns_server) == [True, True]
    ours = await verify_dkim(signed, resolver)
    assert [(r.result, r.selector) for r in ours] == [("pass", "ed"), ("pass", "rsa")]


async def test_header_list_oversigns() -> None:
    fields = await sign(MESSAGE, DOMAIN, KEYS[:1])
    tags = dkimpy.util.parse_tag_value(fields.split(b":", 1)[1])
    h = [x.strip() for x in tags[b"h"].decode().replace("\r\n", "").split(":")]
    assert h.count("from") == 2 and h.count("subject") == 2 and h.count("to") == 2
    assert h.count("cc") == 2 and h.count("content-type") == 2
    assert h.count("reply-to") == 1  # absent, signed as absent so none can be added
    assert "received" not in h and "return-path" not in h
    assert tags[b"d"] == b"example.test" and tags[b"c"] == b"relaxed/relaxed"


async def test_keys_of_other_domains_are_not_used() -> None:
    assert await sign(MESSAGE, "other.test", KEYS) == b""
    assert await sign(MESSAGE, DOMAIN, []) == b""
    older = signing_key(DOMAIN, "old", ED.algorithm, ED.private_pem, created_at=1)
    newer = signing_key(DOMAIN, "new", ED.algorithm, ED.private_pem, created_at=2)
    fields = await sign(MESSAGE, DOMAIN, [newer, older])
    assert fields.count(b"DKIM-Signature:") == 1 and b"s=new;" in fields


async def test_unparseable_header_raises_value_error() -> None:
    with pytest.raises(ValueError, match="cannot be parsed"):
        await sign(b"From: a@example.test\r\nthis is no field\r\n\r\nbody\r\n", DOMAIN, KEYS)


async def test_signing_key_rejects_mismatched_pem() -> None:
    with pytest.raises(ValueError):
        signing_key(DOMAIN, "x", "rsa-sha256", ED.private_pem)
    with pytest.raises(ValueError):
        signing_key(DOMAIN, "x", "ed25519-sha256", RSA.private_pem)


async def test_large_message_signed_off_loop(dns_server: KnotServer) -> None:
    big = MESSAGE + (b"z" * 70 + b"\r\n") * 6000
    signed = await sign(big, DOMAIN, KEYS) + big
    assert _dkimpy_verify_all(signed, dns_server) == [True, True]


async def test_keys_from_directory(db) -> None:  # type: ignore[no-untyped-def]
    from mailserver.store.directory import Directory

    directory = Directory(db)
    await directory.add_domain("example.test")
    assert await load_signing_keys(directory, "example.test") == []
    await directory.add_dkim_key("example.test", "ed2026", "ed25519-sha256")
    await directory.add_dkim_key("example.test", "rsa2026", "rsa-sha256")
    now = [1000.0]
    cache = SigningKeyCache(directory, ttl=60, clock=lambda: now[0])
    keys = await cache.get("Example.Test")
    assert sorted((k.selector, k.algorithm) for k in keys) == [
        ("ed2026", "ed25519-sha256"), ("rsa2026", "rsa-sha256")]
    assert await cache.get("example.test") is keys  # cached
    await directory.set_dkim_key_active("example.test", "rsa2026", False)
    assert len(await cache.get("example.test")) == 2  # until the TTL or invalidate()
    now[0] += 61
    assert [k.selector for k in await cache.get("example.test")] == ["ed2026"]
    await directory.set_dkim_key_active("example.test", "rsa2026", True)
    cache.invalidate("example.test")
    assert len(await cache.get("example.test")) == 2
    await directory.set_dkim_key_active("example.test", "rsa2026", False)
    cache.invalidate()
    keys = await cache.get("example.test")
    assert [k.selector for k in keys] == ["ed2026"]
    fields = await sign(MESSAGE, "example.test", keys)
    assert b"s=ed2026;" in fields and fields.count(b"DKIM-Signature:") == 1
    # the one-call form the submission daemon uses, with the cache or the directory
    for source in (cache, directory):
        signed = await sign_message(MESSAGE, "example.test", source)
        assert signed.endswith(MESSAGE) and signed.count(b"DKIM-Signature:") == 1
    assert await sign_message(MESSAGE, "unhosted.test", directory) == MESSAGE


# -- opendkim-testmsg ----------------------------------------------------------------------


def _opendkim(messages: list[bytes], tmp_path: Path) -> list[dict]:
    """Run opendkim-testmsg on each message against ZONES (see opendkim_netns.py)."""
    search = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"
    if shutil.which("opendkim-testmsg", path=search) is None:
        missing_tool("opendkim-testmsg not installed (Debian package: opendkim-tools)")
    if shutil.which("unshare", path=search) is None or shutil.which("ip", path=search) is None:
        missing_tool("unshare/ip not installed (util-linux, iproute2)")
    (tmp_path / "zones.json").write_text(json.dumps(ZONES))
    paths = []
    for i, m in enumerate(messages):
        (tmp_path / f"m{i}.eml").write_bytes(m)
        paths.append(str(tmp_path / f"m{i}.eml"))
    root = Path(__file__).resolve().parents[2]
    env = dict(os.environ, PYTHONPATH=str(root), PATH=search)
    proc = subprocess.run(
        ["unshare", "-rmn", sys.executable, str(Path(__file__).parent / "opendkim_netns.py"),
         str(tmp_path / "zones.json"), *paths],
        capture_output=True, env=env, timeout=120)
    if proc.returncode != 0 and b"unshare" in proc.stderr and not IN_CI:
        pytest.skip(f"no user namespaces here: {proc.stderr.decode(errors='replace')}")
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    return json.loads(proc.stdout)


async def test_opendkim_verifies_our_signatures(tmp_path: Path) -> None:
    both = await sign(MESSAGE, DOMAIN, KEYS) + MESSAGE
    ed_only = await sign(MESSAGE, DOMAIN, KEYS[:1]) + MESSAGE
    rsa_only = await sign(MESSAGE, DOMAIN, KEYS[1:]) + MESSAGE
    unknown = await sign(MESSAGE, DOMAIN, [signing_key(DOMAIN, "nokey", ED.algorithm,
                                                       ED.private_pem)]) + MESSAGE
    results = _opendkim([
        both, ed_only, rsa_only,
        ed_only.replace(b"at ten", b"at eleven"),  # tampered body
        rsa_only.replace(b"tomorrow", b"today"),  # tampered signed header
        unknown,  # no key published
    ], tmp_path)
    assert [r["rc"] for r in results[:3]] == [0, 0, 0], results
    assert all(r["rc"] != 0 for r in results[3:]), results
    assert "Bad signature" in results[3]["out"] and "Bad signature" in results[4]["out"]
    assert "Key retrieval failed" in results[5]["out"], results
