"""The outbox delivers every recorded event to a real HTTP CRM: once, in order, with retries."""

from __future__ import annotations

import asyncio
import json
import random
import socket
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import aiohttp
import pytest
from aiohttp import web

from crm.delivery.outbox import Outbox
from crm.dialects.base import Adapter
from crm.metrics import REGISTRY
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
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(time.time())


@pytest.fixture
async def store(tmp_path, clock: FakeClock) -> AsyncIterator[Store]:
    # The store stamps new rows with the same clock the outbox reads: with a fake clock, new
    # rows are due at once, and with the real one (later than the fake) too.
    store = await Store.open(StoreSettings(path=str(tmp_path / "pbxcrm.sqlite3")), now=clock)
    yield store
    await store.close()


@asynccontextmanager
async def running(
    store: Store,
    adapters: list[Adapter],
    *,
    now: Callable[[], float] | None = None,
    rand: Callable[[], float] | None = None,
    **settings: float,
) -> AsyncIterator[Outbox]:
    settings.setdefault("poll_interval_seconds", 0.02)
    kwargs = {}
    if now is not None:
        kwargs["now"] = now
    if rand is not None:
        kwargs["rand"] = rand
    outbox = Outbox(store, {a.name: a for a in adapters}, OutboxSettings(**settings), **kwargs)
    await outbox.start()
    try:
        yield outbox
    finally:
        await outbox.stop()


@asynccontextmanager
async def fake_crm(behaviour=None) -> AsyncIterator[FakeCrm]:
    crm = FakeCrm() if behaviour is None else FakeCrm(behaviour=behaviour)
    await crm.start()
    try:
        yield crm
    finally:
        await crm.stop()


def delivered_counter(adapter: str, outcome: str) -> float:
    value = REGISTRY.get_sample_value(
        "pbxcrm_deliveries_total", {"adapter": adapter, "outcome": outcome}
    )
    return value or 0.0


def seqs_by_call(received: list[Received]) -> dict[str, list[int]]:
    by_call: dict[str, list[int]] = defaultdict(list)
    for item in received:
        by_call[item.call_id].append(item.seq)
    return dict(by_call)


async def test_every_recorded_event_reaches_the_crm_once_with_its_idempotency_key(
    store: Store, http: aiohttp.ClientSession
) -> None:
    async with fake_crm() as crm:
        adapter = make_adapter(http, crm.url)
        async with running(store, [adapter]):
            for i in range(10):
                await store.record(*call_with_events(f"call{i}", 4), [adapter])
            await crm.wait_for(lambda: len(crm.accepted) == 40)

        keys = sorted(r.key for r in crm.arrivals)
        assert keys == sorted(
            f"crm:default:call{i}:{seq}:{kind}"
            for i in range(10)
            for seq, kind in enumerate(["ringing", "answered", "hangup", "completed"], start=1)
        )
        rows = await outbox_rows(store)
        assert {(r["state"], r["attempts"], r["last_status"]) for r in rows} == {("done", 1, 200)}
        assert all(r["delivered_at"] is not None for r in rows)


async def test_each_call_reaches_a_slow_random_crm_in_seq_order_while_calls_run_concurrently(
    store: Store, http: aiohttp.ClientSession
) -> None:
    rng = random.Random(7)
    in_flight = 0
    most_in_flight = 0

    async def slow(received: Received, count: int) -> web.StreamResponse:
        nonlocal in_flight, most_in_flight
        in_flight += 1
        most_in_flight = max(most_in_flight, in_flight)
        try:
            await asyncio.sleep(rng.uniform(0, 0.02))  # the CRM's own think time
            return web.json_response({"status": "ok"})
        finally:
            in_flight -= 1

    async with fake_crm(slow) as crm:
        adapter = make_adapter(http, crm.url, concurrency=8)
        calls = [call_with_events(f"c{i}", 5) for i in range(40)]
        async with running(store, [adapter]):
            # Events of different calls recorded interleaved, as a live switch produces them.
            for seq in range(5):
                await asyncio.gather(
                    *(store.record(call, [events[seq]], [adapter]) for call, events in calls)
                )
            await crm.wait_for(lambda: len(crm.accepted) == 200, timeout=20)

    assert seqs_by_call(crm.arrivals) == {f"c{i}": [1, 2, 3, 4, 5] for i in range(40)}
    assert 1 < most_in_flight <= 8


async def test_concurrency_is_limited_per_adapter(
    store: Store, http: aiohttp.ClientSession
) -> None:
    release = asyncio.Event()
    in_flight: dict[str, int] = defaultdict(int)
    most: dict[str, int] = defaultdict(int)

    async def held(received: Received, count: int) -> web.StreamResponse:
        name = received.key.split(":", 1)[0]
        in_flight[name] += 1
        most[name] = max(most[name], in_flight[name])
        await release.wait()
        in_flight[name] -= 1
        return web.json_response({})

    async with fake_crm(held) as crm:
        narrow = make_adapter(http, crm.url, name="narrow", concurrency=2)
        wide = make_adapter(http, crm.url, name="wide", concurrency=5)
        async with running(store, [narrow, wide]):
            for i in range(10):
                await store.record(*call_with_events(f"c{i}", 1), [narrow, wide])
            await crm.wait_for(lambda: len(crm.arrivals) == 7)
            assert dict(in_flight) == {"narrow": 2, "wide": 5}
            release.set()
            await crm.wait_for(lambda: len(crm.accepted) == 20)
    assert dict(most) == {"narrow": 2, "wide": 5}


async def test_a_500_is_retried_with_exponential_backoff_until_it_succeeds(
    store: Store, http: aiohttp.ClientSession, clock: FakeClock
) -> None:
    async def flaky(received: Received, count: int) -> web.StreamResponse:
        if count <= 3:
            return web.Response(status=500, text="upstream exploded")
        return web.json_response({"status": "ok"})

    retries_before = delivered_counter("crm", "retry")
    async with fake_crm(flaky) as crm:
        adapter = make_adapter(http, crm.url)
        # rand() = 1: the full jittered delay, so the backoff is visible exactly.
        async with running(
            store, [adapter], now=clock, rand=lambda: 1.0, base_delay_seconds=2, max_delay_seconds=5
        ) as outbox:
            await store.record(*call_with_events("flaky", 1), [adapter])
            for attempt, delay in [(1, 2.0), (2, 4.0), (3, 5.0)]:  # 2, 4, then capped at 5
                await wait_until(lambda a=attempt: attempts_are(store, a))
                (row,) = await outbox_rows(store)
                assert row["state"] == "pending"
                assert row["next_attempt_at"] == pytest.approx(clock() + delay)
                assert row["last_status"] == 500
                assert row["last_response"] == "upstream exploded"
                clock.advance(delay)
                outbox.notify()
            await crm.wait_for(lambda: len(crm.accepted) == 1)
            await wait_until(lambda: attempts_are(store, 4))

    (row,) = await outbox_rows(store)
    assert (row["state"], row["attempts"], row["last_status"]) == ("done", 4, 200)
    assert len(crm.arrivals) == 4
    assert {r.key for r in crm.arrivals} == {"crm:default:flaky:1:ringing"}
    assert delivered_counter("crm", "retry") - retries_before == 3


async def attempts_are(store: Store, attempts: int) -> bool:
    rows = await outbox_rows(store)
    return bool(rows) and rows[0]["attempts"] == attempts


async def test_a_crm_that_does_not_answer_in_time_is_retried(
    store: Store, http: aiohttp.ClientSession
) -> None:
    never = asyncio.Event()

    async def hangs_first(received: Received, count: int) -> web.StreamResponse:
        if count == 1:
            await never.wait()  # released when the test ends
        return web.json_response({})

    async with fake_crm(hangs_first) as crm:
        adapter = make_adapter(http, crm.url, timeout_seconds=0.2)
        async with running(store, [adapter], rand=lambda: 0.0):
            await store.record(*call_with_events("slow", 1), [adapter])
            await crm.wait_for(lambda: len(crm.accepted) == 1)
            await wait_until(lambda: attempts_are(store, 2))
        never.set()
    (row,) = await outbox_rows(store)
    assert (row["state"], row["attempts"]) == ("done", 2)
    assert len(crm.arrivals) == 2


async def test_connection_refused_is_retried_then_dead_lettered_after_max_attempts(
    store: Store, http: aiohttp.ClientSession, clock: FakeClock
) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    adapter = make_adapter(http, f"http://127.0.0.1:{port}/events", max_attempts=3)
    async with running(store, [adapter], now=clock, rand=lambda: 1.0) as outbox:
        await store.record(*call_with_events("refused", 1), [adapter])
        for attempt, delay in [(1, 1.0), (2, 2.0)]:
            await wait_until(lambda a=attempt: attempts_are(store, a))
            (row,) = await outbox_rows(store)
            assert row["next_attempt_at"] == pytest.approx(clock() + delay)
            assert "Cannot connect" in row["last_error"] or "Connect" in row["last_error"]
            clock.advance(delay)
            outbox.notify()
        await wait_until(lambda: attempts_are(store, 3))
    (row,) = await outbox_rows(store)
    assert row["state"] == "dead"
    assert row["last_error"].startswith("gave up after 3 attempts")


async def test_a_429_waits_for_the_crm_retry_after(
    store: Store, http: aiohttp.ClientSession, clock: FakeClock
) -> None:
    async def limited(received: Received, count: int) -> web.StreamResponse:
        if count == 1:
            return web.Response(status=429, text="slow down", headers={"Retry-After": "30"})
        return web.json_response({})

    async with fake_crm(limited) as crm:
        adapter = make_adapter(http, crm.url)
        async with running(store, [adapter], now=clock, rand=lambda: 0.5) as outbox:
            await store.record(*call_with_events("limited", 1), [adapter])
            await wait_until(lambda: attempts_are(store, 1))
            (row,) = await outbox_rows(store)
            # The jittered backoff alone would be 0.5 s; the CRM asked for 30.
            assert row["next_attempt_at"] == pytest.approx(clock() + 30)
            assert (row["state"], row["last_status"]) == ("pending", 429)
            clock.advance(30)
            outbox.notify()
            await crm.wait_for(lambda: len(crm.accepted) == 1)


async def test_a_4xx_or_html_answer_is_dead_lettered_with_the_answer_kept_and_the_call_goes_on(
    store: Store, http: aiohttp.ClientSession
) -> None:
    async def picky(received: Received, count: int) -> web.StreamResponse:
        if received.call_id == "bad-phone" and received.seq == 1:
            return web.json_response({"error": "invalid phone"}, status=422)
        if received.call_id == "login-page" and received.seq == 2:
            return web.Response(
                text="<html><body>Please log in</body></html>", content_type="text/html"
            )
        return web.json_response({"status": "ok"})

    dead_before = delivered_counter("crm", "dead")
    async with fake_crm(picky) as crm:
        adapter = make_adapter(http, crm.url)
        async with running(store, [adapter]):
            await store.record(*call_with_events("bad-phone", 3), [adapter])
            await store.record(*call_with_events("login-page", 3), [adapter])
            await wait_until(lambda: all_finished(store))

    assert seqs_by_call(crm.arrivals) == {"bad-phone": [1, 2, 3], "login-page": [1, 2, 3]}
    dead = await outbox_rows(store, "state = 'dead'")
    assert [(r["call_id"], r["seq"], r["attempts"], r["last_status"]) for r in dead] == [
        ("bad-phone", 1, 1, 422),
        ("login-page", 2, 1, 200),
    ]
    assert json.loads(dead[0]["last_response"]) == {"error": "invalid phone"}
    assert "Please log in" in dead[1]["last_response"]
    assert delivered_counter("crm", "dead") - dead_before == 2


async def all_finished(store: Store) -> bool:
    return not await outbox_rows(store, "state = 'pending'")


async def test_an_unmatched_answer_is_done_and_counted_as_unmatched_not_failed(
    store: Store, http: aiohttp.ClientSession
) -> None:
    async def unmatched(received: Received, count: int) -> web.StreamResponse:
        return web.json_response({"status": "unmatched"})

    before = delivered_counter("crm", "unmatched")
    async with fake_crm(unmatched) as crm:
        adapter = make_adapter(http, crm.url)
        async with running(store, [adapter]):
            await store.record(*call_with_events("stranger", 2), [adapter])
            await wait_until(lambda: all_finished(store))
    rows = await outbox_rows(store)
    assert [r["state"] for r in rows] == ["done", "done"]
    assert delivered_counter("crm", "unmatched") - before == 2


async def test_a_crm_down_for_an_hour_gets_everything_in_order_without_duplicates_when_it_returns(
    store: Store, http: aiohttp.ClientSession, clock: FakeClock
) -> None:
    down_until = clock() + 3600

    async def outage(received: Received, count: int) -> web.StreamResponse:
        if clock() < down_until:
            return web.Response(status=503, text="maintenance")
        return web.json_response({"status": "ok"})

    async with fake_crm(outage) as crm:
        adapter = make_adapter(http, crm.url, max_attempts=100, concurrency=8)
        async with running(
            store,
            [adapter],
            now=clock,
            rand=random.Random(3).random,
            base_delay_seconds=1,
            max_delay_seconds=300,
        ) as outbox:
            for i in range(20):
                await store.record(*call_with_events(f"c{i}", 3), [adapter])
            # Walk the clock through the outage a minute at a time; each step lets the due
            # retries go (and fail) before the next.
            while clock() < down_until + 300:
                clock.advance(60)
                outbox.notify()
                await wait_until(lambda: nothing_due(store, clock()))
            await wait_until(lambda: all_finished(store))

    accepted_keys = [r.key for r in crm.accepted]
    assert len(set(accepted_keys)) == len(accepted_keys) == 60
    assert seqs_by_call(crm.accepted) == {f"c{i}": [1, 2, 3] for i in range(20)}
    rows = await outbox_rows(store)
    assert all(r["state"] == "done" for r in rows)
    assert max(r["attempts"] for r in rows if r["seq"] == 1) > 5  # it really kept retrying


async def nothing_due(store: Store, now: float) -> bool:
    """No deliverable row is due at `now`: every due head of a call was tried and rescheduled.

    Rows behind a pending lower seq of their call are due but not deliverable, so not counted.
    """
    cursor = await store.reader.execute(
        "SELECT COUNT(*) FROM outbox o WHERE o.state = 'pending' AND o.next_attempt_at <= ?"
        " AND NOT EXISTS (SELECT 1 FROM outbox p WHERE p.state = 'pending'"
        " AND p.call_id = o.call_id AND p.adapter = o.adapter AND p.seq < o.seq)",
        (now,),
    )
    (count,) = await cursor.fetchone()
    await cursor.close()
    return count == 0


async def test_rows_for_an_adapter_no_longer_configured_wait_and_are_not_lost(
    store: Store, http: aiohttp.ClientSession
) -> None:
    async with fake_crm() as crm:
        old = make_adapter(http, crm.url, name="old")
        current = make_adapter(http, crm.url, name="current")
        await store.record(*call_with_events("c", 1), [old, current])
        async with running(store, [current]):
            await crm.wait_for(lambda: len(crm.accepted) == 1)
        assert [r.key for r in crm.accepted] == ["current:default:c:1:ringing"]
        pending = await outbox_rows(store, "state = 'pending'")
        assert [r["adapter"] for r in pending] == ["old"]


def test_backoff_is_full_jitter_capped_and_honours_retry_after(store: Store) -> None:
    outbox = Outbox(
        store,
        {},
        OutboxSettings(base_delay_seconds=1, max_delay_seconds=60, max_retry_after_seconds=600),
        rand=lambda: 1.0,
    )
    assert [outbox.backoff(n) for n in range(1, 9)] == [1, 2, 4, 8, 16, 32, 60, 60]
    assert outbox.backoff(1, retry_after=120) == 120
    assert outbox.backoff(1, retry_after=86400) == 600
    low = Outbox(store, {}, OutboxSettings(), rand=lambda: 0.0)
    assert low.backoff(5) == 0.0
