"""The dkimpy drop-ins of mailauth/dkimpy_fast.py give exactly dkimpy's results."""

from __future__ import annotations

import hashlib

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from dkim.crypto import RSASSA_PKCS1_v1_5_sign, parse_pem_private_key
from hypothesis import given, settings
from hypothesis import strategies as st

from mailserver.mailauth.dkimpy_fast import (
    dkimpy_relaxed_body, dkimpy_relaxed_headers, dkimpy_rsa_verify, relaxed_body,
    relaxed_headers, rsa_verify)

_PIECES = st.sampled_from([b" ", b"  ", b"\t", b" \t ", b"\r\n", b"\r", b"\n", b"a", b"word",
                           b"\r\n\r\n", b"\x00", b"\xc3\xa9", b".", b"\t\r\n", b" \r\n"])
_TEXT = st.one_of(st.lists(_PIECES, max_size=40).map(b"".join), st.binary(max_size=200))


@settings(max_examples=400, deadline=None)
@given(_TEXT)
def test_body_same_bytes_as_dkimpy(body: bytes) -> None:
    assert relaxed_body(body) == dkimpy_relaxed_body(body)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(_TEXT, _TEXT), max_size=6))
def test_headers_same_as_dkimpy(headers: list[tuple[bytes, bytes]]) -> None:
    assert relaxed_headers(headers) == dkimpy_relaxed_headers(headers)


def test_rfc6376_example() -> None:
    # RFC 6376 §3.4.6
    assert relaxed_headers([(b"A", b" X\r\n"), (b"B ", b" Y\t\r\n\tZ  \r\n")]) == [
        (b"a", b"X\r\n"), (b"b", b"Y Z\r\n")]
    assert relaxed_body(b" C \r\nD \t E\r\n\r\n\r\n") == b" C\r\nD E\r\n"
    assert relaxed_body(b"") == b"" and relaxed_body(b"\r\n\r\n") == b""


class _Hash:
    """The shape dkimpy hands to RSASSA_PKCS1_v1_5_verify (its HashThrough)."""

    def __init__(self, data: bytes, name: str = "sha256") -> None:
        self._h = hashlib.new(name, data)
        self.name = name

    def digest(self) -> bytes:
        return self._h.digest()


def test_rsa_verify_agrees_with_dkimpy() -> None:
    for bits in (1024, 2048):
        key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
        private = parse_pem_private_key(pem)
        public = {"modulus": private["modulus"], "publicExponent": private["publicExponent"]}
        for name in ("sha256", "sha1"):
            signature = RSASSA_PKCS1_v1_5_sign(_Hash(b"signed data", name), private)
            cases = [
                (_Hash(b"signed data", name), signature),
                (_Hash(b"other data", name), signature),
                (_Hash(b"signed data", name), signature[:-1] + bytes([signature[-1] ^ 1])),
                (_Hash(b"signed data", name), b"\x00" * len(signature)),
            ]
            for h, sig in cases:
                assert rsa_verify(h, sig, public) == dkimpy_rsa_verify(h, sig, public)
            assert rsa_verify(_Hash(b"signed data", name), signature, public) is True
