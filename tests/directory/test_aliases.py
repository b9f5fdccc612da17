"""Aliases and recipient resolution: fan-out, recursion, loops, sub-addressing, catch-all."""

import pytest

from mailserver.store.directory import (
    MAX_ALIAS_DEPTH,
    AlreadyExists,
    InvalidName,
    InvalidValue,
    NotFound,
    Resolution,
)


@pytest.fixture
async def site(directory):
    await directory.add_domain("example.com")
    await directory.add_domain("example.org")
    ids = {}
    for login in ("alice@example.com", "bob@example.com", "carol@example.org",
                  "dave+ops@example.com"):
        ids[login.split("@")[0]] = (await directory.add_account(login, "pw")).id
    return directory, ids


async def test_alias_crud_and_errors(site):
    d, ids = site
    a = await d.add_alias("Info@Example.com", "ALICE@example.com")
    assert (a.address, a.target) == ("info@example.com", "alice@example.com")
    await d.add_alias("info@example.com", "bob@example.com")
    await d.add_alias("@example.org", "carol@example.org")
    await d.add_alias("list@example.org", "someone@remote.test")
    with pytest.raises(AlreadyExists):
        await d.add_alias("info@example.com", "Alice@example.com")
    with pytest.raises(AlreadyExists, match="is an account"):
        await d.add_alias("alice@example.com", "bob@example.com")
    with pytest.raises(NotFound, match="not hosted"):
        await d.add_alias("info@example.net", "alice@example.com")
    with pytest.raises(InvalidValue, match="itself"):
        await d.add_alias("self@example.com", "Self@example.com")
    with pytest.raises(InvalidName):
        await d.add_alias("info@example.com", "@example.com")  # a target is an address
    with pytest.raises(InvalidName):
        await d.add_alias("in fo@example.com", "alice@example.com")
    assert [(x.address, x.target) for x in await d.list_aliases()] == [
        ("@example.org", "carol@example.org"), ("info@example.com", "alice@example.com"),
        ("info@example.com", "bob@example.com"), ("list@example.org", "someone@remote.test")]
    assert [x.address for x in await d.list_aliases("example.org")] == [
        "@example.org", "list@example.org"]
    assert await d.delete_alias("info@example.com", "bob@example.com") == 1
    with pytest.raises(NotFound):
        await d.delete_alias("info@example.com", "bob@example.com")
    assert await d.delete_alias("INFO@example.com") == 1
    with pytest.raises(NotFound):
        await d.delete_alias("info@example.com")
    assert await d.delete_alias("@example.org") == 1


async def test_resolve_accounts_fanout_forwards_and_unknowns(site):
    d, ids = site
    assert await d.resolve("Alice@EXAMPLE.com") == Resolution((ids["alice"],))
    assert await d.resolve("nobody@example.com") == Resolution()
    assert not (await d.resolve("nobody@example.com")).found
    assert await d.resolve("alice@not-hosted.test") == Resolution()  # not ours to resolve
    assert await d.resolve("not an address") == Resolution()
    assert await d.resolve("") == Resolution()
    await d.add_alias("team@example.com", "alice@example.com")
    await d.add_alias("team@example.com", "bob@example.com")
    await d.add_alias("team@example.com", "carol@example.org")
    await d.add_alias("team@example.com", "Partner@Remote.test")
    await d.add_alias("all@example.com", "team@example.com")
    await d.add_alias("all@example.com", "alice@example.com")  # duplicate via two paths
    r = await d.resolve("all@example.com")
    assert sorted(r.account_ids) == sorted([ids["alice"], ids["bob"], ids["carol"]])
    assert len(r.account_ids) == 3  # deduplicated
    assert r.remote == ("partner@remote.test",)
    assert r.found and r.problems == ()
    # inside the caller's transaction (the ingest path)
    async with d.db.write() as conn:
        assert (await d.resolve("bob@example.com", conn)).account_ids == (ids["bob"],)
        assert await d.is_hosted_domain("example.org", conn)


async def test_resolve_loops_and_depth(site):
    d, ids = site
    await d.add_alias("a@example.com", "b@example.com")
    await d.add_alias("b@example.com", "a@example.com")
    await d.add_alias("b@example.com", "bob@example.com")
    r = await d.resolve("a@example.com")
    assert r.account_ids == (ids["bob"],)
    assert any("loop" in p for p in r.problems)
    # pure loop: nothing found
    await d.add_alias("x@example.com", "y@example.com")
    await d.add_alias("y@example.com", "x@example.com")
    r = await d.resolve("x@example.com")
    assert not r.found and any("loop" in p for p in r.problems)
    # a chain of exactly MAX_ALIAS_DEPTH aliases still arrives, one more does not
    for i in range(MAX_ALIAS_DEPTH):  # c0 → c1 → … → c10 → alice: 11 aliases from c0
        await d.add_alias(f"c{i}@example.com", f"c{i + 1}@example.com")
    await d.add_alias(f"c{MAX_ALIAS_DEPTH}@example.com", "alice@example.com")
    assert (await d.resolve("c1@example.com")).account_ids == (ids["alice"],)
    r = await d.resolve("c0@example.com")
    assert not r.found and any("deeper" in p for p in r.problems)
    # dangling hosted target is dropped and reported
    await d.add_alias("gone@example.com", "deleted@example.com")
    await d.add_alias("gone@example.com", "bob@example.com")
    r = await d.resolve("gone@example.com")
    assert r.account_ids == (ids["bob"],)
    assert any("deleted@example.com does not exist" in p for p in r.problems)


async def test_subaddressing_and_catch_all(site):
    d, ids = site
    assert (await d.resolve("alice+lists@example.com")).account_ids == (ids["alice"],)
    assert (await d.resolve("alice+a+b@example.com")).account_ids == (ids["alice"],)
    assert not (await d.resolve("+tag@example.com")).found
    # an account whose login contains "+" wins over the sub-address reading
    assert (await d.resolve("dave+ops@example.com")).account_ids == (ids["dave+ops"],)
    assert not (await d.resolve("dave@example.com")).found
    await d.add_alias("sales@example.com", "bob@example.com")
    assert (await d.resolve("sales+q3@example.com")).account_ids == (ids["bob"],)
    # catch-all after everything else
    await d.add_alias("@example.com", "carol@example.org")
    assert (await d.resolve("whoever@example.com")).account_ids == (ids["carol"],)
    assert (await d.resolve("whoever+x@example.com")).account_ids == (ids["carol"],)
    assert (await d.resolve("alice@example.com")).account_ids == (ids["alice"],)
    assert (await d.resolve("alice+x@example.com")).account_ids == (ids["alice"],)
    assert not (await d.resolve("whoever@example.org")).found
    # a catch-all that points back into its own domain at a missing address is a loop
    await d.add_alias("@example.org", "postmaster@example.org")
    r = await d.resolve("x@example.org")
    assert not r.found and r.problems
    # an alias target is resolved with the same rules (sub-address, catch-all)
    await d.add_alias("fwd@example.org", "alice+fwd@example.com")
    assert (await d.resolve("fwd@example.org")).account_ids == (ids["alice"],)


async def test_idn_addresses(directory):
    await directory.add_domain("bücher.example")
    acc = await directory.add_account("Jörg@Bücher.example", "pw")
    assert acc.login == "jörg@xn--bcher-kva.example"
    assert (await directory.resolve("JÖRG@xn--bcher-kva.example")).account_ids == (acc.id,)
    assert (await directory.resolve("jörg@BÜCHER.example")).account_ids == (acc.id,)
    assert (await directory.authenticate("jörg@bücher.example", "pw")).id == acc.id


async def test_addresses_of(site):
    d, ids = site
    await d.add_alias("info@example.com", "alice@example.com")
    await d.add_alias("team@example.com", "info@example.com")
    await d.add_alias("team@example.com", "bob@example.com")
    await d.add_alias("@example.com", "alice@example.com")  # catch-all: not "owned"
    await d.add_alias("bob-only@example.com", "bob@example.com")
    await d.add_alias("remote-fwd@example.org", "alice@example.com")
    await d.add_alias("remote-fwd@example.org", "x@remote.test")
    assert await d.addresses_of(ids["alice"]) == {
        "alice@example.com", "info@example.com", "team@example.com", "remote-fwd@example.org"}
    assert await d.addresses_of(ids["bob"]) == {
        "bob@example.com", "team@example.com", "bob-only@example.com"}
    assert await d.addresses_of(ids["carol"]) == {"carol@example.org"}
    with pytest.raises(NotFound):
        await d.addresses_of(123456)
