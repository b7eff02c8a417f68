"""Schema migrations: numbered `NNNN_name.sql` files in this package, applied once, in order.

Each file runs in its own transaction together with the `schema_version` row that records
it, so a crash mid-migration leaves the database at the previous version, never half-way.

The SQLite runner lives here; finding the files and applying the pending ones in order is
shared with the PostgreSQL runner (crm/store/migrations_pg), which only brings its own transaction.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib import resources

import aiosqlite

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


# Applies the migration unless the database already has it (then returns False). Reading the
# database's version and applying belong in one transaction: two processes starting at once
# must not both apply it.
ApplyIfNewer = Callable[[Migration], Awaitable[bool]]


def available_migrations(package: str = __name__) -> list[Migration]:
    """The `NNNN_name.sql` files of `package` (by default the SQLite ones), in version order."""
    migrations = []
    for entry in resources.files(package).iterdir():
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


async def apply_pending(package: str, apply_if_newer: ApplyIfNewer, *, what: str) -> list[int]:
    """Offer every migration of `package` to `apply_if_newer`, oldest first; returns the
    versions it applied. `what` names them in the log line."""
    applied: list[int] = []
    for migration in available_migrations(package):
        if await apply_if_newer(migration):
            log.info("store: applied %s %04d %s", what, migration.version, migration.name)
            applied.append(migration.version)
    return applied


def split_statements(sql: str) -> list[str]:
    """Split a script into statements; executescript() would commit our transaction."""
    statements: list[str] = []
    current: list[str] = []
    for line in sql.splitlines(keepends=True):
        current.append(line)
        text = "".join(current)
        if sqlite3.complete_statement(text):
            if text.strip(" \t\r\n;").strip():
                statements.append(text.strip())
            current = []
    leftover = "".join(current).strip()
    # Comments after the last statement are fine; anything else is a truncated statement.
    if any(line.strip() and not line.strip().startswith("--") for line in leftover.splitlines()):
        raise RuntimeError(f"incomplete SQL statement at the end of a migration: {leftover!r}")
    return statements


async def current_version(conn: aiosqlite.Connection) -> int:
    await conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_version ("
        " version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)"
    )
    async with conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version") as cursor:
        row = await cursor.fetchone()
    return int(row[0]) if row else 0


async def migrate(conn: aiosqlite.Connection) -> list[int]:
    """Apply every migration newer than the database; returns the versions applied.

    `conn` must be in autocommit mode (isolation_level=None): transactions are explicit here.
    BEGIN IMMEDIATE takes the write lock before the version is read, so two processes opening
    the same file at once cannot both apply a migration.
    """

    async def apply_if_newer(migration: Migration) -> bool:
        await conn.execute("BEGIN IMMEDIATE")
        try:
            if migration.version <= await current_version(conn):
                await conn.execute("ROLLBACK")
                return False
            for statement in split_statements(migration.sql):
                await conn.execute(statement)
            await conn.execute(
                "INSERT INTO schema_version(version, name, applied_at)"
                " VALUES (?, ?, strftime('%Y-%m-%dT%H:%M:%SZ', 'now'))",
                (migration.version, migration.name),
            )
            await conn.execute("COMMIT")
        except BaseException:
            await conn.execute("ROLLBACK")
            raise
        return True

    return await apply_pending(__name__, apply_if_newer, what="migration")
