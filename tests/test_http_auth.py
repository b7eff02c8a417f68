"""Every route but /healthz is locked: tokens, basic, address allowlists, proxies, body limits."""

from __future__ import annotations

import logging
import re

import aiohttp
from aiohttp import web

from ari_app.app.http_server import build_http_app
from ari_app.web.deps import HttpDeps
from tests.test_http_support import (
    CRM_TOKEN,
    FIX_PASSWORD,
    FIX_USER,
    RecordedAmiBackend,
    basic,
    bearer,
    make_service,
    make_settings,
    running,
)


def _concrete(canonical: str) -> str:
    # Wrong-but-plausible values: a token of the right length, a well-formed file name.
    values = {
        "token": "x" * 26,
        "file": "1795418967.2.wav",
        "id": "c2c-0123456789abcdef",
        "asset": "agent.js",
        "call_id": "1795417965.0",
    }
    return re.sub(r"\{(\w+)\}", lambda m: values[m.group(1)], canonical)


async def test_every_route_except_healthz_refuses_a_request_without_credentials(tmp_path):
    settings = make_settings(tmp_path)
    deps = HttpDeps(settings=settings)
    routes = [
        (route.method, route.resource.canonical)
        for route in build_http_app(deps).router.routes()
        if route.resource is not None
    ]
    assert len(routes) >= 10
    async with running(deps) as server:
        for method, canonical in routes:
            async with server.session.request(method, server.url(_concrete(canonical))) as resp:
                body = await resp.json()
                if canonical == "/healthz":
                    assert resp.status == 200, canonical
                    continue
                assert resp.status in (401, 403), f"{method} {canonical} -> {resp.status}"
                assert body in ({"error": "unauthorized"}, {"error": "forbidden"}), canonical


async def test_healthz_is_open_and_says_nothing_else(tmp_path):
    async with running(HttpDeps(settings=make_settings(tmp_path))) as server:
        async with server.session.get(server.url("/healthz")) as resp:
            assert resp.status == 200
            assert await resp.json() == {"status": "ok"}


async def test_a_wrong_token_gets_the_same_answer_as_no_token(tmp_path):
    async with running(HttpDeps(settings=make_settings(tmp_path))) as server:
        url = server.url("/api/openapi.json")
        async with server.session.get(url) as none:
            no_token = (none.status, await none.json())
        async with server.session.get(url, headers=bearer(CRM_TOKEN[:-1] + "X")) as wrong:
            wrong_token = (wrong.status, await wrong.json())
        async with server.session.get(url, headers={"X-Api-Token": CRM_TOKEN}) as right:
            assert right.status == 200
        assert no_token == wrong_token == (401, {"error": "unauthorized"})


async def test_basic_auth_needs_the_right_password_and_a_dialling_route_never_challenges(
    tmp_path,
):
    async with running(HttpDeps(settings=make_settings(tmp_path))) as server:
        url = server.url("/fixdigital/makecall?sExt=101&sNumber=89161234567")
        async with server.session.get(url, headers=basic(FIX_USER, FIX_PASSWORD + "x")) as resp:
            assert resp.status == 401
            # A challenge would make a browser ask for, keep and then send credentials with
            # any page's <img src=".../fixdigital/makecall?...">: a GET that dials.
            assert "WWW-Authenticate" not in resp.headers
        async with server.session.get(url) as resp:
            assert resp.status == 401
            assert "WWW-Authenticate" not in resp.headers
        # A route that cannot dial still challenges (3CX's template answers a challenge).
        async with server.session.get(server.url("/api/v1/calls")) as resp:
            assert resp.headers["WWW-Authenticate"].startswith("Basic")
        # Right credentials pass auth; with no PBX wired in, click-to-call answers 503.
        async with server.session.get(url, headers=basic()) as resp:
            assert resp.status == 503
            assert (await resp.json())["success"] is False


async def test_a_right_token_from_outside_its_allowlist_gets_the_answer_of_a_wrong_one(tmp_path):
    settings = make_settings(
        tmp_path,
        clients=[
            {"name": "crm", "token": CRM_TOKEN, "allow_from": ["10.0.0.0/8"], "routes": ["openapi"]}
        ],
    )
    async with running(HttpDeps(settings=settings)) as server:
        url = server.url("/api/openapi.json")
        async with server.session.get(url, headers=bearer()) as resp:
            right = (resp.status, dict(resp.headers).get("WWW-Authenticate"), await resp.json())
        async with server.session.get(url, headers=bearer(CRM_TOKEN[:-1] + "X")) as resp:
            wrong = (resp.status, dict(resp.headers).get("WWW-Authenticate"), await resp.json())
    # A 403 here would tell whoever stole the token that it is a real one.
    assert right == wrong
    assert right[0] == 401 and right[2] == {"error": "unauthorized"}


async def test_a_route_allowlist_refuses_before_credentials_are_looked_at(tmp_path):
    settings = make_settings(
        tmp_path, routes={"openapi": {"methods": ["header_token"], "allow_from": ["10.0.0.0/8"]}}
    )
    async with running(HttpDeps(settings=settings)) as server:
        async with server.session.get(server.url("/api/openapi.json"), headers=bearer()) as resp:
            assert resp.status == 403
        # Other families keep their defaults.
        async with server.session.get(server.url("/metrics"), headers=bearer()) as resp:
            assert resp.status == 200


async def test_forwarded_for_counts_only_when_the_peer_is_a_trusted_proxy(tmp_path):
    clients = [
        {"name": "crm", "token": CRM_TOKEN, "allow_from": ["203.0.113.0/24"], "routes": ["openapi"]}
    ]
    spoof = {**bearer(), "X-Forwarded-For": "203.0.113.7"}
    untrusted = make_settings(tmp_path, clients=clients)
    async with running(HttpDeps(settings=untrusted)) as server:
        async with server.session.get(server.url("/api/openapi.json"), headers=spoof) as resp:
            assert resp.status == 401  # the header is ignored: the peer is 127.0.0.1
    trusted = make_settings(tmp_path, clients=clients, trusted_proxies=["127.0.0.1/32"])
    async with running(HttpDeps(settings=trusted)) as server:
        async with server.session.get(server.url("/api/openapi.json"), headers=spoof) as resp:
            assert resp.status == 200
        forged = {**bearer(), "X-Forwarded-For": "203.0.113.7, 198.51.100.1"}
        async with server.session.get(server.url("/api/openapi.json"), headers=forged) as resp:
            assert resp.status == 401  # the nearest untrusted hop is the client


async def test_a_client_may_use_only_its_route_families(tmp_path):
    async with running(HttpDeps(settings=make_settings(tmp_path))) as server:
        async with server.session.get(server.url("/metrics"), headers=basic()) as resp:
            assert resp.status == 403


async def test_a_body_over_the_limit_is_refused_with_413(tmp_path):
    settings = make_settings(tmp_path, max_body_bytes=1024)
    backend = RecordedAmiBackend("click_to_call_originate")
    deps = HttpDeps(settings=settings, originate_service=make_service(settings, backend))
    async with running(deps) as server:
        body = '{"extension": "101", "number": "' + "9" * 4000 + '"}'
        async with server.session.post(
            server.url("/api/v1/originate"),
            data=body,
            headers={**bearer(), "Content-Type": "application/json"},
        ) as resp:
            assert resp.status == 413
            assert await resp.json() == {"error": "request body too large"}
    assert backend.actions == []


async def test_a_route_added_without_an_auth_rule_is_refused_not_open(tmp_path):
    deps = HttpDeps(settings=make_settings(tmp_path))
    app = build_http_app(deps)

    async def sneaky(request: web.Request) -> web.Response:
        return web.json_response({"secret": True})

    app.router.add_get("/sneaky", sneaky)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{port}/sneaky", headers=bearer()) as resp:
                assert resp.status == 403
    finally:
        await runner.cleanup()


async def test_tokens_in_paths_never_reach_the_logs(tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    async with running(HttpDeps(settings=make_settings(tmp_path))) as server:
        wrong = "wrong-token-abcdefghijklmnop"
        async with server.session.get(
            server.url(f"/webapi/{wrong}/makecall?first=101&second=89161234567")
        ) as resp:
            assert resp.status == 401
        async with server.session.get(
            server.url("/api/v1/calls"), headers=basic(FIX_USER, FIX_PASSWORD + "x")
        ) as resp:
            assert resp.status == 401
    text = caplog.text
    assert "refused GET /webapi/{token}/makecall" in text
    assert '"GET /webapi/{token}/makecall" 401' in text  # the access log line, redacted
    assert wrong not in text
    assert FIX_PASSWORD not in text


async def test_wrong_credentials_from_one_address_are_throttled_even_for_the_right_token(
    tmp_path,
):
    settings = make_settings(tmp_path, max_auth_failures=3)
    async with running(HttpDeps(settings=settings)) as server:
        url = server.url("/api/openapi.json")
        for _ in range(5):  # asking without credentials guesses nothing: not counted
            async with server.session.get(url) as resp:
                assert resp.status == 401
        for attempt in range(3):
            async with server.session.get(url, headers=bearer(f"guess-{attempt:020d}")) as resp:
                assert resp.status == 401
        async with server.session.get(url, headers=bearer()) as resp:
            assert resp.status == 429
            assert await resp.json() == {"error": "too many requests"}
            assert 0 < int(resp.headers["Retry-After"]) <= 300
        async with server.session.get(url) as resp:
            assert resp.status == 401  # asking without credentials is still just refused
        async with server.session.get(server.url("/healthz")) as resp:
            assert resp.status == 200  # the open route stays open


def test_the_failure_table_forgets_old_addresses_and_old_failures():
    from ari_app.web.auth_throttle import FailedAuthThrottle

    now = [0.0]
    throttle = FailedAuthThrottle(2, 60.0, clock=lambda: now[0], max_addresses=100)
    throttle.failed("10.0.0.1")
    throttle.failed("10.0.0.1")
    assert throttle.locked_for("10.0.0.1") == 60.0
    now[0] = 61.0
    assert throttle.locked_for("10.0.0.1") == 0.0
    for n in range(1000):
        throttle.failed(f"2001:db8::{n:x}")
    assert throttle.addresses == 100
