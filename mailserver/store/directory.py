"""The directory: hosted domains, accounts, aliases, tokens / app passwords and DKIM keys.

Names are stored normalised, and every lookup normalises its input the same way:

- Domains: trailing dot dropped, IDNA (UTS #46 mapping, IDNA 2008) to A-labels, lowercase;
  a valid hostname (labels of letters, digits and inner hyphens, ≤ 63 each, ≤ 253 in all, the
  last label not all digits).
- Addresses: ``local@domain`` with the domain as above and the local part **lowercased**
  (Unicode lowercase, for SMTPUTF8 local parts). RFC 5321 §2.4 lets a host treat local parts
  case-sensitively; we do not, so ``Bob@x`` and ``bob@x`` are one mailbox (UTF-8 local parts
  are NFC-normalised first, RFC 6532 §3.1). Remote alias targets
  are lowercased too (the schema keeps one form); no real mail system depends on case.
  The local part is ≤ 64 octets and a dot-atom or UTF-8 text without specials; quoted local
  parts are not accepted for accounts or aliases.

Recipient resolution (``resolve``), for SMTP RCPT and the ingest path, per address:
exact account login → exact alias (targets expanded recursively, at most ``MAX_ALIAS_DEPTH``
levels, loops cut) → sub-address ``user+tag@dom`` retried as ``user@dom`` (account, then alias)
→ catch-all ``@dom``. A target outside the hosted domains is a forward (``Resolution.remote``);
a hosted target that resolves to nothing is dropped and noted in ``Resolution.problems``.

Passwords are hashed off the event loop before a write transaction opens, so a hash never
holds the SQLite write lock. Account creation runs ``begin_change`` and creates the default
mailboxes in the same transaction as the account row.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import idna
from sqlalchemy import Select, and_, bindparam, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from mailserver.auth.cache import VerifiedLoginCache
from mailserver.auth.passwords import (
    DEFAULT_ARGON2,
    Argon2Params,
    ahash_password,
    averify_password,
    needs_rehash,
)
from mailserver.store import schema
from mailserver.store.engine import Database, driver_sql

__all__ = [
    "Directory", "Domain", "Account", "Alias", "Resolution", "TokenInfo", "DkimKey",
    "DirectoryError", "NotFound", "AlreadyExists", "InvalidName", "InvalidValue", "NotEmpty",
    "normalize_domain", "normalize_address", "MAX_ALIAS_DEPTH",
]

MAX_ALIAS_DEPTH = 10
TOKEN_PREFIX = "ms_"
TOKEN_KINDS = ("token", "app_password")
# Token use is recorded at most this often per token (a write per request would serialise
# every JMAP call on SQLite's single writer).
LAST_USED_RESOLUTION = 3600

_D, _A, _ADDR, _CRED, _DKIM = (schema.domains, schema.accounts, schema.addresses,
                               schema.credentials, schema.dkim_keys)


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------

class DirectoryError(Exception):
    """Base of directory errors; ``str(e)`` is a message fit for a CLI user."""


class NotFound(DirectoryError, LookupError):
    pass


class AlreadyExists(DirectoryError):
    pass


class InvalidValue(DirectoryError, ValueError):
    pass


class InvalidName(InvalidValue):
    """A malformed domain name, address or selector."""


class NotEmpty(DirectoryError):
    """A domain that still has accounts."""


# --------------------------------------------------------------------------------------------
# Values
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Domain:
    id: int
    name: str  # A-label form
    created_at: int

    @property
    def unicode_name(self) -> str:
        """The domain with U-labels, for display."""
        try:
            return idna.decode(self.name)
        except idna.IDNAError:
            return self.name


@dataclass(frozen=True, slots=True)
class Account:
    id: int
    login: str
    domain: str
    display_name: str
    quota_bytes: int  # 0 = unlimited
    used_bytes: int
    disabled: bool
    pop3_keep: bool


@dataclass(frozen=True, slots=True)
class Alias:
    address: str  # "@domain" for a catch-all
    target: str


@dataclass(frozen=True, slots=True)
class Resolution:
    """Where mail for one address goes: local accounts and remote forwards.

    Both empty: the address is unknown (or not in a hosted domain). ``problems`` describes
    alias loops, over-deep chains and dangling hosted targets met on the way (for logs).
    """

    account_ids: tuple[int, ...] = ()
    remote: tuple[str, ...] = ()
    problems: tuple[str, ...] = ()

    @property
    def found(self) -> bool:
        return bool(self.account_ids or self.remote)


@dataclass(frozen=True, slots=True)
class TokenInfo:
    id: int
    kind: str  # "token" | "app_password"
    name: str
    created_at: int
    expires_at: int | None
    last_used_at: int | None


@dataclass(frozen=True, slots=True)
class DkimKey:
    domain: str
    selector: str
    algorithm: str  # "ed25519-sha256" | "rsa-sha256"
    private_key: str  # PEM PKCS#8
    public_key: str  # base64 p= value
    active: bool
    created_at: int


# --------------------------------------------------------------------------------------------
# Names
# --------------------------------------------------------------------------------------------

_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_SELECTOR_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9_-]{0,61}[a-z0-9])?")
# RFC 5322 specials and whitespace; controls are checked separately.
_LOCAL_FORBIDDEN = set(' \t"(),:;<>@[\\]')


def normalize_domain(name: str) -> str:
    """Lowercase A-label form of a domain name; raises ``InvalidName``."""
    raw = name
    name = name.strip()
    if name.endswith("."):
        name = name[:-1]
    if not name:
        raise InvalidName("empty domain name")
    try:
        ascii_name = idna.encode(name, uts46=True).decode("ascii").lower()
    except (idna.IDNAError, UnicodeError) as e:
        raise InvalidName(f"invalid domain name {raw!r}: {e}") from None
    labels = ascii_name.split(".")
    if len(ascii_name) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        raise InvalidName(f"invalid domain name {raw!r}: not a valid host name")
    if labels[-1].isdigit():
        raise InvalidName(f"invalid domain name {raw!r}: looks like an IP address")
    return ascii_name


def _normalize_local(local: str, raw: str) -> str:
    # RFC 6532 §3.1: UTF-8 local parts compared in NFC
    local = unicodedata.normalize("NFC", local).lower()
    if not local:
        raise InvalidName(f"invalid address {raw!r}: empty local part")
    if len(local.encode("utf-8")) > 64:
        raise InvalidName(f"invalid address {raw!r}: local part longer than 64 octets")
    if any(ch in _LOCAL_FORBIDDEN or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in local):
        raise InvalidName(f"invalid address {raw!r}: forbidden character in the local part")
    if local.startswith(".") or local.endswith(".") or ".." in local:
        raise InvalidName(f"invalid address {raw!r}: misplaced dot in the local part")
    return local


def normalize_address(address: str, *, catch_all: bool = False) -> str:
    """``local@domain`` normalised (see module notes); ``@domain`` if ``catch_all`` allows it.

    Raises ``InvalidName``.
    """
    raw = address
    address = address.strip()
    local, sep, domain = address.rpartition("@")
    if not sep:
        raise InvalidName(f"invalid address {raw!r}: no @domain")
    if not domain:
        raise InvalidName(f"invalid address {raw!r}: no domain after @")
    domain = normalize_domain(domain)
    if local == "" and catch_all:
        return "@" + domain
    return f"{_normalize_local(local, raw)}@{domain}"


def _domain_of(address: str) -> str:
    return address.rpartition("@")[2]


def _normalize_selector(selector: str) -> str:
    sel = selector.strip().lower()
    if not sel or len(sel) > 63 or not all(_SELECTOR_LABEL.fullmatch(p) for p in sel.split(".")):
        raise InvalidName(f"invalid DKIM selector {selector!r}: use letters, digits and '-'")
    return sel


def _sha256_hex(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def _parse_token(token: str) -> tuple[str, str] | None:
    """(lookup, secret) of ``ms_<lookup>_<secret>``, or None."""
    if not token.startswith(TOKEN_PREFIX):
        return None
    lookup, sep, secret = token[len(TOKEN_PREFIX):].partition("_")
    if not sep or len(lookup) != 16 or not secret:
        return None
    return lookup, secret


# --------------------------------------------------------------------------------------------
# The directory
# --------------------------------------------------------------------------------------------

_ACCOUNT_COLUMNS = (_A.c.id, _A.c.login, _D.c.name, _A.c.display_name, _A.c.quota_bytes,
                    _A.c.used_bytes, _A.c.disabled, _A.c.pop3_keep)


async def _first(conn: AsyncConnection, stmt: Any) -> Any:
    return (await conn.execute(stmt)).first()


def _account_select() -> Select:
    return select(*_ACCOUNT_COLUMNS).select_from(_A.join(_D, _A.c.domain_id == _D.c.id))


# Built once: the statement's SQL is then compiled once per dialect and looked up by identity.
_AUTH_SELECT = (select(*_ACCOUNT_COLUMNS, _A.c.password_hash)
                .select_from(_A.join(_D, _A.c.domain_id == _D.c.id))
                .where(_A.c.login == bindparam("login")))


async def _auth_row(conn: AsyncConnection, login: str) -> Any:
    """The account row plus its password hash (``authenticate``), or None."""
    return (await conn.execute(_AUTH_SELECT, {"login": login})).first()


def _account(row: Any) -> Account:
    return Account(id=row[0], login=row[1], domain=row[2], display_name=row[3],
                   quota_bytes=row[4], used_bytes=row[5], disabled=bool(row[6]),
                   pop3_keep=bool(row[7]))


class Directory:
    """Domains, accounts, aliases, credentials and DKIM keys over a ``Database``.

    ``password_params`` sets the argon2id cost of new hashes (tests lower it); ``clock``
    returns epoch seconds.
    """

    def __init__(self, db: Database, *, password_params: Argon2Params = DEFAULT_ARGON2,
                 clock: Callable[[], float] = time.time,
                 login_cache: VerifiedLoginCache | None = None) -> None:
        self.db = db
        self.password_params = password_params
        self.clock = clock
        # ``authenticate`` skips the hash for a password that verified moments ago against
        # the same stored hash (mailserver.auth.cache; VerifiedLoginCache(ttl=0) turns it off)
        self.login_cache = login_cache if login_cache is not None else VerifiedLoginCache()
        self._dummy_hash: str | None = None

    def _now(self) -> int:
        return int(self.clock())

    # ---- domains --------------------------------------------------------------------------

    async def add_domain(self, name: str) -> Domain:
        name = normalize_domain(name)
        now = self._now()
        try:
            async with self.db.write() as conn:
                if await self._domain_id(conn, name) is not None:
                    raise AlreadyExists(f"domain {name} already exists")
                res = await conn.execute(insert(_D).values(name=name, created_at=now))
                domain_id = res.inserted_primary_key[0]
        except IntegrityError:
            raise AlreadyExists(f"domain {name} already exists") from None
        return Domain(domain_id, name, now)

    async def get_domain(self, name: str) -> Domain:
        name = normalize_domain(name)
        async with self.db.read() as conn:
            row = (await conn.execute(
                select(_D.c.id, _D.c.name, _D.c.created_at).where(_D.c.name == name))).first()
        if row is None:
            raise NotFound(f"domain {name} is not hosted here")
        return Domain(*row)

    async def list_domains(self) -> list[Domain]:
        async with self.db.read() as conn:
            rows = (await conn.execute(
                select(_D.c.id, _D.c.name, _D.c.created_at).order_by(_D.c.name))).all()
        return [Domain(*r) for r in rows]

    async def is_hosted_domain(self, name: str, conn: AsyncConnection | None = None) -> bool:
        try:
            name = normalize_domain(name)
        except InvalidName:
            return False
        if conn is not None:
            return await self._domain_id(conn, name) is not None
        return await self.db.read_inline(lambda c: self._domain_id(c, name)) is not None

    async def delete_domain(self, name: str, force: bool = False) -> None:
        """Delete a domain with its aliases and DKIM keys; its accounts too if ``force``."""
        name = normalize_domain(name)
        async with self.db.write() as conn:
            domain_id = await self._domain_id(conn, name)
            if domain_id is None:
                raise NotFound(f"domain {name} is not hosted here")
            accounts = (await conn.execute(
                select(_A.c.id, _A.c.login).where(_A.c.domain_id == domain_id)
                .order_by(_A.c.id))).all()
            if accounts and not force:
                raise NotEmpty(f"domain {name} still has {len(accounts)} account(s); delete "
                               "them first or force the deletion")
            for account_id, login in accounts:
                await self._delete_account_rows(conn, account_id, login)
            await conn.execute(delete(_ADDR).where(_ADDR.c.domain_id == domain_id))
            await conn.execute(delete(_DKIM).where(_DKIM.c.domain_id == domain_id))
            await conn.execute(delete(_D).where(_D.c.id == domain_id))

    @staticmethod
    async def _domain_id(conn: AsyncConnection, name: str) -> int | None:
        return (await conn.execute(select(_D.c.id).where(_D.c.name == name))).scalar()

    async def _require_domain(self, conn: AsyncConnection, name: str) -> int:
        domain_id = await self._domain_id(conn, name)
        if domain_id is None:
            raise NotFound(f"domain {name} is not hosted here (add it first)")
        return domain_id

    # ---- accounts -------------------------------------------------------------------------

    async def add_account(self, login: str, password: str, *, quota_bytes: int = 0,
                          display_name: str = "") -> Account:
        """Create an account (login = its primary address) with the default mailboxes."""
        from mailserver.store.accountlock import begin_change
        from mailserver.store.mailboxes import create_default_mailboxes

        login = normalize_address(login)
        _check_password(password)
        _check_quota(quota_bytes)
        password_hash = await ahash_password(password, self.password_params)
        now = self._now()
        try:
            async with self.db.write() as conn:
                domain_id = await self._require_domain(conn, _domain_of(login))
                if await self._account_id(conn, login) is not None:
                    raise AlreadyExists(f"account {login} already exists")
                if await self._is_alias(conn, login):
                    raise AlreadyExists(f"{login} is already an alias; delete the alias first")
                res = await conn.execute(insert(_A).values(
                    domain_id=domain_id, login=login, password_hash=password_hash,
                    display_name=display_name, quota_bytes=quota_bytes, created_at=now))
                account_id = res.inserted_primary_key[0]
                cs = await begin_change(conn, account_id, now)
                await create_default_mailboxes(conn, cs)
                await cs.flush(conn)
        except IntegrityError:
            raise AlreadyExists(f"account {login} already exists") from None
        return Account(account_id, login, _domain_of(login), display_name, quota_bytes, 0,
                       False, False)

    async def get_account(self, login: str) -> Account:
        login = normalize_address(login)
        stmt = _account_select().where(_A.c.login == login)
        row = await self.db.read_inline(lambda conn: _first(conn, stmt))
        if row is None:
            raise NotFound(f"no account {login}")
        return _account(row)

    async def get_account_by_id(self, account_id: int,
                                conn: AsyncConnection | None = None) -> Account:
        stmt = _account_select().where(_A.c.id == account_id)
        if conn is not None:
            row = (await conn.execute(stmt)).first()
        else:
            row = await self.db.read_inline(lambda c: _first(c, stmt))
        if row is None:
            raise NotFound(f"no account with id {account_id}")
        return _account(row)

    async def list_accounts(self, domain: str | None = None) -> list[Account]:
        stmt = _account_select().order_by(_A.c.login)
        if domain is not None:
            stmt = stmt.where(_D.c.name == normalize_domain(domain))
        async with self.db.read() as conn:
            rows = (await conn.execute(stmt)).all()
        return [_account(r) for r in rows]

    async def set_password(self, login: str, password: str) -> None:
        _check_password(password)
        password_hash = await ahash_password(password, self.password_params)
        await self._update_account(login, password_hash=password_hash)

    async def set_quota(self, login: str, quota_bytes: int) -> None:
        _check_quota(quota_bytes)
        await self._update_account(login, quota_bytes=quota_bytes)

    async def set_pop3_keep(self, login: str, keep: bool) -> None:
        await self._update_account(login, pop3_keep=bool(keep))

    async def set_disabled(self, login: str, disabled: bool) -> None:
        await self._update_account(login, disabled=bool(disabled))

    async def set_display_name(self, login: str, display_name: str) -> None:
        await self._update_account(login, display_name=display_name)

    async def _update_account(self, login: str, **values: object) -> None:
        login = normalize_address(login)
        async with self.db.write() as conn:
            res = await conn.execute(update(_A).where(_A.c.login == login).values(**values))
            if res.rowcount == 0:
                raise NotFound(f"no account {login}")

    async def delete_account(self, login: str) -> None:
        """Delete an account with all its mail, tokens, and the aliases that point at it."""
        login = normalize_address(login)
        async with self.db.write() as conn:
            account_id = await self._account_id(conn, login)
            if account_id is None:
                raise NotFound(f"no account {login}")
            await self._delete_account_rows(conn, account_id, login)

    async def _delete_account_rows(self, conn: AsyncConnection, account_id: int,
                                   login: str) -> None:
        from mailserver.store import blobrefs, search

        now = self._now()
        # Lock the row first, like every account write (see mailserver.store.schema).
        await conn.execute(select(_A.c.id).where(_A.c.id == account_id).with_for_update())
        # One blob reference per emails row (mailserver.store.messages counts them so).
        e = schema.emails
        per_blob = (await conn.execute(
            select(e.c.blob_id, func.count()).where(e.c.account_id == account_id)
            .group_by(e.c.blob_id))).all()
        for blob_id, n in per_blob:
            await blobrefs.drop_ref(conn, blob_id, now, n=n)
        # FTS5 rows do not cascade (PostgreSQL's email_search does).
        email_ids = (await conn.execute(
            select(e.c.id).where(e.c.account_id == account_id))).scalars().all()
        await search.unindex_emails(conn, conn.dialect.name, account_id, email_ids)
        await conn.execute(delete(_ADDR).where(_ADDR.c.target == login))
        # Everything else keyed by account_id goes with the row (ON DELETE CASCADE).
        await conn.execute(delete(_A).where(_A.c.id == account_id))

    @staticmethod
    async def _account_id(conn: AsyncConnection, login: str) -> int | None:
        return (await conn.execute(select(_A.c.id).where(_A.c.login == login))).scalar()

    @staticmethod
    async def _is_alias(conn: AsyncConnection, address: str) -> bool:
        return (await conn.execute(
            select(_ADDR.c.id).where(_ADDR.c.address == address).limit(1))).first() is not None

    # ---- authentication -------------------------------------------------------------------

    async def authenticate(self, login: str, password: str) -> Account | None:
        """The account if ``password`` is its password (or one of its app passwords).

        Disabled accounts never authenticate. A legacy or weaker hash is replaced by a fresh
        argon2id hash after a successful check (compare-and-set, so a concurrent password
        change wins). Unknown logins cost one hash check too, so timing does not reveal them.
        A password that verified within ``login_cache.ttl`` against the account's current
        stored hash is accepted without hashing again (``mailserver.auth.cache``); the account
        row is read every time, so a changed password or a disabled account takes effect at
        once. The row is read without a hop (``Database.read_inline``).
        """
        try:
            login = normalize_address(login)
        except InvalidName:
            login = ""
        row = None
        if login:
            row = await self.db.read_inline(lambda conn: _auth_row(conn, login))
        if row is None:
            await averify_password(await self._get_dummy_hash(), password)
            return None
        account, stored = _account(row), row[8]
        if _parse_token(password) is not None:
            # An app password typed into a client's password field.
            by_token = await self.authenticate_token(password, kind="app_password")
            if by_token is not None and by_token.id == account.id:
                return by_token
        cache = self.login_cache
        if cache.hit(login, password, stored) and not needs_rehash(stored,
                                                                   self.password_params):
            return None if account.disabled else account
        if not await averify_password(stored, password):
            return None
        if account.disabled:
            return None
        if needs_rehash(stored, self.password_params):
            fresh = await ahash_password(password, self.password_params)
            async with self.db.write() as conn:
                res = await conn.execute(update(_A).where(_A.c.id == account.id,
                                                          _A.c.password_hash == stored)
                                         .values(password_hash=fresh))
            if res.rowcount == 1:
                cache.remember(login, password, fresh)
        else:
            cache.remember(login, password, stored)
        return account

    async def authenticate_cached(self, conn: AsyncConnection, login: str,
                                  password: str) -> Account | None:
        """The account when ``password`` is in the verified-login cache for ``login`` and the
        account (read on ``conn``, so this can run inside a caller's transaction) still has
        the stored hash it verified against and is enabled. None means "not known here", not
        "wrong": the caller then runs ``authenticate``. Never hashes, never writes, and reads
        nothing unless the cache holds this password."""
        try:
            login = normalize_address(login)
        except InvalidName:
            return None
        cache = self.login_cache
        if not cache.candidate(login, password):
            return None
        row = await _auth_row(conn, login)
        if row is None:
            return None
        stored = row[8]
        if not cache.hit(login, password, stored) or needs_rehash(stored, self.password_params):
            return None
        account = _account(row)
        return None if account.disabled else account

    async def _get_dummy_hash(self) -> str:
        if self._dummy_hash is None:
            self._dummy_hash = await ahash_password(secrets.token_hex(16), self.password_params)
        return self._dummy_hash

    # ---- tokens and app passwords ---------------------------------------------------------

    async def create_token(self, login: str, name: str, kind: str = "token", *,
                           expires_at: int | None = None) -> str:
        """A new secret ``ms_<lookup>_<secret>``; returned once, only its hash is stored."""
        if kind not in TOKEN_KINDS:
            raise InvalidValue(f"unknown credential kind {kind!r} (token or app_password)")
        login = normalize_address(login)
        lookup = secrets.token_hex(8)
        secret = secrets.token_urlsafe(32)
        now = self._now()
        async with self.db.write() as conn:
            account_id = (await conn.execute(
                select(_A.c.id).where(_A.c.login == login).with_for_update())).scalar()
            if account_id is None:
                raise NotFound(f"no account {login}")
            # Per-account ids: the account row lock (PostgreSQL) or the single SQLite writer
            # makes max+1 safe.
            last = (await conn.execute(select(func.max(_CRED.c.id))
                                       .where(_CRED.c.account_id == account_id))).scalar()
            await conn.execute(insert(_CRED).values(
                account_id=account_id, id=(last or 0) + 1, kind=kind, name=name,
                secret_hash=_sha256_hex(secret), lookup=lookup, created_at=now,
                expires_at=expires_at, last_used_at=None))
        return f"{TOKEN_PREFIX}{lookup}_{secret}"

    async def list_tokens(self, login: str) -> list[TokenInfo]:
        login = normalize_address(login)
        async with self.db.read() as conn:
            account_id = await self._account_id(conn, login)
            if account_id is None:
                raise NotFound(f"no account {login}")
            rows = (await conn.execute(
                select(_CRED.c.id, _CRED.c.kind, _CRED.c.name, _CRED.c.created_at,
                       _CRED.c.expires_at, _CRED.c.last_used_at)
                .where(_CRED.c.account_id == account_id).order_by(_CRED.c.id))).all()
        return [TokenInfo(*r) for r in rows]

    async def revoke_token(self, login: str, token_id: int) -> None:
        login = normalize_address(login)
        async with self.db.write() as conn:
            account_id = await self._account_id(conn, login)
            if account_id is None:
                raise NotFound(f"no account {login}")
            res = await conn.execute(delete(_CRED).where(_CRED.c.account_id == account_id,
                                                         _CRED.c.id == token_id))
            if res.rowcount == 0:
                raise NotFound(f"account {login} has no token {token_id}")

    async def authenticate_token(self, token: str, *, kind: str | None = None) -> Account | None:
        """The account a token or app password belongs to (``kind`` None: either kind).

        Expired credentials and disabled accounts fail.
        """
        parsed = _parse_token(token.strip())
        if parsed is None:
            return None
        lookup, secret = parsed
        async with self.db.read() as conn:
            row = (await conn.execute(
                select(*_ACCOUNT_COLUMNS, _CRED.c.id, _CRED.c.kind, _CRED.c.secret_hash,
                       _CRED.c.expires_at, _CRED.c.last_used_at)
                .select_from(_CRED.join(_A, _CRED.c.account_id == _A.c.id)
                             .join(_D, _A.c.domain_id == _D.c.id))
                .where(_CRED.c.lookup == lookup))).first()
        if row is None:
            return None
        account = _account(row)
        cred_id, cred_kind, secret_hash, expires_at, last_used = row[8:13]
        if not hmac.compare_digest(_sha256_hex(secret).encode(), secret_hash.encode()):
            return None
        now = self._now()
        if (kind is not None and cred_kind != kind) or account.disabled:
            return None
        if expires_at is not None and expires_at <= now:
            return None
        if last_used is None or now - last_used >= LAST_USED_RESOLUTION:
            async with self.db.write() as conn:
                await conn.execute(update(_CRED).where(_CRED.c.account_id == account.id,
                                                       _CRED.c.id == cred_id)
                                   .values(last_used_at=now))
        return account

    # ---- aliases --------------------------------------------------------------------------

    async def add_alias(self, address: str, target: str) -> Alias:
        """Route ``address`` (or a catch-all ``@domain``) to ``target``; several = fan-out."""
        address = normalize_address(address, catch_all=True)
        target = normalize_address(target)
        if address == target:
            raise InvalidValue(f"alias {address} cannot point at itself")
        now = self._now()
        try:
            async with self.db.write() as conn:
                domain_id = await self._require_domain(conn, _domain_of(address))
                if await self._account_id(conn, address) is not None:
                    raise AlreadyExists(f"{address} is an account; an alias would never be used")
                exists = (await conn.execute(select(_ADDR.c.id).where(
                    _ADDR.c.address == address, _ADDR.c.target == target))).first()
                if exists is not None:
                    raise AlreadyExists(f"alias {address} → {target} already exists")
                await conn.execute(insert(_ADDR).values(domain_id=domain_id, address=address,
                                                        target=target, created_at=now))
        except IntegrityError:
            raise AlreadyExists(f"alias {address} → {target} already exists") from None
        return Alias(address, target)

    async def delete_alias(self, address: str, target: str | None = None) -> int:
        """Delete one target of an alias, or all of them; returns how many rows went."""
        address = normalize_address(address, catch_all=True)
        cond = _ADDR.c.address == address
        if target is not None:
            cond = and_(cond, _ADDR.c.target == normalize_address(target))
        async with self.db.write() as conn:
            res = await conn.execute(delete(_ADDR).where(cond))
        if res.rowcount == 0:
            what = f"alias {address} → {target}" if target is not None else f"alias {address}"
            raise NotFound(f"no {what}")
        return res.rowcount

    async def list_aliases(self, domain: str | None = None) -> list[Alias]:
        stmt = select(_ADDR.c.address, _ADDR.c.target).order_by(_ADDR.c.address, _ADDR.c.target)
        if domain is not None:
            stmt = stmt.select_from(_ADDR.join(_D, _ADDR.c.domain_id == _D.c.id)).where(
                _D.c.name == normalize_domain(domain))
        async with self.db.read() as conn:
            rows = (await conn.execute(stmt)).all()
        return [Alias(*r) for r in rows]

    # ---- resolution -----------------------------------------------------------------------

    async def resolve(self, address: str, conn: AsyncConnection | None = None) -> Resolution:
        """Where mail to ``address`` goes (see module notes). Unknown or not hosted: empty."""
        try:
            address = normalize_address(address)
        except InvalidName:
            return Resolution()
        if conn is not None:
            return await _Resolver(conn).run(address)
        return await self.db.read_inline(lambda c: _Resolver(c).run(address))

    async def addresses_of(self, account_id: int,
                           conn: AsyncConnection | None = None) -> set[str]:
        """The account's login plus every alias whose resolution includes this account.

        Submission uses it to decide which From: addresses the user owns. Catch-alls are not
        included (they would make every address of the domain the user's); sub-addresses
        (``user+tag@``) are for the caller to strip.
        """
        if conn is not None:
            return await self._addresses_of(conn, account_id)
        return await self.db.read_inline(lambda c: self._addresses_of(c, account_id))

    async def _addresses_of(self, conn: AsyncConnection, account_id: int) -> set[str]:
        login = (await conn.execute(select(_A.c.login).where(_A.c.id == account_id))).scalar()
        if login is None:
            raise NotFound(f"no account with id {account_id}")
        # Walk alias edges backwards from the login, then keep the candidates whose forward
        # resolution really reaches the account (an edge may be shadowed by an account login).
        found: set[str] = set()
        frontier = {login}
        for _ in range(MAX_ALIAS_DEPTH):
            rows = (await conn.execute(select(_ADDR.c.address).where(
                _ADDR.c.target.in_(sorted(frontier))))).scalars().all()
            frontier = {a for a in rows if not a.startswith("@") and a not in found
                        and a != login}
            if not frontier:
                break
            found |= frontier
        resolver = _Resolver(conn)
        owned = {login}
        for address in sorted(found):
            if account_id in (await resolver.run(address)).account_ids:
                owned.add(address)
        return owned

    # ---- DKIM keys ------------------------------------------------------------------------

    async def add_dkim_key(self, domain: str, selector: str,
                           algorithm: str = "ed25519-sha256") -> DkimKey:
        """Generate and store a key; publish ``dns_txt_record(...)`` of it before using it."""
        import asyncio

        from mailserver.dkimkeys import ALGORITHMS, generate_dkim_key

        domain = normalize_domain(domain)
        selector = _normalize_selector(selector)
        if algorithm not in ALGORITHMS:
            raise InvalidValue(f"unknown DKIM algorithm {algorithm!r} "
                               f"(use one of {', '.join(ALGORITHMS)})")
        pair = await asyncio.to_thread(generate_dkim_key, algorithm)
        now = self._now()
        try:
            async with self.db.write() as conn:
                domain_id = await self._require_domain(conn, domain)
                exists = (await conn.execute(select(_DKIM.c.selector).where(
                    _DKIM.c.domain_id == domain_id, _DKIM.c.selector == selector))).first()
                if exists is not None:
                    raise AlreadyExists(f"domain {domain} already has a DKIM key {selector}")
                await conn.execute(insert(_DKIM).values(
                    domain_id=domain_id, selector=selector, algorithm=algorithm,
                    private_key=pair.private_pem, public_key=pair.public, active=True,
                    created_at=now))
        except IntegrityError:
            raise AlreadyExists(f"domain {domain} already has a DKIM key {selector}") from None
        return DkimKey(domain, selector, algorithm, pair.private_pem, pair.public, True, now)

    async def list_dkim_keys(self, domain: str) -> list[DkimKey]:
        return await self._dkim_keys(domain, active_only=False)

    async def active_dkim_keys(self, domain: str) -> list[DkimKey]:
        """The keys to sign with (an ed25519 and an RSA key may both be active)."""
        return await self._dkim_keys(domain, active_only=True)

    async def _dkim_keys(self, domain: str, *, active_only: bool) -> list[DkimKey]:
        domain = normalize_domain(domain)
        stmt = (select(_D.c.name, _DKIM.c.selector, _DKIM.c.algorithm, _DKIM.c.private_key,
                       _DKIM.c.public_key, _DKIM.c.active, _DKIM.c.created_at)
                .select_from(_DKIM.join(_D, _DKIM.c.domain_id == _D.c.id))
                .where(_D.c.name == domain).order_by(_DKIM.c.created_at, _DKIM.c.selector))
        if active_only:
            stmt = stmt.where(_DKIM.c.active.is_(True))
        async with self.db.read() as conn:
            rows = (await conn.execute(stmt)).all()
            if not rows and await self._domain_id(conn, domain) is None:
                raise NotFound(f"domain {domain} is not hosted here")
        return [DkimKey(r[0], r[1], r[2], r[3], r[4], bool(r[5]), r[6]) for r in rows]

    async def set_dkim_key_active(self, domain: str, selector: str, active: bool) -> None:
        """Retire (or reactivate) a key, for rotation: keep it published until mail signed
        with it has been delivered, then delete it."""
        await self._dkim_key_op(domain, selector, active=bool(active))

    async def delete_dkim_key(self, domain: str, selector: str) -> None:
        await self._dkim_key_op(domain, selector, active=None)

    async def _dkim_key_op(self, domain: str, selector: str, *, active: bool | None) -> None:
        domain = normalize_domain(domain)
        selector = _normalize_selector(selector)
        async with self.db.write() as conn:
            domain_id = await self._require_domain(conn, domain)
            cond = and_(_DKIM.c.domain_id == domain_id, _DKIM.c.selector == selector)
            if active is None:
                res = await conn.execute(delete(_DKIM).where(cond))
            else:
                res = await conn.execute(update(_DKIM).where(cond).values(active=active))
            if res.rowcount == 0:
                raise NotFound(f"domain {domain} has no DKIM key {selector}")


# --------------------------------------------------------------------------------------------
# Resolution
# --------------------------------------------------------------------------------------------

# The resolver's queries (every delivery and RCPT runs them).
_SQL_DOMAIN_ID = "SELECT id FROM domains WHERE name = ?"
_SQL_ACCOUNT_ID = "SELECT id FROM accounts WHERE login = ?"
_SQL_ALIAS_TARGETS = "SELECT target FROM addresses WHERE address = ? ORDER BY target"


class _Resolver:
    """One resolution inside one transaction; memoises domain and row lookups.

    Its three statements are driver SQL (``mailserver.store.engine.DriverSQL``): resolution
    runs at every RCPT and again in every delivery, and through Core each statement cost more
    than the indexed lookup itself."""

    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn
        self.sql = driver_sql(conn)
        self._hosted: dict[str, bool] = {}
        self.accounts: list[int] = []
        self.remote: list[str] = []
        self.problems: list[str] = []

    async def run(self, address: str) -> Resolution:
        self.accounts: list[int] = []
        self.remote: list[str] = []
        self.problems: list[str] = []
        if not await self._is_hosted(_domain_of(address)):
            return Resolution()
        await self._expand(address, (), 0)
        return Resolution(tuple(dict.fromkeys(self.accounts)), tuple(dict.fromkeys(self.remote)),
                          tuple(dict.fromkeys(self.problems)))

    async def _is_hosted(self, domain: str) -> bool:
        hosted = self._hosted.get(domain)
        if hosted is None:
            hosted = bool(await self.sql.fetch(_SQL_DOMAIN_ID, (domain,)))
            self._hosted[domain] = hosted
        return hosted

    async def _expand(self, address: str, path: tuple[str, ...], depth: int) -> bool:
        """Add where ``address`` goes; False when a hosted address resolves to nothing."""
        if depth > 0 and not await self._is_hosted(_domain_of(address)):
            self.remote.append(address)
            return True
        local, _, domain = address.rpartition("@")
        candidates = [address]
        if "+" in local:
            base = local.split("+", 1)[0]
            if base:  # RFC 5233 sub-address: user+detail@domain
                candidates.append(f"{base}@{domain}")
        for candidate in candidates:
            rows = await self.sql.fetch(_SQL_ACCOUNT_ID, (candidate,))
            if rows:
                self.accounts.append(rows[0][0])
                return True
            if await self._targets(candidate, path, depth):
                return True
        if await self._targets("@" + domain, path, depth):
            return True
        if depth > 0:
            self.problems.append(f"alias target {address} does not exist")
        return False

    async def _targets(self, address: str, path: tuple[str, ...], depth: int) -> bool:
        """Expand the alias rows of ``address``; False when there are none."""
        targets = [r[0] for r in await self.sql.fetch(_SQL_ALIAS_TARGETS, (address,))]
        if not targets:
            return False
        if address in path:  # e.g. a catch-all whose target falls back to the catch-all
            self.problems.append(f"alias loop: {' → '.join(path)} → {address}")
            return True
        if depth >= MAX_ALIAS_DEPTH:
            self.problems.append(f"alias chain deeper than {MAX_ALIAS_DEPTH} at {address}")
            return True
        path = (*path, address)
        for target in targets:
            if target in path:
                self.problems.append(f"alias loop: {' → '.join(path)} → {target}")
                continue
            await self._expand(target, path, depth + 1)
        return True


def _check_password(password: str) -> None:
    if not password:
        raise InvalidValue("the password must not be empty")
    if len(password.encode("utf-8")) > 1024:
        raise InvalidValue("the password is longer than 1024 bytes")


def _check_quota(quota_bytes: int) -> None:
    if not isinstance(quota_bytes, int) or quota_bytes < 0:
        raise InvalidValue("the quota must be a byte count ≥ 0 (0 = unlimited)")
