"""Failed-login throttling, shared by every daemon that checks passwords (POP3, IMAP, SMTP
submission, JMAP).

Two keys are watched for every attempt: the client's network (the IPv4 address, or the IPv6
/64 — one host usually owns a whole /64) and the login name (normalised by the caller, so
``Bob@x`` and ``bob@x`` are one key). Per key, failures inside a sliding window (default 15
minutes) are counted:

- the first ``free_failures`` failures cost nothing (typos);
- after that every further failure is answered only after an exponential delay
  (``base_delay · 2^(n - free_failures - 1)``, capped at ``max_delay``) — the tarpit that makes
  guessing slow without locking anyone out;
- at ``lockout_after`` failures the key is locked out for ``lockout`` seconds: attempts are
  refused *before* the password is checked (no hashing cost, no oracle), with the protocol's
  temporary-failure answer (POP3 ``-ERR [AUTH]``/``[SYS/TEMP]``, IMAP ``NO [UNAVAILABLE]``,
  SMTP ``454 4.7.0``).

A success clears the user key (the owner got in) but not the network key, so one valid account
does not reset an attacker's budget for guessing others from the same address.

Interface: ``LoginThrottle`` is what daemons call — ``check`` before verifying, then
``failed`` or ``succeeded``. Two implementations:

- ``StoreLoginThrottle`` (what ``App.login_throttle`` is, so every daemon uses it): the counts
  live in the store's ``login_failures`` table, shared by every daemon in every process on
  every node — an attacker gets one budget, not one per daemon or process. Failures are
  written at once (one upsert per key); ``check`` reads a per-process snapshot of the keys
  locked out, refreshed from the store at most every ``refresh`` seconds (default 1 s), so a
  login costs no query in the common case; a success deletes the user's row only when a
  failure of that user is known (snapshot or local). The window is a fixed one that starts at
  a key's first counted failure (an approximation of the sliding window). A store error fails
  open (the attempt is allowed, and logged): an unreadable throttle table must not lock every
  user out.
- ``MemoryLoginThrottle``: counters in this process only (bounded memory, oldest keys dropped
  first); a true sliding window. For tests and tools without a store.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy import case
from sqlalchemy.dialects import postgresql, sqlite

from mailserver.store import schema

__all__ = ["ThrottleDecision", "LoginThrottle", "MemoryLoginThrottle", "StoreLoginThrottle",
           "ThrottlePolicy", "network_key"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ThrottleDecision:
    """``allowed`` False: refuse without checking the password, retry after ``retry_after``
    seconds. ``delay``: seconds to wait before answering a failure (tarpit)."""

    allowed: bool
    delay: float = 0.0
    retry_after: float = 0.0
    reason: str = ""  # "ip" | "user" when refused


ALLOW = ThrottleDecision(True)


@dataclass(frozen=True, slots=True)
class ThrottlePolicy:
    window: float = 900.0  # failures older than this are forgotten
    free_failures: int = 3  # failures before any delay
    base_delay: float = 1.0
    max_delay: float = 30.0
    lockout_after: int = 10  # failures in the window that lock the key out…
    lockout: float = 900.0  # …for this long
    max_keys: int = 100_000  # memory bound of the in-process implementation


class LoginThrottle(Protocol):
    async def check(self, ip: str | None, user: str | None) -> ThrottleDecision:
        """Before verifying credentials: may this attempt go ahead?"""

    async def failed(self, ip: str | None, user: str | None) -> ThrottleDecision:
        """Record a failed attempt; the decision's ``delay`` is how long to wait before
        answering (and ``allowed`` False when this failure triggered a lock-out)."""

    async def succeeded(self, ip: str | None, user: str | None) -> None:
        """Record a successful login (clears the user's failures)."""


def network_key(ip: str | None) -> str | None:
    """The throttled unit of an address: IPv4 as is, IPv6 by /64, None for unix sockets."""
    if not ip:
        return None
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return None
    if addr.version == 6:
        if addr.ipv4_mapped is not None:
            return str(addr.ipv4_mapped)
        return str(ipaddress.IPv6Network((addr, 64), strict=False))
    return str(addr)


class _Entry:
    __slots__ = ("failures", "locked_until")

    def __init__(self) -> None:
        self.failures: deque[float] = deque()
        self.locked_until = 0.0


class _Throttle:
    policy: ThrottlePolicy

    def _delay(self, failures: int) -> float:
        p = self.policy
        extra = failures - p.free_failures
        if extra <= 0:
            return 0.0
        return min(p.max_delay, p.base_delay * (2 ** min(extra - 1, 30)))

    @staticmethod
    def _keys(ip: str | None, user: str | None) -> list[tuple[str, str]]:
        keys = []
        net = network_key(ip)
        if net:
            keys.append(("ip", "n:" + net))
        if user:
            keys.append(("user", "u:" + user[:300]))
        return keys


class MemoryLoginThrottle(_Throttle):
    """``LoginThrottle`` with counters in this process (see the module docstring)."""

    def __init__(self, policy: ThrottlePolicy | None = None, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.policy = policy or ThrottlePolicy()
        self.clock = clock
        self._entries: OrderedDict[str, _Entry] = OrderedDict()

    # -- the LoginThrottle interface ------------------------------------------------------------

    async def check(self, ip: str | None, user: str | None) -> ThrottleDecision:
        now = self.clock()
        for kind, key in self._keys(ip, user):
            entry = self._entries.get(key)
            if entry is not None and entry.locked_until > now:
                return ThrottleDecision(False, retry_after=entry.locked_until - now, reason=kind)
        return ALLOW

    async def failed(self, ip: str | None, user: str | None) -> ThrottleDecision:
        now = self.clock()
        p = self.policy
        worst = 0
        locked: tuple[str, float] | None = None
        for kind, key in self._keys(ip, user):
            entry = self._entry(key)
            self._expire(entry, now)
            entry.failures.append(now)
            n = len(entry.failures)
            worst = max(worst, n)
            if n >= p.lockout_after:
                entry.locked_until = now + p.lockout
                entry.failures.clear()  # a fresh count after the lock-out ends
                locked = (kind, p.lockout)
        delay = self._delay(worst)
        if locked is not None:
            return ThrottleDecision(False, delay=delay, retry_after=locked[1], reason=locked[0])
        return ThrottleDecision(True, delay=delay)

    async def succeeded(self, ip: str | None, user: str | None) -> None:
        if user:
            self._entries.pop("u:" + user, None)

    # -- helpers --------------------------------------------------------------------------------

    def _entry(self, key: str) -> _Entry:
        entry = self._entries.get(key)
        if entry is None:
            entry = self._entries[key] = _Entry()
            while len(self._entries) > self.policy.max_keys:
                self._entries.popitem(last=False)  # the least recently failed key goes
        else:
            self._entries.move_to_end(key)
        return entry

    def _expire(self, entry: _Entry, now: float) -> None:
        cutoff = now - self.policy.window
        while entry.failures and entry.failures[0] <= cutoff:
            entry.failures.popleft()

    def __len__(self) -> int:
        return len(self._entries)


async def _count_failure(conn, key: str, ms: int, window_start: int) -> int:
    """One more failure of ``key`` (a new window when the old one is over); the new count.
    Atomic under concurrent writers: an UPDATE … RETURNING, else an insert that does nothing
    when another process inserted the row first (then the update again)."""
    t = schema.login_failures
    stale = t.c.first_at <= window_start
    bump = t.update().where(t.c.key == key).values(
        failures=case((stale, 1), else_=t.c.failures + 1),
        first_at=case((stale, ms), else_=t.c.first_at), last_at=ms).returning(t.c.failures)
    for _ in range(2):
        n = (await conn.execute(bump)).scalar()
        if n is not None:
            return int(n)
        dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
        inserted = await conn.execute(dialect.insert(t).values(
            key=key, failures=1, first_at=ms, last_at=ms, locked_until=0
        ).on_conflict_do_nothing())
        if inserted.rowcount:
            return 1
    return 1


class StoreLoginThrottle(_Throttle):
    """``LoginThrottle`` shared through the store (see the module docstring)."""

    def __init__(self, db, policy: ThrottlePolicy | None = None, *,
                 clock: Callable[[], float] = time.time, refresh: float = 1.0) -> None:
        self.db = db
        self.policy = policy or ThrottlePolicy()
        self.clock = clock
        self.refresh = refresh
        self._locked: dict[str, float] = {}  # key -> locked until (epoch s), from the store
        self._failing: set[str] = set()  # keys with failures in the window, from the store
        self._local: dict[str, float] = {}  # keys this process saw fail -> when
        self._loaded_at = float("-inf")
        self._loading: asyncio.Task | None = None
        self._purged_at = 0.0

    async def check(self, ip: str | None, user: str | None) -> ThrottleDecision:
        now = self.clock()
        if now - self._loaded_at >= self.refresh:
            await self._reload()
        for kind, key in self._keys(ip, user):
            until = self._locked.get(key, 0.0)
            if until > now:
                return ThrottleDecision(False, retry_after=until - now, reason=kind)
        return ALLOW

    async def failed(self, ip: str | None, user: str | None) -> ThrottleDecision:
        now = self.clock()
        p = self.policy
        t = schema.login_failures
        ms, window_start = int(now * 1000), int((now - p.window) * 1000)
        worst = 0
        locked: tuple[str, float] | None = None
        try:
            async with self.db.write() as conn:
                for kind, key in self._keys(ip, user):
                    self._local[key] = now
                    n = await _count_failure(conn, key, ms, window_start)
                    worst = max(worst, n)
                    if n >= p.lockout_after:
                        until = now + p.lockout
                        await conn.execute(t.update().where(t.c.key == key).values(
                            failures=0, first_at=ms, locked_until=int(until * 1000)))
                        self._locked[key] = until
                        locked = (kind, p.lockout)
                if now - self._purged_at > 60:
                    self._purged_at = now
                    await conn.execute(t.delete().where(
                        (t.c.last_at < window_start) & (t.c.locked_until < ms)))
        except Exception:
            log.exception("login throttle: recording a failure failed")
        delay = self._delay(worst)
        if locked is not None:
            return ThrottleDecision(False, delay=delay, retry_after=locked[1], reason=locked[0])
        return ThrottleDecision(True, delay=delay)

    async def succeeded(self, ip: str | None, user: str | None) -> None:
        if not user:
            return
        key = "u:" + user[:300]
        if key not in self._failing and key not in self._local:
            return  # nothing to clear: no query on the common path
        self._local.pop(key, None)
        self._failing.discard(key)
        try:
            async with self.db.write() as conn:
                await conn.execute(schema.login_failures.delete().where(
                    schema.login_failures.c.key == key))
        except Exception:
            log.exception("login throttle: clearing %s failed", key)

    async def _reload(self) -> None:
        # one refresh at a time; concurrent checks wait for it instead of querying too
        if self._loading is None or self._loading.done():
            self._loading = asyncio.ensure_future(self._load())
        await asyncio.shield(self._loading)

    async def _load(self) -> None:
        now = self.clock()
        t = schema.login_failures
        ms, window_start = int(now * 1000), int((now - self.policy.window) * 1000)
        try:
            async with self.db.read() as conn:
                rows = (await conn.execute(
                    t.select().with_only_columns(t.c.key, t.c.locked_until).where(
                        (t.c.last_at >= window_start) | (t.c.locked_until > ms)))).all()
        except Exception:
            log.exception("login throttle: reading the store failed")
            self._loaded_at = now  # fail open until the next refresh
            return
        self._locked = {r.key: r.locked_until / 1000 for r in rows if r.locked_until > ms}
        self._failing = {r.key for r in rows}
        cutoff = now - self.policy.window
        self._local = {k: v for k, v in self._local.items() if v > cutoff}
        self._loaded_at = now
