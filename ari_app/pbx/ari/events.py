"""ARI events -> the source-neutral channel events the call tracker reads.

Mapped so that one call yields the same channel events from ARI as ari_app/pbx/ami/events.py yields
from AMI (tests/test_ari_events.py replays both recordings of the same calls and compares).
Where ARI and AMI differ:

* Asterisk 22's ARI channel JSON has no Linkedid. Asterisk gives a dialled channel the Linkedid
  of the channel that dialled it, so the mapper holds a new `Down` channel's events back until
  the `Dial` event names its caller (or until anything else happens to it: then it is a call of
  its own, e.g. an ARI originate, and its own id is its Linkedid). A `Ringing` state change
  does not end the wait: Asterisk sometimes sends the dialled phone's ChannelStateChange before
  the Dial event that names its caller. The `;2` half of a Local pair takes the Linkedid of its
  `;1` half (and waits with it). Whatever is still guessed here the tracker corrects when a dial
  or TRANSFERERNAME joins two channels (ari_app/calls/tracker.py).
* AMI `Newexten` = ARI `ChannelDialplan`; AMI `VarSet` = ARI `ChannelVarset` (with
  subscribeAll); AMI `DialBegin`/`DialEnd` = ARI `Dial` with an empty / a final `dialstatus`.
* ARI has no `MixMonitorStart`, `MessageWaiting`, `QueueCallerJoin`, `AgentConnect` or
  `Shutdown` events. Recording start is taken from the `MixMonitor` dialplan application, queue
  join from the `Queue` application, the queue agent from the `Dial` answered while the caller
  runs `Queue`. A left voicemail has no ARI event at all: only the `VMSTATUS` variable says so.
  A PBX shutdown shows as the websocket closing.
"""

from __future__ import annotations

import logging

from ari_app.pbx.ami.events import TRACKED_APPLICATIONS, variable_is_tracked
from ari_app.pbx.ari.models import (
    AriEvent,
    BridgeAttendedTransferEvent,
    BridgeBlindTransferEvent,
    Channel,
    ChannelCreatedEvent,
    ChannelDestroyedEvent,
    ChannelDialplanEvent,
    ChannelEnteredBridgeEvent,
    ChannelHangupRequestEvent,
    ChannelStateChangeEvent,
    ChannelVarsetEvent,
    DialEvent,
)
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
    QueueAgentConnected,
    QueueJoined,
    RecordingStarted,
    VariableSet,
)

log = logging.getLogger(__name__)

# ARI `Dial.dialstatus` values that are progress, not the end of the dial (AMI sends these as
# DialState, which the tracker does not read). Empty = the dial began (AMI DialBegin).
_PROGRESS_STATUSES: frozenset[str] = frozenset({"RINGING", "PROGRESS", "PROCEEDING"})


def _created(channel: Channel, ts: float, linkedid: str) -> ChannelCreated:
    return ChannelCreated(
        ts,
        channel.id,
        linkedid,
        channel.name,
        channel.caller.number,
        channel.caller.name,
        channel.dialplan.context,
        channel.dialplan.exten,
        channel.state,
    )


def channel_snapshot(
    channel: Channel, *, ts: float, linkedid: str, bridge_id: str = ""
) -> ChannelSnapshot:
    """One `GET /ari/channels` item -> the snapshot AMI builds from `CoreShowChannel`."""
    created = channel.creationtime.timestamp() if channel.creationtime else ts
    return ChannelSnapshot(
        ts,
        channel.id,
        linkedid,
        channel.name,
        channel.state,
        channel.caller.number,
        channel.connected.number,
        channel.dialplan.context,
        channel.dialplan.exten,
        channel.dialplan.app_name,
        bridge_id,
        max(0.0, ts - created),
    )


class _Pending:
    """A new channel whose Linkedid is not known yet, and what happened to it meanwhile."""

    __slots__ = ("channel", "events", "followers", "follows", "ts")

    def __init__(self, channel: Channel, ts: float, follows: str | None = None) -> None:
        self.channel = channel
        self.ts = ts
        self.events: list[ChannelEvent] = []
        self.follows = follows  # a Local `;2` waits for its `;1` half's Linkedid
        self.followers: list[str] = []


def _local_partner_name(name: str) -> str | None:
    if not name.startswith("Local/") or name[-2:] not in (";1", ";2"):
        return None
    return name[:-1] + ("2" if name[-1] == "1" else "1")


class AriEventMapper:
    """Stateful: remembers each live channel's Linkedid until the channel is destroyed."""

    def __init__(self) -> None:
        self._linkedids: dict[str, str] = {}
        self._pending: dict[str, _Pending] = {}
        self._ids_by_name: dict[str, str] = {}  # live channels: name -> id (Local pairs)

    def linkedid_of(self, channel_id: str) -> str | None:
        return self._linkedids.get(channel_id)

    def remember(self, channel_id: str, linkedid: str) -> None:
        """A channel learnt from `GET /ari/channels` after a (re)connect."""
        self._linkedids[channel_id] = linkedid

    def forget_all_but(self, live_ids: set[str]) -> None:
        """After a reconnect: channels destroyed while we were away will send no event."""
        for channel_id in list(self._linkedids):
            if channel_id not in live_ids:
                del self._linkedids[channel_id]
        for channel_id in list(self._pending):
            if channel_id not in live_ids:
                del self._pending[channel_id]
        for name, channel_id in list(self._ids_by_name.items()):
            if channel_id not in live_ids:
                del self._ids_by_name[name]

    def map(self, event: AriEvent) -> list[ChannelEvent]:
        """One ARI event -> zero or more channel events, in the order the tracker must see them."""
        ts = event.timestamp.timestamp()
        if isinstance(event, ChannelCreatedEvent):
            channel = event.channel
            self._ids_by_name[channel.name] = channel.id
            partner_name = _local_partner_name(channel.name)
            partner_id = self._ids_by_name.get(partner_name) if partner_name else None
            if partner_id is not None and partner_id in self._pending:
                self._pending[channel.id] = _Pending(channel, ts, follows=partner_id)
                self._pending[partner_id].followers.append(channel.id)
                return []
            if partner_id is not None and partner_id in self._linkedids:
                linkedid = self._linkedids[partner_id]
                self._linkedids[channel.id] = linkedid
                return [_created(channel, ts, linkedid)]
            if channel.state == "Down":
                # Dialled or originated: its Linkedid comes with the Dial event (module doc).
                self._pending[channel.id] = _Pending(channel, ts)
                return []
            self._linkedids[channel.id] = channel.id
            return [_created(channel, ts, channel.id)]
        if isinstance(event, DialEvent):
            return self._dial(event, ts)
        if isinstance(event, ChannelVarsetEvent):
            if event.channel is None or not variable_is_tracked(event.variable):
                return []
            mapped: list[ChannelEvent] = [
                VariableSet(ts, event.channel.id, event.variable.lstrip("_"), event.value)
            ]
            return self._held_or_out(event.channel.id, mapped)
        if isinstance(event, ChannelDialplanEvent):
            return self._held_or_out(event.channel.id, self._dialplan(event, ts))
        if isinstance(event, ChannelStateChangeEvent):
            channel = event.channel
            changed = ChannelStateChanged(ts, channel.id, channel.state, channel.connected.number)
            if channel.state != "Up":
                return self._held_or_out(channel.id, [changed])
            return [*self._flushed(channel.id), changed]
        if isinstance(event, ChannelEnteredBridgeEvent):
            entered = BridgeEntered(ts, event.channel.id, event.bridge.id)
            return [*self._flushed(event.channel.id), entered]
        if isinstance(event, ChannelHangupRequestEvent):
            request = HangupRequested(ts, event.channel.id, event.cause, event.soft)
            return [*self._flushed(event.channel.id), request]
        if isinstance(event, ChannelDestroyedEvent):
            out = self._flushed(event.channel.id)
            self._linkedids.pop(event.channel.id, None)
            if self._ids_by_name.get(event.channel.name) == event.channel.id:
                del self._ids_by_name[event.channel.name]
            return [*out, ChannelHungUp(ts, event.channel.id, event.cause, event.cause_txt)]
        if isinstance(event, BridgeBlindTransferEvent):
            if event.result not in ("", "Success"):
                return []
            transferee = event.transferee.id if event.transferee else ""
            return [BlindTransferred(ts, event.channel.id, transferee, event.exten)]
        if isinstance(event, BridgeAttendedTransferEvent):
            if event.result not in ("", "Success"):
                return []
            return [
                AttendedTransferred(
                    ts,
                    event.transferer_first_leg.id,
                    event.transferer_second_leg.id,
                    event.transferee.id if event.transferee else "",
                    event.transfer_target.id if event.transfer_target else "",
                )
            ]
        # StasisStart/End, playbacks, DTMF, device states: the Stasis app's business, not calls'.
        return []

    def _dial(self, event: DialEvent, ts: float) -> list[ChannelEvent]:
        peer = event.peer
        caller_id = event.caller.id if event.caller else None
        out: list[ChannelEvent] = []
        if caller_id is not None and caller_id in self._pending:
            out += self._flushed(caller_id)  # it dials, so it exists: the tracker needs it first
        if peer.id in self._pending:
            linkedid = peer.id
            if caller_id is not None:
                linkedid = self._linkedids.get(caller_id, caller_id)
            out += self._flush(peer.id, linkedid)
        status = event.dialstatus
        if status == "":
            out.append(
                DialStarted(
                    ts, caller_id, peer.id, peer.name, event.dialstring, peer.dialplan.exten
                )
            )
        elif status not in _PROGRESS_STATUSES:
            out.append(DialEnded(ts, caller_id, peer.id, status))
            caller = event.caller
            if status == "ANSWER" and caller is not None and caller.dialplan.app_name == "Queue":
                queue = caller.dialplan.app_data.split(",", 1)[0]
                out.append(QueueAgentConnected(ts, caller.id, peer.id, queue, peer.endpoint))
        return out

    @staticmethod
    def _dialplan(event: ChannelDialplanEvent, ts: float) -> list[ChannelEvent]:
        app, data, channel_id = event.dialplan_app, event.dialplan_app_data, event.channel.id
        out: list[ChannelEvent] = []
        if app in TRACKED_APPLICATIONS:
            out.append(AppStarted(ts, channel_id, app, data))
        if app == "Queue":
            out.append(QueueJoined(ts, channel_id, data.split(",", 1)[0]))
        elif app == "MixMonitor":
            out.append(RecordingStarted(ts, channel_id))
        return out

    def _held_or_out(self, channel_id: str, events: list[ChannelEvent]) -> list[ChannelEvent]:
        """Events of a channel still waiting for its Linkedid wait with it, in order."""
        pending = self._pending.get(channel_id)
        if pending is None:
            return events
        pending.events.extend(events)
        return []

    def _flushed(self, channel_id: str) -> list[ChannelEvent]:
        pending = self._pending.get(channel_id)
        if pending is None:
            return []
        if pending.follows is not None and pending.follows in self._pending:
            # Its `;1` half is still unlinked: the pair is a call of its own, together.
            return self._flush(pending.follows, pending.follows)
        # Something other than a Dial happened first: nobody dialled it, it is its own call.
        return self._flush(channel_id, channel_id)

    def _flush(self, channel_id: str, linkedid: str) -> list[ChannelEvent]:
        pending = self._pending.pop(channel_id)
        self._linkedids[channel_id] = linkedid
        out = [_created(pending.channel, pending.ts, linkedid), *pending.events]
        for follower in pending.followers:
            if follower in self._pending:
                out += self._flush(follower, linkedid)
        return out
