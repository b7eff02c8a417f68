"""ARI client on plain aiohttp: REST calls and the `/ari/events` websocket.

One websocket per client, registered as the Stasis application `settings.app` (with
`subscribeAll=true` it also receives every channel's events, which is what call tracking needs).
On every (re)connect it reconciles from `GET /ari/channels` (+ `GET /ari/bridges`) before it
reads the first buffered event, so calls that ended while it was away get closed and calls that
started get picked up. Dropped connections are retried with capped exponential backoff.

Basic auth goes as a hand-built `Authorization` header (aiohttp.BasicAuth warns in 3.14 and the
`api_key` query form would put the password in URLs and access logs); query values are sent as
strings, since aiohttp refuses bools.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import quote

import aiohttp

from ari_app.pbx.ari.events import AriEventMapper, channel_snapshot
from ari_app.pbx.ari.models import (
    AriEvent,
    BadAriMessage,
    Channel,
    Playback,
    parse_bridges,
    parse_channels,
    parse_event,
)
from ari_app.pbx.channel_events import (
    ChannelEvent,
    ChannelSnapshot,
    PbxDisconnected,
    SnapshotComplete,
)
from ari_app.pbx.settings import AriSettings
from crm.backoff import reconnect_delay
from crm.shutdown import cancel_and_wait, finish_within

log = logging.getLogger(__name__)

QueryValue = str | int | float | bool | None

# ARI REST answers these on success (200 with a body, 201 created, 204 no content).
_OK_STATUSES = frozenset({200, 201, 204})


class AriRequestError(Exception):
    """An ARI REST call failed: HTTP status (0 = no answer at all) and ARI's own message."""

    def __init__(self, method: str, path: str, status: int, message: str) -> None:
        super().__init__(f"ARI {method} {path}: {status or 'no response'} {message}".rstrip())
        self.method = method
        self.path = path
        self.status = status
        self.message = message


def _query(values: Mapping[str, QueryValue]) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in values.items():
        if value is None:
            continue
        if isinstance(value, bool):
            out[key] = "true" if value else "false"
        else:
            out[key] = str(value)
    return out


class _PbxClock:
    """PBX time now: the last event's timestamp plus the time elapsed since it arrived."""

    def __init__(self, now: Callable[[], float]) -> None:
        self._now = now
        self._last_pbx: float | None = None
        self._last_recv = 0.0

    def saw(self, pbx_ts: float) -> None:
        self._last_pbx = pbx_ts
        self._last_recv = self._now()

    def reset(self) -> None:
        # A new connection may be a restarted PBX whose clock differs.
        self._last_pbx = None

    def now(self) -> float:
        if self._last_pbx is None:
            return self._now()
        return self._last_pbx + max(0.0, self._now() - self._last_recv)


class AriClient:
    def __init__(
        self,
        settings: AriSettings,
        *,
        on_event: Callable[[ChannelEvent], None],
        on_connected: Callable[[], Awaitable[None]] | None = None,
        on_stasis: Callable[[AriEvent], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self._on_event = on_event
        self._on_connected = on_connected
        self._on_stasis = on_stasis
        self._mapper = AriEventMapper()
        self._pbx_clock = _PbxClock(clock)
        base = settings.url.rstrip("/")
        self._rest_base = f"{base}/ari"
        self._ws_url = ("ws" + base[4:] if base.startswith("http") else base) + "/ari/events"
        credentials = f"{settings.username}:{settings.password.get_secret_value()}"
        self._headers = {
            "Authorization": "Basic " + base64.b64encode(credentials.encode()).decode("ascii")
        }
        self._session: aiohttp.ClientSession | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._connected = asyncio.Event()
        self.connections = 0  # successful websocket connections so far (tests, metrics)

    # -- lifecycle ----------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    async def start(self) -> None:
        """Open the HTTP session and start connecting in the background; returns at once."""
        if self._task is not None:
            return
        self._stopping.clear()
        timeout = aiohttp.ClientTimeout(total=self.settings.request_timeout_seconds)
        self._session = aiohttp.ClientSession(timeout=timeout)
        self._task = asyncio.get_running_loop().create_task(self._run(), name="ari-client")

    async def stop(self) -> None:
        self._stopping.set()
        if self._task is not None:
            await cancel_and_wait([self._task], "ARI client")
            self._task = None
        if self._session is not None:
            await finish_within(self._session.close(), "closing the ARI HTTP session")
            self._session = None

    async def wait_connected(self, timeout: float) -> None:
        await asyncio.wait_for(self._connected.wait(), timeout)

    # -- websocket ----------------------------------------------------------------------------

    async def _run(self) -> None:
        attempt = 0
        while not self._stopping.is_set():
            ws = await self._open_websocket(attempt)
            if ws is None:
                attempt += 1
            else:
                attempt = 0
                await self._serve(ws)
            if self._stopping.is_set():
                return
            delay = reconnect_delay(
                attempt,
                self.settings.reconnect_initial_seconds,
                self.settings.reconnect_max_seconds,
            )
            log.info("ARI: reconnecting in %.1fs", delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)

    async def _open_websocket(self, attempt: int) -> aiohttp.ClientWebSocketResponse | None:
        assert self._session is not None
        params = _query({"app": self.settings.app, "subscribeAll": self.settings.subscribe_all})
        try:
            return await self._session.ws_connect(
                self._ws_url,
                params=params,
                headers=self._headers,
                heartbeat=self.settings.ping_interval_seconds,
                timeout=aiohttp.ClientWSTimeout(ws_close=5.0),
            )
        except aiohttp.WSServerHandshakeError as exc:
            if exc.status == 401:
                log.error(
                    "ARI refused user %r (401): check [pbx.ari] username/password and ari.conf",
                    self.settings.username,
                )
            else:
                log.warning("ARI websocket refused (attempt %d): HTTP %s", attempt + 1, exc.status)
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            log.warning(
                "ARI websocket %s unreachable (attempt %d): %s",
                self._ws_url,
                attempt + 1,
                exc or type(exc).__name__,
            )
        return None

    async def _serve(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.connections += 1
        self._pbx_clock.reset()
        log.info("ARI connected to %s as application %r", self._ws_url, self.settings.app)
        try:
            # Events that arrive meanwhile wait in the websocket's buffer, so none is lost and
            # the tracker sees the snapshot first.
            await self._reconcile()
            self._connected.set()
            if self._on_connected is not None:
                try:
                    await self._on_connected()
                except Exception:
                    log.exception("ARI on_connected callback failed")
            async for message in ws:
                if message.type is aiohttp.WSMsgType.TEXT:
                    self._dispatch(message.data)
                elif message.type is aiohttp.WSMsgType.BINARY:
                    log.warning(
                        "ARI sent a binary websocket message (%d bytes); ignored", len(message.data)
                    )
                elif message.type is aiohttp.WSMsgType.ERROR:
                    log.warning("ARI websocket error: %s", ws.exception())
                    break
        except (aiohttp.ClientError, OSError) as exc:
            log.warning("ARI connection failed: %s", exc)
        finally:
            was_connected = self.connected
            self._connected.clear()
            if not ws.closed:
                await ws.close()
            if not self._stopping.is_set():
                log.warning("ARI websocket closed (code %s)", ws.close_code)
                if was_connected:
                    self._emit(PbxDisconnected(self._pbx_clock.now()))

    def _dispatch(self, text: str) -> None:
        try:
            event = parse_event(json.loads(text))
        except (ValueError, BadAriMessage) as exc:
            # json.JSONDecodeError is a ValueError; the message text may be huge, so cut it.
            log.warning("ARI: skipped a bad websocket message (%s): %.200s", exc, text)
            return
        self._pbx_clock.saw(event.timestamp.timestamp())
        for channel_event in self._mapper.map(event):
            self._emit(channel_event)
        if self._on_stasis is not None:
            try:
                self._on_stasis(event)
            except Exception:
                log.exception("ARI: the Stasis handler failed on %s", event.type)

    def _emit(self, event: ChannelEvent) -> None:
        try:
            self._on_event(event)
        except Exception:
            log.exception("ARI: the event handler failed on %s", type(event).__name__)

    # -- reconciliation -----------------------------------------------------------------------

    async def snapshot(self) -> list[ChannelSnapshot]:
        """Every channel that exists now, with the Linkedid and bridge it belongs to."""
        channels = parse_channels(await self.request("GET", "/channels"))
        try:
            bridges = parse_bridges(await self.request("GET", "/bridges"))
        except AriRequestError as exc:
            log.warning("ARI: no bridge list for the snapshot (%s)", exc)
            bridges = []
        bridge_of = {cid: bridge.id for bridge in bridges for cid in bridge.channels}
        ts = self._pbx_clock.now()
        out: list[ChannelSnapshot] = []
        for channel in channels:
            linkedid = self._mapper.linkedid_of(channel.id) or await self._linkedid(channel)
            out.append(
                channel_snapshot(
                    channel, ts=ts, linkedid=linkedid, bridge_id=bridge_of.get(channel.id, "")
                )
            )
        return out

    async def _linkedid(self, channel: Channel) -> str:
        """A channel we never saw created: ask Asterisk (the CHANNEL() dialplan function)."""
        try:
            value = await self.get_variable(channel.id, "CHANNEL(linkedid)")
        except AriRequestError as exc:
            log.warning("ARI: linkedid of %s unknown (%s); using its own id", channel.name, exc)
            return channel.id
        return value or channel.id

    async def _reconcile(self) -> None:
        try:
            snapshots = await self.snapshot()
        except (AriRequestError, ValueError) as exc:
            # Without a complete list, closing calls "not in the list" would be wrong: skip it.
            log.error("ARI: reconciliation skipped, GET /ari/channels failed: %s", exc)
            return
        self._mapper.forget_all_but({snap.uniqueid for snap in snapshots})
        for snap in snapshots:
            self._mapper.remember(snap.uniqueid, snap.linkedid)
            self._emit(snap)
        self._emit(SnapshotComplete(self._pbx_clock.now()))
        log.info("ARI: reconciled %d live channel(s)", len(snapshots))

    # -- REST ---------------------------------------------------------------------------------

    async def request(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, QueryValue] | None = None,
        body: Mapping[str, Any] | None = None,
    ) -> Any:
        """One REST call under /ari; the decoded JSON body (None when empty)."""
        if self._session is None:
            raise AriRequestError(method, path, 0, "client not started")
        url = self._rest_base + path
        try:
            async with self._session.request(
                method, url, params=_query(query or {}), json=body, headers=self._headers
            ) as response:
                text = await response.text()
                status = response.status
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise AriRequestError(method, path, 0, str(exc) or type(exc).__name__) from None
        data: Any = None
        if text:
            try:
                data = json.loads(text)
            except ValueError:
                data = None
        if status not in _OK_STATUSES:
            message = data.get("message", "") if isinstance(data, dict) else text[:200]
            raise AriRequestError(method, path, status, str(message))
        return data

    @staticmethod
    def _channel_path(channel_id: str, tail: str = "") -> str:
        return f"/channels/{quote(channel_id, safe='')}{tail}"

    async def answer(self, channel_id: str) -> None:
        await self.request("POST", self._channel_path(channel_id, "/answer"))

    async def play(
        self, channel_id: str, media: str, *, playback_id: str | None = None
    ) -> Playback:
        body = await self.request(
            "POST",
            self._channel_path(channel_id, "/play"),
            query={"media": media, "playbackId": playback_id},
        )
        return Playback.model_validate(body)

    async def stop_playback(self, playback_id: str) -> None:
        await self.request("DELETE", f"/playbacks/{quote(playback_id, safe='')}")

    async def get_variable(self, channel_id: str, name: str) -> str:
        body = await self.request(
            "GET", self._channel_path(channel_id, "/variable"), query={"variable": name}
        )
        return str(body.get("value", "")) if isinstance(body, dict) else ""

    async def set_variable(self, channel_id: str, name: str, value: str) -> None:
        await self.request(
            "POST",
            self._channel_path(channel_id, "/variable"),
            query={"variable": name, "value": value},
        )

    async def continue_in_dialplan(
        self,
        channel_id: str,
        *,
        context: str | None = None,
        extension: str | None = None,
        priority: int | None = None,
    ) -> None:
        await self.request(
            "POST",
            self._channel_path(channel_id, "/continue"),
            query={"context": context, "extension": extension, "priority": priority},
        )

    async def hangup(self, channel_id: str, *, reason: str = "normal") -> None:
        await self.request("DELETE", self._channel_path(channel_id), query={"reason": reason})

    async def originate(
        self,
        endpoint: str,
        *,
        app: str,
        app_args: str,
        channel_id: str,
        caller_id: str | None = None,
        timeout_seconds: int | None = None,
        variables: Mapping[str, str] | None = None,
    ) -> Channel:
        """POST /ari/channels into our Stasis application (as ari/rest/post_channels_originate)."""
        body = await self.request(
            "POST",
            "/channels",
            query={
                "endpoint": endpoint,
                "app": app,
                "appArgs": app_args,
                "callerId": caller_id,
                "timeout": timeout_seconds,
                "channelId": channel_id,
            },
            body={"variables": dict(variables)} if variables else None,
        )
        return Channel.model_validate(body)
