"""Click-to-call over ARI: the `OriginateBackend` that sends `POST /ari/channels`.

The HTTP API and OriginateService stay the same; only the wire changes. The service hands over
the AMI Originate it would send; this backend turns it into
`POST /ari/channels?endpoint=<Channel>&app=<our app>&appArgs=click2call,<Exten>&channelId=<id>`
(+ `callerId`, `timeout`, and the `CRM_CALL_ID` variable in the JSON body), as recorded in
ari/rest/post_channels_originate.json. The channel id is the originate id, so every later
event names the request without a lookup.

When the agent answers, the channel enters our application (`StasisStart`
`["click2call", <number>]`, recorded) and is sent to `<Context>,<Exten>,<Priority>` of the
original action with `POST /channels/{id}/continue`: the dialplan dials the client exactly as it
does after an AMI Originate. The recording ends with the application hanging the agent up, so
the continue step and the client leg are NOT recorded (built from the ARI reference).

Outcomes feed the service's existing AMI-shaped hooks (`on_originate_response`, reasons as in
AMI OriginateResponse): the answer -> Success; a `Dial` that ends otherwise, or the channel
destroyed before the answer (not recorded over ARI either; the cause says why) -> Failure.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from ari_app.pbx.ari.client import AriClient, AriRequestError
from ari_app.pbx.ari.models import (
    AriEvent,
    ChannelDestroyedEvent,
    DialEvent,
    StasisStartEvent,
)
from ari_app.pbx.ari.stasis import CLICK_TO_CALL_ARG
from crm.shutdown import STOP_SECONDS, cancel_and_wait

log = logging.getLogger(__name__)

# Dial statuses -> AMI OriginateResponse Reason (the service's table: 3 no answer, 5 busy,
# 8 congestion, 0 unreachable, 1 rejected).
_DIAL_REASONS: dict[str, str] = {
    "NOANSWER": "3",
    "BUSY": "5",
    "CONGESTION": "8",
    "CHANUNAVAIL": "0",
    "CANCEL": "1",
}
# Q.850 hangup causes of a channel destroyed before it answered -> the same reasons.
_CAUSE_REASONS: dict[int, str] = {17: "5", 18: "3", 19: "3", 21: "1", 34: "8", 38: "8"}


class OutcomeSink(Protocol):
    """The part of ari_app.originate.service.OriginateService this backend reports to."""

    def on_originate_response(
        self, action_id: str, response: str, reason: str, uniqueid: str | None
    ) -> None: ...

    def on_channel_var(self, uniqueid: str, name: str, value: str) -> None: ...


@dataclass(slots=True)
class _Pending:
    context: str
    exten: str
    priority: int
    answered: bool = False


class AriOriginateBackend:
    """OriginateBackend over ARI; also pass it to StasisApp(originate=...) to see its events."""

    def __init__(self, client: AriClient) -> None:
        self._client = client
        self._sink: OutcomeSink | None = None
        self._pending: dict[str, _Pending] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def bind(self, sink: OutcomeSink) -> None:
        """The service is built with this backend, so it is attached afterwards."""
        self._sink = sink

    async def originate(self, action: dict[str, str], *, timeout: float) -> Mapping[str, str]:
        originate_id = action.get("ActionID", "")
        exten = action.get("Exten", "")
        variables = dict(
            item.split("=", 1) for item in action.get("Variable", "").split(",") if "=" in item
        )
        try:
            ring_ms = int(action.get("Timeout", "30000"))
            priority = int(action.get("Priority", "1"))
        except ValueError:
            return {"Response": "Error", "Message": "bad Timeout or Priority in the request"}
        self._pending[originate_id] = _Pending(action.get("Context", ""), exten, priority)
        try:
            async with asyncio.timeout(timeout):
                channel = await self._client.originate(
                    action.get("Channel", ""),
                    app=self._client.settings.app,
                    app_args=f"{CLICK_TO_CALL_ARG},{exten}",
                    channel_id=originate_id,
                    caller_id=action.get("CallerID") or None,
                    timeout_seconds=max(1, round(ring_ms / 1000)),
                    variables=variables,
                )
        except AriRequestError as exc:
            self._pending.pop(originate_id, None)
            if exc.status == 0:
                raise ConnectionError(str(exc)) from None  # the service: "PBX unavailable"
            return {"Response": "Error", "Message": exc.message or f"HTTP {exc.status}"}
        if self._sink is not None:
            # AMI ties the channel to the request by the VarSet; here the id is the channel's.
            for name, value in variables.items():
                self._sink.on_channel_var(channel.id, name, value)
        return {"Response": "Success", "Message": "Originate successfully queued"}

    def handle(self, event: AriEvent) -> None:
        """Every ARI event (StasisApp forwards them); only our originated channels matter."""
        if isinstance(event, StasisStartEvent):
            self._on_stasis_start(event)
        elif isinstance(event, DialEvent):
            self._on_dial(event)
        elif isinstance(event, ChannelDestroyedEvent):
            pending = self._pending.pop(event.channel.id, None)
            if pending is not None and not pending.answered:
                reason = _CAUSE_REASONS.get(event.cause or 0, "0")
                self._report(event.channel.id, "Failure", reason)

    def _on_dial(self, event: DialEvent) -> None:
        pending = self._pending.get(event.peer.id)
        if pending is None or event.caller is not None or pending.answered:
            return
        status = event.dialstatus
        if status == "ANSWER":
            pending.answered = True
            self._report(event.peer.id, "Success", "4")
        elif status in _DIAL_REASONS:
            self._pending.pop(event.peer.id, None)
            self._report(event.peer.id, "Failure", _DIAL_REASONS[status])

    def _on_stasis_start(self, event: StasisStartEvent) -> None:
        if event.args[:1] != [CLICK_TO_CALL_ARG]:
            return
        channel_id = event.channel.id
        pending = self._pending.get(channel_id)
        if pending is None:
            log.warning(
                "click2call channel %s entered Stasis but no request of ours made it; hanging up",
                channel_id,
            )
            self._spawn(self._hangup(channel_id))
            return
        if not pending.answered:
            pending.answered = True
            self._report(channel_id, "Success", "4")
        self._pending.pop(channel_id, None)
        self._spawn(self._continue(channel_id, pending))

    async def _continue(self, channel_id: str, pending: _Pending) -> None:
        try:
            await self._client.continue_in_dialplan(
                channel_id,
                context=pending.context,
                extension=pending.exten,
                priority=pending.priority,
            )
        except AriRequestError as exc:
            log.warning("click2call %s: could not dial the client: %s", channel_id, exc)

    async def _hangup(self, channel_id: str) -> None:
        try:
            await self._client.hangup(channel_id)
        except AriRequestError as exc:
            log.info("click2call %s: hangup failed: %s", channel_id, exc)

    def _report(self, originate_id: str, response: str, reason: str) -> None:
        if self._sink is None:
            log.warning(
                "click2call %s: %s, but no originate service is bound", originate_id, response
            )
            return
        uniqueid = originate_id if response == "Success" else None
        self._sink.on_originate_response(originate_id, response, reason, uniqueid)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        # Let running requests finish (a hangup must reach Asterisk), within a bound.
        if self._tasks:
            _, late = await asyncio.wait(list(self._tasks), timeout=STOP_SECONDS)
            await cancel_and_wait(late, "ARI click-to-call requests")
