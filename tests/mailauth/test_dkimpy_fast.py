"""The dkimpy drop-ins of mailauth/dkimpy_fast.py give exactly dkimpy's results."""

from __future__ import annotations

import hashlib

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from dkim.crypto import RSASSA_PKCS1_v1_5_sign, parse_pem_private_key
from hypothesis import given, settings
from hypothesis import strategies as st

from mailserver.mailauth.dkimpy_fast import (
    dkimpy_relaxed_body, dkimpy_relaxed_headers, dkimpy_rfc822_parse, dkimpy_rsa_verify,
    relaxed_body, relaxed_headers, rfc822_parse, rsa_verify)

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


_MSG_PIECES = st.sampled_from([b"Subject: hi", b"From: a@b", b"From x", b" folded", b"\tx",
                               b"\r\n", b"\n", b"\r", b"\r\n\r\n", b"\n\n", b"\n\r\n",
                               b"body line", b"", b"X-\xc3\xa9: v", b":", b"bad line"])
_MESSAGE = st.one_of(st.lists(_MSG_PIECES, max_size=30).map(b"".join), st.binary(max_size=120))


def _outcome(parse, message: bytes):
    try:
        return parse(message)
    except Exception as exc:  # noqa: BLE001 - the same failure is part of "the same result"
        return type(exc).__name__, str(exc)


@settings(max_examples=600, deadline=None)
@given(_MESSAGE)
def test_rfc822_parse_same_as_dkimpy(message: bytes) -> None:
    assert _outcome(rfc822_parse, message) == _outcome(dkimpy_rfc822_parse, message)


def test_rfc822_parse_examples() -> None:
    for message in (b"", b"\r\n", b"\nbody\n", b"A: 1\r\n", b"A: 1", b"A: 1\r\n\r\nB\nC\r\n",
                    b"A: 1\n b\n\nbody\r\n\n", b"A: 1\r\n\r\r\n", b" x: 1\r\n"):
        assert _outcome(rfc822_parse, message) == _outcome(dkimpy_rfc822_parse, message), message
    assert rfc822_parse(b"A: 1\r\n b\r\n\r\nx\ny\r\n") == ([[b"A", b" 1\r\n b\r\n"]],
                                                                b"x\r\ny\r\n")


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
