"""AMI frames (header dicts) -> channel events, and the set of frames worth parsing at all."""

from __future__ import annotations

import time
from collections.abc import Callable

from ari_app.pbx.ami.frames import FrameFilter
from ari_app.pbx.channel_events import (
    AppStarted,
    AttendedTransferred,
    BlindTransferred,
    BridgeEntered,
    ChannelCreated,
    ChannelEvent,
    ChannelHungUp,
    ChannelSnapshot,
    ChannelStateChanged,
    DialEnded,
    DialStarted,
    HangupRequested,
    PbxShutdown,
    QueueAgentConnected,
    QueueJoined,
    RecordingStarted,
    SnapshotComplete,
    VariableSet,
    VoicemailLeft,
)

# Every event the tracker (or the originate service) reads; everything else is skipped by the
# frame reader before its headers are parsed.
TRACKED_EVENTS: frozenset[str] = frozenset(
    {
        "Newchannel",
        "Newstate",
        "DialBegin",
        "DialEnd",
        "BridgeEnter",
        "HangupRequest",
        "SoftHangupRequest",
        "Hangup",
        "VarSet",
        "Newexten",
        "MixMonitorStart",
        "MessageWaiting",
        "QueueCallerJoin",
        "AgentConnect",
        "BlindTransfer",
        "AttendedTransfer",
        "CoreShowChannel",
        "CoreShowChannelsComplete",
        "Shutdown",
        "OriginateResponse",
        "FullyBooted",
    }
)

# VarSet is most of the traffic; only these variables matter (names without the `_`/`__`
# inheritance marks). CRM_* and SURVEY_* are the IVR's results. TRANSFERERNAME names the agent
# who started an attended transfer on the consult channels: it ties them to the caller's call
# where the source gives no Linkedid (ARI).
TRACKED_VARIABLES: frozenset[str] = frozenset(
    {"MIXMONITOR_FILENAME", "MONITOR_FILE", "VMSTATUS", "ANSWEREDTIME_MS", "TRANSFERERNAME"}
)
TRACKED_VARIABLE_PREFIXES: tuple[str, ...] = ("CRM_", "SURVEY_")

# Only these applications change what the CRM is told.
TRACKED_APPLICATIONS: frozenset[str] = frozenset({"VoiceMail", "Queue"})


def tracked_frame_filter() -> FrameFilter:
    """What the frame reader parses: the tracked events, VarSet and Newexten only when useful."""
    return FrameFilter.for_calls(
        TRACKED_EVENTS - {"VarSet", "Newexten"},
        variables=TRACKED_VARIABLES,
        variable_prefixes=TRACKED_VARIABLE_PREFIXES,
        applications=TRACKED_APPLICATIONS,
    )


def variable_is_tracked(name: str) -> bool:
    bare = name.lstrip("_")
    return bare in TRACKED_VARIABLES or bare.startswith(TRACKED_VARIABLE_PREFIXES)


def _int_or_none(value: str | None) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        return None


def _duration_seconds(value: str) -> float:
    """CoreShowChannel's `Duration: HH:MM:SS`."""
    try:
        hours, minutes, seconds = (int(part) for part in value.split(":"))
    except ValueError:
        return 0.0
    return float(hours * 3600 + minutes * 60 + seconds)


# datetime cannot go past 9999-12-31: a Timestamp beyond it (a flipped digit) is not a time.
_LAST_EPOCH = 253402300800.0


class PbxClock:
    """Event time: the `Timestamp` header when Asterisk sends one (timestampevents = yes).

    Frames without one (action list events, or a PBX without timestampevents) get the PBX time
    extrapolated from the last stamped frame on this connection, so durations never mix the PBX
    clock with ours; with no stamped frame ever seen, the receive clock is used.
    """

    __slots__ = ("_last_pbx", "_last_recv", "_now")

    def __init__(self, now: Callable[[], float] = time.time) -> None:
        self._now = now
        self._last_pbx: float | None = None
        self._last_recv = 0.0

    def reset(self) -> None:
        """Forget the offset: a new connection may be a restarted PBX with another clock."""
        self._last_pbx = None

    def stamp(self, frame: dict[str, str]) -> float:
        raw = frame.get("Timestamp")
        if raw is not None:
            try:
                pbx_ts = float(raw)
            except ValueError:
                pass
            else:
                if not 0.0 <= pbx_ts < _LAST_EPOCH:  # nan, inf, a corrupted header
                    return self._extrapolated()
                self._last_pbx = pbx_ts
                self._last_recv = self._now()
                return pbx_ts
        return self._extrapolated()

    def _extrapolated(self) -> float:
        if self._last_pbx is None:
            return self._now()
        return self._last_pbx + max(0.0, self._now() - self._last_recv)


Frame = dict[str, str]
_Mapper = Callable[[Frame, float], "ChannelEvent | None"]


def _var_set(f: Frame, ts: float) -> ChannelEvent | None:
    variable = f.get("Variable", "")
    if not variable_is_tracked(variable):
        return None
    return VariableSet(ts, f.get("Uniqueid", ""), variable.lstrip("_"), f.get("Value", ""))


def _new_channel(f: Frame, ts: float) -> ChannelEvent:
    get = f.get
    return ChannelCreated(
        ts,
        get("Uniqueid", ""),
        get("Linkedid") or get("Uniqueid", ""),
        get("Channel", ""),
        get("CallerIDNum", ""),
        get("CallerIDName", ""),
        get("Context", ""),
        get("Exten", ""),
        get("ChannelStateDesc", ""),
    )


def _new_state(f: Frame, ts: float) -> ChannelEvent:
    get = f.get
    return ChannelStateChanged(
        ts, get("Uniqueid", ""), get("ChannelStateDesc", ""), get("ConnectedLineNum", "")
    )


def _dial_begin(f: Frame, ts: float) -> ChannelEvent:
    get = f.get
    return DialStarted(
        ts,
        get("Uniqueid") or None,
        get("DestUniqueid", ""),
        get("DestChannel", ""),
        get("DialString", ""),
        get("DestExten", ""),
    )


def _dial_end(f: Frame, ts: float) -> ChannelEvent:
    get = f.get
    return DialEnded(ts, get("Uniqueid") or None, get("DestUniqueid", ""), get("DialStatus", ""))


def _bridge_enter(f: Frame, ts: float) -> ChannelEvent:
    return BridgeEntered(ts, f.get("Uniqueid", ""), f.get("BridgeUniqueid", ""))


def _hangup_request(f: Frame, ts: float) -> ChannelEvent:
    return HangupRequested(ts, f.get("Uniqueid", ""), _int_or_none(f.get("Cause")), False)


def _soft_hangup_request(f: Frame, ts: float) -> ChannelEvent:
    # Asked by the PBX (dialplan, shutdown), not by a party.
    return HangupRequested(ts, f.get("Uniqueid", ""), _int_or_none(f.get("Cause")), True)


def _hangup(f: Frame, ts: float) -> ChannelEvent:
    get = f.get
    return ChannelHungUp(ts, get("Uniqueid", ""), _int_or_none(get("Cause")), get("Cause-txt", ""))


def _new_exten(f: Frame, ts: float) -> ChannelEvent | None:
    app = f.get("Application", "")
    if app not in TRACKED_APPLICATIONS:
        return None
    return AppStarted(ts, f.get("Uniqueid", ""), app, f.get("AppData", ""))


def _mix_monitor_start(f: Frame, ts: float) -> ChannelEvent:
    return RecordingStarted(ts, f.get("Uniqueid", ""))


def _message_waiting(f: Frame, ts: float) -> ChannelEvent:
    get = f.get
    return VoicemailLeft(
        ts, get("Uniqueid") or None, get("Mailbox", ""), _int_or_none(get("New")) or 0
    )


def _queue_caller_join(f: Frame, ts: float) -> ChannelEvent:
    return QueueJoined(ts, f.get("Uniqueid", ""), f.get("Queue", ""))


def _agent_connect(f: Frame, ts: float) -> ChannelEvent:
    get = f.get
    return QueueAgentConnected(
        ts, get("Uniqueid", ""), get("DestUniqueid", ""), get("Queue", ""), get("Interface", "")
    )


def _blind_transfer(f: Frame, ts: float) -> ChannelEvent | None:
    get = f.get
    if get("Result", "Success") != "Success":
        return None  # a failed transfer changes nothing
    # Asterisk 12+ names the parties Transferer* and Transferee* (AMI docs, BlindTransfer).
    return BlindTransferred(
        ts, get("TransfererUniqueid", ""), get("TransfereeUniqueid", ""), get("Extension", "")
    )


def _attended_transfer(f: Frame, ts: float) -> ChannelEvent | None:
    get = f.get
    if get("Result", "Success") != "Success":
        return None
    return AttendedTransferred(
        ts,
        get("OrigTransfererUniqueid", ""),
        get("SecondTransfererUniqueid", ""),
        get("TransfereeUniqueid", ""),
        get("TransferTargetUniqueid", ""),
    )


def _core_show_channel(f: Frame, ts: float) -> ChannelEvent:
    get = f.get
    return ChannelSnapshot(
        ts,
        get("Uniqueid", ""),
        get("Linkedid") or get("Uniqueid", ""),
        get("Channel", ""),
        get("ChannelStateDesc", ""),
        get("CallerIDNum", ""),
        get("ConnectedLineNum", ""),
        get("Context", ""),
        get("Exten", ""),
        get("Application", ""),
        get("BridgeId", ""),
        _duration_seconds(get("Duration", "")),
    )


def _core_show_channels_complete(f: Frame, ts: float) -> ChannelEvent:
    return SnapshotComplete(ts)


def _shutdown(f: Frame, ts: float) -> ChannelEvent:
    return PbxShutdown(ts, f.get("Restart", "").lower() == "true")


# AMI event name -> its channel event. A new AMI event the tracker should read is one function
# and one row here (and its name in TRACKED_EVENTS, so the frame reader parses it).
EVENT_MAPPERS: dict[str, _Mapper] = {
    "VarSet": _var_set,
    "Newchannel": _new_channel,
    "Newstate": _new_state,
    "DialBegin": _dial_begin,
    "DialEnd": _dial_end,
    "BridgeEnter": _bridge_enter,
    "HangupRequest": _hangup_request,
    "SoftHangupRequest": _soft_hangup_request,
    "Hangup": _hangup,
    "Newexten": _new_exten,
    "MixMonitorStart": _mix_monitor_start,
    "MessageWaiting": _message_waiting,
    "QueueCallerJoin": _queue_caller_join,
    "AgentConnect": _agent_connect,
    "BlindTransfer": _blind_transfer,
    "AttendedTransfer": _attended_transfer,
    "CoreShowChannel": _core_show_channel,
    "CoreShowChannelsComplete": _core_show_channels_complete,
    "Shutdown": _shutdown,
}


def frame_to_event(frame: Frame, ts: float) -> ChannelEvent | None:
    """Map one AMI event frame to a channel event; None for frames the tracker ignores."""
    mapper = EVENT_MAPPERS.get(frame.get("Event", ""))
    return None if mapper is None else mapper(frame, ts)
