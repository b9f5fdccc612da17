"""A ``Directory`` on the parametrized ``db`` (SQLite and PostgreSQL), with cheap argon2."""

import pytest

from mailserver.auth.passwords import Argon2Params

FAST = Argon2Params(time_cost=1, memory_cost=1024, parallelism=1)


class Clock:
    def __init__(self, now: float = 1_700_000_000) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def directory(db, clock):
    from mailserver.store.directory import Directory

    return Directory(db, password_params=FAST, clock=clock)
