"""``mailserver serve``: starts what exists, READY=1 / WATCHDOG=1 / STOPPING=1 over
$NOTIFY_SOCKET, stops cleanly on SIGTERM and SIGINT; the daemon registry."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from clihelpers import REPO, assert_user_error, clean_env, run
from mailserver import sdnotify, servers


def notify_socket(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(30)
    return sock


def start_serve(setup: Path, sock_path: Path, *args: str, **env: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "mailserver", "serve", "-c", str(setup), *args],
        env=clean_env(NOTIFY_SOCKET=str(sock_path), **env), cwd=REPO,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def recv_until(sock: socket.socket, prefix: str) -> list[str]:
    messages = []
    while True:
        message = sock.recv(4096).decode()
        messages.append(message)
        if message.startswith(prefix):
            return messages


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_serve_notifies_ready_and_stops_on_signal(setup, tmp_path, sig):
    sock = notify_socket(tmp_path / "notify")
    proc = start_serve(setup, tmp_path / "notify", WATCHDOG_USEC="200000")
    try:
        ready = recv_until(sock, "READY=1")[-1]
        assert "STATUS=serving: " in ready and "maintenance" in ready
        assert recv_until(sock, "WATCHDOG=1")  # pings every 0.1 s
        assert proc.poll() is None
        proc.send_signal(sig)
        assert recv_until(sock, "STOPPING=1")
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        sock.close()
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    # every daemon of the registry is either started (and stopped) or skipped with a reason
    for name in servers.DAEMONS:
        if servers.resolve(name) is None:
            assert f"not starting {name}: not implemented yet" in err
        else:
            assert f"started {name}" in err and f"stopped {name}" in err, name
            assert name in ready


def test_serve_json_logs_and_named_daemon(setup, tmp_path):
    config = tmp_path / "json.toml"
    config.write_text(setup.read_text().replace('format = "text"', 'format = "json"'))
    sock = notify_socket(tmp_path / "notify")
    proc = start_serve(config, tmp_path / "notify", "maintenance")
    try:
        recv_until(sock, "READY=1")
        proc.terminate()
        _out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        sock.close()
    assert proc.returncode == 0, err
    events = [json.loads(line) for line in err.splitlines()]
    assert {"event": "ready", "daemons": "maintenance"}.items() <= events[1].items() or any(
        e.get("event") == "ready" and e.get("daemons") == "maintenance" for e in events)
    assert all({"ts", "level", "logger", "msg"} <= e.keys() for e in events)
    assert not any(e.get("event") == "daemon_skipped" for e in events)  # named: only that one


def test_serve_refuses_what_does_not_exist(setup):
    assert_user_error(run("-c", str(setup), "serve", "nonsense"), "unknown daemon")
    missing = [n for n in servers.DAEMONS if servers.resolve(n) is None]
    if missing:
        assert_user_error(run("-c", str(setup), "serve", missing[0]), "not implemented yet")


def test_serve_needs_an_initialised_database(tmp_path):
    config = tmp_path / "c.toml"
    (tmp_path / "d").mkdir()
    config.write_text(f'[server]\ndata_dir = "{tmp_path / "d"}"\n')
    assert_user_error(run("-c", str(config), "serve"), "database is empty")


def test_registry():
    assert list(servers.DAEMONS) == ["maintenance", "queue", "lmtp", "mx", "submission",
                                     "imap", "pop3", "jmap"]
    assert servers.resolve("maintenance") is not None
    assert "maintenance" in servers.available()
    with pytest.raises(KeyError):
        servers.resolve("nonsense")
    from mailserver.config import Config

    cfg = Config()
    for name in servers.DAEMONS:  # every daemon has a config section with `enabled`
        assert isinstance(cfg.daemon_section(name).enabled, bool)


# -- sd_notify helper ------------------------------------------------------------------------

def test_sdnotify(tmp_path):
    assert sdnotify.notify("READY=1", {}) is False
    sock = notify_socket(tmp_path / "n")
    assert sdnotify.notify("READY=1\nSTATUS=x", {"NOTIFY_SOCKET": str(tmp_path / "n")})
    assert sock.recv(100) == b"READY=1\nSTATUS=x"
    sock.close()
    abstract = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    name = f"mailserver-test-{time.monotonic_ns()}"
    abstract.bind("\0" + name)
    assert sdnotify.notify("WATCHDOG=1", {"NOTIFY_SOCKET": "@" + name})
    assert abstract.recv(100) == b"WATCHDOG=1"
    abstract.close()


def test_watchdog_interval_and_listen_fds():
    import os

    assert sdnotify.watchdog_interval({}) is None
    assert sdnotify.watchdog_interval({"WATCHDOG_USEC": "30000000"}) == 15.0
    assert sdnotify.watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}) is None
    assert sdnotify.watchdog_interval({"WATCHDOG_USEC": "x"}) is None
    assert sdnotify.listen_fds({}) == {}
    assert sdnotify.listen_fds({"LISTEN_PID": "1", "LISTEN_FDS": "2"}) == {}
    assert sdnotify.listen_fds({"LISTEN_PID": str(os.getpid()), "LISTEN_FDS": "0"}) == {}
