"""Shared helpers for the store and outbox tests (no tests here).

Calls and events are built by hand (the tracker is not needed to test storage and delivery),
and the CRM is a real aiohttp server on 127.0.0.1 that records every request it takes.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
from aiohttp import web

from crm.dialects.base import Adapter, AdapterConfig, DeliveryError, DeliveryOutcome
from crm.model import Call, CallEvent, Direction, EventKind

T0 = datetime(2026, 11, 12, 9, 30, tzinfo=UTC)

KIND_BY_SEQ = [
    EventKind.RINGING,
    EventKind.ANSWERED,
    EventKind.HANGUP,
    EventKind.COMPLETED,
]


def make_call(call_id: str, *, pbx_id: str = "default", **fields: Any) -> Call:
    fields.setdefault("direction", Direction.INBOUND)
    fields.setdefault("caller_number", "+79031234567")
    fields.setdefault("called_number", "4951112233")
    fields.setdefault("start_time", T0)
    return Call(call_id=call_id, pbx_id=pbx_id, **fields)


def make_event(call: Call, seq: int, kind: EventKind | None = None) -> CallEvent:
    if kind is None:
        kind = KIND_BY_SEQ[(seq - 1) % len(KIND_BY_SEQ)]
    return CallEvent(
        call_id=call.call_id,
        seq=seq,
        kind=kind,
        at=T0 + timedelta(seconds=seq),
        call=call,
        extension="7181",
    )


def call_with_events(call_id: str, count: int, **fields: Any) -> tuple[Call, list[CallEvent]]:
    call = make_call(call_id, **fields)
    return call, [make_event(call, seq) for seq in range(1, count + 1)]


class PostJsonConfig(AdapterConfig):
    type: str = "test-post-json"
    url: str


class PostJsonAdapter(Adapter):
    """A tiny generic CRM dialect for tests: POST the event as JSON, judge the answer."""

    def __init__(self, config: PostJsonConfig, http: aiohttp.ClientSession) -> None:
        super().__init__(config, http)
        self.url = config.url

    async def deliver(self, event: CallEvent, idempotency_key: str) -> DeliveryOutcome:
        body = {
            "key": idempotency_key,
            "call_id": event.call_id,
            "seq": event.seq,
            "kind": event.kind.value,
        }
        async with self.http.post(
            self.url, json=body, headers={"Idempotency-Key": idempotency_key}
        ) as response:
            text = await response.text()
            if response.status == 429:
                retry_after = response.headers.get("Retry-After")
                raise DeliveryError(
                    "rate limited",
                    retryable=True,
                    status=429,
                    response=text,
                    retry_after=float(retry_after) if retry_after else None,
                )
            if response.status >= 500 or response.status == 408:
                raise DeliveryError(
                    f"CRM error {response.status}",
                    retryable=True,
                    status=response.status,
                    response=text,
                )
            if response.status >= 400:
                raise DeliveryError(
                    f"CRM refused: {response.status}",
                    retryable=False,
                    status=response.status,
                    response=text,
                )
            try:
                answer = json.loads(text)
            except ValueError:
                # A login page where JSON was due: retrying will not log us in.
                raise DeliveryError(
                    "CRM answered with something that is not JSON",
                    retryable=False,
                    status=response.status,
                    response=text,
                ) from None
            matched = answer.get("status") != "unmatched" if isinstance(answer, dict) else None
            return DeliveryOutcome(status=response.status, matched=matched, response=text)


def make_adapter(
    http: aiohttp.ClientSession, url: str, *, name: str = "crm", **config: Any
) -> PostJsonAdapter:
    return PostJsonAdapter(PostJsonConfig(name=name, url=url, **config), http)


@dataclass
class Received:
    key: str
    call_id: str
    seq: int
    kind: str


Behaviour = Callable[[Received, int], Awaitable[web.StreamResponse]]


async def _accept(received: Received, count: int) -> web.StreamResponse:
    return web.json_response({"status": "ok"})


@dataclass
class FakeCrm:
    """An aiohttp server on 127.0.0.1 (port 0) that records each request it answered.

    `behaviour(received, nth_arrival_of_this_key)` decides the answer; only requests answered
    with 2xx are appended to `accepted`; every request is appended to `arrivals`.
    """

    behaviour: Behaviour = _accept
    arrivals: list[Received] = field(default_factory=list)
    accepted: list[Received] = field(default_factory=list)
    url: str = ""
    _runner: web.AppRunner | None = None
    _changed: asyncio.Condition | None = None

    async def start(self) -> FakeCrm:
        app = web.Application()
        app.router.add_post("/events", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}/events"
        self._changed = asyncio.Condition()
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        received = Received(body["key"], body["call_id"], body["seq"], body["kind"])
        self.arrivals.append(received)
        count = sum(1 for r in self.arrivals if r.key == received.key)
        response = await self.behaviour(received, count)
        if 200 <= response.status < 300:
            self.accepted.append(received)
        assert self._changed is not None
        async with self._changed:
            self._changed.notify_all()
        return response

    async def wait_for(self, condition: Callable[[], bool], timeout: float = 10.0) -> None:
        assert self._changed is not None
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(condition)


async def wait_until(
    condition: Callable[[], Awaitable[bool]], timeout: float = 10.0, interval: float = 0.01
) -> None:
    """Poll an async condition (e.g. a DB query) until true; fail after `timeout`."""
    async with asyncio.timeout(timeout):
        while not await condition():
            await asyncio.sleep(interval)


class FakeClock:
    """A wall clock the test moves by hand: an hour of CRM outage takes no real time."""

    def __init__(self, start: float = 1_794_475_800.0) -> None:
        self.t = start

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


async def outbox_rows(store: Any, where: str = "1", params: tuple = ()) -> list[dict[str, Any]]:
    """Outbox rows as dicts, read through the store's reader connection."""
    cursor = await store.reader.execute(
        "SELECT id, adapter, call_id, seq, idempotency_key, state, attempts, next_attempt_at,"
        " last_error, last_status, last_response, delivered_at FROM outbox"
        f" WHERE {where} ORDER BY id",
        params,
    )
    names = [d[0] for d in cursor.description]
    rows = await cursor.fetchall()
    await cursor.close()
    return [dict(zip(names, row, strict=True)) for row in rows]
