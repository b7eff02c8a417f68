"""The PostgreSQL store: the same public API as crm.store.sqlite.Store, for sites where several
pbxcrm
instances (one beside each PBX, or a pair for failover) share one database.

Writes go through one writer connection with the same group commit as the SQLite store: an
acknowledged write is a committed write, and a single consumer's submit_record() calls commit
in submit order. Reads use a small pool. `reader` answers the SQLite-flavoured queries of the
read modules (call history, 3CX lookups) by turning `?` into `$n`; their SQL is portable.

The outbox is shared by every instance, so deliveries are claimed in the database, not in
memory: `claim_deliveries()` takes due rows with `FOR UPDATE SKIP LOCKED` (instances never wait
on each other's rows) and stamps a lease (`claimed_by`, `claimed_until`). A row whose lease has
run out, because its instance died mid-delivery, is claimable again and goes out with the same
idempotency key. Per call and adapter only the lowest pending seq is ever claimable, whoever
claims it, so a CRM sees a call's events in order across instances.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import asyncpg

from crm.store.migrations_pg import migrate
from crm.store.portable import UPSERT_CALL_SQL, PortableStore, claim_queued_sql
from crm.store.settings import StoreSettings
from crm.store.writer import Params, Write

log = logging.getLogger(__name__)

# Every instance LISTENs here; a commit that added outbox rows NOTIFYs, so a row recorded by
# one instance is claimed at once by whichever instance is free, not at the next poll.
NOTIFY_CHANNEL = "pbxcrm_outbox"

# The head of each (adapter, call) queue, due, not leased by a live instance. SKIP LOCKED:
# a row another instance is claiming right now is skipped, not waited for. Once that claim
# commits, the row's lease excludes it (READ COMMITTED re-checks the WHERE on the locked row).
_CLAIM_SQL = """
WITH due AS (
    SELECT o.id FROM outbox o
    WHERE o.state = 'pending'
      AND o.next_attempt_at <= $1
      AND o.adapter = ANY($2::text[])
      AND (o.claimed_until IS NULL OR o.claimed_until <= $1)
      AND NOT EXISTS (
          SELECT 1 FROM outbox p
          WHERE p.state = 'pending' AND p.adapter = o.adapter AND p.pbx_id = o.pbx_id
            AND p.call_id = o.call_id AND p.seq < o.seq)
    ORDER BY o.next_attempt_at, o.id
    LIMIT $3
    FOR UPDATE OF o SKIP LOCKED
)
UPDATE outbox o SET claimed_by = $4, claimed_until = $1 + $5
FROM due, call_events e
WHERE o.id = due.id AND e.id = o.event_row
RETURNING o.id, o.adapter, o.pbx_id, o.call_id, o.seq, o.idempotency_key, o.attempts,
          e.event_json
"""

# Only the lease holder may record an outcome: if our lease ran out and another instance
# took the row over, its outcome is the one that counts (both sent the same key).
_FINISH_SQL = (
    "UPDATE outbox SET state = $1, attempts = $2, next_attempt_at = $3, claimed_until = NULL,"
    " claimed_by = NULL, last_error = $4, last_status = $5, last_response = $6,"
    " delivered_at = $7 WHERE id = $8 AND claimed_by = $9 AND state = 'pending'"
)

_QMARK = re.compile(r"'[^']*'|\?")


# Cached: the same few statements come back all the time, on every read and write.
@functools.lru_cache(maxsize=512)
def qmark_to_numbered(sql: str) -> str:
    """`a = ? AND b = ?` -> `a = $1 AND b = $2`; a `?` inside a quoted literal stays."""
    counter = 0

    def number(match: re.Match[str]) -> str:
        nonlocal counter
        if match.group(0) != "?":
            return match.group(0)
        counter += 1
        return f"${counter}"

    return _QMARK.sub(number, sql)


def redacted_url(url: str) -> str:
    """Where the store is, for log lines: host, port, database and user, never the URL itself
    (`[store] url` is a secret: it may carry a password or a query with one)."""
    parts = urlsplit(url)
    where = f"{parts.hostname or 'localhost'}:{parts.port or 5432}{parts.path or '/'}"
    return f"{where} as {parts.username}" if parts.username else where


@dataclass(frozen=True, slots=True)
class ClaimedDelivery:
    """An outbox row this instance holds a lease on."""

    id: int
    adapter: str
    pbx_id: str
    call_id: str
    seq: int
    key: str
    attempts: int
    event_json: str


class PgReader:
    """The `reader` of the PostgreSQL store: answers `?`-style queries like aiosqlite does."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def execute_fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        records = await self._pool.fetch(qmark_to_numbered(sql), *params)
        return [tuple(record) for record in records]

    async def close(self) -> None:
        """The pool belongs to the store; nothing to close here."""


class PgStore(PortableStore[asyncpg.Connection]):
    """Open with `await PgStore.open(settings)` (settings.url set); close with `close()`."""

    _upsert_call_sql = qmark_to_numbered(UPSERT_CALL_SQL)
    _insert_event_sql = (
        "INSERT INTO call_events(pbx_id, call_id, seq, kind, at, event_json)"
        " VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING"
    )
    _insert_outbox_sql = (
        "INSERT INTO outbox(event_row, adapter, pbx_id, call_id, seq, idempotency_key,"
        " state, attempts, next_attempt_at, created_at)"
        " SELECT id, $1, pbx_id, call_id, seq, $2, 'pending', 0, $3, $4 FROM call_events"
        " WHERE pbx_id = $5 AND call_id = $6 AND seq = $7 ON CONFLICT DO NOTHING"
    )
    _put_kv_sql = (
        "INSERT INTO kv(key, value) VALUES ($1, $2)"
        " ON CONFLICT (key) DO UPDATE SET value = excluded.value"
    )
    _upsert_contact_sql = (
        "INSERT INTO contacts(number_digits, number, name, company, owner_extension,"
        " url, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7)"
        " ON CONFLICT (number_digits) DO UPDATE SET number = excluded.number,"
        " name = excluded.name, company = excluded.company,"
        " owner_extension = excluded.owner_extension, url = excluded.url,"
        " updated_at = excluded.updated_at"
    )
    # SKIP LOCKED: instances polling at once each take other rows instead of waiting on a lock.
    _claim_queued_sql = qmark_to_numbered(claim_queued_sql(" FOR UPDATE SKIP LOCKED"))

    def __init__(
        self,
        settings: StoreSettings,
        url: str,
        writer: asyncpg.Connection,
        pool: asyncpg.Pool,
        now: Callable[[], float],
    ) -> None:
        self.url = url
        self.path = None  # no file: callers that print the store's place use `describe()`
        self._pool = pool
        self._reader = PgReader(pool)
        self._notify_conn: asyncpg.Connection | None = None
        self._listen_task: asyncio.Task[None] | None = None
        super().__init__(settings, writer, now, task_name="pbxcrm-pg-store-writer")

    # -- life cycle ---------------------------------------------------------------------------

    @classmethod
    async def open(
        cls, settings: StoreSettings, *, now: Callable[[], float] = time.time
    ) -> PgStore:
        if settings.url is None:
            raise ValueError("[store] url is not set: PgStore needs a postgresql:// URL")
        url = settings.url.get_secret_value()
        timeout = max(1.0, settings.busy_timeout_ms / 1000.0)
        try:
            writer = await asyncpg.connect(url, timeout=timeout)
        except (OSError, asyncpg.PostgresError) as exc:
            raise RuntimeError(
                f"store: cannot connect to PostgreSQL at {redacted_url(url)}: {exc}"
            ) from None
        try:
            await migrate(writer)
            pool = await asyncpg.create_pool(
                url, min_size=1, max_size=settings.pool_size, timeout=timeout
            )
        except BaseException:
            await writer.close()
            raise
        log.info("store: opened PostgreSQL %s", redacted_url(url))
        return cls(settings, url, writer, pool, now)

    def describe(self) -> str:
        return redacted_url(self.url)

    async def _close_connections(self) -> None:
        if self._listen_task is not None:
            await asyncio.gather(self._listen_task, return_exceptions=True)
        if self._notify_conn is not None:
            await self._notify_conn.close()
        await self._pool.close()
        await self._writer.close()

    @property
    def reader(self) -> PgReader:
        return self._reader

    async def open_reader(self) -> PgReader:
        """A reader the caller may close; on PostgreSQL every query sees every commit anyway."""
        return PgReader(self._pool)

    def add_listener(self, callback: Callable[[], None]) -> None:
        """Call `callback()` after any instance's commit that added outbox rows."""
        super().add_listener(callback)
        if self._notify_conn is None and self._listen_task is None:
            self._listen_task = asyncio.get_running_loop().create_task(
                self._listen(), name="pbxcrm-pg-listen"
            )

    async def _listen(self) -> None:
        if self._notify_conn is not None or self._closed:
            return
        try:
            conn = await asyncpg.connect(self.url)
        except (OSError, asyncpg.PostgresError) as exc:
            # Not fatal: the outbox polls anyway; it only reacts later.
            log.warning("store: cannot LISTEN for outbox rows (%s); relying on polling", exc)
            return
        if self._closed:
            await conn.close()
            return
        self._notify_conn = conn
        await conn.add_listener(NOTIFY_CHANNEL, lambda *_: self._wake_listeners())

    # -- the shared outbox --------------------------------------------------------------------

    async def claim_deliveries(
        self, adapters: Sequence[str], limit: int, *, owner: str, lease_seconds: float
    ) -> list[ClaimedDelivery]:
        """Lease up to `limit` due deliveries to `owner` (this instance) for `lease_seconds`.

        Committed before it returns: another instance never gets the same row while the lease
        runs. Rows come back in due order; at most one per (adapter, call) — its lowest seq.
        """
        if not adapters:
            return []
        rows = await self._pool.fetch(
            _CLAIM_SQL, self._now(), list(adapters), limit, owner, lease_seconds
        )
        claimed = [ClaimedDelivery(*row) for row in rows]
        claimed.sort(key=lambda row: row.id)
        return claimed

    async def finish_delivery(
        self,
        row_id: int,
        *,
        owner: str,
        state: str,
        attempts: int,
        next_attempt_at: float,
        error: str | None,
        status: int | None,
        response: str | None,
        delivered_at: float | None,
    ) -> bool:
        """Record a delivery's outcome; False if `owner` no longer held the row's lease."""
        result = await self._pool.execute(
            _FINISH_SQL,
            state,
            attempts,
            next_attempt_at,
            error,
            status,
            response,
            delivered_at,
            row_id,
            owner,
        )
        return result != "UPDATE 0"

    async def renew_leases(
        self, row_ids: Sequence[int], *, owner: str, lease_seconds: float
    ) -> int:
        """Extend `owner`'s leases on rows it still holds (deliveries in flight or waiting for a
        slot) to `lease_seconds` from now; returns how many it still held."""
        if not row_ids:
            return 0
        status = await self._pool.execute(
            "UPDATE outbox SET claimed_until = $3"
            " WHERE id = ANY($1::bigint[]) AND claimed_by = $2 AND state = 'pending'",
            list(row_ids),
            owner,
            self._now() + lease_seconds,
        )
        return _rows_changed(status)

    async def release_deliveries(self, row_ids: Sequence[int], *, owner: str) -> None:
        """Give back leases not started (on a clean stop), so another instance goes at once."""
        if row_ids:
            await self._pool.execute(
                "UPDATE outbox SET claimed_by = NULL, claimed_until = NULL"
                " WHERE id = ANY($1::bigint[]) AND claimed_by = $2 AND state = 'pending'",
                list(row_ids),
                owner,
            )

    async def requeue_dead(self, ids: Sequence[int] | None = None) -> int:
        """`pbxcrm outbox retry` on PostgreSQL: dead rows (the given ids, or all) go again
        with a fresh set of attempts; returns how many. Other states are left alone."""
        if ids is not None and not ids:
            return 0
        sql = (
            "UPDATE outbox SET state = 'pending', attempts = 0, next_attempt_at = $1,"
            " claimed_until = NULL, claimed_by = NULL WHERE state = 'dead'"
        )
        params: list[Any] = [self._now()]
        if ids is not None:
            sql += " AND id = ANY($2::bigint[])"
            params.append([int(value) for value in ids])

        async def requeue(conn: asyncpg.Connection) -> int:
            return await self._execute_counting(conn, sql, tuple(params))

        return await self.write(requeue, adds_outbox_rows=True)

    async def next_due(self) -> float | None:
        """When the next pending delivery (or expiring lease) becomes claimable."""
        value = await self._pool.fetchval(
            "SELECT MIN(GREATEST(next_attempt_at, COALESCE(claimed_until, 0))) FROM outbox"
            " WHERE state = 'pending'"
        )
        return float(value) if value is not None else None

    # -- the writer ---------------------------------------------------------------------------

    async def _transaction(self, batch: list[Write]) -> list[Any]:
        conn = self._writer
        async with conn.transaction():
            results = await self._run_batch(batch)
            if any(op.adds_outbox_rows for op in batch):
                # Delivered at COMMIT to every instance's LISTEN connection (ours too).
                await conn.execute("SELECT pg_notify($1, '')", NOTIFY_CHANNEL)
        return results

    async def _execute(self, sql: str, params: Params) -> None:
        await self._writer.execute(sql, *params)

    def _native_sql(self, sql: str) -> str:
        return qmark_to_numbered(sql)

    async def _execute_counting(self, conn: asyncpg.Connection, sql: str, params: Params) -> int:
        return _rows_changed(await conn.execute(qmark_to_numbered(sql), *params))

    async def _execute_returning(
        self, conn: asyncpg.Connection, sql: str, params: Params
    ) -> list[tuple[Any, ...]]:
        return [tuple(row) for row in await conn.fetch(qmark_to_numbered(sql), *params)]


def _rows_changed(status: str) -> int:
    """The row count of a command status such as `UPDATE 3` or `INSERT 0 1`."""
    return int(status.split()[-1])
