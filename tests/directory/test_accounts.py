"""Accounts: creation with default mailboxes, settings, deletion, authentication."""

import pytest
from sqlalchemy import func, insert, select

from mailserver.auth.passwords import Argon2Params, hash_password
from mailserver.auth.shacrypt import sha_crypt
from mailserver.store import schema
from mailserver.store.directory import (
    AlreadyExists,
    Directory,
    InvalidName,
    InvalidValue,
    NotFound,
)


@pytest.fixture
async def example(directory):
    await directory.add_domain("example.com")
    return directory


async def _stored_hash(db, login):
    async with db.read() as conn:
        return (await conn.execute(select(schema.accounts.c.password_hash)
                                   .where(schema.accounts.c.login == login))).scalar_one()


async def test_add_account_creates_mailboxes_and_changes(example, db, clock):
    acc = await example.add_account("Alice@Example.com", "s3cret", quota_bytes=10_000,
                                    display_name="Alice A.")
    assert (acc.login, acc.domain, acc.display_name, acc.quota_bytes, acc.used_bytes,
            acc.disabled, acc.pop3_keep) == ("alice@example.com", "example.com", "Alice A.",
                                            10_000, 0, False, False)
    assert await example.get_account("ALICE@example.com") == acc
    assert await example.get_account_by_id(acc.id) == acc
    async with db.read() as conn:
        roles = set((await conn.execute(select(schema.mailboxes.c.role).where(
            schema.mailboxes.c.account_id == acc.id))).scalars().all())
        row = (await conn.execute(select(schema.accounts).where(
            schema.accounts.c.id == acc.id))).mappings().one()
        nchanges = (await conn.execute(select(func.count()).select_from(schema.changes)
                                       .where(schema.changes.c.account_id == acc.id))).scalar()
    assert roles == {"inbox", "sent", "drafts", "trash", "junk", "archive"}
    assert row["created_at"] == int(clock.now) and row["modseq"] == 2 and nchanges == 6
    assert row["password_hash"].startswith("$argon2id$v=19$m=1024,t=1,p=1$")


async def test_add_account_errors(example):
    await example.add_account("bob@example.com", "pw")
    with pytest.raises(AlreadyExists, match="bob@example.com already exists"):
        await example.add_account("BOB@example.com", "pw")
    with pytest.raises(NotFound, match="example.net is not hosted"):
        await example.add_account("bob@example.net", "pw")
    with pytest.raises(InvalidName):
        await example.add_account("not-an-address", "pw")
    with pytest.raises(InvalidValue, match="empty"):
        await example.add_account("carol@example.com", "")
    with pytest.raises(InvalidValue, match="quota"):
        await example.add_account("carol@example.com", "pw", quota_bytes=-1)
    await example.add_alias("info@example.com", "bob@example.com")
    with pytest.raises(AlreadyExists, match="alias"):
        await example.add_account("info@example.com", "pw")
    with pytest.raises(NotFound):
        await example.get_account("nobody@example.com")
    with pytest.raises(NotFound):
        await example.get_account_by_id(9999)
    # nothing half-created
    assert [a.login for a in await example.list_accounts()] == ["bob@example.com"]


async def test_settings(example):
    await example.add_account("bob@example.com", "pw")
    await example.set_quota("bob@example.com", 5_000_000)
    await example.set_pop3_keep("bob@example.com", True)
    await example.set_display_name("bob@example.com", "Bob")
    acc = await example.get_account("bob@example.com")
    assert (acc.quota_bytes, acc.pop3_keep, acc.display_name) == (5_000_000, True, "Bob")
    await example.set_pop3_keep("bob@example.com", False)
    assert not (await example.get_account("bob@example.com")).pop3_keep
    for call in (example.set_quota("x@example.com", 1), example.set_pop3_keep("x@example.com", True),
                 example.set_password("x@example.com", "pw"),
                 example.set_disabled("x@example.com", True)):
        with pytest.raises(NotFound):
            await call
    with pytest.raises(InvalidValue):
        await example.set_quota("bob@example.com", -5)


async def test_list_accounts(directory):
    await directory.add_domain("a.example")
    await directory.add_domain("b.example")
    for login in ("z@a.example", "m@b.example", "a@a.example"):
        await directory.add_account(login, "pw")
    assert [a.login for a in await directory.list_accounts()] == [
        "a@a.example", "m@b.example", "z@a.example"]
    assert [a.login for a in await directory.list_accounts("A.example")] == [
        "a@a.example", "z@a.example"]
    assert await directory.list_accounts("c.example") == []


async def test_authenticate(example, db):
    acc = await example.add_account("bob@example.com", "correct horse")
    assert await example.authenticate("bob@example.com", "correct horse") == acc
    assert await example.authenticate("BOB@Example.COM", "correct horse") == acc
    assert await example.authenticate("bob@example.com", "Correct horse") is None
    assert await example.authenticate("nobody@example.com", "correct horse") is None
    assert await example.authenticate("garbage", "correct horse") is None
    await example.set_password("bob@example.com", "battery staple")
    assert await example.authenticate("bob@example.com", "correct horse") is None
    assert (await example.authenticate("bob@example.com", "battery staple")).id == acc.id
    await example.set_disabled("bob@example.com", True)
    assert await example.authenticate("bob@example.com", "battery staple") is None
    await example.set_disabled("bob@example.com", False)
    assert await example.authenticate("bob@example.com", "battery staple") is not None


async def test_legacy_hashes_upgraded_on_login(example, db):
    import bcrypt

    acc = await example.add_account("bob@example.com", "placeholder")
    legacy = {
        "sha512": "{SHA512-CRYPT}" + sha_crypt("imported pw", "$6$abcdefghijklmnop"),
        "sha256": "{SHA256-CRYPT}" + sha_crypt("imported pw", "$5$abcdefgh"),
        "bcrypt": "{BLF-CRYPT}" + bcrypt.hashpw(b"imported pw", bcrypt.gensalt(4)).decode()
        .replace("$2b$", "$2y$"),
        "plain": "{PLAIN}imported pw",
        "weak-argon2": hash_password("imported pw", Argon2Params(1, 512, 1)),
    }
    for kind, stored in legacy.items():
        async with db.write() as conn:
            await conn.execute(schema.accounts.update().where(schema.accounts.c.id == acc.id)
                               .values(password_hash=stored))
        assert await example.authenticate("bob@example.com", "wrong") is None, kind
        assert await _stored_hash(db, "bob@example.com") == stored, kind  # not on failure
        assert (await example.authenticate("bob@example.com", "imported pw")).id == acc.id, kind
        upgraded = await _stored_hash(db, "bob@example.com")
        assert upgraded.startswith("$argon2id$v=19$m=1024,t=1,p=1$"), kind
        assert (await example.authenticate("bob@example.com", "imported pw")).id == acc.id
        assert await _stored_hash(db, "bob@example.com") == upgraded, kind  # stable now
    # a disabled account is neither let in nor upgraded
    async with db.write() as conn:
        await conn.execute(schema.accounts.update().where(schema.accounts.c.id == acc.id)
                           .values(password_hash="{PLAIN}pw", disabled=True))
    assert await example.authenticate("bob@example.com", "pw") is None
    assert await _stored_hash(db, "bob@example.com") == "{PLAIN}pw"


async def test_delete_account(example, db):
    from mailserver.store import blobrefs

    a = await example.add_account("a@example.com", "pw")
    b = await example.add_account("b@example.com", "pw")
    await example.add_alias("team@example.com", "a@example.com")
    await example.add_alias("team@example.com", "b@example.com")
    await example.create_token("a@example.com", "laptop")
    blob = "ab" * 32
    async with db.write() as conn:  # two emails of a sharing one blob, one of b
        inbox = (await conn.execute(select(schema.mailboxes.c.id).where(
            schema.mailboxes.c.account_id == a.id, schema.mailboxes.c.role == "inbox"))).scalar()
        for acc, eid in ((a.id, 1), (a.id, 2), (b.id, 1)):
            await conn.execute(insert(schema.emails).values(
                account_id=acc, id=eid, blob_id=blob, size=10, received_at=1, thread_id=eid,
                created_modseq=1, updated_modseq=1))
            await blobrefs.add_ref(conn, blob, 10, 1)
        await conn.execute(insert(schema.mailbox_messages).values(
            account_id=a.id, mailbox_id=inbox, uid=1, email_id=1, modseq=1, saved_at=1))
    await example.delete_account("A@example.com")
    with pytest.raises(NotFound):
        await example.get_account("a@example.com")
    with pytest.raises(NotFound):
        await example.delete_account("a@example.com")
    assert [(x.address, x.target) for x in await example.list_aliases()] == [
        ("team@example.com", "b@example.com")]
    async with db.read() as conn:
        for table in (schema.mailboxes, schema.emails, schema.mailbox_messages,
                      schema.credentials, schema.changes):
            n = (await conn.execute(select(func.count()).select_from(table)
                                    .where(table.c.account_id == a.id))).scalar()
            assert n == 0, table.name
        refcount = (await conn.execute(select(schema.blobs.c.refcount))).scalar_one()
    assert refcount == 1  # b's email still holds it
    # the login can be created again, with fresh mailboxes
    again = await example.add_account("a@example.com", "pw")
    assert again.id != a.id


def test_password_hashing_not_global():
    # the default directory uses the production parameters; tests pass cheaper ones
    d = Directory(None)  # type: ignore[arg-type]
    assert d.password_params.memory_cost >= 19 * 1024


async def test_concurrent_duplicate_creation(example):
    import asyncio

    results = await asyncio.gather(*(example.add_account("race@example.com", "pw")
                                     for _ in range(3)), return_exceptions=True)
    assert sum(isinstance(r, AlreadyExists) for r in results) == 2
    assert [a.login for a in await example.list_accounts()] == ["race@example.com"]
