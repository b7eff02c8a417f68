"""The Stasis application: the AGI IVR scripts (caller_check, crm_lookup, survey) over ARI.

Dialplan: `Stasis(pbxcrm,<script>[,arg1[,arg2...]])`, exactly as `AGI(agi://.../<script>,args)`.
The scripts are the agi package's own (agi.runner.run_script); `AriAgiChannel` is the third
driver of their `AgiChannel` interface, so there is one copy of the IVR logic. When the script
is done the channel continues in the dialplan after the Stasis() line, with the variables set,
the way an AGI() line returns.

Command mapping: answer -> POST /channels/{id}/answer; stream_file -> POST /play + wait for
PlaybackFinished; get_data -> play + collect ChannelDtmfReceived; get/set_variable -> GET/POST
/channels/{id}/variable; hangup -> DELETE /channels/{id}; verbose -> our own log (ARI has no
verbose); the end -> POST /channels/{id}/continue.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Protocol, overload

from agi.channel import PlaybackFailed
from agi.context import ScriptContext
from agi.protocol import AgiEnvironment, AgiHangup
from agi.runner import run_script
from ari_app.pbx.ari.client import AriClient, AriRequestError
from ari_app.pbx.ari.models import (
    AriEvent,
    Channel,
    ChannelDestroyedEvent,
    ChannelDtmfReceivedEvent,
    ChannelHangupRequestEvent,
    PlaybackFinishedEvent,
    StasisEndEvent,
    StasisStartEvent,
)
from crm.shutdown import cancel_and_wait

log = logging.getLogger("pbxcrm.stasis")

CLICK_TO_CALL_ARG = "click2call"
_playback_ids = itertools.count(1)

ScriptRunner = Callable[[str, "AriAgiChannel", ScriptContext], Awaitable[str]]


class StasisHandler(Protocol):
    """Who else reads the application's events (the ARI originate backend)."""

    def handle(self, event: AriEvent) -> None: ...


def agi_environment(channel: Channel, app: str, args: list[str]) -> AgiEnvironment:
    """The agi_* values a FastAGI session would carry, from the StasisStart channel."""
    script = args[0] if args else ""
    values = {
        "agi_network_script": script,
        "agi_request": f"stasis:{app}/{script}",
        "agi_channel": channel.name,
        "agi_uniqueid": channel.id,
        "agi_language": channel.language,
        "agi_callerid": channel.caller.number or "unknown",
        "agi_calleridname": channel.caller.name or "unknown",
        "agi_context": channel.dialplan.context,
        "agi_extension": channel.dialplan.exten,
        "agi_priority": str(channel.dialplan.priority),
        "agi_accountcode": channel.accountcode,
    }
    for number, value in enumerate(args[1:], start=1):
        values[f"agi_arg_{number}"] = value
    return AgiEnvironment(values, tuple(args[1:]))


def _is_gone(exc: AriRequestError) -> bool:
    # 404 "Channel not found" = hung up; 409 "Channel not in Stasis application" = it left us.
    return exc.status == 409 or (exc.status == 404 and "hannel" in exc.message)


class AriAgiChannel:
    """agi.channel.AgiChannel over ARI REST calls and the channel's websocket events."""

    def __init__(self, client: AriClient, channel: Channel, env: AgiEnvironment) -> None:
        self.env = env
        self._client = client
        self._id = channel.id
        self._up = channel.state == "Up"
        self._hung_up = False
        self._events: asyncio.Queue[AriEvent] = asyncio.Queue()

    @property
    def hung_up(self) -> bool:
        return self._hung_up

    def feed(self, event: AriEvent) -> None:
        if isinstance(event, ChannelHangupRequestEvent | StasisEndEvent | ChannelDestroyedEvent):
            self._hung_up = True
        self._events.put_nowait(event)

    # -- AgiChannel ---------------------------------------------------------------------------

    async def answer(self) -> None:
        await self._call(self._client.answer(self._id), "answer")
        self._up = True

    async def get_variable(self, name: str) -> str | None:
        self._check()
        try:
            return await self._client.get_variable(self._id, name)
        except AriRequestError as exc:
            if _is_gone(exc):
                self._hung_up = True
                raise AgiHangup(f"GET VARIABLE {name}: {exc.message}") from None
            if exc.status == 404:
                return None  # "Provided variable was not found" = AGI's `result=0`
            raise

    async def set_variable(self, name: str, value: str) -> None:
        await self._call(self._client.set_variable(self._id, name, value), f"SET {name}")

    async def set_variables(self, values: Mapping[str, str]) -> None:
        for name, value in values.items():
            await self.set_variable(name, value)

    async def stream_file(self, name: str, escape_digits: str = "") -> str:
        playback_id = await self._play(name)
        while True:
            event = await self._next_event(None)
            if isinstance(event, ChannelDtmfReceivedEvent) and event.digit in escape_digits:
                await self._stop_playback(playback_id)
                return event.digit
            if self._finished(event, playback_id):
                return ""

    async def get_data(self, prompt: str, timeout_ms: int, max_digits: int) -> str:
        digits = ""
        if prompt:
            playback_id = await self._play(prompt)
            while True:
                event = await self._next_event(None)
                if isinstance(event, ChannelDtmfReceivedEvent):
                    # As GET DATA: the first key stops the prompt and counts.
                    await self._stop_playback(playback_id)
                    digits += event.digit
                    break
                if self._finished(event, playback_id):
                    break
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_ms / 1000
        while len(digits) < max_digits and not digits.endswith("#"):
            next_event = await self._next_event(deadline)
            if next_event is None:
                break
            if isinstance(next_event, ChannelDtmfReceivedEvent):
                digits += next_event.digit
                deadline = loop.time() + timeout_ms / 1000
        return digits.removesuffix("#")

    async def verbose(self, message: str, level: int = 1) -> None:
        log.info("stasis %s: %s", self._id, message)

    async def hangup(self) -> None:
        await self._call(self._client.hangup(self._id), "hangup")
        self._hung_up = True

    # -- helpers ------------------------------------------------------------------------------

    def _check(self) -> None:
        if self._hung_up:
            raise AgiHangup("the channel hung up")

    async def _call(self, request: Awaitable[object], what: str) -> None:
        self._check()
        try:
            await request
        except AriRequestError as exc:
            if _is_gone(exc):
                self._hung_up = True
                raise AgiHangup(f"{what}: {exc.message}") from None
            raise

    async def _play(self, name: str) -> str:
        if not self._up:
            # An IVR that talks needs an answered channel (the recorded Stasis app answered
            # before playing); lookups alone do not answer, so the caller is not billed.
            await self.answer()
        while not self._events.empty():  # keys pressed before the prompt do not count
            self._drop_stale(self._events.get_nowait())
        playback_id = f"pbxcrm-{self._id}-{next(_playback_ids)}"
        media = name if ":" in name else f"sound:{name}"
        await self._call(
            self._client.play(self._id, media, playback_id=playback_id), f"play {name}"
        )
        return playback_id

    def _drop_stale(self, event: AriEvent) -> None:
        if isinstance(event, ChannelHangupRequestEvent | StasisEndEvent | ChannelDestroyedEvent):
            self._hung_up = True

    async def _stop_playback(self, playback_id: str) -> None:
        with contextlib.suppress(AriRequestError):
            await self._client.stop_playback(playback_id)  # it may have just finished

    def _finished(self, event: AriEvent, playback_id: str) -> bool:
        if not isinstance(event, PlaybackFinishedEvent) or event.playback.id != playback_id:
            return False
        if event.playback.state == "failed":
            raise PlaybackFailed(f"playback of {event.playback.media_uri} failed")
        return True

    @overload
    async def _next_event(self, deadline: None) -> AriEvent: ...

    @overload
    async def _next_event(self, deadline: float) -> AriEvent | None: ...

    async def _next_event(self, deadline: float | None) -> AriEvent | None:
        """The channel's next event; None at the deadline (never without one); AgiHangup once
        it hung up."""
        self._check()
        if deadline is None:
            event = await self._events.get()
        else:
            remaining = deadline - asyncio.get_running_loop().time()
            try:
                event = await asyncio.wait_for(self._events.get(), max(0.0, remaining))
            except TimeoutError:
                return None
        if isinstance(event, ChannelHangupRequestEvent | StasisEndEvent | ChannelDestroyedEvent):
            self._hung_up = True
            raise AgiHangup(f"caller hung up ({event.type})")
        return event


class StasisApp:
    """Runs one IVR script per StasisStart; hands click-to-call channels to `originate`."""

    def __init__(
        self,
        client: AriClient,
        context: ScriptContext,
        *,
        originate: StasisHandler | None = None,
        runner: ScriptRunner = run_script,
    ) -> None:
        self._client = client
        self._context = context
        self._originate = originate
        self._runner = runner
        self._sessions: dict[str, AriAgiChannel] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.outcomes: dict[str, str] = {}  # channel id -> script outcome (logs, tests)
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def active_sessions(self) -> int:
        return len(self._sessions)

    def handle(self, event: AriEvent) -> None:
        """Pass as AriClient(on_stasis=...): every ARI event comes through here."""
        if self._originate is not None:
            self._originate.handle(event)
        if isinstance(event, StasisStartEvent):
            self._start(event)
            return
        channel_id = self._channel_of(event)
        if channel_id is not None and channel_id in self._sessions:
            self._sessions[channel_id].feed(event)

    @staticmethod
    def _channel_of(event: AriEvent) -> str | None:
        if isinstance(event, PlaybackFinishedEvent):
            return event.playback.channel_id
        channel = getattr(event, "channel", None)
        return channel.id if isinstance(channel, Channel) else None

    def _start(self, event: StasisStartEvent) -> None:
        channel = event.channel
        if event.application and event.application != self._client.settings.app:
            return
        if event.args[:1] == [CLICK_TO_CALL_ARG] or channel.id in self._sessions:
            return  # the originate backend's channel, or a second StasisStart we already run
        env = agi_environment(channel, self._client.settings.app, event.args)
        session = AriAgiChannel(self._client, channel, env)
        self._sessions[channel.id] = session
        self._idle.clear()
        task = asyncio.get_running_loop().create_task(
            self._run(session, env.script), name=f"stasis-{channel.id}"
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, session: AriAgiChannel, script: str) -> None:
        channel_id = session.env.uniqueid
        try:
            if not script:
                log.error("stasis %s: Stasis() without a script name argument", channel_id)
                outcome = "unknown_script"
            else:
                outcome = await self._runner(script, session, self._context)
            self.outcomes[channel_id] = outcome
            if not session.hung_up:
                try:
                    await self._client.continue_in_dialplan(channel_id)
                except AriRequestError as exc:
                    log.info("stasis %s: could not continue in the dialplan: %s", channel_id, exc)
        finally:
            self._sessions.pop(channel_id, None)
            if not self._sessions:
                self._idle.set()

    async def wait_idle(self, timeout: float) -> None:
        """Until no script runs (tests, shutdown)."""
        await asyncio.wait_for(self._idle.wait(), timeout)

    async def close(self) -> None:
        await cancel_and_wait(list(self._tasks), "Stasis scripts")
