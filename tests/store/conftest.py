"""Fixtures of the mail-store tests (helpers live in mailhelpers.py)."""

from __future__ import annotations

import pytest

from mailhelpers import create_account


@pytest.fixture
async def account(db) -> int:
    return await create_account(db)
