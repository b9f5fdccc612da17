"""A whole single-node setup in a temporary directory, for daemon tests and benchmarks.

    async with daemon_env(tmp_path, database_url) as env:       # schema, TLS cert, demo users
        daemon = await env.start("pop3")                        # listeners on 127.0.0.1:<free>
        host, port = env.address("pop3")                        # plain / STARTTLS listener
        host, port = env.address("pop3", tls=True)              # implicit TLS listener
        ...
        await daemon.stop()                                     # or left to the context exit

Every daemon section gets ``listen = ["127.0.0.1:0"]`` (and ``listen_tls`` likewise) so that
tests never collide on ports; ``overrides`` patches any config key (``{"pop3": {"tls":
"optional"}}``). The domain ``example.test`` with the accounts of ``USERS`` (password
``PASSWORD``) exists when the block starts; ``env.client_tls()`` is an SSL context that trusts the
self-signed certificate.
"""

from __future__ import annotations

import copy
import ssl
from contextlib import asynccontextmanager
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mailserver import servers
from mailserver.app import App, open_app
from mailserver.config import parse_config
from mailserver.servers.base import ListenerGroup
from mailserver.store.migrate import upgrade
from mailserver.tlscert import write_self_signed

DOMAIN = "example.test"
USERS = ("alice", "bob", "carol")
PASSWORD = "correct horse battery staple"
HOSTNAME = "mail.example.test"

_SECTIONS = {
    "mx": ("smtp", "mx"), "submission": ("smtp", "submission"), "lmtp": ("lmtp",),
    "imap": ("imap",), "pop3": ("pop3",), "jmap": ("jmap",),
}


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


@dataclass
class DaemonEnv:
    app: App
    data_dir: Path
    account_ids: dict[str, int] = field(default_factory=dict)  # "alice" → account id
    running: dict[str, Any] = field(default_factory=dict)

    async def start(self, name: str) -> Any:
        start = servers.resolve(name)
        if start is None:
            raise RuntimeError(f"daemon {name} is not implemented")
        daemon = await start(self.app, self.app.config.daemon_section(name))
        self.running[name] = daemon
        return daemon

    def address(self, name: str, *, tls: bool = False) -> tuple[str, int] | str:
        """Where daemon ``name`` listens: (host, port), or a unix socket path."""
        group = self.running[name]
        if not isinstance(group, ListenerGroup):
            group = getattr(group, "listeners", None) or getattr(group, "group")
        for lst, sockname in group.bound:
            if lst.implicit_tls == tls:
                return sockname[:2] if isinstance(sockname, tuple) else sockname
        raise LookupError(f"{name} has no {'TLS ' if tls else ''}listener")

    def client_tls(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.data_dir / "tls" / "cert.pem"))
        ctx.check_hostname = False
        return ctx

    def login(self, user: str) -> str:
        return f"{user}@{DOMAIN}"

    async def stop_all(self) -> None:
        for name in reversed(list(self.running)):
            await self.running.pop(name).stop()


@asynccontextmanager
async def daemon_env(tmp_path: Path, database_url: str | None = None, *,
                   overrides: dict[str, Any] | None = None,
                   users: tuple[str, ...] = USERS) -> AsyncIterator[DaemonEnv]:
    data_dir = tmp_path / "data"
    (data_dir / "tls").mkdir(parents=True, exist_ok=True)
    local = {"listen": ["127.0.0.1:0"]}
    local_tls = {"listen": ["127.0.0.1:0"], "listen_tls": ["127.0.0.1:0"]}
    raw: dict[str, Any] = {
        "server": {"data_dir": str(data_dir), "hostname": HOSTNAME},
        "log": {"format": "text", "level": "warning"},
        "smtp": {"mx": dict(local), "submission": dict(local_tls)},
        "lmtp": {"listen": ["127.0.0.1:0"]},
        "imap": dict(local_tls), "pop3": dict(local_tls), "jmap": dict(local),
    }
    if database_url:
        raw["database"] = {"url": database_url}
    cfg = parse_config(_merge(raw, overrides or {}))
    write_self_signed(cfg.tls.cert, cfg.tls.key, HOSTNAME)
    await upgrade(cfg.database.url)
    app = await open_app(cfg)
    env = DaemonEnv(app, data_dir)
    try:
        await app.directory.add_domain(DOMAIN)
        for user in users:
            account = await app.directory.add_account(f"{user}@{DOMAIN}", PASSWORD)
            env.account_ids[user] = getattr(account, "id", account)
        yield env
    finally:
        try:
            await env.stop_all()
        finally:
            await app.close()
