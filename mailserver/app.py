"""Building the services of one process from a ``Config``: the composition root.

``App`` holds what every daemon and CLI command shares — the metadata ``Database``, the blob
store, the ``Directory``, the change bus, the ``Deliverer`` (the one ingest path) and the
failed-login throttle (one budget across daemons, processes and nodes). Nothing
else in the code base constructs these from configuration; everything below receives them.

``configure_logging`` sets up the one-line-per-event logs of ``[log]`` (with a ``worker``
field in the worker processes of ``serve``).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from contextlib import asynccontextmanager
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import IO, Any

from mailserver.config import BlobsConfig, Config, LogConfig


class SetupError(Exception):
    """The configuration cannot be turned into working services (a user-fixable problem)."""


@dataclass(slots=True)
class App:
    config: Config
    db: Any  # mailserver.store.engine.Database
    blobs: Any  # mailserver.blobs.base.BlobStore
    directory: Any  # mailserver.store.directory.Directory
    bus: Any  # mailserver.events.ChangeBus
    deliverer: Any  # mailserver.delivery.Deliverer
    # failed-login counts shared by every daemon (mailserver.auth.throttle.StoreLoginThrottle)
    login_throttle: Any = None

    def __post_init__(self) -> None:
        if self.login_throttle is None:
            from mailserver.auth.throttle import StoreLoginThrottle

            self.login_throttle = StoreLoginThrottle(self.db)

    async def close(self) -> None:
        """Stop the ingest path first (it finishes its batch), then the rest."""
        try:
            responder = getattr(self.deliverer, "auto_responder", None)
            if responder is not None:  # pending vacation replies use the deliverer
                await responder.close()
            await self.deliverer.close()
        finally:
            try:
                await self.bus.close()
            finally:
                try:
                    await self.blobs.close()
                finally:
                    await self.db.close()


def make_blob_store(config: BlobsConfig, db: Any = None) -> Any:
    """The configured blob store; with ``db``, wrapped so that messages up to
    ``blobs.inline_max`` live in the database (``mailserver.blobs.inline``)."""
    store = _backend_blob_store(config)
    if db is None or not config.inline_max:
        return store
    from mailserver.blobs.inline import InlineBlobStore

    return InlineBlobStore(db, store, config.inline_max)


def _backend_blob_store(config: BlobsConfig) -> Any:
    if config.backend == "fs":
        from mailserver.blobs.fs import FileBlobStore

        try:
            return FileBlobStore(config.path)
        except OSError as e:
            raise SetupError(f"blobs.path {config.path}: {e.strerror}") from None
    try:
        from mailserver.blobs.s3 import S3BlobStore  # type: ignore[import-not-found]
    except ModuleNotFoundError:
        raise SetupError('blobs.backend = "s3" is not available yet (use "fs")') from None
    s3 = config.s3
    return S3BlobStore(endpoint=s3.endpoint, bucket=s3.bucket, region=s3.region,
                       prefix=s3.prefix, access_key_id=s3.access_key_id,
                       secret_access_key=s3.secret_access_key)


def make_database(config: Config) -> Any:
    from mailserver.store.engine import Database

    url = config.database.url
    if url.startswith("sqlite:"):
        path = url.split(":///", 1)[-1]
        directory = os.path.dirname(path)
        if directory and not os.path.isdir(directory):
            raise SetupError(f"database.url: directory {directory} does not exist "
                             "(run `mailserver init` first)")
    try:
        return Database(url, pool_size=config.database.pool_size)
    except ValueError as e:
        raise SetupError(f"database.url: {e}") from None


async def open_app(config: Config) -> App:
    """Open every service; the caller owns ``App.close()``."""
    from mailserver.delivery import Deliverer
    from mailserver.events import make_change_bus
    from mailserver.store.directory import Directory

    db = make_database(config)
    try:
        blobs = make_blob_store(config.blobs, db)
    except BaseException:
        await db.close()
        raise
    from mailserver.auth.cache import VerifiedLoginCache

    directory = Directory(db, login_cache=VerifiedLoginCache(ttl=config.limits.login_cache_ttl))
    bus = make_change_bus(db)  # LISTEN/NOTIFY on PostgreSQL, a poll on SQLite
    deliverer = Deliverer(db, blobs, directory, bus, max_batch=config.delivery.batch_size)
    from mailserver.autoreply import AutoResponder  # vacation replies after each delivery

    deliverer.auto_responder = AutoResponder(
        db, blobs, directory, deliverer, period=config.jmap.vacation_period,
        hostname=config.server.effective_hostname())
    return App(config, db, blobs, directory, bus, deliverer)


@asynccontextmanager
async def running_app(config: Config) -> AsyncIterator[App]:
    app = await open_app(config)
    try:
        yield app
    finally:
        await app.close()


# --------------------------------------------------------------------------------------------
# Logging
# --------------------------------------------------------------------------------------------

_RESERVED = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, plus the record's ``extra`` fields."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
                  + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _RESERVED and not key.startswith("_"):
                out[key] = value if isinstance(value, (str, int, float, bool, type(None))) \
                    else str(value)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


class _WorkerField(logging.Filter):
    """Stamps every record with the worker index (``serve`` with ``server.processes`` > 1):
    all workers write to the supervisor's stderr, so journald files them under one PID."""

    def __init__(self, worker: int) -> None:
        super().__init__()
        self.worker = worker

    def filter(self, record: logging.LogRecord) -> bool:
        record.worker = self.worker
        return True


def configure_logging(config: LogConfig, stream: IO[str] | None = None, *,
                      worker: int | None = None) -> None:
    """``worker``: the index of this worker process; adds a ``worker`` field to each line."""
    handler = logging.StreamHandler(stream or sys.stderr)
    if config.format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        prefix = "" if worker is None else f"[worker {worker}] "
        handler.setFormatter(logging.Formatter(
            f"%(asctime)s %(levelname)s {prefix}%(name)s: %(message)s", "%Y-%m-%d %H:%M:%S"))
    if worker is not None:
        handler.addFilter(_WorkerField(worker))
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(config.level.upper())
    # library chatter (SQLAlchemy, alembic plugin set-up, …) stays out of operational logs
    for noisy in ("sqlalchemy", "aiosqlite", "asyncio", "alembic"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
