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
``failed`` or ``succeeded``. ``MemoryLoginThrottle`` keeps the counters in this process (bounded
memory, oldest keys dropped first); several processes or nodes each count on their own, which
multiplies an attacker's budget by the number of processes. A store-backed implementation
(a ``login_failures`` table keyed by (key, window start), or the ``leases``-style upsert in
``mailserver.store.locks``) can implement the same three methods later so that every daemon on
every node shares the counts; nothing in the daemons changes.
"""

from __future__ import annotations

import ipaddress
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

__all__ = ["ThrottleDecision", "LoginThrottle", "MemoryLoginThrottle", "ThrottlePolicy",
           "network_key"]


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


class MemoryLoginThrottle:
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
            keys.append(("user", "u:" + user))
        return keys

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
