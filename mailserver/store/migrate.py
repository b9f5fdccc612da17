"""Schema migrations (Alembic), driven from code: no alembic.ini is needed at runtime.

``await upgrade(url)`` brings a database to the newest revision (creating everything on an
empty one), ``await current(url)`` returns its revision (None when unversioned) and
``await is_up_to_date(url)`` tells whether it is at head. The Alembic environment lives in
``mailserver/store/migrations`` (``env.py``, ``versions/``). Revisions run on a connection of
our own async engine through ``run_sync``, inside one transaction (PostgreSQL DDL is
transactional; SQLite's mostly is).
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from mailserver.store.engine import Database

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


def alembic_config(url: str | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url is not None:
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


async def _run_command(url: str, fn, revision: str) -> None:
    """Run the alembic command ``fn(cfg, revision)`` on our own async engine's connection."""
    db = Database(url)
    cfg = alembic_config(db.url)

    def run(sync_conn) -> None:
        cfg.attributes["connection"] = sync_conn
        fn(cfg, revision)

    try:
        async with db.engine.begin() as conn:
            await conn.run_sync(run)
    finally:
        await db.close()


async def upgrade(url: str, revision: str = "head") -> None:
    await _run_command(url, command.upgrade, revision)


async def downgrade(url: str, revision: str) -> None:
    await _run_command(url, command.downgrade, revision)


async def current(url: str) -> str | None:
    db = Database(url)
    try:
        async with db.engine.connect() as conn:
            return await conn.run_sync(
                lambda c: MigrationContext.configure(c).get_current_revision())
    finally:
        await db.close()


async def is_up_to_date(url: str) -> bool:
    return await current(url) == head_revision()
