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


def frame_to_event(frame: dict[str, str], ts: float) -> ChannelEvent | None:
    """Map one AMI event frame to a channel event; None for frames the tracker ignores."""
    name = frame.get("Event")
    get = frame.get
    if name == "VarSet":
        variable = get("Variable", "")
        if not variable_is_tracked(variable):
            return None
        return VariableSet(ts, get("Uniqueid", ""), variable.lstrip("_"), get("Value", ""))
    if name == "Newchannel":
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
    if name == "Newstate":
        return ChannelStateChanged(
            ts, get("Uniqueid", ""), get("ChannelStateDesc", ""), get("ConnectedLineNum", "")
        )
    if name == "DialBegin":
        return DialStarted(
            ts,
            get("Uniqueid") or None,
            get("DestUniqueid", ""),
            get("DestChannel", ""),
            get("DialString", ""),
            get("DestExten", ""),
        )
    if name == "DialEnd":
        return DialEnded(
            ts, get("Uniqueid") or None, get("DestUniqueid", ""), get("DialStatus", "")
        )
    if name == "BridgeEnter":
        return BridgeEntered(ts, get("Uniqueid", ""), get("BridgeUniqueid", ""))
    if name == "HangupRequest" or name == "SoftHangupRequest":
        return HangupRequested(
            ts, get("Uniqueid", ""), _int_or_none(get("Cause")), name == "SoftHangupRequest"
        )
    if name == "Hangup":
        return ChannelHungUp(
            ts, get("Uniqueid", ""), _int_or_none(get("Cause")), get("Cause-txt", "")
        )
    if name == "Newexten":
        app = get("Application", "")
        if app not in TRACKED_APPLICATIONS:
            return None
        return AppStarted(ts, get("Uniqueid", ""), app, get("AppData", ""))
    if name == "MixMonitorStart":
        return RecordingStarted(ts, get("Uniqueid", ""))
    if name == "MessageWaiting":
        return VoicemailLeft(
            ts, get("Uniqueid") or None, get("Mailbox", ""), _int_or_none(get("New")) or 0
        )
    if name == "QueueCallerJoin":
        return QueueJoined(ts, get("Uniqueid", ""), get("Queue", ""))
    if name == "AgentConnect":
        return QueueAgentConnected(
            ts,
            get("Uniqueid", ""),
            get("DestUniqueid", ""),
            get("Queue", ""),
            get("Interface", ""),
        )
    if (name == "BlindTransfer" or name == "AttendedTransfer") and get("Result", "Success") != (
        "Success"
    ):
        return None  # a failed transfer changes nothing
    if name == "BlindTransfer":
        # Asterisk 12+ names the parties Transferer* and Transferee* (AMI docs, BlindTransfer).
        return BlindTransferred(
            ts,
            get("TransfererUniqueid", ""),
            get("TransfereeUniqueid", ""),
            get("Extension", ""),
        )
    if name == "AttendedTransfer":
        return AttendedTransferred(
            ts,
            get("OrigTransfererUniqueid", ""),
            get("SecondTransfererUniqueid", ""),
            get("TransfereeUniqueid", ""),
            get("TransferTargetUniqueid", ""),
        )
    if name == "CoreShowChannel":
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
    if name == "CoreShowChannelsComplete":
        return SnapshotComplete(ts)
    if name == "Shutdown":
        return PbxShutdown(ts, get("Restart", "").lower() == "true")
    return None
