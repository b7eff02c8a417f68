"""A CRM that answers badly, per call: 500, 429 with Retry-After, an HTML error page, JSON that
is not JSON, hanging, and a server that does not speak HTTP at all. Through the real webhook
dialect and the real outbox: retries are bounded (max_attempts), what cannot go is a dead letter
with the CRM's status and answer kept, and no poisoned message holds anything behind it (the
healthy calls go out in order, and a dead head does not block the rest of its own call).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import Counter, defaultdict
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from crm.delivery.outbox import Outbox
from crm.dialects.base import Adapter
from crm.dialects.registry import build_adapter, parse_adapter_config
from crm.store.settings import OutboxSettings, StoreSettings
from crm.store.sqlite import Store
from tests.fakes.crm_server import HTML_ERROR_PAGE
from tests.test_store_support import call_with_events

MAX_ATTEMPTS = 3
POISONED = ("poison-500", "poison-html", "poison-notjson", "poison-hang")


class TroubledCrm:
    """Answers by call: `poison-*` calls get their trouble, `slow-429` two 429s per event."""

    def __init__(self) -> None:
        self.arrivals: list[tuple[str, int, str]] = []  # (call_id, seq, key), every attempt
        self.accepted: list[tuple[str, int, str]] = []
        self.tries: Counter[str] = Counter()
        self.release = asyncio.Event()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        call_id, seq, key = body["call_id"], body["seq"], body["idempotency_key"]
        self.arrivals.append((call_id, seq, key))
        self.tries[key] += 1
        if call_id == "poison-500":
            return web.json_response({"error": "database is down"}, status=500)
        if call_id == "poison-html":
            return web.Response(status=503, text=HTML_ERROR_PAGE, content_type="text/html")
        if call_id == "poison-notjson":
            return web.Response(status=502, text="{{{<not json", content_type="application/json")
        if call_id == "poison-hang":
            await self.release.wait()  # (released at teardown, long after pbxcrm gave up)
            return web.Response(status=504)
        if call_id == "slow-429" and self.tries[key] <= 2:
            return web.Response(status=429, headers={"Retry-After": "1"}, text="slow down")
        self.accepted.append((call_id, seq, key))
        return web.json_response({"ok": True})


@contextlib.asynccontextmanager
async def troubled_crm() -> AsyncIterator[tuple[TroubledCrm, str]]:
    crm = TroubledCrm()
    app = web.Application()
    app.router.add_post("/events", crm.handle)
    runner = web.AppRunner(app, shutdown_timeout=0.1, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield crm, f"http://127.0.0.1:{port}/events"
    finally:
        crm.release.set()
        await runner.cleanup()


@contextlib.asynccontextmanager
async def not_http_server() -> AsyncIterator[tuple[list[bytes], str]]:
    """Accepts, reads the request, answers bytes that are not HTTP, closes."""
    seen: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            seen.append(await reader.read(65536))
            writer.write(b"\x00\x17SSH-2.0-OpenSSH_9.6 garbage\r\n\xff\xfe")
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield seen, f"http://127.0.0.1:{port}/events"
    finally:
        server.close()
        await server.wait_closed()


def webhook(http: aiohttp.ClientSession, name: str, url: str) -> Adapter:
    config = parse_adapter_config(
        {
            "type": "webhook",
            "name": name,
            "url": url,
            "max_attempts": MAX_ATTEMPTS,
            "timeout_seconds": 0.3,
            "concurrency": 4,
        }
    )
    return build_adapter(config, http)


async def rows(store: Store) -> list[dict]:
    cursor = await store.reader.execute(
        "SELECT adapter, call_id, seq, state, attempts, last_status, last_response, last_error"
        " FROM outbox ORDER BY id"
    )
    names = [d[0] for d in cursor.description]
    result = [dict(zip(names, row, strict=True)) for row in await cursor.fetchall()]
    await cursor.close()
    return result


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    store = await Store.open(StoreSettings(path=str(tmp_path / "pbxcrm.sqlite3")))
    yield store
    await store.close()


async def test_every_kind_of_bad_answer_is_retried_a_bounded_number_of_times_then_kept_as_a_dead_letter_and_blocks_nothing(  # noqa: E501
    store: Store, fault_report: list[str]
) -> None:
    async with (
        troubled_crm() as (crm, url),
        not_http_server() as (garbage_seen, garbage_url),
        aiohttp.ClientSession() as http,
    ):
        good = webhook(http, "crm", url)
        bad = webhook(http, "not-http", garbage_url)
        calls = [*POISONED, "slow-429", *(f"ok-{i}" for i in range(6))]
        outbox = Outbox(
            store,
            {good.name: good, bad.name: bad},
            OutboxSettings(
                base_delay_seconds=0.05, max_delay_seconds=0.2, poll_interval_seconds=0.05
            ),
        )
        await outbox.start()
        try:
            for call_id in calls:
                call, events = call_with_events(call_id, 3)
                for event in events:
                    await store.record(call, [event], [good, bad])

            async def finished() -> bool:
                return all(r["state"] != "pending" for r in await rows(store))

            async with asyncio.timeout(30):
                while not await finished():
                    await asyncio.sleep(0.05)
        finally:
            await outbox.stop()

    table = await rows(store)
    by = defaultdict(list)
    for row in table:
        by[(row["adapter"], row["call_id"])].append(row)

    # Healthy calls (and the one that was told to slow down) all went, in order, once each.
    for call_id in ["slow-429", *(f"ok-{i}" for i in range(6))]:
        assert [r["state"] for r in by[("crm", call_id)]] == ["done"] * 3, call_id
        assert [seq for c, seq, _ in crm.accepted if c == call_id] == [1, 2, 3], call_id
    dup = [k for k, n in Counter(k for _, _, k in crm.accepted).items() if n > 1]
    assert not dup, (dup, [r for r in table if r["adapter"] == "crm" and r["attempts"] > 1])

    # Every poisoned delivery: tried exactly max_attempts times, then dead, answer kept.
    for call_id in POISONED:
        for row in by[("crm", call_id)]:
            assert row["state"] == "dead" and row["attempts"] == MAX_ATTEMPTS, row
    kept = {call_id: by[("crm", call_id)][0] for call_id in POISONED}
    assert kept["poison-500"]["last_status"] == 500
    assert "database is down" in kept["poison-500"]["last_response"]
    assert kept["poison-html"]["last_status"] == 503
    assert "Service Unavailable" in kept["poison-html"]["last_response"]
    assert kept["poison-notjson"]["last_status"] == 502
    assert "not json" in kept["poison-notjson"]["last_response"]
    assert "timed out" in kept["poison-hang"]["last_error"]
    for key, tries in crm.tries.items():
        assert tries <= MAX_ATTEMPTS, (key, tries)

    # A server that does not speak HTTP: every row dead after max_attempts, with the reason.
    not_http = [r for r in table if r["adapter"] == "not-http"]
    assert len(not_http) == len(calls) * 3
    assert all(r["state"] == "dead" and r["attempts"] == MAX_ATTEMPTS for r in not_http)
    assert all(r["last_error"] for r in not_http)
    assert len(garbage_seen) == len(not_http) * MAX_ATTEMPTS
    # A dead head did not hold back its own call: seq 2 and 3 of each poisoned call were tried.
    for call_id in POISONED:
        assert {seq for c, seq, _ in crm.arrivals if c == call_id} == {1, 2, 3}
    fault_report.append(
        f"CRM answers: 500, 429+Retry-After, HTML, broken JSON, hanging, not-HTTP:"
        f" {len(table)} deliveries, every failing one dead after exactly {MAX_ATTEMPTS}"
        f" attempts with the answer kept, {len(crm.accepted)} healthy ones delivered in order"
    )
    json.dumps(table)  # the rows `pbxcrm outbox list` prints are plain data
