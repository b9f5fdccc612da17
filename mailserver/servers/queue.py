"""``mailserver serve queue``: the outbound delivery workers of this process.

No listener: the daemon is one ``QueueWorker`` (``mailserver.queue.worker``) running until
``stop()``, which lets the running deliveries finish (their outcomes are recorded; anything not
started keeps its lease until it expires). The DNS resolver comes from ``[dns]``, everything
else from ``[queue]``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from mailserver.config import QueueConfig
from mailserver.mailauth.dns import Resolver
from mailserver.queue.mtasts import MtaSts
from mailserver.queue.worker import QueueWorker

if TYPE_CHECKING:
    from mailserver.app import App

log = logging.getLogger(__name__)


class QueueDaemon:
    def __init__(self, worker: QueueWorker) -> None:
        self.worker = worker
        self.task = asyncio.create_task(worker.run(), name="queue-worker")

    async def stop(self) -> None:
        await self.worker.stop()
        await self.task


def make_worker(app: "App", config: QueueConfig, **kwargs) -> QueueWorker:
    dns = app.config.dns
    resolver = Resolver(list(dns.nameservers) or None, port=dns.port, timeout=dns.timeout,
                        dnssec=config.dane)
    if "mta_sts" not in kwargs:
        kwargs["mta_sts"] = MtaSts(resolver, db=app.db) if config.mta_sts else None
    return QueueWorker(db=app.db, blobs=app.blobs, directory=app.directory,
                       deliverer=app.deliverer, resolver=resolver, config=config,
                       hostname=app.config.server.effective_hostname(), **kwargs)


async def start(app: "App", config: QueueConfig) -> QueueDaemon:
    worker = make_worker(app, config)
    log.info("queue worker %s started (%d connections)", worker.owner, config.workers)
    return QueueDaemon(worker)
