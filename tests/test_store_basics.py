"""What only the SQLite store does: WAL on a file, a read-only reader, acknowledged writes that
another connection already sees, the call row's history columns.

Everything both backends promise (recording once, group commit, failures, close, the small
tables) is in tests/test_store_pg_contract.py, which runs against SQLite too.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator

import aiohttp
import pytest

from crm.model import Direction
from crm.store.settings import StoreSettings
from crm.store.sqlite import Store
from tests.test_store_support import call_with_events, make_adapter, make_call


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def store(tmp_path) -> AsyncIterator[Store]:
    store = await Store.open(StoreSettings(path=str(tmp_path / "db" / "pbxcrm.sqlite3")))
    yield store
    await store.close()


def raw(store: Store, sql: str, params: tuple = ()) -> list[tuple]:
    """Read with a fresh stdlib connection: proves what is on disk, not in some cache."""
    conn = sqlite3.connect(store.path)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


async def test_open_creates_the_parent_directory_and_uses_wal(store: Store) -> None:
    assert store.path.parent.is_dir()
    assert raw(store, "PRAGMA journal_mode") == [("wal",)]


async def test_record_returns_only_after_its_rows_are_committed(
    store: Store, http: aiohttp.ClientSession
) -> None:
    adapter = make_adapter(http, "http://127.0.0.1:9/x")
    for i in range(20):
        call, events = call_with_events(f"acked{i}", 1)
        await store.record(call, events, [adapter])
        # Another connection (another process, for all SQLite knows) already sees them.
        assert raw(store, "SELECT COUNT(*) FROM outbox WHERE call_id = ?", (f"acked{i}",)) == [(1,)]


async def test_call_rows_carry_the_outside_number_and_its_digits_for_history(
    store: Store,
) -> None:
    await store.upsert_call(make_call("in", caller_number="+7 (903) 123-45-67"))
    await store.upsert_call(
        make_call(
            "out", direction=Direction.OUTBOUND, caller_number="7181", called_number="89161234567"
        )
    )
    await store.upsert_call(
        make_call("int", direction=Direction.INTERNAL, caller_number="7181", called_number="517")
    )
    rows = raw(
        store,
        "SELECT call_id, remote_number, remote_digits, start_time, start_epoch FROM calls"
        " ORDER BY call_id",
    )
    assert rows == [
        ("in", "+7 (903) 123-45-67", "79031234567", "2026-11-12T09:30:00+00:00", 1794475800.0),
        ("int", None, None, "2026-11-12T09:30:00+00:00", 1794475800.0),
        ("out", "89161234567", "89161234567", "2026-11-12T09:30:00+00:00", 1794475800.0),
    ]


async def test_reader_connection_refuses_writes(store: Store) -> None:
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        await store.reader.execute("DELETE FROM calls")
