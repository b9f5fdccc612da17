"""IMAP load benchmark: our daemon against Debian's Dovecot, same users, same mail, same run.

    .venv/bin/python scripts/bench/imap.py [--sessions 10] [--seconds 15] [--messages 50]
                                           [--users 10] [--idle 1000] [--only ours|dovecot]

Each server gets ``--users`` accounts with ``--messages`` realistic messages (about 5 KB,
threads of replies, varied senders) in INBOX, put there over IMAP APPEND. Then
``--sessions`` concurrent clients loop for ``--seconds``: LOGIN, SELECT, FETCH 1:* (FLAGS),
FETCH of 10 ENVELOPEs, FETCH of one BODY[], STORE, SEARCH, APPEND, UID EXPUNGE of what they
appended, LOGOUT (``--keep-sessions``: one LOGIN per client, then the rest in a loop). Dovecot's
bench users have {PLAIN} passwords; ours argon2id at the production cost, which the
directory's verified-login cache skips for a repeated login (``--hash-cost low``: a cheap
argon2id, to take the hash out of LOGIN altogether). Printed per server: operations/s per
command kind and p99 latency, total commands/s, server CPU per command (``--cpu-loops N``: then
N rounds with one client, and the server CPU of each command kind; Dovecot's in clock ticks
of its short-lived processes, so coarse); then ``--idle`` sessions are opened (LOGIN, SELECT, IDLE)
and the memory per idle connection is measured (ours: RSS of the one daemon process;
Dovecot: PSS of all its processes — it runs one process per connection). The last lines are
the ratios against the targets of issue 6 (≥ 0.5× Dovecot's operations/s, ≤ 0.1× its memory
per idle connection).

Our daemon runs in a child process (``--serve``) on SQLite in a temporary directory so its CPU
and memory can be read from /proc. ``--procs N`` (N > 1): the ``--serve`` child only sets up the
data dir and writes a config for it; our daemon is then ``mailserver serve imap`` with
``server.processes = N`` (a supervisor and N workers sharing the port), started by the bench,
ready when its READY=1 arrives on a NOTIFY_SOCKET of ours; CPU and memory (PSS) are summed over
the supervisor and its workers, as for Dovecot's process family. Dovecot is the reference stack of ``/work/shared/reference``
(IMAP on 127.0.0.1:1143, users userN@bench.test / benchpass); it is set up and started when
nothing listens there.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = Path(os.environ.get("BENCH_REFERENCE", "/work/shared/reference"))
LITERAL_END = re.compile(rb"\{(\d+)\+?\}\r\n$")


# ---- the server side: our daemon in a child process ---------------------------------------

OVERRIDES = {"imap": {"tls": "none"}, "log": {"level": "error"},
             "limits": {"max_connections": 20000, "max_connections_per_ip": 20000}}


async def serve(data_dir: str, users: int, hash_cost: str = "default", procs: int = 1) -> None:
    sys.path.insert(0, str(ROOT))
    from mailserver.testing.daemons import daemon_env

    names = tuple(f"user{i}" for i in range(1, users + 1))
    async with daemon_env(Path(data_dir), None, overrides=OVERRIDES, users=names) as env:
        if hash_cost == "low":  # see --hash-cost
            from mailserver.auth.passwords import Argon2Params
            from mailserver.testing.daemons import PASSWORD

            env.app.directory.password_params = Argon2Params(time_cost=1, memory_cost=64)
            for name in names:
                await env.app.directory.set_password(env.login(name), PASSWORD)
        if procs > 1:  # set up only: main() runs `mailserver serve imap` on this config
            print(f"CONFIG {write_config(env, procs)}", flush=True)
            return
        await env.start("imap")
        host, port = env.address("imap")
        print(f"READY {host} {port}", flush=True)
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(15, stop.set)
        profile = None
        if os.environ.get("BENCH_PROFILE"):  # cProfile of the event loop thread
            import cProfile

            profile = cProfile.Profile()
            if os.environ.get("BENCH_PROFILE_ON_USR1"):  # from SIGUSR1 on
                asyncio.get_running_loop().add_signal_handler(10, profile.enable)
            else:
                profile.enable()
        await stop.wait()
        if profile is not None:
            profile.disable()
            profile.dump_stats(os.environ["BENCH_PROFILE"])


def write_config(env, procs: int) -> str:
    """A config file for the data dir ``env`` set up: IMAP on a fixed free port, N workers."""
    from mailserver.config import render_toml
    from mailserver.testing.daemons import HOSTNAME

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    tables = {"server": {"data_dir": str(env.data_dir), "hostname": HOSTNAME,
                         "processes": procs},
              "log": {"format": "text", **OVERRIDES["log"]},
              "limits": OVERRIDES["limits"],
              "imap": {"listen": [f"127.0.0.1:{port}"], "listen_tls": [], "tls": "none"}}
    path = env.data_dir / "bench.toml"
    path.write_text(render_toml(tables))
    return str(path)


def start_supervisor(config: str, env: dict) -> tuple[subprocess.Popen, str, int]:
    """``mailserver serve imap`` on ``config``; returns once it said READY=1 (all workers)."""
    from mailserver.config import load_config

    notify_path = os.path.join(os.path.dirname(config), "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(notify_path)
    sock.settimeout(120)
    proc = subprocess.Popen([sys.executable, "-m", "mailserver", "-c", config, "serve", "imap"],
                            env={**env, "NOTIFY_SOCKET": notify_path}, cwd=ROOT)
    try:
        while not sock.recv(4096).startswith(b"READY=1"):
            pass
    except socket.timeout:
        proc.kill()
        raise SystemExit("our daemon did not start")
    finally:
        sock.close()
    host, port = load_config(config).imap.listen[0].rsplit(":", 1)
    return proc, host, int(port)


# ---- a minimal client ----------------------------------------------------------------------

class Client:
    def __init__(self, reader, writer) -> None:
        self.reader, self.writer, self.n = reader, writer, 0

    @classmethod
    async def open(cls, host: str, port: int) -> "Client":
        reader, writer = await asyncio.open_connection(host, port, limit=1 << 24)
        c = cls(reader, writer)
        await c.line()
        return c

    async def line(self) -> bytes:
        out = b""
        while True:
            line = await self.reader.readline()
            if not line:
                raise ConnectionError("closed")
            out += line
            m = LITERAL_END.search(line)
            if not m:
                return out
            out += await self.reader.readexactly(int(m.group(1)))

    async def cmd(self, text: bytes) -> list[bytes]:
        self.n += 1
        tag = b"b%d" % self.n
        self.writer.write(tag + b" " + text + b"\r\n")
        lines = []
        while True:
            r = await self.line()
            lines.append(r)
            if r.startswith(tag + b" "):
                if not r.startswith(tag + b" OK"):
                    raise RuntimeError(f"{text[:60]!r}: {r!r}")
                return lines

    async def append(self, mailbox: bytes, raw: bytes) -> list[bytes]:
        return await self.cmd(b"APPEND %s {%d+}\r\n%s" % (mailbox, len(raw), raw))

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except Exception:
            pass


WORDS = ("meeting report budget invoice travel release patch review lunch quarterly roadmap "
         "design draft contract offer update schedule feedback").split()


def make_message(rng: random.Random, n: int, to: str) -> bytes:
    topic = rng.randint(0, 9)
    subject = f"{'Re: ' if n % 3 else ''}topic {topic} {rng.choice(WORDS)}"
    body_lines = [" ".join(rng.choice(WORDS) for _ in range(12)) for _ in range(70)]
    return (f"From: Sender {n % 17} <sender{n % 17}@example.org>\r\nTo: <{to}>\r\n"
            f"Subject: {subject}\r\nDate: Mon, 23 Nov 2026 10:{n % 60:02d}:00 +0000\r\n"
            f"Message-ID: <m{n}.{topic}@example.org>\r\n"
            + (f"In-Reply-To: <m{n - 1}.{topic}@example.org>\r\n" if n % 3 else "")
            + "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
            + "\r\n".join(body_lines) + "\r\n").encode()


async def populate(host, port, logins, password, messages: int) -> None:
    rng = random.Random(7)
    for login in logins:
        c = await Client.open(host, port)
        await c.cmd(b'LOGIN "%s" "%s"' % (login.encode(), password.encode()))
        lines = await c.cmd(b"SELECT INBOX")
        exists = next(int(r.split()[1]) for r in lines if r.endswith(b"EXISTS\r\n"))
        if exists:
            await c.cmd(b"STORE 1:* +FLAGS.SILENT (\\Deleted)")
            await c.cmd(b"EXPUNGE")
        for n in range(messages):
            await c.append(b"INBOX", make_message(rng, n, login))
        await c.cmd(b"LOGOUT")
        await c.close()


async def session_loop(host, port, login, password, stop_at, lat, rng,
                       keep_session: bool = False, cpu=None) -> None:
    """``cpu``: (function giving the server's CPU seconds, dict kind → list) to charge each
    command's server CPU to its kind — only meaningful with one client at a time."""
    def timed(kind):
        class _T:
            def __enter__(self):
                self.t = time.perf_counter()
                if cpu is not None:
                    self.c = cpu[0]()

            def __exit__(self, *a):
                lat[kind].append(time.perf_counter() - self.t)
                if cpu is not None:
                    cpu[1][kind].append(cpu[0]() - self.c)
        return _T()

    c = None
    first = True
    while first or time.monotonic() < stop_at:  # at least one round
        first = False
        if c is None:
            c = await Client.open(host, port)
            with timed("LOGIN"):
                await c.cmd(b'LOGIN "%s" "%s"' % (login.encode(), password.encode()))
        with timed("SELECT"):
            lines = await c.cmd(b"SELECT INBOX")
        exists = next(int(r.split()[1]) for r in lines if r.endswith(b"EXISTS\r\n"))
        with timed("FETCH flags"):
            await c.cmd(b"FETCH 1:* (UID FLAGS)")
        k = rng.randint(1, max(1, exists - 10))
        with timed("FETCH envelopes"):
            await c.cmd(b"FETCH %d:%d (UID ENVELOPE RFC822.SIZE)" % (k, k + 9))
        with timed("FETCH body"):
            await c.cmd(b"FETCH %d BODY.PEEK[]" % rng.randint(1, exists))
        with timed("STORE"):
            await c.cmd(b"STORE %d %sFLAGS (\\Seen)" % (rng.randint(1, exists),
                                                       rng.choice([b"+", b"-"])))
        with timed("SEARCH"):
            await c.cmd(b"UID SEARCH UNSEEN SUBJECT \"topic %d\"" % rng.randint(0, 9))
        with timed("APPEND"):
            lines = await c.append(b"INBOX", make_message(rng, rng.randint(0, 10**6), login))
        m = re.search(rb"APPENDUID \d+ (\d+)", lines[-1])
        with timed("EXPUNGE"):
            if m:
                await c.cmd(b"UID STORE %s +FLAGS.SILENT (\\Deleted)" % m.group(1))
                await c.cmd(b"UID EXPUNGE %s" % m.group(1))
        if not keep_session or time.monotonic() >= stop_at:
            with timed("LOGOUT"):
                await c.cmd(b"LOGOUT")
            await c.close()
            c = None


# ---- measuring -----------------------------------------------------------------------------

def _cpu_ticks(pid: int, children: bool = False) -> int:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])
    if children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks


def _cpu_ns(pid: int) -> int:
    """On-CPU nanoseconds of every thread of ``pid`` (schedstat: finer than clock ticks)."""
    total = 0
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:  # gone (Dovecot's per-connection processes come and go)
        return 0
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        except OSError:
            pass
    return total


def _kids(pid: int) -> list[int]:
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        out.append(int(d))
            except OSError:
                pass
    return out


def _mem_kb(pid: int, key: str) -> int:
    path = f"/proc/{pid}/smaps_rollup" if key == "Pss:" else f"/proc/{pid}/status"
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(key):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class Target:
    """``family``: CPU and memory (PSS) summed over ``pid`` and its children — Dovecot's
    short-lived processes (``short_lived``: then CPU in clock ticks, with reaped children), or
    our supervisor and its workers."""

    def __init__(self, name, host, port, logins, password, pid, family: bool,
                 short_lived: bool = False) -> None:
        self.name, self.host, self.port = name, host, port
        self.logins, self.password, self.pid, self.family = logins, password, pid, family
        self.short_lived = short_lived

    def pids(self) -> list[int]:
        return [self.pid, *_kids(self.pid)] if self.family else [self.pid]

    def cpu_seconds(self) -> float:
        ticks = _cpu_ticks(self.pid, children=self.family)
        if self.family:
            for p in _kids(self.pid):
                try:
                    ticks += _cpu_ticks(p)
                except OSError:
                    pass
        return ticks / os.sysconf("SC_CLK_TCK")

    def cpu_precise(self) -> float:
        """CPU seconds from per-thread schedstat (ns resolution); for a process family
        (Dovecot) the clock-tick count with reaped children, as its processes are short-lived
        (coarse per command, but unbiased over many)."""
        if self.short_lived:
            return self.cpu_seconds()
        return sum(_cpu_ns(p) for p in self.pids()) / 1e9

    def memory_kb(self) -> int:
        key = "Pss:" if self.family else "VmRSS:"
        return sum(_mem_kb(p, key) for p in self.pids())


async def load(target: Target, sessions: int, seconds: float, keep: bool = False) -> dict:
    lat: dict[str, list[float]] = defaultdict(list)
    rng = random.Random(11)
    cpu0, t0 = target.cpu_seconds(), time.monotonic()
    stop_at = t0 + seconds
    await asyncio.gather(*(session_loop(target.host, target.port,
                                        target.logins[i % len(target.logins)],
                                        target.password, stop_at, lat,
                                        random.Random(rng.random()), keep)
                           for i in range(sessions)))
    elapsed = time.monotonic() - t0
    cpu = target.cpu_seconds() - cpu0
    return {"elapsed": elapsed, "cpu": cpu, "lat": lat}


async def cpu_per_kind(target: Target, loops: int) -> None:
    """One client at a time: the server CPU each command kind costs (ms per command)."""
    lat: dict[str, list[float]] = defaultdict(list)
    cpu: dict[str, list[float]] = defaultdict(list)
    rng = random.Random(5)
    for i in range(loops):
        await session_loop(target.host, target.port, target.logins[i % len(target.logins)],
                           target.password, time.monotonic() + 1e-9, lat, rng,
                           cpu=(target.cpu_precise, cpu))
    total = sum(sum(v) for v in cpu.values())
    n = sum(len(v) for v in cpu.values())
    print(f"\n== {target.name}: server CPU per command, one client, {loops} loops: "
          f"{1000 * total / max(n, 1):.2f} ms/op on average")
    for kind in sorted(cpu):
        xs = cpu[kind]
        print(f"   {kind:16s} {1000 * sum(xs) / len(xs):8.2f} ms CPU/op")


async def idle_memory(target: Target, count: int) -> float:
    before = target.memory_kb()
    clients = []
    for start in range(0, count, 50):
        batch = []
        for i in range(start, min(count, start + 50)):
            batch.append(_idle_client(target, target.logins[i % len(target.logins)]))
        clients.extend(await asyncio.gather(*batch))
    await asyncio.sleep(2)
    after = target.memory_kb()
    for c in clients:
        c.writer.write(b"DONE\r\n")
        await c.close()
    return (after - before) / count


async def _idle_client(target: Target, login: str) -> Client:
    c = await Client.open(target.host, target.port)
    await c.cmd(b'LOGIN "%s" "%s"' % (login.encode(), target.password.encode()))
    await c.cmd(b"SELECT INBOX")
    c.writer.write(b"i IDLE\r\n")
    await c.line()
    return c


def report(name: str, r: dict) -> float:
    total = sum(len(v) for v in r["lat"].values())
    print(f"\n== {name}: {total} operations in {r['elapsed']:.1f} s = "
          f"{total / r['elapsed']:.0f} ops/s, server CPU {r['cpu']:.1f} s "
          f"({1000 * r['cpu'] / max(total, 1):.2f} ms/op)")
    for kind in sorted(r["lat"]):
        xs = sorted(r["lat"][kind])
        p99 = xs[min(len(xs) - 1, int(len(xs) * 0.99))]
        print(f"   {kind:16s} {len(xs) / r['elapsed']:8.1f} ops/s   p99 {1000 * p99:7.1f} ms")
    return total / r["elapsed"]


def dovecot_target(users: int) -> Target:
    try:
        socket.create_connection(("127.0.0.1", 1143), 2).close()
    except OSError:
        subprocess.run(["sh", str(REFERENCE / "setup.sh")], check=True)
        subprocess.run(["sh", str(REFERENCE / "start.sh")], check=True)
    pid = int(subprocess.run(["pgrep", "-o", "-f", "dovecot -c /etc/dovecot/bench.conf"],
                             capture_output=True, text=True, check=True).stdout.split()[0])
    logins = [f"user{i}@bench.test" for i in range(1, users + 1)]
    return Target("dovecot", "127.0.0.1", 1143, logins, "benchpass", pid, True, True)


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sessions", type=int, default=10)
    ap.add_argument("--seconds", type=float, default=15)
    ap.add_argument("--messages", type=int, default=50)
    ap.add_argument("--users", type=int, default=10)
    ap.add_argument("--idle", type=int, default=1000)
    ap.add_argument("--only", choices=["ours", "dovecot"])
    ap.add_argument("--keep-sessions", action="store_true",
                    help="log in once per client and loop the other commands (leaves out "
                         "LOGIN/LOGOUT, whose cost is the password hash)")
    ap.add_argument("--cpu-loops", type=int, default=0,
                    help="then run this many loops with one client and print the server CPU "
                         "per command kind")
    ap.add_argument("--hash-cost", choices=["low", "default"], default="default",
                    help="argon2id cost of our bench users' passwords: 'default' is what "
                         "production uses (~40 ms per check, which the directory's verified-"
                         "login cache skips for a repeated login); 'low' (1 pass, 64 KiB: "
                         "~0.1 ms per check) to take the hash out of LOGIN altogether")
    ap.add_argument("--procs", type=int, default=1,
                    help="run our daemon as this many worker processes (server.processes)")
    ap.add_argument("--serve", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        await serve(args.serve, args.users, args.hash_cost, args.procs)
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 4 * args.idle + 256)), hard))

    results = {}
    tmp = tempfile.mkdtemp(prefix="imap-bench-")
    proc = None
    try:
        targets = []
        if args.only != "dovecot":
            # glibc raises its mmap threshold after the first argon2 hash (19 MiB) is freed,
            # after which every later hash buffer stays in the heap: a fixed threshold keeps
            # them mmapped and returned (set the same in the service environment)
            env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": os.environ.get(
                "MALLOC_MMAP_THRESHOLD_", "1048576")}
            proc = subprocess.Popen([sys.executable, __file__, "--serve", tmp,
                                     "--users", str(args.users), "--hash-cost", args.hash_cost,
                                     "--procs", str(args.procs)],
                                    stdout=subprocess.PIPE, text=True, env=env)
            line = proc.stdout.readline().split()
            if args.procs > 1:
                assert line and line[0] == "CONFIG", "setting up our daemon failed"
                proc.wait(60)
                proc, host, port = start_supervisor(line[1], env)
            else:
                assert line and line[0] == "READY", "our daemon did not start"
                host, port = line[1], int(line[2])
            logins = [f"user{i}@example.test" for i in range(1, args.users + 1)]
            from mailserver.testing.daemons import PASSWORD
            name = "ours" if args.procs == 1 else f"ours ({args.procs} processes)"
            targets.append(Target(name, host, port, logins, PASSWORD, proc.pid,
                                  args.procs > 1))
        if args.only != "ours":
            targets.append(dovecot_target(args.users))
        for t in targets:
            await populate(t.host, t.port, t.logins, t.password, args.messages)
            r = await load(t, args.sessions, args.seconds, args.keep_sessions)
            ops = report(t.name, r)
            if args.cpu_loops:
                await cpu_per_kind(t, args.cpu_loops)
            mem = await idle_memory(t, args.idle) if args.idle else float("nan")
            print(f"   memory per idle connection ({args.idle} in IDLE): {mem:.1f} KiB")
            n_ops = max(1, sum(len(v) for v in r["lat"].values()))
            results["ours" if t.name.startswith("ours") else t.name] = (ops, mem, r["cpu"] / n_ops)
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(60)
        shutil.rmtree(tmp, ignore_errors=True)
    if "ours" in results and "dovecot" in results:
        (o_ops, o_mem, o_cpu), (d_ops, d_mem, d_cpu) = results["ours"], results["dovecot"]
        print(f"\nops/s: ours {o_ops:.0f} / dovecot {d_ops:.0f} = {o_ops / d_ops:.2f}x "
              f"(target >= 0.5x)")
        # (Dovecot's bench users have {PLAIN} passwords; ours argon2id, see --hash-cost)
        print(f"CPU per op: ours {1000 * o_cpu:.2f} ms / dovecot {1000 * d_cpu:.2f} ms")
        print(f"memory per idle connection: ours {o_mem:.1f} KiB / dovecot {d_mem:.1f} KiB = "
              f"{o_mem / d_mem:.2f}x (target <= 0.1x)")


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    asyncio.run(main())
