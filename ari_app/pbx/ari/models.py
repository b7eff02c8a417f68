"""Pydantic models of the ARI objects and events pbxcrm reads (Asterisk 22 shapes).

Only the fields pbxcrm uses are declared; everything else Asterisk sends is kept (extra="allow")
so a newer Asterisk that adds fields never breaks parsing. Field names follow the ARI JSON
exactly (snake_case), as seen in tests/fixtures/asterisk/ari/*.jsonl.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

log = logging.getLogger(__name__)


class _AriObject(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)


class CallerId(_AriObject):
    name: str = ""
    number: str = ""


class DialplanCep(_AriObject):
    context: str = ""
    exten: str = ""
    priority: int = 0
    app_name: str = ""
    app_data: str = ""


class Channel(_AriObject):
    id: str
    name: str = ""
    state: str = ""
    protocol_id: str = ""
    caller: CallerId = Field(default_factory=CallerId)
    connected: CallerId = Field(default_factory=CallerId)
    accountcode: str = ""
    dialplan: DialplanCep = Field(default_factory=DialplanCep)
    creationtime: datetime | None = None
    language: str = ""
    # Present only when ari.conf `channelvars` is set (Asterisk 14.2+).
    channelvars: dict[str, str] | None = None

    @property
    def endpoint(self) -> str:
        """`PJSIP/7181-00000001` -> `PJSIP/7181` (what AMI calls the member Interface)."""
        base, sep, _suffix = self.name.rpartition("-")
        return base if sep else self.name


class Bridge(_AriObject):
    id: str
    technology: str = ""
    bridge_type: str = ""
    bridge_class: str = ""
    channels: list[str] = Field(default_factory=list)
    creationtime: datetime | None = None


class Playback(_AriObject):
    id: str
    media_uri: str = ""
    target_uri: str = ""
    language: str = ""
    state: str = ""

    @property
    def channel_id(self) -> str | None:
        kind, sep, target = self.target_uri.partition(":")
        return target if sep and kind == "channel" else None


class DeviceState(_AriObject):
    name: str
    state: str


class Variable(_AriObject):
    """GET /channels/{id}/variable response."""

    value: str = ""


class _Event(_AriObject):
    timestamp: datetime
    application: str = ""
    asterisk_id: str = ""


class _ChannelEvent(_Event):
    channel: Channel


class ChannelCreatedEvent(_ChannelEvent):
    type: Literal["ChannelCreated"]


class ChannelDestroyedEvent(_ChannelEvent):
    type: Literal["ChannelDestroyed"]
    cause: int | None = None
    cause_txt: str = ""


class ChannelStateChangeEvent(_ChannelEvent):
    type: Literal["ChannelStateChange"]


class ChannelVarsetEvent(_Event):
    type: Literal["ChannelVarset"]
    variable: str
    value: str = ""
    channel: Channel | None = None  # absent for global variables


class ChannelDialplanEvent(_ChannelEvent):
    type: Literal["ChannelDialplan"]
    dialplan_app: str = ""
    dialplan_app_data: str = ""


class ChannelHangupRequestEvent(_ChannelEvent):
    type: Literal["ChannelHangupRequest"]
    cause: int | None = None
    soft: bool = False


class ChannelConnectedLineEvent(_ChannelEvent):
    type: Literal["ChannelConnectedLine"]


class ChannelCallerIdEvent(_ChannelEvent):
    type: Literal["ChannelCallerId"]
    caller_presentation: int | None = None
    caller_presentation_txt: str = ""


class ChannelDtmfReceivedEvent(_ChannelEvent):
    type: Literal["ChannelDtmfReceived"]
    digit: str
    duration_ms: int | None = None


class DialEvent(_Event):
    type: Literal["Dial"]
    peer: Channel
    caller: Channel | None = None  # absent when the channel was originated (POST /channels)
    dialstatus: str = ""
    dialstring: str = ""
    forward: str = ""


class ChannelEnteredBridgeEvent(_ChannelEvent):
    type: Literal["ChannelEnteredBridge"]
    bridge: Bridge


class ChannelLeftBridgeEvent(_ChannelEvent):
    type: Literal["ChannelLeftBridge"]
    bridge: Bridge


class BridgeCreatedEvent(_Event):
    type: Literal["BridgeCreated"]
    bridge: Bridge


class BridgeDestroyedEvent(_Event):
    type: Literal["BridgeDestroyed"]
    bridge: Bridge


class BridgeBlindTransferEvent(_Event):
    """Not in the recordings; fields from the ARI events reference (Asterisk 12+)."""

    type: Literal["BridgeBlindTransfer"]
    channel: Channel  # the transferer
    transferee: Channel | None = None
    exten: str = ""
    context: str = ""
    result: str = ""


class BridgeAttendedTransferEvent(_Event):
    """Not in the recordings; fields from the ARI events reference (Asterisk 12+)."""

    type: Literal["BridgeAttendedTransfer"]
    transferer_first_leg: Channel
    transferer_second_leg: Channel
    transferee: Channel | None = None
    transfer_target: Channel | None = None
    result: str = ""


class StasisStartEvent(_ChannelEvent):
    type: Literal["StasisStart"]
    args: list[str] = Field(default_factory=list)
    replace_channel: Channel | None = None


class StasisEndEvent(_ChannelEvent):
    type: Literal["StasisEnd"]


class PlaybackStartedEvent(_Event):
    type: Literal["PlaybackStarted"]
    playback: Playback


class PlaybackFinishedEvent(_Event):
    type: Literal["PlaybackFinished"]
    playback: Playback


class DeviceStateChangedEvent(_Event):
    type: Literal["DeviceStateChanged"]
    device_state: DeviceState


class OtherEvent(_Event):
    """Any event type pbxcrm does not read (kept so callers can still log or count it)."""

    type: str


KnownEvent = Annotated[
    ChannelCreatedEvent
    | ChannelDestroyedEvent
    | ChannelStateChangeEvent
    | ChannelVarsetEvent
    | ChannelDialplanEvent
    | ChannelHangupRequestEvent
    | ChannelConnectedLineEvent
    | ChannelCallerIdEvent
    | ChannelDtmfReceivedEvent
    | DialEvent
    | ChannelEnteredBridgeEvent
    | ChannelLeftBridgeEvent
    | BridgeCreatedEvent
    | BridgeDestroyedEvent
    | BridgeBlindTransferEvent
    | BridgeAttendedTransferEvent
    | StasisStartEvent
    | StasisEndEvent
    | PlaybackStartedEvent
    | PlaybackFinishedEvent
    | DeviceStateChangedEvent,
    Field(discriminator="type"),
]

AriEvent = KnownEvent | OtherEvent

_KNOWN_TYPES: frozenset[str] = frozenset(
    get_args(model.model_fields["type"].annotation)[0]
    for model in get_args(get_args(KnownEvent)[0])
)
_known_adapter: TypeAdapter[Any] = TypeAdapter(KnownEvent)
_channels_adapter: TypeAdapter[list[Channel]] = TypeAdapter(list[Channel])
_bridges_adapter: TypeAdapter[list[Bridge]] = TypeAdapter(list[Bridge])


class BadAriMessage(ValueError):
    """A websocket message that is not a valid ARI event; the reason is worded for a log line."""


def parse_event(message: Any) -> AriEvent:
    """One decoded websocket JSON value -> a typed event (OtherEvent for unused types)."""
    if not isinstance(message, dict):
        raise BadAriMessage(f"expected a JSON object, got {type(message).__name__}")
    kind = message.get("type")
    if not isinstance(kind, str):
        raise BadAriMessage("the message has no string 'type'")
    try:
        if kind in _KNOWN_TYPES:
            return _known_adapter.validate_python(message)
        return OtherEvent.model_validate(message)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'][1:]) or '(event)'}: {err['msg']}"
            for err in exc.errors()[:3]
        )
        raise BadAriMessage(f"{kind}: {problems}") from None


def parse_channels(body: Any) -> list[Channel]:
    """GET /ari/channels response body."""
    return _channels_adapter.validate_python(body)


def parse_bridges(body: Any) -> list[Bridge]:
    """GET /ari/bridges response body."""
    return _bridges_adapter.validate_python(body)
