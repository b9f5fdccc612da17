"""MTA-STS (RFC 8461): fetch, cache and apply a recipient domain's TLS policy.

Discovery (§3.1): a TXT record ``_mta-sts.<domain>`` "v=STSv1; id=…". Fetching (§3.3): HTTPS
GET ``https://mta-sts.<domain>/.well-known/mta-sts.txt`` with a validated certificate for that
name, no redirects, 200 with text/plain, at most 64 KiB, within a timeout. The host name is
resolved through our resolver (``mailserver.mailauth.dns``) like every other lookup.

Cache (§5): for the policy's ``max_age``, in memory and — given a ``db`` — in the store's
``settings`` table (key ``mta-sts:<domain>``), so a policy survives restarts and is shared by
every worker on every node: the trust-on-first-use protection of §10.2 would be lost if a
restart forgot it (an attacker stripping the TXT record or blocking the HTTPS fetch would then
downgrade us). The TXT id is checked again at most every ``TXT_RECHECK`` seconds and a changed
id refetches. A fetch failure keeps using a cached unexpired policy (§5.1), and with none the
domain is treated as having no policy.

Application (§4, §5): with ``mode: enforce`` only MX hosts matching a policy ``mx`` pattern
are used, and only over STARTTLS with a certificate valid for the MX name; a host that fails
that is a temporary failure for this attempt. ``mode: testing`` only logs; ``none`` is none.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import delete, insert, select

from mailserver.mailauth.dns import DnsTempError, Resolver
from mailserver.store import schema

__all__ = ["Policy", "MtaSts", "parse_policy", "parse_txt", "mx_matches", "PolicyError"]

log = logging.getLogger(__name__)

MAX_POLICY_BYTES = 64 * 1024
MAX_AGE_LIMIT = 31_557_600  # RFC 8461 §3.2
TXT_RECHECK = 3600


class PolicyError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Policy:
    id: str
    mode: str  # enforce | testing | none
    mx: tuple[str, ...]
    max_age: int

    @property
    def enforce(self) -> bool:
        return self.mode == "enforce"

    def allows(self, mx_host: str) -> bool:
        return any(mx_matches(p, mx_host) for p in self.mx)


_TXT_ID = re.compile(r"^[A-Za-z0-9]{1,32}$")


def parse_txt(records: list[str]) -> str | None:
    """The policy id of the ``_mta-sts`` TXT records, or None (no or several STSv1 records,
    or a malformed one: §3.1 says to treat that as no policy)."""
    ours = [r for r in records if r.replace(" ", "").startswith("v=STSv1")]
    if len(ours) != 1:
        return None
    fields = {}
    for part in ours[0].split(";"):
        key, _, value = part.strip().partition("=")
        if key:
            fields[key.strip()] = value.strip()
    policy_id = fields.get("id", "")
    return policy_id if _TXT_ID.match(policy_id) else None


def parse_policy(text: str, policy_id: str = "") -> Policy:
    """The policy file (§3.2): ``key: value`` lines, CRLF or LF."""
    fields: dict[str, str] = {}
    mx: list[str] = []
    for line in text.replace("\r\n", "\n").split("\n"):
        if not line.strip():
            continue
        key, sep, value = line.partition(":")
        if not sep:
            raise PolicyError(f"malformed policy line {line[:80]!r}")
        key, value = key.strip(), value.strip()
        if key == "mx":
            mx.append(value.lower().rstrip("."))
        elif key not in fields:
            fields[key] = value
    if fields.get("version") != "STSv1":
        raise PolicyError("policy version is not STSv1")
    mode = fields.get("mode", "")
    if mode not in ("enforce", "testing", "none"):
        raise PolicyError(f"invalid policy mode {mode!r}")
    try:
        max_age = int(fields.get("max_age", ""))
    except ValueError:
        raise PolicyError("invalid max_age") from None
    if not 0 <= max_age <= MAX_AGE_LIMIT:
        raise PolicyError("max_age out of range")
    if mode != "none" and not mx:
        raise PolicyError("policy without mx patterns")
    return Policy(policy_id, mode, tuple(mx), max_age)


def mx_matches(pattern: str, host: str) -> bool:
    """§4.1: exact match, or ``*.example.com`` matching exactly one leftmost label."""
    host = host.lower().rstrip(".")
    if pattern.startswith("*."):
        head, _, rest = host.partition(".")
        return bool(head) and rest == pattern[2:]
    return host == pattern


class MtaSts:
    """Policy lookups with a cache (see the module docstring)."""

    def __init__(self, resolver: Resolver, *, context: ssl.SSLContext | None = None,
                 port: int = 443, timeout: float = 10.0,
                 clock: Callable[[], float] = time.time, db=None) -> None:
        self.resolver = resolver
        self.db = db
        self.context = context or ssl.create_default_context()
        self.port = port
        self.timeout = timeout
        self.clock = clock
        # domain -> (policy, expires_at, txt_checked_at)
        self._cache: dict[str, tuple[Policy, float, float]] = {}

    async def policy(self, domain: str) -> Policy | None:
        now = self.clock()
        cached = self._cache.get(domain)
        if cached is None and self.db is not None:
            cached = await self._load(domain)
        if cached is not None and cached[1] <= now:
            self._cache.pop(domain, None)
            cached = None
        if cached is not None and now - cached[2] < TXT_RECHECK:
            return cached[0]
        try:
            policy_id = parse_txt(await self.resolver.txt(f"_mta-sts.{domain}"))
        except DnsTempError:
            return cached[0] if cached else None
        if policy_id is None:
            # §5.1: a cached policy stays valid until it expires even without the record
            return cached[0] if cached else None
        if cached is not None and cached[0].id == policy_id:
            self._cache[domain] = (cached[0], cached[1], now)
            return cached[0]
        try:
            text = await self._fetch(domain)
            policy = parse_policy(text, policy_id)
        except (OSError, PolicyError, ssl.SSLError, asyncio.TimeoutError, DnsTempError,
                ValueError) as e:
            log.info("MTA-STS policy of %s not fetched: %s", domain, e)
            return cached[0] if cached else None
        self._cache[domain] = (policy, now + policy.max_age, now)
        if self.db is not None:
            await self._save(domain, policy, now + policy.max_age)
        return policy

    # -- the shared cache -------------------------------------------------------------------

    @staticmethod
    def _key(domain: str) -> str:
        key = f"mta-sts:{domain}"
        return key if len(key) <= 64 else "mta-sts#" + hashlib.sha256(domain.encode()).hexdigest()

    async def _load(self, domain: str) -> tuple[Policy, float, float] | None:
        st = schema.settings
        try:
            async with self.db.read() as conn:
                raw = (await conn.execute(select(st.c.value).where(
                    st.c.key == self._key(domain)))).scalar()
            if raw is None:
                return None
            d = json.loads(raw)
            if d.get("domain") != domain:
                return None
            policy = Policy(d["id"], d["mode"], tuple(d["mx"]), int(d["max_age"]))
            # checked_at 0: the first use after a restart looks at the TXT id again
            return policy, float(d["expires"]), 0.0
        except Exception:  # a damaged cache entry is no entry; never fail a delivery for it
            log.exception("MTA-STS cache entry of %s unreadable", domain)
            return None

    async def _save(self, domain: str, policy: Policy, expires: float) -> None:
        st = schema.settings
        value = json.dumps({"domain": domain, "id": policy.id, "mode": policy.mode,
                            "mx": list(policy.mx), "max_age": policy.max_age,
                            "expires": expires}).encode()
        key = self._key(domain)
        try:
            async with self.db.write() as conn:
                await conn.execute(delete(st).where(st.c.key == key))
                await conn.execute(insert(st).values(key=key, value=value))
        except Exception:  # the in-memory copy still applies in this process
            log.exception("MTA-STS policy of %s not saved", domain)

    async def _fetch(self, domain: str) -> str:
        host = f"mta-sts.{domain}"
        addresses = await self.resolver.a(host) + await self.resolver.aaaa(host)
        if not addresses:
            raise OSError(f"{host} has no address")
        error: Exception | None = None
        for address in addresses:
            try:
                async with asyncio.timeout(self.timeout):
                    return await self._get(address, host)
            except (OSError, ssl.SSLError, TimeoutError, PolicyError) as e:
                error = e
        assert error is not None
        raise error

    async def _get(self, address: str, host: str) -> str:
        reader, writer = await asyncio.open_connection(address, self.port, ssl=self.context,
                                                       server_hostname=host)
        try:
            writer.write(f"GET /.well-known/mta-sts.txt HTTP/1.1\r\nHost: {host}\r\n"
                         "Connection: close\r\nUser-Agent: mailserver-mta-sts\r\n\r\n".encode())
            await writer.drain()
            data = await reader.read(MAX_POLICY_BYTES + 8192)
            while len(data) <= MAX_POLICY_BYTES + 8192:
                more = await reader.read(8192)
                if not more:
                    break
                data += more
        finally:
            writer.close()
        head, sep, body = data.partition(b"\r\n\r\n")
        if not sep:
            raise PolicyError("malformed HTTP response")
        lines = head.decode("latin-1").split("\r\n")
        status = lines[0].split(" ", 2)
        if len(status) < 2 or status[1] != "200":  # §3.3: no redirects
            raise PolicyError(f"HTTP {lines[0][:80]!r}")
        headers = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
        if not headers.get("content-type", "").lower().startswith("text/plain"):
            raise PolicyError("policy is not text/plain")
        if "chunked" in headers.get("transfer-encoding", "").lower():
            body = _dechunk(body)
        elif "content-length" in headers:
            body = body[:int(headers["content-length"])]
        if len(body) > MAX_POLICY_BYTES:
            raise PolicyError("policy larger than 64 KiB")
        return body.decode("utf-8")


def _dechunk(body: bytes) -> bytes:
    out = bytearray()
    while body:
        size_line, _, rest = body.partition(b"\r\n")
        size = int(size_line.split(b";")[0].strip() or b"0", 16)
        if size == 0:
            break
        out += rest[:size]
        body = rest[size + 2:]
    return bytes(out)
