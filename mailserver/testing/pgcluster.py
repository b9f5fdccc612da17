"""A throwaway PostgreSQL cluster: ``initdb`` + ``pg_ctl`` as the ``postgres`` user.

Used by the test fixtures and by the benchmarks, so both talk to a real server configured the
same way. initdb refuses to run as root, hence ``runuser -u postgres`` when we are root.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

PG_BIN_DIRS = ("/usr/lib/postgresql/15/bin", "/usr/lib/postgresql/16/bin")


def find_pg_tool(name: str) -> str | None:
    for d in PG_BIN_DIRS:
        candidate = os.path.join(d, name)
        if os.path.exists(candidate):
            return candidate
    return shutil.which(name)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_postgres(args: list[str]) -> list[str]:
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *args]
    return args


@dataclass
class PgCluster:
    host: str
    port: int
    base: Path

    @property
    def datadir(self) -> Path:
        return self.base / "data"

    def url(self, dbname: str) -> str:
        return f"postgresql://postgres@{self.host}:{self.port}/{dbname}"

    def psql(self, sql: str, dbname: str = "postgres") -> str:
        psql = find_pg_tool("psql")
        if psql is None:
            raise FileNotFoundError("psql")
        out = subprocess.run(
            [psql, "-h", self.host, "-p", str(self.port), "-U", "postgres", "-d", dbname,
             "-v", "ON_ERROR_STOP=1", "-Atc", sql],
            check=True, capture_output=True, text=True,
        )
        return out.stdout

    def create_database(self, name: str | None = None) -> str:
        name = name or "t_" + uuid.uuid4().hex[:12]
        self.psql(f"CREATE DATABASE {name}")
        return name

    @classmethod
    def start(cls, *, settings: dict[str, str] | None = None) -> "PgCluster":
        initdb, pg_ctl = find_pg_tool("initdb"), find_pg_tool("pg_ctl")
        if initdb is None or pg_ctl is None:
            raise FileNotFoundError("PostgreSQL server binaries (initdb, pg_ctl) not found")
        base = Path(tempfile.mkdtemp(prefix="mailserver-pg-"))
        os.chmod(base, 0o755)
        if os.geteuid() == 0:
            shutil.chown(base, "postgres", "postgres")
        subprocess.run(
            _as_postgres([initdb, "-D", str(base / "data"), "-U", "postgres", "-A", "trust",
                          "-E", "UTF8", "--locale=C.UTF-8", "--no-sync"]),
            check=True, capture_output=True,
        )
        port = free_port()
        conf = {"listen_addresses": "127.0.0.1", "port": str(port),
                "unix_socket_directories": str(base), "fsync": "on",
                "max_connections": "200", "shared_buffers": "128MB"}
        conf.update(settings or {})
        opts = " ".join(f"-c {k}={v}" for k, v in conf.items())
        subprocess.run(
            _as_postgres([pg_ctl, "-D", str(base / "data"), "-o", opts, "-l",
                          str(base / "log"), "-w", "-t", "60", "start"]),
            check=True, capture_output=True,
        )
        return cls("127.0.0.1", port, base)

    def stop(self) -> None:
        pg_ctl = find_pg_tool("pg_ctl")
        if pg_ctl:
            subprocess.run(_as_postgres([pg_ctl, "-D", str(self.datadir), "-m", "immediate",
                                         "stop"]), capture_output=True)
        shutil.rmtree(self.base, ignore_errors=True)
