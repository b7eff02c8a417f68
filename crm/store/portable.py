"""The store API both backends answer with one piece of code: record(), the small tables (kv,
contacts, notes, click-to-call requests) and the reads.

Its SQL is portable (SQLite 3.35+ and PostgreSQL) and written with `?` placeholders, which a
backend turns into its own (`_native_sql`, `_execute_counting`, `_execute_returning`, its
`reader`). Where the two dialects spell a statement differently ("insert unless it is there",
upserts), the backend supplies it as a class attribute, ready to run.
"""

from __future__ import annotations

import asyncio
import json
from abc import abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar

from crm.dialects.base import Adapter
from crm.model import Call, CallEvent
from crm.store.interface import QmarkReader
from crm.store.rows import (
    CALL_COLUMNS,
    ORIGINATE_COLUMNS,
    Contact,
    Note,
    OriginateRecord,
    call_params,
    digits_only,
    iso_utc,
    originate_row,
)
from crm.store.writer import (
    PHASE_CALLS,
    PHASE_EVENTS,
    PHASE_OUTBOX,
    C,
    Params,
    Statement,
    StatementsWrite,
    StoreWriter,
)

# A replayed, older snapshot must not reopen a call that already ended.
UPSERT_CALL_SQL = (
    f"INSERT INTO calls({', '.join(CALL_COLUMNS)})"
    f" VALUES ({', '.join('?' for _ in CALL_COLUMNS)})"
    " ON CONFLICT(pbx_id, call_id) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in CALL_COLUMNS[2:])
    + " WHERE calls.ended = 0 OR excluded.ended = 1"
)
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


class PortableStore(StoreWriter[C]):
    """The store's public API over any backend that supplies the hooks below."""

    # Statements in the backend's own spelling and placeholders, run as they are. The first
    # three take the values record() gives them: call_params(), an event, an outbox row.
    _upsert_call_sql: ClassVar[str]
    _insert_event_sql: ClassVar[str]
    _insert_outbox_sql: ClassVar[str]
    _put_kv_sql: ClassVar[str]  # (key, value)
    _upsert_contact_sql: ClassVar[str]  # the seven columns of Contact, in order
    _claim_queued_sql: ClassVar[str]  # claim_queued_sql() with the backend's row lock

    @property
    @abstractmethod
    def reader(self) -> QmarkReader:
        """The shared read connection; takes `?` placeholders on every backend."""

    @abstractmethod
    async def _execute_counting(self, conn: C, sql: str, params: Params) -> int:
        """Run `sql` on `conn` inside write(); how many rows it changed."""

    @abstractmethod
    async def _execute_returning(self, conn: C, sql: str, params: Params) -> list[tuple[Any, ...]]:
        """Run `sql` on `conn` inside write(); the rows it returned."""

    # -- calls and their events ---------------------------------------------------------------

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
        statements: list[Statement] = [(PHASE_CALLS, self._upsert_call_sql, call_params(call, now))]
        adds_outbox = False
        for event in events:
            pbx_id = event.call.pbx_id
            statements.append(
                (
                    PHASE_EVENTS,
                    self._insert_event_sql,
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
                            self._insert_outbox_sql,
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
        params = call_params(call, self._now())
        await self._submit(
            StatementsWrite([(PHASE_CALLS, self._upsert_call_sql, params)], self._future(), 1)
        )

    # -- the outbox, for `pbxcrm outbox purge` ------------------------------------------------

    async def purge_deliveries(self, state: str, cutoff: float) -> int:
        """`pbxcrm outbox purge`: delete `state` (done or dead) rows finished before `cutoff`."""
        if state not in ("done", "dead"):
            raise ValueError(f"{state} deliveries cannot be purged (only done or dead)")

        async def delete(conn: C) -> int:
            return await self._execute_counting(
                conn,
                "DELETE FROM outbox WHERE state = ?"
                " AND COALESCE(delivered_at, next_attempt_at) < ?",
                (state, cutoff),
            )

        return await self.write(delete)

    # -- notes, kv, contacts ------------------------------------------------------------------

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

        async def insert(conn: C) -> int:
            rows = await self._execute_returning(
                conn,
                "INSERT INTO notes(pbx_id, call_id, number, extension, status, comments,"
                " created_at) VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",
                params,
            )
            return int(rows[0][0])

        return await self.write(insert)

    async def put_kv(self, key: str, value: str | None) -> None:
        await self.execute_write([(self._put_kv_sql, (key, value))])

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
        params = (digits, number, name, company, owner_extension, url, self._now())
        await self.execute_write([(self._upsert_contact_sql, params)])
        return digits

    async def delete_contact(self, number: str) -> None:
        digits = digits_only(number)
        if digits is not None:
            await self.execute_write([("DELETE FROM contacts WHERE number_digits = ?", (digits,))])

    # -- click-to-call requests ---------------------------------------------------------------

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
        """Take requests queued for `pbx_id` (now "pending"); each is returned to one caller
        only, even across instances.

        Queued longer than `max_age_seconds` (the PBX's instance was down) they fail instead:
        ringing an agent minutes after the click would surprise everyone.
        """
        now = self._now()

        async def claim(conn: C) -> list[OriginateRecord]:
            await self._execute_counting(
                conn, EXPIRE_QUEUED_SQL, (now, pbx_id, now - max_age_seconds)
            )
            rows = await self._execute_returning(conn, self._claim_queued_sql, (now, pbx_id, limit))
            return [originate_row(row) for row in rows]

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
        self,
        originate_id: str,
        *,
        state: str,
        reason: str | None = None,
        request: dict[str, Any] | None = None,
    ) -> bool:
        """Move a click-to-call request to a new state (and replace its request record, which
        carries the call's outcome once it ended); False if no such request."""
        if request is None:
            sql = "UPDATE originates SET state = ?, reason = ?, updated_at = ? WHERE id = ?"
            params: tuple[Any, ...] = (state, reason, self._now(), originate_id)
        else:
            sql = (
                "UPDATE originates SET state = ?, reason = ?, updated_at = ?,"
                " request_json = ? WHERE id = ?"
            )
            params = (
                state,
                reason,
                self._now(),
                json.dumps(request, ensure_ascii=False),
                originate_id,
            )

        async def update(conn: C) -> bool:
            changed = await self._execute_counting(conn, sql, params)
            return changed > 0

        return await self.write(update)

    async def fail_stale_originates(self, older_than: float, reason: str) -> int:
        """Fail click-to-call requests still pending or ringing whose last change is older than
        `older_than`: the instance following them stopped (a live one finishes every request
        within ring_seconds + outcome_grace_seconds). Queued ones expire in claim_originates."""
        params = (reason, self._now(), older_than)

        async def fail(conn: C) -> int:
            return await self._execute_counting(
                conn,
                "UPDATE originates SET state = 'failed', reason = ?, updated_at = ?"
                " WHERE state IN ('pending', 'ringing_agent') AND updated_at < ?",
                params,
            )

        return await self.write(fail)

    # -- reads --------------------------------------------------------------------------------

    async def _fetch(self, sql: str, params: Params) -> list[tuple[Any, ...]]:
        return [tuple(row) for row in await self.reader.execute_fetchall(sql, params)]

    async def get_call(self, pbx_id: str, call_id: str) -> Call | None:
        rows = await self._fetch(
            "SELECT call_json FROM calls WHERE pbx_id = ? AND call_id = ?", (pbx_id, call_id)
        )
        return Call.model_validate_json(rows[0][0]) if rows else None

    async def open_calls(self, pbx_id: str) -> list[Call]:
        rows = await self._fetch(
            "SELECT call_json FROM calls WHERE pbx_id = ? AND ended = 0 ORDER BY start_epoch",
            (pbx_id,),
        )
        return [Call.model_validate_json(call_json) for (call_json,) in rows]

    async def last_seq(self, pbx_id: str, call_id: str) -> int:
        """The highest step number stored for the call, 0 for none."""
        rows = await self._fetch(
            "SELECT coalesce(max(seq), 0) FROM call_events WHERE pbx_id = ? AND call_id = ?",
            (pbx_id, call_id),
        )
        return int(rows[0][0])

    async def events_for(self, pbx_id: str, call_id: str) -> list[CallEvent]:
        rows = await self._fetch(
            "SELECT event_json FROM call_events WHERE pbx_id = ? AND call_id = ? ORDER BY seq",
            (pbx_id, call_id),
        )
        return [CallEvent.model_validate_json(event_json) for (event_json,) in rows]

    async def notes_for(self, pbx_id: str, call_id: str) -> list[Note]:
        rows = await self._fetch(
            "SELECT id, pbx_id, call_id, number, extension, status, comments, created_at"
            " FROM notes WHERE pbx_id = ? AND call_id = ? ORDER BY id",
            (pbx_id, call_id),
        )
        return [Note(*row) for row in rows]

    async def get_kv(self, key: str) -> str | None:
        rows = await self._fetch("SELECT value FROM kv WHERE key = ?", (key,))
        value = rows[0][0] if rows else None
        return value if isinstance(value, str) else None

    async def get_contact(self, number: str) -> Contact | None:
        """The contact whose digits equal the digits of `number` (any formatting)."""
        digits = digits_only(number)
        if digits is None:
            return None
        rows = await self._fetch(
            "SELECT number_digits, number, name, company, owner_extension, url, updated_at"
            " FROM contacts WHERE number_digits = ?",
            (digits,),
        )
        return Contact(*rows[0]) if rows else None

    async def get_originate(self, originate_id: str) -> OriginateRecord | None:
        rows = await self._fetch(
            f"SELECT {ORIGINATE_COLUMNS} FROM originates WHERE id = ?", (originate_id,)
        )
        return originate_row(rows[0]) if rows else None
