"""The durable store: one SQLite file in WAL mode, one writer task with group commit, one reader.

Every write goes through a single writer task. Callers queue a write and wait; the writer
gathers whatever is queued within `commit_window_ms` (up to `max_batch` rows) into ONE
transaction and only then wakes the callers, so an acknowledged write is a committed write.
One transaction for thousands of rows is what makes ingest fast: SQLite pays per commit, not
per row (`python -m tests.benchmarks` measures AMI ingest end to end, docs/benchmarks.md).

Durability: `synchronous=NORMAL` in WAL mode. A commit is appended to the WAL file with write(),
without fsync; a crash or kill -9 of this process leaves it in the OS page cache and SQLite
replays it on the next open, so nothing acknowledged is lost. Only a power loss or kernel crash
can lose the last commits; `synchronous = "FULL"` in `[store]` covers that too, at a cost.

Reads use a second connection (WAL readers never block the writer and vice versa) and see
everything acknowledged so far.
"""

from __future__ import annotations

import functools
import json
import logging
import sqlite3
import time
from collections.abc import Callable, Sequence
from functools import partial
from itertools import chain
from pathlib import Path
from typing import Any

import aiosqlite

from crm.store.interface import OutboxReader
from crm.store.migrations import migrate
from crm.store.portable import UPSERT_CALL_SQL, PortableStore, claim_queued_sql
from crm.store.rows import CALL_COLUMNS

# Defined with the code both backends share; callers have always imported them from here.
from crm.store.rows import Contact as Contact
from crm.store.rows import Note as Note
from crm.store.rows import OriginateRecord as OriginateRecord
from crm.store.rows import digits_only as digits_only
from crm.store.rows import iso_utc as iso_utc
from crm.store.rows import remote_number_of as remote_number_of
from crm.store.settings import StoreSettings
from crm.store.sqlite_thread import SqliteThread
from crm.store.writer import Params, StatementsWrite, Write, grouped
from crm.store.writer import StoreClosedError as StoreClosedError  # re-exported too

log = logging.getLogger(__name__)


# The outbox's SQL on a store one process owns (crm/store/interface.LocalDeliveries).
# INDEXED BY: left to itself, SQLite picks outbox_state (state, adapter), then sorts every
# pending row and probes each one's lower seqs: O(backlog) per claim, 54 ms a claim with
# 100,000 rows pending. Walking outbox_due in order stops after `LIMIT` claimable rows.
_DUE_DELIVERIES_SQL = """
SELECT o.id, o.adapter, o.pbx_id, o.call_id, o.seq, o.idempotency_key, o.attempts,
       e.event_json
FROM outbox o INDEXED BY outbox_due JOIN call_events e ON e.id = o.event_row
WHERE o.state = 'pending'
  AND o.next_attempt_at <= ?
  AND o.adapter IN (SELECT value FROM json_each(?))
  AND o.id NOT IN (SELECT value FROM json_each(?))
  AND NOT EXISTS (
      SELECT 1 FROM outbox p
      WHERE p.state = 'pending' AND p.adapter = o.adapter AND p.pbx_id = o.pbx_id
        AND p.call_id = o.call_id AND p.seq < o.seq)
ORDER BY o.next_attempt_at, o.id
LIMIT ?
"""

_NEXT_DUE_DELIVERY_SQL = (
    "SELECT MIN(next_attempt_at) FROM outbox WHERE state = 'pending' AND next_attempt_at > ?"
)

_DELIVERY_OUTCOME_SQL = (
    "UPDATE outbox SET state = ?, attempts = ?, next_attempt_at = ?, claimed_until = NULL,"
    " last_error = ?, last_status = ?, last_response = ?, delivered_at = ? WHERE id = ?"
)


# Rows per multi-row statement (`VALUES (...), (...)`): 64 calls rows bind 1,408 parameters,
# well under SQLite's limit of 32,766.
_ROWS_PER_STATEMENT = 64


def _rows_sql(columns: int, rows: int) -> str:
    row = "(" + ", ".join("?" * columns) + ")"
    return ", ".join([row] * rows)


def _upsert_calls_sql(rows: int) -> str:
    insert, _, _ = UPSERT_CALL_SQL.partition(" VALUES ")
    tail = UPSERT_CALL_SQL[UPSERT_CALL_SQL.index(" ON CONFLICT") :]
    return f"{insert} VALUES {_rows_sql(len(CALL_COLUMNS), rows)}{tail}"


def _insert_events_sql(rows: int) -> str:
    return (
        "INSERT OR IGNORE INTO call_events(pbx_id, call_id, seq, kind, at, event_json)"
        f" VALUES {_rows_sql(6, rows)}"
    )


def _insert_outbox_rows_sql(rows: int) -> str:
    return (
        "WITH v(adapter, idempotency_key, next_attempt_at, created_at, pbx_id, call_id, seq)"
        f" AS (VALUES {_rows_sql(7, rows)})"
        " INSERT OR IGNORE INTO outbox(event_row, adapter, pbx_id, call_id, seq,"
        " idempotency_key, state, attempts, next_attempt_at, created_at)"
        " SELECT e.id, v.adapter, e.pbx_id, e.call_id, e.seq, v.idempotency_key, 'pending', 0,"
        " v.next_attempt_at, v.created_at"
        # CROSS JOIN keeps the rows' order: it makes the VALUES list the outer loop.
        " FROM v CROSS JOIN call_events AS e"
        " WHERE e.pbx_id = v.pbx_id AND e.call_id = v.call_id AND e.seq = v.seq"
    )


class Store(PortableStore[SqliteThread]):
    """Open with `await Store.open(settings)`; close with `await store.close()`."""

    _upsert_call_sql = UPSERT_CALL_SQL
    # Duplicates by (pbx_id, call_id, seq) are ignored: replaying events after a crash is a no-op.
    _insert_event_sql = (
        "INSERT OR IGNORE INTO call_events(pbx_id, call_id, seq, kind, at, event_json)"
        " VALUES (?, ?, ?, ?, ?, ?)"
    )
    _insert_outbox_sql = (
        "INSERT OR IGNORE INTO outbox(event_row, adapter, pbx_id, call_id, seq, idempotency_key,"
        " state, attempts, next_attempt_at, created_at)"
        " SELECT id, ?, pbx_id, call_id, seq, ?, 'pending', 0, ?, ? FROM call_events"
        " WHERE pbx_id = ? AND call_id = ? AND seq = ?"
    )
    _put_kv_sql = "INSERT OR REPLACE INTO kv(key, value) VALUES (?, ?)"
    _upsert_contact_sql = (
        "INSERT OR REPLACE INTO contacts(number_digits, number, name, company,"
        " owner_extension, url, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)"
    )
    _claim_queued_sql = claim_queued_sql()

    # The hot statements' multi-row forms, by the one-row SQL they stand for. executemany()
    # releases and retakes the GIL around every row's sqlite3_step; while the event loop's
    # thread is busy reading AMI, each retake waits for the interpreter's switch interval
    # (5 ms), and a 2,000-row commit took up to a second. A statement of 64 rows retakes it
    # once for the 64. Same rows, same order, same conflict handling, row by row.
    _multi_row_forms: dict[str, Callable[[int], str]] = {
        UPSERT_CALL_SQL: functools.cache(_upsert_calls_sql),
        _insert_event_sql: functools.cache(_insert_events_sql),
        _insert_outbox_sql: functools.cache(_insert_outbox_rows_sql),
    }

    def __init__(
        self,
        settings: StoreSettings,
        writer: SqliteThread,
        reader: aiosqlite.Connection,
        now: Callable[[], float],
    ) -> None:
        self.path = Path(settings.path)
        self._reader = reader
        super().__init__(settings, writer, now, task_name="pbxcrm-store-writer")

    # -- life cycle ---------------------------------------------------------------------------

    @classmethod
    async def open(cls, settings: StoreSettings, *, now: Callable[[], float] = time.time) -> Store:
        path = Path(settings.path)
        path.parent.mkdir(parents=True, exist_ok=True)
        setup = await _connect(path, settings)
        try:
            mode = await _scalar(setup, "PRAGMA journal_mode=WAL")
            if str(mode).lower() != "wal":
                raise RuntimeError(f"{path}: SQLite refused WAL mode (journal_mode={mode})")
            await migrate(setup)
        finally:
            await setup.close()
        writer = await SqliteThread.open(
            path,
            timeout_seconds=settings.busy_timeout_ms / 1000.0,
            pragmas=[*_pragmas(settings), "PRAGMA foreign_keys=ON"],
        )
        try:
            reader = await _connect(path, settings)
            # The reader must never write: a stray write there would bypass group commit.
            await reader.execute("PRAGMA query_only=ON")
        except BaseException:
            await writer.close()
            raise
        log.info("store: opened %s (synchronous=%s)", path, settings.synchronous)
        return cls(settings, writer, reader, now)

    def describe(self) -> str:
        return str(self.path)

    async def _close_connections(self) -> None:
        await self._reader.close()
        await self._writer.close()

    @property
    def reader(self) -> aiosqlite.Connection:
        """The shared read-only connection, for query modules (call history...).

        Prefer execute_fetchall(); a cursor left open (e.g. fetchone() without close()) keeps
        its read transaction, and every query on this connection meanwhile sees that old
        snapshot. Parts that must see every commit at once (the outbox) use open_reader().
        """
        return self._reader

    async def open_reader(self) -> aiosqlite.Connection:
        """A private read-only connection to this database; the caller closes it."""
        conn = await _connect(self.path, self.settings)
        await conn.execute("PRAGMA query_only=ON")
        return conn

    # -- the outbox of one process (crm/store/interface.LocalDeliveries) --------------------

    async def due_deliveries(
        self,
        reader: OutboxReader,
        adapters: Sequence[str],
        held: Sequence[int],
        limit: int,
        now: float,
    ) -> list[tuple[Any, ...]]:
        """Due rows, at most one per (adapter, call) and that its lowest pending seq, read on
        the outbox's own `reader` (a shared one could show an old snapshot: a delivery just
        marked done would look pending and go out twice). `held` are rows it already has."""
        rows = await reader.execute_fetchall(
            _DUE_DELIVERIES_SQL, (now, json.dumps(list(adapters)), json.dumps(list(held)), limit)
        )
        return [tuple(row) for row in rows]

    async def next_due_after(self, reader: OutboxReader, now: float) -> float | None:
        for (value,) in await reader.execute_fetchall(_NEXT_DUE_DELIVERY_SQL, (now,)):
            return float(value) if value is not None else None
        return None

    async def save_delivery_outcome(
        self,
        row_id: int,
        *,
        state: str,
        attempts: int,
        next_attempt_at: float,
        error: str | None,
        status: int | None,
        response: str | None,
        delivered_at: float | None,
    ) -> None:
        await self.execute_write(
            [
                (
                    _DELIVERY_OUTCOME_SQL,
                    (
                        state,
                        attempts,
                        next_attempt_at,
                        error,
                        status,
                        response,
                        delivered_at,
                        row_id,
                    ),
                )
            ]
        )

    # -- writes -------------------------------------------------------------------------------

    async def requeue_dead(self, ids: Sequence[int] | None = None) -> int:
        """`pbxcrm outbox retry`: dead rows (the given ids, or all) go again with a fresh set
        of attempts; returns how many. Other states are left alone."""
        if ids is not None and not ids:
            return 0
        sql = (
            "UPDATE outbox SET state = 'pending', attempts = 0, next_attempt_at = ?,"
            " claimed_until = NULL WHERE state = 'dead'"
        )
        params: list[Any] = [self._now()]
        if ids is not None:
            sql += " AND id IN (SELECT value FROM json_each(?))"
            params.append(json.dumps([int(value) for value in ids]))

        async def requeue(conn: SqliteThread) -> int:
            return await self._execute_counting(conn, sql, tuple(params))

        # adds_outbox_rows: the running outbox in this process (if any) looks at once.
        return await self.write(requeue, adds_outbox_rows=True)

    # -- the writer ---------------------------------------------------------------------------

    async def _transaction(self, batch: list[Write]) -> list[Any]:
        if all(isinstance(op, StatementsWrite) for op in batch):
            # The usual batch (call steps, snapshots, outbox outcomes): one hop to the thread.
            await self._writer.run(partial(_commit, self._plan(batch)))
            return [None] * len(batch)
        # Writes that need results run in turn, each a hop, inside one transaction.
        await self._writer.run(_begin)
        try:
            results = await self._run_batch(batch)
            await self._writer.run(_commit_open)
        except BaseException:
            await self._writer.run(_rollback_open)
            raise
        return results

    def _plan(self, batch: list[Write]) -> list[tuple[str, list[Params]]]:
        """The batch's statements in commit order, as (sql, rows) to run with executemany."""
        statements = [statement for op in batch for statement in op.statements]  # type: ignore[union-attr]
        plan: list[tuple[str, list[Params]]] = []
        for sql, rows in grouped(statements):
            plan.extend(self._statements_for(sql, rows))
        return plan

    def _statements_for(self, sql: str, rows: list[Params]) -> list[tuple[str, list[Params]]]:
        multi_row = self._multi_row_forms.get(sql)
        if multi_row is None or len(rows) == 1:
            return [(sql, rows)]
        size = _ROWS_PER_STATEMENT
        whole = len(rows) - len(rows) % size
        out: list[tuple[str, list[Params]]] = []
        if whole:
            chunks = [tuple(chain.from_iterable(rows[i : i + size])) for i in range(0, whole, size)]
            out.append((multi_row(size), chunks))
        # The rest in chunks of 32, 16, ... 1 rows, in order: a statement per remainder size
        # (1..63) kept up to 128 prepared statements of hundreds of parameters in sqlite3's
        # cache, ~8 MiB of resident memory; powers of two are 7 forms a table.
        start = whole
        while start < len(rows):
            size = 1 << ((len(rows) - start).bit_length() - 1)
            out.append((multi_row(size), [tuple(chain.from_iterable(rows[start : start + size]))]))
            start += size
        return out

    async def _execute(self, sql: str, params: Params) -> None:
        await self._writer.run(lambda conn: conn.execute(sql, params))

    async def _execute_many(self, sql: str, rows: list[Params]) -> None:
        plan = self._statements_for(sql, rows)
        await self._writer.run(partial(_run_plan, plan))

    async def _execute_counting(self, conn: SqliteThread, sql: str, params: Params) -> int:
        return await conn.run(lambda c: c.execute(sql, params).rowcount)

    async def _execute_returning(
        self, conn: SqliteThread, sql: str, params: Params
    ) -> list[tuple[Any, ...]]:
        return await conn.run(lambda c: [tuple(row) for row in c.execute(sql, params)])


# Run on the writer's thread (SqliteThread.run). IMMEDIATE: take the write lock at BEGIN, so
# another process (the admin CLI) makes us wait there (busy_timeout) instead of failing half-way.
def _begin(conn: sqlite3.Connection) -> None:
    conn.execute("BEGIN IMMEDIATE")


def _commit_open(conn: sqlite3.Connection) -> None:
    conn.execute("COMMIT")


def _rollback_open(conn: sqlite3.Connection) -> None:
    if conn.in_transaction:
        conn.execute("ROLLBACK")


def _run_plan(plan: list[tuple[str, list[Params]]], conn: sqlite3.Connection) -> None:
    for sql, rows in plan:
        if len(rows) == 1:
            conn.execute(sql, rows[0])
        else:
            conn.executemany(sql, rows)


def _commit(plan: list[tuple[str, list[Params]]], conn: sqlite3.Connection) -> None:
    _begin(conn)
    try:
        _run_plan(plan, conn)
        _commit_open(conn)
    except BaseException:
        _rollback_open(conn)
        raise


def _pragmas(settings: StoreSettings) -> list[str]:
    # Validated by the settings model to be NORMAL or FULL, so formatting it in is safe.
    return [
        f"PRAGMA busy_timeout={int(settings.busy_timeout_ms)}",
        f"PRAGMA synchronous={settings.synchronous}",
    ]


async def _connect(path: Path, settings: StoreSettings) -> aiosqlite.Connection:
    # isolation_level=None: no implicit transactions; the writer issues BEGIN/COMMIT itself.
    conn = await aiosqlite.connect(
        path, isolation_level=None, timeout=settings.busy_timeout_ms / 1000.0
    )
    for pragma in _pragmas(settings):
        await conn.execute(pragma)
    return conn


async def _scalar(conn: aiosqlite.Connection, sql: str, params: Params = ()) -> Any:
    async with conn.execute(sql, params) as cursor:
        row = await cursor.fetchone()
    return row[0] if row else None
