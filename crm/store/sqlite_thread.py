"""The SQLite writer connection, owned by one thread, handed whole pieces of work.

aiosqlite hands its thread one statement at a time: a transaction of the call row, the step and
its outbox row was five hops (BEGIN, three statements, COMMIT), each waiting for the event loop
to take the answer and for the GIL while the loop works; that was most of the 2.5 ms between a
step and its commit. Here a coroutine hands the thread a function of the connection, so a group
commit is one hop however many statements it holds.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


class SqliteThread:
    """Open with `await SqliteThread.open(...)`; every `run(fn)` calls `fn(connection)` on the
    connection's own thread, one at a time, in the order they were asked for."""

    def __init__(self, conn: sqlite3.Connection, executor: ThreadPoolExecutor) -> None:
        self._conn = conn
        self._executor = executor
        self._closed = False

    @classmethod
    async def open(
        cls, path: Path, *, timeout_seconds: float, pragmas: Iterable[str]
    ) -> SqliteThread:
        # One worker: the connection is made, used and closed on that thread only.
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pbxcrm-sqlite-writer")
        statements = list(pragmas)

        def connect() -> sqlite3.Connection:
            # isolation_level=None: no implicit transactions; the store issues BEGIN/COMMIT.
            conn = sqlite3.connect(path, isolation_level=None, timeout=timeout_seconds)
            try:
                for statement in statements:
                    conn.execute(statement)
            except BaseException:
                conn.close()
                raise
            return conn

        try:
            conn = await asyncio.get_running_loop().run_in_executor(executor, connect)
        except BaseException:
            executor.shutdown(wait=False)
            raise
        return cls(conn, executor)

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._closed:
            raise ValueError("the SQLite writer connection is closed")
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, self._conn)

    async def executemany(self, sql: str, params: Iterable[Any], /) -> None:
        rows = list(params)
        await self.run(lambda conn: conn.executemany(sql, rows))

    async def close(self) -> None:
        if self._closed:
            return
        try:
            await self.run(sqlite3.Connection.close)
        finally:
            self._closed = True
            self._executor.shutdown(wait=False)
