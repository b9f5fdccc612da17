"""``mailserver serve [DAEMON …]``: run daemons in this process until SIGTERM / SIGINT.

Without names: every daemon that exists (``mailserver.servers.DAEMONS``) and is ``enabled`` in
the config, plus maintenance. With names: exactly those (``enabled`` is not consulted — naming
a daemon is the decision; this is what the per-daemon systemd units do); a name whose daemon is
not implemented yet is an error, so a unit never looks "running" while serving nothing.

Under systemd (``Type=notify``): ``READY=1`` once every daemon has started, ``WATCHDOG=1``
every half ``WatchdogSec`` from the event loop (a blocked loop stops the pings and gets the
process restarted), ``STOPPING=1`` on shutdown.

With ``server.processes`` (or ``--processes``) > 1 this process becomes the supervisor of that
many worker processes (``mailserver.supervisor``, whose docstring has the decisions); each
worker runs the code below with ``--worker K``. Daemons that must run once (``RUN_ONCE``, and
any daemon listening on a unix socket) go to worker 0 only; when no daemon is left to run
several times, ``serve`` stays one process.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Mapping
from typing import Any

from mailserver import sdnotify, servers
from mailserver.cli_common import CliError, load, schema_problem
from mailserver.config import config_path, parse_config, parse_listen, parse_processes

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


# daemons that are not duplicated over worker processes (their work needs one runner)
RUN_ONCE = frozenset({"maintenance"})


def runs_once(cfg: Any, name: str) -> str | None:
    """Why daemon ``name`` runs in worker 0 only, or None when every worker runs it."""
    if name in RUN_ONCE:
        return "runs once"
    section = cfg.daemon_section(name)
    for address in (*getattr(section, "listen", ()), *getattr(section, "listen_tls", ())):
        if parse_listen(address).unix_path is not None:
            return "listens on a unix socket, which workers cannot share"
    return None


def worker_plan(cfg: Any, chosen: list[str], processes: int) -> list[list[str]]:
    """The daemons of each worker process: worker 0 runs all, the others what may be
    duplicated; a single entry (no supervisor) when nothing may be."""
    shared = [name for name in chosen if runs_once(cfg, name) is None]
    if processes <= 1 or not shared:
        return [chosen]
    return [chosen] + [shared] * (processes - 1)


def supervision_problem(cfg: Any, plan: list[list[str]],
                        environ: Mapping[str, str] | None = None) -> str | None:
    """Why ``plan`` cannot run as several worker processes here, or None."""
    env = os.environ if environ is None else environ
    n = len(plan)
    if not sys.platform.startswith("linux"):
        return f"server.processes = {n} needs Linux (SO_REUSEPORT, PR_SET_PDEATHSIG)"
    if env.get("LISTEN_PID") == str(os.getpid()) and env.get("LISTEN_FDS", "0") != "0":
        return (f"server.processes = {n} cannot be combined with socket activation "
                "(LISTEN_FDS): set processes = 1 or let the daemons bind their ports")
    for name in plan[1]:
        section = cfg.daemon_section(name)
        for key in ("listen", "listen_tls"):
            for address in getattr(section, key, ()):
                if parse_listen(address).port == 0:
                    return (f"{_section_key(name)}.{key}: port 0 (any free port) cannot be "
                            f"shared by {n} worker processes; give a fixed port or set "
                            "server.processes = 1")
    return None


def _section_key(name: str) -> str:
    return f"smtp.{name}" if name in ("mx", "submission") else name


def _processes_option(value: str) -> int:
    try:
        return parse_processes(value)
    except ValueError as e:
        raise CliError(f"--processes: {e}") from None


async def cmd_serve(args: argparse.Namespace) -> int:
    from mailserver.app import configure_logging

    limit_heap_retention()
    if getattr(args, "worker", None) is not None:
        return await _serve_worker(args)
    cfg, path = load(args)
    processes = (cfg.server.processes if getattr(args, "processes", None) is None
                 else _processes_option(args.processes))
    names = list(dict.fromkeys(args.daemons))
    chosen, skipped = select_daemons(cfg, names)
    plan = worker_plan(cfg, chosen, processes)
    if len(plan) == 1:
        configure_logging(cfg.log)
        if processes > 1:
            log.info("one process: %s run once (server.processes = %d ignored)",
                     ", ".join(chosen) or "nothing", processes,
                     extra={"event": "processes_ignored", "processes": processes})
        return await run_daemons(cfg, path, chosen, skipped)

    problem = supervision_problem(cfg, plan)
    if problem:
        raise CliError(problem)
    with open(path, "rb") as f:  # the workers get these bytes, not a later edit of the file
        config_bytes = f.read()
    configure_logging(cfg.log)
    for name, why in skipped.items():
        log.info("not starting %s: %s", name, why,
                 extra={"event": "daemon_skipped", "daemon": name, "reason": why})
    for name in chosen:
        why_once = runs_once(cfg, name)
        if why_once:
            log.info("%s in worker 0 only: %s", name, why_once,
                     extra={"event": "daemon_once", "daemon": name, "reason": why_once})
    from mailserver.supervisor import Supervisor

    return await Supervisor(path, config_bytes, plan).run()


async def _serve_worker(args: argparse.Namespace) -> int:
    """Worker K of a supervisor: the config arrives on stdin, the daemons are named."""
    import tomllib

    from mailserver.app import configure_logging
    from mailserver.supervisor import SUPERVISOR_PID_ENV, die_with_supervisor

    if not os.environ.get(SUPERVISOR_PID_ENV):
        raise CliError("--worker is set by `mailserver serve` with server.processes > 1")
    # Ctrl-C in a terminal reaches the whole process group: the supervisor decides
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if not die_with_supervisor():
        raise CliError("the supervisor is gone")
    path = config_path(args.config)
    text = sys.stdin.buffer.read().decode("utf-8")
    cfg = parse_config(tomllib.loads(text), text=text, path=path)
    configure_logging(cfg.log, worker=args.worker)
    # sd_watchdog_enabled(3): the watchdog is ours, not for anything we might run
    if os.environ.get("WATCHDOG_USEC") and not os.environ.get("WATCHDOG_PID"):
        os.environ["WATCHDOG_PID"] = str(os.getpid())
    try:
        chosen, _skipped = select_daemons(cfg, list(dict.fromkeys(args.daemons)))
        return await run_daemons(cfg, path, chosen, {}, worker=args.worker)
    except CliError as e:  # in the log, with the worker field, rather than a bare stderr line
        log.error("%s", e, extra={"event": "worker_failed"})
        return e.status


def _tune_gc() -> None:
    """Once the daemons are up: move every object that exists by now (modules, the schema,
    compiled statements, configuration — a few hundred thousand) out of the cyclic garbage
    collector's reach (``gc.freeze``). They live as long as the process, yet every full
    collection walked them all; profiled at ~10% of an MX process's CPU under load."""
    import gc

    gc.collect()
    gc.freeze()


async def run_daemons(cfg: Any, path: str, chosen: list[str], skipped: dict[str, str], *,
                      worker: int | None = None) -> int:
    """Start ``chosen``, notify READY, run until SIGTERM/SIGINT, stop them in reverse."""
    from mailserver.app import open_app

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    stop_signals = (signal.SIGTERM,) if worker is not None else (signal.SIGTERM, signal.SIGINT)
    for sig in stop_signals:
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, lambda: log.warning(
        "SIGHUP: configuration reload is not supported; restart to apply changes"))

    running: list[tuple[str, Any]] = []
    watchdog: asyncio.Task[None] | None = None
    try:
        app = await open_app(cfg)
    except BaseException:
        for sig in (*stop_signals, signal.SIGHUP):
            loop.remove_signal_handler(sig)
        raise
    try:
        problem = await schema_problem(app.db)
        if problem:
            raise CliError(problem)
        for name in chosen:
            start = servers.resolve(name)
            assert start is not None
            try:
                running.append((name, await start(app, cfg.daemon_section(name))))
            except OSError as e:  # port taken, no permission, unreadable TLS file…
                raise CliError(f"{name}: cannot start: {e}") from None
            log.info("started %s", name, extra={"event": "daemon_started", "daemon": name})
        for name, why in skipped.items():
            log.info("not starting %s: %s", name, why,
                     extra={"event": "daemon_skipped", "daemon": name, "reason": why})
        _tune_gc()
        status = f"serving: {', '.join(chosen) or 'nothing'}"
        log.info("ready (%s; config %s)", status, path,
                 extra={"event": "ready", "daemons": ",".join(chosen), "config": path})
        if not stop.is_set():  # a stop asked for while starting: no READY=1 after it
            sdnotify.notify(f"READY=1\nSTATUS={status}")
        interval = sdnotify.watchdog_interval()
        if interval:
            watchdog = asyncio.create_task(_watchdog(interval), name="sd-watchdog")
        await stop.wait()
        log.info("stopping", extra={"event": "stopping"})
        sdnotify.notify("STOPPING=1")
    finally:
        if watchdog is not None:
            watchdog.cancel()
        for name, daemon in reversed(running):
            try:
                await daemon.stop()
                log.info("stopped %s", name, extra={"event": "daemon_stopped", "daemon": name})
            except Exception:
                log.exception("stopping %s failed", name)
        await app.close()
        # only now: a second SIGTERM during the graceful stop must not kill us half-way
        for sig in (*stop_signals, signal.SIGHUP):
            loop.remove_signal_handler(sig)
    log.info("stopped", extra={"event": "stopped"})
    return 0


async def _watchdog(interval: float) -> None:
    while True:
        sdnotify.notify("WATCHDOG=1")
        await asyncio.sleep(interval)
