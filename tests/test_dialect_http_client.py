"""crm.transport.http_client: Retry-After, redaction, and the static auth schemes on the wire."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from aiohttp import web

from crm.secrets import _resolve
from crm.transport.http_client import (
    AuthConfig,
    build_auth,
    parse_retry_after,
    safe_url,
    send_with_auth,
)
from tests.fakes.crm_harness import client_session
from tests.fakes.crm_server import FakeCrm


def test_retry_after_accepts_seconds_and_http_dates_and_ignores_nonsense():
    now = datetime(2026, 11, 23, 7, 0, 0, tzinfo=UTC)
    assert parse_retry_after("120", now) == 120.0
    assert parse_retry_after("Mon, 23 Nov 2026 07:00:30 GMT", now) == 30.0
    assert parse_retry_after("Mon, 23 Nov 2026 06:00:00 GMT", now) == 0.0
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after(None, now) is None


def test_urls_in_messages_lose_their_query_and_configured_secrets():
    _resolve("path-token-5678", None)  # as loading a config with this secret does
    assert safe_url("https://crm.example/0/rest/X/path-token-5678/Ring?token=abc&cid=1") == (
        "https://crm.example/0/rest/X/***/Ring"
    )


class Echo(FakeCrm):
    def routes(self, router: web.UrlDispatcher) -> None:
        router.add_get("/", self.echo)

    async def echo(self, request: web.Request) -> web.Response:
        return web.json_response({})


@pytest.mark.parametrize(
    ("auth", "header", "value"),
    [
        ({"mode": "bearer", "token": "tok-1234"}, "Authorization", "Bearer tok-1234"),
        ({"mode": "header", "header": "X-Api-Key", "token": "key-1234"}, "X-Api-Key", "key-1234"),
        (
            {"mode": "basic", "username": "crm", "password": "pw-1234"},
            "Authorization",
            "Basic Y3JtOnB3LTEyMzQ=",
        ),
    ],
)
async def test_static_auth_schemes_put_their_header_on_the_request(auth, header, value):
    async with Echo() as echo, client_session() as http:
        reply = await send_with_auth(
            http, build_auth(AuthConfig(**auth), 2), "GET", echo.url + "/", timeout=2
        )
    assert reply.status == 200
    assert echo.requests[0].headers[header] == value
