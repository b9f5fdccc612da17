"""``mailserver init|check|migrate|fsck``: set up, verify and repair an installation."""

from __future__ import annotations

import argparse
import datetime as dt
import os
import pwd
import sys
import tempfile
from typing import Any

from mailserver import servers
from mailserver.cli_common import CliError, load, open_services, print_json, random_password, \
    schema_problem, short_error
from mailserver.config import DEFAULT_DATA_DIR, Config, config_path, load_config, render_toml

DEFAULT_DOMAIN = "example.test"
DEFAULT_DEMO_USER = "demo"

# `init --local`: loopback only, unprivileged ports, so that trying it out needs no root and
# collides with no system MTA — nor with the reference Postfix/Dovecot stack of the benchmarks
# (2525, 1143, 1110): ours are the standard port + 10000.
LOCAL_TABLES: dict[str, dict[str, Any]] = {
    "log": {"format": "text"},
    "smtp.mx": {"listen": ["127.0.0.1:10025"]},
    "smtp.submission": {"listen": ["127.0.0.1:10587"], "listen_tls": ["127.0.0.1:10465"]},
    "lmtp": {"listen": ["127.0.0.1:10024"]},
    "imap": {"listen": ["127.0.0.1:10143"], "listen_tls": ["127.0.0.1:10993"]},
    "pop3": {"listen": ["127.0.0.1:10110"], "listen_tls": ["127.0.0.1:10995"]},
    "jmap": {"listen": ["127.0.0.1:10080"]},
}


# --------------------------------------------------------------------------------------------
# migrate
# --------------------------------------------------------------------------------------------

async def upgrade_schema(url: str) -> None:
    from mailserver.store import migrate

    try:
        await migrate.upgrade(url)
    except Exception as e:
        if isinstance(e, (OSError, ConnectionError)) or type(e).__module__.startswith(
                ("sqlalchemy", "asyncpg", "sqlite3")):
            raise CliError(f"database.url: cannot migrate: {short_error(e)}") from None
        raise


async def cmd_migrate(args: argparse.Namespace) -> int:
    from mailserver.app import make_database

    cfg, _path = load(args)
    await upgrade_schema(cfg.database.url)
    db = make_database(cfg)
    try:
        problem = await schema_problem(db)
    finally:
        await db.close()
    if problem:
        raise CliError(problem)
    print("database schema is up to date")
    return 0


# --------------------------------------------------------------------------------------------
# init
# --------------------------------------------------------------------------------------------

def _write_private(path: str, text: str, mode: int = 0o640) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), mode=0o755, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".mailserver-", dir=os.path.dirname(os.path.abspath(path)))
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.link(tmp, path)  # fails if the file appeared meanwhile: never clobber a config
    finally:
        os.unlink(tmp)


def _init_config(args: argparse.Namespace) -> tuple[Config, str, bool]:
    """Load the config, or write a new one; returns (config, path, written)."""
    if args.config:
        path = args.config
    elif args.data_dir:
        path = os.path.join(args.data_dir, "mailserver.toml")
    else:
        path = config_path(None)
    if os.path.exists(path):
        cfg = load_config(path)
        if args.data_dir and os.path.realpath(args.data_dir) != os.path.realpath(
                cfg.server.data_dir):
            raise CliError(f"{path} has server.data_dir = {cfg.server.data_dir}, not "
                           f"{args.data_dir} (edit it or pick another --config)")
        return cfg, path, False
    from mailserver.store.directory import InvalidName, normalize_domain

    data_dir = os.path.abspath(args.data_dir or DEFAULT_DATA_DIR)
    try:
        os.makedirs(data_dir, mode=0o750, exist_ok=True)
    except OSError as e:
        raise CliError(f"cannot create {data_dir}: {e.strerror}") from None
    try:
        domain = normalize_domain(args.domain or DEFAULT_DOMAIN)
    except InvalidName as e:
        raise CliError(str(e)) from None
    tables: dict[str, dict[str, Any]] = {
        "server": {"hostname": args.hostname or f"mail.{domain}", "data_dir": data_dir},
    }
    if args.local:
        tables.update(LOCAL_TABLES)
    header = ("mailserver configuration written by `mailserver init`.\n"
              "Only the keys that differ from the defaults are here; conf/mailserver.toml in "
              "the source\ndocuments every key with its default value.")
    try:
        _write_private(path, render_toml(tables, header=header))
    except FileExistsError:
        pass  # a concurrent init wrote it: use theirs
    except OSError as e:
        raise CliError(f"cannot write {path}: {e.strerror}") from None
    return load_config(path), path, True


def _give_to(user: str, data_dir: str, config: str) -> None:
    """``--owner``: the data directory becomes the user's; a config file outside it stays
    root's but readable by the user's group (0640)."""
    try:
        pw = pwd.getpwnam(user)
    except KeyError:
        raise CliError(f"--owner: no user {user!r}") from None
    for directory, dirs, files in os.walk(data_dir):
        for name in [directory] + [os.path.join(directory, n) for n in dirs + files]:
            os.lchown(name, pw.pw_uid, pw.pw_gid)
    if not os.path.realpath(config).startswith(os.path.realpath(data_dir) + os.sep):
        os.chown(config, -1, pw.pw_gid)
        os.chmod(config, 0o640)


def _listeners(cfg: Config) -> list[tuple[str, str, str]]:
    """(daemon, description, addresses) for the connection summary."""
    rows = []
    for name, what in (("imap", "IMAP"), ("pop3", "POP3"), ("submission", "SMTP submission"),
                       ("mx", "SMTP (MX)"), ("lmtp", "LMTP"), ("jmap", "JMAP (HTTP)")):
        section = cfg.daemon_section(name)
        if not section.enabled:
            continue
        mode = getattr(section, "tls", "none")
        parts = [f"{a} ({'STARTTLS' if mode != 'none' else 'plain'})" for a in section.listen]
        parts += [f"{a} (TLS)" for a in getattr(section, "listen_tls", ())]
        rows.append((name, what, ", ".join(parts)))
    return rows


async def cmd_init(args: argparse.Namespace) -> int:
    from mailserver.app import running_app
    from mailserver.cli_admin import dkim_record, ensure_dkim_keys
    from mailserver.store.directory import NotFound, normalize_address, normalize_domain
    from mailserver.tlscert import write_self_signed

    if args.owner:
        try:
            pwd.getpwnam(args.owner)
        except KeyError:
            raise CliError(f"--owner: no user {args.owner!r}") from None
    cfg, path, wrote_config = _init_config(args)
    data_dir = cfg.server.data_dir
    try:
        os.makedirs(data_dir, mode=0o750, exist_ok=True)
        if cfg.blobs.backend == "fs":
            os.makedirs(cfg.blobs.path, mode=0o750, exist_ok=True)
    except OSError as e:
        raise CliError(f"server.data_dir: cannot create {e.filename}: {e.strerror}") from None

    await upgrade_schema(cfg.database.url)
    hostname = cfg.server.effective_hostname()
    try:
        wrote_cert = write_self_signed(cfg.tls.cert, cfg.tls.key, hostname)
    except OSError as e:
        raise CliError(f"tls.cert / tls.key: cannot write {e.filename}: {e.strerror}") from None

    new_keys: list[Any] = []
    keys: list[Any] = []
    domain: str | None = None
    demo_login: str | None = None
    demo_state = ""  # "random" (password printed once), "given", "exists"
    demo_password = ""
    async with running_app(cfg) as app:
        directory = app.directory
        existing = {d.name for d in await directory.list_domains()}
        if args.domain:
            domain = normalize_domain(args.domain)
        elif not existing:
            domain = DEFAULT_DOMAIN
        if domain is not None:
            if domain not in existing:
                await directory.add_domain(domain)
                print(f"domain {domain} added")
            new_keys = await ensure_dkim_keys(directory, domain)
            keys = await directory.list_dkim_keys(domain)
            if not args.no_demo_user:
                local = args.demo_user or DEFAULT_DEMO_USER
                login = normalize_address(local if "@" in local else f"{local}@{domain}")
                demo_login = login
                try:
                    await directory.get_account(login)
                    demo_state = "exists"
                except NotFound:
                    demo_password = args.demo_password or random_password()
                    demo_state = "given" if args.demo_password else "random"
                    await directory.add_account(login, demo_password, display_name="Demo User")

    if args.owner:
        _give_to(args.owner, data_dir, path)

    # -- summary ---------------------------------------------------------------------------
    print()
    print(f"mailserver is set up in {data_dir}")
    print(f"  config    {path}{' (written)' if wrote_config else ' (kept)'}")
    print(f"  database  {cfg.database.url}")
    print(f"  blobs     {cfg.blobs.path if cfg.blobs.backend == 'fs' else 's3'}")
    print(f"  TLS       {cfg.tls.cert}"
          f"{f' (new, self-signed for {hostname})' if wrote_cert else ' (kept)'}")
    print(f"  hostname  {hostname}")
    if domain:
        print(f"  domain    {domain}")
    if demo_state == "random":
        print(f"  account   {demo_login}  password: {demo_password}")
        print("            (shown once; change it with `mailserver user passwd`)")
    elif demo_state == "given":
        print(f"  account   {demo_login}  (password as given)")
    elif demo_state == "exists":
        print(f"  account   {demo_login}  (exists; password unchanged)")
    if keys:
        print()
        print(f"DNS records for {domain} (DKIM{', new' if new_keys else ''}):")
        for key in keys:
            print(f"  {dkim_record(key).zone_line()}")
    print()
    implemented = set(servers.available())
    print("Mail clients connect to:")
    for name, what, addresses in _listeners(cfg):
        note = "" if name in implemented else "  [not implemented yet]"
        print(f"  {what:16} {addresses}{note}")
    if demo_login:
        print(f"  login {demo_login}; the certificate is self-signed, so accept it in the client")
    print()
    print(f"Start it:  mailserver serve -c {path}")
    return 0


# --------------------------------------------------------------------------------------------
# check
# --------------------------------------------------------------------------------------------

def _writable_dir(path: str) -> str | None:
    if not os.path.isdir(path):
        return f"{path}: no such directory"
    try:
        fd, tmp = tempfile.mkstemp(prefix=".check-", dir=path)
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        return f"{path}: not writable ({e.strerror})"
    return None


async def cmd_check(args: argparse.Namespace) -> int:
    from mailserver.app import SetupError, make_database
    from mailserver.tlscert import check_pair

    cfg, path = load(args)  # a ConfigError names file, line and key
    results: list[tuple[bool, str, str]] = [(True, "config", f"{path} is valid")]

    problem = _writable_dir(cfg.server.data_dir)
    results.append((problem is None, "server.data_dir", problem or cfg.server.data_dir))
    if cfg.blobs.backend == "fs":
        problem = _writable_dir(cfg.blobs.path)
        results.append((problem is None, "blobs.path", problem or cfg.blobs.path))
    else:
        results.append((True, "blobs.s3", f"bucket {cfg.blobs.s3.bucket} (not contacted)"))

    try:
        db = make_database(cfg)
    except SetupError as e:
        results.append((False, "database.url", str(e).removeprefix("database.url: ")))
    else:
        try:
            problem = await schema_problem(db)
        finally:
            await db.close()
        results.append((problem is None, "database.url",
                        problem or "reachable, schema up to date"))

    try:
        info = check_pair(cfg.tls.cert, cfg.tls.key)
    except (OSError, ValueError) as e:
        what = getattr(e, "strerror", None) or str(e) or type(e).__name__
        filename = getattr(e, "filename", None)
        where = filename or f"{cfg.tls.cert} / {cfg.tls.key}"
        results.append((False, "tls.cert", f"{where}: {what}"))
    else:
        left = info.not_after - dt.datetime.now(dt.timezone.utc)
        if left.total_seconds() <= 0:
            results.append((False, "tls.cert", f"{cfg.tls.cert} expired on {info.not_after:%Y-%m-%d}"))
        else:
            warn = " — renew soon" if left.days < 14 else ""
            results.append((True, "tls.cert", f"{cfg.tls.cert} valid until "
                            f"{info.not_after:%Y-%m-%d} for {', '.join(info.names) or info.subject}"
                            f"{warn}"))

    implemented = set(servers.available())
    for name in servers.DAEMONS:
        section = cfg.daemon_section(name)
        state = ("enabled" if section.enabled else "disabled") + (
            "" if name in implemented else ", not implemented yet")
        results.append((True, f"daemon {name}", state))

    failed = [r for r in results if not r[0]]
    for ok, key, message in results:
        print(f"{'ok   ' if ok else 'ERROR'} {key}: {message}")
    if failed:
        print(f"mailserver: {len(failed)} problem(s) in {path}", file=sys.stderr)
        return 1
    return 0


# --------------------------------------------------------------------------------------------
# fsck
# --------------------------------------------------------------------------------------------

async def cmd_fsck(args: argparse.Namespace) -> int:
    import dataclasses

    from mailserver.store.fsck import fsck

    async with open_services(args) as app:
        report = await fsck(app.db, app.blobs, repair=args.repair)
        after = await fsck(app.db, app.blobs) if args.repair and not report.ok else report
    if args.json:
        print_json({"ok": report.ok, "repaired": report.repaired, "ok_after_repair": after.ok,
                    "problems": {k: v for k, v in dataclasses.asdict(report).items()
                                 if k != "repaired"}})
    else:
        for f in dataclasses.fields(report):
            items = getattr(report, f.name)
            if f.name == "repaired" or not items:
                continue
            print(f"{f.name.replace('_', ' ')}: {len(items)}")
            for item in items[:20]:
                print(f"  {item}")
            if len(items) > 20:
                print(f"  … and {len(items) - 20} more")
        print(f"fsck: {report.summary()}")
        if args.repair and not report.ok:
            print(f"after repair: {after.summary()}")
    return 0 if after.ok else 1
