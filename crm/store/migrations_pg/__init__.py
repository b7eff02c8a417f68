"""PostgreSQL schema migrations: `NNNN_name.sql` files here, applied once, in order.

Same semantics as crm/migrations (SQLite): each file runs in its own transaction together with
the `schema_version` row that records it. An advisory lock serialises instances that start at
once against one database, so only one of them applies a migration.
"""

from __future__ import annotations

import asyncpg

from crm.store.migrations import Migration, apply_pending

# Any constant works; it only has to be the same in every pbxcrm instance.
_MIGRATION_LOCK = 0x70627863726D  # "pbxcrm"


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

    async def apply_if_newer(migration: Migration) -> bool:
        async with conn.transaction():
            current = await conn.fetchval("SELECT COALESCE(MAX(version), 0) FROM schema_version")
            if migration.version <= current:
                return False
            # No parameters: asyncpg sends it as one simple query, so a file may hold many
            # statements, all inside this transaction.
            await conn.execute(migration.sql)
            await conn.execute(
                "INSERT INTO schema_version(version, name, applied_at) VALUES ($1, $2,"
                " to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'))",
                migration.version,
                migration.name,
            )
        return True

    return await apply_pending(__name__, apply_if_newer, what="PostgreSQL migration")
