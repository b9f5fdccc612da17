"""``mailserver serve [DAEMON …]``: run daemons in this process until SIGTERM / SIGINT.

Without names: every daemon that exists (``mailserver.servers.DAEMONS``) and is ``enabled`` in
the config, plus maintenance. With names: exactly those (``enabled`` is not consulted — naming
a daemon is the decision; this is what the per-daemon systemd units do); a name whose daemon is
not implemented yet is an error, so a unit never looks "running" while serving nothing.

Under systemd (``Type=notify``): ``READY=1`` once every daemon has started, ``WATCHDOG=1``
every half ``WatchdogSec`` from the event loop (a blocked loop stops the pings and gets the
process restarted), ``STOPPING=1`` on shutdown.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from typing import Any

from mailserver import sdnotify, servers
from mailserver.cli_common import CliError, load, schema_problem

log = logging.getLogger("mailserver.serve")


def select_daemons(cfg: Any, names: list[str]) -> tuple[list[str], dict[str, str]]:
    """(daemons to start in start order, {daemon: why it is not started})."""
    known = list(servers.DAEMONS)
    for name in names:
        if name not in servers.DAEMONS:
            raise CliError(f"unknown daemon {name!r} (known: {', '.join(known)})")
    skipped: dict[str, str] = {}
    chosen: list[str] = []
    for name in known:
        if names and name not in names:
            continue
        if servers.resolve(name) is None:
            if names:
                raise CliError(f"daemon {name!r} is not implemented yet "
                               f"(available: {', '.join(servers.available())})")
            skipped[name] = "not implemented yet"
            continue
        if not names and not cfg.daemon_section(name).enabled:
            skipped[name] = "disabled in the config"
            continue
        chosen.append(name)
    return chosen, skipped


def limit_heap_retention() -> None:
    """Serve big allocations (argon2id's 19 MiB per login, large messages) with mmap.

    glibc otherwise raises its mmap threshold after the first such buffer is freed and keeps
    later ones in the heap, so a daemon holding a thousand idle IMAP connections stayed at
    ~125 KiB RSS per connection instead of ~20 KiB (measured). Same as setting
    MALLOC_MMAP_THRESHOLD_=1048576; a no-op where mallopt does not exist.
    """
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(-3, 1024 * 1024)  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        pass


async def cmd_serve(args: argparse.Namespace) -> int:
    from mailserver.app import configure_logging, open_app

    limit_heap_retention()
    cfg, path = load(args)
    names = list(dict.fromkeys(args.daemons))
    chosen, skipped = select_daemons(cfg, names)
    configure_logging(cfg.log)

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, lambda: log.warning(
        "SIGHUP: configuration reload is not supported; restart to apply changes"))

    app = await open_app(cfg)
    running: list[tuple[str, Any]] = []
    watchdog: asyncio.Task[None] | None = None
    try:
        problem = await schema_problem(app.db)
        if problem:
            raise CliError(problem)
        for name in chosen:
            start = servers.resolve(name)
            assert start is not None
            running.append((name, await start(app, cfg.daemon_section(name))))
            log.info("started %s", name, extra={"event": "daemon_started", "daemon": name})
        for name, why in skipped.items():
            log.info("not starting %s: %s", name, why,
                     extra={"event": "daemon_skipped", "daemon": name, "reason": why})
        status = f"serving: {', '.join(chosen) or 'nothing'}"
        log.info("ready (%s; config %s)", status, path,
                 extra={"event": "ready", "daemons": ",".join(chosen), "config": path})
        sdnotify.notify(f"READY=1\nSTATUS={status}")
        interval = sdnotify.watchdog_interval()
        if interval:
            watchdog = asyncio.create_task(_watchdog(interval), name="sd-watchdog")
        await stop.wait()
        log.info("stopping", extra={"event": "stopping"})
        sdnotify.notify("STOPPING=1")
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)
        if watchdog is not None:
            watchdog.cancel()
        for name, daemon in reversed(running):
            try:
                await daemon.stop()
                log.info("stopped %s", name, extra={"event": "daemon_stopped", "daemon": name})
            except Exception:
                log.exception("stopping %s failed", name)
        await app.close()
    log.info("stopped", extra={"event": "stopped"})
    return 0


async def _watchdog(interval: float) -> None:
    while True:
        sdnotify.notify("WATCHDOG=1")
        await asyncio.sleep(interval)
