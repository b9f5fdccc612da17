"""A throwaway authoritative DNS server on loopback: Debian's ``knotd`` with a temp config dir.

Used by the mail authentication tests (SPF, DKIM, DMARC) and usable by benchmarks: the code
under test talks real DNS over UDP/TCP to 127.0.0.1:<port>, so the whole resolver path is
exercised. Zones are given as zone file text (or lines) per apex and can be replaced while
the server runs (``set_zones`` rewrites the config and runs ``knotc reload``).

A zone given as ``None`` is configured without a zone file: knot then answers SERVFAIL for
every name in it, which is how tests produce a DNS temporary error (RFC 7208 temperror).
A name outside every configured zone gets REFUSED.

DNSSEC (the DANE tests): zones named in ``signed`` are signed by knot itself (automatic
ECDSA P-256 keys, one CSK per zone); ``UnboundServer`` is a validating recursive resolver on
loopback (Debian's ``unbound``) that sends the test zones to knot (stub zones) and trusts the
keys the test gives it (``KnotServer.dnskey``) — so lookups through it carry a real AD bit, and
a zone whose anchor does not match its keys answers SERVFAIL (bogus).
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

__all__ = ["KnotServer", "UnboundServer", "find_knot", "find_unbound", "zone_text"]

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


def _terminate(process: subprocess.Popen[bytes] | None) -> None:
    if process is not None and process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _launch(server, argv: list[str], log_path: Path) -> None:
    """Start ``server.process`` logging to ``log_path``; wait until ready, else stop it."""
    with open(log_path, "wb") as log:
        server.process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    try:
        server._wait_ready()
    except Exception:
        server.stop()
        raise


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
    signed: frozenset[str] = frozenset()  # apexes knot signs (DNSSEC)

    @classmethod
    def start(cls, zones: Mapping[str, ZoneSpec] | None = None, *,
              port: int | None = None, signed: Iterable[str] = ()) -> "KnotServer":
        """Start knotd; ``port`` defaults to a free one (53 is for a private network
        namespace, where a resolver that cannot be told a port, e.g. libc's, can reach it)."""
        tools = find_knot()
        if tools is None:
            raise FileNotFoundError("knotd/knotc not found (Debian package: knot)")
        base = Path(tempfile.mkdtemp(prefix="mailserver-knot-"))
        (base / "zones").mkdir()
        server = cls(base=base, port=port or _free_port(), knotd=tools[0], knotc=tools[1],
                     signed=frozenset(_fqdn(a) for a in signed))
        server._write(dict(zones or {}))
        _launch(server, [server.knotd, "-c", str(base / "knot.conf")], base / "knotd.log")
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
            f'    kasp-db: "{self.base}/keys"',
            "keystore:",
            "  - id: pem",
            "    backend: pem",
            f'    config: "{self.base}/keys/pem"',
            "policy:",
            "  - id: test",
            "    keystore: pem",
            "    algorithm: ecdsap256sha256",
            "    single-type-signing: on",
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
            if apex_fqdn in self.signed:
                lines += ["    dnssec-signing: on", "    dnssec-policy: test"]
        (self.base / "knot.conf").write_text("\n".join(lines) + "\n", encoding="utf-8")

    def dnskey(self, apex: str) -> str:
        """The zone's key-signing DNSKEY as a trust anchor line (``apex. DNSKEY 257 3 13 …``)."""
        import dns.message
        import dns.query
        import dns.rdatatype

        name = _fqdn(apex)
        query = dns.message.make_query(name, dns.rdatatype.DNSKEY, want_dnssec=True)
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline:  # signing runs just after the zone loads
            response = dns.query.tcp(query, self.host, port=self.port, timeout=5.0)
            for rrset in response.answer:
                if rrset.rdtype == dns.rdatatype.DNSKEY:
                    for key in rrset:
                        if key.flags & 1:  # SEP: the key-signing key
                            return f"{name} DNSKEY {key.to_text()}"
            time.sleep(0.05)
        raise TimeoutError(f"knotd published no DNSKEY for {name}: {self.log()}")

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
        _terminate(self.process)
        self.process = None
        shutil.rmtree(self.base, ignore_errors=True)


def find_unbound() -> str | None:
    return shutil.which("unbound") or next(
        (os.path.join(d, "unbound") for d in KNOT_DIRS
         if os.path.exists(os.path.join(d, "unbound"))), None)


@dataclass
class UnboundServer:
    """A running validating ``unbound`` on 127.0.0.1:``port`` (see the module docstring)."""

    base: Path
    port: int
    process: subprocess.Popen[bytes] | None = None
    host: str = "127.0.0.1"

    @classmethod
    def start(cls, upstream: KnotServer, zones: Iterable[str],
              trust_anchors: Iterable[str] = ()) -> "UnboundServer":
        """Resolve ``zones`` (apexes) through ``upstream``; validate below ``trust_anchors``
        (lines ``name. DNSKEY …``). There is no root anchor: everything else is insecure."""
        binary = find_unbound()
        if binary is None:
            raise FileNotFoundError("unbound not found (Debian package: unbound)")
        base = Path(tempfile.mkdtemp(prefix="mailserver-unbound-"))
        server = cls(base=base, port=_free_port())
        lines = [
            "server:",
            f"    interface: {server.host}@{server.port}",
            f"    port: {server.port}",
            "    do-daemonize: no",
            '    chroot: ""',
            '    username: ""',
            f'    directory: "{base}"',
            f'    pidfile: "{base}/unbound.pid"',
            "    use-syslog: no",
            "    verbosity: 1",
            "    do-not-query-localhost: no",  # knot is on loopback
            "    access-control: 127.0.0.0/8 allow",
            '    module-config: "validator iterator"',
            "    qname-minimisation: no",
            "    trust-anchor-signaling: no",
            "    root-key-sentinel: no",
            '    local-zone: "test." nodefault',  # RFC 6761 names are blocked by default
            "    cache-max-ttl: 0",  # tests change zones while it runs
            "    cache-max-negative-ttl: 0",
            *(f'    trust-anchor: "{a}"' for a in trust_anchors),
            "remote-control:",
            "    control-enable: no",
        ]
        for apex in zones:
            lines += ["stub-zone:", f'    name: "{_fqdn(apex)}"',
                      f"    stub-addr: {upstream.host}@{upstream.port}"]
        (base / "unbound.conf").write_text("\n".join(lines) + "\n", encoding="utf-8")
        _launch(server, [binary, "-d", "-c", str(base / "unbound.conf")],
                base / "unbound.log")
        return server

    def _wait_ready(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"unbound exited: {self.log()}")
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                if s.connect_ex((self.host, self.port)) == 0:
                    return
            time.sleep(0.02)
        raise TimeoutError(f"unbound did not start: {self.log()}")

    def log(self) -> str:
        try:
            return (self.base / "unbound.log").read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def stop(self) -> None:
        _terminate(self.process)
        self.process = None
        shutil.rmtree(self.base, ignore_errors=True)
