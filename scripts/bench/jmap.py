"""JMAP daemon benchmark: concurrent clients doing Email/query + Email/get over HTTP and WebSocket.

    .venv/bin/python scripts/bench/jmap.py [--messages 10000] [--clients 20] [--duration 10]
                                           [--database-url URL] [--deliveries-per-second N]

A server process builds a mailbox of ``--messages`` messages (through the Deliverer, the ingest
path) and runs the JMAP daemon; this process runs ``--clients`` concurrent clients, each one
repeating one JMAP request: Email/query (inbox, newest first, 50) + Email/get of those 50 (the
list properties a mail client shows), and every 10th request a Mailbox/changes poll instead.
First over HTTP (one aiohttp session per client), then over WebSocket (one socket per client).
The last lines print requests/s, latency percentiles and the server process's CPU time per
request (all its threads) of each transport; the CPU figure is the one to compare on a busy
machine, where wall-clock figures mean little. ``--deliveries-per-second N`` keeps delivering
new mail meanwhile, so that the answers the daemon remembers per account state go stale.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

PROPS = ["id", "threadId", "mailboxIds", "keywords", "size", "receivedAt", "from", "to",
         "subject", "preview", "hasAttachment"]


async def fill_mailbox(env, messages: int, batch: int = 500) -> None:
    """``messages`` distinct messages into alice's INBOX: blobs put (durable) first, then one
    group-commit transaction per ``batch`` through the store's append (what delivery runs)."""
    from mailserver.message import parse_message
    from mailserver.store import messages as msg
    from mailserver.delivery import pick_mailbox

    account_id = env.account_ids["alice"]
    for start in range(0, messages, batch):
        raws = [(f"From: Sender {i % 97} <s{i % 97}@example.org>\r\n"
                 f"To: alice@example.test\r\nSubject: Message number {i}\r\n"
                 f"Message-ID: <bench{i}@example.org>\r\n"
                 f"Date: Mon, 23 Nov 2026 10:00:00 +0000\r\n\r\n"
                 f"Body of message {i}, with some words to index.\r\n").encode()
                for i in range(start, min(messages, start + batch))]
        blob_ids = await asyncio.gather(*(env.app.blobs.put(r) for r in raws))
        parsed = [parse_message(r) for r in raws]

        async def work(conn, cs, start=start, blob_ids=blob_ids, parsed=parsed):
            inbox = await pick_mailbox(conn, account_id, None)
            for k, (b, p) in enumerate(zip(blob_ids, parsed)):
                await msg.append(conn, cs, inbox, b, p, received_at=1_700_000_000 + start + k)
        await env.app.deliverer.committer.submit(account_id, work)


async def keep_delivering(env, rate: float) -> None:
    """``rate`` new messages a second into alice's INBOX while the clients run: every one
    changes the account's state, so list views cannot be answered from what is known."""
    n = 0
    while True:
        await asyncio.sleep(1 / rate)
        n += 1
        raw = (f"From: Live <live@example.org>\r\nTo: alice@example.test\r\n"
               f"Subject: Live {n}\r\nMessage-ID: <live{n}@example.org>\r\n\r\n"
               f"Arrived while the clients ran.\r\n").encode()
        await env.app.deliverer.deliver(raw, ["alice@example.test"])


def server(messages: int, database_url: str | None, conn, rate: float = 0.0) -> None:
    async def main() -> None:
        from mailserver.testing.daemons import daemon_env

        with tempfile.TemporaryDirectory() as d:
            async with daemon_env(Path(d), database_url, overrides={
                    "log": {"level": "error"}}) as env:
                t0 = time.perf_counter()
                await fill_mailbox(env, messages)
                fill = time.perf_counter() - t0
                daemon = await env.start("jmap")
                # one account shared by every client: lift its concurrency limit (default 8,
                # per account, RFC 8620 maxConcurrentRequests) above the client count
                from dataclasses import replace
                daemon.service.limits = replace(daemon.service.limits,
                                                max_concurrent_requests=1000)
                host, port = env.address("jmap")
                conn.send((host, port, f"a{env.account_ids['alice']}", fill, os.getpid()))
                # "cpu" → this process's CPU seconds so far (every thread: the event loop and
                # the SQLite connection threads); anything else stops the server
                loop = asyncio.get_running_loop()
                writer = asyncio.ensure_future(keep_delivering(env, rate)) if rate else None
                while await loop.run_in_executor(None, conn.recv) == "cpu":
                    conn.send(time.process_time())
                if writer is not None:
                    writer.cancel()

    asyncio.run(main())


async def run_clients(base: str, account: str, clients: int, duration: float,
                      transport: str) -> list[float]:
    import aiohttp

    from mailserver.testing.daemons import PASSWORD

    auth = "Basic " + base64.b64encode(f"alice@example.test:{PASSWORD}".encode()).decode()
    using = ["urn:ietf:params:jmap:core", "urn:ietf:params:jmap:mail"]
    async with aiohttp.ClientSession(headers={"Authorization": auth}) as http:
        async with http.get(base + "/.well-known/jmap") as r:
            session = await r.json()
        inbox_q = {"using": using, "methodCalls": [
            ["Mailbox/query", {"accountId": account, "filter": {"role": "inbox"}}, "0"]]}
        async with http.post(session["apiUrl"], json=inbox_q) as r:
            inbox = (await r.json())["methodResponses"][0][1]["ids"][0]
        state = {"s": "1"}

        def request(n: int) -> dict:
            if n % 10 == 9:
                calls = [["Mailbox/changes", {"accountId": account, "sinceState": state["s"]},
                          "0"]]
            else:
                calls = [
                    ["Email/query", {"accountId": account, "filter": {"inMailbox": inbox},
                                     "sort": [{"property": "receivedAt", "isAscending": False}],
                                     "limit": 50}, "0"],
                    ["Email/get", {"accountId": account, "#ids": {
                        "resultOf": "0", "name": "Email/query", "path": "/ids"},
                        "properties": PROPS}, "1"]]
            return {"using": using, "methodCalls": calls}

        def check(body: dict) -> None:
            rs = body["methodResponses"]
            assert rs[0][0] != "error", rs[0]
            if rs[0][0] == "Email/query":
                assert len(rs[1][1]["list"]) == 50, rs[1]
            else:
                state["s"] = rs[0][1]["newState"]

        latencies: list[float] = []
        deadline = time.perf_counter() + duration

        async def http_client() -> None:
            n = 0
            while time.perf_counter() < deadline:
                t = time.perf_counter()
                async with http.post(session["apiUrl"], json=request(n)) as r:
                    check(await r.json())
                latencies.append(time.perf_counter() - t)
                n += 1

        async def ws_client() -> None:
            url = session["capabilities"]["urn:ietf:params:jmap:websocket"]["url"]
            async with http.ws_connect(url, protocols=("jmap",)) as ws:
                n = 0
                while time.perf_counter() < deadline:
                    t = time.perf_counter()
                    await ws.send_str(json.dumps({"@type": "Request", "id": str(n),
                                                  **request(n)}))
                    check(json.loads(await ws.receive_str()))
                    latencies.append(time.perf_counter() - t)
                    n += 1

        fn = http_client if transport == "http" else ws_client
        await asyncio.gather(*(fn() for _ in range(clients)))
        return latencies


def report(name: str, latencies: list[float], duration: float, cpu: float) -> str:
    lat = sorted(latencies)
    p = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] * 1000  # noqa: E731
    return (f"{name:9s} {len(lat) / duration:8.0f} requests/s   p50 {p(0.5):6.1f} ms   "
            f"p99 {p(0.99):6.1f} ms   mean {statistics.mean(lat) * 1000:6.1f} ms   "
            f"server CPU {cpu * 1000 / max(1, len(lat)):5.2f} ms/request   "
            f"({len(lat)} requests)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--messages", type=int, default=10_000)
    ap.add_argument("--clients", type=int, default=20)
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--database-url", default=None, help="default: SQLite in a temp dir")
    ap.add_argument("--deliveries-per-second", type=float, default=0.0,
                    help="deliver new mail while the clients run (its CPU counts as the "
                         "server's); default 0")
    args = ap.parse_args()
    parent, child = mp.Pipe()
    proc = mp.get_context("spawn").Process(target=server, args=(
        args.messages, args.database_url, child, args.deliveries_per_second), daemon=True)
    proc.start()
    host, port, account, fill, pid = parent.recv()
    print(f"mailbox filled: {args.messages} messages in {fill:.1f} s "
          f"({args.messages / fill:.0f} deliveries/s); server pid {pid}")

    def server_cpu() -> float:
        parent.send("cpu")
        return parent.recv()

    base = f"http://{host}:{port}"
    lines = []
    try:
        for transport in ("http", "websocket"):
            cpu0 = server_cpu()
            lat = asyncio.run(run_clients(base, account, args.clients, args.duration,
                                          transport))
            lines.append(report(transport, lat, args.duration, server_cpu() - cpu0))
    finally:
        parent.send("stop")
        proc.join(30)
    live = (f", {args.deliveries_per_second:g} deliveries/s meanwhile"
            if args.deliveries_per_second else "")
    print(f"JMAP, {args.clients} clients, Email/query + Email/get of 50 "
          f"(every 10th request Mailbox/changes), mailbox of {args.messages}{live}:")
    for line in lines:
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
