"""The store keeps calls, events and outbox rows durably, once, and in one commit per batch."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator

import aiohttp
import pytest

from crm.migrations import available_migrations
from crm.model import Direction, EventKind
from crm.store import Store
from crm.store_settings import StoreSettings
from tests.test_store_support import call_with_events, make_adapter, make_call, make_event


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


async def test_migrations_run_once_and_a_second_open_is_a_no_op(tmp_path) -> None:
    settings = StoreSettings(path=str(tmp_path / "pbxcrm.sqlite3"))
    first = await Store.open(settings)
    await first.put_kv("marker", "kept")
    await first.close()

    second = await Store.open(settings)
    try:
        versions = raw(second, "SELECT version FROM schema_version ORDER BY version")
        assert versions == [(m.version,) for m in available_migrations()]
        assert await second.get_kv("marker") == "kept"
    finally:
        await second.close()


async def test_record_stores_the_call_its_events_and_one_outbox_row_per_wanting_adapter(
    store: Store, http: aiohttp.ClientSession
) -> None:
    everything = make_adapter(http, "http://127.0.0.1:9/x", name="all")
    only_hangups = make_adapter(
        http, "http://127.0.0.1:9/x", name="hangups", events=[EventKind.HANGUP]
    )
    call, events = call_with_events("1795417965.0", 3)

    await store.record(call, events, [everything, only_hangups])

    assert await store.get_call("default", "1795417965.0") == call
    assert await store.events_for("default", "1795417965.0") == events
    keys = raw(store, "SELECT idempotency_key, state, seq FROM outbox ORDER BY id")
    assert keys == [
        ("all:default:1795417965.0:1:ringing", "pending", 1),
        ("all:default:1795417965.0:2:answered", "pending", 2),
        ("all:default:1795417965.0:3:hangup", "pending", 3),
        ("hangups:default:1795417965.0:3:hangup", "pending", 3),
    ]
    # The outbox row points at the event row it delivers.
    linked = raw(
        store,
        "SELECT o.seq, e.seq FROM outbox o JOIN call_events e ON e.id = o.event_row",
    )
    assert all(a == b for a, b in linked)


async def test_recording_the_same_events_twice_stores_them_once(
    store: Store, http: aiohttp.ClientSession
) -> None:
    adapter = make_adapter(http, "http://127.0.0.1:9/x")
    call, events = call_with_events("replayed", 4)

    await store.record(call, events, [adapter])
    await store.record(call, events, [adapter])
    await store.record(call, events[1:3], [adapter])

    assert raw(store, "SELECT COUNT(*) FROM call_events") == [(4,)]
    assert raw(store, "SELECT COUNT(*) FROM outbox") == [(4,)]
    assert raw(store, "SELECT COUNT(*) FROM calls") == [(1,)]


async def test_concurrent_records_are_committed_in_a_few_group_commits(
    tmp_path, http: aiohttp.ClientSession
) -> None:
    store = await Store.open(
        StoreSettings(path=str(tmp_path / "s.sqlite3"), commit_window_ms=20, max_batch=5000)
    )
    adapter = make_adapter(http, "http://127.0.0.1:9/x")
    try:
        commits_before = store.commits
        calls = [call_with_events(f"c{i}", 2) for i in range(1000)]
        await asyncio.gather(*(store.record(c, ev, [adapter]) for c, ev in calls))
        commits = store.commits - commits_before
        assert 1 <= commits <= 5, f"1000 concurrent record() took {commits} commits"
        assert raw(store, "SELECT COUNT(*) FROM calls") == [(1000,)]
        assert raw(store, "SELECT COUNT(*) FROM call_events") == [(2000,)]
        assert raw(store, "SELECT COUNT(*) FROM outbox") == [(2000,)]
    finally:
        await store.close()


async def test_record_returns_only_after_its_rows_are_committed(
    store: Store, http: aiohttp.ClientSession
) -> None:
    adapter = make_adapter(http, "http://127.0.0.1:9/x")
    for i in range(20):
        call, events = call_with_events(f"acked{i}", 1)
        await store.record(call, events, [adapter])
        # Another connection (another process, for all SQLite knows) already sees them.
        assert raw(store, "SELECT COUNT(*) FROM outbox WHERE call_id = ?", (f"acked{i}",)) == [(1,)]


async def test_a_failing_write_fails_alone_and_its_batch_neighbours_commit(
    tmp_path, http: aiohttp.ClientSession
) -> None:
    store = await Store.open(StoreSettings(path=str(tmp_path / "s.sqlite3"), commit_window_ms=20))
    adapter = make_adapter(http, "http://127.0.0.1:9/x")
    try:
        await store.save_originate(
            "o-1", agent_extension="7181", number="89161234567", state="ringing-agent"
        )
        calls = [call_with_events(f"n{i}", 1) for i in range(10)]
        results = await asyncio.gather(
            *(store.record(c, ev, [adapter]) for c, ev in calls[:5]),
            store.save_originate("o-1", agent_extension="7181", number="1", state="x"),
            *(store.record(c, ev, [adapter]) for c, ev in calls[5:]),
            return_exceptions=True,
        )
        assert isinstance(results[5], sqlite3.IntegrityError)
        assert [r for i, r in enumerate(results) if i != 5] == [None] * 10
        assert raw(store, "SELECT COUNT(*) FROM call_events") == [(10,)]
        originate = await store.get_originate("o-1")
        assert originate is not None and originate.state == "ringing-agent"
    finally:
        await store.close()


async def test_close_commits_writes_still_queued(tmp_path, http: aiohttp.ClientSession) -> None:
    settings = StoreSettings(path=str(tmp_path / "s.sqlite3"), commit_window_ms=50)
    store = await Store.open(settings)
    adapter = make_adapter(http, "http://127.0.0.1:9/x")
    tasks = [
        asyncio.create_task(store.record(*call_with_events(f"q{i}", 2), [adapter]))
        for i in range(50)
    ]
    await asyncio.sleep(0)  # let the tasks queue their writes; close() must then flush them
    await store.close()
    await asyncio.gather(*tasks)

    reopened = await Store.open(settings)
    try:
        assert raw(reopened, "SELECT COUNT(*) FROM call_events") == [(100,)]
    finally:
        await reopened.close()


async def test_a_stale_snapshot_does_not_reopen_an_ended_call(store: Store) -> None:
    open_call = make_call("late", agent_extension="7181")
    ended = open_call.model_copy(update={"ended": True, "talk_seconds": 42.0})
    await store.upsert_call(open_call)
    await store.upsert_call(ended)
    await store.upsert_call(open_call)  # replayed after a crash

    assert await store.get_call("default", "late") == ended
    assert await store.open_calls("default") == []


async def test_open_calls_lists_only_calls_not_ended_for_that_pbx(store: Store) -> None:
    a = make_call("a")
    b = make_call("b", ended=True)
    c = make_call("c", pbx_id="other")
    for call in (a, b, c):
        await store.upsert_call(call)

    assert await store.open_calls("default") == [a]
    assert await store.open_calls("other") == [c]


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


async def test_kv_contacts_notes_and_originates_round_trip(store: Store) -> None:
    await store.put_kv("tracker", '{"open": []}')
    await store.put_kv("tracker", '{"open": [1]}')
    assert await store.get_kv("tracker") == '{"open": [1]}'
    await store.delete_kv("tracker")
    assert await store.get_kv("tracker") is None

    digits = await store.upsert_contact(
        "+7 903 123-45-67", name="Ivan", company="Acme", owner_extension="7181"
    )
    assert digits == "79031234567"
    contact = await store.get_contact("79031234567")
    assert contact is not None and contact.name == "Ivan" and contact.number == "+7 903 123-45-67"
    assert await store.get_contact("+7 (903) 1234567") == contact
    assert await store.get_contact("no digits") is None
    with pytest.raises(ValueError, match="no digits"):
        await store.upsert_contact("anonymous")

    note_id = await store.save_note(
        pbx_id="default",
        call_id="c1",
        number="+79031234567",
        extension="7181",
        status="callback",
        comments="wants a quote",
    )
    notes = await store.notes_for("default", "c1")
    assert [(n.id, n.status, n.comments) for n in notes] == [(note_id, "callback", "wants a quote")]

    await store.save_originate(
        "o-9",
        agent_extension="7181",
        number="89161234567",
        state="ringing-agent",
        request={"agent": "7181"},
    )
    assert await store.update_originate("o-9", state="failed", reason="agent did not answer")
    assert not await store.update_originate("missing", state="failed")
    originate = await store.get_originate("o-9")
    assert originate is not None
    assert (originate.state, originate.reason, originate.request) == (
        "failed",
        "agent did not answer",
        {"agent": "7181"},
    )


async def test_reader_connection_refuses_writes(store: Store) -> None:
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        await store.reader.execute("DELETE FROM calls")


async def test_writes_after_close_raise_a_clear_error(tmp_path) -> None:
    store = await Store.open(StoreSettings(path=str(tmp_path / "s.sqlite3")))
    await store.close()
    with pytest.raises(RuntimeError, match="closed"):
        await store.upsert_call(make_call("late"))


async def test_events_for_returns_events_in_seq_order(store: Store) -> None:
    call = make_call("ordered")
    events = [make_event(call, seq) for seq in (3, 1, 2)]
    await store.record(call, events, [])
    assert [e.seq for e in await store.events_for("default", "ordered")] == [1, 2, 3]
