"""Configuration: one TOML file, typed sections with defaults, validated before anything starts.

Every key has a default (``conf/mailserver.toml`` documents each one), so an empty file is a
valid configuration. Loading is strict: an unknown key, a wrong type or a bad value is a
``ConfigError`` whose message names the file, the line and the dotted key path, e.g.
``/etc/mailserver/mailserver.toml:12: imap.listen[0]: bad listen address 'x'``.

Sizes accept an integer number of bytes or a string with a binary unit ("50M", "2G", "512K").
Durations accept a number of seconds or a string with a unit ("500ms", "30s", "5m", "1h", "5d").
Every string value may contain ``{data_dir}``, replaced by ``server.data_dir``; a relative
``data_dir`` is taken relative to the directory of the config file.
"""

from __future__ import annotations

import difflib
import os
import re
import socket
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields, is_dataclass, replace
from typing import Annotated, Any, Literal, get_args, get_origin, get_type_hints

DEFAULT_CONFIG_PATH = "/etc/mailserver/mailserver.toml"
CONFIG_ENV = "MAILSERVER_CONFIG"
DEFAULT_DATA_DIR = "/var/lib/mailserver"

MiB = 1024 * 1024

# Unit markers for Annotated field types.
SIZE = "size"
DURATION = "duration"
PROCESSES = "processes"
Size = Annotated[int, SIZE]
Duration = Annotated[float, DURATION]
Processes = Annotated[int, PROCESSES]  # an integer >= 1 or "auto" (resolved when loading)


class ConfigError(Exception):
    """A configuration problem, located as precisely as we can: file, line, key path."""

    def __init__(self, message: str, *, path: str | None = None, key: str | None = None,
                 line: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.path = path
        self.key = key
        self.line = line

    def __str__(self) -> str:
        where = ""
        if self.path:
            where = f"{self.path}:{self.line}: " if self.line else f"{self.path}: "
        key = f"{self.key}: " if self.key else ""
        return f"{where}{key}{self.message}"


# --------------------------------------------------------------------------------------------
# Value checks (attached to fields through metadata={"check": …}); return an error or None
# --------------------------------------------------------------------------------------------

def _positive(value: float) -> str | None:
    return None if value > 0 else "must be greater than 0"


def _non_negative(value: float) -> str | None:
    return None if value >= 0 else "must not be negative"


def _port(value: int) -> str | None:
    return None if 1 <= value <= 65535 else "must be a port number (1-65535)"


def _not_empty(value: str) -> str | None:
    return None if value.strip() else "must not be empty"


def _database_url(value: str) -> str | None:
    scheme = value.split(":", 1)[0].split("+", 1)[0].lower()
    if scheme in ("sqlite", "postgresql", "postgres") and ":" in value:
        return None
    return f"unsupported database URL {value!r} (expected sqlite:///path or postgresql://…)"


_HOSTPORT = re.compile(r"^(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[^\s:\[\]]*)):(?P<port>\d{1,5})$")


@dataclass(frozen=True, slots=True)
class ListenAddress:
    """A parsed listen address: TCP (host None = every address) or a unix socket path."""

    host: str | None = None
    port: int | None = None
    unix_path: str | None = None

    def __str__(self) -> str:
        if self.unix_path is not None:
            return f"unix:{self.unix_path}"
        host = "*" if self.host is None else (f"[{self.host}]" if ":" in self.host else self.host)
        return f"{host}:{self.port}"


def parse_listen(value: str) -> ListenAddress:
    """``host:port``, ``[v6]:port``, ``*:port`` (every address) or ``unix:/path``."""
    if value.startswith("unix:"):
        path = value[5:]
        if not path.startswith("/"):
            raise ValueError(f"bad listen address {value!r}: unix socket path must be absolute")
        return ListenAddress(unix_path=path)
    m = _HOSTPORT.match(value)
    if not m:
        raise ValueError(f"bad listen address {value!r} (expected host:port, [v6]:port, "
                         "*:port or unix:/path)")
    port = int(m["port"])
    if not 0 <= port <= 65535:  # 0: any free port (what tests use)
        raise ValueError(f"bad listen address {value!r}: port out of range")
    host = m["v6"] if m["v6"] is not None else m["host"]
    return ListenAddress(host=None if host in ("", "*") else host, port=port)


def _listen_list(values: tuple[str, ...]) -> str | None:
    for v in values:
        try:
            parse_listen(v)
        except ValueError as e:
            return str(e)
    return None


def _check(fn: Callable[[Any], str | None]) -> dict[str, Any]:
    return {"check": fn}


# --------------------------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------------------------

TlsMode = Literal["none", "starttls", "required"]


@dataclass(frozen=True, slots=True)
class ServerConfig:
    hostname: str = ""  # "" = the machine's fully qualified name (socket.getfqdn())
    data_dir: str = field(default=DEFAULT_DATA_DIR, metadata=_check(_not_empty))
    # worker processes of `mailserver serve` (mailserver.supervisor); "auto" = one per CPU
    processes: Processes = 1

    def effective_hostname(self) -> str:
        return self.hostname or socket.getfqdn()


@dataclass(frozen=True, slots=True)
class DatabaseConfig:
    url: str = field(default="sqlite:///{data_dir}/mailserver.sqlite3",
                     metadata=_check(_database_url))
    pool_size: int = field(default=10, metadata=_check(_positive))


@dataclass(frozen=True, slots=True)
class S3Config:
    endpoint: str = ""
    bucket: str = ""
    region: str = ""
    prefix: str = ""
    access_key_id: str = ""
    secret_access_key: str = ""


@dataclass(frozen=True, slots=True)
class BlobsConfig:
    backend: Literal["fs", "s3"] = "fs"
    path: str = field(default="{data_dir}/blobs", metadata=_check(_not_empty))
    # messages up to this size are stored in the database (mailserver.blobs.inline); 0 = none
    inline_max: Size = field(default=64 * 1024, metadata=_check(_non_negative))
    s3: S3Config = field(default_factory=S3Config)


@dataclass(frozen=True, slots=True)
class LogConfig:
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["json", "text"] = "json"


@dataclass(frozen=True, slots=True)
class TlsConfig:
    cert: str = "{data_dir}/tls/cert.pem"
    key: str = "{data_dir}/tls/key.pem"
    min_version: Literal["TLSv1.2", "TLSv1.3"] = "TLSv1.2"


@dataclass(frozen=True, slots=True)
class LimitsConfig:
    max_message_size: Size = field(default=50 * MiB, metadata=_check(_positive))
    max_recipients: int = field(default=100, metadata=_check(_positive))
    max_line_length: Size = field(default=64 * 1024, metadata=_check(_positive))
    max_connections: int = field(default=1000, metadata=_check(_positive))
    max_connections_per_ip: int = field(default=20, metadata=_check(_positive))
    max_auth_failures: int = field(default=5, metadata=_check(_positive))
    # a password that verified this recently (against the same stored hash) is not hashed
    # again (mailserver.auth.cache); 0 turns the cache off
    login_cache_ttl: Duration = field(default=60.0, metadata=_check(_non_negative))
    max_errors: int = field(default=10, metadata=_check(_positive))
    idle_timeout: Duration = field(default=1800.0, metadata=_check(_positive))
    command_timeout: Duration = field(default=300.0, metadata=_check(_positive))


@dataclass(frozen=True, slots=True)
class DeliveryConfig:
    batch_size: int = field(default=64, metadata=_check(_positive))
    max_delay: Duration = field(default=0.005, metadata=_check(_non_negative))


@dataclass(frozen=True, slots=True)
class DnsConfig:
    nameservers: tuple[str, ...] = ()
    port: int = field(default=53, metadata=_check(_port))
    timeout: Duration = field(default=5.0, metadata=_check(_positive))


@dataclass(frozen=True, slots=True)
class MxConfig:
    enabled: bool = True
    listen: tuple[str, ...] = field(default=("*:25",), metadata=_check(_listen_list))
    tls: TlsMode = "starttls"
    proxy_protocol: bool = False
    max_messages_per_ip: int = field(default=600, metadata=_check(_non_negative))
    dmarc_reject: Literal["reject", "quarantine", "none"] = "reject"
    dmarc_quarantine: Literal["quarantine", "reject", "none"] = "quarantine"
    trusted_arc_sealers: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class SubmissionConfig:
    enabled: bool = True
    listen: tuple[str, ...] = field(default=("*:587",), metadata=_check(_listen_list))
    listen_tls: tuple[str, ...] = field(default=("*:465",), metadata=_check(_listen_list))
    tls: TlsMode = "required"
    proxy_protocol: bool = False


@dataclass(frozen=True, slots=True)
class SmtpConfig:
    mx: MxConfig = field(default_factory=MxConfig)
    submission: SubmissionConfig = field(default_factory=SubmissionConfig)


@dataclass(frozen=True, slots=True)
class LmtpConfig:
    enabled: bool = True
    listen: tuple[str, ...] = field(default=("unix:{data_dir}/lmtp.sock",),
                                    metadata=_check(_listen_list))
    proxy_protocol: bool = False


@dataclass(frozen=True, slots=True)
class ImapConfig:
    enabled: bool = True
    listen: tuple[str, ...] = field(default=("*:143",), metadata=_check(_listen_list))
    listen_tls: tuple[str, ...] = field(default=("*:993",), metadata=_check(_listen_list))
    tls: TlsMode = "required"
    proxy_protocol: bool = False


@dataclass(frozen=True, slots=True)
class Pop3Config:
    enabled: bool = True
    listen: tuple[str, ...] = field(default=("*:110",), metadata=_check(_listen_list))
    listen_tls: tuple[str, ...] = field(default=("*:995",), metadata=_check(_listen_list))
    tls: TlsMode = "required"
    proxy_protocol: bool = False


@dataclass(frozen=True, slots=True)
class JmapConfig:
    enabled: bool = True
    listen: tuple[str, ...] = field(default=("*:8080",), metadata=_check(_listen_list))
    listen_tls: tuple[str, ...] = field(default=(), metadata=_check(_listen_list))
    base_url: str = ""  # "" = http(s)://<hostname>:<port> of the first listener
    proxy_protocol: bool = False
    # RFC 5230 §4.2 / RFC 3834: at most one vacation auto-reply per sender in this period
    vacation_period: Duration = field(default=7 * 86400.0, metadata=_check(_positive))


@dataclass(frozen=True, slots=True)
class QueueConfig:
    enabled: bool = True
    workers: int = field(default=4, metadata=_check(_positive))
    retry_schedule: tuple[Duration, ...] = (60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0,
                                            14400.0)
    max_age: Duration = field(default=5 * 86400.0, metadata=_check(_positive))
    delay_dsn_after: Duration = field(default=4 * 3600.0, metadata=_check(_non_negative))
    connect_timeout: Duration = field(default=30.0, metadata=_check(_positive))
    command_timeout: Duration = field(default=300.0, metadata=_check(_positive))
    helo_name: str = ""  # "" = server.hostname
    port: int = field(default=25, metadata=_check(_port))
    batch_size: int = field(default=200, metadata=_check(_positive))
    lease_time: Duration = field(default=900.0, metadata=_check(_positive))
    poll_interval: Duration = field(default=1.0, metadata=_check(_positive))
    relay_host: str = ""  # "" = MX routing; "host" or "host:port" = smarthost
    relay_username: str = ""
    relay_password: str = ""
    mta_sts: bool = True
    dane: bool = True


@dataclass(frozen=True, slots=True)
class MaintenanceConfig:
    enabled: bool = True
    blob_sweep_interval: Duration = field(default=3600.0, metadata=_check(_positive))
    blob_sweep_grace: Duration = field(default=86400.0, metadata=_check(_non_negative))
    orphan_sweep_interval: Duration = field(default=86400.0, metadata=_check(_positive))


@dataclass(frozen=True, slots=True)
class Config:
    server: ServerConfig = field(default_factory=ServerConfig)
    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    blobs: BlobsConfig = field(default_factory=BlobsConfig)
    log: LogConfig = field(default_factory=LogConfig)
    tls: TlsConfig = field(default_factory=TlsConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    delivery: DeliveryConfig = field(default_factory=DeliveryConfig)
    dns: DnsConfig = field(default_factory=DnsConfig)
    smtp: SmtpConfig = field(default_factory=SmtpConfig)
    lmtp: LmtpConfig = field(default_factory=LmtpConfig)
    imap: ImapConfig = field(default_factory=ImapConfig)
    pop3: Pop3Config = field(default_factory=Pop3Config)
    jmap: JmapConfig = field(default_factory=JmapConfig)
    queue: QueueConfig = field(default_factory=QueueConfig)
    maintenance: MaintenanceConfig = field(default_factory=MaintenanceConfig)

    def daemon_section(self, name: str) -> Any:
        """The config section of a daemon by its ``serve`` name (mx, submission, imap, …)."""
        return {
            "mx": self.smtp.mx, "submission": self.smtp.submission, "lmtp": self.lmtp,
            "imap": self.imap, "pop3": self.pop3, "jmap": self.jmap, "queue": self.queue,
            "maintenance": self.maintenance,
        }[name]


# --------------------------------------------------------------------------------------------
# Units
# --------------------------------------------------------------------------------------------

_SIZE_UNITS = {"": 1, "k": 1024, "m": MiB, "g": 1024 * MiB, "t": 1024 * 1024 * MiB}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*$", re.IGNORECASE)
_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$", re.IGNORECASE)


def parse_size(value: str | int) -> int:
    """Bytes from an int or "50M" / "2G" / "512K" / "1.5GiB" (binary units)."""
    if isinstance(value, bool):
        raise ValueError("expected a size")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("size must not be negative")
        return value
    m = _SIZE_RE.match(value)
    if not m:
        raise ValueError(f"bad size {value!r} (expected e.g. 500K, 50M, 2G)")
    return int(float(m[1]) * _SIZE_UNITS[m[2].lower()])


def parse_duration(value: str | int | float) -> float:
    """Seconds from a number or "500ms" / "30s" / "5m" / "1h" / "5d" / "1w"."""
    if isinstance(value, bool):
        raise ValueError("expected a duration")
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError("duration must not be negative")
        return float(value)
    m = _DURATION_RE.match(value)
    if not m:
        raise ValueError(f"bad duration {value!r} (expected e.g. 30s, 5m, 1h, 5d)")
    return float(m[1]) * _DURATION_UNITS[(m[2] or "s").lower()]


def parse_processes(value: str | int) -> int:
    """Worker processes from an integer >= 1 or "auto": one per CPU this process may use
    (``os.sched_getaffinity``, so ``CPUAffinity=`` and cpusets count; else ``os.cpu_count``)."""
    if value == "auto":
        try:
            return max(1, len(os.sched_getaffinity(0)))
        except (AttributeError, OSError):
            return os.cpu_count() or 1
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f'expected an integer >= 1 or "auto", got {value!r}')
    if value < 1:
        raise ValueError('must be at least 1 (or "auto")')
    return value


def format_size(n: int) -> str:
    for unit, mult in (("T", 1024 ** 4), ("G", 1024 ** 3), ("M", MiB), ("K", 1024)):
        if n >= mult and n % mult == 0:
            return f"{n // mult}{unit}"
    return str(n)


# --------------------------------------------------------------------------------------------
# Locating keys in the TOML text (tomllib gives no positions)
# --------------------------------------------------------------------------------------------

_BARE_OR_QUOTED = r'(?:[A-Za-z0-9_-]+|"(?:[^"\\]|\\.)*"|\'[^\']*\')'
_DOTTED = rf"{_BARE_OR_QUOTED}(?:\s*\.\s*{_BARE_OR_QUOTED})*"
_HEADER_RE = re.compile(rf"^\[\[?\s*({_DOTTED})\s*\]\]?\s*(?:#.*)?$")
_KEYVAL_RE = re.compile(rf"^({_DOTTED})\s*=(.*)$")
_KEY_PART_RE = re.compile(_BARE_OR_QUOTED)


def _split_key(dotted: str) -> tuple[str, ...]:
    parts = []
    for m in _KEY_PART_RE.finditer(dotted):
        part = m.group(0)
        if part[0] == '"':
            part = part[1:-1].encode().decode("unicode_escape")
        elif part[0] == "'":
            part = part[1:-1]
        parts.append(part)
    return tuple(parts)


def find_key_line(text: str, keypath: Sequence[str]) -> int | None:
    """Best-effort 1-based line of ``keypath`` in TOML ``text``.

    Tracks ``[table]`` headers and ``a.b = …`` dotted keys; skips multi-line strings. When the
    key itself is not written (a value inside an inline table or an array of tables), returns
    the line of the nearest enclosing key or table that is.
    """
    want = tuple(keypath)
    table: tuple[str, ...] = ()
    fallback: tuple[int, int] | None = None  # (depth matched, line)
    in_multiline: str | None = None
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if in_multiline is not None:
            if in_multiline in line:
                in_multiline = None
            continue
        if not line or line.startswith("#"):
            continue
        m = _HEADER_RE.match(line)
        if m:
            table = _split_key(m.group(1))
            if table == want:
                return lineno
            if want[: len(table)] == table and (fallback is None or len(table) > fallback[0]):
                fallback = (len(table), lineno)
            continue
        m = _KEYVAL_RE.match(line)
        if not m:
            continue
        full = table + _split_key(m.group(1))
        if full == want:
            return lineno
        if want[: len(full)] == full and (fallback is None or len(full) > fallback[0]):
            fallback = (len(full), lineno)
        value = m.group(2)
        for quote in ('"""', "'''"):
            if value.count(quote) % 2 == 1:
                in_multiline = quote
                break
    return fallback[1] if fallback else None


# --------------------------------------------------------------------------------------------
# Building the dataclasses from parsed TOML
# --------------------------------------------------------------------------------------------

def _toml_type(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return f"a {type(value).__name__}"


class _Loader:
    def __init__(self, text: str, path: str | None) -> None:
        self.text = text
        self.path = path

    def error(self, keypath: Sequence[str | int], message: str) -> ConfigError:
        names = [k for k in keypath if isinstance(k, str)]
        key = ""
        for k in keypath:
            key += f"[{k}]" if isinstance(k, int) else (f".{k}" if key else k)
        line = find_key_line(self.text, names) if self.text else None
        return ConfigError(message, path=self.path, key=key or None, line=line)

    def build(self, cls: type, data: Any, keypath: tuple[str | int, ...]) -> Any:
        if not isinstance(data, dict):
            raise self.error(keypath, f"expected a table, got {_toml_type(data)}")
        hints = get_type_hints(cls, include_extras=True)
        known = [f.name for f in fields(cls)]
        for key in data:
            if key not in known:
                close = difflib.get_close_matches(key, known, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                what = "table" if isinstance(data[key], dict) else "key"
                section = ".".join(str(k) for k in keypath) or "top level"
                raise self.error(keypath + (key,), f"unknown {what} in {section}{hint}")
        kwargs = {}
        for f in fields(cls):
            if f.name not in data:
                continue
            kp = keypath + (f.name,)
            kwargs[f.name] = self.convert(hints[f.name], data[f.name], kp)
        return cls(**kwargs)

    def check(self, obj: Any, keypath: tuple[str | int, ...]) -> None:
        """Run the value checks of every field (after ``{data_dir}`` substitution)."""
        for f in fields(obj):
            value = getattr(obj, f.name)
            if is_dataclass(value):
                self.check(value, keypath + (f.name,))
                continue
            check = f.metadata.get("check")
            if check is not None:
                problem = check(value)
                if problem:
                    raise self.error(keypath + (f.name,), problem)

    def convert(self, tp: Any, value: Any, kp: tuple[str | int, ...]) -> Any:
        origin = get_origin(tp)
        if origin is Annotated:
            base, *extra = get_args(tp)
            try:
                if SIZE in extra:
                    return parse_size(value)
                if DURATION in extra:
                    return parse_duration(value)
                if PROCESSES in extra:
                    return parse_processes(value)
            except (ValueError, TypeError) as e:
                raise self.error(kp, str(e)) from None
            return self.convert(base, value, kp)
        if is_dataclass(tp):
            return self.build(tp, value, kp)
        if origin is Literal:
            choices = get_args(tp)
            if not isinstance(value, str):
                raise self.error(kp, f"expected a string, got {_toml_type(value)}")
            if value not in choices:
                options = ", ".join(repr(c) for c in choices)
                raise self.error(kp, f"bad value {value!r} (expected one of {options})")
            return value
        if origin is tuple:
            if not isinstance(value, list):
                raise self.error(kp, f"expected an array, got {_toml_type(value)}")
            item_tp = get_args(tp)[0]
            return tuple(self.convert(item_tp, v, kp + (i,)) for i, v in enumerate(value))
        if tp is bool:
            if not isinstance(value, bool):
                raise self.error(kp, f"expected a boolean, got {_toml_type(value)}")
            return value
        if tp is int:
            if isinstance(value, bool) or not isinstance(value, int):
                raise self.error(kp, f"expected an integer, got {_toml_type(value)}")
            return value
        if tp is float:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise self.error(kp, f"expected a number, got {_toml_type(value)}")
            return float(value)
        if tp is str:
            if not isinstance(value, str):
                raise self.error(kp, f"expected a string, got {_toml_type(value)}")
            return value
        raise TypeError(f"unsupported config type {tp!r}")  # a bug in this module


def _substitute(obj: Any, data_dir: str) -> Any:
    """Replace ``{data_dir}`` in every string value of a config dataclass tree."""
    changes = {}
    for f in fields(obj):
        value = getattr(obj, f.name)
        if is_dataclass(value):
            new = _substitute(value, data_dir)
        elif isinstance(value, str):
            new = value.replace("{data_dir}", data_dir)
        elif isinstance(value, tuple) and all(isinstance(v, str) for v in value):
            new = tuple(v.replace("{data_dir}", data_dir) for v in value)
        else:
            continue
        if new != value:
            changes[f.name] = new
    return replace(obj, **changes) if changes else obj


def parse_config(data: Mapping[str, Any], *, text: str = "", path: str | None = None) -> Config:
    """A validated ``Config`` from parsed TOML ``data`` (``text`` locates errors)."""
    loader = _Loader(text, path)
    cfg: Config = loader.build(Config, dict(data), ())
    data_dir = os.path.expanduser(cfg.server.data_dir)
    if not os.path.isabs(data_dir):
        base = os.path.dirname(os.path.abspath(path)) if path else os.getcwd()
        data_dir = os.path.normpath(os.path.join(base, data_dir))
    cfg = replace(cfg, server=replace(cfg.server, data_dir=data_dir))
    cfg = _substitute(cfg, data_dir)
    loader.check(cfg, ())
    if cfg.blobs.backend == "s3" and not cfg.blobs.s3.bucket:
        raise loader.error(("blobs", "backend"), 'backend "s3" needs blobs.s3.bucket')
    return cfg


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read and validate the config file at ``path``; raises ``ConfigError``."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise ConfigError("config file not found", path=path) from None
    except OSError as e:
        raise ConfigError(f"cannot read config file: {e.strerror}", path=path) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise ConfigError("not valid UTF-8", path=path, line=line) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        msg = str(e)
        m = re.search(r"\s*\(at line (\d+), column \d+\)$", msg)
        line = int(m.group(1)) if m else None
        if m:
            msg = msg[: m.start()]
        raise ConfigError(f"TOML syntax error: {msg}", path=path, line=line) from None
    return parse_config(data, text=text, path=path)


def config_path(option: str | None, environ: Mapping[str, str] | None = None) -> str:
    """The config file to use: the ``-c`` option, else $MAILSERVER_CONFIG, else the default."""
    env = os.environ if environ is None else environ
    if option:
        return option
    if env.get(CONFIG_ENV):
        return env[CONFIG_ENV]
    return DEFAULT_CONFIG_PATH


def iter_fields(cls: type = Config, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every leaf key path of the config schema (tests check each is documented)."""
    out: list[tuple[str, ...]] = []
    hints = get_type_hints(cls, include_extras=True)
    for f in fields(cls):
        tp = hints[f.name]
        if is_dataclass(tp):
            out.extend(iter_fields(tp, prefix + (f.name,)))
        else:
            out.append(prefix + (f.name,))
    return out


# --------------------------------------------------------------------------------------------
# Writing small config files (``mailserver init``) without a TOML writer dependency
# --------------------------------------------------------------------------------------------

def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        out = ['"']
        for ch in value:
            if ch in '"\\':
                out.append("\\" + ch)
            elif ch == "\n":
                out.append("\\n")
            elif ch == "\t":
                out.append("\\t")
            elif ord(ch) < 0x20 or ord(ch) == 0x7F:
                out.append(f"\\u{ord(ch):04x}")
            else:
                out.append(ch)
        out.append('"')
        return "".join(out)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def render_toml(tables: Mapping[str, Mapping[str, Any]], header: str = "") -> str:
    """TOML text for ``{"server": {"hostname": …}, "smtp.mx": {…}}`` (flat tables only)."""
    lines = [f"# {h}" if h else "#" for h in header.splitlines()] if header else []
    for table, values in tables.items():
        if lines:
            lines.append("")
        lines.append(f"[{table}]")
        for key, value in values.items():
            lines.append(f"{key} = {toml_value(value)}")
    return "\n".join(lines) + "\n"
