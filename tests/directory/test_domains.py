"""Domains: normalisation, IDNA, existence errors, deletion with and without force."""

import pytest
from sqlalchemy import func, select

from mailserver.store import schema
from mailserver.store.directory import (
    AlreadyExists,
    InvalidName,
    NotEmpty,
    NotFound,
    normalize_address,
    normalize_domain,
)


@pytest.mark.parametrize("raw,expected", [
    ("Example.COM", "example.com"),
    ("example.com.", "example.com"),
    (" mail.example.org ", "mail.example.org"),
    ("Bücher.example", "xn--bcher-kva.example"),
    ("xn--bcher-kva.example", "xn--bcher-kva.example"),
    ("faß.de", "xn--fa-hia.de"),  # IDNA 2008: ß is kept, not mapped to ss
    ("localhost", "localhost"),
])
def test_normalize_domain(raw, expected):
    assert normalize_domain(raw) == expected


@pytest.mark.parametrize("bad", ["", ".", "exa mple.com", "under_score.com", "-lead.com",
                                 "trail-.com", "a..b", "1.2.3.4", "x" * 64 + ".com",
                                 ("a" * 60 + ".") * 5 + "com", "exa@mple.com"])
def test_invalid_domains(bad):
    with pytest.raises(InvalidName):
        normalize_domain(bad)


@pytest.mark.parametrize("raw,expected", [
    ("Bob@Example.com", "bob@example.com"),
    ("bob+tag@EXAMPLE.com", "bob+tag@example.com"),
    ("Ünïcode@bücher.example", "ünïcode@xn--bcher-kva.example"),
    ("first.last@example.com", "first.last@example.com"),
    ("Jo\u0308rg@example.com", "j\u00f6rg@example.com"),  # NFC
])
def test_normalize_address(raw, expected):
    assert normalize_address(raw) == expected


@pytest.mark.parametrize("bad", ["bob", "@example.com", "bob@", "b ob@example.com",
                                 "bob.@example.com", ".bob@example.com", "b..ob@example.com",
                                 '"bob"@example.com', "bob<@example.com", "x" * 65 + "@a.com",
                                 "bob\n@example.com"])
def test_invalid_addresses(bad):
    with pytest.raises(InvalidName):
        normalize_address(bad)
    assert normalize_address("@example.com", catch_all=True) == "@example.com"


async def test_add_get_list(directory):
    d = await directory.add_domain("Example.com")
    assert d.name == "example.com" and d.id > 0
    idn = await directory.add_domain("bücher.example")
    assert idn.name == "xn--bcher-kva.example"
    assert idn.unicode_name == "bücher.example"
    assert (await directory.get_domain("BÜCHER.example.")).id == idn.id
    assert [x.name for x in await directory.list_domains()] == ["example.com",
                                                                "xn--bcher-kva.example"]
    assert await directory.is_hosted_domain("EXAMPLE.COM")
    assert await directory.is_hosted_domain("bücher.example")
    assert not await directory.is_hosted_domain("example.net")
    assert not await directory.is_hosted_domain("not a domain")


async def test_errors(directory):
    await directory.add_domain("example.com")
    with pytest.raises(AlreadyExists, match="example.com already exists"):
        await directory.add_domain("EXAMPLE.com")
    with pytest.raises(NotFound, match="not hosted"):
        await directory.get_domain("example.net")
    with pytest.raises(NotFound):
        await directory.delete_domain("example.net")
    with pytest.raises(InvalidName):
        await directory.add_domain("bad_domain.com")
    await directory.delete_domain("EXAMPLE.com")  # empty: no force needed
    assert await directory.list_domains() == []


async def test_delete_refuses_with_accounts_unless_forced(directory, db):
    await directory.add_domain("example.com")
    await directory.add_domain("other.org")
    await directory.add_account("a@example.com", "pw")
    await directory.add_account("b@example.com", "pw")
    await directory.add_account("c@other.org", "pw")
    await directory.add_alias("info@example.com", "a@example.com")
    await directory.add_alias("fwd@other.org", "b@example.com")
    await directory.add_dkim_key("example.com", "s1")
    token = await directory.create_token("a@example.com", "phone")
    with pytest.raises(NotEmpty, match="2 account"):
        await directory.delete_domain("example.com")
    assert len(await directory.list_accounts("example.com")) == 2
    await directory.delete_domain("example.com", force=True)
    assert [d.name for d in await directory.list_domains()] == ["other.org"]
    assert [a.login for a in await directory.list_accounts()] == ["c@other.org"]
    # aliases of the domain and aliases pointing at its accounts are gone, as are tokens
    assert await directory.list_aliases() == []
    assert await directory.authenticate_token(token) is None
    async with db.read() as conn:
        for table in (schema.mailboxes, schema.dkim_keys, schema.credentials):
            n = (await conn.execute(select(func.count()).select_from(table))).scalar_one()
            expected = 6 if table is schema.mailboxes else 0  # c@other.org's mailboxes
            assert n == expected, table.name
