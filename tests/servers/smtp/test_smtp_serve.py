"""``mailserver serve mx|submission|lmtp``: each daemon runs on its own as a process (three
processes here, one per daemon), answers, stores, and stops cleanly on SIGTERM."""

from __future__ import annotations

import asyncio
import signal
import smtplib
import socket
import sys

from smtp_testlib import PASSWORD, stored

SECTIONS = {"mx": "[smtp.mx]", "submission": "[smtp.submission]", "lmtp": "[lmtp]"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _wait_port(port: int, proc) -> None:
    for _ in range(600):
        if proc.returncode is not None:
            raise AssertionError(f"serve exited with {proc.returncode}")
        try:
            _, w = await asyncio.open_connection("127.0.0.1", port)
            w.close()
            return
        except OSError:
            await asyncio.sleep(0.1)
    raise AssertionError("daemon did not start listening")


def _talk(daemon: str, port: int, tls) -> dict:
    msg = f"From: bob@example.test\r\nSubject: via serve {daemon}\r\n\r\nx\r\n".encode()
    if daemon == "lmtp":
        with smtplib.LMTP("127.0.0.1", port, timeout=30) as s:
            return s.sendmail("x@pass.test", ["alice@example.test"], msg)
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as s:
        s.starttls(context=tls)
        if daemon == "submission":
            s.login("bob@example.test", PASSWORD)
            return s.sendmail("bob@example.test", ["alice@example.test"], msg)
        return s.sendmail("x@pass.test", ["alice@example.test"], msg)


async def test_serve_each_daemon_separately(make_env, dns):
    async with make_env() as env:
        procs = {}
        ports = {}
        try:
            for daemon, section in SECTIONS.items():
                ports[daemon] = port = _free_port()
                extra = "listen_tls = []\n" if daemon == "submission" else ""
                conf = env.data_dir / f"{daemon}.toml"
                conf.write_text(
                    f'[server]\ndata_dir = "{env.data_dir}"\nhostname = "mail.example.test"\n'
                    f'[log]\nlevel = "info"\nformat = "json"\n'
                    f'[dns]\nnameservers = ["{dns.host}"]\nport = {dns.port}\n'
                    f'{section}\nlisten = ["127.0.0.1:{port}"]\n{extra}')
                procs[daemon] = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "mailserver", "serve", daemon, "-c", str(conf),
                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
            for daemon, proc in procs.items():
                await _wait_port(ports[daemon], proc)
            for daemon in procs:
                assert await asyncio.to_thread(_talk, daemon, ports[daemon],
                                               env.client_tls()) == {}
        finally:
            for proc in procs.values():
                if proc.returncode is None:
                    proc.send_signal(signal.SIGTERM)
            errs = {d: (await asyncio.wait_for(p.communicate(), 60))[1] for d, p in procs.items()}
        for daemon, proc in procs.items():
            err = errs[daemon]
            assert proc.returncode == 0, err.decode()
            assert b'"event": "ready"' in err and b'"event": "stopped"' in err
        subjects = sorted(raw.split(b"Subject: ", 1)[1].split(b"\r\n", 1)[0]
                          for raw in await stored(env, "alice"))
        assert subjects == [b"via serve lmtp", b"via serve mx", b"via serve submission"]
