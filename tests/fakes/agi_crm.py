"""A jtel-style lookup service for the AGI tests: real aiohttp on 127.0.0.1, port 0.

200 one record, 300 several, 404 none (jtel-acd-callback-rest.txt); `hang` makes it never
answer until the test ends, to prove the IVR's time budget.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web


class JtelForAgi:
    def __init__(self, records: dict[str, Any]) -> None:
        self.records = records  # CallerID (E.164 without +) -> record, or a list for 300
        self.requests: list[dict[str, str]] = []
        self.hang = False
        self._release = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def _lookup(self, request: web.Request) -> web.Response:
        form = {k: str(v) for k, v in (await request.post()).items()}
        self.requests.append(form)
        if self.hang:
            await self._release.wait()
        record = self.records.get(form.get("CallerID", ""))
        if record is None:
            return web.json_response({}, status=404)
        if isinstance(record, list):
            return web.json_response({}, status=300)
        return web.json_response(record)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/lookup", self._lookup)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}/lookup"

    async def stop(self) -> None:
        self._release.set()
        if self._runner is not None:
            await self._runner.cleanup()
