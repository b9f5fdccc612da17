"""Throughput of the DATA and BDAT readers: a 10 MB message fed in 64 KB reads.

Run: .venv/bin/python scripts/bench/smtp_protocol_data.py
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from protocols.smtp import NEED_DATA, Command, MessageComplete, ServerConfig, ServerConnection

SIZE = 10 * 1024 * 1024
CHUNK = 64 * 1024


def body(size: int, dots: bool) -> bytes:
    # 76-column base64-ish lines, CRLF endings; with ``dots`` every 50th is dot-stuffed.
    line = os.urandom(57).hex()[:76].encode()
    lines = [line] * (size // 78)
    if dots:
        for i in range(0, len(lines), 50):
            lines[i] = b".." + line[2:]
    return b"\r\n".join(lines) + b"\r\n"


def session(conn: ServerConnection, setup: bytes) -> None:
    conn.greet()
    conn.receive_data(setup)
    while (ev := conn.next_event()) is not NEED_DATA:
        if isinstance(ev, Command):
            conn.accept()


def run_data(payload: bytes) -> float:
    conn = ServerConnection(ServerConfig(hostname="mx.test"))
    session(conn, b"EHLO c\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<d@e.f>\r\nDATA\r\n")
    wire = payload + b".\r\n"
    reads = [wire[i : i + CHUNK] for i in range(0, len(wire), CHUNK)]
    t0 = time.perf_counter()
    for read in reads:
        conn.receive_data(read)
        ev = conn.next_event()
    t = time.perf_counter() - t0
    assert isinstance(ev, MessageComplete) and len(ev.data) <= len(payload)
    return t


def run_bdat(payload: bytes) -> float:
    conn = ServerConnection(ServerConfig(hostname="mx.test"))
    session(conn, b"EHLO c\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<d@e.f>\r\n")
    wire = b"BDAT %d LAST\r\n" % len(payload) + payload
    reads = [wire[i : i + CHUNK] for i in range(0, len(wire), CHUNK)]
    t0 = time.perf_counter()
    for read in reads:
        conn.receive_data(read)
        ev = conn.next_event()
    t = time.perf_counter() - t0
    assert isinstance(ev, MessageComplete) and len(ev.data) == len(payload)
    return t


if __name__ == "__main__":
    plain, dotted = body(SIZE, dots=False), body(SIZE, dots=True)
    mb = len(plain) / 1e6
    for name, t in (
        ("DATA, no stuffed dots    ", min(run_data(plain) for _ in range(5))),
        ("DATA, 2% lines dot-stuffed", min(run_data(dotted) for _ in range(5))),
        ("BDAT                     ", min(run_bdat(plain) for _ in range(5))),
    ):
        print(f"{name} {mb:.1f} MB in 64 KB reads: {t * 1000:.1f} ms ({mb / t:.0f} MB/s)")
