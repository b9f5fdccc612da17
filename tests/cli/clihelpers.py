"""Helpers for the CLI tests: run ``mailserver`` as a subprocess, check user errors."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from mailserver.testing.tools import require_tool  # noqa: F401  (the CLI tests import it here)

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Result:
    rc: int
    out: str
    err: str


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("MAILSERVER_CONFIG", "NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")}
    env.update(extra)
    return env


def run(*args: str, env: dict[str, str] | None = None, input: str | None = None,
        cwd: Path | None = None, timeout: float = 60) -> Result:
    """``python -m mailserver ARGS`` in a subprocess."""
    p = subprocess.run([sys.executable, "-m", "mailserver", *args], capture_output=True,
                       text=True, env=env or clean_env(), input=input, cwd=cwd or REPO,
                       timeout=timeout)
    return Result(p.returncode, p.stdout, p.stderr)


def assert_user_error(r: Result, *needles: str) -> None:
    """Exit ≠ 0, one line on stderr naming the problem, no traceback."""
    assert r.rc != 0, (r.out, r.err)
    assert "Traceback" not in r.err and "Traceback" not in r.out, r.err
    lines = [ln for ln in r.err.splitlines() if ln.strip()]
    assert len(lines) == 1, r.err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])

