"""A fake Asterisk ARI on 127.0.0.1: aiohttp REST + the /ari/events websocket.

It plays recorded websocket messages (tests/fixtures/asterisk/ari/*.jsonl) and answers REST
calls the way ari/rest/*.json show. Answers and events that no recording holds are marked
"hand-built" below, with their source (the ARI REST/events reference for Asterisk 22):

* 404 {"message": "Channel not found"} for a channel that is gone, 401 for bad credentials;
* POST /channels/{id}/variable and /continue -> 204 (ARI reference; no body);
* GET /bridges -> Bridge objects shaped like the recorded events' `bridge`;
* ChannelDtmfReceived events ({"digit", "duration_ms", "channel"}, ARI events reference).

PlaybackStarted/PlaybackFinished after POST /play copy the recorded stasis_crm_inbound ones.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import WSMsgType, web

ARI_DIR = Path(__file__).resolve().parent.parent / "fixtures" / "asterisk" / "ari"


def recorded_ari_messages(scenario: str) -> list[dict[str, Any]]:
    """Every websocket message of `ari/<scenario>.jsonl`, in arrival order."""
    lines = (ARI_DIR / f"{scenario}.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def recorded_rest(name: str) -> dict[str, Any]:
    """`ari/rest/<name>.json`: {"request": {...}, "status": int, "response": body}."""
    return json.loads((ARI_DIR / "rest" / f"{name}.json").read_text(encoding="utf-8"))


def _recorded(scenario: str, kind: str) -> dict[str, Any]:
    return next(m for m in recorded_ari_messages(scenario) if m["type"] == kind)


def _recorded_variables() -> dict[tuple[str, str], str]:
    exchange = recorded_rest("get_channel_variable")
    channel_id = exchange["request"]["path"].split("/")[3]
    return {(channel_id, exchange["request"]["query"]["variable"]): exchange["response"]["value"]}


_RECORDED_VARS = _recorded_variables()


@dataclass(slots=True)
class Request:
    method: str
    path: str
    query: dict[str, str]
    body: Any
    authorization: str | None


@dataclass
class FakeAri:
    username: str = "crm"
    password: str = "crmsecret"
    # GET /ari/channels and /ari/bridges answers (lists of ARI JSON objects).
    channels: list[dict[str, Any]] = field(default_factory=list)
    bridges: list[dict[str, Any]] = field(default_factory=list)
    # (channel id, variable) -> value for GET /variable; POST /variable writes here too.
    # Starts with the recorded ari/rest/get_channel_variable.json answer.
    variables: dict[tuple[str, str], str] = field(default_factory=lambda: dict(_RECORDED_VARS))
    gone_channels: set[str] = field(default_factory=set)  # REST on these -> 404
    refuse_websockets: int = 0  # answer this many upgrade attempts with 503
    send_playback_events: bool = True
    # digits a caller "presses" when a playback of that media on that channel starts
    dtmf_on_playback: dict[tuple[str, str], str] = field(default_factory=dict)
    fail_paths: dict[tuple[str, str], tuple[int, str]] = field(default_factory=dict)
    on_request: Callable[[Request], Awaitable[None]] | None = None

    requests: list[Request] = field(default_factory=list)
    unauthorized: int = 0  # requests refused with 401
    ws_params: list[dict[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._sockets: list[web.WebSocketResponse] = []
        self._runner: web.AppRunner | None = None
        self._changed = asyncio.Condition()
        self.port = 0

    # -- lifecycle ----------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        app = web.Application(middlewares=[self._auth])
        app.router.add_get("/ari/events", self._events)
        app.router.add_route("*", "/ari/{tail:.*}", self._rest)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None and server.sockets  # type: ignore[union-attr]
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        await self.drop()
        if self._runner is not None:
            await self._runner.cleanup()

    async def __aenter__(self) -> FakeAri:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- what tests drive ---------------------------------------------------------------------

    async def send(self, message: dict[str, Any] | str) -> None:
        text = message if isinstance(message, str) else json.dumps(message)
        for ws in list(self._sockets):
            if not ws.closed:
                await ws.send_str(text)

    async def replay(self, scenario: str) -> None:
        for message in recorded_ari_messages(scenario):
            await self.send(message)

    async def drop(self) -> None:
        """Close every websocket from the server side (Asterisk restarting)."""
        for ws in list(self._sockets):
            await ws.close()
        self._sockets.clear()

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(predicate), timeout)

    async def wait_request(self, method: str, path: str, timeout: float = 5.0) -> Request:
        await self.wait_for(lambda: self.find(method, path) is not None, timeout)
        found = self.find(method, path)
        assert found is not None
        return found

    def find(self, method: str, path: str) -> Request | None:
        return next((r for r in self.requests if (r.method, r.path) == (method, path)), None)

    @property
    def open_websockets(self) -> int:
        return sum(1 for ws in self._sockets if not ws.closed)

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    # -- server -------------------------------------------------------------------------------

    @web.middleware
    async def _auth(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        expected = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
        if request.headers.get("Authorization") != f"Basic {expected}":
            self.unauthorized += 1
            await self._notify()
            return web.json_response({"message": "Authentication required"}, status=401)
        return await handler(request)

    async def _events(self, request: web.Request) -> web.StreamResponse:
        self.ws_params.append(dict(request.query))
        if self.refuse_websockets > 0:
            self.refuse_websockets -= 1
            await self._notify()
            return web.json_response({"message": "Service Unavailable"}, status=503)
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self._sockets.append(ws)
        await self._notify()
        async for message in ws:
            if message.type is WSMsgType.ERROR:
                break
        await self._notify()
        return ws

    async def _rest(self, request: web.Request) -> web.StreamResponse:
        body: Any = None
        if request.can_read_body:
            body = await request.json()
        recorded = Request(
            request.method,
            request.path,
            dict(request.query),
            body,
            request.headers.get("Authorization"),
        )
        self.requests.append(recorded)
        await self._notify()
        try:
            return await self._answer(recorded)
        finally:
            if self.on_request is not None:
                await self.on_request(recorded)

    async def _answer(self, r: Request) -> web.StreamResponse:
        failure = self.fail_paths.get((r.method, r.path))
        if failure is not None:
            return web.json_response({"message": failure[1]}, status=failure[0])
        parts = r.path.removeprefix("/ari/").split("/")
        if parts[0] == "channels" and len(parts) >= 2 and parts[1] in self.gone_channels:
            return web.json_response({"message": "Channel not found"}, status=404)
        if r.method == "GET" and parts == ["channels"]:
            return web.json_response(self.channels)
        if r.method == "GET" and parts == ["bridges"]:
            return web.json_response(self.bridges)
        if r.method == "GET" and parts == ["asterisk", "info"]:
            return web.json_response(recorded_rest("get_asterisk_info")["response"])
        if r.method == "POST" and parts == ["channels"]:
            return web.json_response(self._originated(r.query), status=200)
        if len(parts) == 3 and parts[0] == "channels":
            return await self._channel_action(r, parts[1], parts[2])
        if r.method == "DELETE" and len(parts) == 2 and parts[0] in ("channels", "playbacks"):
            return web.Response(status=204)
        return web.json_response({"message": "Resource not found"}, status=404)

    async def _channel_action(self, r: Request, channel_id: str, action: str) -> web.Response:
        if r.method == "POST" and action in ("answer", "continue"):
            return web.Response(status=204)
        if action == "variable" and r.method == "GET":
            value = self.variables.get((channel_id, r.query.get("variable", "")))
            if value is None:
                return web.json_response({"message": "Provided variable was not found"}, status=404)
            return web.json_response({"value": value})
        if action == "variable" and r.method == "POST":
            self.variables[(channel_id, r.query.get("variable", ""))] = r.query.get("value", "")
            return web.Response(status=204)
        if action == "play" and r.method == "POST":
            playback = copy.deepcopy(recorded_rest("post_channel_play")["response"])
            playback["id"] = r.query.get("playbackId") or f"pb-{len(self.requests)}"
            playback["media_uri"] = r.query.get("media", "")
            playback["target_uri"] = f"channel:{channel_id}"
            if self.send_playback_events:
                asyncio.get_running_loop().create_task(self._play(playback, channel_id))
            return web.json_response(playback, status=201)
        return web.json_response({"message": "Resource not found"}, status=404)

    async def _play(self, playback: dict[str, Any], channel_id: str) -> None:
        started = copy.deepcopy(_recorded("stasis_crm_inbound", "PlaybackStarted"))
        started["playback"] = {**playback, "state": "playing"}
        await self.send(started)
        digits = self.dtmf_on_playback.get((channel_id, playback["media_uri"]), "")
        for digit in digits:
            await self.send(self.dtmf_event(channel_id, digit))
        finished = copy.deepcopy(_recorded("stasis_crm_inbound", "PlaybackFinished"))
        finished["playback"] = {**playback, "state": "done"}
        await self.send(finished)

    @staticmethod
    def dtmf_event(channel_id: str, digit: str) -> dict[str, Any]:
        """Hand-built ChannelDtmfReceived (no ARI recording has DTMF); channel copied from the
        recorded StasisStart of stasis_crm_inbound."""
        start = _recorded("stasis_crm_inbound", "StasisStart")
        return {
            "type": "ChannelDtmfReceived",
            "timestamp": start["timestamp"],
            "digit": digit,
            "duration_ms": 100,
            "channel": {**start["channel"], "id": channel_id},
            "asterisk_id": start["asterisk_id"],
            "application": start["application"],
        }

    @staticmethod
    def _originated(query: dict[str, str]) -> dict[str, Any]:
        channel = copy.deepcopy(recorded_rest("post_channels_originate")["response"])
        channel["id"] = query.get("channelId") or channel["id"]
        return channel
