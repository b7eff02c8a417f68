"""The base of every fake CRM: a real aiohttp server on 127.0.0.1 that records each request.

A vendor fake subclasses it, routes its documented endpoints, and answers 400 (with the
reason) to any request that strays from the vendor's document, so a test that only checks
"delivered" still proves the request was right. Tests queue trouble with `fail_next`
(a status with a JSON, HTML or empty body) and `hang_next` (never answer).
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class Recorded:
    method: str
    path: str
    raw_path: str  # path + query exactly as sent
    query: list[tuple[str, str]]
    headers: dict[str, str]
    body: bytes
    cookies: dict[str, str] = field(default_factory=dict)

    def json(self) -> Any:
        return json.loads(self.body)

    def form(self) -> list[tuple[str, str]]:
        from urllib.parse import parse_qsl

        return parse_qsl(self.body.decode(), keep_blank_values=True)


@dataclass
class Trouble:
    status: int
    body: str = ""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    hang: bool = False


HTML_ERROR_PAGE = (
    "<!DOCTYPE html><html><head><title>503 Service Unavailable</title></head>"
    "<body><h1>Service Unavailable</h1><p>The server is temporarily down for maintenance."
    "</p></body></html>"
)


class Rejected(Exception):
    """The request broke the vendor's document: answered 400 with the reason."""


class FakeCrm:
    def __init__(self) -> None:
        self.app = web.Application(middlewares=[self._middleware])
        self.requests: list[Recorded] = []
        self.rejections: list[str] = []
        self._trouble: deque[Trouble] = deque()
        self._release = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.url = ""
        self.routes(self.app.router)

    def routes(self, router: web.UrlDispatcher) -> None:
        raise NotImplementedError

    # ---------------------------------------------------------------- test controls

    def fail_next(
        self,
        status: int,
        body: str = "",
        content_type: str = "application/json",
        headers: dict[str, str] | None = None,
        times: int = 1,
    ) -> None:
        for _ in range(times):
            self._trouble.append(Trouble(status, body, content_type, headers or {}))

    def html_error_next(self, status: int = 503) -> None:
        self.fail_next(status, HTML_ERROR_PAGE, "text/html")

    def hang_next(self) -> None:
        self._trouble.append(Trouble(0, hang=True))

    def requests_to(self, suffix: str) -> list[Recorded]:
        return [r for r in self.requests if r.path.endswith(suffix)]

    # ---------------------------------------------------------------- plumbing

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        body = await request.read()
        self.requests.append(
            Recorded(
                method=request.method,
                path=request.path,
                raw_path=request.raw_path,
                query=list(request.query.items()),
                headers=dict(request.headers),
                body=body,
                cookies=dict(request.cookies),
            )
        )
        if self._trouble and not self._is_auth(request):
            trouble = self._trouble.popleft()
            if trouble.hang:
                await self._release.wait()
            return web.Response(
                status=trouble.status,
                text=trouble.body,
                content_type=trouble.content_type,
                headers=trouble.headers,
            )
        try:
            return await handler(request)
        except Rejected as exc:
            self.rejections.append(str(exc))
            return web.json_response({"error": str(exc)}, status=400)

    def _is_auth(self, request: web.Request) -> bool:
        """Token and login endpoints are not where queued trouble is meant to land."""
        return False

    async def start(self) -> FakeCrm:
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def stop(self) -> None:
        self._release.set()
        if self._runner is not None:
            await self._runner.cleanup()

    async def __aenter__(self) -> FakeCrm:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


def require(condition: bool, reason: str) -> None:
    if not condition:
        raise Rejected(reason)


def require_keys(
    what: str, got: dict[str, Any] | list[tuple[str, str]], expected: list[str]
) -> None:
    keys = [k for k, _ in got] if isinstance(got, list) else list(got)
    require(
        sorted(keys) == sorted(expected) and len(set(keys)) == len(keys),
        f"{what}: expected exactly {expected}, got {keys}",
    )
