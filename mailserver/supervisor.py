"""``mailserver serve`` with ``server.processes`` > 1: a supervisor and N worker processes.

Each worker is what ``serve`` is with one process: it opens its own ``App`` and starts the
daemons; the TCP listeners set SO_REUSEPORT, so every worker binds the same ports and the
kernel spreads new connections over them. The supervisor itself holds no listener, no
database connection and no event-loop state beyond its children: it starts, watches, restarts
and stops the workers and speaks for them to systemd.

Decisions:

- **Subprocess workers** (``sys.executable -m mailserver serve DAEMON… --worker K``), not
  ``os.fork()``: a fork after the event loop, threads (aiosqlite, the child watcher) and database
  pools exist copies their locks and sockets in whatever state they are in. A fresh interpreter
  costs ~1 s of start-up once per worker and shares nothing by accident. The supervisor hands
  each worker the config file's *bytes* on stdin (parsed against the same path), so a worker
  restarted hours later runs the same configuration as its siblings, not a half-edited file.
- **Daemons that run once** go to worker 0 only: ``maintenance`` (one sweeper is enough) and
  any daemon with a ``unix:`` listener — a unix socket path cannot be shared with
  SO_REUSEPORT, and each worker would unlink its sibling's socket (``lmtp`` by default). The
  outbound ``queue`` runs in every worker: workers claim recipients by lease. When nothing is
  left to replicate (``serve maintenance``), ``serve`` runs in-process as with one process.
- **Refused with processes > 1**: systemd socket activation (``LISTEN_FDS``: one inherited
  socket per address cannot be given to N processes with SO_REUSEPORT balancing, and
  ``LISTEN_PID`` names one process — use processes = 1 there); a TCP listener on port 0 (each
  worker would get a different port); systems other than Linux (PR_SET_PDEATHSIG,
  SCM_CREDENTIALS, SO_REUSEPORT balancing).
- **sd_notify aggregation**: workers get ``NOTIFY_SOCKET`` pointing at a datagram socket the
  supervisor owns (abstract namespace, ``SO_PASSCRED``: the kernel stamps each datagram with
  the sender's pid, so a datagram is credited to the worker that sent it and anything else is
  ignored). The supervisor sends ``READY=1`` to the real ``$NOTIFY_SOCKET`` once every worker
  has said ``READY=1``; workers always get the socket, with or without systemd, because
  readiness is also what the restart policy needs. With ``WatchdogSec=``, workers get the same
  ``WATCHDOG_USEC`` (each sets ``WATCHDOG_PID`` to its own pid on start: the pid is not known
  before exec) and the supervisor sends ``WATCHDOG=1`` only while every ready worker has pinged
  within that period: a worker whose event loop hangs gets the whole service restarted by
  systemd, as a hung single process would. ``STOPPING=1`` on stop.
- **Stop**: SIGTERM or SIGINT to the supervisor → SIGTERM to every worker (each stops its
  daemons gracefully), wait for all of them (SIGKILL after ``STOP_TIMEOUT``), exit 0. Workers
  ignore SIGINT (a terminal's Ctrl-C reaches the whole process group; the supervisor decides).
- **No orphans**: each worker sets PR_SET_PDEATHSIG = SIGTERM and checks that its parent is
  still the supervisor that started it, so a SIGKILLed supervisor takes its workers along.
- **Restart policy**: a worker that exits unexpectedly is logged and restarted after a backoff
  of 1 s, doubling up to 30 s, back to 1 s once a worker has run for 60 s. A worker that exits
  before it was ready while the service is starting, or ``MAX_FAILED_STARTS`` times in a row
  later, is a problem a restart will not fix (config, port taken by another program, database
  schema): the supervisor stops everything and exits 1, so systemd's ``Restart=`` takes over
  with its own limits. A worker not ready after ``START_TIMEOUT`` is killed and counts as such.
- SO_REUSEPORT has no hand-over: connections still in the accept queue of a worker that dies
  are reset (clients reconnect); established sessions of the other workers are untouched.
- **Logs**: workers log with a ``worker`` field (``configure_logging(…, worker=K)``) to the
  supervisor's stderr; the supervisor's own lines about a worker carry the same field.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import signal
import socket
import struct
import sys
import time
from dataclasses import dataclass, field

from mailserver import sdnotify

log = logging.getLogger("mailserver.supervisor")

INITIAL_BACKOFF = 1.0
MAX_BACKOFF = 30.0
RESET_AFTER = 60.0  # seconds of uptime after which a crash starts the backoff over
MAX_FAILED_STARTS = 5  # exits before READY in a row (after the service was up once)
START_TIMEOUT = 120.0  # a worker not ready by then is killed
STOP_TIMEOUT = 50.0  # below the units' TimeoutStopSec=60
SUPERVISOR_PID_ENV = "MAILSERVER_SUPERVISOR_PID"
_UCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


@dataclass(eq=False)
class Worker:
    index: int
    daemons: list[str]
    proc: asyncio.subprocess.Process | None = None
    started_at: float = 0.0
    ready: bool = False
    ready_event: asyncio.Event = field(default_factory=asyncio.Event)
    last_ping: float = 0.0
    failed_starts: int = 0
    backoff: float = INITIAL_BACKOFF
    overdue_logged: bool = False

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None


def exit_description(rc: int) -> str:
    if rc < 0:
        try:
            return f"was killed by {signal.Signals(-rc).name}"
        except ValueError:
            return f"was killed by signal {-rc}"
    return f"exited with status {rc}"


class Supervisor:
    """Runs ``plan[k]`` (daemon names) in worker ``k`` until stopped; ``run()`` → exit status."""

    def __init__(self, config_path: str, config_bytes: bytes, plan: list[list[str]]) -> None:
        self.config_path = os.path.abspath(config_path)
        self.config_bytes = config_bytes
        self.workers = [Worker(k, list(daemons)) for k, daemons in enumerate(plan)]
        self.stopping = asyncio.Event()
        self.failed = False
        self.ready_sent = False
        self._by_pid: dict[int, Worker] = {}
        self._sock: socket.socket | None = None
        self._notify_name = ""
        self._watchdog_usec = 0
        daemons = list(dict.fromkeys(d for p in plan for d in p))
        self._serving = ", ".join(daemons) or "nothing"

    # -- main --------------------------------------------------------------------------------
    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        self._open_notify_socket(loop)
        interval = sdnotify.watchdog_interval()
        if interval:
            self._watchdog_usec = int(os.environ["WATCHDOG_USEC"])
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_stop_signal, sig)
        loop.add_signal_handler(signal.SIGHUP, lambda: log.warning(
            "SIGHUP: configuration reload is not supported; restart to apply changes"))
        log.info("starting %d worker processes (%s)", len(self.workers), self._serving,
                 extra={"event": "supervisor_starting", "processes": len(self.workers),
                        "daemons": self._serving})
        monitors = [asyncio.create_task(self._keep_running(w), name=f"worker-{w.index}")
                    for w in self.workers]
        watchdog = (asyncio.create_task(self._watchdog(interval), name="sd-watchdog")
                    if interval else None)
        try:
            await self.stopping.wait()
        finally:
            sdnotify.notify("STOPPING=1")
            if watchdog is not None:
                watchdog.cancel()
            await self._stop_workers(monitors)
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)
            if self._sock is not None:
                loop.remove_reader(self._sock.fileno())
                self._sock.close()
        log.info("stopped", extra={"event": "stopped"})
        return 1 if self.failed else 0

    def _on_stop_signal(self, sig: int) -> None:
        if not self.stopping.is_set():
            log.info("%s: stopping %d workers", signal.Signals(sig).name, len(self.workers),
                     extra={"event": "stopping"})
        self.stopping.set()

    def _fail(self, message: str, worker: Worker) -> None:
        log.error("%s; stopping everything", message,
                  extra={"event": "supervisor_failed", "worker": worker.index})
        self.failed = True
        self.stopping.set()

    # -- one worker slot ---------------------------------------------------------------------
    def _command(self, w: Worker) -> list[str]:
        return [sys.executable, "-m", "mailserver", "-c", self.config_path, "serve",
                *w.daemons, "--worker", str(w.index)]

    def _environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if k not in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES", "WATCHDOG_PID",
                            "WATCHDOG_USEC", "NOTIFY_SOCKET")}
        env["NOTIFY_SOCKET"] = "@" + self._notify_name
        env[SUPERVISOR_PID_ENV] = str(os.getpid())
        if self._watchdog_usec:
            env["WATCHDOG_USEC"] = str(self._watchdog_usec)
        # a source checkout run as `python -m mailserver` from elsewhere: keep it importable
        package_parent = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        if not any(os.path.abspath(p or ".") == package_parent for p in sys.path[1:]):
            env["PYTHONPATH"] = os.pathsep.join(
                p for p in (package_parent, env.get("PYTHONPATH")) if p)
        return env

    async def _spawn(self, w: Worker) -> None:
        w.ready = False
        w.ready_event = asyncio.Event()
        w.overdue_logged = False
        w.proc = await asyncio.create_subprocess_exec(
            *self._command(w), stdin=asyncio.subprocess.PIPE, env=self._environment())
        w.started_at = time.monotonic()
        self._by_pid[w.proc.pid] = w
        log.info("worker %d started (pid %d): %s", w.index, w.proc.pid, ", ".join(w.daemons),
                 extra={"event": "worker_started", "worker": w.index, "pid": w.proc.pid,
                        "daemons": ",".join(w.daemons)})
        assert w.proc.stdin is not None
        try:
            w.proc.stdin.write(self.config_bytes)
            await w.proc.stdin.drain()
            w.proc.stdin.close()
        except (BrokenPipeError, ConnectionResetError):
            pass  # it died at once; the exit status tells why
        if self.stopping.is_set():  # a stop came while it was starting
            w.proc.send_signal(signal.SIGTERM)

    async def _wait_exit(self, w: Worker) -> int:
        assert w.proc is not None
        exited = asyncio.ensure_future(w.proc.wait())
        ready = asyncio.ensure_future(w.ready_event.wait())
        try:
            done, _ = await asyncio.wait({exited, ready}, timeout=START_TIMEOUT,
                                         return_when=asyncio.FIRST_COMPLETED)
            if not done:
                log.error("worker %d (pid %d) not ready after %.0f s: killing it", w.index,
                          w.pid, START_TIMEOUT,
                          extra={"event": "worker_start_timeout", "worker": w.index})
                w.proc.kill()
            return await exited
        finally:
            ready.cancel()

    async def _keep_running(self, w: Worker) -> None:
        while not self.stopping.is_set():
            try:
                await self._spawn(w)
            except OSError as e:
                self._fail(f"cannot start worker {w.index}: {e}", w)
                return
            rc = await self._wait_exit(w)
            self._by_pid.pop(w.proc.pid, None)  # type: ignore[union-attr]
            uptime = time.monotonic() - w.started_at
            if self.stopping.is_set():
                return
            # systemd's SIGTERM reaches the workers and us at about the same time
            try:
                await asyncio.wait_for(self.stopping.wait(), 0.5)
                return
            except asyncio.TimeoutError:
                pass
            what = f"worker {w.index} (pid {w.pid}) {exit_description(rc)}"
            if not w.ready:
                w.failed_starts += 1
                if not self.ready_sent:
                    self._fail(f"{what} before it was ready", w)
                    return
                if w.failed_starts >= MAX_FAILED_STARTS:
                    self._fail(f"{what} before it was ready, {w.failed_starts} times in a row",
                               w)
                    return
            if uptime >= RESET_AFTER:
                w.backoff = INITIAL_BACKOFF
            delay, w.backoff = w.backoff, min(w.backoff * 2, MAX_BACKOFF)
            log.warning("%s after %.1f s; restarting it in %.0f s", what, uptime, delay,
                        extra={"event": "worker_exited", "worker": w.index, "pid": w.pid,
                               "returncode": rc, "restart_in": delay})
            self._update_status()
            try:
                await asyncio.wait_for(self.stopping.wait(), delay)
                return
            except asyncio.TimeoutError:
                pass

    async def _stop_workers(self, monitors: list[asyncio.Task[None]]) -> None:
        signalled = [w for w in self.workers if w.alive]
        for w in signalled:
            if w.alive:
                try:
                    w.proc.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
                except ProcessLookupError:
                    pass
        _, pending = await asyncio.wait(monitors, timeout=STOP_TIMEOUT)
        if pending:
            for w in self.workers:
                if w.alive:
                    log.error("worker %d (pid %d) did not stop in %.0f s: killing it", w.index,
                              w.pid, STOP_TIMEOUT, extra={"event": "worker_killed",
                                                          "worker": w.index})
                    w.proc.kill()  # type: ignore[union-attr]
            await asyncio.wait(pending, timeout=10)
        for w in signalled:
            # (-SIGTERM: it was still starting, before its handler was in place)
            if w.proc is not None and w.proc.returncode not in (None, 0, -signal.SIGTERM):
                log.warning("worker %d (pid %d) %s while stopping", w.index, w.pid,
                            exit_description(w.proc.returncode),
                            extra={"event": "worker_stop_failed", "worker": w.index})

    # -- sd_notify from the workers, to systemd ----------------------------------------------
    def _open_notify_socket(self, loop: asyncio.AbstractEventLoop) -> None:
        sock = socket.socket(socket.AF_UNIX,
                             socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK)
        self._notify_name = f"mailserver-supervisor-{os.getpid()}-{secrets.token_hex(8)}"
        sock.bind("\0" + self._notify_name)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self._sock = sock
        loop.add_reader(sock.fileno(), self._on_datagrams)

    def _on_datagrams(self) -> None:
        assert self._sock is not None
        while True:
            try:
                data, ancillary, _flags, _addr = self._sock.recvmsg(
                    4096, socket.CMSG_SPACE(_UCRED.size))
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                log.warning("notify socket: %s", e)
                return
            pid = None
            for level, kind, cdata in ancillary:
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS \
                        and len(cdata) >= _UCRED.size:
                    pid = _UCRED.unpack_from(cdata)[0]
            w = self._by_pid.get(pid) if pid is not None else None
            if w is None:
                log.debug("ignored a notification from pid %s", pid)
                continue
            self._on_notification(w, data.decode("utf-8", "replace"))

    def _on_notification(self, w: Worker, text: str) -> None:
        now = time.monotonic()
        for line in text.split("\n"):
            if line == "READY=1" and not w.ready:
                w.ready = True
                w.last_ping = now
                w.failed_starts = 0
                w.ready_event.set()
                log.info("worker %d (pid %d) ready", w.index, w.pid,
                         extra={"event": "worker_ready", "worker": w.index, "pid": w.pid})
                if self.stopping.is_set():
                    pass  # never READY=1 after STOPPING=1
                elif not self.ready_sent and all(x.ready for x in self.workers):
                    self.ready_sent = True
                    log.info("ready (serving: %s; %d worker processes)", self._serving,
                             len(self.workers), extra={"event": "ready",
                                                       "daemons": self._serving,
                                                       "processes": len(self.workers)})
                    sdnotify.notify(f"READY=1\nSTATUS={self._status_text()}")
                else:
                    self._update_status()
            elif line == "WATCHDOG=1":
                w.last_ping = now
                if w.overdue_logged:
                    log.info("worker %d (pid %d) answers the watchdog again", w.index, w.pid)
                    w.overdue_logged = False

    def _status_text(self) -> str:
        up = sum(1 for w in self.workers if w.alive and w.ready)
        text = f"serving: {self._serving} ({len(self.workers)} worker processes"
        if up < len(self.workers):
            text += f", {len(self.workers) - up} starting"
        return text + ")"

    def _update_status(self) -> None:
        if self.ready_sent and not self.stopping.is_set():
            sdnotify.notify(f"STATUS={self._status_text()}")

    async def _watchdog(self, interval: float) -> None:
        limit = self._watchdog_usec / 1_000_000
        while True:
            now = time.monotonic()
            overdue = [w for w in self.workers
                       if w.alive and w.ready and now - w.last_ping > limit]
            for w in overdue:
                if not w.overdue_logged:
                    w.overdue_logged = True
                    log.error("worker %d (pid %d) stopped answering the watchdog "
                              "(%.0f s): withholding WATCHDOG=1", w.index, w.pid,
                              now - w.last_ping,
                              extra={"event": "worker_watchdog", "worker": w.index})
            if not overdue:
                sdnotify.notify("WATCHDOG=1")
            await asyncio.sleep(interval)


def die_with_supervisor() -> bool:
    """In a worker: get SIGTERM when the supervisor dies; False if it is already gone."""
    expected = os.environ.get(SUPERVISOR_PID_ENV, "")
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_PDEATHSIG = 1
        if libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0) != 0:
            log.warning("prctl(PR_SET_PDEATHSIG) failed: %s", os.strerror(ctypes.get_errno()))
    except (OSError, AttributeError):
        log.warning("PR_SET_PDEATHSIG is not available")
    # the supervisor may have died between our fork and the prctl: then we were re-parented
    return not expected.isdigit() or os.getppid() == int(expected)
