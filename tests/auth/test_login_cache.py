"""The verified-login cache (mailserver.auth.cache) alone, and through Directory.authenticate /
authenticate_cached on both engines: a hit needs the same password AND the account's current
stored hash, failures are never cached, and a password change or a disabled account takes
effect at once."""

from __future__ import annotations

import pytest

from mailserver.auth.cache import VerifiedLoginCache
from mailserver.auth.passwords import Argon2Params, hash_password

FAST = Argon2Params(time_cost=1, memory_cost=1024, parallelism=1)
LOGIN = "alice@example.test"
PASSWORD = "correct horse battery staple"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# ------------------------------------------------------------------------------------------------
# The cache alone
# ------------------------------------------------------------------------------------------------

def test_hit_needs_same_password_and_same_stored_hash() -> None:
    cache = VerifiedLoginCache(ttl=60)
    cache.remember(LOGIN, PASSWORD, "$argon2id$stored-1")
    assert cache.candidate(LOGIN, PASSWORD)
    assert cache.hit(LOGIN, PASSWORD, "$argon2id$stored-1")
    assert not cache.candidate(LOGIN, "wrong")
    assert not cache.hit(LOGIN, "wrong", "$argon2id$stored-1")
    assert not cache.hit("bob@example.test", PASSWORD, "$argon2id$stored-1")
    # the wrong guess did not evict the good entry
    assert cache.hit(LOGIN, PASSWORD, "$argon2id$stored-1")
    # the account's hash changed (password set anywhere): the entry is dropped
    assert not cache.hit(LOGIN, PASSWORD, "$argon2id$stored-2")
    assert len(cache) == 0
    assert not cache.hit(LOGIN, PASSWORD, "$argon2id$stored-1")


def test_entries_expire_after_ttl_and_hits_do_not_extend_them() -> None:
    clock = Clock()
    cache = VerifiedLoginCache(ttl=60, clock=clock)
    cache.remember(LOGIN, PASSWORD, "h")
    clock.now += 59
    assert cache.hit(LOGIN, PASSWORD, "h")
    clock.now += 1
    assert not cache.candidate(LOGIN, PASSWORD)
    assert not cache.hit(LOGIN, PASSWORD, "h")
    assert len(cache) == 0


def test_ttl_zero_disables_and_max_entries_bounds_memory() -> None:
    off = VerifiedLoginCache(ttl=0)
    off.remember(LOGIN, PASSWORD, "h")
    assert len(off) == 0 and not off.hit(LOGIN, PASSWORD, "h")
    small = VerifiedLoginCache(ttl=60, max_entries=2)
    for i in range(3):
        small.remember(f"user{i}@example.test", PASSWORD, "h")
    assert len(small) == 2
    assert not small.hit("user0@example.test", PASSWORD, "h")  # oldest went first
    assert small.hit("user2@example.test", PASSWORD, "h")
    small.forget("user2@example.test")
    assert not small.hit("user2@example.test", PASSWORD, "h")


def test_the_password_is_not_kept_in_the_clear() -> None:
    cache = VerifiedLoginCache(ttl=60)
    cache.remember(LOGIN, PASSWORD, "h")
    digest, stored, _expires = cache._entries[LOGIN]
    assert PASSWORD.encode() not in digest and len(digest) == 32 and stored == "h"
    # keyed per process: another cache derives another digest for the same password
    other = VerifiedLoginCache(ttl=60)
    other.remember(LOGIN, PASSWORD, "h")
    assert other._entries[LOGIN][0] != digest


# ------------------------------------------------------------------------------------------------
# Through the directory (SQLite and PostgreSQL)
# ------------------------------------------------------------------------------------------------

@pytest.fixture
async def directory(db):
    from mailserver.store.directory import Directory

    d = Directory(db, password_params=FAST)
    await d.add_domain("example.test")
    await d.add_account(LOGIN, PASSWORD)
    return d


async def cached(directory, login: str = LOGIN, password: str = PASSWORD):
    async with directory.db.read() as conn:
        return await directory.authenticate_cached(conn, login, password)


async def test_authenticate_fills_the_cache_only_on_success(directory) -> None:
    assert await cached(directory) is None  # nothing verified yet
    assert await directory.authenticate(LOGIN, "wrong password") is None
    assert len(directory.login_cache) == 0  # failures are never cached
    assert await cached(directory, password="wrong password") is None
    account = await directory.authenticate(LOGIN, PASSWORD)
    assert account is not None
    assert len(directory.login_cache) == 1
    hit = await cached(directory)
    assert hit == account
    # the login is normalised the same way as authenticate's
    assert await cached(directory, login="Alice@EXAMPLE.test") == account
    # a wrong password is still checked in full, and still fails
    assert await cached(directory, password="wrong password") is None
    assert await directory.authenticate(LOGIN, "wrong password") is None
    assert await directory.authenticate(LOGIN, PASSWORD) == account


async def test_password_change_invalidates_at_once(directory) -> None:
    assert await directory.authenticate(LOGIN, PASSWORD) is not None
    assert await cached(directory) is not None
    await directory.set_password(LOGIN, "a brand new password")
    assert await cached(directory) is None
    assert await directory.authenticate(LOGIN, PASSWORD) is None
    assert await directory.authenticate(LOGIN, "a brand new password") is not None
    assert await cached(directory, password="a brand new password") is not None


async def test_password_changed_by_another_process_invalidates(directory, db) -> None:
    """Another node's directory (its own cache) changes the password: the row is the truth."""
    from mailserver.store.directory import Directory

    assert await directory.authenticate(LOGIN, PASSWORD) is not None
    elsewhere = Directory(db, password_params=FAST)
    await elsewhere.set_password(LOGIN, "changed elsewhere")
    assert await cached(directory) is None
    assert await directory.authenticate(LOGIN, PASSWORD) is None


async def test_disabled_account_is_refused_even_when_cached(directory) -> None:
    assert await directory.authenticate(LOGIN, PASSWORD) is not None
    await directory.set_disabled(LOGIN, True)
    assert await cached(directory) is None
    assert await directory.authenticate(LOGIN, PASSWORD) is None
    await directory.set_disabled(LOGIN, False)
    assert await directory.authenticate(LOGIN, PASSWORD) is not None


async def test_rehash_caches_the_fresh_hash(directory, db) -> None:
    """A legacy hash is upgraded on login; the cache holds the new hash, so the next login
    hits without hashing again."""
    from sqlalchemy import update

    from mailserver.store import schema

    legacy = hash_password(PASSWORD, Argon2Params(time_cost=1, memory_cost=512))
    async with db.write() as conn:
        await conn.execute(update(schema.accounts).where(schema.accounts.c.login == LOGIN)
                           .values(password_hash=legacy))
    assert await directory.authenticate(LOGIN, PASSWORD) is not None
    async with db.read() as conn:
        stored = (await conn.execute(schema.accounts.select()
                                     .where(schema.accounts.c.login == LOGIN))).first()
    assert stored.password_hash != legacy
    assert await cached(directory) is not None


async def test_cache_off(db) -> None:
    from mailserver.store.directory import Directory

    d = Directory(db, password_params=FAST, login_cache=VerifiedLoginCache(ttl=0))
    await d.add_domain("example.test")
    await d.add_account(LOGIN, PASSWORD)
    assert await d.authenticate(LOGIN, PASSWORD) is not None
    assert await cached(d) is None
