"""Fake jtel-style REST lookup: POST CallerID (E.164 without +) and friends; 200/300/404."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web

from tests.fakes.crm_server import FakeCrm, require, require_keys

PARAMETERS = [
    "CallerID",
    "ServiceNumber",
    "ServiceName",
    "Function",
    "UserData",
    "UserData2",
    "UserData3",
]


class FakeJtel(FakeCrm):
    def __init__(self, records: dict[str, Any] | None = None) -> None:
        self.records = records or {}  # CallerID -> one record (dict) or several (list)
        super().__init__()

    def routes(self, router: web.UrlDispatcher) -> None:
        router.add_post("/lookup", self.lookup)

    async def lookup(self, request: web.Request) -> web.Response:
        raw = (await request.read()).decode()
        if request.content_type == "application/json":
            params = json.loads(raw)
        else:
            require(
                request.content_type == "application/x-www-form-urlencoded",
                f"content type {request.content_type}",
            )
            params = dict(parse_qsl(raw, keep_blank_values=True))
        require_keys("jtel parameters", params, PARAMETERS)
        caller = params["CallerID"]
        require(caller.isdigit(), f"CallerID {caller!r} must be E.164 without +")
        record = self.records.get(caller)
        if record is None:
            return web.json_response({}, status=404)
        if isinstance(record, list):
            return web.json_response({}, status=300)
        return web.json_response(record)
