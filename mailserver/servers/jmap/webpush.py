"""Web Push message encryption (RFC 8291 on RFC 8188 ``aes128gcm``) for PushSubscription
``keys`` (RFC 8620 §7.2).

A client that gives ``keys`` (``p256dh``: its P-256 public key, uncompressed point,
base64url; ``auth``: a 16-byte secret, base64url) gets every push body — the PushVerification
and each StateChange — encrypted so that the push service in between reads nothing:

    ecdh      = ECDH(ephemeral server key, p256dh)
    IKM       = HKDF(salt=auth, ikm=ecdh, info="WebPush: info\\0" || ua_public || as_public, 32)
    CEK/NONCE = HKDF(salt=random 16 bytes, ikm=IKM, info="Content-Encoding: aes128gcm\\0" /
                "Content-Encoding: nonce\\0", 16 / 12)
    body      = salt || rs (uint32) || 65 || as_public || AES-128-GCM(payload || 0x02)

One record (the payload padded by nothing, the record size chosen to fit it), a fresh
ephemeral key and salt per message. The POST carries ``Content-Encoding: aes128gcm``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import struct

from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

__all__ = ["KeyError_", "encrypt", "parse_keys"]

MIN_RECORD = 4096


class KeyError_(ValueError):
    """The subscription's ``keys`` are not a usable P-256 key and 16-byte secret."""


def _b64url(value: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except (binascii.Error, ValueError):
        raise KeyError_("not base64url") from None


def parse_keys(keys: object) -> tuple[bytes, bytes]:
    """(p256dh public point, auth secret) from the JMAP ``keys`` object; ``KeyError_``."""
    if not isinstance(keys, dict) or set(keys) != {"p256dh", "auth"} \
            or not all(isinstance(v, str) for v in keys.values()):
        raise KeyError_("keys must be an object with p256dh and auth strings")
    public = _b64url(keys["p256dh"])
    auth = _b64url(keys["auth"])
    if len(auth) != 16:  # RFC 8291 §3.2
        raise KeyError_("auth must be 16 bytes")
    try:
        ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), public)
    except ValueError:
        raise KeyError_("p256dh is not a P-256 public key") from None
    if len(public) != 65:  # uncompressed form only (RFC 8291 §3.1)
        raise KeyError_("p256dh must be an uncompressed point")
    return public, auth


def _hkdf(salt: bytes, ikm: bytes, info: bytes, length: int) -> bytes:
    prk = hmac.new(salt, ikm, hashlib.sha256).digest()
    return hmac.new(prk, info + b"\x01", hashlib.sha256).digest()[:length]


def encrypt(payload: bytes, ua_public: bytes, auth: bytes, *, salt: bytes | None = None,
            private_key: ec.EllipticCurvePrivateKey | None = None) -> bytes:
    """The ``aes128gcm`` body for ``payload`` (``salt``/``private_key``: for tests only)."""
    key = private_key or ec.generate_private_key(ec.SECP256R1())
    as_public = key.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
    peer = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), ua_public)
    shared = key.exchange(ec.ECDH(), peer)
    ikm = _hkdf(auth, shared, b"WebPush: info\x00" + ua_public + as_public, 32)
    salt = salt or os.urandom(16)
    cek = _hkdf(salt, ikm, b"Content-Encoding: aes128gcm\x00", 16)
    nonce = _hkdf(salt, ikm, b"Content-Encoding: nonce\x00", 12)
    sealed = AESGCM(cek).encrypt(nonce, payload + b"\x02", None)  # 0x02: the last record
    rs = max(MIN_RECORD, len(sealed))
    return salt + struct.pack("!IB", rs, len(as_public)) + as_public + sealed
