"""A group commit writes its calls, events and outbox rows as multi-row statements; what lands
must be what SQLite's own row-by-row execution of the one-row statements gives.

The reference is a second store made to run every group with executemany() of the one-row SQL
(SQLite applying each row in turn), fed the same records; both files are then read with the
standard library and compared row for row, row ids included (they prove the order).
"""

from __future__ import annotations

import asyncio
import math
import sqlite3
from datetime import timedelta
from pathlib import Path

import aiohttp
import pytest

from crm.model import Call, CallEvent, Direction, EventKind, Party
from crm.store.settings import StoreSettings
from crm.store.sqlite import Store
from tests.test_store_support import T0, make_adapter, make_call


def _records() -> list[tuple[Call, list[CallEvent]]]:
    """150 records in one batch: more than two statements' worth of rows, the same call
    several times (its snapshot replaced, a stale one after its end refused), the same step
    twice (ignored), odd text and floats that must survive exactly."""
    records: list[tuple[Call, list[CallEvent]]] = []
    for i in range(150):
        call_id = f"c{i % 60}"
        ended = i % 60 == 7 and i >= 60  # c7's second snapshot ends it ...
        stale = i % 60 == 7 and i >= 120  # ... and its third, not ended, must not reopen it
        call = make_call(
            call_id,
            direction=[Direction.INBOUND, Direction.OUTBOUND, Direction.INTERNAL][i % 3],
            caller_name=f'O\'Brien "{i}" \\ \n Ж ☎' if i % 5 == 0 else None,
            caller_number=None if i % 11 == 0 else f"+7903{i:07d}",
            agent_extension=str(100 + i % 9),
            ring_seconds=i / 3,
            talk_seconds=math.pi * i,
            answer_time=T0 + timedelta(seconds=i / 7),
            ended=ended and not stale,
            terminating_party=Party.CALLER if ended and not stale else None,
        )
        seq = 1 + i // 60
        kinds = [EventKind.RINGING, EventKind.ANSWERED, EventKind.HANGUP]
        events = [
            CallEvent(
                call_id=call_id, seq=seq, kind=kinds[seq - 1], at=T0, call=call, extension="7181"
            )
        ]
        if i % 13 == 0:
            events.append(events[0])  # the same step again: INSERT OR IGNORE keeps the first
        records.append((call, events))
    return records


def _dump(path: Path) -> dict[str, list[tuple]]:
    conn = sqlite3.connect(path)
    try:
        return {
            table: conn.execute(f"SELECT * FROM {table} ORDER BY rowid").fetchall()
            for table in ("calls", "call_events", "outbox")
        }
    finally:
        conn.close()


async def _write_in_one_commit(path: Path, http: aiohttp.ClientSession, *, row_by_row: bool) -> int:
    store = await Store.open(StoreSettings(path=str(path)), now=lambda: 1_733_300_000.123456)
    if row_by_row:
        store._multi_row_forms = {}  # every group through executemany() of the one-row SQL
    adapters = [
        make_adapter(http, "http://127.0.0.1:9/a", name="a"),
        make_adapter(http, "http://127.0.0.1:9/b", name="b"),
    ]
    try:
        commits = store.commits
        futures = [store.submit_record(call, events, adapters) for call, events in _records()]
        await asyncio.gather(*futures)
        return store.commits - commits
    finally:
        await store.close()


@pytest.fixture
async def http() -> aiohttp.ClientSession:
    async with aiohttp.ClientSession() as session:
        yield session


async def test_multi_row_statements_store_what_row_by_row_execution_stores(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    commits = await _write_in_one_commit(tmp_path / "multi.sqlite3", http, row_by_row=False)
    assert commits == 1  # one batch, so the multi-row path really ran (150 calls rows > 64)
    await _write_in_one_commit(tmp_path / "reference.sqlite3", http, row_by_row=True)

    got, want = _dump(tmp_path / "multi.sqlite3"), _dump(tmp_path / "reference.sqlite3")
    assert len(want["calls"]) == 60 and len(want["call_events"]) == 150
    assert len(want["outbox"]) == 300
    for table in want:
        assert got[table] == want[table], table
    ended = [row for row in got["calls"] if row[1] == "c7"]
    assert ended and ended[0][17] == 1  # CALL_COLUMNS' `ended`: the stale snapshot was refused


async def test_any_batch_size_uses_a_few_statement_forms_and_keeps_every_row_in_order(
    tmp_path: Path,
) -> None:
    """sqlite3 keeps each distinct statement prepared (128 of them): one form per remainder
    size held ~8 MiB of statements with hundreds of parameters each."""
    store = await Store.open(StoreSettings(path=str(tmp_path / "forms.sqlite3")))
    try:
        sql = store._insert_event_sql
        forms: set[str] = set()
        for count in range(1, 300):
            rows = [(f"p{i}", f"c{i}", i, "ringing", 0.0, "{}") for i in range(count)]
            plan = store._statements_for(sql, rows)
            forms.update(statement for statement, _ in plan)
            flat = [value for _, chunks in plan for chunk in chunks for value in chunk]
            assert flat == [value for row in rows for value in row], count
        assert len(forms) <= 8  # 64, 32, 16, 8, 4, 2 and 1 rows, and the one-row SQL itself
    finally:
        await store.close()
