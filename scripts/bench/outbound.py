"""Outbound queue throughput: N queued messages to D remote domains, answered by Postfix's
``smtp-sink`` on loopback; our queue worker against a private Postfix instance relaying the
same messages to the same sink, in the same run.

    python scripts/bench/outbound.py [-n 10000] [--domains 50] [--size 5000] [--workers 20]
                                     [--procs 1] [--url URL] [--no-postfix] [--profile]

Ours: the messages are queued first (blob + queue rows, not timed), then one ``QueueWorker``
(MX routing through a knot server on loopback serving ``*.outbound.bench MX → 127.0.0.1``,
connections to the sink's port) runs until the queue is empty. Timed: that run; CPU: this
process (``getrusage``), i.e. the worker plus the database work it causes (SQLite in-process;
with ``--url`` PostgreSQL's own CPU is not counted). ``--procs N`` (N > 1): N worker processes
share the queue the way ``mailserver serve queue`` on several processes does (claims by
lease); timed from their start (their start-up included) until all have exited with the queue
empty; CPU: theirs (``RUSAGE_CHILDREN``). Each process has ``--workers`` connections.

Postfix: a private instance (own config/queue directory, smtpd on a free loopback port, no
chroot) with ``transport_maps`` sending every domain to ``smtp:[127.0.0.1]:<sink>`` (no DNS).
The messages are injected with ``smtp-source`` while ``defer_transports = smtp`` holds them in
the queue (not timed); then delivery is released (``postqueue -f``) and timed until the queue
directories are empty. CPU: the instance's process tree (``master`` with its reaped children
and the live ones), from /proc. Needs root (Postfix's master) and the postfix package.

Last lines: msgs/s and CPU ms per message for both, and the ratio ours/Postfix.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

SINK = "/usr/sbin/smtp-sink"
SOURCE = "/usr/sbin/smtp-source"
ZONE_APEX = "outbound.bench"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def message(i: int, size: int) -> bytes:
    head = (f"From: Sender <sender@example.test>\r\nTo: rcpt{i}@d{i}.{ZONE_APEX}\r\n"
            f"Subject: outbound benchmark {i}\r\nDate: Mon, 23 Nov 2026 10:00:00 +0000\r\n"
            f"Message-ID: <ob-{i}-{time.time_ns()}@example.test>\r\n"
            "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n")
    line = "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod.\r\n"
    body = line * max(1, (size - len(head)) // len(line))
    return (head + body).encode()


def start_sink(port: int) -> subprocess.Popen:
    args = [SINK]
    if os.geteuid() == 0:
        args += ["-u", "nobody"]
    args += ["-m", "1000", f"127.0.0.1:{port}", "1000"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 1).close()
            return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("smtp-sink did not start")


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


# ---------------------------------------------------------------------------------------------
# Ours
# ---------------------------------------------------------------------------------------------

async def run_ours(args, tmp: Path, sink_port: int) -> tuple[float, float]:
    from mailserver.app import open_app
    from mailserver.config import parse_config
    from mailserver.queue import store
    from mailserver.servers.queue import make_worker
    from mailserver.store.migrate import upgrade
    from mailserver.testing.dnsserver import KnotServer

    dns = KnotServer.start({ZONE_APEX: [f"*.{ZONE_APEX}. MX 10 mx.{ZONE_APEX}.",
                                        f"mx.{ZONE_APEX}. A 127.0.0.1"]})
    try:
        data = tmp / "ours"
        raw_cfg = {
            "server": {"data_dir": str(data), "hostname": "bench.example.test"},
            "log": {"format": "text", "level": "warning"},
            "dns": {"nameservers": [dns.host], "port": dns.port},
            "queue": {"port": sink_port, "workers": args.workers, "batch_size": args.batch},
        }
        if args.url:
            raw_cfg["database"] = {"url": args.url}
        data.mkdir(parents=True)
        cfg = parse_config(raw_cfg)
        await upgrade(cfg.database.url)
        app = await open_app(cfg)
        try:
            now = int(time.time())
            chunk = 500
            for start in range(0, args.n, chunk):
                items = []
                for i in range(start, min(args.n, start + chunk)):
                    raw = message(i, args.size)
                    items.append((await app.blobs.put(raw), len(raw), i))
                async with app.db.write() as conn:
                    for blob_id, size, i in items:
                        await store.enqueue(conn, blob_id=blob_id, size=size,
                                            sender="sender@example.test",
                                            recipients=[f"rcpt{i}@d{i % args.domains}.{ZONE_APEX}"],
                                            now=now)
            if args.procs > 1:
                return await _run_procs(args, raw_cfg, app)
            worker = make_worker(app, cfg.queue)
            prof = None
            if args.profile:
                import cProfile
                prof = cProfile.Profile()
                prof.enable()
            c0, t0 = cpu_seconds(), time.perf_counter()
            handled = await worker.run_until_idle()
            elapsed, cpu = time.perf_counter() - t0, cpu_seconds() - c0
            if prof is not None:
                import pstats
                prof.disable()
                pstats.Stats(prof).sort_stats("tottime").print_stats(40)
            assert handled == args.n, (handled, worker.stats)
            assert worker.stats["delivered"] == args.n, worker.stats
            print(f"ours: {worker.stats} engine={app.db.dialect}", flush=True)
        finally:
            await app.close()
    finally:
        dns.stop()
    return elapsed, cpu


async def _run_procs(args, raw_cfg: dict, app) -> tuple[float, float]:
    import json

    from sqlalchemy import func, select

    from mailserver.store import schema

    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    procs = [await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--child", json.dumps(raw_cfg),
        stdout=asyncio.subprocess.PIPE) for _ in range(args.procs)]
    outs = [await p.communicate() for p in procs]
    elapsed = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    stats = [json.loads(out.decode().strip().splitlines()[-1]) for out, _err in outs]
    assert all(p.returncode == 0 for p in procs), [p.returncode for p in procs]
    async with app.db.read() as conn:
        left = (await conn.execute(select(func.count()).select_from(
            schema.queue_recipients))).scalar_one()
    delivered = sum(st["delivered"] for st in stats)
    assert left == 0 and delivered == args.n, (left, stats)
    print(f"ours: {args.procs} processes {stats} engine={app.db.dialect}", flush=True)
    return elapsed, cpu


async def child(raw: dict) -> None:
    """One worker process of ``--procs``: deliver until nothing is left to claim."""
    import json

    from sqlalchemy import func, select

    from mailserver.app import open_app
    from mailserver.config import parse_config
    from mailserver.servers.queue import make_worker
    from mailserver.store import schema

    cfg = parse_config(raw)
    app = await open_app(cfg)
    try:
        worker = make_worker(app, cfg.queue)
        while True:
            await worker.run_until_idle()
            async with app.db.read() as conn:  # rows the other process holds may come back
                left = (await conn.execute(select(func.count()).select_from(
                    schema.queue_recipients))).scalar_one()
            if left == 0:
                break
            await asyncio.sleep(0.05)
        print(json.dumps(worker.stats), flush=True)
    finally:
        await app.close()


# ---------------------------------------------------------------------------------------------
# Postfix
# ---------------------------------------------------------------------------------------------

def postconf(cfgdir: Path, *settings: str) -> None:
    subprocess.run(["postconf", "-c", str(cfgdir), "-e", *settings], check=True)


def setup_postfix(tmp: Path, smtpd_port: int, sink_port: int, domains: int) -> Path:
    cfgdir = tmp / "postfix-etc"
    qdir = tmp / "postfix-queue"
    ddir = tmp / "postfix-data"
    cfgdir.mkdir()
    ddir.mkdir()
    qdir.mkdir()
    shutil.copy("/etc/postfix/master.cf", cfgdir / "master.cf")
    (cfgdir / "main.cf").write_text("")
    (cfgdir / "transport").write_text("".join(
        f"d{d}.{ZONE_APEX} smtp:[127.0.0.1]:{sink_port}\n" for d in range(domains)))
    subprocess.run(["postmap", f"hash:{cfgdir}/transport"], check=True)
    # only our recipients: a load generator of someone else that races us for the port must
    # not leave mail (or bounces) in this queue
    (cfgdir / "rcpt").write_text(f"/@d[0-9]+\\.{ZONE_APEX.replace('.', '[.]')}$/ OK\n")
    for d in (ddir,):
        shutil.chown(d, "postfix")
    postconf(cfgdir,
             "compatibility_level = 3.6",
             f"queue_directory = {qdir}",
             f"data_directory = {ddir}",
             f"maillog_file_prefixes = {tmp}",
             f"maillog_file = {tmp}/postfix.log",
             "syslog_name = postfix-outbound-bench",
             "myhostname = bench-out.localdomain",
             "mydestination =",
             "inet_interfaces = 127.0.0.1",
             "inet_protocols = ipv4",
             "mynetworks = 127.0.0.0/8",
             "smtpd_relay_restrictions = permit_mynetworks, reject",
             f"smtpd_recipient_restrictions = check_recipient_access regexp:{cfgdir}/rcpt, "
             "reject",
             f"transport_maps = hash:{cfgdir}/transport",
             "defer_transports = smtp",
             "smtp_tls_security_level = none",
             "alias_maps =", "alias_database =",
             "biff = no")
    # no port 25, smtpd on our port, nothing chrooted (the queue dir is private and temporary)
    subprocess.run(["postconf", "-c", str(cfgdir), "-M#", "smtp/inet"], check=False)
    subprocess.run(["postconf", "-c", str(cfgdir), "-M",
                    f"127.0.0.1:{smtpd_port}/inet = 127.0.0.1:{smtpd_port} inet n - n - - smtpd"],
                   check=True)
    subprocess.run(["postconf", "-c", str(cfgdir), "-F", "*/*/chroot = n"], check=True)
    subprocess.run(["postfix", "-c", str(cfgdir), "set-permissions"], check=False,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    subprocess.run(["postfix", "-c", str(cfgdir), "check"], check=True)
    return cfgdir


def queue_files(qdir: Path) -> int:
    n = 0
    for sub in ("maildrop", "incoming", "active", "deferred", "hold"):
        for _root, _dirs, files in os.walk(qdir / sub):
            n += len(files)
    return n


def tree_cpu(master_pid: int) -> float:
    """CPU seconds of ``master`` (with its reaped children) and its live children."""
    tick = os.sysconf("SC_CLK_TCK")

    def stat(pid: int) -> list[str] | None:
        try:
            text = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return None
        return text[text.rindex(")") + 2:].split()

    total = 0
    s = stat(master_pid)
    if s:
        total += sum(int(x) for x in s[11:15])  # utime stime cutime cstime
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != master_pid:
            s = stat(int(entry))
            if s and int(s[1]) == master_pid:
                total += sum(int(x) for x in s[11:15])
    return total / tick


def run_postfix(args, tmp: Path, sink_port: int) -> tuple[float, float]:
    smtpd_port = free_port()
    cfgdir = setup_postfix(tmp, smtpd_port, sink_port, args.domains)
    qdir = tmp / "postfix-queue"
    subprocess.run(["postfix", "-c", str(cfgdir), "start"], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", smtpd_port), 1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("postfix smtpd did not start")
                time.sleep(0.1)
        # inject: one smtp-source per domain (messages i ≡ d mod domains), 10 at a time
        per = [len(range(d, args.n, args.domains)) for d in range(args.domains)]
        procs: list[subprocess.Popen] = []
        for d in range(args.domains):
            if per[d] == 0:
                continue
            procs.append(subprocess.Popen(
                [SOURCE, "-s", "5", "-l", str(args.size), "-m", str(per[d]),
                 "-f", "sender@example.test", "-t", f"rcpt@d{d}.{ZONE_APEX}",
                 f"127.0.0.1:{smtpd_port}"], stdout=subprocess.DEVNULL))
            if len(procs) >= 10:
                procs.pop(0).wait()
        for p in procs:
            p.wait()
        deadline = time.monotonic() + 300
        while True:  # everything received and parked as deferred
            deferred = sum(len(f) for _r, _d, f in os.walk(qdir / "deferred"))
            if deferred >= args.n and queue_files(qdir) == deferred:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"postfix holds {deferred} of {args.n} messages")
            time.sleep(0.2)
        master_pid = int((qdir / "pid" / "master.pid").read_text().split()[0])
        postconf(cfgdir, "defer_transports =")
        subprocess.run(["postfix", "-c", str(cfgdir), "reload"], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1.0)
        c0, t0 = tree_cpu(master_pid), time.perf_counter()
        subprocess.run(["postqueue", "-c", str(cfgdir), "-f"], check=True)
        while queue_files(qdir):
            time.sleep(0.05)
            if time.perf_counter() - t0 > 900:
                raise RuntimeError("postfix did not empty its queue")
        elapsed, cpu = time.perf_counter() - t0, tree_cpu(master_pid) - c0
        log = (tmp / "postfix.log").read_text(errors="replace")
        sent = sum(1 for line in log.splitlines()
                   if "status=sent" in line and ZONE_APEX in line)
        print(f"postfix: status=sent lines={sent}", flush=True)
        assert sent >= args.n, "postfix did not deliver everything (see its log)"
    finally:
        subprocess.run(["postfix", "-c", str(cfgdir), "stop"], check=False,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return elapsed, cpu


def main() -> None:
    import signal

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # run the clean-ups (postfix stop)
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        import json

        asyncio.run(child(json.loads(sys.argv[2])))
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", type=int, default=10000, help="messages (one recipient each)")
    ap.add_argument("--domains", type=int, default=50)
    ap.add_argument("--size", type=int, default=5000, help="message size in bytes")
    ap.add_argument("--workers", type=int, default=20, help="our concurrent connections")
    ap.add_argument("--batch", type=int, default=500, help="our claim batch size")
    ap.add_argument("--procs", type=int, default=1, help="our worker processes")
    ap.add_argument("--url", help="database URL (default: SQLite in a temp dir)")
    ap.add_argument("--no-postfix", action="store_true")
    ap.add_argument("--no-ours", action="store_true", help="only the Postfix side")
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()
    for tool in (SINK, SOURCE):
        if not os.path.exists(tool):
            sys.exit(f"{tool} missing (Debian package postfix)")
    tmp = Path(tempfile.mkdtemp(prefix="bench-outbound-"))
    os.chmod(tmp, 0o755)
    sink_port = free_port()
    sink = start_sink(sink_port)
    try:
        ours_t, ours_cpu = (1.0, 0.0) if args.no_ours else asyncio.run(run_ours(args, tmp,
                                                                                  sink_port))
        pf = None if args.no_postfix else run_postfix(args, tmp, sink_port)
    finally:
        sink.terminate()
        sink.wait()
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"messages={args.n} domains={args.domains} size={args.size} "
          f"workers={args.workers} procs={args.procs}")
    if not args.no_ours:
        print(f"ours:    {args.n / ours_t:8.0f} msgs/s  {1000 * ours_cpu / args.n:6.2f} ms CPU/msg "
              f"({ours_t:.2f} s)")
    if pf is not None:
        pf_t, pf_cpu = pf
        print(f"postfix: {args.n / pf_t:8.0f} msgs/s  {1000 * pf_cpu / args.n:6.2f} ms CPU/msg "
              f"({pf_t:.2f} s)")
        if not args.no_ours:
            print(f"ratio ours/postfix: {pf_t / ours_t:.2f}x throughput, "
                  f"{(pf_cpu / ours_cpu) if ours_cpu else 0:.2f}x CPU efficiency")


if __name__ == "__main__":
    main()
