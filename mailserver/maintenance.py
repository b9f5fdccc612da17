"""Periodic maintenance run by ``mailserver serve`` (daemon name ``maintenance``).

- every ``maintenance.blob_sweep_interval``: delete blobs unreferenced for longer than
  ``blob_sweep_grace`` (``mailserver.store.blobrefs.sweep``) and stale temp files of the
  filesystem store;
- every ``maintenance.orphan_sweep_interval``: delete stored blobs that no metadata row knows
  (puts whose transaction never committed; ``sweep_orphans`` lists the whole store).

Several processes may run it at once (each step is safe against concurrent runs); a failed step
is logged and retried at the next interval, never fatal.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from mailserver.config import MaintenanceConfig

if TYPE_CHECKING:
    from mailserver.app import App

log = logging.getLogger(__name__)


class Maintenance:
    """The running maintenance tasks (a ``RunningDaemon``)."""

    def __init__(self, app: "App", config: MaintenanceConfig) -> None:
        self.app = app
        self.config = config
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._every(self.config.blob_sweep_interval, self.sweep_blobs),
                                name="maintenance-blob-sweep"),
            # the orphan sweep lists the whole store: not at every (re)start, a little later
            asyncio.create_task(self._every(self.config.orphan_sweep_interval,
                                            self.sweep_orphans,
                                            first_after=min(600.0,
                                                            self.config.orphan_sweep_interval)),
                                name="maintenance-orphan-sweep"),
        ]

    async def _every(self, interval: float, step: Callable[[], Awaitable[None]], *,
                     first_after: float = 0.0) -> None:
        if first_after:
            await asyncio.sleep(first_after)
        while True:
            try:
                await step()
            except asyncio.CancelledError:
                raise
            except Exception:  # keep running: the next interval retries
                log.exception("maintenance step %s failed", step.__name__)
            await asyncio.sleep(interval)

    async def sweep_blobs(self) -> None:
        from mailserver.store.blobrefs import sweep

        started = time.monotonic()
        deleted = await sweep(self.app.db, self.app.blobs,
                              grace_seconds=int(self.config.blob_sweep_grace))
        temp = 0
        remove_temp = getattr(self.app.blobs, "remove_stale_temp_files", None)
        if remove_temp is not None:
            temp = await remove_temp()
        log.info("blob sweep: %d blobs and %d stale temp files deleted in %.3fs", deleted, temp,
                 time.monotonic() - started,
                 extra={"event": "blob_sweep", "deleted": deleted, "temp_files": temp})

    async def sweep_orphans(self) -> None:
        from mailserver.store.blobrefs import sweep_orphans

        started = time.monotonic()
        deleted = await sweep_orphans(self.app.db, self.app.blobs,
                                      grace_seconds=int(self.config.blob_sweep_grace))
        log.info("orphan blob sweep: %d deleted in %.3fs", deleted, time.monotonic() - started,
                 extra={"event": "orphan_sweep", "deleted": deleted})

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []


async def start(app: "App", config: MaintenanceConfig) -> Maintenance:
    m = Maintenance(app, config)
    m.start()
    return m
