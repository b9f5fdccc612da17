"""Password hashing: argon2id out, every accepted import format in."""

import asyncio
import warnings

import argon2
import bcrypt
import pytest
from argon2.low_level import Type

from mailserver.auth.passwords import (
    DEFAULT_ARGON2,
    Argon2Params,
    ahash_password,
    averify_password,
    hash_password,
    is_supported_hash,
    needs_rehash,
    verify_password,
)
from mailserver.auth.shacrypt import sha_crypt

FAST = Argon2Params(time_cost=1, memory_cost=1024, parallelism=1)


def test_argon2id_roundtrip_and_format():
    h = hash_password("correct horse", FAST)
    assert h.startswith("$argon2id$v=19$m=1024,t=1,p=1$")
    assert verify_password(h, "correct horse")
    assert not verify_password(h, "correct horsE")
    assert not needs_rehash(h, FAST)
    # Dovecot's scheme prefix, any case
    assert verify_password("{ARGON2ID}" + h, "correct horse")
    assert verify_password("{argon2id}" + h, "correct horse")
    assert not verify_password("{ARGON2ID}" + h, "wrong")


def test_default_parameters_are_used_by_default():
    h = hash_password("pw")
    assert f"m={DEFAULT_ARGON2.memory_cost},t={DEFAULT_ARGON2.time_cost}," in h
    assert not needs_rehash(h)
    assert needs_rehash(hash_password("pw", FAST))  # weaker than the default: upgrade


def test_argon2i_from_dovecot():
    h = argon2.PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1, type=Type.I).hash("pw")
    assert verify_password("{ARGON2I}" + h, "pw")
    assert verify_password(h, "pw")
    assert needs_rehash(h, FAST)  # argon2i → argon2id
    assert not verify_password("{ARGON2ID}" + h, "pw")  # the prefix must match the hash


def test_sha_crypt_formats():
    h512 = sha_crypt("secret", "$6$rounds=5000$abcdefgh")
    h256 = sha_crypt("secret", "$5$abcdefgh")
    for stored in (h512, "{SHA512-CRYPT}" + h512, "{CRYPT}" + h512,
                   h256, "{SHA256-CRYPT}" + h256, "{CRYPT}" + h256):
        assert verify_password(stored, "secret"), stored
        assert not verify_password(stored, "Secret"), stored
        assert needs_rehash(stored, FAST)
        assert is_supported_hash(stored)
    # a prefix that names a different scheme than the hash is refused
    assert not verify_password("{SHA256-CRYPT}" + h512, "secret")
    assert not verify_password("{BLF-CRYPT}" + h512, "secret")


def test_real_dovecot_sha512_crypt_string():
    # What `doveadm pw -s SHA512-CRYPT` stores: the scheme prefix, then a glibc $6$ hash.
    stored = "{SHA512-CRYPT}" + sha_crypt("dovecot-pass", "$6$ZqV1r2.Jx8TqUoA1")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            import crypt
        except ImportError:
            crypt = None
    if crypt is not None:
        bare = stored[len("{SHA512-CRYPT}"):]
        assert crypt.crypt("dovecot-pass", bare) == bare
    assert verify_password(stored, "dovecot-pass")
    assert not verify_password(stored, "dovecot-pasS")


def test_bcrypt_variants():
    h = bcrypt.hashpw(b"blowfish", bcrypt.gensalt(rounds=4)).decode()
    assert h.startswith("$2b$")
    variants = [h, h.replace("$2b$", "$2y$", 1), h.replace("$2b$", "$2a$", 1)]
    for v in variants:
        for stored in (v, "{BLF-CRYPT}" + v, "{CRYPT}" + v):
            assert verify_password(stored, "blowfish"), stored
            assert not verify_password(stored, "blowfisH"), stored
            assert needs_rehash(stored, FAST)
    # bcrypt only ever saw the first 72 bytes; longer passwords verify as the hasher did
    long_pw = "p" * 100
    h_long = bcrypt.hashpw(long_pw.encode()[:72], bcrypt.gensalt(rounds=4)).decode()
    assert verify_password(h_long, long_pw)


def test_plain_for_imports_only():
    assert verify_password("{PLAIN}hunter2", "hunter2")
    assert verify_password("{plain}hunter2", "hunter2")
    assert verify_password("{CLEARTEXT}hunter2", "hunter2")
    assert not verify_password("{PLAIN}hunter2", "hunter")
    assert not verify_password("{PLAIN}hunter2", "hunter22")
    assert needs_rehash("{PLAIN}hunter2", FAST)
    assert verify_password("{PLAIN}pässword", "pässword".encode())
    # an unprefixed string is never compared as plain text
    assert not verify_password("hunter2", "hunter2")


@pytest.mark.parametrize("stored", [
    "", "garbage", "{MD5-CRYPT}$1$abc$def", "$1$saltsalt$YMyguxXMBpd2TEZ.vS/3q1", "abJnggxhB/yWI",
    "{SSHA512}abc", "{UNKNOWN}x", "$argon2id$broken", "$2b$04$short", "{CRYPT}hunter2",
    "$6$", "$argon2d$v=19$m=1024,t=1,p=1$c29tZXNhbHQ$aGFzaA",
])
def test_unknown_or_broken_never_verifies(stored):
    assert verify_password(stored, "hunter2") is False
    assert needs_rehash(stored, FAST)


def test_is_supported_hash():
    assert is_supported_hash(hash_password("x", FAST))
    assert is_supported_hash("{PLAIN}x")
    assert not is_supported_hash("{MD5-CRYPT}$1$abc$def")
    assert not is_supported_hash("$1$abc$def")


def test_needs_rehash_on_parameter_change():
    h = hash_password("pw", FAST)
    assert needs_rehash(h, Argon2Params(time_cost=2, memory_cost=1024, parallelism=1))
    assert not needs_rehash("{ARGON2ID}" + h, FAST)


async def test_async_variants_run_off_the_loop():
    h = await ahash_password("pw", FAST)
    results = await asyncio.gather(*(averify_password(h, p) for p in ("pw", "no", "pw")))
    assert results == [True, False, True]
