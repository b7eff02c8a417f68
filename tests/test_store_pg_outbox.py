"""The outbox shared by several pbxcrm instances over one PostgreSQL database.

Each "instance" here is its own PgStore (own connections) + Outbox on the same database, all
delivering to one real aiohttp CRM on 127.0.0.1. The two-process kill -9 test is in
tests/test_failover_pg.py; these prove the claim/lease rules underneath it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from crm.delivery.outbox import Outbox
from crm.store.postgres import PgStore
from crm.store.settings import OutboxSettings, StoreSettings
from tests.pg_server import pg_server_url, pg_url  # noqa: F401 - fixtures
from tests.test_store_support import (
    FakeClock,
    FakeCrm,
    Received,
    call_with_events,
    make_adapter,
    wait_until,
)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def open_pg(pg_url: str) -> AsyncIterator[Callable[..., Any]]:  # noqa: F811 - fixture
    """Opens PgStores ("instances") on the test's database; closes them at the end."""
    opened: list[PgStore] = []

    async def open_one(**kwargs: Any) -> PgStore:
        store = await PgStore.open(StoreSettings(url=pg_url), **kwargs)
        opened.append(store)
        return store

    yield open_one
    for store in opened:
        await store.close()


async def started_instances(
    open_pg: Callable[..., Any],
    http: aiohttp.ClientSession,
    crm_url: str,
    settings: OutboxSettings,
    **adapter_config: Any,
) -> tuple[list[PgStore], list[Any], list[Outbox]]:
    """Two "instances" (store + adapter + started outbox) on the test's database."""
    stores = [await open_pg(), await open_pg()]
    adapters = [make_adapter(http, crm_url, **adapter_config) for _ in stores]
    outboxes = [
        Outbox(store, {"crm": adapter}, settings)
        for store, adapter in zip(stores, adapters, strict=True)
    ]
    for outbox in outboxes:
        await outbox.start()
    return stores, adapters, outboxes


def assert_each_key_once_in_call_order(accepted: list[Received], expected_keys: int) -> None:
    keys = [r.key for r in accepted]
    assert len(keys) == expected_keys and len(set(keys)) == expected_keys, "a key twice"
    by_call: dict[str, list[int]] = {}
    for received in accepted:
        by_call.setdefault(received.call_id, []).append(received.seq)
    for call_id, seqs in by_call.items():
        assert seqs == sorted(seqs), f"call {call_id} arrived out of order: {seqs}"


async def test_two_instances_claiming_at_once_never_get_the_same_row_and_only_call_heads(
    open_pg: Callable[..., Any], http: aiohttp.ClientSession
) -> None:
    first, second = await open_pg(), await open_pg()
    adapter = make_adapter(http, "http://127.0.0.1:9/x")
    for i in range(40):
        await first.record(*call_with_events(f"c{i}", 3), [adapter])

    claims = await asyncio.gather(
        *(
            store.claim_deliveries(["crm"], 7, owner=f"owner-{n}", lease_seconds=60)
            for n in range(6)
            for store in (first, second)
        )
    )
    ids = [row.id for claim in claims for row in claim]
    assert len(ids) == len(set(ids)) == 40  # 12 claimers x 7 > 40 heads; none taken twice
    assert {row.seq for claim in claims for row in claim} == {1}
    # Every head is leased now: nothing more to claim until one finishes or a lease expires.
    assert await second.claim_deliveries(["crm"], 100, owner="late", lease_seconds=60) == []


async def test_an_expired_lease_is_taken_over_and_the_old_owner_cannot_record_an_outcome(
    open_pg: Callable[..., Any], http: aiohttp.ClientSession
) -> None:
    clock = FakeClock()
    dead, alive = await open_pg(now=clock), await open_pg(now=clock)
    adapter = make_adapter(http, "http://127.0.0.1:9/x")
    await dead.record(*call_with_events("orphan", 2), [adapter])

    [held] = await dead.claim_deliveries(["crm"], 10, owner="dead", lease_seconds=30)
    assert await alive.claim_deliveries(["crm"], 10, owner="alive", lease_seconds=30) == []
    assert await alive.next_due() == pytest.approx(clock() + 30)

    clock.advance(31)
    [taken] = await alive.claim_deliveries(["crm"], 10, owner="alive", lease_seconds=30)
    assert (taken.id, taken.key, taken.seq) == (held.id, held.key, 1)

    outcome: dict[str, Any] = {
        "state": "done",
        "attempts": 1,
        "next_attempt_at": clock(),
        "error": None,
        "status": 200,
        "response": "{}",
        "delivered_at": clock(),
    }
    assert not await dead.finish_delivery(held.id, owner="dead", **outcome)
    assert await alive.finish_delivery(taken.id, owner="alive", **outcome)
    # seq 2 becomes the head only now that seq 1 is done.
    [second] = await alive.claim_deliveries(["crm"], 10, owner="alive", lease_seconds=30)
    assert second.seq == 2


async def test_two_outboxes_deliver_every_event_once_and_in_call_order(
    open_pg: Callable[..., Any], http: aiohttp.ClientSession
) -> None:
    crm = await FakeCrm().start()
    settings = OutboxSettings(poll_interval_seconds=0.2, claim_batch=20)
    try:
        stores, adapters, outboxes = await started_instances(
            open_pg, http, crm.url, settings, concurrency=4
        )
        # Calls stream into both instances, as from two PBXes.
        for i in range(30):
            store = stores[i % 2]
            await store.record(
                *call_with_events(f"call{i}", 4, pbx_id=f"pbx{i % 2}"), [adapters[0]]
            )
        await crm.wait_for(lambda: len(crm.accepted) >= 120, timeout=30)
        for outbox in outboxes:
            await outbox.stop()
        assert_each_key_once_in_call_order(crm.accepted, 120)
        assert len(crm.arrivals) == 120
        done = await stores[0].reader.execute_fetchall(
            "SELECT COUNT(*) FROM outbox WHERE state = 'done' AND claimed_by IS NULL"
        )
        assert done == [(120,)]
    finally:
        await crm.stop()


async def test_rows_leased_by_a_dead_instance_are_delivered_by_another_after_the_lease(
    open_pg: Callable[..., Any], http: aiohttp.ClientSession
) -> None:
    crm = await FakeCrm().start()
    try:
        dead, alive = await open_pg(), await open_pg()
        adapter = make_adapter(http, crm.url)
        for i in range(5):
            await dead.record(*call_with_events(f"d{i}", 2), [adapter])
        # The dead instance leased every head, then vanished without an outcome.
        held = await dead.claim_deliveries(["crm"], 10, owner="dead", lease_seconds=0.5)
        assert len(held) == 5

        outbox = Outbox(alive, {"crm": adapter}, OutboxSettings(poll_interval_seconds=5))
        await outbox.start()
        try:
            # No notify will come: the survivor must wake by itself when the lease runs out
            # (next_due counts leases), well before its 5 s poll.
            await crm.wait_for(lambda: len(crm.accepted) >= 10, timeout=4)
        finally:
            await outbox.stop()
        assert_each_key_once_in_call_order(crm.accepted, 10)
    finally:
        await crm.stop()


async def test_a_delivery_slower_than_the_lease_keeps_its_lease_and_goes_out_once(
    open_pg: Callable[..., Any], http: aiohttp.ClientSession
) -> None:
    """The CRM takes 2.5 s; leases last 0.6 s. The instance sending renews its lease, so the
    other instance, polling every 0.1 s, never takes the row over and sends it again."""

    async def slow(received: Received, count: int) -> web.StreamResponse:
        await asyncio.sleep(2.5)
        return web.json_response({"ok": True})

    crm = await FakeCrm(behaviour=slow).start()
    settings = OutboxSettings(poll_interval_seconds=0.1, lease_seconds=0.6)
    try:
        stores, adapters, outboxes = await started_instances(
            open_pg, http, crm.url, settings, timeout_seconds=10
        )
        try:
            await stores[0].record(*call_with_events("slow", 1), [adapters[0]])
            await crm.wait_for(lambda: len(crm.accepted) >= 1, timeout=10)

            async def done() -> bool:
                rows = await stores[1].reader.execute_fetchall(
                    "SELECT COUNT(*) FROM outbox WHERE state = 'done'"
                )
                return rows == [(1,)]

            await wait_until(done)
        finally:
            for outbox in outboxes:
                await outbox.stop()
        # A takeover would have started within ~0.7 s of the first send, long before the
        # first one finished, so it would be here by now.
        assert len(crm.arrivals) == 1, [r.key for r in crm.arrivals]
    finally:
        await crm.stop()


async def test_outbox_admin_lists_retries_and_purges_on_postgresql(
    open_pg: Callable[..., Any], http: aiohttp.ClientSession
) -> None:
    from crm.delivery import admin as outbox_admin

    clock = FakeClock()
    store = await open_pg(now=clock)
    adapter = make_adapter(http, "http://127.0.0.1:9/x")
    await store.record(*call_with_events("adm", 2), [adapter])
    [first] = await store.claim_deliveries(["crm"], 10, owner="me", lease_seconds=30)
    outcome: dict[str, Any] = {
        "attempts": 1,
        "next_attempt_at": clock(),
        "error": "refused",
        "status": 400,
        "response": "no",
        "delivered_at": None,
    }
    assert await store.finish_delivery(first.id, owner="me", state="dead", **outcome)

    listed = await outbox_admin.list_deliveries(store, state="dead")  # type: ignore[arg-type]
    assert [(row["id"], row["kind"], row["last_status"]) for row in listed] == [
        (first.id, "ringing", 400)
    ]
    assert await store.requeue_dead([first.id + 1000]) == 0
    assert await store.requeue_dead([first.id]) == 1
    rows = await store.reader.execute_fetchall(
        "SELECT state, attempts, claimed_by FROM outbox WHERE id = ?", (first.id,)
    )
    assert rows == [("pending", 0, None)]

    [again] = await store.claim_deliveries(["crm"], 10, owner="me", lease_seconds=30)
    done = {**outcome, "error": None, "status": 200, "delivered_at": clock()}
    assert await store.finish_delivery(again.id, owner="me", state="done", **done)
    clock.advance(10)
    assert await store.purge_deliveries("done", clock() - 5) == 1
    with pytest.raises(ValueError, match="cannot be purged"):
        await store.purge_deliveries("pending", clock())
