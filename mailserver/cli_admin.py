"""``mailserver domain|user|alias|dkim …``: the directory from the command line."""

from __future__ import annotations

import argparse
import datetime as dt
from typing import Any

from mailserver.cli_common import (
    CliError,
    human_size,
    open_services,
    parse_quota,
    print_json,
    print_table,
    read_password,
)

ALGORITHM_NAMES = {"ed25519": "ed25519-sha256", "rsa": "rsa-sha256",
                   "ed25519-sha256": "ed25519-sha256", "rsa-sha256": "rsa-sha256"}


def default_selector(algorithm: str, year: int | None = None) -> str:
    """``ed2026`` / ``rsa2026``: one selector per algorithm per year makes rotation easy."""
    year = year or dt.datetime.now(dt.timezone.utc).year
    return ("ed" if algorithm.startswith("ed25519") else "rsa") + str(year)


async def ensure_dkim_keys(directory: Any, domain: str) -> list[Any]:
    """Give ``domain`` an ed25519 and an RSA key unless it has keys; returns the new ones."""
    if await directory.list_dkim_keys(domain):
        return []
    return [await directory.add_dkim_key(domain, default_selector(alg), alg)
            for alg in ("ed25519-sha256", "rsa-sha256")]


def dkim_record(key: Any) -> Any:
    from mailserver.dkimkeys import dns_txt_record

    return dns_txt_record(key.domain, key.selector, key.algorithm, key.public_key)


def print_dkim_records(keys: list[Any]) -> None:
    for key in keys:
        print(dkim_record(key).zone_line())


# -- domains -------------------------------------------------------------------------------

async def cmd_domain_add(args: argparse.Namespace) -> int:
    async with open_services(args) as app:
        domain = await app.directory.add_domain(args.name)
        print(f"domain {domain.name} added")
        if not args.no_dkim:
            keys = await ensure_dkim_keys(app.directory, domain.name)
            print("Publish these DKIM records in DNS:")
            print_dkim_records(keys)
    return 0


async def cmd_domain_list(args: argparse.Namespace) -> int:
    async with open_services(args) as app:
        domains = await app.directory.list_domains()
        counts = {d.name: 0 for d in domains}
        for account in await app.directory.list_accounts():
            counts[account.domain] = counts.get(account.domain, 0) + 1
    if args.json:
        print_json([{"name": d.name, "unicode_name": d.unicode_name, "accounts": counts[d.name],
                     "created_at": d.created_at} for d in domains])
    else:
        print_table(["DOMAIN", "ACCOUNTS", "CREATED"],
                    [(d.unicode_name if d.unicode_name == d.name
                      else f"{d.name} ({d.unicode_name})", counts[d.name], _date(d.created_at))
                     for d in domains])
    return 0


async def cmd_domain_del(args: argparse.Namespace) -> int:
    async with open_services(args) as app:
        await app.directory.delete_domain(args.name, force=args.force)
    print(f"domain {args.name} deleted")
    return 0


# -- users ---------------------------------------------------------------------------------

async def cmd_user_add(args: argparse.Namespace) -> int:
    quota = parse_quota(args.quota) if args.quota else 0
    password, generated = read_password(args)
    async with open_services(args) as app:
        account = await app.directory.add_account(args.address, password, quota_bytes=quota,
                                                  display_name=args.name)
    print(f"account {account.login} added")
    if generated:
        print(f"password: {password}")
    return 0


async def cmd_user_passwd(args: argparse.Namespace) -> int:
    password, generated = read_password(args)
    async with open_services(args) as app:
        await app.directory.set_password(args.address, password)
    print(f"password of {args.address} changed")
    if generated:
        print(f"password: {password}")
    return 0


async def cmd_user_del(args: argparse.Namespace) -> int:
    async with open_services(args) as app:
        await app.directory.delete_account(args.address)
    print(f"account {args.address} deleted")
    return 0


async def cmd_user_list(args: argparse.Namespace) -> int:
    async with open_services(args) as app:
        if args.domain:
            await app.directory.get_domain(args.domain)  # unknown domain: an error, not []
        accounts = await app.directory.list_accounts(args.domain)
    if args.json:
        print_json([{"login": a.login, "domain": a.domain, "display_name": a.display_name,
                     "quota_bytes": a.quota_bytes, "used_bytes": a.used_bytes,
                     "disabled": a.disabled, "pop3_keep": a.pop3_keep} for a in accounts])
    else:
        print_table(["ADDRESS", "NAME", "USED", "QUOTA", "STATUS"],
                    [(a.login, a.display_name, human_size(a.used_bytes),
                      human_size(a.quota_bytes) if a.quota_bytes else "unlimited",
                      "disabled" if a.disabled else "active") for a in accounts])
    return 0


async def cmd_user_pop3_keep(args: argparse.Namespace) -> int:
    keep = args.mode == "on"
    async with open_services(args) as app:
        await app.directory.set_pop3_keep(args.address, keep)
    print(f"POP3 DELE for {args.address}: {'keep (mark seen)' if keep else 'delete'}")
    return 0


async def cmd_user_quota(args: argparse.Namespace) -> int:
    quota = parse_quota(args.size)
    async with open_services(args) as app:
        await app.directory.set_quota(args.address, quota)
    print(f"quota of {args.address}: {human_size(quota) if quota else 'unlimited'}")
    return 0


# -- aliases -------------------------------------------------------------------------------

async def cmd_alias_add(args: argparse.Namespace) -> int:
    async with open_services(args) as app:
        for target in args.targets:
            alias = await app.directory.add_alias(args.address, target)
            print(f"alias {alias.address} → {alias.target} added")
    return 0


async def cmd_alias_del(args: argparse.Namespace) -> int:
    async with open_services(args) as app:
        n = await app.directory.delete_alias(args.address, args.target)
    print(f"{n} alias target(s) of {args.address} deleted")
    return 0


async def cmd_alias_list(args: argparse.Namespace) -> int:
    async with open_services(args) as app:
        if args.domain:
            await app.directory.get_domain(args.domain)
        aliases = await app.directory.list_aliases(args.domain)
    if args.json:
        print_json([{"address": a.address, "target": a.target} for a in aliases])
    else:
        print_table(["ADDRESS", "TARGET"], [(a.address, a.target) for a in aliases])
    return 0


# -- DKIM ----------------------------------------------------------------------------------

async def cmd_dkim_show(args: argparse.Namespace) -> int:
    async with open_services(args) as app:
        keys = await app.directory.list_dkim_keys(args.domain)
    if args.json:
        out = []
        for k in keys:
            rec = dkim_record(k)
            out.append({"domain": k.domain, "selector": k.selector, "algorithm": k.algorithm,
                        "active": k.active, "created_at": k.created_at, "name": rec.name,
                        "type": "TXT", "value": rec.value, "strings": list(rec.strings)})
        print_json(out)
        return 0
    if not keys:
        raise CliError(f"domain {args.domain} has no DKIM keys (add one with "
                       f"`mailserver dkim add {args.domain}`)")
    for k in keys:
        state = "" if k.active else " (retired: signs nothing, keep published until unused)"
        print(f"; {k.algorithm} key {k.selector}{state}")
        print(dkim_record(k).zone_line())
    return 0


async def cmd_dkim_add(args: argparse.Namespace) -> int:
    algorithm = ALGORITHM_NAMES[args.algorithm]
    selector = args.selector or default_selector(algorithm)
    async with open_services(args) as app:
        key = await app.directory.add_dkim_key(args.domain, selector, algorithm)
    print(f"DKIM key {key.selector} ({key.algorithm}) added to {key.domain}; publish:")
    print(dkim_record(key).zone_line())
    return 0


def _date(ts: int) -> str:
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).strftime("%Y-%m-%d")
