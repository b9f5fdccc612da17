"""Alembic baseline: an upgraded database equals metadata.create_all, on both engines."""

from __future__ import annotations

from sqlalchemy import inspect

from mailserver.store import migrate
from mailserver.store.engine import Database


def _describe(sync_conn) -> dict:
    insp = inspect(sync_conn)
    out = {}
    for table in sorted(insp.get_table_names()):
        if table == "alembic_version" or table.startswith("email_fts_"):
            continue  # FTS5 shadow tables are SQLite's own
        cols = {c["name"]: (str(c["type"]).split("(")[0], c["nullable"])
                for c in insp.get_columns(table)}
        out[table] = {
            "columns": cols,
            "pk": tuple(insp.get_pk_constraint(table)["constrained_columns"]),
            "indexes": sorted((tuple(i["column_names"]), bool(i["unique"]))
                              for i in insp.get_indexes(table)),
            "unique": sorted(tuple(u["column_names"]) for u in insp.get_unique_constraints(table)),
            "fks": sorted((tuple(f["constrained_columns"]), f["referred_table"])
                          for f in insp.get_foreign_keys(table)),
        }
    return out


async def _schema(url: str) -> dict:
    db = Database(url)
    try:
        async with db.engine.connect() as conn:
            return await conn.run_sync(_describe)
    finally:
        await db.close()


async def test_upgrade_matches_create_all_and_is_idempotent(database_url, tmp_path, request):
    assert await migrate.current(database_url) is None
    assert not await migrate.is_up_to_date(database_url)
    await migrate.upgrade(database_url)
    assert await migrate.current(database_url) == migrate.head_revision()
    assert await migrate.is_up_to_date(database_url)
    await migrate.upgrade(database_url)  # second run: a no-op
    assert await migrate.is_up_to_date(database_url)
    migrated = await _schema(database_url)

    if database_url.startswith("sqlite"):
        reference_url = f"sqlite:///{tmp_path}/reference.sqlite3"
    else:
        cluster = request.getfixturevalue("pg_cluster")
        reference_url = cluster.url(cluster.create_database())
    ref = Database(reference_url)
    await ref.create_schema()
    await ref.close()
    reference = await _schema(reference_url)
    assert migrated.keys() == reference.keys()
    for table in reference:
        assert migrated[table] == reference[table], table
    assert "mailboxes" in migrated and ("email_fts" in migrated or "email_search" in migrated)

    await migrate.downgrade(database_url, "base")
    assert await migrate.current(database_url) is None
    assert set(await _schema(database_url)) == set()
