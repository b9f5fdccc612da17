"""API tokens and app passwords: issue once, store a hash, authenticate, expire, revoke."""

import pytest
from sqlalchemy import select

from mailserver.store import schema
from mailserver.store.directory import InvalidValue, NotFound


async def test_token_flow(directory, db, clock):
    await directory.add_domain("example.com")
    bob = await directory.add_account("bob@example.com", "pw")
    alice = await directory.add_account("alice@example.com", "pw")
    t1 = await directory.create_token("Bob@example.com", "jmap client")
    t2 = await directory.create_token("bob@example.com", "phone", kind="app_password")
    t3 = await directory.create_token("alice@example.com", "alice's")
    assert t1.startswith("ms_") and t1 != t2
    async with db.read() as conn:
        rows = (await conn.execute(select(schema.credentials))).mappings().all()
    assert all(t1.split("_", 2)[2] not in r["secret_hash"] for r in rows)  # only a hash
    assert sorted((r["account_id"], r["id"]) for r in rows) == [(bob.id, 1), (bob.id, 2),
                                                              (alice.id, 1)]
    infos = await directory.list_tokens("bob@example.com")
    assert [(i.id, i.kind, i.name, i.last_used_at) for i in infos] == [
        (1, "token", "jmap client", None), (2, "app_password", "phone", None)]

    assert (await directory.authenticate_token(t1)).id == bob.id
    assert (await directory.authenticate_token(t3)).id == alice.id
    assert await directory.authenticate_token(t1, kind="app_password") is None
    assert (await directory.authenticate_token(t2, kind="app_password")).id == bob.id
    assert (await directory.list_tokens("bob@example.com"))[0].last_used_at == int(clock.now)
    # tampered, truncated and foreign strings
    for bad in (t1[:-1], t1 + "x", t1.replace("ms_", "xx_"), "ms_", "ms_abc_def", "", "garbage",
                t1[:20] + t3[20:]):
        assert await directory.authenticate_token(bad) is None, bad

    # an app password works as the password of its own account only
    assert (await directory.authenticate("bob@example.com", t2)).id == bob.id
    assert await directory.authenticate("alice@example.com", t2) is None
    assert await directory.authenticate("bob@example.com", t1) is None  # a token, not an app pw

    await directory.set_disabled("bob@example.com", True)
    assert await directory.authenticate_token(t1) is None
    await directory.set_disabled("bob@example.com", False)

    await directory.revoke_token("bob@example.com", 1)
    assert await directory.authenticate_token(t1) is None
    assert [i.id for i in await directory.list_tokens("bob@example.com")] == [2]
    with pytest.raises(NotFound):
        await directory.revoke_token("bob@example.com", 1)
    with pytest.raises(NotFound):
        await directory.revoke_token("alice@example.com", 2)  # bob's, not alice's
    # ids keep growing per account
    await directory.create_token("bob@example.com", "again")
    assert [i.id for i in await directory.list_tokens("bob@example.com")] == [2, 3]


async def test_expiry_and_errors(directory, clock):
    await directory.add_domain("example.com")
    await directory.add_account("bob@example.com", "pw")
    t = await directory.create_token("bob@example.com", "short", expires_at=int(clock.now) + 60)
    assert await directory.authenticate_token(t) is not None
    clock.now += 61
    assert await directory.authenticate_token(t) is None
    with pytest.raises(NotFound):
        await directory.create_token("nobody@example.com", "x")
    with pytest.raises(NotFound):
        await directory.list_tokens("nobody@example.com")
    with pytest.raises(InvalidValue):
        await directory.create_token("bob@example.com", "x", kind="cookie")


async def test_concurrent_creation_gets_distinct_ids(directory):
    import asyncio

    await directory.add_domain("example.com")
    await directory.add_account("bob@example.com", "pw")
    tokens = await asyncio.gather(*(directory.create_token("bob@example.com", f"t{i}")
                                    for i in range(6)))
    assert len(set(tokens)) == 6
    assert [i.id for i in await directory.list_tokens("bob@example.com")] == [1, 2, 3, 4, 5, 6]
