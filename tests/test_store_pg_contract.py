"""One store test-suite, run against both backends: SQLite (file in tmp_path) and PostgreSQL
(a fresh database per test on the server of tests/pg_server.py).

Everything here goes through the store's public API or its `reader`, so a pass on both proves
the two backends are interchangeable for the rest of pbxcrm.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from typing import Any

import aiohttp
import pytest

from crm.model import Direction
from crm.secrets import known_secrets
from crm.store.factory import backend_of, open_store
from crm.store.history import HistoryQuery, query_calls
from crm.store.migrations import available_migrations
from crm.store.portable import PortableStore
from crm.store.settings import StoreSettings
from tests.pg_server import pg_server_url, pg_url  # noqa: F401 - fixtures
from tests.test_store_support import T0, call_with_events, make_adapter, make_call, make_event

# The application's CallStore plus what only tests need (record(), upsert_call(), commits):
# the API both backends share.
StoreApi = PortableStore[Any]


@pytest.fixture(params=["sqlite", "postgresql"])
def settings_for(request: pytest.FixtureRequest, tmp_path) -> Callable[..., StoreSettings]:
    """Builds StoreSettings for this run's backend; keyword arguments tune group commit."""
    if request.param == "postgresql":
        url = request.getfixturevalue("pg_url")

        def pg(**extra: Any) -> StoreSettings:
            return StoreSettings(url=url, **extra)

        return pg

    def sqlite(**extra: Any) -> StoreSettings:
        return StoreSettings(path=str(tmp_path / "db" / "pbxcrm.sqlite3"), **extra)

    return sqlite


@pytest.fixture
async def store(settings_for: Callable[..., StoreSettings]) -> AsyncIterator[StoreApi]:
    store = await open_store(settings_for())
    assert isinstance(store, PortableStore)
    yield store
    await store.close()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def rows(store: StoreApi, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    return [tuple(row) for row in await store.reader.execute_fetchall(sql, params)]


def migration_versions(settings: StoreSettings) -> list[tuple[int]]:
    """The schema_version rows a fully migrated database of this backend holds."""
    package = (
        "crm.store.migrations_pg"
        if backend_of(settings) == "postgresql"
        else "crm.store.migrations"
    )
    return [(m.version,) for m in available_migrations(package)]


def test_the_url_picks_postgresql_and_no_url_picks_sqlite() -> None:
    assert backend_of(StoreSettings()) == "sqlite"
    assert backend_of(StoreSettings(url="postgresql://u:p@127.0.0.1/db")) == "postgresql"
    assert backend_of(StoreSettings(url="postgres://127.0.0.1/db")) == "postgresql"
    with pytest.raises(ValueError, match="postgresql://"):
        backend_of(StoreSettings(url="mysql://127.0.0.1/db"))


def test_the_store_url_is_a_secret_that_never_prints() -> None:
    settings = StoreSettings(url="postgresql://pbx:hunter2-pw@127.0.0.1/db")
    assert "hunter2-pw" not in repr(settings) and "hunter2-pw" not in str(settings.url)
    assert "postgresql://pbx:hunter2-pw@127.0.0.1/db" in known_secrets()


async def test_an_unreachable_postgresql_fails_with_a_clear_error_without_the_password() -> None:
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings = StoreSettings(
        url=f"postgresql://pbx:s3cret-pw@127.0.0.1:{port}/x", busy_timeout_ms=2000
    )
    with pytest.raises(RuntimeError, match="cannot connect to PostgreSQL") as caught:
        await open_store(settings)
    assert "s3cret-pw" not in str(caught.value)


async def test_migrations_run_once_and_a_second_open_is_a_no_op(
    settings_for: Callable[..., StoreSettings],
) -> None:
    first = await open_store(settings_for())
    await first.put_kv("marker", "kept")
    await first.close()
    second = await open_store(settings_for())
    try:
        versions = await rows(second, "SELECT version FROM schema_version ORDER BY version")
        assert versions == migration_versions(settings_for())
        assert await second.get_kv("marker") == "kept"
    finally:
        await second.close()


async def test_record_stores_the_call_its_events_and_one_outbox_row_per_wanting_adapter(
    store: StoreApi, http: aiohttp.ClientSession
) -> None:
    from crm.model import EventKind

    everything = make_adapter(http, "http://127.0.0.1:9/x", name="all")
    only_hangups = make_adapter(
        http, "http://127.0.0.1:9/x", name="hangups", events=[EventKind.HANGUP]
    )
    call, events = call_with_events("1795417965.0", 3)

    await store.record(call, events, [everything, only_hangups])

    assert await store.get_call("default", "1795417965.0") == call
    assert await store.events_for("default", "1795417965.0") == events
    assert await rows(store, "SELECT idempotency_key, state, seq FROM outbox ORDER BY id") == [
        ("all:default:1795417965.0:1:ringing", "pending", 1),
        ("all:default:1795417965.0:2:answered", "pending", 2),
        ("all:default:1795417965.0:3:hangup", "pending", 3),
        ("hangups:default:1795417965.0:3:hangup", "pending", 3),
    ]
    linked = await rows(
        store, "SELECT o.seq, e.seq FROM outbox o JOIN call_events e ON e.id = o.event_row"
    )
    assert linked and all(a == b for a, b in linked)


async def test_recording_the_same_events_twice_stores_them_once(
    store: StoreApi, http: aiohttp.ClientSession
) -> None:
    adapter = make_adapter(http, "http://127.0.0.1:9/x")
    call, events = call_with_events("replayed", 4)
    await store.record(call, events, [adapter])
    await store.record(call, events, [adapter])
    await store.record(call, events[1:3], [adapter])
    assert await rows(store, "SELECT COUNT(*) FROM call_events") == [(4,)]
    assert await rows(store, "SELECT COUNT(*) FROM outbox") == [(4,)]
    assert await rows(store, "SELECT COUNT(*) FROM calls") == [(1,)]


async def test_concurrent_records_are_committed_in_a_few_group_commits(
    settings_for: Callable[..., StoreSettings], http: aiohttp.ClientSession
) -> None:
    store = await open_store(settings_for(commit_window_ms=20, max_batch=5000))
    adapter = make_adapter(http, "http://127.0.0.1:9/x")
    try:
        before = store.commits
        calls = [call_with_events(f"c{i}", 2) for i in range(1000)]
        await asyncio.gather(*(store.record(c, ev, [adapter]) for c, ev in calls))
        commits = store.commits - before
        assert 1 <= commits <= 5, f"1000 concurrent record() took {commits} commits"
        assert await rows(store, "SELECT COUNT(*) FROM calls") == [(1000,)]
        assert await rows(store, "SELECT COUNT(*) FROM call_events") == [(2000,)]
        assert await rows(store, "SELECT COUNT(*) FROM outbox") == [(2000,)]
    finally:
        await store.close()


async def test_a_write_that_comes_alone_does_not_wait_for_the_window(
    settings_for: Callable[..., StoreSettings], http: aiohttp.ClientSession
) -> None:
    # A 30 s window: a write that waited for it would not be committed within the 10 s bound.
    store = await open_store(settings_for(commit_window_ms=30_000))
    adapter = make_adapter(http, "http://127.0.0.1:9/x")
    try:
        await asyncio.wait_for(store.record(*call_with_events("alone", 1), [adapter]), 10)
        assert await rows(store, "SELECT COUNT(*) FROM call_events") == [(1,)]
    finally:
        await store.close()


async def test_writes_that_come_together_wait_for_the_window_and_share_a_commit(
    settings_for: Callable[..., StoreSettings], http: aiohttp.ClientSession
) -> None:
    store = await open_store(settings_for(commit_window_ms=500))
    adapter = make_adapter(http, "http://127.0.0.1:9/x")
    try:
        before = store.commits
        # Two writes queued together are a burst: the writer waits the window for more, and
        # the one queued while it waits joins them.
        burst = [
            asyncio.ensure_future(store.record(*call_with_events(name, 1), [adapter]))
            for name in ("one", "two")
        ]
        await asyncio.sleep(0.05)
        late = asyncio.ensure_future(store.record(*call_with_events("late", 1), [adapter]))
        await asyncio.gather(*burst, late)
        assert store.commits - before == 1
    finally:
        await store.close()


async def test_writes_that_keep_coming_wait_for_the_window_and_share_a_commit(
    settings_for: Callable[..., StoreSettings], http: aiohttp.ClientSession
) -> None:
    store = await open_store(settings_for(commit_window_ms=500))
    adapter = make_adapter(http, "http://127.0.0.1:9/x")
    try:
        await store.record(*call_with_events("first", 1), [adapter])  # idle: at once
        before = store.commits
        # Right after a commit the writer counts as busy: this one waits for the window, and
        # the one queued while it waits joins it.
        early = asyncio.ensure_future(store.record(*call_with_events("early", 1), [adapter]))
        await asyncio.sleep(0.05)
        late = asyncio.ensure_future(store.record(*call_with_events("late", 1), [adapter]))
        await asyncio.gather(early, late)
        assert store.commits - before == 1
    finally:
        await store.close()


async def test_submitted_records_commit_in_submit_order_so_the_last_snapshot_wins(
    store: StoreApi, http: aiohttp.ClientSession
) -> None:
    adapter = make_adapter(http, "http://127.0.0.1:9/x")
    call, events = call_with_events("ordered", 3)
    futures = [
        store.submit_record(
            call.model_copy(update={"agent_extension": f"70{seq}"}), [event], [adapter]
        )
        for seq, event in enumerate(events, start=1)
    ]
    await asyncio.gather(*futures)
    stored = await store.get_call("default", "ordered")
    assert stored is not None and stored.agent_extension == "703"


async def test_a_failing_write_fails_alone_and_its_batch_neighbours_commit(
    settings_for: Callable[..., StoreSettings], http: aiohttp.ClientSession
) -> None:
    store = await open_store(settings_for(commit_window_ms=20))
    adapter = make_adapter(http, "http://127.0.0.1:9/x")
    try:
        await store.save_originate("o-1", agent_extension="7181", number="8916", state="ringing")
        calls = [call_with_events(f"n{i}", 1) for i in range(10)]
        results = await asyncio.gather(
            *(store.record(c, ev, [adapter]) for c, ev in calls[:5]),
            store.save_originate("o-1", agent_extension="7181", number="1", state="x"),
            *(store.record(c, ev, [adapter]) for c, ev in calls[5:]),
            return_exceptions=True,
        )
        assert isinstance(results[5], Exception) and "unique" in str(results[5]).lower()
        assert [r for i, r in enumerate(results) if i != 5] == [None] * 10
        assert await rows(store, "SELECT COUNT(*) FROM call_events") == [(10,)]
        originate = await store.get_originate("o-1")
        assert originate is not None and originate.state == "ringing"
    finally:
        await store.close()


async def test_close_commits_writes_still_queued(
    settings_for: Callable[..., StoreSettings], http: aiohttp.ClientSession
) -> None:
    store = await open_store(settings_for(commit_window_ms=50))
    adapter = make_adapter(http, "http://127.0.0.1:9/x")
    tasks = [
        asyncio.create_task(store.record(*call_with_events(f"q{i}", 2), [adapter]))
        for i in range(50)
    ]
    await asyncio.sleep(0)  # let the tasks queue their writes; close() must then flush them
    await store.close()
    await asyncio.gather(*tasks)
    reopened = await open_store(settings_for())
    try:
        assert await rows(reopened, "SELECT COUNT(*) FROM call_events") == [(100,)]
    finally:
        await reopened.close()


async def test_writes_after_close_raise_a_clear_error(
    settings_for: Callable[..., StoreSettings],
) -> None:
    from crm.store.sqlite import StoreClosedError

    store = await open_store(settings_for())
    await store.close()
    with pytest.raises(StoreClosedError, match="closed"):
        await store.put_kv("k", "v")
    with pytest.raises(StoreClosedError, match="closed"):
        await store.upsert_call(make_call("late"))


async def test_a_stale_snapshot_does_not_reopen_an_ended_call(store: StoreApi) -> None:
    open_call = make_call("late", agent_extension="7181")
    ended = open_call.model_copy(update={"ended": True, "end_time": T0 + timedelta(seconds=30)})
    await store.upsert_call(open_call)
    await store.upsert_call(ended)
    await store.upsert_call(open_call)  # replayed after a crash
    assert await store.get_call("default", "late") == ended
    assert await store.open_calls("default") == []


async def test_open_calls_lists_only_calls_not_ended_for_that_pbx(store: StoreApi) -> None:
    a = make_call("a", pbx_id="pbx-1")
    b = make_call("b", pbx_id="pbx-2")
    c = make_call("c", pbx_id="pbx-1", ended=True)
    for call in (a, b, c):
        await store.upsert_call(call)
    assert await store.open_calls("pbx-1") == [a]
    assert await store.open_calls("pbx-2") == [b]


async def test_events_for_returns_events_in_seq_order(store: StoreApi) -> None:
    call = make_call("ordered")
    await store.record(call, [make_event(call, seq) for seq in (3, 1, 2)], [])
    assert [e.seq for e in await store.events_for("default", "ordered")] == [1, 2, 3]


async def test_kv_contacts_notes_and_originates_round_trip(store: StoreApi) -> None:
    await store.put_kv("tracker", '{"open": []}')
    await store.put_kv("tracker", '{"open": [1]}')
    assert await store.get_kv("tracker") == '{"open": [1]}'
    await store.delete_kv("tracker")
    assert await store.get_kv("tracker") is None

    assert await store.upsert_contact("+7 903 123-45-67", name="Ivan") == "79031234567"
    await store.upsert_contact("+7 903 123-45-67", name="Ivan P", company="Acme")
    contact = await store.get_contact("+7 (903) 1234567")
    assert contact is not None and (contact.name, contact.company) == ("Ivan P", "Acme")
    assert contact.number == "+7 903 123-45-67"
    assert await store.get_contact("no digits") is None
    await store.delete_contact("79031234567")
    assert await store.get_contact("79031234567") is None
    with pytest.raises(ValueError, match="no digits"):
        await store.upsert_contact("anonymous")

    first = await store.save_note(
        pbx_id="default", call_id="c1", number="1", extension="7181", status="a", comments="x"
    )
    second = await store.save_note(
        pbx_id="default", call_id="c1", number="1", extension="7181", status="b", comments=None
    )
    notes = await store.notes_for("default", "c1")
    assert [(n.id, n.status, n.comments) for n in notes] == [(first, "a", "x"), (second, "b", None)]
    assert first < second

    await store.save_originate(
        "o-9", agent_extension="7181", number="8916", state="ringing", request={"agent": "7181"}
    )
    assert await store.update_originate("o-9", state="failed", reason="no answer")
    assert not await store.update_originate("missing", state="failed")
    originate = await store.get_originate("o-9")
    assert originate is not None
    assert (originate.state, originate.reason, originate.request) == (
        "failed",
        "no answer",
        {"agent": "7181"},
    )
    # The call's outcome, once it ended, replaces the request record.
    ended = {"agent": "7181", "call_id": "1795418031.8", "outcome": "answered"}
    assert await store.update_originate("o-9", state="ended", request=ended)
    originate = await store.get_originate("o-9")
    assert originate is not None and (originate.state, originate.request) == ("ended", ended)


async def test_call_history_reads_every_pbx_through_the_reader(store: StoreApi) -> None:
    for index, pbx in enumerate(["pbx-a", "pbx-b", "pbx-a"]):
        await store.upsert_call(
            make_call(
                f"h{index}",
                pbx_id=pbx,
                direction=Direction.INBOUND,
                caller_number="+7 903 123-45-67",
                start_time=T0 + timedelta(minutes=index),
            )
        )
    page = await query_calls(
        store.reader, HistoryQuery(number="+79031234567", limit=2), region="RU"
    )
    assert [(c.pbx_id, c.call_id) for c in page.calls] == [("pbx-a", "h2"), ("pbx-b", "h1")]
    assert page.next_cursor is not None
    rest = await query_calls(
        store.reader,
        HistoryQuery(number="+79031234567", limit=2, cursor=page.next_cursor),
        region="RU",
    )
    assert [(c.pbx_id, c.call_id) for c in rest.calls] == [("pbx-a", "h0")]
    only_b = await query_calls(store.reader, HistoryQuery(pbx_id="pbx-b"), region="RU")
    assert [c.call_id for c in only_b.calls] == ["h1"]


async def test_instances_opening_an_empty_postgresql_at_once_all_start_and_migrate_once(
    pg_url: str,  # noqa: F811 - the fixture
) -> None:
    stores = await asyncio.gather(*(open_store(StoreSettings(url=pg_url)) for _ in range(6)))
    try:
        versions = await rows(stores[0], "SELECT version FROM schema_version ORDER BY version")
        assert versions == migration_versions(StoreSettings(url=pg_url))
    finally:
        for store in stores:
            await store.close()


async def test_steps_added_at_once_to_an_ended_call_each_get_their_own_seq(
    store: StoreApi,
) -> None:
    """A survey and agents' notes for a call that already ended are numbered from the store;
    several at once must not share a seq (the store keeps only one step per seq)."""
    from ari_app.calls.pipeline import Pipeline
    from ari_app.calls.rules import CallRules
    from crm.model import EventKind

    call, events = call_with_events("ended-1", 3, ended=True)
    await store.record(call, events, [])
    pipeline = Pipeline(CallRules(), store, [], pbx_id="default")  # type: ignore[arg-type]
    added = await asyncio.gather(
        *(
            pipeline.add_call_event("ended-1", EventKind.SURVEY, data={"rating": str(n)})
            for n in range(1, 10)
        )
    )
    assert sorted(e.seq for e in added if e is not None) == list(range(4, 13))
    stored = await store.events_for("default", "ended-1")
    assert [e.seq for e in stored] == list(range(1, 13))
    ratings = sorted(str(e.data["rating"]) for e in stored if e.kind == EventKind.SURVEY)
    assert ratings == [str(n) for n in range(1, 10)]
    assert await store.last_seq("default", "ended-1") == 12
    assert await store.last_seq("default", "never-seen") == 0


async def test_click_to_calls_left_pending_by_a_stopped_instance_are_failed(
    store: StoreApi,
) -> None:
    for originate_id, state in (
        ("o-pending", "pending"),
        ("o-ringing", "ringing_agent"),
        ("o-connected", "connected"),
        ("o-queued", "queued"),
    ):
        await store.save_originate(
            originate_id, agent_extension="7181", number="+79161234567", state=state
        )
    assert await store.fail_stale_originates(store.now() - 3600, "stopped") == 0  # all recent
    assert await store.fail_stale_originates(store.now() + 1, "instance stopped") == 2
    states = {
        originate_id: (record.state, record.reason)
        for originate_id in ("o-pending", "o-ringing", "o-connected", "o-queued")
        if (record := await store.get_originate(originate_id)) is not None
    }
    assert states == {
        "o-pending": ("failed", "instance stopped"),
        "o-ringing": ("failed", "instance stopped"),
        "o-connected": ("connected", None),
        "o-queued": ("queued", None),
    }
