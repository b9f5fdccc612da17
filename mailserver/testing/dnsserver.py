"""A throwaway authoritative DNS server on loopback: Debian's ``knotd`` with a temp config dir.

Used by the mail authentication tests (SPF, DKIM, DMARC) and usable by benchmarks: the code
under test talks real DNS over UDP/TCP to 127.0.0.1:<port>, so the whole resolver path is
exercised. Zones are given as zone file text (or lines) per apex and can be replaced while
the server runs (``set_zones`` rewrites the config and runs ``knotc reload``).

A zone given as ``None`` is configured without a zone file: knot then answers SERVFAIL for
every name in it, which is how tests produce a DNS temporary error (RFC 7208 temperror).
A name outside every configured zone gets REFUSED.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["KnotServer", "find_knot", "zone_text"]

KNOT_DIRS = ("/usr/sbin", "/usr/local/sbin")

ZoneSpec = str | Iterable[str] | None  # zone file text, lines, or None for a broken zone


def find_knot() -> tuple[str, str] | None:
    """Paths of ``knotd`` and ``knotc``, or None when knot is not installed."""
    found = []
    for tool in ("knotd", "knotc"):
        path = shutil.which(tool) or next(
            (os.path.join(d, tool) for d in KNOT_DIRS if os.path.exists(os.path.join(d, tool))), None)
        if path is None:
            return None
        found.append(path)
    return found[0], found[1]


def _free_port() -> int:
    # knot listens on UDP and TCP: take a port free for both
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
            t.bind(("127.0.0.1", 0))
            port = t.getsockname()[1]
            try:
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                    u.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise OSError("no free loopback port for UDP and TCP")


def _fqdn(apex: str) -> str:
    return apex.rstrip(".").lower() + "." if apex.rstrip(".") else "."


def zone_text(apex: str, records: ZoneSpec, *, ttl: int = 300) -> str:
    """A complete zone file: our SOA and NS at the apex, then the given records.

    ``records`` are zone file lines; relative names are relative to the apex ($ORIGIN).
    """
    origin = apex.rstrip(".") + "."
    if origin == "..":
        origin = "."
    body = records if isinstance(records, str) else "\n".join(records or ())
    return (
        f"$ORIGIN {origin}\n$TTL {ttl}\n"
        f"@ IN SOA ns.test. hostmaster.test. 1 3600 600 86400 60\n"
        f"@ IN NS ns.test.\n"
        f"{body}\n"
    )


@dataclass
class KnotServer:
    """A running ``knotd``; ``port`` answers on 127.0.0.1 (UDP and TCP)."""

    base: Path
    port: int
    knotd: str
    knotc: str
    process: subprocess.Popen[bytes] | None = None
    zones: dict[str, ZoneSpec] = field(default_factory=dict)
    host: str = "127.0.0.1"

    @classmethod
    def start(cls, zones: Mapping[str, ZoneSpec] | None = None, *,
              port: int | None = None) -> "KnotServer":
        """Start knotd; ``port`` defaults to a free one (53 is for a private network
        namespace, where a resolver that cannot be told a port, e.g. libc's, can reach it)."""
        tools = find_knot()
        if tools is None:
            raise FileNotFoundError("knotd/knotc not found (Debian package: knot)")
        base = Path(tempfile.mkdtemp(prefix="mailserver-knot-"))
        (base / "zones").mkdir()
        server = cls(base=base, port=port or _free_port(), knotd=tools[0], knotc=tools[1])
        server._write(dict(zones or {}))
        log = open(base / "knotd.log", "wb")
        server.process = subprocess.Popen([server.knotd, "-c", str(base / "knot.conf")],
                                          stdout=log, stderr=subprocess.STDOUT)
        log.close()
        try:
            server._wait_ready()
        except Exception:
            server.stop()
            raise
        return server

    # -- zones ------------------------------------------------------------------------------

    def set_zones(self, zones: Mapping[str, ZoneSpec]) -> None:
        """Replace the whole set of zones and reload."""
        self._write(dict(zones))
        self._reload()

    def add_zones(self, zones: Mapping[str, ZoneSpec]) -> None:
        """Add or replace some zones, keep the others, and reload."""
        merged = dict(self.zones)
        merged.update(zones)
        self.set_zones(merged)

    def _zone_file(self, apex: str) -> Path:
        name = apex.rstrip(".").lower() or "root"
        return self.base / "zones" / f"{name}.zone"

    def _write(self, zones: dict[str, ZoneSpec]) -> None:
        for old in (self.base / "zones").iterdir():
            old.unlink()
        self.zones = zones
        lines = [
            "server:",
            f'    rundir: "{self.base}"',
            f"    listen: {self.host}@{self.port}",
            "log:",
            "  - target: stderr",
            "    any: warning",
            "database:",
            f'    storage: "{self.base}/db"',
            "control:",
            f'    listen: "{self.base}/knot.sock"',
            "template:",
            "  - id: default",
            f'    storage: "{self.base}/zones"',
            "    zonefile-sync: -1",
            "    zonefile-load: whole",
            "    journal-content: none",
            "    semantic-checks: off",
            "zone:",
        ]
        for apex, records in zones.items():
            apex_fqdn = _fqdn(apex)
            path = self._zone_file(apex)
            if records is not None:
                text = records if isinstance(records, str) and "IN SOA" in records \
                    else zone_text(apex_fqdn, records)
                path.write_text(text, encoding="utf-8")
            lines += [f'  - domain: "{apex_fqdn}"', f'    file: "{path}"']
        (self.base / "knot.conf").write_text("\n".join(lines) + "\n", encoding="utf-8")

    # -- process ----------------------------------------------------------------------------

    def _knotc(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run([self.knotc, "-s", str(self.base / "knot.sock"), "-t", "10", *args],
                              capture_output=True, text=True, check=check)

    def _wait_ready(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"knotd exited: {self.log()}")
            if (self.base / "knot.sock").exists() and \
                    self._knotc("status", check=False).returncode == 0:
                self._wait_zones_loaded(deadline)
                return
            time.sleep(0.02)
        raise TimeoutError(f"knotd did not start: {self.log()}")

    def _wait_zones_loaded(self, deadline: float, log_from: int = 0) -> None:
        # zone loading is asynchronous after start/reload: wait until each zone with a file
        # reports a serial (the broken ones never will); a zone file knot rejects is an error
        pending = [_fqdn(a) for a, r in self.zones.items() if r is not None]
        while pending and time.monotonic() < deadline:
            out = self._knotc("zone-status", check=False).stdout
            loaded = set()
            for line in out.splitlines():
                # "[example.com.] role: master | serial: 1 | ..."
                m = re.match(r"\[(.*?)\] .*serial: (\d+)", line)
                if m:
                    loaded.add(m.group(1).lower())
            pending = [a for a in pending if a not in loaded]
            if pending:
                failed = [a for a in pending if f"[{a}] zone event 'load' failed" in
                          self.log(log_from)]
                if failed:
                    raise ValueError(f"knotd rejected zones {failed}: {self.log(log_from)}")
                time.sleep(0.005)
        if pending:
            raise TimeoutError(f"knotd did not load zones {pending}: {self.log()}")

    def _reload(self) -> None:
        log_from = self._log_size()
        result = self._knotc("reload", check=False)
        if result.returncode != 0:
            raise RuntimeError(f"knotc reload failed: {result.stdout}{result.stderr}{self.log()}")
        self._wait_zones_loaded(time.monotonic() + 10.0, log_from)

    def _log_size(self) -> int:
        try:
            return (self.base / "knotd.log").stat().st_size
        except OSError:
            return 0

    def log(self, start: int = 0) -> str:
        """knotd's log (from byte ``start``), for error messages."""
        try:
            with open(self.base / "knotd.log", "rb") as f:
                f.seek(start)
                return f.read().decode(errors="replace")[-4000:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
        shutil.rmtree(self.base, ignore_errors=True)
