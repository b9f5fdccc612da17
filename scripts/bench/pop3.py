"""POP3 sessions/s and CPU: our daemon against Debian's Dovecot, same mail, same run.

    python scripts/bench/pop3.py [-c 20] [-d 30] [--hash cheap|default] [--url URL] [--skip-dovecot]

Each of ``-c`` clients owns one user and loops for ``-d`` seconds: connect, USER/PASS, STAT,
UIDL, RETR of each of the ten 5 KB messages, QUIT (one command at a time, as clients do). The
same ten messages sit in every user's INBOX on both servers.

- **Ours** runs as ``--procs`` processes (default one per core, sharing the port through
  SO_REUSEPORT, each an App + the pop3 daemon), ``[pop3] tls = "none"`` like the reference,
  SQLite in a temp dir unless ``--url``; CPU time comes from ``/proc/<pid>/stat``. Dovecot
  also spreads over every core (a process per connection).
- **Dovecot** is the reference stack of ``/work/shared/reference`` (``setup.sh`` done once as
  root). The script starts it if port 1110 is closed (and stops it again at the end); its CPU
  comes from the cgroup ``cpuacct`` of that stack, exited children included. It takes over
  the Maildirs of ``user81..user100@bench.test`` (``--first-user``), which it rewrites with the
  bench messages.
- **Password hashing**: the reference stores ``{PLAIN}`` passwords, so a login costs Dovecot no
  hashing. ``--hash cheap`` (default) gives our accounts a minimal argon2id (t=1, 8 KiB) so both
  sides pay about the same; ``--hash default`` uses our production argon2id (19 MiB, t=2,
  ~25-40 ms of CPU per check). With the verified-login cache (``mailserver.auth.cache``, 60 s)
  each server process pays it once per user per minute, not per login; run both modes.
- **CPU** is printed per session, split into user and system time (system time is mostly the
  loopback TCP stack and fsyncs). Wall-clock rates on a busy machine mean little; CPU per
  session does. ``POP3_BENCH_CPROFILE=/tmp/prof`` makes each server process write a cProfile
  of its event-loop thread to ``/tmp/prof.<pid>``; ``--py-spy OUT`` samples the first one.

The last lines print sessions/s, CPU per session and the ratio ours / Dovecot.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
REF = Path("/work/shared/reference")
DOVECOT_PORT = 1110
BENCH_DOMAIN = "bench.test"
BENCH_PASS = "benchpass"
MAILROOT = Path("/srv/bench/mail") / BENCH_DOMAIN
CPUACCT = Path("/sys/fs/cgroup/cpuacct/bench_dovecot/cpuacct.usage")
N_MESSAGES = 10


def message(i: int) -> bytes:
    line = b"The quick brown fox jumps over the lazy dog, again and again and again.\r\n"
    body = line * (5000 // len(line))
    return (b"From: Sender <sender@example.org>\r\nTo: user@bench.test\r\n"
            b"Subject: bench message %d\r\nDate: Mon, 23 Nov 2026 10:00:00 +0000\r\n"
            b"Message-ID: <pop3-bench-%d@example.org>\r\n\r\n" % (i, i) + body)


# ------------------------------------------------------------------------------------------------
# The load
# ------------------------------------------------------------------------------------------------

class ProtocolFailure(Exception):
    pass


async def session(host: str, port: int, user: str, password: str) -> int:
    """One POP3 session; returns the octets of message data received."""
    reader, writer = await asyncio.open_connection(host, port)
    got = 0
    try:
        async def line() -> bytes:
            data = await reader.readline()
            if not data.startswith(b"+OK"):
                raise ProtocolFailure(data[:200])
            return data

        async def multi() -> int:
            data = await reader.readuntil(b"\r\n.\r\n")
            if not data.startswith(b"+OK"):
                raise ProtocolFailure(data[:200])
            return len(data)

        async def cmd(text: str) -> bytes:
            writer.write(text.encode() + b"\r\n")
            return await line()

        await line()
        await cmd(f"USER {user}")
        await cmd(f"PASS {password}")
        stat = await cmd("STAT")
        count = int(stat.split()[1])
        if count < N_MESSAGES:
            raise ProtocolFailure(b"maildrop too small: " + stat)
        writer.write(b"UIDL\r\n")
        await multi()
        for i in range(1, N_MESSAGES + 1):
            writer.write(b"RETR %d\r\n" % i)
            got += await multi()
        await cmd("QUIT")
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except OSError:
            pass
    return got


async def load(host: str, port: int, users: list[str], duration: float) -> dict:
    sessions = 0
    octets = 0
    errors: list[str] = []
    deadline = time.monotonic() + duration

    async def client(user: str) -> None:
        nonlocal sessions, octets
        while time.monotonic() < deadline:
            try:
                octets += await session(host, port, user, BENCH_PASS)
                sessions += 1
            except (ProtocolFailure, OSError, asyncio.IncompleteReadError) as e:
                errors.append(repr(e)[:200])
                await asyncio.sleep(0.05)

    start = time.monotonic()
    await asyncio.gather(*(client(u) for u in users))
    elapsed = time.monotonic() - start
    return {"sessions": sessions, "elapsed": elapsed, "octets": octets, "errors": len(errors),
            "first_errors": errors[:3]}


def run_load(host: str, port: int, users: list[str], duration: float) -> dict:
    """The load in its own process, so its CPU is neither server's."""
    code = ("import asyncio, json, sys; sys.path.insert(0, %r); import pop3 as b; "
            "print(json.dumps(asyncio.run(b.load(%r, %d, %r, %f))))"
            % (str(Path(__file__).parent), host, port, users, duration))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=duration + 120)
    return json.loads(out.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------------------
# Ours
# ------------------------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cheap_params():
    from mailserver.auth.passwords import Argon2Params

    return Argon2Params(time_cost=1, memory_cost=8)


async def prepare_ours(cfg_path: Path, users: list[str], hash_mode: str) -> None:
    from mailserver.app import open_app
    from mailserver.config import load_config
    from mailserver.store.migrate import upgrade

    cfg = load_config(str(cfg_path))
    await upgrade(cfg.database.url)
    app = await open_app(cfg)
    try:
        if hash_mode == "cheap":
            app.directory.password_params = cheap_params()
        await app.directory.add_domain(BENCH_DOMAIN)
        for user in users:
            await app.directory.add_account(user, BENCH_PASS)
            for i in range(N_MESSAGES):
                res = await app.deliverer.deliver(message(i), [user])
                assert res.all_delivered
    finally:
        await app.close()


async def serve_ours(cfg_path: str, hash_mode: str) -> None:
    """``--serve``: the server process of the bench."""
    from mailserver.app import configure_logging, open_app
    from mailserver.config import load_config
    from mailserver.servers.pop3 import start

    cfg = load_config(cfg_path)
    configure_logging(cfg.log)
    app = await open_app(cfg)
    if hash_mode == "cheap":
        app.directory.password_params = cheap_params()
    daemon = await start(app, cfg.pop3)
    profile = None
    if os.environ.get("POP3_BENCH_CPROFILE"):  # event-loop thread only; written at the end
        import cProfile

        profile = cProfile.Profile(time.thread_time)  # CPU of this thread, not wall time
        profile.enable()
    print("READY", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    if profile is not None:
        profile.disable()
        profile.dump_stats(f"{os.environ['POP3_BENCH_CPROFILE']}.{os.getpid()}")
    await daemon.stop()
    await app.close()


def proc_cpu(pid: int) -> float:
    return sum(proc_cpu_split(pid))


def proc_cpu_split(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of a process and its reaped children."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
    tck = os.sysconf("SC_CLK_TCK")
    return (utime + cutime) / tck, (stime + cstime) / tck


def bench_ours(args, users: list[str]) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="pop3-bench-"))
    port = free_port()
    url = args.url or f"sqlite:///{tmp}/mail.sqlite3"
    cfg = tmp / "mailserver.toml"
    cfg.write_text(
        f'[server]\ndata_dir = "{tmp}"\nhostname = "bench.local"\n'
        f'[database]\nurl = "{url}"\n'
        '[log]\nlevel = "warning"\nformat = "text"\n'
        f'[pop3]\nlisten = ["127.0.0.1:{port}"]\nlisten_tls = []\ntls = "none"\n'
        '[limits]\nmax_connections_per_ip = 1000\n')
    asyncio.run(prepare_ours(cfg, users, args.hash))
    env = dict(os.environ, PYTHONPATH=str(REPO))
    argv = [sys.executable, __file__, "--serve", str(cfg), "--hash", args.hash]
    # one process per core sharing the port (SO_REUSEPORT), as a production host runs it
    procs = [subprocess.Popen(argv, stdout=subprocess.PIPE, env=env, text=True)
             for _ in range(args.procs)]
    spy = None
    try:
        for proc in procs:
            assert proc.stdout is not None
            if proc.stdout.readline().strip() != "READY":
                raise RuntimeError("our server did not start")
        if args.py_spy:  # sampling the first server during the load (collapsed stacks)
            spy_bin = (shutil.which("py-spy")
                       or shutil.which("py-spy", path=str(Path(sys.executable).parent))
                       or "py-spy")
            spy = subprocess.Popen([spy_bin, "record", "--pid",
                                    str(procs[0].pid), "-d", str(int(args.duration)), "-f",
                                    "raw", "-o", args.py_spy, "--nonblocking"],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        split0 = [proc_cpu_split(p.pid) for p in procs]
        result = run_load("127.0.0.1", port, users, args.duration)
        split1 = [proc_cpu_split(p.pid) for p in procs]
        result["cpu_user"] = sum(b[0] - a[0] for a, b in zip(split0, split1))
        result["cpu_sys"] = sum(b[1] - a[1] for a, b in zip(split0, split1))
        result["cpu"] = result["cpu_user"] + result["cpu_sys"]
    finally:
        if spy is not None:
            spy.wait(60)
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(tmp, ignore_errors=True)
    return result


# ------------------------------------------------------------------------------------------------
# Dovecot
# ------------------------------------------------------------------------------------------------

def port_open(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), 1).close()
        return True
    except OSError:
        return False


def fill_maildirs(users: list[str]) -> None:
    for user in users:
        home = MAILROOT / user.split("@")[0]
        maildir = home / "Maildir"
        if maildir.exists():
            shutil.rmtree(maildir)  # the bench's own users: a clean INBOX with just our mail
        for sub in ("new", "cur", "tmp"):
            (maildir / sub).mkdir(parents=True)
        for i in range(N_MESSAGES):
            (maildir / "cur" / f"{1700000000 + i}.M{i}P1.bench:2,").write_bytes(message(i))
        for root, dirs, files in os.walk(home):
            for name in dirs + files:
                os.chown(os.path.join(root, name), 5000, 5000)
        os.chown(home, 5000, 5000)


def bench_dovecot(args, users: list[str]) -> dict:
    started = False
    if not port_open(DOVECOT_PORT):
        subprocess.run(["sh", str(REF / "start.sh")], check=True, capture_output=True)
        started = True
    try:
        fill_maildirs(users)
        cpu0 = int(CPUACCT.read_text()) if CPUACCT.exists() else None
        result = run_load("127.0.0.1", DOVECOT_PORT, [u.split("@")[0] for u in users],
                          args.duration)
        result["cpu"] = (int(CPUACCT.read_text()) - cpu0) / 1e9 if cpu0 is not None else None
    finally:
        if started:
            subprocess.run(["sh", str(REF / "stop.sh")], capture_output=True)
    return result


# ------------------------------------------------------------------------------------------------

def report(name: str, r: dict) -> float:
    rate = r["sessions"] / r["elapsed"]
    cpu = r.get("cpu")
    cpu_text = (f", CPU {cpu:.1f} s = {cpu / r['elapsed']:.2f} cores, "
                f"{1000 * cpu / max(r['sessions'], 1):.2f} ms/session") if cpu is not None else ""
    if "cpu_user" in r:
        cpu_text += (f" ({1000 * r['cpu_user'] / max(r['sessions'], 1):.2f} user + "
                     f"{1000 * r['cpu_sys'] / max(r['sessions'], 1):.2f} system)")
    print(f"{name:8s} {r['sessions']} sessions in {r['elapsed']:.1f} s: {rate:.1f} sessions/s, "
          f"{rate * N_MESSAGES:.0f} RETR/s, {r['errors']} errors{cpu_text}")
    if r["errors"]:
        print(f"         first errors: {r['first_errors']}")
    return rate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-c", "--clients", type=int, default=20)
    ap.add_argument("-d", "--duration", type=float, default=30.0)
    ap.add_argument("--hash", choices=["cheap", "default"], default="cheap")
    ap.add_argument("--url", help="database URL for ours (default: SQLite in a temp dir)")
    ap.add_argument("--first-user", type=int, default=81)
    ap.add_argument("--procs", type=int, default=os.cpu_count() or 1,
                    help="our server processes sharing the port (default: one per core)")
    ap.add_argument("--skip-dovecot", action="store_true")
    ap.add_argument("--py-spy", metavar="OUT", help="record a py-spy profile of our server")
    ap.add_argument("--serve", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        asyncio.run(serve_ours(args.serve, args.hash))
        return
    users = [f"user{args.first_user + i}@{BENCH_DOMAIN}" for i in range(args.clients)]
    print(f"{args.clients} clients x (login, STAT, UIDL, {N_MESSAGES} x RETR 5 KB, QUIT) for "
          f"{args.duration:.0f} s; ours: {args.procs} process(es), password hash {args.hash}")
    dovecot = None if args.skip_dovecot else bench_dovecot(args, users)
    ours = bench_ours(args, users)
    d_rate = report("dovecot", dovecot) if dovecot else None
    o_rate = report("ours", ours)
    if d_rate:
        print(f"ratio ours/dovecot: {o_rate / d_rate:.2f}x sessions/s")
        if ours.get("cpu") and dovecot and dovecot.get("cpu"):
            per_o = ours["cpu"] / max(ours["sessions"], 1)
            per_d = dovecot["cpu"] / max(dovecot["sessions"], 1)
            print(f"CPU per session ours/dovecot: {per_o / per_d:.2f}x")


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    main()
