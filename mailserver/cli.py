"""The ``mailserver`` command: set up, check, administer and run the mail server.

Every subcommand reads one config file (``-c`` / ``$MAILSERVER_CONFIG`` /
``/etc/mailserver/mailserver.toml``). Problems the user can fix (a bad config key, an unknown
domain, a taken address, a missing file) print one line on stderr and exit with status 1;
``--json`` on list and show commands prints machine-readable output. The handlers live in
``cli_setup`` (init, check, migrate, fsck), ``cli_admin`` (domain, user, alias, dkim),
``cli_mail`` (import, export), ``cli_queue`` (queue), ``cli_token`` (token) and
``cli_serve`` (serve).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from mailserver import __version__
from mailserver.cli_common import CliError, add_password_options
from mailserver.config import CONFIG_ENV, DEFAULT_CONFIG_PATH, ConfigError


def build_parser() -> argparse.ArgumentParser:
    from mailserver import cli_admin, cli_mail, cli_serve, cli_setup

    parser = argparse.ArgumentParser(
        prog="mailserver",
        description="SMTP, IMAP, POP3 and JMAP mail server suite: setup, administration, daemons.",
    )
    config_help = f"config file (default: ${CONFIG_ENV}, else {DEFAULT_CONFIG_PATH})"
    parser.add_argument("-c", "--config", metavar="FILE", help=config_help)
    # -c also after the command (`mailserver serve -c FILE`); SUPPRESS keeps a global -c
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-c", "--config", metavar="FILE", default=argparse.SUPPRESS,
                        help=config_help)
    parser.add_argument("--version", action="version", version=f"mailserver {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def json_flag(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--json", action="store_true", help="print JSON")
        return p

    # -- setup ---------------------------------------------------------------------------
    p = sub.add_parser("init", parents=[common], help="create a working single-node setup (idempotent)")
    p.add_argument("--data-dir", metavar="DIR",
                   help="data directory; the config goes to DIR/mailserver.toml unless -c")
    p.add_argument("--domain", help="mail domain to create (first run default: example.test)")
    p.add_argument("--hostname", help="server host name (default: mail.<domain>)")
    p.add_argument("--demo-user", metavar="USER",
                   help="demo account local part or address (default: demo)")
    p.add_argument("--demo-password", metavar="PASSWORD",
                   help="demo account password (default: random, printed once)")
    p.add_argument("--no-demo-user", action="store_true", help="do not create a demo account")
    p.add_argument("--local", action="store_true",
                   help="listen on 127.0.0.1 with unprivileged ports, text logs (trying it out)")
    p.add_argument("--owner", metavar="USER",
                   help="give the data directory to USER (when run as root for a service user)")
    p.set_defaults(handler=cli_setup.cmd_init)

    p = sub.add_parser("check", parents=[common], help="validate the config and the data directory, database, TLS")
    p.set_defaults(handler=cli_setup.cmd_check)

    p = sub.add_parser("migrate", parents=[common], help="create or upgrade the database schema")
    p.set_defaults(handler=cli_setup.cmd_migrate)

    p = sub.add_parser("fsck", parents=[common], help="check the store for inconsistencies")
    p.add_argument("--repair", action="store_true", help="fix what can be fixed")
    json_flag(p)
    p.set_defaults(handler=cli_setup.cmd_fsck)

    # -- domains -------------------------------------------------------------------------
    dom = sub.add_parser("domain", help="hosted domains").add_subparsers(
        dest="action", metavar="ACTION", required=True)
    p = dom.add_parser("add", parents=[common], help="host a domain (with new DKIM keys)")
    p.add_argument("name")
    p.add_argument("--no-dkim", action="store_true", help="do not create DKIM keys")
    p.set_defaults(handler=cli_admin.cmd_domain_add)
    p = json_flag(dom.add_parser("list", parents=[common], help="list hosted domains"))
    p.set_defaults(handler=cli_admin.cmd_domain_list)
    p = dom.add_parser("del", parents=[common], help="stop hosting a domain (its aliases and DKIM keys go too)")
    p.add_argument("name")
    p.add_argument("--force", action="store_true",
                   help="also delete its accounts with all their mail")
    p.set_defaults(handler=cli_admin.cmd_domain_del)

    # -- users ---------------------------------------------------------------------------
    usr = sub.add_parser("user", help="accounts").add_subparsers(
        dest="action", metavar="ACTION", required=True)
    p = usr.add_parser("add", parents=[common], help="create an account (login = its address)")
    p.add_argument("address")
    add_password_options(p)
    p.add_argument("--quota", help="e.g. 500M, 2G (default: unlimited)")
    p.add_argument("--name", default="", help="display name")
    p.set_defaults(handler=cli_admin.cmd_user_add)
    p = usr.add_parser("passwd", parents=[common], help="set an account's password")
    p.add_argument("address")
    add_password_options(p)
    p.set_defaults(handler=cli_admin.cmd_user_passwd)
    p = usr.add_parser("del", parents=[common], help="delete an account with all its mail")
    p.add_argument("address")
    p.set_defaults(handler=cli_admin.cmd_user_del)
    p = json_flag(usr.add_parser("list", parents=[common], help="list accounts"))
    p.add_argument("domain", nargs="?", help="only this domain")
    p.set_defaults(handler=cli_admin.cmd_user_list)
    p = usr.add_parser("quota", parents=[common], help="set an account's quota")
    p.add_argument("address")
    p.add_argument("size", help="e.g. 500M, 2G; 0 or unlimited for none")
    p.set_defaults(handler=cli_admin.cmd_user_quota)
    p = usr.add_parser("pop3-keep", parents=[common],
                       help="POP3 DELE keeps the message (marked seen) instead of deleting it")
    p.add_argument("address")
    p.add_argument("mode", choices=("on", "off"))
    p.set_defaults(handler=cli_admin.cmd_user_pop3_keep)

    # -- aliases -------------------------------------------------------------------------
    als = sub.add_parser("alias", help="aliases and catch-alls").add_subparsers(
        dest="action", metavar="ACTION", required=True)
    p = als.add_parser("add", parents=[common], help="route ADDRESS (or @domain for a catch-all) to TARGET(s)")
    p.add_argument("address")
    p.add_argument("targets", nargs="+", metavar="target")
    p.set_defaults(handler=cli_admin.cmd_alias_add)
    p = als.add_parser("del", parents=[common], help="delete an alias, or one of its targets")
    p.add_argument("address")
    p.add_argument("target", nargs="?")
    p.set_defaults(handler=cli_admin.cmd_alias_del)
    p = json_flag(als.add_parser("list", parents=[common], help="list aliases"))
    p.add_argument("domain", nargs="?", help="only this domain")
    p.set_defaults(handler=cli_admin.cmd_alias_list)

    # -- DKIM ----------------------------------------------------------------------------
    dk = sub.add_parser("dkim", help="DKIM signing keys").add_subparsers(
        dest="action", metavar="ACTION", required=True)
    p = json_flag(dk.add_parser("show", parents=[common], help="print the DNS TXT records of a domain's keys"))
    p.add_argument("domain")
    p.set_defaults(handler=cli_admin.cmd_dkim_show)
    p = dk.add_parser("add", parents=[common], help="generate a new key")
    p.add_argument("domain")
    p.add_argument("--selector", help="DNS selector (default: ed<year> / rsa<year>)")
    p.add_argument("--algorithm", default="ed25519",
                   choices=["ed25519", "rsa", "ed25519-sha256", "rsa-sha256"])
    p.set_defaults(handler=cli_admin.cmd_dkim_add)

    # -- mail ----------------------------------------------------------------------------
    p = sub.add_parser("import", parents=[common], help="import an mbox file or a Maildir into an account")
    p.add_argument("user", help="account address")
    p.add_argument("format", choices=["mbox", "maildir"])
    p.add_argument("path")
    p.add_argument("--mailbox", help="target mailbox (default: INBOX; for a Maildir, the "
                                     "parent of its subfolders)")
    p.set_defaults(handler=cli_mail.cmd_import)
    p = sub.add_parser("export", parents=[common], help="export a mailbox of an account to an mbox file")
    p.add_argument("user", help="account address")
    p.add_argument("format", choices=["mbox"])
    p.add_argument("path", help="output file, - for standard output")
    p.add_argument("--mailbox", default="INBOX", help="mailbox path (default: INBOX)")
    p.add_argument("--force", action="store_true", help="overwrite an existing file")
    p.set_defaults(handler=cli_mail.cmd_export)

    # -- daemons -------------------------------------------------------------------------
    p = sub.add_parser("serve", parents=[common], help="run daemons (default: every enabled one that exists)")
    p.add_argument("daemons", nargs="*", metavar="DAEMON",
                   help="mx, submission, lmtp, imap, pop3, jmap, queue, maintenance")
    p.add_argument("--processes", metavar="N|auto",
                   help="worker processes sharing the ports (default: server.processes)")
    p.add_argument("--worker", type=int, help=argparse.SUPPRESS)  # set by the supervisor
    p.set_defaults(handler=cli_serve.cmd_serve)

    from mailserver import cli_queue
    cli_queue.register(sub, common, json_flag)
    from mailserver import cli_token
    cli_token.register(sub, common, json_flag)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return asyncio.run(args.handler(args)) or 0
    except CliError as e:
        print(f"mailserver: {e}", file=sys.stderr)
        return e.status
    except ConfigError as e:
        print(f"mailserver: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("mailserver: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `mailserver user list | head`
        return 0
    except Exception as e:
        user_error = _user_error(e)
        if user_error is None:
            raise  # a bug: the traceback is what we need to see
        print(f"mailserver: {user_error}", file=sys.stderr)
        return 1


def _user_error(e: Exception) -> str | None:
    """The one-line message of an error the user caused in a service call, else None."""
    try:
        from mailserver.app import SetupError
        from mailserver.store.directory import DirectoryError
        from mailserver.store.mailboxes import MailboxError
    except ImportError:  # a broken install: let the original traceback show
        return None

    if isinstance(e, (SetupError, DirectoryError)):
        return str(e)
    if isinstance(e, MailboxError):
        return f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
    return None


if __name__ == "__main__":
    sys.exit(main())
