"""Fixtures of the search and thread tests (helpers live in searchhelpers.py)."""

from __future__ import annotations

import pytest
from searchhelpers import Mail


@pytest.fixture
async def mail(db) -> Mail:
    return Mail(db)
