"""What the outbox needs of a store, as typed interfaces: one per way of handing out deliveries.

A store kept by one pbxcrm process (SQLite) hands out due rows read on the outbox's own reader
connection, and the outbox remembers in memory which it holds. A store shared by several
instances (PostgreSQL) hands them out itself, each under a lease in the database. Each backend
keeps the SQL of its own way beside its other SQL.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol, runtime_checkable


class OutboxReader(Protocol):
    async def execute_fetchall(self, sql: str, params: Sequence[Any] = ..., /) -> Iterable[Any]:
        ...

    async def close(self) -> None: ...


class DeliveryStore(Protocol):
    """What every backend gives the outbox."""

    def add_listener(self, callback: Callable[[], None]) -> None: ...

    async def open_reader(self) -> Any: ...


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
