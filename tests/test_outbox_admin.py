"""`pbxcrm outbox list|retry|purge`: inspect, resend dead letters, and clean up."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from crm.delivery.admin import list_deliveries, purge, retry
from crm.delivery.outbox import Outbox
from crm.store.settings import OutboxSettings, StoreSettings
from crm.store.sqlite import Store
from tests.test_store_support import (
    FakeClock,
    FakeCrm,
    Received,
    call_with_events,
    make_adapter,
    outbox_rows,
    wait_until,
)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(time.time())


@pytest.fixture
async def store(tmp_path, clock: FakeClock) -> AsyncIterator[Store]:
    store = await Store.open(StoreSettings(path=str(tmp_path / "admin.sqlite3")), now=clock)
    yield store
    await store.close()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def no_pending(store: Store) -> bool:
    return not await outbox_rows(store, "state = 'pending'")


async def test_dead_letters_are_listed_and_a_retry_delivers_them(
    store: Store, http: aiohttp.ClientSession
) -> None:
    crm_fixed = False

    async def refuses_until_fixed(received: Received, count: int) -> web.StreamResponse:
        if not crm_fixed and received.seq == 1:
            return web.json_response({"error": "no such user"}, status=404)
        return web.json_response({"status": "ok"})

    crm = await FakeCrm(behaviour=refuses_until_fixed).start()
    adapter = make_adapter(http, crm.url)
    outbox = Outbox(store, {"crm": adapter}, OutboxSettings(poll_interval_seconds=0.02))
    await outbox.start()
    try:
        for i in range(3):
            await store.record(*call_with_events(f"c{i}", 2), [adapter])
        await wait_until(lambda: no_pending(store))

        dead = await list_deliveries(store, state="dead")
        assert [(d["call_id"], d["seq"], d["kind"], d["last_status"]) for d in dead] == [
            ("c2", 1, "ringing", 404),
            ("c1", 1, "ringing", 404),
            ("c0", 1, "ringing", 404),
        ]
        assert dead[0]["last_response"] == '{"error": "no such user"}'
        assert dead[0]["idempotency_key"] == "crm:default:c2:1:ringing"
        assert len(await list_deliveries(store, state="done", adapter="crm")) == 3
        assert await list_deliveries(store, adapter="other") == []
        assert len(await list_deliveries(store, limit=2)) == 2

        crm_fixed = True
        assert await retry(store, [dead[0]["id"]]) == 1
        await crm.wait_for(lambda: len(crm.accepted) == 4)
        assert await retry(store) == 2  # all the remaining dead letters
        await crm.wait_for(lambda: len(crm.accepted) == 6)
        await wait_until(lambda: no_pending(store))
        assert await list_deliveries(store, state="dead") == []
        assert await retry(store) == 0
    finally:
        await outbox.stop()
        await crm.stop()


async def test_purge_deletes_only_finished_rows_older_than_asked(
    store: Store, http: aiohttp.ClientSession, clock: FakeClock
) -> None:
    crm = await FakeCrm().start()
    adapter = make_adapter(http, crm.url)
    outbox = Outbox(store, {"crm": adapter}, OutboxSettings(poll_interval_seconds=0.02), now=clock)
    await outbox.start()
    try:
        await store.record(*call_with_events("old", 2), [adapter])
        await wait_until(lambda: no_pending(store))
        clock.advance(86400)
        await store.record(*call_with_events("new", 2), [adapter])
        await wait_until(lambda: no_pending(store))
    finally:
        await outbox.stop()
        await crm.stop()

    assert await purge(store, "done", older_than_seconds=3600) == 2
    assert {r["call_id"] for r in await outbox_rows(store)} == {"new"}
    assert len(await store.events_for("default", "old")) == 2  # history stays
    assert await purge(store, "dead", older_than_seconds=0) == 0


async def test_admin_functions_refuse_bad_arguments_clearly(store: Store) -> None:
    with pytest.raises(ValueError, match="pending"):
        await purge(store, "pending")
    with pytest.raises(ValueError, match="unknown outbox state 'gone'"):
        await list_deliveries(store, state="gone")
    with pytest.raises(ValueError, match="integers"):
        await retry(store, ["1 OR 1=1"])  # type: ignore[list-item]
    assert await list_deliveries(store, adapter="x' OR '1'='1") == []
    assert await retry(store, []) == 0
