"""The write path both stores share: one queue, one writer task, group commit, commit listeners.

Every write is queued; the writer gathers what is queued within `commit_window_ms` (up to
`max_batch` rows) into one transaction and only then wakes the callers, so an acknowledged write
is a committed write, and writes commit in the order they were queued.

A backend subclasses StoreWriter and supplies only what differs: its transaction (which runs the
batch with `_run_batch`), how one statement runs on its writer connection, how it closes its
connections and how it names itself in errors.
"""

from __future__ import annotations

import asyncio
import logging
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from itertools import groupby
from typing import Any, Generic, Protocol, TypeVar

from crm.metrics import store_commit_ops_total, store_commits_total
from crm.shutdown import cancel_and_wait, finish_within
from crm.store.group_commit import commit_batch, run_group_commit
from crm.store.settings import StoreSettings

log = logging.getLogger("crm.store.sqlite")

T = TypeVar("T")
Params = tuple[Any, ...]


class StoreClosedError(RuntimeError):
    """A write was attempted after the store's `close()`."""


# Within one batch, statements run grouped by phase so that thousands of record() calls become
# three executemany() calls (calls, events, outbox rows) instead of interleaved single rows.
# Outbox rows select their event row, so they must follow the events; every other write keeps
# its queue order (phase ORDERED), so e.g. two put_kv() of one key still land in order.
PHASE_CALLS = 0
PHASE_EVENTS = 1
PHASE_OUTBOX = 2
PHASE_ORDERED = 3

Statement = tuple[int, str, Params]  # (phase, sql in the backend's placeholder style, params)


class WriterConnection(Protocol):
    async def executemany(self, sql: str, params: Iterable[Params], /) -> Any: ...


C = TypeVar("C", bound=WriterConnection)


@dataclass(slots=True)
class StatementsWrite:
    """A write made only of statements; the writer may merge it with its neighbours."""

    statements: list[Statement]
    future: asyncio.Future[Any]
    weight: int
    adds_outbox_rows: bool = False


@dataclass(slots=True)
class FunctionWrite(Generic[C]):
    """A write that needs a result (row id, row count): runs alone, in the batch's transaction."""

    fn: Callable[[C], Awaitable[Any]]
    future: asyncio.Future[Any]
    weight: int = 1
    adds_outbox_rows: bool = False


Write = StatementsWrite | FunctionWrite[Any]


def grouped(statements: list[Statement]) -> list[tuple[str, list[Params]]]:
    """The statements by phase (queue order kept within one), each run of one SQL together."""
    ordered = sorted(statements, key=lambda item: item[0])  # stable
    runs = groupby(ordered, key=lambda item: item[1])
    return [(sql, [item[2] for item in group]) for sql, group in runs]


class StoreWriter(ABC, Generic[C]):
    """The queue and writer task of a store whose writer connection is a `C`."""

    def __init__(
        self,
        settings: StoreSettings,
        writer: C,
        now: Callable[[], float],
        *,
        task_name: str,
    ) -> None:
        self.settings = settings
        self._writer = writer
        self._now = now
        self._queue: asyncio.Queue[Write | None] = asyncio.Queue()
        self._closed = False
        self._listeners: list[Callable[[], None]] = []
        self.commits = 0  # transactions committed; tests use it to prove batching
        self._writer_task: asyncio.Task[None] = asyncio.create_task(
            self._writer_loop(), name=task_name
        )

    # -- what a backend supplies --------------------------------------------------------------

    @abstractmethod
    def describe(self) -> str:
        """Where the data lives, for log and error lines (never with a password)."""

    @abstractmethod
    async def _transaction(self, batch: list[Write]) -> list[Any]:
        """Run `_run_batch(batch)` in one transaction of the writer connection."""

    @abstractmethod
    async def _execute(self, sql: str, params: Params) -> None:
        """Run one statement on the writer connection."""

    @abstractmethod
    async def _close_connections(self) -> None:
        """Close every connection; the writer task has stopped by then."""

    def _native_sql(self, sql: str) -> str:
        """`sql` written with `?` placeholders, in this backend's placeholder style."""
        return sql

    # -- life cycle ---------------------------------------------------------------------------

    async def close(self) -> None:
        """Commit everything queued so far, then close the connections."""
        if self._closed:
            return
        self._closed = True
        await self._queue.put(None)
        try:
            await finish_within(asyncio.shield(self._writer_task), "the store's last commit")
            if not self._writer_task.done():
                await cancel_and_wait([self._writer_task], "the store writer")
        finally:
            await finish_within(self._close_connections(), "closing the store's connections")

    def now(self) -> float:
        """The store's clock (epoch seconds), injectable for tests."""
        return self._now()

    def add_listener(self, callback: Callable[[], None]) -> None:
        """Call `callback()` after every commit that added outbox rows (the outbox's wake-up)."""
        self._listeners.append(callback)

    def _wake_listeners(self) -> None:
        for listener in self._listeners:
            try:
                listener()
            except Exception:
                log.exception("store: commit listener failed")

    # -- queueing writes ----------------------------------------------------------------------

    async def execute_write(self, statements: Sequence[tuple[str, Params]]) -> None:
        """Run parameterised write statements in order, inside the next group commit.

        `?` placeholders work on every backend (PostgreSQL also takes its own `$n`).
        """
        ops = [(PHASE_ORDERED, self._native_sql(sql), tuple(params)) for sql, params in statements]
        await self._submit(StatementsWrite(ops, self._future(), max(1, len(ops))))

    async def write(
        self,
        fn: Callable[[C], Awaitable[T]],
        *,
        adds_outbox_rows: bool = False,
    ) -> T:
        """Run `await fn(conn)` inside the writer's transaction; returns its result once committed.

        `conn` is the backend's own connection (aiosqlite or asyncpg). `fn` must only execute
        statements (no BEGIN/COMMIT) and must not wait on anything else: every other write
        waits behind it.
        """
        return await self._submit(FunctionWrite(fn, self._future(), 1, adds_outbox_rows))

    def _future(self) -> asyncio.Future[Any]:
        return asyncio.get_running_loop().create_future()

    def _enqueue(self, op: Write) -> asyncio.Future[Any]:
        if self._closed:
            raise StoreClosedError(f"store {self.describe()} is closed")
        if self._writer_task.done():
            raise StoreClosedError(f"store {self.describe()}: the writer task has stopped")
        self._queue.put_nowait(op)
        return op.future

    async def _submit(self, op: Write) -> Any:
        # A caller that gives up (timeout, cancel) cancels only its future: the write stays
        # queued and is committed anyway, and the writer skips futures already done.
        return await self._enqueue(op)

    # -- the writer task ----------------------------------------------------------------------

    async def _writer_loop(self) -> None:
        await run_group_commit(
            self._queue,
            self._commit,
            window_seconds=self.settings.commit_window_ms / 1000.0,
            max_batch=self.settings.max_batch,
        )

    async def _commit(self, batch: list[Write]) -> None:
        await commit_batch(batch, self._transaction, self._committed)

    def _committed(self, batch: list[Write]) -> None:
        self.commits += 1
        store_commits_total.inc()
        store_commit_ops_total.inc(len(batch))
        if any(op.adds_outbox_rows for op in batch):
            self._wake_listeners()

    async def _run_batch(self, batch: list[Write]) -> list[Any]:
        """Each write's result, in batch order; the caller holds the transaction."""
        results: list[Any] = []
        pending: list[Statement] = []
        for op in batch:
            if isinstance(op, StatementsWrite):
                pending.extend(op.statements)
                results.append(None)
            else:
                await self._run_statements(pending)
                pending = []
                results.append(await op.fn(self._writer))
        await self._run_statements(pending)
        return results

    async def _run_statements(self, statements: list[Statement]) -> None:
        for sql, params in grouped(statements):
            if len(params) == 1:
                await self._execute(sql, params[0])
            else:
                await self._execute_many(sql, params)

    async def _execute_many(self, sql: str, rows: list[Params]) -> None:
        """Run one statement for each of `rows`, in order, on the writer connection."""
        await self._writer.executemany(sql, rows)
