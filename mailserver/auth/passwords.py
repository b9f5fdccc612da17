"""Password hashes: argon2id for everything we write, the common imported formats for reading.

Stored form of new hashes: the standard PHC string ``$argon2id$v=19$m=…,t=…,p=…$salt$hash``.

Accepted on verification (Dovecot scheme prefixes are case-insensitive):

- ``$argon2id$…`` / ``$argon2i$…``, optionally prefixed ``{ARGON2ID}`` / ``{ARGON2I}``;
- SHA-crypt ``$6$…`` / ``$5$…``, plain or prefixed ``{SHA512-CRYPT}``, ``{SHA256-CRYPT}``,
  ``{CRYPT}`` (our own implementation, ``mailserver.auth.shacrypt``);
- bcrypt ``$2y$`` / ``$2b$`` / ``$2a$``, plain or prefixed ``{BLF-CRYPT}`` / ``{CRYPT}``;
  passwords longer than bcrypt's 72-byte limit are cut there, as the hashing side did;
- ``{PLAIN}`` / ``{CLEAR}`` / ``{CLEARTEXT}``, only so that an import can be logged into once
  and upgraded.

Anything else (DES or MD5 crypt, ``{SSHA512}`` …) never verifies; ``is_supported_hash()`` lets an
importer refuse it up front. ``needs_rehash()`` tells a successful login to store a fresh
argon2id hash instead (imported format, or argon2 parameters below the current ones).

Every check compares in constant time (``hmac.compare_digest``; bcrypt and argon2 do their own).
Hashing is deliberately slow; daemons call ``averify_password`` / ``ahash_password``, which run
in a worker thread (argon2 and bcrypt release the GIL) so the event loop keeps serving.
"""

from __future__ import annotations

import asyncio
import hmac
import re
from dataclasses import dataclass

import argon2
import bcrypt
from argon2.low_level import Type

from mailserver.auth.shacrypt import verify_sha_crypt

__all__ = [
    "Argon2Params", "DEFAULT_ARGON2", "hash_password", "verify_password", "needs_rehash",
    "ahash_password", "averify_password", "is_supported_hash",
]


@dataclass(frozen=True, slots=True)
class Argon2Params:
    """argon2id cost parameters (memory in KiB)."""

    time_cost: int = 2
    memory_cost: int = 19 * 1024
    parallelism: int = 1

    def hasher(self) -> argon2.PasswordHasher:
        return argon2.PasswordHasher(time_cost=self.time_cost, memory_cost=self.memory_cost,
                                     parallelism=self.parallelism, hash_len=32, salt_len=16,
                                     type=Type.ID)


# OWASP's argon2id baseline (19 MiB, 2 passes, 1 lane): ~40 ms per check on a busy 2-core VM.
# A mail server checks passwords far more often than a web site (every IMAP/POP3/SMTP
# connection of every client), so we stay at the baseline rather than RFC 9106's
# 64 MiB × 3 passes × 4 lanes (~150 ms on the same VM, 4× the memory per concurrent login).
DEFAULT_ARGON2 = Argon2Params()

_SCHEME = re.compile(r"\{([A-Za-z0-9._-]+)\}")
_PLAIN_SCHEMES = {"PLAIN", "CLEAR", "CLEARTEXT"}
_BCRYPT_PREFIXES = ("$2y$", "$2b$", "$2a$")
_SHACRYPT_PREFIXES = ("$5$", "$6$")
_ARGON_PREFIXES = ("$argon2id$", "$argon2i$")
# Scheme prefix → which hash strings it may wrap.
_SCHEME_ACCEPTS: dict[str, tuple[str, ...]] = {
    "ARGON2ID": ("$argon2id$",),
    "ARGON2I": ("$argon2i$",),
    "SHA512-CRYPT": ("$6$",),
    "SHA256-CRYPT": ("$5$",),
    "BLF-CRYPT": _BCRYPT_PREFIXES,
    "CRYPT": _SHACRYPT_PREFIXES + _BCRYPT_PREFIXES,
}


def _as_bytes(plain: str | bytes) -> bytes:
    return plain.encode("utf-8") if isinstance(plain, str) else plain


def _split_scheme(stored: str) -> tuple[str | None, str]:
    m = _SCHEME.match(stored)
    if m is None:
        return None, stored
    return m.group(1).upper(), stored[m.end():]


def _classify(stored: str) -> tuple[str, str] | None:
    """(kind, bare hash) for a stored string, kind in argon2/shacrypt/bcrypt/plain; or None."""
    scheme, rest = _split_scheme(stored)
    if scheme in _PLAIN_SCHEMES:
        return "plain", rest
    if scheme is not None:
        accepted = _SCHEME_ACCEPTS.get(scheme)
        if accepted is None or not rest.startswith(accepted):
            return None
    if rest.startswith(_ARGON_PREFIXES):
        return "argon2", rest
    if rest.startswith(_SHACRYPT_PREFIXES):
        return "shacrypt", rest
    if rest.startswith(_BCRYPT_PREFIXES):
        return "bcrypt", rest
    return None


def is_supported_hash(stored: str) -> bool:
    """Whether ``verify_password`` understands this stored form (for importers)."""
    return _classify(stored) is not None


def hash_password(plain: str | bytes, params: Argon2Params = DEFAULT_ARGON2) -> str:
    """A new argon2id hash (PHC string, no scheme prefix)."""
    return params.hasher().hash(_as_bytes(plain))


def verify_password(stored: str, plain: str | bytes) -> bool:
    """Whether ``plain`` matches ``stored`` (any accepted format); False for unknown formats."""
    found = _classify(stored)
    if found is None:
        return False
    kind, bare = found
    pw = _as_bytes(plain)
    if kind == "argon2":
        try:
            # The parameters come from the hash itself; the hasher's own do not matter here.
            return DEFAULT_ARGON2.hasher().verify(bare, pw)
        except argon2.exceptions.VerificationError:
            return False
        except (argon2.exceptions.InvalidHashError, ValueError):
            return False
    if kind == "shacrypt":
        return verify_sha_crypt(bare, pw)
    if kind == "bcrypt":
        try:
            return bcrypt.checkpw(pw[:72], bare.encode("ascii"))
        except (ValueError, UnicodeEncodeError):
            return False
    # plain: imports only
    return hmac.compare_digest(bare.encode("utf-8"), pw)


def needs_rehash(stored: str, params: Argon2Params = DEFAULT_ARGON2) -> bool:
    """True unless ``stored`` is argon2id with exactly the current parameters."""
    found = _classify(stored)
    if found is None or found[0] != "argon2" or not found[1].startswith("$argon2id$"):
        return True
    try:
        return params.hasher().check_needs_rehash(found[1])
    except (argon2.exceptions.InvalidHashError, ValueError):
        return True


async def averify_password(stored: str, plain: str | bytes) -> bool:
    """``verify_password`` in a worker thread, so the event loop is not blocked."""
    return await asyncio.to_thread(verify_password, stored, plain)


async def ahash_password(plain: str | bytes, params: Argon2Params = DEFAULT_ARGON2) -> str:
    """``hash_password`` in a worker thread."""
    return await asyncio.to_thread(hash_password, plain, params)
