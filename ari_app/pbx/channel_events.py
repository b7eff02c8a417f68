"""Channel events: what the call tracker understands, whatever the source (AMI or ARI).

The AMI mapping (ari_app/pbx/ami/events.py) and the ARI mapping (ari_app/pbx/ari/events.py) each
turn
their wire messages into these; the tracker never sees a wire format. `ts` is epoch seconds:
the PBX's own timestamp when it sent one, the receive clock otherwise. `uniqueid` is the
channel's Uniqueid (AMI) / channel id (ARI).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True, frozen=True)
class ChannelCreated:
    ts: float
    uniqueid: str
    linkedid: str
    channel: str  # PJSIP/7181-00000001
    caller_num: str
    caller_name: str
    context: str
    exten: str
    state: str  # Down, Ring, Ringing, Up ...


@dataclass(slots=True, frozen=True)
class ChannelStateChanged:
    ts: float
    uniqueid: str
    state: str
    connected_num: str = ""


@dataclass(slots=True, frozen=True)
class DialStarted:
    ts: float
    uniqueid: str | None  # the calling channel; None when an Originate dials the agent first
    dest_uniqueid: str
    dest_channel: str
    dial_string: str = ""
    dest_exten: str = ""


@dataclass(slots=True, frozen=True)
class DialEnded:
    ts: float
    uniqueid: str | None
    dest_uniqueid: str
    dial_status: str  # ANSWER, BUSY, NOANSWER, CANCEL, CHANUNAVAIL, CONGESTION ...


@dataclass(slots=True, frozen=True)
class BridgeEntered:
    ts: float
    uniqueid: str
    bridge_id: str


@dataclass(slots=True, frozen=True)
class HangupRequested:
    ts: float
    uniqueid: str
    cause: int | None
    soft: bool  # SoftHangupRequest: the PBX (dialplan, shutdown) asked, not a party


@dataclass(slots=True, frozen=True)
class ChannelHungUp:
    ts: float
    uniqueid: str
    cause: int | None
    cause_text: str = ""


@dataclass(slots=True, frozen=True)
class VariableSet:
    ts: float
    uniqueid: str
    name: str  # leading underscores (inheritance marks) already stripped
    value: str


@dataclass(slots=True, frozen=True)
class AppStarted:
    """A dialplan application began on a channel (only the ones that matter: VoiceMail, Queue)."""

    ts: float
    uniqueid: str
    app: str
    app_data: str


@dataclass(slots=True, frozen=True)
class RecordingStarted:
    ts: float
    uniqueid: str


@dataclass(slots=True, frozen=True)
class VoicemailLeft:
    ts: float
    uniqueid: str | None
    mailbox: str  # 7181@default
    new_messages: int


@dataclass(slots=True, frozen=True)
class QueueJoined:
    ts: float
    uniqueid: str
    queue: str


@dataclass(slots=True, frozen=True)
class QueueAgentConnected:
    ts: float
    uniqueid: str
    dest_uniqueid: str
    queue: str
    member_interface: str


@dataclass(slots=True, frozen=True)
class BlindTransferred:
    ts: float
    transferer_uniqueid: str  # the agent who transferred
    transferee_uniqueid: str  # the party being transferred
    extension: str


@dataclass(slots=True, frozen=True)
class AttendedTransferred:
    ts: float
    orig_transferer_uniqueid: str  # agent's leg in the customer call
    second_transferer_uniqueid: str  # agent's leg in the consult call
    transferee_uniqueid: str  # customer
    target_uniqueid: str  # the consulted agent


@dataclass(slots=True, frozen=True)
class ChannelSnapshot:
    """One channel that exists right now (CoreShowChannel / GET /ari/channels)."""

    ts: float
    uniqueid: str
    linkedid: str
    channel: str
    state: str
    caller_num: str
    connected_num: str
    context: str
    exten: str
    application: str
    bridge_id: str
    age_seconds: float  # since the channel was created


@dataclass(slots=True, frozen=True)
class SnapshotComplete:
    """The channel list ended: every open call without a live channel is over."""

    ts: float


@dataclass(slots=True, frozen=True)
class PbxDisconnected:
    """The connection to the PBX dropped at `ts` (PBX time): open calls were alive until then."""

    ts: float


@dataclass(slots=True, frozen=True)
class PbxShutdown:
    ts: float
    restart: bool


ChannelEvent = (
    ChannelCreated
    | ChannelStateChanged
    | DialStarted
    | DialEnded
    | BridgeEntered
    | HangupRequested
    | ChannelHungUp
    | VariableSet
    | AppStarted
    | RecordingStarted
    | VoicemailLeft
    | QueueJoined
    | QueueAgentConnected
    | BlindTransferred
    | AttendedTransferred
    | ChannelSnapshot
    | SnapshotComplete
    | PbxShutdown
    | PbxDisconnected
)
