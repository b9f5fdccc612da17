"""SHA-crypt: the ``$5$`` (SHA-256) and ``$6$`` (SHA-512) password hashes of glibc/libxcrypt.

Written here because Python 3.13 removed the ``crypt`` module and imported mail systems
(Dovecot ``{SHA512-CRYPT}`` / ``{SHA256-CRYPT}``, ``/etc/shadow``) store these hashes. This is
Ulrich Drepper's "Unix crypt using SHA-256 and SHA-512" (version 0.6, 2016), including the
``rounds=<N>`` parameter (default 5000, clamped to 1000…999999999), salts truncated to 16
characters, and the custom base-64 transposition of the final digest.

We only *verify* these hashes (and hash in tests); new passwords get argon2id
(``mailserver.auth.passwords``).
"""

from __future__ import annotations

import hashlib
import hmac

__all__ = ["sha_crypt", "verify_sha_crypt", "ShaCryptError"]

ROUNDS_DEFAULT = 5000
ROUNDS_MIN = 1000
ROUNDS_MAX = 999_999_999
SALT_MAX = 16

_ALPHABET = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

# The digest bytes in the order the spec encodes them, three at a time (b2, b1, b0), the last
# group shorter. Lifted from the reference implementation's b64_from_24bit() calls.
_ORDER_256 = (
    (0, 10, 20), (21, 1, 11), (12, 22, 2), (3, 13, 23), (24, 4, 14),
    (15, 25, 5), (6, 16, 26), (27, 7, 17), (18, 28, 8), (9, 19, 29),
)
_ORDER_512 = (
    (0, 21, 42), (22, 43, 1), (44, 2, 23), (3, 24, 45), (25, 46, 4), (47, 5, 26),
    (6, 27, 48), (28, 49, 7), (50, 8, 29), (9, 30, 51), (31, 52, 10), (53, 11, 32),
    (12, 33, 54), (34, 55, 13), (56, 14, 35), (15, 36, 57), (37, 58, 16), (59, 17, 38),
    (18, 39, 60), (40, 61, 19), (62, 20, 41),
)


class ShaCryptError(ValueError):
    """A malformed ``$5$``/``$6$`` string."""


def _b64_24(b2: int, b1: int, b0: int, n: int) -> str:
    w = (b2 << 16) | (b1 << 8) | b0
    out = []
    for _ in range(n):
        out.append(_ALPHABET[w & 0x3F])
        w >>= 6
    return "".join(out)


def _encode(digest: bytes, variant: str) -> str:
    if variant == "5":
        parts = [_b64_24(digest[a], digest[b], digest[c], 4) for a, b, c in _ORDER_256]
        parts.append(_b64_24(0, digest[31], digest[30], 3))
    else:
        parts = [_b64_24(digest[a], digest[b], digest[c], 4) for a, b, c in _ORDER_512]
        parts.append(_b64_24(0, 0, digest[63], 2))
    return "".join(parts)


def _repeat(block: bytes, length: int) -> bytes:
    """``block`` repeated and cut to ``length`` bytes (the spec's "for each block of 32/64…")."""
    q, r = divmod(length, len(block))
    return block * q + block[:r]


def _digest(password: bytes, salt: bytes, rounds: int, variant: str) -> bytes:
    h = hashlib.sha256 if variant == "5" else hashlib.sha512
    plen = len(password)
    b = h(password + salt + password).digest()
    a = h(password + salt + _repeat(b, plen))
    n = plen
    while n:  # the bits of len(password), least significant first
        a.update(b if n & 1 else password)
        n >>= 1
    a_digest = a.digest()
    p_seq = _repeat(h(password * plen).digest(), plen)
    s_seq = _repeat(h(salt * (16 + a_digest[0])).digest(), len(salt))

    # Round i hashes: (odd ? P : C) + (i%3 ? S : "") + (i%7 ? P : "") + (odd ? C : P).
    # The pattern repeats every 42 rounds, so precompute the constant prefix/suffix around C.
    table = []
    for i in range(42):
        mid = (s_seq if i % 3 else b"") + (p_seq if i % 7 else b"")
        table.append((p_seq + mid, b"") if i & 1 else (b"", mid + p_seq))
    c = a_digest
    for i in range(rounds):
        prefix, suffix = table[i % 42]
        c = h(prefix + c + suffix).digest()
    return c


def _parse_setting(setting: str) -> tuple[str, int | None, str]:
    """Split ``$6$[rounds=N$]salt[$hash]`` into (variant, rounds or None, salt)."""
    if len(setting) < 3 or setting[0] != "$" or setting[1] not in "56" or setting[2] != "$":
        raise ShaCryptError("not a $5$ or $6$ SHA-crypt string")
    variant = setting[1]
    rest = setting[3:]
    rounds: int | None = None
    if rest.startswith("rounds="):
        num, sep, rest = rest[len("rounds="):].partition("$")
        if not sep or not num.isdigit() or len(num) > 10:
            raise ShaCryptError("bad rounds= in SHA-crypt string")
        rounds = min(max(int(num), ROUNDS_MIN), ROUNDS_MAX)
    salt = rest.split("$", 1)[0][:SALT_MAX]
    if any(ch in salt for ch in ":\n") or not salt.isascii():
        raise ShaCryptError("bad salt in SHA-crypt string")
    return variant, rounds, salt


def sha_crypt(password: str | bytes, setting: str) -> str:
    """Hash ``password`` with the ``$5$``/``$6$`` setting (or full hash) given, like crypt(3).

    ``setting`` is ``$6$salt``, ``$6$rounds=N$salt`` or a complete hash (whose salt and rounds
    are reused). ``rounds=`` appears in the output exactly when it appears in the setting.
    """
    variant, rounds, salt = _parse_setting(setting)
    pw = password.encode("utf-8") if isinstance(password, str) else password
    digest = _digest(pw, salt.encode("ascii"), ROUNDS_DEFAULT if rounds is None else rounds,
                     variant)
    rounds_part = "" if rounds is None else f"rounds={rounds}$"
    return f"${variant}${rounds_part}{salt}${_encode(digest, variant)}"


def verify_sha_crypt(stored: str, password: str | bytes) -> bool:
    """Constant-time check of ``password`` against a complete ``$5$``/``$6$`` hash."""
    try:
        computed = sha_crypt(password, stored)
    except ShaCryptError:
        return False
    return hmac.compare_digest(computed.encode("ascii"), stored.encode("ascii", "replace"))
