"""The call tracker: channel events in, calls and their lifecycle events out.

Pure: no I/O and no clock but the events' own `ts`, so the same events always give the same
calls, whether they come from AMI, ARI or a test. The rules it applies, in the words of a CRM:

- A call is a Linkedid (an attended transfer folds the consult call into the customer's call).
- The *primary* channel is the call's first channel: the customer on an inbound call, the agent
  on an outbound or internal one. HANGUP is sent when it hangs up, COMPLETED when the last
  channel of the call is gone; an agent leg that leaves at a transfer sends neither.
- Who hung up is the first *party* HangupRequest on the primary channel or on an answered leg
  (a ringing leg rejecting the call is not "the agent hung up"); hangup causes are not used
  for this, since Asterisk reports 127 on abandoned calls and 0 after voicemail. A call that
  ended with no party request (dialplan Hangup(), shutdown, lost PBX) was ended by the system.
- Ring time is DialBegin -> DialEnd of the dial that connected the call (or of all dials for a
  call nobody answered; a pickup counts from the first ring); talk time runs from the first
  answer to the end of the customer's conversation, across transfers.

Calls with more than two people:
- The agent is who finally talked to the customer: the first answer, then whoever the
  customer's own channel dials and reaches (blind transfer, second dial), or the target of an
  attended transfer once it completes. A consult dial alone does not move the call.
- Every agent leg that rang is in `rang_extensions`; every hand-over is in `transfers`.
- A transferring agent's hangup request (it completes an attended transfer) is taken back once
  the transfer is seen: it neither ends the talk time nor names who hung up.
- Local channels (`;1`/`;2` pairs, `/n`) are never agents: the agent is the phone the `;2` half
  reached (queues with Local members, ring groups through Local channels, consult calls).
- A channel dialled by (or answering a dial of) another call's channel joins that call: the
  phone that picked up with `*8` (it had a Linkedid of its own), or a channel whose Linkedid
  the source could only guess (ARI). TRANSFERERNAME joins consult channels to the caller's call.
- Per agent leg: RINGING, then ANSWERED if that agent talked, then exactly one LEG_ENDED with
  the reason (ari_app/calls/legs.py), so a CRM's per-agent card always closes.
"""

from __future__ import annotations

import os.path
import re
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, ClassVar

from ari_app.calls.legs import LegsAndTiming
from ari_app.calls.recent import GONE_REMEMBERED, remember
from ari_app.calls.reconcile import Reconciliation
from ari_app.calls.rules import CallRules
from ari_app.calls.state import CallState, TrackedChannel, build_call, clean, endpoint_of, utc
from ari_app.calls.transfers import TransfersAndJoins
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
    PbxDisconnected,
    PbxShutdown,
    QueueAgentConnected,
    QueueJoined,
    RecordingStarted,
    SnapshotComplete,
    VariableSet,
    VoicemailLeft,
)
from crm.model import CallEvent, Direction, EventKind


class CallTracker(TransfersAndJoins, Reconciliation, LegsAndTiming):
    def __init__(self, rules: CallRules, pbx_id: str = "default", source: str = "ami") -> None:
        self.rules = rules
        self._recording_links = rules.recording_links  # one signer, not one per step
        self.pbx_id = pbx_id
        self.source = source
        self._trunk_endpoints = frozenset(rules.trunk_endpoints)
        self._trunk_contexts = frozenset(rules.trunk_contexts)
        self._agent_pattern = re.compile(rules.internal_extension_pattern)
        self._channels: dict[str, TrackedChannel] = {}
        self._calls: dict[str, CallState] = {}  # open calls by call id
        self._by_linkedid: dict[str, CallState] = {}
        self._snapshot_seen: set[str] = set()
        self._snapshot_mark: int | None = None
        self._tick = 0  # counts handled events; a call remembers the tick it last changed at
        # Channels that hung up lately: a channel list built before their Hangup but
        # delivered after it must not bring them back.
        self._gone: OrderedDict[str, None] = OrderedDict()
        self._closed_linkedids: OrderedDict[str, None] = OrderedDict()
        self._by_name: dict[str, TrackedChannel] = {}  # live channels by channel name
        # Click-to-call requests pbxcrm sent: their id (CRM_CALL_ID) -> the number dialled,
        # which the PBX's events name only once the client's leg starts.
        self._originated: OrderedDict[str, str] = OrderedDict()

    # -- public ---------------------------------------------------------------------------

    @property
    def active_calls(self) -> int:
        return len(self._calls)

    def open_call_ids(self) -> list[str]:
        return list(self._calls)

    def expect_originate(self, originate_id: str, number: str) -> None:
        """pbxcrm asked the PBX to dial `number` for click-to-call `originate_id`."""
        self._originated[originate_id] = number
        if len(self._originated) > GONE_REMEMBERED:
            self._originated.popitem(last=False)

    def call_id_of(self, uniqueid: str) -> str | None:
        """The open call a channel (or a call id) belongs to, if any."""
        chan = self._channels.get(uniqueid)
        if chan is not None:
            return chan.call.call_id
        state = self._by_linkedid.get(uniqueid)
        return None if state is None else state.call_id

    def add_event(
        self,
        call_id: str,
        kind: EventKind,
        ts: float,
        *,
        extension: str | None = None,
        data: dict[str, object] | None = None,
    ) -> CallEvent | None:
        """A step that did not come from the PBX's events (survey rating, agent's note) on an
        open call; None when the call is not open here."""
        state = self._calls.get(call_id)
        if state is None:
            return None
        return self._emit(state, kind, ts, extension=extension, data=data)

    def handle(self, event: ChannelEvent) -> list[CallEvent]:
        self._tick += 1
        handler = self._handlers.get(type(event))
        if handler is None:
            return []
        return handler(self, event)

    def sweep(self, now_ts: float) -> list[CallEvent]:
        """Close calls that saw no event for `stale_call_seconds` (a Hangup that never came)."""
        out: list[CallEvent] = []
        limit = self.rules.stale_call_seconds
        for state in list(self._calls.values()):
            if now_ts - state.last_ts >= limit:
                out.extend(self._close_reconciled(state, state.last_ts))
        return out

    # -- classification -------------------------------------------------------------------

    def _classify(self, channel: str, context: str) -> tuple[str, str | None, bool]:
        endpoint = endpoint_of(channel)
        if channel.startswith("Local/"):
            # A Local pair is dialplan plumbing in front of the real phone (queue members,
            # ring groups, consult calls): the agent is the device it dials, never the pair.
            return endpoint, None, False
        is_trunk = endpoint in self._trunk_endpoints or context in self._trunk_contexts
        extension = None
        if not is_trunk and self._agent_pattern.match(endpoint):
            extension = endpoint
        return endpoint, extension, is_trunk

    def _local_partner(self, channel: str) -> TrackedChannel | None:
        """`Local/x@ctx-0001;1` <-> `;2`: the other half of a Local pair, if tracked."""
        if not channel.startswith("Local/") or channel[-2:] not in (";1", ";2"):
            return None
        other = channel[:-1] + ("2" if channel[-1] == "1" else "1")
        return self._by_name.get(other)

    def _device_behind(self, chan: TrackedChannel | None) -> TrackedChannel | None:
        """The phone a Local channel leads to: its other half's answered dial."""
        for _ in range(8):  # Local chains are short; a loop in bad data must not hang us
            if chan is None or not chan.is_local:
                return chan
            partner = self._local_partner(chan.channel)
            reached = partner.reaches if partner is not None else None
            chan = self._channels.get(reached) if reached is not None else None
        return None

    # -- event handlers -------------------------------------------------------------------

    def _on_created(self, ev: ChannelCreated) -> list[CallEvent]:
        if ev.uniqueid in self._channels or ev.uniqueid in self._gone:
            return []  # a repeated frame
        if ev.linkedid in self._closed_linkedids:
            # A late frame of a call already completed must not reopen it as a new call with
            # the same id (its numbering would restart at 1).
            return []
        self._add_channel(
            ev.ts,
            ev.uniqueid,
            ev.linkedid,
            ev.channel,
            ev.context,
            ev.exten,
            ev.caller_num,
            ev.caller_name,
        )
        return []

    def _add_channel(
        self,
        ts: float,
        uniqueid: str,
        linkedid: str,
        channel: str,
        context: str,
        exten: str,
        caller_num: str,
        caller_name: str,
    ) -> TrackedChannel:
        endpoint, extension, is_trunk = self._classify(channel, context)
        state = self._by_linkedid.get(linkedid)
        if state is None:
            if is_trunk:
                direction = Direction.INBOUND
                caller = clean(caller_num)
                called = clean(exten)
            else:
                direction = Direction.INTERNAL
                caller = extension or clean(caller_num)
                called = clean(exten)
            state = CallState(
                call_id=linkedid,
                primary=uniqueid,
                direction=direction,
                start_ts=ts,
                caller_number=caller,
                caller_name=clean(caller_name),
                called_number=called,
            )
            if extension is not None and direction is not Direction.INBOUND:
                state.agent_extension = extension
            state.linkedids.add(linkedid)
            self._calls[state.call_id] = state
            self._by_linkedid[linkedid] = state
        chan = TrackedChannel(uniqueid, channel, endpoint, extension, is_trunk, state)
        chan.is_local = channel.startswith("Local/")
        state.channels[uniqueid] = chan
        self._channels[uniqueid] = chan
        self._by_name[channel] = chan
        state.last_ts = max(state.last_ts, ts)
        state.touched = self._tick
        return chan

    def _chan(self, uniqueid: str | None, ts: float) -> TrackedChannel | None:
        if uniqueid is None:
            return None
        chan = self._channels.get(uniqueid)
        if chan is not None:
            state = chan.call
            state.touched = self._tick
            if state.last_ts < ts:
                state.last_ts = ts
        return chan

    def _on_state(self, ev: ChannelStateChanged) -> list[CallEvent]:
        chan = self._chan(ev.uniqueid, ev.ts)
        if chan is None:
            return []
        if ev.state == "Up" and chan.uniqueid == chan.call.primary and chan.is_trunk:
            # The customer's channel went Up with no agent yet: the PBX answered it itself.
            chan.call.pbx_answered = True
        return []

    def _on_dial_started(self, ev: DialStarted) -> list[CallEvent]:
        dest = self._chan(ev.dest_uniqueid, ev.ts)
        if dest is None:
            return []
        out = self._join_dialled(ev.uniqueid, dest, ev.ts)
        state = dest.call
        state.dial_started[dest.uniqueid] = ev.ts
        if state.first_ring_ts is None:
            state.first_ring_ts = ev.ts
        if dest.is_trunk and state.direction is Direction.INTERNAL:
            state.direction = Direction.OUTBOUND
        if dest.is_trunk and state.direction is Direction.OUTBOUND:
            number = clean(ev.dest_exten) or clean(ev.dial_string.split("@", 1)[0])
            if number:
                state.called_number = number
        if dest.extension is None:
            return out
        if ev.uniqueid is not None and state.direction is Direction.INTERNAL:
            state.called_number = state.called_number or dest.extension
        if dest.rang:
            return out  # a repeated DialBegin
        dest.rang = True
        if dest.extension not in state.rang:
            state.rang.append(dest.extension)
        out.append(self._emit(state, EventKind.RINGING, ev.ts, extension=dest.extension))
        return out

    def _on_bridge(self, ev: BridgeEntered) -> list[CallEvent]:
        self._chan(ev.uniqueid, ev.ts)
        return []

    def _on_hangup_request(self, ev: HangupRequested) -> list[CallEvent]:
        chan = self._chan(ev.uniqueid, ev.ts)
        if chan is None:
            return []
        state = chan.call
        counts = not chan.is_local and (chan.uniqueid == state.primary or chan.answered)
        if not counts:
            return []
        if state.answer_ts is not None and state.talk_end_ts is None:
            state.talk_end_ts = ev.ts
            state.end_requested_by = chan.uniqueid
        if state.terminating_party is None and not ev.soft:
            state.terminating_party = self._party_of(chan)
            state.end_requested_by = chan.uniqueid
        return []

    def _on_hangup(self, ev: ChannelHungUp) -> list[CallEvent]:
        chan = self._channels.pop(ev.uniqueid, None)
        if chan is None:
            return []
        remember(self._gone, ev.uniqueid)
        chan.call.touched = self._tick
        state = chan.call
        state.last_ts = max(state.last_ts, ev.ts)
        if self._by_name.get(chan.channel) is chan:
            del self._by_name[chan.channel]
        out: list[CallEvent] = []
        if (chan.rang or chan.talked) and not chan.leg_ended:
            out.append(self._end_leg(chan, ev.ts, ev.cause))
        if chan.uniqueid == state.primary:
            state.hangup_cause = ev.cause
            state.hangup_cause_text = ev.cause_text or None
            out.extend(self._finish_conversation(state, ev.ts))
        del state.channels[chan.uniqueid]
        if not state.channels:
            out.extend(self._complete(state, ev.ts))
        return out

    def _on_variable(self, ev: VariableSet) -> list[CallEvent]:
        chan = self._chan(ev.uniqueid, ev.ts)
        if chan is None:
            return []
        state = chan.call
        name, value = ev.name, ev.value
        if name == "MIXMONITOR_FILENAME" or name == "MONITOR_FILE":
            if value:
                state.recording_file = os.path.basename(value)
        elif name == "VMSTATUS":
            if value == "SUCCESS" and not state.voicemail_left:
                state.voicemail_left = True
                return [self._emit(state, EventKind.VOICEMAIL, ev.ts)]
        elif name == "ANSWEREDTIME_MS":
            # A call found mid-way (after a reconnect) learns its answer time only here.
            if state.answer_ts is None and value.isdigit() and int(value) > 0:
                state.answer_ts = ev.ts - int(value) / 1000.0
        elif name == "CRM_CALL_ID":
            state.originate_id = value
            if state.direction is Direction.INTERNAL:
                state.direction = Direction.OUTBOUND
            if state.called_number is None:
                state.called_number = self._originated.get(value)
        elif name == "TRANSFERERNAME":
            # A consult channel of an attended transfer: part of the transferring agent's call.
            transferer = self._by_name.get(value)
            if transferer is not None and transferer.call is not state:
                return self._join(state, transferer.call, ev.ts)
        else:
            state.variables[name] = value
        return []

    def _on_app(self, ev: AppStarted) -> list[CallEvent]:
        chan = self._chan(ev.uniqueid, ev.ts)
        if chan is None:
            return []
        if ev.app == "VoiceMail":
            chan.call.in_voicemail = True
            mailbox = ev.app_data.split(",", 1)[0].split("&", 1)[0]
            box = mailbox.split("@", 1)[0]
            if chan.call.agent_extension is None and self._agent_pattern.match(box):
                chan.call.agent_extension = box
        elif ev.app == "Queue":
            chan.call.queue = ev.app_data.split(",", 1)[0] or chan.call.queue
        return []

    def _on_recording(self, ev: RecordingStarted) -> list[CallEvent]:
        self._chan(ev.uniqueid, ev.ts)
        return []

    def _on_voicemail_left(self, ev: VoicemailLeft) -> list[CallEvent]:
        chan = self._chan(ev.uniqueid, ev.ts)
        # MWI also fires when messages are read or on refresh: only a call that is in
        # VoiceMail() right now has left one.
        if chan is None or not chan.call.in_voicemail or ev.new_messages < 1:
            return []
        state = chan.call
        if state.voicemail_left:
            return []
        state.voicemail_left = True
        return [self._emit(state, EventKind.VOICEMAIL, ev.ts, data={"mailbox": ev.mailbox})]

    def _on_queue_join(self, ev: QueueJoined) -> list[CallEvent]:
        chan = self._chan(ev.uniqueid, ev.ts)
        if chan is not None:
            chan.call.queue = ev.queue
        return []

    def _on_agent_connect(self, ev: QueueAgentConnected) -> list[CallEvent]:
        chan = self._chan(ev.uniqueid, ev.ts)
        if chan is None:
            return []
        # The queue names the member that took the call: that is the agent, whichever
        # member rang first (ring-all strategies ring several).
        member = self._device_behind(self._channels.get(ev.dest_uniqueid))
        if member is not None and member.extension:
            chan.call.agent_extension = member.extension
        elif ev.dest_uniqueid not in self._channels:
            _, extension, _ = self._classify(ev.member_interface, "")
            if extension:
                chan.call.agent_extension = extension
        return []

    # Each handler takes only its own event type, which the key names: Any stands for it.
    _handlers: ClassVar[dict[type[ChannelEvent], Callable[[CallTracker, Any], list[CallEvent]]]] = {
        ChannelCreated: _on_created,
        ChannelStateChanged: _on_state,
        DialStarted: _on_dial_started,
        DialEnded: LegsAndTiming._on_dial_ended,
        BridgeEntered: _on_bridge,
        HangupRequested: _on_hangup_request,
        ChannelHungUp: _on_hangup,
        VariableSet: _on_variable,
        AppStarted: _on_app,
        RecordingStarted: _on_recording,
        VoicemailLeft: _on_voicemail_left,
        QueueJoined: _on_queue_join,
        QueueAgentConnected: _on_agent_connect,
        BlindTransferred: TransfersAndJoins._on_blind_transfer,
        AttendedTransferred: TransfersAndJoins._on_attended_transfer,
        ChannelSnapshot: Reconciliation._on_snapshot,
        SnapshotComplete: Reconciliation._on_snapshot_complete,
        PbxShutdown: Reconciliation._on_shutdown,
        PbxDisconnected: Reconciliation._on_disconnected,
    }

    # -- endings --------------------------------------------------------------------------

    def _emit(
        self,
        state: CallState,
        kind: EventKind,
        ts: float,
        *,
        extension: str | None = None,
        data: dict[str, object] | None = None,
        ended: bool = False,
    ) -> CallEvent:
        state.seq += 1
        return CallEvent(
            call_id=state.call_id,
            seq=state.seq,
            kind=kind,
            at=utc(ts),
            call=build_call(
                state,
                pbx_id=self.pbx_id,
                source=self.source,
                recording_url_template=self.rules.recording_url_template,
                recording_links=self._recording_links,
                ended=ended,
            ),
            extension=extension,
            data=data or {},
        )
