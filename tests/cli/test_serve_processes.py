"""``mailserver serve --processes N``: a supervisor and N worker processes on shared ports.

Real processes on an ``init``ed data dir, real IMAP clients over loopback. Which worker serves
a connection is read from the kernel, not asked of the server: the server-side socket of the
connection is found in /proc/net/tcp by its 4-tuple and its inode among the open files of each
worker (/proc/<pid>/fd). The fake ``NOTIFY_SOCKET`` has SO_PASSCRED on, so the test also sees
that only the supervisor talks to systemd.
"""

from __future__ import annotations

import imaplib
import json
import os
import signal
import socket
import ssl
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from clihelpers import REPO, assert_user_error, clean_env, run
from mailserver.config import parse_config
from mailserver.cli_serve import worker_plan

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux only")

DEMO = ("demo@example.test", "demo-secret")  # the `setup` fixture's demo account
UCRED = struct.Struct("3i")


# -- helpers ---------------------------------------------------------------------------------

def free_ports(n: int) -> list[int]:
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def make_config(setup: Path, tmp_path: Path, *, processes: int | None = None) -> tuple[Path, dict]:
    """The ``init`` config with free IMAP/POP3 ports and JSON logs; returns (path, ports)."""
    imap, imaps, pop3, pop3s = free_ports(4)
    text = setup.read_text()
    for old, new in (("10143", imap), ("10993", imaps), ("10110", pop3), ("10995", pop3s)):
        assert f"127.0.0.1:{old}" in text
        text = text.replace(f"127.0.0.1:{old}", f"127.0.0.1:{new}")
    text = text.replace('format = "text"', 'format = "json"')
    if processes is not None:
        text = text.replace("[server]\n", f"[server]\nprocesses = {processes}\n", 1)
    path = tmp_path / "mailserver.toml"
    path.write_text(text)
    return path, {"imap": imap, "imaps": imaps, "pop3": pop3, "pop3s": pop3s}


class Notify:
    """A fake $NOTIFY_SOCKET that records the sender pid of every datagram."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.settimeout(60)
        self.received: list[tuple[int, str]] = []

    def until(self, prefix: str) -> tuple[int, str]:
        while True:
            data, anc, _f, _a = self.sock.recvmsg(4096, socket.CMSG_SPACE(UCRED.size))
            pid = next(UCRED.unpack_from(d)[0] for lvl, kind, d in anc
                       if lvl == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS)
            self.received.append((pid, data.decode()))
            if data.decode().startswith(prefix):
                return pid, data.decode()

    def close(self) -> None:
        self.sock.close()


def start(config: Path, tmp_path: Path, *args: str, **env: str) -> subprocess.Popen:
    log = open(tmp_path / "serve.log", "w")
    return subprocess.Popen([sys.executable, "-m", "mailserver", "-c", str(config), "serve",
                             *args], env=clean_env(**env), cwd=REPO, stdout=log, stderr=log)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def children(pid: int) -> dict[int, str]:
    """pid → command line of the live children of ``pid``."""
    out = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid and fields[0] != "Z":
                with open(f"/proc/{d}/cmdline", "rb") as f:
                    out[int(d)] = f.read().replace(b"\0", b" ").decode()
        except (OSError, IndexError):
            pass
    return out


def workers_by_index(pid: int) -> dict[int, int]:
    """worker index → pid, from the children's command lines."""
    out = {}
    for child, cmdline in children(pid).items():
        words = cmdline.split()
        if "--worker" in words:
            out[int(words[words.index("--worker") + 1])] = child
    return out


def socket_inodes(pid: int) -> set[int]:
    out = set()
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return out
    for fd in fds:
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            out.add(int(link[8:-1]))
    return out


def tcp_sockets() -> list[tuple[int, int, str, int]]:
    """(local port, remote port, state, inode) of every TCP socket of this network namespace."""
    rows = []
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(name) as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                rows.append((int(fields[1].rsplit(":", 1)[1], 16),
                             int(fields[2].rsplit(":", 1)[1], 16), fields[3], int(fields[9])))
    return rows


def listening_on(pid: int, port: int) -> bool:
    mine = socket_inodes(pid)
    return any(lp == port and st == "0A" and inode in mine
               for lp, _rp, st, inode in tcp_sockets())


def serving_pid(client: socket.socket, port: int, pids: list[int]) -> int | None:
    """The pid among ``pids`` that holds the server side of ``client``'s connection."""
    cport = client.getsockname()[1]
    inodes = {inode for lp, rp, st, inode in tcp_sockets()
              if lp == port and rp == cport and st == "01"}
    for pid in pids:
        if inodes & socket_inodes(pid):
            return pid
    return None


def wait_for(condition, timeout: float = 60, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def imap(port: int, tls_context: ssl.SSLContext) -> imaplib.IMAP4:
    client = imaplib.IMAP4("127.0.0.1", port, timeout=60)
    client.starttls(tls_context)
    return client


def log_events(tmp_path: Path) -> list[dict]:
    return [json.loads(line) for line in (tmp_path / "serve.log").read_text().splitlines()
            if line.startswith("{")]


# -- the tests -------------------------------------------------------------------------------

def test_workers_share_ports_restart_and_stop(setup, tmp_path):
    config, ports = make_config(setup, tmp_path, processes=2)
    notify = Notify(tmp_path / "notify")
    proc = start(config, tmp_path, "imap", "pop3", "maintenance",
                 NOTIFY_SOCKET=str(notify.path), WATCHDOG_USEC="2000000")
    tls = ssl.create_default_context(cafile=str(setup.parent / "tls" / "cert.pem"))
    tls.check_hostname = False
    clients: list[imaplib.IMAP4] = []
    try:
        sender, ready = notify.until("READY=1")
        # READY=1 only once both workers are up: each already holds its own listening sockets
        workers = workers_by_index(proc.pid)
        assert sorted(workers) == [0, 1], children(proc.pid)
        for pid in workers.values():
            for port in ports.values():
                assert listening_on(pid, port), (pid, port)
        assert sender == proc.pid and "2 worker processes" in ready, ready
        # maintenance runs in worker 0 only
        cmdlines = children(proc.pid)
        assert "maintenance" in cmdlines[workers[0]]
        assert "maintenance" not in cmdlines[workers[1]]

        # the kernel spreads connections over both workers
        served: dict[int, list[imaplib.IMAP4]] = {pid: [] for pid in workers.values()}
        for _ in range(30):
            client = imaplib.IMAP4("127.0.0.1", ports["imap"], timeout=60)  # read the greeting
            clients.append(client)
            pid = serving_pid(client.sock, ports["imap"], list(workers.values()))
            assert pid is not None
            served[pid].append(client)
        assert all(served.values()), {p: len(c) for p, c in served.items()}
        for pid, conns in served.items():
            conns[0].starttls(tls)
            assert conns[0].login(*DEMO)[0] == "OK"
            assert conns[0].select("INBOX")[0] == "OK"

        # a worker killed with SIGKILL is restarted, the other one keeps its sessions
        notify.until("WATCHDOG=1")
        os.kill(workers[1], signal.SIGKILL)
        new = wait_for(lambda: (w := workers_by_index(proc.pid)).get(1) not in (None, workers[1])
                       and listening_on(w[1], ports["imap"]) and w[1], what="a new worker 1")
        assert workers_by_index(proc.pid)[0] == workers[0]
        for client in served[workers[0]]:
            assert client.noop()[0] == "OK"
        for _ in range(200):
            client = imap(ports["imap"], tls)
            if serving_pid(client.sock, ports["imap"], [new]) == new:
                clients.append(client)
                break
            client.logout()  # worker 0's: closed again, its per-IP limit (20) stays clear
        else:
            pytest.fail("no connection reached the restarted worker")
        assert client.login(*DEMO)[0] == "OK" and client.select("INBOX")[0] == "OK"
        client.logout()
        notify.until("WATCHDOG=1")  # every worker pings again

        for client in clients:
            try:
                client.shutdown()
            except OSError:
                pass
        clients.clear()
        proc.send_signal(signal.SIGTERM)
        sender, _ = notify.until("STOPPING=1")
        assert sender == proc.pid
        assert proc.wait(60) == 0
    finally:
        for client in clients:
            try:
                client.shutdown()
            except OSError:
                pass
        stop(proc)
        notify.close()
    for pid in (*workers.values(), new):
        wait_for(lambda: gone(pid), 30, f"worker {pid} to exit")
    # only the supervisor spoke to our NOTIFY_SOCKET
    assert {pid for pid, _ in notify.received} == {proc.pid}
    events = log_events(tmp_path)
    assert "Traceback" not in (tmp_path / "serve.log").read_text()
    started = [(e.get("worker"), e["daemon"]) for e in events
               if e.get("event") == "daemon_started"]
    assert (0, "maintenance") in started and (1, "maintenance") not in started
    assert started.count((1, "imap")) == 2  # the first worker 1 and its replacement
    exited = [e for e in events if e.get("event") == "worker_exited"]
    assert len(exited) == 1 and exited[0]["worker"] == 1 and exited[0]["returncode"] == -9
    # every line a worker wrote names it (the supervisor's own lines come before the workers)
    worker_lines = [e for e in events if e["logger"] in ("mailserver.servers",
                                                          "mailserver.maintenance")
                    or e.get("event") in ("daemon_started", "daemon_stopped")]
    assert worker_lines and all(e["worker"] in (0, 1) for e in worker_lines)
    assert [e.get("worker") for e in events if e.get("event") == "daemon_once"] == [None]


def test_hung_worker_stops_the_watchdog_and_killed_supervisor_takes_workers_along(
        setup, tmp_path):
    config, ports = make_config(setup, tmp_path)  # processes = 1 in the file: the option wins
    notify = Notify(tmp_path / "notify")
    proc = start(config, tmp_path, "pop3", "--processes", "2", NOTIFY_SOCKET=str(notify.path),
                 WATCHDOG_USEC="1000000")
    try:
        notify.until("READY=1")
        workers = workers_by_index(proc.pid)
        assert len(workers) == 2
        notify.until("WATCHDOG=1")
        # a worker that stops pinging (here: stopped) → the supervisor withholds WATCHDOG=1
        os.kill(workers[1], signal.SIGSTOP)
        wait_for(lambda: any(e.get("event") == "worker_watchdog" for e in log_events(tmp_path)),
                 what="the supervisor to notice the silent worker")
        notify.sock.settimeout(0.01)
        with pytest.raises(socket.timeout):  # what it sent before noticing
            while True:
                notify.until("WATCHDOG=1")
        notify.sock.settimeout(1.5)  # three of its intervals: nothing while the worker hangs
        with pytest.raises(socket.timeout):
            notify.until("WATCHDOG=1")
        os.kill(workers[1], signal.SIGCONT)
        notify.sock.settimeout(60)
        notify.until("WATCHDOG=1")
        proc.kill()
        proc.wait()
    finally:
        stop(proc)
        notify.close()
    for pid in workers.values():  # PR_SET_PDEATHSIG: SIGTERM, then their graceful stop
        wait_for(lambda: gone(pid), 30, f"orphaned worker {pid} to exit")


def test_worker_that_cannot_start_stops_everything(setup, tmp_path):
    config, ports = make_config(setup, tmp_path, processes=2)
    blocker = socket.socket()  # no SO_REUSEPORT: our workers cannot bind next to it
    blocker.bind(("127.0.0.1", ports["imap"]))
    blocker.listen()
    notify = Notify(tmp_path / "notify")
    proc = start(config, tmp_path, "imap", NOTIFY_SOCKET=str(notify.path))
    try:
        rc = proc.wait(60)
        seen = children(proc.pid)
    finally:
        stop(proc)
        blocker.close()
    notify.sock.settimeout(0.1)
    with pytest.raises(socket.timeout):
        notify.until("READY=1")
    notify.close()
    assert rc == 1 and not seen
    text = (tmp_path / "serve.log").read_text()
    failed = [e for e in log_events(tmp_path) if e.get("event") == "supervisor_failed"]
    assert failed and "before it was ready" in failed[0]["msg"], text
    why = [e for e in log_events(tmp_path) if e.get("event") == "worker_failed"]
    assert why and "in use" in why[0]["msg"] and why[0]["worker"] in (0, 1), text
    assert "Traceback" not in text


def test_nothing_to_duplicate_stays_one_process(setup, tmp_path):
    config, _ports = make_config(setup, tmp_path, processes=3)
    notify = Notify(tmp_path / "notify")
    proc = start(config, tmp_path, "maintenance", NOTIFY_SOCKET=str(notify.path))
    try:
        sender, ready = notify.until("READY=1")
        assert sender == proc.pid and ready.endswith("STATUS=serving: maintenance")
        assert children(proc.pid) == {}
        proc.terminate()
        assert proc.wait(60) == 0
    finally:
        stop(proc)
        notify.close()
    assert any(e.get("event") == "processes_ignored" for e in log_events(tmp_path))


def test_refusals(setup, tmp_path, cli, monkeypatch):
    config, _ports = make_config(setup, tmp_path)
    c = str(config)
    for bad in ("0", "-1", "lots"):
        assert_user_error(cli("-c", c, "serve", "imap", "--processes", bad), "--processes")
    text = config.read_text()
    config.write_text(text.replace("[server]\n", "[server]\nprocesses = 0\n", 1))
    r = cli("-c", c, "serve", "imap")
    assert_user_error(r, "server.processes", "at least 1")
    config.write_text(text.replace("[server]\n", '[server]\nprocesses = "many"\n', 1))
    assert_user_error(cli("-c", c, "serve", "imap"), "server.processes", '"auto"')
    # port 0 cannot be shared
    config.write_text(text.replace(f"127.0.0.1:{_ports['imap']}", "127.0.0.1:0"))
    assert_user_error(cli("-c", c, "serve", "imap", "--processes", "2"), "imap.listen",
                      "port 0")
    # socket activation
    config.write_text(text)
    monkeypatch.setenv("LISTEN_PID", str(os.getpid()))
    monkeypatch.setenv("LISTEN_FDS", "1")
    assert_user_error(cli("-c", c, "serve", "imap", "--processes", "2"), "socket activation")
    # --worker is the supervisor's
    assert_user_error(cli("-c", c, "serve", "imap", "--worker", "0"), "--worker")
    # and the same checks through a real `serve` process exit at once
    r = run("-c", c, "serve", "imap", "--processes", "nope")
    assert_user_error(r, "--processes")


def test_config_and_plan():
    cpus = len(os.sched_getaffinity(0))
    assert parse_config({"server": {"processes": "auto"}}).server.processes == cpus
    assert parse_config({"server": {"processes": 4}}).server.processes == 4
    assert parse_config({}).server.processes == 1
    cfg = parse_config({"server": {"data_dir": "/srv/mail"},
                        "imap": {"listen": ["127.0.0.1:1143"], "listen_tls": []},
                        "jmap": {"listen": ["unix:/run/mailserver/jmap.sock"]}})
    chosen = ["maintenance", "queue", "lmtp", "imap", "jmap"]
    plan = worker_plan(cfg, chosen, 3)
    # maintenance, and daemons on unix sockets (lmtp by default), run in worker 0 only
    assert plan == [chosen, ["queue", "imap"], ["queue", "imap"]]
    assert worker_plan(cfg, chosen, 1) == [chosen]
    assert worker_plan(cfg, ["maintenance", "lmtp"], 4) == [["maintenance", "lmtp"]]
