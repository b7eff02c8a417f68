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
  call nobody answered); talk time runs from the answer to the first hangup request.
"""

from __future__ import annotations

import os.path
import re
from collections import OrderedDict
from collections.abc import Collection

from ari_app.call_rules import CallRules
from ari_app.call_state import (
    CallState,
    TrackedChannel,
    build_call,
    clean,
    endpoint_of,
    epoch,
    is_dropped,
    utc,
)
from ari_app.channel_events import (
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
from crm.model import (
    Call,
    CallEvent,
    Direction,
    EventKind,
    Party,
    Transfer,
)

_GONE_REMEMBERED = 4096


class CallTracker:
    def __init__(self, rules: CallRules, pbx_id: str = "default", source: str = "ami") -> None:
        self.rules = rules
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

    # -- public ---------------------------------------------------------------------------

    @property
    def active_calls(self) -> int:
        return len(self._calls)

    def open_call_ids(self) -> list[str]:
        return list(self._calls)

    def snapshot(self, call_id: str) -> Call | None:
        state = self._calls.get(call_id)
        return None if state is None else build_call(
            state,
            pbx_id=self.pbx_id,
            source=self.source,
            recording_url_template=self.rules.recording_url_template,
        )

    def restore(
        self,
        call: Call,
        last_seq: int,
        sent: Collection[EventKind] = (),
        alive_until: float | None = None,
    ) -> None:
        """Take back an open call from the store after pbxcrm restarted.

        Its channels come back with the next channel list (CoreShowChannels); if none does,
        SnapshotComplete closes it, ending at the last moment the previous run saw it alive
        (`alive_until`, its heartbeat) at the earliest. Numbering continues at `last_seq + 1`,
        so no event id is reused and nothing already delivered is sent again.
        """
        if call.call_id in self._calls:
            return
        ts = epoch(call.start_time) or 0.0
        state = CallState(
            call_id=call.call_id,
            primary=call.call_id,  # the first channel's Uniqueid is the Linkedid
            direction=call.direction,
            start_ts=ts,
            caller_number=call.caller_number,
            caller_name=call.caller_name,
            called_number=call.called_number,
        )
        state.linkedids.add(call.call_id)
        state.seq = last_seq
        state.last_ts = max(
            ts, epoch(call.answer_time) or 0.0, epoch(call.end_time) or 0.0, alive_until or 0.0
        )
        state.agent_extension = call.agent_extension
        state.rang = list(call.rang_extensions)
        state.answer_ts = epoch(call.answer_time)
        state.answer_ring_seconds = call.ring_seconds
        state.answered_sent = EventKind.ANSWERED in sent or call.answer_time is not None
        state.end_ts = epoch(call.end_time)
        state.hangup_sent = EventKind.HANGUP in sent or call.end_time is not None
        state.terminating_party = call.terminating_party
        state.recording_file = call.recording_file
        state.queue = call.queue
        state.transfers = list(call.transfers)
        state.variables = dict(call.variables)
        state.originate_id = call.originate_id
        state.voicemail_left = call.voicemail
        state.reconciled = call.reconciled
        state.hangup_cause = call.hangup_cause
        state.hangup_cause_text = call.hangup_cause_text
        self._calls[state.call_id] = state
        self._by_linkedid[state.call_id] = state

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

    def begin_snapshot(self) -> None:
        """Calls that change from now on are alive, even if the next channel list (asked for
        after a reconnect, built a moment later, delivered later still) does not show them."""
        self._snapshot_mark = self._tick
        self._snapshot_seen = set()

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
        is_trunk = endpoint in self._trunk_endpoints or context in self._trunk_contexts
        extension = None
        if not is_trunk:
            bare = endpoint.split("@", 1)[0] if channel.startswith("Local/") else endpoint
            if self._agent_pattern.match(bare):
                extension = bare
        return endpoint, extension, is_trunk

    # -- event handlers -------------------------------------------------------------------

    def _on_created(self, ev: ChannelCreated) -> list[CallEvent]:
        if ev.uniqueid in self._channels or ev.uniqueid in self._gone:
            return []  # a repeated frame
        if ev.linkedid in self._closed_linkedids:
            # A late frame of a call already completed must not reopen it as a new call with
            # the same id (its numbering would restart at 1).
            return []
        self._add_channel(ev.ts, ev.uniqueid, ev.linkedid, ev.channel, ev.context, ev.exten,
                          ev.caller_num, ev.caller_name)
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
        state.channels[uniqueid] = chan
        self._channels[uniqueid] = chan
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
            return []
        if ev.uniqueid is not None and state.direction is Direction.INTERNAL:
            state.called_number = state.called_number or dest.extension
        if dest.extension not in state.rang:
            state.rang.append(dest.extension)
        return [self._emit(state, EventKind.RINGING, ev.ts, extension=dest.extension)]

    def _on_dial_ended(self, ev: DialEnded) -> list[CallEvent]:
        dest = self._chan(ev.dest_uniqueid, ev.ts)
        if dest is None:
            return []
        state = dest.call
        started = state.dial_started.pop(dest.uniqueid, None)
        status = ev.dial_status.upper()
        state.last_dial_status = status
        state.last_dial_end_ts = ev.ts
        if ev.uniqueid is None:
            # An Originate dialled the agent first: the agent picking up is not the call's answer.
            if status == "ANSWER" and dest.extension:
                state.agent_extension = dest.extension
            return []
        if status != "ANSWER":
            return []
        dest.answered = True
        if state.answer_ts is not None:
            if dest.extension:  # a later agent (blind transfer, second dial) took the call
                state.agent_extension = dest.extension
            return []
        state.answer_ts = ev.ts
        state.answer_ring_seconds = ev.ts - started if started is not None else 0.0
        if dest.extension:
            state.agent_extension = dest.extension
        else:
            caller = self._channels.get(ev.uniqueid)
            if caller is not None and caller.extension:
                state.agent_extension = caller.extension
        state.answered_sent = True
        return [self._emit(state, EventKind.ANSWERED, ev.ts, extension=state.agent_extension)]

    def _on_bridge(self, ev: BridgeEntered) -> list[CallEvent]:
        self._chan(ev.uniqueid, ev.ts)
        return []

    def _on_hangup_request(self, ev: HangupRequested) -> list[CallEvent]:
        chan = self._chan(ev.uniqueid, ev.ts)
        if chan is None:
            return []
        state = chan.call
        counts = chan.uniqueid == state.primary or chan.answered
        if not counts:
            return []
        if state.answer_ts is not None and state.talk_end_ts is None:
            state.talk_end_ts = ev.ts
        if state.terminating_party is None and not ev.soft:
            state.terminating_party = self._party_of(chan)
        return []

    def _party_of(self, chan: TrackedChannel) -> Party:
        if chan.is_trunk:
            return Party.CALLER
        state = chan.call
        if state.direction is Direction.INTERNAL and chan.uniqueid == state.primary:
            return Party.CALLER
        return Party.AGENT

    def _on_hangup(self, ev: ChannelHungUp) -> list[CallEvent]:
        chan = self._channels.pop(ev.uniqueid, None)
        if chan is None:
            return []
        _remember(self._gone, ev.uniqueid)
        chan.alive = False
        chan.call.touched = self._tick
        state = chan.call
        state.last_ts = max(state.last_ts, ev.ts)
        out: list[CallEvent] = []
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
        member = self._channels.get(ev.dest_uniqueid)
        if member is not None and member.extension:
            chan.call.agent_extension = member.extension
        else:
            _, extension, _ = self._classify(ev.member_interface, "")
            if extension:
                chan.call.agent_extension = extension
        return []

    def _on_blind_transfer(self, ev: BlindTransferred) -> list[CallEvent]:
        transferer = self._chan(ev.transferer_uniqueid, ev.ts)
        transferee = self._chan(ev.transferee_uniqueid, ev.ts)
        chan = transferee or transferer
        if chan is None:
            return []
        state = chan.call
        if transferer is not None:
            self._leaves_by_transfer(transferer, transferee)
        state.transfers.append(
            Transfer(
                at=utc(ev.ts),  # type: ignore[arg-type]
                kind="blind",
                from_extension=transferer.extension if transferer else None,
                to_extension=ev.extension or None,
            )
        )
        return []

    def _leaves_by_transfer(self, transferer: TrackedChannel, stays: TrackedChannel | None) -> None:
        """The transferring agent's leg goes away without the call ending: its hangup is not
        a party hanging up, and if it was the primary channel the remaining party takes over."""
        transferer.answered = False
        state = transferer.call
        if state.primary == transferer.uniqueid and stays is not None:
            state.primary = stays.uniqueid

    def _on_attended_transfer(self, ev: AttendedTransferred) -> list[CallEvent]:
        first = self._chan(ev.orig_transferer_uniqueid, ev.ts)
        second = self._chan(ev.second_transferer_uniqueid, ev.ts)
        target = self._chan(ev.target_uniqueid, ev.ts)
        transferee = self._chan(ev.transferee_uniqueid, ev.ts)
        anchor = transferee or first or second
        if anchor is None:
            return []
        state = anchor.call  # the customer's call absorbs the consult call
        out: list[CallEvent] = []
        for chan in (first, second, target):
            if chan is not None and chan.call is not state:
                out.extend(self._merge(chan.call, state, ev.ts))
        for transferer in (first, second):
            if transferer is not None:
                self._leaves_by_transfer(transferer, transferee or target)
        if target is not None:
            target.answered = True
        to_extension = target.extension if target is not None else None
        state.transfers.append(
            Transfer(
                at=utc(ev.ts),  # type: ignore[arg-type]
                kind="attended",
                from_extension=(first or second).extension if (first or second) else None,
                to_extension=to_extension,
            )
        )
        if to_extension:
            state.agent_extension = to_extension
        return out

    def _merge(self, consult: CallState, into: CallState, ts: float) -> list[CallEvent]:
        """Fold a consult call into the call it was transferred into.

        The consult call's own record ends here (COMPLETED, `merged_into` in its data) so a CRM
        that saw it ring is not left with a call that never closes; its channels and Linkedid
        live on in the customer's call.
        """
        for uniqueid, chan in consult.channels.items():
            chan.call = into
            into.channels[uniqueid] = chan
        for linkedid in consult.linkedids:
            self._by_linkedid[linkedid] = into
            into.linkedids.add(linkedid)
        consult.channels.clear()
        consult.merged_into = into.call_id
        consult.hangup_sent = True
        consult.end_ts = ts
        self._calls.pop(consult.call_id, None)
        return [self._emit(consult, EventKind.COMPLETED, ts, ended=True,
                           data={"merged_into": into.call_id})]

    def _on_snapshot(self, ev: ChannelSnapshot) -> list[CallEvent]:
        self._snapshot_seen.add(ev.uniqueid)
        if ev.uniqueid in self._channels or ev.uniqueid in self._gone:
            return []
        created = ev.ts - ev.age_seconds
        # A call already known (restored after a restart) is followed on, not reconciled.
        known = ev.linkedid in self._by_linkedid
        chan = self._add_channel(created, ev.uniqueid, ev.linkedid, ev.channel, ev.context,
                                 ev.exten, ev.caller_num, "")
        state = chan.call
        if not known:
            state.reconciled = True
        state.last_ts = max(state.last_ts, ev.ts)
        if ev.state != "Up" or chan.uniqueid == state.primary:
            return []
        # A second leg found up: an agent (or the far end) answered before we were watching.
        if chan.extension:
            chan.answered = True
            if state.agent_extension is None or state.direction is Direction.INBOUND:
                state.agent_extension = chan.extension
        elif chan.is_trunk:
            chan.answered = True
            if state.direction is Direction.INTERNAL:
                state.direction = Direction.OUTBOUND
                state.called_number = clean(ev.caller_num) or state.called_number
        else:
            return []
        if state.answered_sent or state.hangup_sent:
            return []
        state.answered_sent = True
        return [self._emit(state, EventKind.ANSWERED, ev.ts, extension=state.agent_extension,
                           data={"reconciled": True})]

    def _on_snapshot_complete(self, ev: SnapshotComplete) -> list[CallEvent]:
        seen, self._snapshot_seen = self._snapshot_seen, set()
        mark = self._tick if self._snapshot_mark is None else self._snapshot_mark
        self._snapshot_mark = None
        out: list[CallEvent] = []
        for state in list(self._calls.values()):
            if state.touched > mark:
                continue  # it changed after the list was asked for: alive then
            if not any(uniqueid in seen for uniqueid in state.channels):
                out.extend(self._close_reconciled(state, state.last_ts))
            else:
                for uniqueid in [u for u in state.channels if u not in seen]:
                    self._channels.pop(uniqueid, None)
                    del state.channels[uniqueid]
        return out

    def _on_shutdown(self, ev: PbxShutdown) -> list[CallEvent]:
        return []

    def _on_disconnected(self, ev: PbxDisconnected) -> list[CallEvent]:
        # No Hangup had arrived by the drop, so every open call lasted at least until then.
        for state in self._calls.values():
            if state.last_ts < ev.ts:
                state.last_ts = ev.ts
        # What the next connection says about a call proves it alive, even if the channel
        # list asked for after the reconnect is delivered later than those events.
        self.begin_snapshot()
        return []

    _handlers = {
        ChannelCreated: _on_created,
        ChannelStateChanged: _on_state,
        DialStarted: _on_dial_started,
        DialEnded: _on_dial_ended,
        BridgeEntered: _on_bridge,
        HangupRequested: _on_hangup_request,
        ChannelHungUp: _on_hangup,
        VariableSet: _on_variable,
        AppStarted: _on_app,
        RecordingStarted: _on_recording,
        VoicemailLeft: _on_voicemail_left,
        QueueJoined: _on_queue_join,
        QueueAgentConnected: _on_agent_connect,
        BlindTransferred: _on_blind_transfer,
        AttendedTransferred: _on_attended_transfer,
        ChannelSnapshot: _on_snapshot,
        SnapshotComplete: _on_snapshot_complete,
        PbxShutdown: _on_shutdown,
        PbxDisconnected: _on_disconnected,
    }

    # -- endings --------------------------------------------------------------------------

    def _finish_conversation(self, state: CallState, ts: float) -> list[CallEvent]:
        if state.hangup_sent:
            return []
        state.hangup_sent = True
        state.end_ts = ts
        if state.terminating_party is None:
            state.terminating_party = Party.SYSTEM
        out = [self._emit(state, EventKind.HANGUP, ts)]
        if is_dropped(state):
            out.append(self._emit(state, EventKind.DROPPED, ts))
        return out

    def _complete(self, state: CallState, ts: float) -> list[CallEvent]:
        out = self._finish_conversation(state, ts)
        self._calls.pop(state.call_id, None)
        for linkedid in state.linkedids:
            if self._by_linkedid.get(linkedid) is state:
                del self._by_linkedid[linkedid]
            _remember(self._closed_linkedids, linkedid)
        out.append(self._emit(state, EventKind.COMPLETED, ts, ended=True))
        return out

    def _close_reconciled(self, state: CallState, ts: float) -> list[CallEvent]:
        """The PBX no longer has this call (restart, kill, lost Hangup): close it ourselves,
        at `ts`, the last moment it was known alive: the true end is later."""
        state.reconciled = True
        state.end_estimated = True
        for uniqueid in state.channels:
            self._channels.pop(uniqueid, None)
            _remember(self._gone, uniqueid)
        state.channels.clear()
        if state.answer_ts is not None and state.talk_end_ts is None:
            state.talk_end_ts = ts
        return self._complete(state, ts)

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
            at=utc(ts),  # type: ignore[arg-type]
            call=build_call(
                state,
                pbx_id=self.pbx_id,
                source=self.source,
                recording_url_template=self.rules.recording_url_template,
                ended=ended,
            ),
            extension=extension,
            data=data or {},
        )


def _remember(recent: OrderedDict[str, None], key: str) -> None:
    recent[key] = None
    if len(recent) > _GONE_REMEMBERED:
        recent.popitem(last=False)
