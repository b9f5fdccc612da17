"""``mailserver token create|list|revoke USER``: API tokens (JMAP ``Authorization: Bearer``)
and app passwords, kept as hashes in the directory (``mailserver.store.directory``).

The secret is printed once, at creation; afterwards only its id, name and dates are shown.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from mailserver.cli_common import CliError, open_services, print_json, print_table


def register(sub: Any, common: argparse.ArgumentParser, json_flag: Any) -> None:
    tok = sub.add_parser("token", help="API tokens (JMAP Bearer) and app passwords") \
        .add_subparsers(dest="action", metavar="ACTION", required=True)
    p = tok.add_parser("create", parents=[common], help="create a token; prints its secret once")
    p.add_argument("address")
    p.add_argument("--name", default="", help="what the token is for (default: token)")
    p.add_argument("--app-password", action="store_true",
                   help="an app password (for IMAP/POP3/SMTP clients) instead of an API token")
    p.add_argument("--expires", metavar="DAYS", type=float, help="expire after DAYS days")
    p.set_defaults(handler=cmd_token_create)
    p = json_flag(tok.add_parser("list", parents=[common], help="list an account's tokens"))
    p.add_argument("address")
    p.set_defaults(handler=cmd_token_list)
    p = tok.add_parser("revoke", parents=[common], help="delete a token by its id")
    p.add_argument("address")
    p.add_argument("id", type=int)
    p.set_defaults(handler=cmd_token_revoke)


async def cmd_token_create(args: argparse.Namespace) -> int:
    kind = "app_password" if args.app_password else "token"
    expires = None
    if args.expires is not None:
        if args.expires <= 0:
            raise CliError("--expires must be a positive number of days")
        expires = int(time.time() + args.expires * 86400)
    async with open_services(args) as app:
        secret = await app.directory.create_token(args.address, args.name or kind, kind,
                                                  expires_at=expires)
    print(secret)
    return 0


def _date(ts: int | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime(ts)) if ts else "-"


async def cmd_token_list(args: argparse.Namespace) -> int:
    async with open_services(args) as app:
        tokens = await app.directory.list_tokens(args.address)
    if args.json:
        print_json([{"id": t.id, "kind": t.kind, "name": t.name, "created_at": t.created_at,
                     "expires_at": t.expires_at, "last_used_at": t.last_used_at}
                    for t in tokens])
    else:
        print_table(["ID", "KIND", "NAME", "CREATED", "EXPIRES", "LAST USED"],
                    [(t.id, t.kind, t.name, _date(t.created_at), _date(t.expires_at),
                      _date(t.last_used_at)) for t in tokens])
    return 0


async def cmd_token_revoke(args: argparse.Namespace) -> int:
    async with open_services(args) as app:
        await app.directory.revoke_token(args.address, args.id)
    print(f"token {args.id} of {args.address} revoked")
    return 0
