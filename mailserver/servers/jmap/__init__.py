"""The JMAP daemon (RFC 8620 core, RFC 8621 mail, RFC 8887 WebSocket, RFC 9425 quota) on aiohttp.

``start(app, section)`` binds the ``[jmap]`` listeners (``listen`` cleartext HTTP, ``listen_tls``
HTTPS with the ``[tls]`` certificate) as sockets of our own (SO_REUSEPORT, so several processes
may share a port) under one aiohttp ``AppRunner``, and returns a ``JmapDaemon`` whose ``stop()``
closes the push streams and WebSockets, then the listeners.

Layout: ``service`` (HTTP routes, auth, upload/download, push), ``core`` (request processing,
result references, errors, limits), ``mail`` (Mailbox/Thread/Email/SearchSnippet/Quota
methods), ``emailview`` (Email properties from the store and the blob), ``draft``
(the message of an Email/set create), ``snippets`` (SearchSnippet), ``ids``, ``queries`` (the
few SQL reads the store does not offer), ``errors``.

Also: ``blob`` (RFC 9404 Blob/*), ``pushsub`` (PushSubscription; ``webpush``: RFC 8291
encryption of its POSTs when the client gives ``keys``), ``submission``
(EmailSubmission get/set/changes/query/queryChanges, deliveryStatus from the queue),
``identity`` (Identity get/changes/set, one default identity per owned address),
``vacation`` (VacationResponse; the auto-replies themselves are ``mailserver.autoreply``,
called by the ingest path), ``rest`` (the /v1 REST facade and its OpenAPI document).

Not here (yet): PROXY protocol on JMAP listeners (refused at start when configured),
delayed send (EmailSubmission ``maxDelayedSend`` 0), dsnBlobIds/mdnBlobIds (always empty),
Mailbox/queryChanges (always cannotCalculateChanges), Email/copy between accounts
(an account sees only itself), VAPID (RFC 8292) signing of push POSTs.
"""

from __future__ import annotations

import logging
import os
import socket
import stat
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from mailserver.config import parse_listen

log = logging.getLogger("mailserver.jmap")

__all__ = ["start", "JmapDaemon"]


@dataclass(frozen=True, slots=True)
class BoundListener:
    address: str
    implicit_tls: bool


class JmapDaemon:
    def __init__(self, service: Any, runner: web.AppRunner) -> None:
        self.service = service
        self.runner = runner
        self.bound: list[tuple[BoundListener, Any]] = []  # (listener, sockname)
        self.listeners = self  # what mailserver.testing.daemons reads ``.bound`` from

    async def stop(self) -> None:
        await self.service.close_sockets()
        await self.runner.cleanup()


def _socket(value: str) -> socket.socket:
    addr = parse_listen(value)
    if addr.unix_path is not None:
        with _suppress_missing():
            if stat.S_ISSOCK(os.stat(addr.unix_path).st_mode):
                os.unlink(addr.unix_path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(addr.unix_path)
        os.chmod(addr.unix_path, 0o660)
        sock.listen(512)
        return sock
    host = addr.host
    if host is None:
        if socket.has_dualstack_ipv6():
            return socket.create_server(("", addr.port), family=socket.AF_INET6,
                                        dualstack_ipv6=True, reuse_port=True, backlog=512)
        host = "0.0.0.0"
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.create_server((host, addr.port), family=family, reuse_port=True, backlog=512)


class _suppress_missing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: Any) -> bool:
        return exc[0] is not None and issubclass(exc[0], FileNotFoundError)


async def start(app: Any, section: Any) -> JmapDaemon:
    from mailserver.servers.base import server_tls_context
    from mailserver.servers.jmap.service import JmapService

    if section.proxy_protocol:
        raise RuntimeError("jmap.proxy_protocol is not supported yet: terminate the PROXY "
                           "protocol in the load balancer and forward HTTP")
    service = JmapService(app, section, app.login_throttle)
    await service.load_secret()
    await service.push_subscriptions.start()
    runner = web.AppRunner(service.web_app(), handle_signals=False, access_log=None,
                           shutdown_timeout=5.0, lingering_time=1.0)
    await runner.setup()
    daemon = JmapDaemon(service, runner)
    tls = None
    try:
        for values, implicit_tls in ((section.listen, False), (section.listen_tls, True)):
            for value in values:
                if implicit_tls and tls is None:
                    tls = server_tls_context(app.config.tls)
                sock = _socket(value)
                site = web.SockSite(runner, sock, ssl_context=tls if implicit_tls else None)
                await site.start()
                daemon.bound.append((BoundListener(value, implicit_tls), sock.getsockname()))
                log.info("jmap listening on %s%s", value, " (TLS)" if implicit_tls else "",
                         extra={"event": "listening", "daemon": "jmap"})
    except BaseException:
        await service.close_sockets()
        await runner.cleanup()
        raise
    return daemon
