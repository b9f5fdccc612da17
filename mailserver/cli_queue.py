"""``mailserver queue list|show|stats|retry|hold|release|delete|flush``: the outbound queue.

Selections: message ids (as ``list`` shows them) and/or ``--domain``, ``--recipient``
(substring) and ``--older-than`` (a duration: 30m, 2h, 1d). Commands that change or delete
want ids, a filter or ``--all``, so that a bare ``queue delete`` cannot empty the queue.
``--json`` prints machine-readable output. The work is done by ``mailserver.queue.admin``.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from mailserver.cli_common import CliError, open_services, print_json, print_table


def _age(seconds: int | None) -> str:
    if seconds is None:
        return "-"
    seconds = max(0, int(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _selection(args: argparse.Namespace, *, require: bool) -> Any:
    from mailserver.config import parse_duration
    from mailserver.queue.admin import Selection

    try:
        older = parse_duration(args.older_than) if args.older_than else None
    except ValueError as e:
        raise CliError(f"--older-than: {e}") from None
    sel = Selection(tuple(getattr(args, "ids", None) or ()), args.domain, args.recipient, older)
    if require and not (sel.message_ids or sel.domain or sel.recipient
                        or sel.older_than is not None or args.all):
        raise CliError("give message ids, a filter (--domain, --recipient, --older-than) "
                       "or --all")
    return sel


async def cmd_list(args: argparse.Namespace) -> int:
    from mailserver.queue import admin

    sel = _selection(args, require=False)
    now = int(time.time())
    async with open_services(args) as app:
        async with app.db.read() as conn:
            entries = await admin.list_entries(conn, sel, now, limit=args.limit)
    if args.json:
        print_json(entries)
        return 0
    print_table(["ID", "SENDER", "RECIPIENT", "STATE", "TRIES", "AGE", "NEXT", "LAST"],
                [(e["message_id"], e["sender"] or "<>", e["recipient"],
                  "active" if e["leased"] else e["state"], e["attempts"], _age(e["age"]),
                  _age(e["next_attempt_at"] - now) if e["state"] == "queued" else "-",
                  (e["last_error"] or "")[:60]) for e in entries])
    return 0


async def cmd_show(args: argparse.Namespace) -> int:
    from mailserver.queue import admin

    now = int(time.time())
    async with open_services(args) as app:
        async with app.db.read() as conn:
            msg = await admin.show_message(conn, args.id, now)
        if msg is None:
            raise CliError(f"no queued message {args.id}")
        if args.raw:
            import sys

            sys.stdout.buffer.write(await app.blobs.get(msg["blob_id"]))
            return 0
    if args.json:
        print_json(msg)
        return 0
    for key in ("id", "sender", "size", "ret", "envid", "body", "smtputf8", "requiretls",
                "is_dsn", "account_id", "blob_id"):
        print(f"{key}: {msg[key] if msg[key] is not None else '-'}")
    print(f"age: {_age(msg['age'])}")
    print_table(["RECIPIENT", "STATE", "TRIES", "NEXT", "STATUS", "LAST"],
                [(e["recipient"], "active" if e["leased"] else e["state"], e["attempts"],
                  _age(e["next_attempt_at"] - now), e["last_status"] or "-",
                  e["last_error"] or "") for e in msg["recipients"]])
    return 0


async def cmd_stats(args: argparse.Namespace) -> int:
    from mailserver.queue import admin

    async with open_services(args) as app:
        async with app.db.read() as conn:
            s = await admin.stats(conn, int(time.time()))
    if args.json:
        print_json(s)
        return 0
    print(f"messages: {s['messages']}  recipients: {s['recipients']}  "
          f"deferred: {s['deferred']}  held: {s['held']}  oldest: {_age(s['oldest_age'])}")
    print_table(["DOMAIN", "RECIPIENTS", "DEFERRED", "HELD", "OLDEST"],
                [(d["domain"], d["recipients"], d["deferred"], d["held"],
                  _age(d["oldest_age"])) for d in s["domains"]])
    return 0


def _changer(name: str, require: bool, verb: str):
    async def handler(args: argparse.Namespace) -> int:
        from mailserver.queue import admin

        sel = _selection(args, require=require)
        fn = {"retry": admin.retry, "hold": admin.hold, "release": admin.release,
              "delete": admin.delete_entries, "flush": admin.flush}[name]
        async with open_services(args) as app:
            async with app.db.write() as conn:
                n = await fn(conn, sel, int(time.time()))
        if args.json:
            print_json({"action": name, "recipients": n})
        else:
            print(f"{n} recipient{'s' if n != 1 else ''} {verb}")
        return 0
    return handler


def register(sub: Any, common: argparse.ArgumentParser, json_flag: Any) -> None:
    """Add ``queue`` and its subcommands to the ``mailserver`` parser."""
    q = sub.add_parser("queue", help="the outbound delivery queue").add_subparsers(
        dest="queue_command", metavar="ACTION", required=True)

    def filters(p: argparse.ArgumentParser, ids: bool = True) -> argparse.ArgumentParser:
        if ids:
            p.add_argument("ids", nargs="*", type=int, metavar="ID", help="queued message ids")
        p.add_argument("--domain", help="recipient domain")
        p.add_argument("--recipient", help="recipient address (substring)")
        p.add_argument("--older-than", metavar="AGE", help="queued longer than AGE (e.g. 2h)")
        return p

    p = json_flag(filters(q.add_parser("list", parents=[common], help="list queued recipients")))
    p.add_argument("--limit", type=int, default=None, help="at most this many rows")
    p.set_defaults(handler=cmd_list)
    p = json_flag(q.add_parser("show", parents=[common], help="one queued message"))
    p.add_argument("id", type=int)
    p.add_argument("--raw", action="store_true", help="print the message itself")
    p.set_defaults(handler=cmd_show)
    p = json_flag(q.add_parser("stats", parents=[common],
                               help="queue depth, oldest age, deferrals per domain"))
    p.set_defaults(handler=cmd_stats)
    for name, verb, text in (
            ("retry", "due now", "attempt delivery now"),
            ("hold", "held", "stop delivery attempts until released"),
            ("release", "released", "release held recipients (due now)"),
            ("delete", "deleted", "delete from the queue (no bounce)")):
        p = json_flag(filters(q.add_parser(name, parents=[common], help=text)))
        p.add_argument("--all", action="store_true", help="every queued recipient")
        p.set_defaults(handler=_changer(name, True, verb))
    p = json_flag(filters(q.add_parser("flush", parents=[common],
                                       help="make every queued recipient due now"), ids=False))
    p.set_defaults(handler=_changer("flush", False, "due now"), all=True)
