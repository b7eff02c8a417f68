"""A local webhook CRM for the benchmarks: answers each POST after `delay_ms`, counts every
Idempotency-Key it sees (duplicates are reported) and notes when each request arrived."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from typing import Any

from aiohttp import web

from tests.benchmarks.worker import Link, role


class CrmSink:
    def __init__(self, delay_ms: float = 0.0) -> None:
        self.delay = delay_ms / 1000.0
        self.keys: Counter[str] = Counter()
        # (call_id, kind) -> monotonic time the request arrived (first arrival)
        self.arrivals: dict[tuple[str, str], float] = {}
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/events", self._event)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", 0, backlog=1024).start()
        self.url = f"http://127.0.0.1:{self.runner.addresses[0][1]}/events"

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    async def _event(self, request: web.Request) -> web.Response:
        arrived = time.monotonic()
        body = await request.read()
        self.keys[request.headers.get("Idempotency-Key", "")] += 1
        event = json.loads(body)
        self.arrivals.setdefault((event["call_id"], event["kind"]), arrived)
        if self.delay:
            await asyncio.sleep(self.delay)  # the CRM's own processing time
        return web.json_response({"ok": True})

    def summary(self) -> dict[str, Any]:
        return {
            "requests": sum(self.keys.values()),
            "distinct": len(self.keys),
            "duplicates": sum(n - 1 for n in self.keys.values() if n > 1),
        }


@role("crm_sink")
async def crm_sink(link: Link, args: dict[str, Any]) -> dict[str, Any]:
    sink = CrmSink(float(args.get("delay_ms", 0)))
    await sink.start()
    link.send(ready={"url": sink.url})
    while (await link.command()).get("cmd") != "stop":
        pass
    await sink.stop()
    return sink.summary()
