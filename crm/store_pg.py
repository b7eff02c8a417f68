"""The PostgreSQL store: the same public API as crm.store.Store, for sites where several pbxcrm
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
import json
import logging
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import asyncpg

from crm.adapters.base import Adapter
from crm.migrations_pg import migrate
from crm.model import Call, CallEvent
from crm.store import (
    _CALL_COLUMNS,
    EXPIRE_QUEUED_SQL,
    ORIGINATE_COLUMNS,
    Contact,
    Note,
    OriginateRecord,
    _call_params,
    claim_queued_sql,
    digits_only,
    iso_utc,
    originate_row,
)
from crm.store_settings import StoreSettings
from crm.store_writer import (
    PHASE_CALLS,
    PHASE_EVENTS,
    PHASE_OUTBOX,
    Params,
    StatementsWrite,
    StoreWriter,
    Write,
)

log = logging.getLogger(__name__)

# Every instance LISTENs here; a commit that added outbox rows NOTIFYs, so a row recorded by
# one instance is claimed at once by whichever instance is free, not at the next poll.
NOTIFY_CHANNEL = "pbxcrm_outbox"

_UPSERT_CALL = (
    f"INSERT INTO calls({', '.join(_CALL_COLUMNS)})"
    f" VALUES ({', '.join(f'${i}' for i in range(1, len(_CALL_COLUMNS) + 1))})"
    " ON CONFLICT (pbx_id, call_id) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in _CALL_COLUMNS[2:])
    + " WHERE calls.ended = 0 OR excluded.ended = 1"
)
_INSERT_EVENT = (
    "INSERT INTO call_events(pbx_id, call_id, seq, kind, at, event_json)"
    " VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING"
)
_INSERT_OUTBOX = (
    "INSERT INTO outbox(event_row, adapter, pbx_id, call_id, seq, idempotency_key,"
    " state, attempts, next_attempt_at, created_at)"
    " SELECT id, $1, pbx_id, call_id, seq, $2, 'pending', 0, $3, $4 FROM call_events"
    " WHERE pbx_id = $5 AND call_id = $6 AND seq = $7 ON CONFLICT DO NOTHING"
)

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


# SKIP LOCKED: instances polling at once each take other rows instead of waiting on a lock.
_CLAIM_QUEUED_PG = qmark_to_numbered(claim_queued_sql(" FOR UPDATE SKIP LOCKED"))


def redacted_url(url: str) -> str:
    """The URL with its password starred, for log lines."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


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


class PgStore(StoreWriter[asyncpg.Connection]):
    """Open with `await PgStore.open(settings)` (settings.url set); close with `close()`."""

    backend = "postgresql"

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

    # -- writes -------------------------------------------------------------------------------

    async def record(
        self, call: Call, events: Sequence[CallEvent], adapters: Sequence[Adapter]
    ) -> None:
        await self.submit_record(call, events, adapters)

    def submit_record(
        self, call: Call, events: Sequence[CallEvent], adapters: Sequence[Adapter]
    ) -> asyncio.Future[None]:
        now = self._now()
        statements: list[tuple[int, str, Params]] = [
            (PHASE_CALLS, _UPSERT_CALL, _call_params(call, now))
        ]
        adds_outbox = False
        for event in events:
            pbx_id = event.call.pbx_id
            statements.append(
                (
                    PHASE_EVENTS,
                    _INSERT_EVENT,
                    (
                        pbx_id,
                        event.call_id,
                        event.seq,
                        event.kind.value,
                        iso_utc(event.at),
                        event.model_dump_json(),
                    ),
                )
            )
            for adapter in adapters:
                if adapter.wants(event):
                    adds_outbox = True
                    statements.append(
                        (
                            PHASE_OUTBOX,
                            _INSERT_OUTBOX,
                            (
                                adapter.name,
                                f"{adapter.name}:{event.event_id}",
                                now,
                                now,
                                pbx_id,
                                event.call_id,
                                event.seq,
                            ),
                        )
                    )
        return self._enqueue(
            StatementsWrite(statements, self._future(), len(statements), adds_outbox)
        )

    async def upsert_call(self, call: Call) -> None:
        params = _call_params(call, self._now())
        await self._submit(
            StatementsWrite([(PHASE_CALLS, _UPSERT_CALL, params)], self._future(), 1)
        )

    async def save_note(
        self,
        *,
        pbx_id: str,
        number: str | None,
        extension: str | None,
        status: str | None,
        comments: str | None,
        call_id: str | None = None,
    ) -> int:
        params = (pbx_id, call_id, number, extension, status, comments, self._now())

        async def insert(conn: asyncpg.Connection) -> int:
            return int(
                await conn.fetchval(
                    "INSERT INTO notes(pbx_id, call_id, number, extension, status, comments,"
                    " created_at) VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
                    *params,
                )
            )

        return await self.write(insert)

    async def put_kv(self, key: str, value: str | None) -> None:
        await self.execute_write(
            [
                (
                    "INSERT INTO kv(key, value) VALUES ($1, $2)"
                    " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    (key, value),
                )
            ]
        )

    async def delete_kv(self, key: str) -> None:
        await self.execute_write([("DELETE FROM kv WHERE key = $1", (key,))])

    async def upsert_contact(
        self,
        number: str,
        *,
        name: str | None = None,
        company: str | None = None,
        owner_extension: str | None = None,
        url: str | None = None,
    ) -> str:
        digits = digits_only(number)
        if digits is None:
            raise ValueError(f"contact number {number!r} has no digits")
        await self.execute_write(
            [
                (
                    "INSERT INTO contacts(number_digits, number, name, company, owner_extension,"
                    " url, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7)"
                    " ON CONFLICT (number_digits) DO UPDATE SET number = excluded.number,"
                    " name = excluded.name, company = excluded.company,"
                    " owner_extension = excluded.owner_extension, url = excluded.url,"
                    " updated_at = excluded.updated_at",
                    (digits, number, name, company, owner_extension, url, self._now()),
                )
            ]
        )
        return digits

    async def delete_contact(self, number: str) -> None:
        digits = digits_only(number)
        if digits is not None:
            await self.execute_write([("DELETE FROM contacts WHERE number_digits = $1", (digits,))])

    async def save_originate(
        self,
        originate_id: str,
        *,
        agent_extension: str | None,
        number: str | None,
        state: str,
        reason: str | None = None,
        request: dict[str, Any] | None = None,
        target_pbx_id: str | None = None,
    ) -> None:
        now = self._now()
        request_json = json.dumps(request, ensure_ascii=False) if request is not None else None
        await self.execute_write(
            [
                (
                    "INSERT INTO originates(id, agent_extension, number, state, reason,"
                    " created_at, updated_at, request_json, target_pbx_id)"
                    " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                    (
                        originate_id,
                        agent_extension,
                        number,
                        state,
                        reason,
                        now,
                        now,
                        request_json,
                        target_pbx_id,
                    ),
                )
            ]
        )

    async def claim_originates(
        self, pbx_id: str, *, max_age_seconds: float, limit: int = 20
    ) -> list[OriginateRecord]:
        """Take requests queued for `pbx_id` (now "pending"); one instance wins each row."""
        now = self._now()

        async def claim(conn: asyncpg.Connection) -> list[OriginateRecord]:
            await conn.execute(
                qmark_to_numbered(EXPIRE_QUEUED_SQL), now, pbx_id, now - max_age_seconds
            )
            rows = await conn.fetch(_CLAIM_QUEUED_PG, now, pbx_id, limit)
            return [originate_row(tuple(row)) for row in rows]

        return await self.write(claim)

    async def set_pbx_extensions(self, pbx_id: str, ranges: Sequence[str]) -> None:
        """Replace the extension ranges `pbx_id` owns (from its `[pbx] extensions`)."""
        await self.execute_write(
            [("DELETE FROM pbx_extensions WHERE pbx_id = $1", (pbx_id,))]
            + [
                ("INSERT INTO pbx_extensions(pbx_id, extension_range) VALUES ($1, $2)", (pbx_id, r))
                for r in dict.fromkeys(ranges)
            ]
        )

    async def update_originate(
        self, originate_id: str, *, state: str, reason: str | None = None
    ) -> bool:
        params = (state, reason, self._now(), originate_id)

        async def update(conn: asyncpg.Connection) -> bool:
            status = await conn.execute(
                "UPDATE originates SET state = $1, reason = $2, updated_at = $3 WHERE id = $4",
                *params,
            )
            return status != "UPDATE 0"

        return await self.write(update)

    # -- reads --------------------------------------------------------------------------------

    async def get_call(self, pbx_id: str, call_id: str) -> Call | None:
        value = await self._pool.fetchval(
            "SELECT call_json FROM calls WHERE pbx_id = $1 AND call_id = $2", pbx_id, call_id
        )
        return Call.model_validate_json(value) if value is not None else None

    async def open_calls(self, pbx_id: str) -> list[Call]:
        rows = await self._pool.fetch(
            "SELECT call_json FROM calls WHERE pbx_id = $1 AND ended = 0 ORDER BY start_epoch",
            pbx_id,
        )
        return [Call.model_validate_json(row[0]) for row in rows]

    async def last_seq(self, pbx_id: str, call_id: str) -> int:
        """The highest step number stored for the call, 0 for none."""
        value = await self._pool.fetchval(
            "SELECT coalesce(max(seq), 0) FROM call_events WHERE pbx_id = $1 AND call_id = $2",
            pbx_id,
            call_id,
        )
        return int(value)

    async def events_for(self, pbx_id: str, call_id: str) -> list[CallEvent]:
        rows = await self._pool.fetch(
            "SELECT event_json FROM call_events WHERE pbx_id = $1 AND call_id = $2 ORDER BY seq",
            pbx_id,
            call_id,
        )
        return [CallEvent.model_validate_json(row[0]) for row in rows]

    async def notes_for(self, pbx_id: str, call_id: str) -> list[Note]:
        rows = await self._pool.fetch(
            "SELECT id, pbx_id, call_id, number, extension, status, comments, created_at"
            " FROM notes WHERE pbx_id = $1 AND call_id = $2 ORDER BY id",
            pbx_id,
            call_id,
        )
        return [Note(*row) for row in rows]

    async def get_kv(self, key: str) -> str | None:
        value = await self._pool.fetchval("SELECT value FROM kv WHERE key = $1", key)
        return value if isinstance(value, str) else None

    async def get_contact(self, number: str) -> Contact | None:
        digits = digits_only(number)
        if digits is None:
            return None
        row = await self._pool.fetchrow(
            "SELECT number_digits, number, name, company, owner_extension, url, updated_at"
            " FROM contacts WHERE number_digits = $1",
            digits,
        )
        return Contact(*row) if row is not None else None

    async def get_originate(self, originate_id: str) -> OriginateRecord | None:
        row = await self._pool.fetchrow(
            f"SELECT {ORIGINATE_COLUMNS} FROM originates WHERE id = $1", originate_id
        )
        return None if row is None else originate_row(tuple(row))

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
        return int(status.split()[-1])

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
            return int((await conn.execute(sql, *params)).split()[-1])

        return await self.write(requeue, adds_outbox_rows=True)

    async def purge_deliveries(self, state: str, cutoff: float) -> int:
        """`pbxcrm outbox purge` on PostgreSQL: delete `state` rows finished before `cutoff`."""
        if state not in ("done", "dead"):
            raise ValueError(f"{state} deliveries cannot be purged (only done or dead)")

        async def delete(conn: asyncpg.Connection) -> int:
            status = await conn.execute(
                "DELETE FROM outbox WHERE state = $1"
                " AND COALESCE(delivered_at, next_attempt_at) < $2",
                state,
                cutoff,
            )
            return int(status.split()[-1])

        return await self.write(delete)

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
