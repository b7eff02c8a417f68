"""PostgreSQL schema migrations: `NNNN_name.sql` files here, applied once, in order.

Same semantics as crm/migrations (SQLite): each file runs in its own transaction together with
the `schema_version` row that records it. An advisory lock serialises instances that start at
once against one database, so only one of them applies a migration.
"""

from __future__ import annotations

import logging
from importlib import resources

import asyncpg

from crm.migrations import Migration

log = logging.getLogger(__name__)

# Any constant works; it only has to be the same in every pbxcrm instance.
_MIGRATION_LOCK = 0x70627863726D  # "pbxcrm"


def available_migrations() -> list[Migration]:
    migrations = []
    for entry in resources.files(__package__).iterdir():
        if not entry.name.endswith(".sql"):
            continue
        number, _, rest = entry.name.partition("_")
        if not number.isdigit():
            raise RuntimeError(f"migration file {entry.name!r} does not start with a number")
        migrations.append(Migration(int(number), rest[:-4], entry.read_text(encoding="utf-8")))
    migrations.sort(key=lambda m: m.version)
    versions = [m.version for m in migrations]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"two migrations share a version number: {versions}")
    return migrations


async def migrate(conn: asyncpg.Connection) -> list[int]:
    """Apply every migration newer than the database; returns the versions applied.

    The whole run holds a session advisory lock: instances started at once against an empty
    database would otherwise race even on CREATE TABLE IF NOT EXISTS (PostgreSQL raises a
    unique violation in its catalogue for the loser), and one of them would fail to start.
    """
    await conn.execute("SELECT pg_advisory_lock($1)", _MIGRATION_LOCK)
    try:
        return await _migrate_locked(conn)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _MIGRATION_LOCK)


async def _migrate_locked(conn: asyncpg.Connection) -> list[int]:
    await conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_version ("
        " version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)"
    )
    applied: list[int] = []
    for migration in available_migrations():
        async with conn.transaction():
            current = await conn.fetchval("SELECT COALESCE(MAX(version), 0) FROM schema_version")
            if migration.version <= current:
                continue
            # No parameters: asyncpg sends it as one simple query, so a file may hold many
            # statements, all inside this transaction.
            await conn.execute(migration.sql)
            await conn.execute(
                "INSERT INTO schema_version(version, name, applied_at) VALUES ($1, $2,"
                " to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'))",
                migration.version,
                migration.name,
            )
        log.info("store: applied PostgreSQL migration %04d %s", migration.version, migration.name)
        applied.append(migration.version)
    return applied
