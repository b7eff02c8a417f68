"""What the rest of pbxcrm needs of a store, as typed interfaces: `CallStore` for the
application, and one per way of handing out deliveries for the outbox.

A store kept by one pbxcrm process (SQLite) hands out due rows read on the outbox's own reader
connection, and the outbox remembers in memory which it holds. A store shared by several
instances (PostgreSQL) hands them out itself, each under a lease in the database. Each backend
keeps the SQL of its own way beside its other SQL.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    import asyncio

    from crm.dialects.base import Adapter
    from crm.model import Call, CallEvent
    from crm.store.rows import Contact, Note, OriginateRecord


class QmarkReader(Protocol):
    """A read connection that takes `?` placeholders (aiosqlite's, or the PostgreSQL PgReader)."""

    async def execute_fetchall(self, sql: str, params: Sequence[Any] = ..., /) -> Iterable[Any]: ...


class OutboxReader(QmarkReader, Protocol):
    """A read connection of its own, which its opener closes."""

    async def close(self) -> None: ...


class DeliveryStore(Protocol):
    """What every backend gives the outbox."""

    def add_listener(self, callback: Callable[[], None]) -> None: ...

    async def open_reader(self) -> OutboxReader: ...


@runtime_checkable
class LocalDeliveries(DeliveryStore, Protocol):
    """One process owns the store: due rows are read, claims live in the outbox's memory."""

    async def due_deliveries(
        self,
        reader: OutboxReader,
        adapters: Sequence[str],
        held: Sequence[int],
        limit: int,
        now: float,
    ) -> list[tuple[Any, ...]]: ...

    async def next_due_after(self, reader: OutboxReader, now: float) -> float | None: ...

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
    ) -> None: ...


@runtime_checkable
class SharedDeliveries(DeliveryStore, Protocol):
    """Several instances share the store: rows are claimed in it under a lease per owner."""

    async def claim_deliveries(
        self, adapters: Sequence[str], limit: int, *, owner: str, lease_seconds: float
    ) -> list[Any]: ...

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
    ) -> bool: ...

    async def renew_leases(
        self, row_ids: Sequence[int], *, owner: str, lease_seconds: float
    ) -> Any: ...

    async def release_deliveries(self, row_ids: Sequence[int], *, owner: str) -> None: ...

    async def next_due(self) -> float | None: ...


class CallStore(DeliveryStore, Protocol):
    """What the application uses of a store, whichever backend holds it (SQLite, PostgreSQL).

    `crm.store.factory.open_store` returns one. A new backend implements these, plus one of
    LocalDeliveries or SharedDeliveries for the outbox.
    """

    @property
    def reader(self) -> QmarkReader:
        """The shared read connection; takes `?` placeholders on every backend."""
        ...

    def describe(self) -> str: ...

    def now(self) -> float: ...

    async def close(self) -> None: ...

    async def execute_write(self, statements: Sequence[tuple[str, tuple[Any, ...]]]) -> None: ...

    # -- calls and their events
    def submit_record(
        self, call: Call, events: Sequence[CallEvent], adapters: Sequence[Adapter]
    ) -> asyncio.Future[None]: ...

    async def get_call(self, pbx_id: str, call_id: str) -> Call | None: ...

    async def open_calls(self, pbx_id: str) -> list[Call]: ...

    async def last_seq(self, pbx_id: str, call_id: str) -> int: ...

    async def events_for(self, pbx_id: str, call_id: str) -> list[CallEvent]: ...

    # -- the outbox, for `pbxcrm outbox retry|purge`
    async def requeue_dead(self, ids: Sequence[int] | None = None) -> int: ...

    async def purge_deliveries(self, state: str, cutoff: float) -> int: ...

    # -- notes, kv, contacts
    async def save_note(
        self,
        *,
        pbx_id: str,
        number: str | None,
        extension: str | None,
        status: str | None,
        comments: str | None,
        call_id: str | None = None,
    ) -> int: ...

    async def notes_for(self, pbx_id: str, call_id: str) -> list[Note]: ...

    async def get_kv(self, key: str) -> str | None: ...

    async def put_kv(self, key: str, value: str | None) -> None: ...

    async def get_contact(self, number: str) -> Contact | None: ...

    async def upsert_contact(
        self,
        number: str,
        *,
        name: str | None = None,
        company: str | None = None,
        owner_extension: str | None = None,
        url: str | None = None,
    ) -> str: ...

    # -- click-to-call requests and which PBX owns an extension
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
    ) -> None: ...

    async def update_originate(
        self,
        originate_id: str,
        *,
        state: str,
        reason: str | None = None,
        request: dict[str, Any] | None = None,
    ) -> bool: ...

    async def get_originate(self, originate_id: str) -> OriginateRecord | None: ...

    async def claim_originates(
        self, pbx_id: str, *, max_age_seconds: float, limit: int = 20
    ) -> list[OriginateRecord]: ...

    async def fail_stale_originates(self, older_than: float, reason: str) -> int: ...

    async def set_pbx_extensions(self, pbx_id: str, ranges: Sequence[str]) -> None: ...
