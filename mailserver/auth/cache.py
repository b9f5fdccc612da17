"""The verified-login cache: skip the slow password hash for a password that just verified.

A mail client logs in on every POP3 poll, IMAP connection and SMTP submission, each time with
the same password, and argon2id is slow on purpose (~40 ms of CPU at our defaults). Like
Dovecot's ``auth_cache``, a successful check is remembered for a short while:

- One entry per login: ``HMAC-SHA256(process key, login NUL password)`` and the **stored hash
  it was verified against**, for ``ttl`` seconds (default 60) after the check that put it
  there (a hit does not extend it). The key is random per process and never leaves memory.
- A hit needs the digest to match **and** the account's current stored hash to be the one
  the entry was made with: the caller still reads the account row, so a password change,
  reset or hash upgrade (on any node — the row is the shared truth) invalidates the entry at
  once; ``disabled`` and the rest of the account are read fresh too. Nothing stale is ever
  accepted, and the TTL only bounds how long a digest lives in memory.
- Failed checks are never cached: every wrong guess pays the full hash, so online guessing
  costs exactly what it did without the cache.
- ``max_entries`` bounds memory (least recently verified go first).
- Thread-safe (one lock around the map): a caller may check it inside the SQLite connection's
  thread, in the transaction that reads the account row.

Trade-off (the same as Dovecot's): while an entry lives, the process memory holds a fast
(HMAC-SHA256) digest of the password instead of only the slow stored hash. Someone who can
read this process's memory can brute-force the passwords of users who logged in during the
last ``ttl`` seconds at SHA-256 speed (though such an attacker also sees the passwords in the
clear as they arrive). ``ttl = 0`` turns the cache off.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

__all__ = ["DEFAULT_MAX_ENTRIES", "DEFAULT_TTL", "VerifiedLoginCache"]

DEFAULT_TTL = 60.0
DEFAULT_MAX_ENTRIES = 100_000


class VerifiedLoginCache:
    """(login, password) pairs that verified recently against a given stored hash."""

    __slots__ = ("_entries", "_key", "_lock", "clock", "max_entries", "ttl")

    def __init__(self, ttl: float = DEFAULT_TTL, max_entries: int = DEFAULT_MAX_ENTRIES, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self.clock = clock
        self._key = secrets.token_bytes(32)
        # login -> (digest, stored hash, expires at)
        self._entries: OrderedDict[str, tuple[bytes, str, float]] = OrderedDict()
        self._lock = threading.Lock()

    def _digest(self, login: str, password: str | bytes) -> bytes:
        pw = password.encode("utf-8") if isinstance(password, str) else password
        return hmac.new(self._key, login.encode("utf-8") + b"\0" + pw, hashlib.sha256).digest()

    def hit(self, login: str, password: str | bytes, stored: str) -> bool:
        """Whether ``password`` verified against ``stored`` (the account's current hash) for
        ``login`` within the last ``ttl`` seconds."""
        entry = self._entries.get(login)
        if entry is None:
            return False
        digest, cached_stored, expires = entry
        if self.clock() >= expires or not hmac.compare_digest(cached_stored, stored):
            with self._lock:
                if self._entries.get(login) is entry:
                    del self._entries[login]
            return False
        return hmac.compare_digest(digest, self._digest(login, password))

    def candidate(self, login: str, password: str | bytes) -> bool:
        """Whether ``hit`` could be True for some stored hash: lets a caller skip reading the
        account row when the answer is no anyway."""
        entry = self._entries.get(login)
        return (entry is not None and self.clock() < entry[2]
                and hmac.compare_digest(entry[0], self._digest(login, password)))

    def remember(self, login: str, password: str | bytes, stored: str) -> None:
        """Record a successful check of ``password`` against ``stored``."""
        if self.ttl <= 0 or self.max_entries <= 0:
            return
        entry = (self._digest(login, password), stored, self.clock() + self.ttl)
        with self._lock:
            self._entries.pop(login, None)
            self._entries[login] = entry
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def forget(self, login: str) -> None:
        with self._lock:
            self._entries.pop(login, None)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)
