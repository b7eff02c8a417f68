"""The durable store: one SQLite file in WAL mode, one writer task with group commit, one reader.

Every write goes through a single writer task. Callers queue a write and wait; the writer
gathers whatever is queued within `commit_window_ms` (up to `max_batch` rows) into ONE
transaction and only then wakes the callers, so an acknowledged write is a committed write.
One transaction for thousands of rows is what makes 100k events/s possible: SQLite pays per
commit, not per row.

Durability: `synchronous=NORMAL` in WAL mode. A commit is appended to the WAL file with write(),
without fsync; a crash or kill -9 of this process leaves it in the OS page cache and SQLite
replays it on the next open, so nothing acknowledged is lost. Only a power loss or kernel crash
can lose the last commits; `synchronous = "FULL"` in `[store]` covers that too, at a cost.

Reads use a second connection (WAL readers never block the writer and vice versa) and see
everything acknowledged so far.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiosqlite

from crm.adapters.base import Adapter
from crm.migrations import migrate
from crm.model import Call, CallEvent, Direction
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
from crm.store_writer import StoreClosedError as StoreClosedError  # callers catch it from here

log = logging.getLogger(__name__)

_NON_DIGITS = re.compile(r"\D+")


_CALL_COLUMNS = (
    "pbx_id",
    "call_id",
    "direction",
    "caller_number",
    "called_number",
    "agent_extension",
    "start_time",
    "start_epoch",
    "answer_time",
    "end_time",
    "ring_seconds",
    "talk_seconds",
    "disposition",
    "terminating_party",
    "recording_file",
    "recording_url",
    "queue",
    "ended",
    "remote_number",
    "remote_digits",
    "call_json",
    "updated_at",
)
# A replayed, older snapshot must not reopen a call that already ended.
_UPSERT_CALL = (
    f"INSERT INTO calls({', '.join(_CALL_COLUMNS)})"
    f" VALUES ({', '.join('?' for _ in _CALL_COLUMNS)})"
    " ON CONFLICT(pbx_id, call_id) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in _CALL_COLUMNS[2:])
    + " WHERE calls.ended = 0 OR excluded.ended = 1"
)
# Duplicates by (pbx_id, call_id, seq) are ignored: replaying events after a crash is a no-op.
_INSERT_EVENT = (
    "INSERT OR IGNORE INTO call_events(pbx_id, call_id, seq, kind, at, event_json)"
    " VALUES (?, ?, ?, ?, ?, ?)"
)
_INSERT_OUTBOX = (
    "INSERT OR IGNORE INTO outbox(event_row, adapter, pbx_id, call_id, seq, idempotency_key,"
    " state, attempts, next_attempt_at, created_at)"
    " SELECT id, ?, pbx_id, call_id, seq, ?, 'pending', 0, ?, ? FROM call_events"
    " WHERE pbx_id = ? AND call_id = ? AND seq = ?"
)


def digits_only(number: str | None) -> str | None:
    """The digits of a phone number ('+7 (903) 123-45-67' -> '79031234567'), None if none."""
    if not number:
        return None
    digits = _NON_DIGITS.sub("", number)
    return digits or None


def iso_utc(moment: datetime | None) -> str | None:
    """ISO 8601 in UTC with its offset; a naive datetime is taken to be UTC already."""
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat()


def remote_number_of(call: Call) -> str | None:
    """The outside party: the caller of an inbound call, the dialled number of an outbound one.

    Internal calls have no outside party, so they never match a customer's call history.
    """
    if call.direction is Direction.INBOUND:
        return call.caller_number
    if call.direction is Direction.OUTBOUND:
        return call.called_number
    return None


def _call_params(call: Call, now: float) -> Params:
    remote = remote_number_of(call)
    return (
        call.pbx_id,
        call.call_id,
        call.direction.value,
        call.caller_number,
        call.called_number,
        call.agent_extension,
        iso_utc(call.start_time),
        call.start_time.timestamp() if call.start_time else None,
        iso_utc(call.answer_time),
        iso_utc(call.end_time),
        call.ring_seconds,
        call.talk_seconds,
        call.disposition.value if call.disposition else None,
        call.terminating_party.value if call.terminating_party else None,
        call.recording_file,
        call.recording_url,
        call.queue,
        1 if call.ended else 0,
        remote,
        digits_only(remote),
        call.model_dump_json(),
        now,
    )


@dataclass(frozen=True, slots=True)
class Note:
    id: int
    pbx_id: str
    call_id: str | None
    number: str | None
    extension: str | None
    status: str | None
    comments: str | None
    created_at: float


@dataclass(frozen=True, slots=True)
class Contact:
    number_digits: str
    number: str
    name: str | None
    company: str | None
    owner_extension: str | None
    url: str | None
    updated_at: float


@dataclass(frozen=True, slots=True)
class OriginateRecord:
    id: str
    agent_extension: str | None
    number: str | None
    state: str
    reason: str | None
    created_at: float
    updated_at: float
    request: dict[str, Any] | None
    # Set when another instance took the request for this PBX (click-to-call relay).
    target_pbx_id: str | None = None


ORIGINATE_COLUMNS = (
    "id, agent_extension, number, state, reason, created_at, updated_at, request_json,"
    " target_pbx_id"
)
# Portable SQL (SQLite 3.35+ and PostgreSQL): `?` placeholders, turned into `$n` for PostgreSQL.
EXPIRE_QUEUED_SQL = (
    "UPDATE originates SET state = 'failed',"
    " reason = 'the instance of the PBX owning the extension did not take it in time',"
    " updated_at = ? WHERE target_pbx_id = ? AND state = 'queued' AND created_at < ?"
)


# The outer `state = 'queued'` makes the claim single-winner even when two instances of the
# same PBX (a failover pair) poll at once.
def claim_queued_sql(row_lock: str = "") -> str:
    return (
        "UPDATE originates SET state = 'pending', updated_at = ? WHERE state = 'queued' AND id IN"
        " (SELECT id FROM originates WHERE target_pbx_id = ? AND state = 'queued'"
        f" ORDER BY created_at LIMIT ?{row_lock}) RETURNING {ORIGINATE_COLUMNS}"
    )


_CLAIM_QUEUED_SQL = claim_queued_sql()


def originate_row(row: tuple[Any, ...]) -> OriginateRecord:
    request = json.loads(row[7]) if row[7] else None
    return OriginateRecord(*row[:7], request=request, target_pbx_id=row[8])


class Store(StoreWriter[aiosqlite.Connection]):
    """Open with `await Store.open(settings)`; close with `await store.close()`."""

    def __init__(
        self,
        settings: StoreSettings,
        writer: aiosqlite.Connection,
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
        writer = await _connect(path, settings)
        try:
            mode = await _scalar(writer, "PRAGMA journal_mode=WAL")
            if str(mode).lower() != "wal":
                raise RuntimeError(f"{path}: SQLite refused WAL mode (journal_mode={mode})")
            await writer.execute("PRAGMA foreign_keys=ON")
            await migrate(writer)
            reader = await _connect(path, settings)
        except BaseException:
            await writer.close()
            raise
        # The reader must never write: a stray write there would bypass group commit.
        await reader.execute("PRAGMA query_only=ON")
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

    # -- writes -------------------------------------------------------------------------------

    async def record(
        self, call: Call, events: Sequence[CallEvent], adapters: Sequence[Adapter]
    ) -> None:
        """Store the call snapshot, its new events and one outbox row per wanted delivery.

        Returns once all of it is committed. Idempotent: an event already stored (same pbx_id,
        call_id, seq) and a delivery already queued (same idempotency key) are left alone.
        """
        await self.submit_record(call, events, adapters)

    def submit_record(
        self, call: Call, events: Sequence[CallEvent], adapters: Sequence[Adapter]
    ) -> asyncio.Future[None]:
        """Queue a record() now and return the future of its commit.

        For a single consumer (the AMI event loop) that must keep its order without waiting
        one commit per event: writes are committed in the order they were submitted, so it can
        submit, carry on, and await the futures (e.g. before acknowledging upstream).
        """
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
            event_id = event.event_id
            for adapter in adapters:
                if adapter.wants(event):
                    adds_outbox = True
                    statements.append(
                        (
                            PHASE_OUTBOX,
                            _INSERT_OUTBOX,
                            (
                                adapter.name,
                                f"{adapter.name}:{event_id}",
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
        """Store a call snapshot without events (cheaper than record() when nothing is sent)."""
        params = _call_params(call, self._now())
        await self._submit(
            StatementsWrite([(PHASE_CALLS, _UPSERT_CALL, params)], self._future(), 1)
        )

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

        async def requeue(conn: aiosqlite.Connection) -> int:
            return (await conn.execute(sql, params)).rowcount

        # adds_outbox_rows: the running outbox in this process (if any) looks at once.
        return await self.write(requeue, adds_outbox_rows=True)

    async def purge_deliveries(self, state: str, cutoff: float) -> int:
        """`pbxcrm outbox purge`: delete `state` (done or dead) rows finished before `cutoff`."""
        if state not in ("done", "dead"):
            raise ValueError(f"{state} deliveries cannot be purged (only done or dead)")

        async def delete(conn: aiosqlite.Connection) -> int:
            cursor = await conn.execute(
                "DELETE FROM outbox WHERE state = ?"
                " AND COALESCE(delivered_at, next_attempt_at) < ?",
                (state, cutoff),
            )
            return cursor.rowcount

        return await self.write(delete)

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
        """Keep an agent's status + comments (screen pop, 3CX DBN); returns the note's id."""
        params = (pbx_id, call_id, number, extension, status, comments, self._now())

        async def insert(conn: aiosqlite.Connection) -> int:
            cursor = await conn.execute(
                "INSERT INTO notes(pbx_id, call_id, number, extension, status, comments,"
                " created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                params,
            )
            return int(cursor.lastrowid or 0)

        return await self.write(insert)

    async def put_kv(self, key: str, value: str | None) -> None:
        await self.execute_write(
            [("INSERT OR REPLACE INTO kv(key, value) VALUES (?, ?)", (key, value))]
        )

    async def delete_kv(self, key: str) -> None:
        await self.execute_write([("DELETE FROM kv WHERE key = ?", (key,))])

    async def upsert_contact(
        self,
        number: str,
        *,
        name: str | None = None,
        company: str | None = None,
        owner_extension: str | None = None,
        url: str | None = None,
    ) -> str:
        """Add or replace a local contact keyed by the number's digits; returns those digits."""
        digits = digits_only(number)
        if digits is None:
            raise ValueError(f"contact number {number!r} has no digits")
        await self.execute_write(
            [
                (
                    "INSERT OR REPLACE INTO contacts(number_digits, number, name, company,"
                    " owner_extension, url, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (digits, number, name, company, owner_extension, url, self._now()),
                )
            ]
        )
        return digits

    async def delete_contact(self, number: str) -> None:
        digits = digits_only(number)
        if digits is not None:
            await self.execute_write([("DELETE FROM contacts WHERE number_digits = ?", (digits,))])

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
        """Record a new click-to-call request; a second request with the same id is an error.

        `target_pbx_id` (with state "queued") leaves it for the instance of that PBX to send.
        """
        now = self._now()
        request_json = json.dumps(request, ensure_ascii=False) if request is not None else None
        await self.execute_write(
            [
                (
                    "INSERT INTO originates(id, agent_extension, number, state, reason,"
                    " created_at, updated_at, request_json, target_pbx_id)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
        """Take requests queued for `pbx_id` (now "pending"); each is returned to one caller only.

        Queued longer than `max_age_seconds` (the PBX's instance was down) they fail instead:
        ringing an agent minutes after the click would surprise everyone.
        """
        now = self._now()

        async def claim(conn: aiosqlite.Connection) -> list[OriginateRecord]:
            await conn.execute(EXPIRE_QUEUED_SQL, (now, pbx_id, now - max_age_seconds))
            cursor = await conn.execute(_CLAIM_QUEUED_SQL, (now, pbx_id, limit))
            rows = await cursor.fetchall()
            return [originate_row(tuple(row)) for row in rows]

        return await self.write(claim)

    async def set_pbx_extensions(self, pbx_id: str, ranges: Sequence[str]) -> None:
        """Replace the extension ranges `pbx_id` owns (from its `[pbx] extensions`)."""
        await self.execute_write(
            [("DELETE FROM pbx_extensions WHERE pbx_id = ?", (pbx_id,))]
            + [
                ("INSERT INTO pbx_extensions(pbx_id, extension_range) VALUES (?, ?)", (pbx_id, r))
                for r in dict.fromkeys(ranges)
            ]
        )

    async def update_originate(
        self, originate_id: str, *, state: str, reason: str | None = None
    ) -> bool:
        """Move a click-to-call request to a new state; False if no such request."""
        params = (state, reason, self._now(), originate_id)

        async def update(conn: aiosqlite.Connection) -> bool:
            cursor = await conn.execute(
                "UPDATE originates SET state = ?, reason = ?, updated_at = ? WHERE id = ?",
                params,
            )
            return cursor.rowcount > 0

        return await self.write(update)

    # -- reads --------------------------------------------------------------------------------

    async def get_call(self, pbx_id: str, call_id: str) -> Call | None:
        rows = await self._reader.execute_fetchall(
            "SELECT call_json FROM calls WHERE pbx_id = ? AND call_id = ?", (pbx_id, call_id)
        )
        for (call_json,) in rows:
            return Call.model_validate_json(call_json)
        return None

    async def open_calls(self, pbx_id: str) -> list[Call]:
        rows = await self._reader.execute_fetchall(
            "SELECT call_json FROM calls WHERE pbx_id = ? AND ended = 0 ORDER BY start_epoch",
            (pbx_id,),
        )
        return [Call.model_validate_json(call_json) for (call_json,) in rows]

    async def last_seq(self, pbx_id: str, call_id: str) -> int:
        """The highest step number stored for the call, 0 for none."""
        rows = await self._reader.execute_fetchall(
            "SELECT coalesce(max(seq), 0) FROM call_events WHERE pbx_id = ? AND call_id = ?",
            (pbx_id, call_id),
        )
        return int(next(iter(rows))[0])

    async def events_for(self, pbx_id: str, call_id: str) -> list[CallEvent]:
        rows = await self._reader.execute_fetchall(
            "SELECT event_json FROM call_events WHERE pbx_id = ? AND call_id = ? ORDER BY seq",
            (pbx_id, call_id),
        )
        return [CallEvent.model_validate_json(event_json) for (event_json,) in rows]

    async def notes_for(self, pbx_id: str, call_id: str) -> list[Note]:
        rows = await self._reader.execute_fetchall(
            "SELECT id, pbx_id, call_id, number, extension, status, comments, created_at"
            " FROM notes WHERE pbx_id = ? AND call_id = ? ORDER BY id",
            (pbx_id, call_id),
        )
        return [Note(*row) for row in rows]

    async def get_kv(self, key: str) -> str | None:
        rows = await self._reader.execute_fetchall("SELECT value FROM kv WHERE key = ?", (key,))
        for (value,) in rows:
            return value  # type: ignore[no-any-return]
        return None

    async def get_contact(self, number: str) -> Contact | None:
        """The contact whose digits equal the digits of `number` (any formatting)."""
        digits = digits_only(number)
        if digits is None:
            return None
        rows = await self._reader.execute_fetchall(
            "SELECT number_digits, number, name, company, owner_extension, url, updated_at"
            " FROM contacts WHERE number_digits = ?",
            (digits,),
        )
        for row in rows:
            return Contact(*row)
        return None

    async def get_originate(self, originate_id: str) -> OriginateRecord | None:
        rows = await self._reader.execute_fetchall(
            f"SELECT {ORIGINATE_COLUMNS} FROM originates WHERE id = ?", (originate_id,)
        )
        for row in rows:
            return originate_row(tuple(row))
        return None

    # -- the writer ---------------------------------------------------------------------------

    async def _transaction(self, batch: list[Write]) -> list[Any]:
        conn = self._writer
        # IMMEDIATE: take the write lock now, so another process (the admin CLI) makes us
        # wait at BEGIN (busy_timeout) instead of failing half-way through.
        await conn.execute("BEGIN IMMEDIATE")
        try:
            results = await self._run_batch(batch)
            await conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                await conn.execute("ROLLBACK")
            raise
        return results

    async def _execute(self, sql: str, params: Params) -> None:
        await self._writer.execute(sql, params)


async def _connect(path: Path, settings: StoreSettings) -> aiosqlite.Connection:
    # isolation_level=None: no implicit transactions; the writer issues BEGIN/COMMIT itself.
    conn = await aiosqlite.connect(
        path, isolation_level=None, timeout=settings.busy_timeout_ms / 1000.0
    )
    await conn.execute(f"PRAGMA busy_timeout={int(settings.busy_timeout_ms)}")
    # Validated by the settings model to be NORMAL or FULL, so formatting it in is safe.
    await conn.execute(f"PRAGMA synchronous={settings.synchronous}")
    return conn


async def _scalar(conn: aiosqlite.Connection, sql: str, params: Params = ()) -> Any:
    async with conn.execute(sql, params) as cursor:
        row = await cursor.fetchone()
    return row[0] if row else None
