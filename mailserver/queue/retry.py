"""When to try a recipient again: the configured schedule with jitter.

``retry_schedule`` is the delay after the 1st, 2nd, … failed attempt; the last entry repeats
until ``max_age``. Each delay gets ±``JITTER`` of random spread so that recipients deferred
together (one remote outage) do not all come back in the same second. The random source is
passed in (tests seed it); the clock is the caller's ``now``.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

__all__ = ["JITTER", "retry_delay", "next_attempt_at"]

JITTER = 0.1


def retry_delay(attempts: int, schedule: Sequence[float], rng: random.Random) -> float:
    """The delay after the ``attempts``-th failed attempt (1-based), jitter applied."""
    if not schedule:
        base = 300.0
    else:
        base = float(schedule[min(max(attempts, 1), len(schedule)) - 1])
    return max(1.0, base * (1.0 + rng.uniform(-JITTER, JITTER)))


def next_attempt_at(now: int, attempts: int, schedule: Sequence[float],
                    rng: random.Random) -> int:
    return int(now + round(retry_delay(attempts, schedule, rng)))
