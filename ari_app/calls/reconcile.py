"""Calls across reconnects and restarts: snapshots of open calls and their restore,
the channel list (CoreShowChannels) that follows calls still up and closes those
that ended meanwhile as reconciled, and a PBX that shut down or was lost."""

from __future__ import annotations

from collections.abc import Collection

from ari_app.calls.recent import remember
from ari_app.calls.state import CallState, build_call, clean, epoch
from ari_app.calls.tracker_part import TrackerPart
from ari_app.pbx.channel_events import (
    ChannelSnapshot,
    PbxDisconnected,
    PbxShutdown,
    SnapshotComplete,
)
from crm.model import Call, CallEvent, Direction, EventKind


class Reconciliation(TrackerPart):
    """Part of CallTracker (ari_app/calls/tracker.py); the state it shares is in tracker_part.py."""

    def snapshot(self, call_id: str) -> Call | None:
        state = self._calls.get(call_id)
        return (
            None
            if state is None
            else build_call(
                state,
                pbx_id=self.pbx_id,
                source=self.source,
                recording_url_template=self.rules.recording_url_template,
                recording_links=self._recording_links,
            )
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

    def begin_snapshot(self) -> None:
        """Calls that change from now on are alive, even if the next channel list (asked for
        after a reconnect, built a moment later, delivered later still) does not show them."""
        self._snapshot_mark = self._tick
        self._snapshot_seen = set()

    def _on_snapshot(self, ev: ChannelSnapshot) -> list[CallEvent]:
        self._snapshot_seen.add(ev.uniqueid)
        if ev.uniqueid in self._channels or ev.uniqueid in self._gone:
            return []
        created = ev.ts - ev.age_seconds
        # A call already known (restored after a restart) is followed on, not reconciled.
        known = ev.linkedid in self._by_linkedid
        chan = self._add_channel(
            created, ev.uniqueid, ev.linkedid, ev.channel, ev.context, ev.exten, ev.caller_num, ""
        )
        state = chan.call
        if not known:
            state.reconciled = True
        state.last_ts = max(state.last_ts, ev.ts)
        if ev.state != "Up" or chan.uniqueid == state.primary:
            return []
        # A second leg found up: an agent (or the far end) answered before we were watching.
        if chan.extension:
            chan.answered = True
            chan.talked = True  # talking now: its leg gets a LEG_ENDED when it goes
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
        return [
            self._emit(
                state,
                EventKind.ANSWERED,
                ev.ts,
                extension=state.agent_extension,
                data={"reconciled": True},
            )
        ]

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
                    chan = state.channels.pop(uniqueid)
                    self._channels.pop(uniqueid, None)
                    if self._by_name.get(chan.channel) is chan:
                        del self._by_name[chan.channel]
                    if (chan.rang or chan.talked) and not chan.leg_ended:
                        out.append(self._end_leg(chan, state.last_ts, None))
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

    def _close_reconciled(self, state: CallState, ts: float) -> list[CallEvent]:
        """The PBX no longer has this call (restart, kill, lost Hangup): close it ourselves,
        at `ts`, the last moment it was known alive: the true end is later."""
        state.reconciled = True
        state.end_estimated = True
        out = self._end_open_legs(state, ts)
        for uniqueid, chan in state.channels.items():
            self._channels.pop(uniqueid, None)
            if self._by_name.get(chan.channel) is chan:
                del self._by_name[chan.channel]
            remember(self._gone, uniqueid)
        state.channels.clear()
        if state.answer_ts is not None and state.talk_end_ts is None:
            state.talk_end_ts = ts
        out.extend(self._complete(state, ts))
        return out
