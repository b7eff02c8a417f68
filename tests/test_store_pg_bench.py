"""Store figures for both backends: ingest (record() of recorded-shape calls) and outbox drain
to a real HTTP CRM on 127.0.0.1. Small by default (a smoke run that checks the counts);
PBXCRM_STORE_BENCH_CALLS=5000 gives the figures quoted in docs/postgresql.md.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Callable

import aiohttp
import pytest

from crm.delivery.outbox import Outbox
from crm.store.factory import open_store
from crm.store.settings import OutboxSettings, StoreSettings
from tests.pg_server import pg_server_url, pg_url  # noqa: F401 - fixtures
from tests.test_store_support import FakeCrm, call_with_events, make_adapter

CALLS = int(os.environ.get("PBXCRM_STORE_BENCH_CALLS", "300"))
EVENTS_PER_CALL = 4


@pytest.fixture(params=["sqlite", "postgresql"])
def settings_for(request: pytest.FixtureRequest, tmp_path) -> Callable[[], StoreSettings]:
    if request.param == "postgresql":
        url = request.getfixturevalue("pg_url")
        return lambda: StoreSettings(url=url)
    return lambda: StoreSettings(path=str(tmp_path / "bench.sqlite3"))


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def test_ingest_then_drain_delivers_every_event_and_reports_the_rates(
    settings_for: Callable[[], StoreSettings], http: aiohttp.ClientSession
) -> None:
    crm = await FakeCrm().start()
    store = await open_store(settings_for())
    adapter = make_adapter(http, crm.url, concurrency=8)
    total = CALLS * EVENTS_PER_CALL
    try:
        calls = [call_with_events(f"b{i}", EVENTS_PER_CALL) for i in range(CALLS)]
        started = time.perf_counter()
        # The AMI loop's pattern: submit in order without waiting, await the commits at the end.
        futures = [store.submit_record(call, events, [adapter]) for call, events in calls]
        await asyncio.gather(*futures)
        ingest = time.perf_counter() - started

        outbox = Outbox(store, {"crm": adapter}, OutboxSettings(poll_interval_seconds=0.2))
        started = time.perf_counter()
        await outbox.start()
        await crm.wait_for(lambda: len(crm.accepted) >= total, timeout=120)
        drain = time.perf_counter() - started
        await outbox.stop()
    finally:
        backend = type(store).__name__
        await store.close()
        await crm.stop()
    assert len({r.key for r in crm.accepted}) == total
    print(
        f"\nstore bench {backend}: {total} events ingested in {ingest:.2f}s"
        f" ({total / ingest:,.0f} events/s); {total} deliveries drained in {drain:.2f}s"
        f" ({total / drain:,.0f}/s, concurrency 8)"
    )
