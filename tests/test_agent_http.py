"""The screen pop's HTTP API over a real socket: sign-in and lockout, the session and change
header rules, the live stream, notes into the store and the pipeline, click-to-call.

Calls come from recorded AMI frames fed to a real Pipeline (store in tmp_path); click-to-call
goes through the real OriginateService to a backend answering with the recorded Originate
response.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from yarl import URL

from ari_app.agent.board import AgentBoard
from ari_app.agent.sessions import COOKIE
from ari_app.app.http_server import bound_port, start_http
from ari_app.calls.pipeline import Pipeline
from ari_app.web.deps import HttpDeps
from crm.lookup.base import LookupRequest, LookupResult, LookupStatus
from crm.model import EventKind
from crm.store.sqlite import Store
from tests.recordings import recorded_frames
from tests.test_http_support import RecordedAmiBackend, make_service, make_settings

PIN = "246813"
TOKEN = "agent-7070-token-5f1c9a7e"
CALL_ID = "1795417965.0"
CHANGE = {"X-Pbxcrm-Agent": "1"}


class JavascriptLinkLookup:
    """A CRM whose record links to `javascript:` (it must never become a clickable link)."""

    def __init__(self, url: str = "javascript:alert(1)") -> None:
        self.url = url

    async def lookup(self, request: LookupRequest) -> LookupResult:
        return LookupResult(
            status=LookupStatus.FOUND,
            source="evil-crm",
            contact_name="<img src=x onerror=alert(1)>",
            company="ACME",
            contact_url=self.url,
        )


@dataclass
class Pop:
    base: str
    store: Store
    pipeline: Pipeline
    board: AgentBoard
    backend: RecordedAmiBackend
    runner: web.AppRunner

    def url(self, path: str) -> str:
        return self.base + path

    def replay(self, scenario: str) -> None:
        for frame in recorded_frames(scenario):
            if "Event" in frame:
                self.pipeline.on_ami_frame(frame)


@asynccontextmanager
async def screen_pop(tmp_path: Path, lookup: Any = None, **agent: Any) -> AsyncIterator[Pop]:
    agent_config = {
        "agents": [
            {"extension": "7181", "name": "Anna", "pin": PIN},
            {"extension": "7070", "token": TOKEN},
        ],
        **agent,
    }
    settings = make_settings(tmp_path, agent=agent_config)
    settings = settings.model_copy(update={"pbx": settings.pbx.model_copy(update={"id": "lab"})})
    store = await Store.open(settings.store)
    pipeline = Pipeline(settings.calls, store, [], pbx_id="lab")
    board = AgentBoard()
    pipeline.add_call_listener(board.on_call_event)
    backend = RecordedAmiBackend("click_to_call_originate")
    deps = HttpDeps(
        settings,
        store=store,
        originate_service=make_service(settings, backend),
        lookup=lookup,
        pipeline=pipeline,
        agent_board=board,
    )
    runner = await start_http(deps)
    try:
        yield Pop(f"http://127.0.0.1:{bound_port(runner)}", store, pipeline, board, backend, runner)
    finally:
        await runner.cleanup()
        await pipeline.drain()
        await store.close()


def browser() -> aiohttp.ClientSession:
    # Cookies for 127.0.0.1 (an IP address) are kept only by an "unsafe" jar.
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))


async def sign_in(
    session: aiohttp.ClientSession, pop: Pop, extension: str | None, secret: str
) -> aiohttp.ClientResponse:
    async with session.post(
        pop.url("/agent/api/session"),
        headers=CHANGE,
        json={"extension": extension, "secret": secret},
    ) as resp:
        await resp.read()
        return resp


async def test_the_right_pin_signs_in_with_an_http_only_strict_cookie(tmp_path: Path) -> None:
    async with screen_pop(tmp_path) as pop, browser() as session:
        resp = await sign_in(session, pop, "7181", PIN)
        assert resp.status == 200
        cookie = resp.cookies[COOKIE]
        assert cookie["httponly"] and cookie["samesite"] == "Strict"
        assert cookie["path"] == "/agent"
        async with session.get(pop.url("/agent/api/session")) as me:
            assert await me.json() == {"extension": "7181", "name": "Anna"}


async def test_a_token_alone_signs_in_but_a_pin_needs_its_extension(tmp_path: Path) -> None:
    async with screen_pop(tmp_path) as pop, browser() as session:
        assert (await sign_in(session, pop, None, TOKEN)).status == 200
        async with session.get(pop.url("/agent/api/session")) as me:
            assert (await me.json())["extension"] == "7070"
        assert (await sign_in(session, pop, None, PIN)).status == 401
        assert (await sign_in(session, pop, "7070", PIN)).status == 401  # Anna's PIN


async def test_wrong_pins_lock_the_extension_out_even_for_the_right_pin(tmp_path: Path) -> None:
    async with screen_pop(tmp_path, max_failures=3) as pop, browser() as session:
        for guess in ("000000", "111111", "222222"):
            assert (await sign_in(session, pop, "7181", guess)).status == 401
        assert (await sign_in(session, pop, "7181", PIN)).status == 429
        async with session.get(pop.url("/agent/api/session")) as me:
            assert me.status == 401


async def test_a_signed_in_agent_stays_signed_in_across_a_restart(tmp_path: Path) -> None:
    async with browser() as session:
        async with screen_pop(tmp_path) as pop:
            assert (await sign_in(session, pop, "7181", PIN)).status == 200
            cookie = session.cookie_jar.filter_cookies(URL(pop.url("/agent")))[COOKIE].value
        async with screen_pop(tmp_path) as pop:  # the same store, a new process's state
            saved = await pop.store.get_kv("agent_sessions")
            assert saved is not None and cookie not in saved
            async with session.get(pop.url("/agent/api/session")) as resp:
                assert resp.status == 200
                assert (await resp.json())["extension"] == "7181"


async def test_sign_in_without_the_change_header_is_refused(tmp_path: Path) -> None:
    async with screen_pop(tmp_path) as pop, browser() as session:
        async with session.post(
            pop.url("/agent/api/session"), json={"extension": "7181", "secret": PIN}
        ) as resp:
            assert resp.status == 403


async def test_without_a_session_every_agent_api_answers_401(tmp_path: Path) -> None:
    async with screen_pop(tmp_path) as pop, browser() as session:
        for method, path in [
            ("GET", "/agent/api/cards"),
            ("GET", "/agent/api/stream"),
            ("POST", f"/agent/api/calls/{CALL_ID}/note"),
            ("POST", "/agent/api/dial"),
            ("GET", "/agent/api/dial/c2c-0123456789abcdef"),
        ]:
            async with session.request(method, pop.url(path), headers=CHANGE, json={}) as resp:
                assert resp.status == 401, path
                assert await resp.json() == {"error": "unauthorized"}


async def test_a_change_without_the_header_is_refused_even_when_signed_in(tmp_path: Path) -> None:
    async with screen_pop(tmp_path) as pop, browser() as session:
        await sign_in(session, pop, "7181", PIN)
        async with session.post(pop.url("/agent/api/dial"), json={"number": "89161234567"}) as r:
            assert r.status == 403
        assert pop.backend.actions == []


async def test_the_page_and_its_assets_come_from_pbxcrm_with_a_strict_csp(tmp_path: Path) -> None:
    async with screen_pop(tmp_path) as pop, browser() as session:
        async with session.get(pop.url("/agent")) as page:
            html = await page.text()
            assert page.status == 200
            assert "script-src 'self'" in page.headers["Content-Security-Policy"]
        assert "http" not in html.replace("http-equiv", "")  # nothing from a CDN
        for asset in ("agent.js", "agent.css"):
            async with session.get(pop.url(f"/agent/static/{asset}")) as resp:
                assert resp.status == 200, asset
        async with session.get(pop.url("/agent/static/..%2Fagent_board.py")) as resp:
            assert resp.status == 404


async def test_an_agent_page_with_no_agents_configured_is_closed(tmp_path: Path) -> None:
    async with screen_pop(tmp_path, agents=[]) as pop, browser() as session:
        async with session.get(pop.url("/agent")) as page:
            assert page.status == 403


async def next_event(stream: aiohttp.ClientResponse) -> tuple[str, Any]:
    name, data = "", ""
    while True:
        line = (await asyncio.wait_for(stream.content.readline(), 5)).decode().rstrip("\n")
        if line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: "):
            data = line[6:]
        elif line == "" and name:
            return name, json.loads(data)


async def test_the_stream_sends_the_card_when_the_recorded_call_rings(tmp_path: Path) -> None:
    async with screen_pop(tmp_path) as pop, browser() as anna, browser() as boris:
        await sign_in(anna, pop, "7181", PIN)
        await sign_in(boris, pop, None, TOKEN)
        async with anna.get(pop.url("/agent/api/stream")) as stream:
            assert stream.headers["Content-Type"] == "text/event-stream"
            assert await next_event(stream) == ("cards", [])
            started = time.monotonic()
            pop.replay("inbound_answered_caller_hangs_up")
            name, cards = await next_event(stream)
            assert time.monotonic() - started < 1.0
            assert name == "cards"
            assert [c["call_id"] for c in cards] == [CALL_ID]
            card = cards[0]
            assert card["number"] == "+79031234567"
            assert card["number_display"] == "+7 903 123-45-67"
            assert card["direction"] == "inbound"
        async with boris.get(pop.url("/agent/api/cards")) as resp:
            assert await resp.json() == {"cards": []}


async def test_a_note_is_stored_and_becomes_the_calls_note_step(tmp_path: Path) -> None:
    async with screen_pop(tmp_path) as pop, browser() as anna, browser() as boris:
        pop.replay("inbound_answered_caller_hangs_up")
        await pop.pipeline.drain()
        await sign_in(anna, pop, "7181", PIN)
        url = pop.url(f"/agent/api/calls/{CALL_ID}/note")
        async with anna.post(url, headers=CHANGE, json={"status": "Maybe", "comments": ""}) as r:
            assert r.status == 422
            assert (await r.json())["fields"][0]["field"] == "status"
        async with anna.post(
            url, headers=CHANGE, json={"status": "do not disturb", "comments": " Busy season "}
        ) as r:
            assert r.status == 200
            saved = await r.json()
        assert saved["status"] == "Do not Disturb" and saved["comments"] == "Busy season"
        (note,) = await pop.store.notes_for("lab", CALL_ID)
        assert (note.status, note.comments, note.extension, note.number) == (
            "Do not Disturb",
            "Busy season",
            "7181",
            "+79031234567",
        )
        events = await pop.store.events_for("lab", CALL_ID)
        assert [e.kind for e in events][-1] is EventKind.NOTE
        assert events[-1].data == {
            "status": "Do not Disturb",
            "comments": "Busy season",
            "number": "+79031234567",
            "extension": "7181",
            "note_id": note.id,
        }
        async with anna.get(pop.url("/agent/api/cards")) as resp:
            (card,) = (await resp.json())["cards"]
            assert card["note"]["status"] == "Do not Disturb"
        # 7070 never rang for this call: it may not write about it.
        await sign_in(boris, pop, None, TOKEN)
        async with boris.post(url, headers=CHANGE, json={"status": "Completed"}) as r:
            assert r.status == 404


async def test_a_note_survives_dismissing_the_card(tmp_path: Path) -> None:
    async with screen_pop(tmp_path) as pop, browser() as anna:
        pop.replay("inbound_answered_caller_hangs_up")
        await pop.pipeline.drain()
        await sign_in(anna, pop, "7181", PIN)
        async with anna.post(pop.url(f"/agent/api/calls/{CALL_ID}/dismiss"), headers=CHANGE) as r:
            assert r.status == 200
        # Off the board, the call is still the agent's (store): a late note is kept.
        url = pop.url(f"/agent/api/calls/{CALL_ID}/note")
        async with anna.post(url, headers=CHANGE, json={"status": "Completed"}) as r:
            assert r.status == 200
        assert len(await pop.store.notes_for("lab", CALL_ID)) == 1


async def test_click_to_call_rings_the_signed_in_agents_own_extension(tmp_path: Path) -> None:
    async with screen_pop(tmp_path) as pop, browser() as anna, browser() as boris:
        await sign_in(anna, pop, "7181", PIN)
        async with anna.post(
            pop.url("/agent/api/dial"), headers=CHANGE, json={"number": "89161234567"}
        ) as r:
            assert r.status == 202
            accepted = await r.json()
        (action,) = pop.backend.actions
        assert action["Action"] == "Originate"
        assert action["Channel"] == "PJSIP/7181"
        async with anna.get(pop.url(f"/agent/api/dial/{accepted['id']}")) as r:
            assert r.status == 200
            assert (await r.json())["number"] == "+79161234567"
        await sign_in(boris, pop, None, TOKEN)
        async with boris.get(pop.url(f"/agent/api/dial/{accepted['id']}")) as r:
            assert r.status == 404
        async with anna.post(
            pop.url("/agent/api/dial"), headers=CHANGE, json={"number": "+19005550100"}
        ) as r:
            assert r.status in (403, 422)  # the fraud rules apply as for every click-to-call
        assert len(pop.backend.actions) == 1


@pytest.mark.parametrize(
    "url",
    [
        "javascript:alert(1)",
        " JavaScript:alert(1)",
        "//evil.example/x",
        "/\\evil.example",
        "/\t/evil.example",
        "https:evil.example",
        "data:text/html,x",
        "https://evil.example\\@x",
    ],
)
async def test_a_crm_link_that_is_not_a_web_address_is_dropped(tmp_path: Path, url: str) -> None:
    lookup = JavascriptLinkLookup(url)
    async with screen_pop(tmp_path, lookup=lookup) as pop, browser() as anna:
        await sign_in(anna, pop, "7181", PIN)
        async with anna.get(pop.url("/agent/api/stream")) as stream:
            await next_event(stream)
            pop.replay("inbound_answered_caller_hangs_up")
            caller: dict[str, Any] = {"status": "pending"}
            while caller["status"] == "pending":
                _, cards = await next_event(stream)
                caller = cards[0]["caller"]
        assert caller["status"] == "found"
        assert caller["url"] is None
        assert caller["name"] == "<img src=x onerror=alert(1)>"  # text for the page, not HTML


async def test_stopping_the_server_ends_open_streams_at_once(tmp_path: Path) -> None:
    async with screen_pop(tmp_path) as pop, browser() as anna:
        await sign_in(anna, pop, "7181", PIN)
        async with anna.get(pop.url("/agent/api/stream")) as stream:
            await next_event(stream)
            started = time.monotonic()
            await pop.runner.cleanup()
            assert time.monotonic() - started < 5.0
