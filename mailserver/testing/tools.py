"""External tools in tests: a missing one is a skip on a developer's machine and a failure
under ``CI=true`` (CI installs everything in .ci/apt-packages, so absence there is a bug).

One place for that rule; every test directory imports it from here.
"""

from __future__ import annotations

import os
import shutil
from typing import NoReturn

from mailserver.testing.pgcluster import PG_BIN_DIRS

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def missing_tool(msg: str) -> NoReturn:
    """Skip (fail under CI=true) because an external tool is not installed."""
    import pytest

    if IN_CI:
        pytest.fail(msg + " (CI=true: a missing tool is a failure)")
    pytest.skip(msg)


def find_tool(name: str) -> str | None:
    """PostgreSQL's bin directories, then $PATH, then /usr/sbin and /usr/bin (a non-root
    $PATH often lacks the sbin directories where postfix, knotd and friends live)."""
    for d in PG_BIN_DIRS:
        candidate = os.path.join(d, name)
        if os.path.exists(candidate):
            return candidate
    return shutil.which(name) or next(
        (p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}") if os.path.exists(p)), None)


def require_tool(name: str, why: str = "") -> str:
    """Path of an external tool, or a skip (failure under CI=true) when it is missing."""
    path = find_tool(name)
    if path is None:
        missing_tool(f"{name} not installed{': ' + why if why else ''}")
    return path
