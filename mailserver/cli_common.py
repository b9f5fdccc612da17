"""What every ``mailserver`` subcommand shares: user errors, config and services, output."""

from __future__ import annotations

import argparse
import getpass
import json
import os
import secrets
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from mailserver.config import DEFAULT_CONFIG_PATH, Config, ConfigError, config_path, load_config, \
    parse_size


class CliError(Exception):
    """A problem the user can fix: printed as one line on stderr, exit status ``status``."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


def load(args: argparse.Namespace) -> tuple[Config, str]:
    """The validated config named by ``-c`` / $MAILSERVER_CONFIG / the default, and its path."""
    path = config_path(args.config)
    if not os.path.exists(path):
        hint = "" if path != DEFAULT_CONFIG_PATH else (
            " (give one with -c or MAILSERVER_CONFIG, or run `mailserver init`)")
        raise CliError(f"{path}: config file not found{hint}")
    return load_config(path), path


async def schema_problem(db: Any) -> str | None:
    """None when the database is reachable and migrated, else what is wrong."""
    try:
        current, head = await schema_revisions(db)
    except Exception as e:  # connection refused, bad credentials, unreadable file…
        return f"database unreachable: {short_error(e)}"
    if current is None:
        return "database is empty (run `mailserver init` or `mailserver migrate`)"
    if current != head:
        return (f"database schema is at revision {current}, this version needs {head} "
                "(run `mailserver migrate`)")
    return None


async def schema_revisions(db: Any) -> tuple[str | None, str | None]:
    """(revision of the database, None when empty; the revision this code needs)."""
    from mailserver.store import migrate

    return await migrate.current(db.url), migrate.head_revision()


def short_error(e: BaseException) -> str:
    text = str(getattr(e, "orig", None) or e).strip().splitlines()
    return text[0] if text else type(e).__name__


@asynccontextmanager
async def open_services(args: argparse.Namespace, *, check_schema: bool = True
                        ) -> AsyncIterator[Any]:
    """Load the config and open the ``App`` (database, blobs, directory, ingest path)."""
    from mailserver.app import open_app

    cfg, _path = load(args)
    app = await open_app(cfg)
    try:
        if check_schema:
            problem = await schema_problem(app.db)
            if problem:
                raise CliError(problem)
        yield app
    finally:
        await app.close()


# --------------------------------------------------------------------------------------------
# Passwords and sizes
# --------------------------------------------------------------------------------------------

def random_password() -> str:
    """A password people can type: 4 groups of 5 lowercase letters and digits (~103 bits)."""
    alphabet = "abcdefghijkmnopqrstuvwxyz23456789"
    return "-".join("".join(secrets.choice(alphabet) for _ in range(5)) for _ in range(4))


def add_password_options(p: argparse.ArgumentParser, *, allow_random: bool = True) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("--password", help="the password (visible in the process list; prefer "
                                      "--password-stdin)")
    g.add_argument("--password-stdin", action="store_true",
                   help="read the password from the first line of standard input")
    if allow_random:
        g.add_argument("--random-password", action="store_true",
                       help="generate a password and print it once")


def read_password(args: argparse.Namespace) -> tuple[str, bool]:
    """(password, generated) from the options, stdin or an interactive prompt."""
    if args.password is not None:
        return args.password, False
    if args.password_stdin:
        line = sys.stdin.readline()
        password = line.rstrip("\r\n")
        if not password:
            raise CliError("no password on standard input")
        return password, False
    if getattr(args, "random_password", False):
        return random_password(), True
    if not sys.stdin.isatty():
        raise CliError("no password given: use --password, --password-stdin or "
                       "--random-password (stdin is not a terminal, so no prompt)")
    first = getpass.getpass("Password: ")
    if first != getpass.getpass("Password (again): "):
        raise CliError("the passwords do not match")
    if not first:
        raise CliError("the password must not be empty")
    return first, False


def parse_quota(text: str) -> int:
    """Bytes from "2G", "500M", "1.5G", "0" or "unlimited" (0 = unlimited)."""
    if text.strip().lower() in ("unlimited", "none", "0"):
        return 0
    try:
        return parse_size(text)
    except ValueError:
        raise CliError(f"bad quota {text!r} (use e.g. 500M, 2G, 0 or unlimited)") from None


# --------------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------------

def print_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2, ensure_ascii=False, sort_keys=False)
    sys.stdout.write("\n")


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Left-aligned columns separated by two spaces; nothing but the header when empty."""
    cells = [[str(h) for h in headers]] + [["" if v is None else str(v) for v in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    for r in cells:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())


def human_size(n: int) -> str:
    for unit, mult in (("T", 1024 ** 4), ("G", 1024 ** 3), ("M", 1024 ** 2), ("K", 1024)):
        if n >= mult:
            value = n / mult
            return f"{value:.0f}{unit}" if value == int(value) else f"{value:.1f}{unit}"
    return f"{n}B" if n else "0"


def die_on_config_error(e: ConfigError) -> CliError:
    return CliError(str(e))
