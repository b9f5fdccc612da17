#!/usr/bin/env python3
"""SMTP ingest benchmark: our MX against Postfix → Dovecot LMTP → Maildir, same load, same run.

    .venv/bin/python scripts/bench/smtp_ingest.py [-n 10000] [-c 20] [--sizes 5,50]
        [--procs 2] [--url URL] [--skip-reference] [--skip-sink]

Load: ``-n`` messages per size (5 KB and 50 KB by default) over ``-c`` concurrent SMTP
connections, each connection sending one message after another (MAIL, RCPT, DATA pipelined,
RFC 2920) to ``user41..user80@bench.test`` in turn (imap.py uses
user1..10 and pop3.py user81..100 of the reference stack). Every message is DKIM-signed (ed25519) by
``sender.bench``, whose SPF, DKIM key and DMARC (p=none) records are served by a throwaway
``knotd`` on loopback; a unique ``X-Bench-Seq`` field above the signature makes every message
different (no blob deduplication). The client is this process (asyncio); the clock runs from
the first connection until every message is stored.

- **Ours**: ``--procs`` processes of ``mailserver serve mx`` sharing the port (SO_REUSEPORT),
  ``tls = "none"`` like the reference, SQLite in a temp dir unless ``--url``; SPF at MAIL FROM,
  DKIM/ARC/DMARC after the data against knot. Stored = acknowledged (250 after commit),
  checked by counting ``emails`` rows. CPU: utime+stime of the server processes.
- **Reference**: ``/work/shared/reference`` (``setup.sh`` once, as root): Postfix on
  127.0.0.1:2525 delivering over LMTP to Dovecot Maildirs; started here if the port is closed
  (and stopped again). Stored = new files in the Maildirs of the bench users, deleted again
  afterwards. (Postfix's log is no measure: postlogd drops lines under load.) CPU: the cgroup ``cpuacct`` of both stacks where available.
- **Accept only**: the same load into Postfix's ``smtp-sink`` (accept and discard).

The last lines print msgs/s, CPU per message and the ratio ours / reference for each size.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

REF = Path("/work/shared/reference")
REF_PORT = 2525
DOMAIN = "bench.test"
SENDER_DOMAIN = "sender.bench"
SENDER = f"news@{SENDER_DOMAIN}"
FIRST_USER, NUSERS = 41, 40  # user41..user80: imap.py uses user1..10, pop3.py user81..100
MAILROOT = Path("/srv/bench/mail") / DOMAIN
CGROUPS = [Path("/sys/fs/cgroup/cpuacct/bench_postfix/cpuacct.usage"),
           Path("/sys/fs/cgroup/cpuacct/bench_dovecot/cpuacct.usage")]
WORDS = ("mail server queue delivery message inbox subject report meeting invoice project "
         "update review draft budget schedule customer release network storage backup").split()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), 1).close()
        return True
    except OSError:
        return False


def proc_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")


# ------------------------------------------------------------------------------------------------
# Messages and DNS
# ------------------------------------------------------------------------------------------------

def body_text(size: int) -> bytes:
    lines = []
    total = 0
    i = 0
    while total < size:
        line = " ".join(WORDS[(i * 7 + k) % len(WORDS)] for k in range(11)) + "\r\n"
        lines.append(line)
        total += len(line)
        i += 1
    return "".join(lines).encode()


async def make_template(size: int, key) -> bytes:
    """A signed message of about ``size`` bytes (the X-Bench-Seq line goes on top later)."""
    from mailserver.mailauth.signing import sign

    head = (f"From: Newsletter <{SENDER}>\r\nTo: reader@{DOMAIN}\r\n"
            f"Subject: bench message of {size // 1024} KB\r\n"
            "Date: Mon, 23 Nov 2026 10:00:00 +0000\r\nMessage-ID: <bench@sender.bench>\r\n"
            "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n").encode()
    raw = head + body_text(size - len(head))
    return await sign(raw, SENDER_DOMAIN, [key]) + raw


async def prepare_dns_and_messages(sizes: list[int]):
    from mailserver.dkimkeys import dns_txt_record, generate_dkim_key
    from mailserver.mailauth.signing import signing_key
    from mailserver.testing.dnsserver import KnotServer

    pair = generate_dkim_key("ed25519-sha256")
    rec = dns_txt_record(SENDER_DOMAIN, "bench", "ed25519-sha256", pair.public)
    knot = KnotServer.start({SENDER_DOMAIN: [
        '@ TXT "v=spf1 ip4:127.0.0.1 -all"',
        "bench._domainkey TXT " + " ".join(f'"{s}"' for s in rec.strings),
        '_dmarc TXT "v=DMARC1; p=none"',
    ]})
    key = signing_key(SENDER_DOMAIN, "bench", "ed25519-sha256", pair.private_pem)
    templates = {size: await make_template(size, key) for size in sizes}
    return knot, templates


# ------------------------------------------------------------------------------------------------
# The load
# ------------------------------------------------------------------------------------------------

async def _read_reply(reader: asyncio.StreamReader) -> int:
    while True:
        line = await reader.readline()
        if not line:
            raise ConnectionError("server closed the connection")
        if line[3:4] != b"-":
            return int(line[:3])


async def connection(port: int, jobs: list[int], template: bytes, errors: list[str]) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
    sent = 0
    try:
        await _read_reply(reader)
        writer.write(b"EHLO client.bench\r\n")
        await _read_reply(reader)
        for seq in jobs:
            rcpt = f"user{FIRST_USER + seq % NUSERS}@{DOMAIN}"
            writer.write(f"MAIL FROM:<{SENDER}>\r\nRCPT TO:<{rcpt}>\r\nDATA\r\n".encode())
            codes = [await _read_reply(reader) for _ in range(3)]
            if codes != [250, 250, 354]:
                errors.append(f"{seq}: {codes}")
                if codes[2] == 354:
                    writer.write(b".\r\n")
                    await _read_reply(reader)
                writer.write(b"RSET\r\n")
                await _read_reply(reader)
                continue
            writer.write(f"X-Bench-Seq: {seq}\r\n".encode() + template + b".\r\n")
            code = await _read_reply(reader)
            if code != 250:
                errors.append(f"{seq}: {code} after DATA")
            else:
                sent += 1
        writer.write(b"QUIT\r\n")
        await writer.drain()
    except (ConnectionError, OSError) as e:
        errors.append(f"connection: {e}")
    finally:
        writer.close()
    return sent


async def load(port: int, n: int, concurrency: int, template: bytes) -> tuple[int, list[str]]:
    errors: list[str] = []
    per = [list(range(i, n, concurrency)) for i in range(concurrency)]
    done = await asyncio.gather(*(connection(port, jobs, template, errors) for jobs in per))
    return sum(done), errors


def wait_until(count, target: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if count() >= target:
            return True
        time.sleep(0.05)
    return False


# ------------------------------------------------------------------------------------------------
# Ours
# ------------------------------------------------------------------------------------------------

async def prepare_ours(cfg_path: Path) -> None:
    from mailserver.app import open_app
    from mailserver.auth.passwords import Argon2Params
    from mailserver.config import load_config
    from mailserver.store.migrate import upgrade

    cfg = load_config(str(cfg_path))
    await upgrade(cfg.database.url)
    app = await open_app(cfg)
    try:
        app.directory.password_params = Argon2Params(time_cost=1, memory_cost=8)
        await app.directory.add_domain(DOMAIN)
        for i in range(FIRST_USER, FIRST_USER + NUSERS):
            await app.directory.add_account(f"user{i}@{DOMAIN}", "benchpass")
    finally:
        await app.close()


def count_ours(url: str):
    if url.startswith("sqlite"):
        path = url.split(":///", 1)[1]

        def count() -> int:
            with sqlite3.connect(path, timeout=30) as db:
                return db.execute("SELECT count(*) FROM emails").fetchone()[0]
        return count
    from sqlalchemy import create_engine, text

    engine = create_engine(url.replace("+asyncpg", "+psycopg") if "+asyncpg" in url else url)

    def count_pg() -> int:
        with engine.connect() as c:
            return c.execute(text("SELECT count(*) FROM emails")).scalar_one()
    return count_pg


def bench_ours(args, knot, template: bytes) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="smtp-bench-"))
    port = free_port()
    url = args.url or f"sqlite:///{tmp}/mail.sqlite3"
    cfg = tmp / "mailserver.toml"
    cfg.write_text(
        f'[server]\ndata_dir = "{tmp}"\nhostname = "mx.bench.local"\n'
        f'[database]\nurl = "{url}"\n'
        '[log]\nlevel = "warning"\nformat = "text"\n'
        f'[dns]\nnameservers = ["{knot.host}"]\nport = {knot.port}\n'
        f'[smtp.mx]\nlisten = ["127.0.0.1:{port}"]\ntls = "none"\nmax_messages_per_ip = 0\n'
        '[limits]\nmax_connections_per_ip = 10000\n')
    asyncio.run(prepare_ours(cfg))
    count = count_ours(url)
    base = count()
    env = dict(os.environ, PYTHONPATH=str(REPO))
    procs = [subprocess.Popen([sys.executable, "-m", "mailserver", "serve", "mx", "-c", str(cfg)],
                              env=env) for _ in range(args.procs)]
    try:
        if not wait_until(lambda: port_open(port), 1, 60):
            raise RuntimeError("our MX did not start")
        time.sleep(1.0 if args.procs > 1 else 0)  # let every process bind
        cpu0 = sum(proc_cpu(p.pid) for p in procs)
        t0 = time.monotonic()
        sent, errors = asyncio.run(load(port, args.messages, args.concurrency, template))
        ok = wait_until(lambda: count() - base >= sent, 1, 120)
        elapsed = time.monotonic() - t0
        cpu = sum(proc_cpu(p.pid) for p in procs) - cpu0
        stored = count() - base
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(tmp, ignore_errors=True)
    return {"sent": sent, "stored": stored, "complete": ok, "elapsed": elapsed, "cpu": cpu,
            "errors": errors}


# ------------------------------------------------------------------------------------------------
# Reference: Postfix → Dovecot LMTP → Maildir, and smtp-sink
# ------------------------------------------------------------------------------------------------

def maildir_files() -> set[Path]:
    files = set()
    for i in range(FIRST_USER, FIRST_USER + NUSERS):
        for sub in ("new", "cur"):
            d = MAILROOT / f"user{i}" / "Maildir" / sub
            try:
                files.update(d / name for name in os.listdir(d))
            except FileNotFoundError:
                pass
    return files


def maildir_count() -> int:
    return len(maildir_files())


def cgroup_cpu() -> float | None:
    if not all(p.exists() for p in CGROUPS):
        return None
    return sum(int(p.read_text()) for p in CGROUPS) / 1e9


def bench_reference(args, template: bytes) -> dict:
    started = False
    if not port_open(REF_PORT):
        subprocess.run(["sh", str(REF / "start.sh")], check=True, capture_output=True)
        started = True
    before = maildir_files()
    count = lambda: maildir_count() - len(before)  # noqa: E731
    try:
        cpu0 = cgroup_cpu()
        t0 = time.monotonic()
        sent, errors = asyncio.run(load(REF_PORT, args.messages, args.concurrency, template))
        ok = wait_until(lambda: count() >= sent, 1, 300)
        elapsed = time.monotonic() - t0
        cpu1 = cgroup_cpu()
        stored = count()
    finally:
        if started:
            subprocess.run(["sh", str(REF / "stop.sh")], capture_output=True)
        for path in maildir_files() - before:  # leave the reference Maildirs as they were
            try:
                with open(path, "rb") as f:
                    if b"\nX-Bench-Seq: " in f.read(8192):  # ours, not another client's
                        path.unlink()
            except FileNotFoundError:
                pass
    cpu = cpu1 - cpu0 if cpu0 is not None and cpu1 is not None else None
    return {"sent": sent, "stored": stored, "complete": ok, "elapsed": elapsed, "cpu": cpu,
            "errors": errors}


def bench_sink(args, template: bytes) -> dict | None:
    exe = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"
    if not os.path.exists(exe):
        return None
    port = free_port()
    user = ["-u", "nobody"] if os.geteuid() == 0 else []
    sink = subprocess.Popen([exe, *user, f"127.0.0.1:{port}", "1000"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: port_open(port), 1, 30)
        cpu0 = proc_cpu(sink.pid)
        t0 = time.monotonic()
        sent, errors = asyncio.run(load(port, args.messages, args.concurrency, template))
        elapsed = time.monotonic() - t0
        cpu = proc_cpu(sink.pid) - cpu0
    finally:
        sink.terminate()
        sink.wait(10)
    return {"sent": sent, "stored": sent, "complete": True, "elapsed": elapsed, "cpu": cpu,
            "errors": errors}


# ------------------------------------------------------------------------------------------------

def report(name: str, r: dict) -> float:
    rate = r["stored"] / r["elapsed"] if r["elapsed"] else 0.0
    cpu = r.get("cpu")
    cpu_text = (f", CPU {cpu:.1f} s = {1000 * cpu / max(r['stored'], 1):.2f} ms/msg"
                if cpu is not None else ", CPU n/a")
    print(f"  {name:22s} {r['stored']}/{r['sent']} stored in {r['elapsed']:.1f} s: "
          f"{rate:.0f} msgs/s{cpu_text}{'' if r['complete'] else ' (INCOMPLETE)'}"
          f"{', ' + str(len(r['errors'])) + ' errors' if r['errors'] else ''}", flush=True)
    if r["errors"]:
        print(f"  first errors: {r['errors'][:3]}")
    return rate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", "--messages", type=int, default=10_000)
    ap.add_argument("-c", "--concurrency", type=int, default=20)
    ap.add_argument("--sizes", default="5,50", help="message sizes in KB, comma separated")
    ap.add_argument("--procs", type=int, default=2, help="our MX processes (SO_REUSEPORT)")
    ap.add_argument("--url", help="database URL for ours (default: SQLite in a temp dir)")
    ap.add_argument("--skip-reference", action="store_true")
    ap.add_argument("--skip-sink", action="store_true")
    args = ap.parse_args()
    sizes = [int(s) * 1024 for s in args.sizes.split(",")]
    knot, templates = asyncio.run(prepare_dns_and_messages(sizes))
    results = []
    try:
        for size, template in templates.items():
            print(f"{size // 1024} KB x {args.messages}, {args.concurrency} connections:",
                  flush=True)
            ours = report(f"ours ({args.procs} procs)", bench_ours(args, knot, template))
            ref = None
            if not args.skip_reference:
                ref = report("postfix+dovecot", bench_reference(args, template))
            if not args.skip_sink:
                sink = bench_sink(args, template)
                if sink is not None:
                    report("smtp-sink (accept only)", sink)
            results.append((size, ours, ref))
    finally:
        knot.stop()
    print()
    for size, ours, ref in results:
        ratio = f"{ours / ref:.2f}x postfix+dovecot" if ref else "no reference"
        print(f"{size // 1024} KB: ours {ours:.0f} msgs/s, {ratio}")


if __name__ == "__main__":
    main()
