"""DKIM keys: generation, the published record, storage per domain."""

import base64

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa

from mailserver.dkimkeys import dns_txt_record, generate_dkim_key
from mailserver.store.directory import AlreadyExists, InvalidName, InvalidValue, NotFound


def _check_pair(algorithm, private_pem, public_b64):
    private = serialization.load_pem_private_key(private_pem.encode(), password=None)
    assert private_pem.startswith("-----BEGIN PRIVATE KEY-----")  # PKCS#8
    raw = base64.b64decode(public_b64)
    msg = b"DKIM-Signature: test"
    if algorithm == "ed25519-sha256":
        assert len(raw) == 32  # RFC 8463 §4: the bare key, not SPKI
        ed25519.Ed25519PublicKey.from_public_bytes(raw).verify(private.sign(msg), msg)
    else:
        public = serialization.load_der_public_key(raw)
        assert isinstance(public, rsa.RSAPublicKey) and public.key_size == 2048
        sig = private.sign(msg, padding.PKCS1v15(), hashes.SHA256())
        public.verify(sig, msg, padding.PKCS1v15(), hashes.SHA256())


@pytest.mark.parametrize("algorithm", ["ed25519-sha256", "rsa-sha256"])
def test_generate_and_record(algorithm):
    pair = generate_dkim_key(algorithm)
    _check_pair(algorithm, pair.private_pem, pair.public)
    rec = dns_txt_record("example.com", "s2024", algorithm, pair.public)
    assert rec.name == "s2024._domainkey.example.com."
    k = "ed25519" if algorithm == "ed25519-sha256" else "rsa"
    assert rec.value == f"v=DKIM1; k={k}; p={pair.public}"
    assert "".join(rec.strings) == rec.value and all(len(s) <= 255 for s in rec.strings)
    line = rec.zone_line(3600)
    assert line.startswith("s2024._domainkey.example.com. 3600 IN TXT ")
    if algorithm == "rsa-sha256":
        assert len(rec.strings) == 2 and line.endswith(" )")  # 392 bytes of base64
    else:
        assert len(rec.strings) == 1 and line.endswith(f'"{rec.value}"')


def test_unknown_algorithm():
    with pytest.raises(ValueError):
        generate_dkim_key("rsa-sha1")
    with pytest.raises(ValueError):
        dns_txt_record("example.com", "s", "dsa", "x")


async def test_directory_keys(directory, clock):
    await directory.add_domain("example.com")
    assert await directory.list_dkim_keys("example.com") == []  # not generated on add
    ed = await directory.add_dkim_key("Example.com", "ED2024")
    rsa_key = await directory.add_dkim_key("example.com", "rsa2024", "rsa-sha256")
    assert (ed.domain, ed.selector, ed.algorithm, ed.active) == (
        "example.com", "ed2024", "ed25519-sha256", True)
    _check_pair(ed.algorithm, ed.private_key, ed.public_key)
    _check_pair(rsa_key.algorithm, rsa_key.private_key, rsa_key.public_key)
    keys = await directory.list_dkim_keys("example.com")
    assert keys == [ed, rsa_key]
    assert await directory.active_dkim_keys("example.com") == [ed, rsa_key]
    await directory.set_dkim_key_active("example.com", "rsa2024", False)
    assert [k.selector for k in await directory.active_dkim_keys("example.com")] == ["ed2024"]
    assert len(await directory.list_dkim_keys("example.com")) == 2
    with pytest.raises(AlreadyExists):
        await directory.add_dkim_key("example.com", "ed2024")
    with pytest.raises(NotFound):
        await directory.add_dkim_key("example.net", "s1")
    with pytest.raises(NotFound):
        await directory.list_dkim_keys("example.net")
    with pytest.raises(InvalidName):
        await directory.add_dkim_key("example.com", "bad selector")
    with pytest.raises(InvalidValue):
        await directory.add_dkim_key("example.com", "s1", "rsa-sha1")
    await directory.delete_dkim_key("example.com", "rsa2024")
    with pytest.raises(NotFound):
        await directory.delete_dkim_key("example.com", "rsa2024")
    assert [k.selector for k in await directory.list_dkim_keys("example.com")] == ["ed2024"]
