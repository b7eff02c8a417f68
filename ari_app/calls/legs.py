"""Agent legs and the call's times: ring time from the dial that connected, each
leg's one LEG_ENDED with its reason, the end of the customer's conversation and
the call's completion.

Every agent leg that rang or talked gets exactly one LEG_ENDED step, so a CRM that opened a card
for it on RINGING (Creatio, FixDigital, the screen pop) can always close it.
"""

from __future__ import annotations

from ari_app.calls.recent import remember
from ari_app.calls.state import CallState, TrackedChannel, is_dropped
from ari_app.calls.tracker_part import TrackerPart
from ari_app.pbx.channel_events import DialEnded
from crm.model import CallEvent, Direction, EventKind, Party

# Q.850 cause 26, "Non-selected user clearing": Asterisk's "Answered elsewhere".
ANSWERED_ELSEWHERE_CAUSE = 26

_BY_DIAL_STATUS = {
    "BUSY": "busy",
    "NOANSWER": "no-answer",
    "CANCEL": "abandoned",
    "CHANUNAVAIL": "failed",
    "CONGESTION": "failed",
    "INVALIDARGS": "failed",
    "DONTCALL": "failed",
}


def leg_end_reason(
    *,
    talked: bool,
    transferred: bool,
    answered_elsewhere: bool,
    own_dial_status: str | None,
    call_dial_status: str | None,
    caller_gave_up: bool,
) -> str:
    if talked:
        return "transferred" if transferred else "completed"
    if answered_elsewhere:
        return "answered-elsewhere"
    status = own_dial_status
    if status is None or status == "ANSWER":
        # It rang and was picked up (a click-to-call's agent leg) or no dial result names it:
        # the call's own outcome is the leg's.
        status = call_dial_status if call_dial_status != "ANSWER" else None
    if status in _BY_DIAL_STATUS:
        return _BY_DIAL_STATUS[status]
    return "abandoned" if caller_gave_up else "no-answer"


class LegsAndTiming(TrackerPart):
    """Part of CallTracker (ari_app/calls/tracker.py); the state it shares is in tracker_part.py."""

    def _on_dial_ended(self, ev: DialEnded) -> list[CallEvent]:
        dest = self._chan(ev.dest_uniqueid, ev.ts)
        if dest is None:
            return []
        caller = self._channels.get(ev.uniqueid) if ev.uniqueid else None
        # Answered by a phone this call never dialled: a pickup (its own call joins this one).
        picked_up = (
            caller is not None
            and caller.call is not dest.call
            and not dest.rang
            and dest.uniqueid not in caller.call.dial_started
        )
        out = self._join_dialled(ev.uniqueid, dest, ev.ts)
        state = dest.call
        started = state.dial_started.pop(dest.uniqueid, None)
        status = ev.dial_status.upper()
        if dest.dial_status is None or status == "ANSWER":
            dest.dial_status = status
        state.last_dial_status = status
        state.last_dial_end_ts = ev.ts
        if ev.uniqueid is None:
            # An Originate dialled the agent first: the agent picking up is not the call's answer.
            if status == "ANSWER" and dest.extension:
                state.agent_extension = dest.extension
            return out
        if status != "ANSWER":
            return out
        dest.answered = True
        if caller is not None:
            caller.reaches = dest.uniqueid
        first_answer = state.answer_ts is None
        if first_answer:
            state.answer_ts = ev.ts
            if started is None:
                started = state.first_ring_ts  # a pickup: the call rang since its first ring
            state.answer_ring_seconds = ev.ts - started if started is not None else 0.0
        talker = dest if dest.extension else None
        if talker is None and not dest.is_local and caller is not None and caller.extension:
            talker = caller  # outbound: the far end answered the agent who dialled
        if talker is None:
            # A Local half answered: the phone behind it answers with its own DialEnd.
            return out
        if (
            first_answer
            or state.agent_extension is None
            or caller is None
            or (caller.uniqueid == state.primary)
        ):
            # The customer's own channel dialled it (first answer, blind transfer, second
            # dial): this agent has the customer now. A consult dial waits for the transfer.
            state.agent_extension = talker.extension
        state.answered_sent = True
        if talker.talked:
            return out
        talker.talked = True
        out.append(
            self._emit(
                state,
                EventKind.ANSWERED,
                ev.ts,
                extension=talker.extension,
                data={"picked_up": True} if picked_up else None,
            )
        )
        return out

    def _party_of(self, chan: TrackedChannel) -> Party:
        if chan.is_trunk:
            return Party.CALLER
        state = chan.call
        if state.direction is Direction.INTERNAL and chan.uniqueid == state.primary:
            return Party.CALLER
        return Party.AGENT

    def _end_leg(self, chan: TrackedChannel, ts: float, cause: int | None) -> CallEvent:
        chan.leg_ended = True
        state = chan.call
        reason = leg_end_reason(
            talked=chan.talked,
            transferred=chan.transferred,
            answered_elsewhere=cause == ANSWERED_ELSEWHERE_CAUSE
            or any(other.talked for other in state.channels.values() if other is not chan),
            own_dial_status=chan.dial_status,
            call_dial_status=state.last_dial_status,
            caller_gave_up=state.terminating_party is Party.CALLER,
        )
        return self._emit(
            state,
            EventKind.LEG_ENDED,
            ts,
            extension=chan.extension,
            data={"reason": reason, "answered": chan.talked},
        )

    def _end_open_legs(self, state: CallState, ts: float) -> list[CallEvent]:
        """Legs whose channel will send no Hangup (the PBX lost them, or restarted)."""
        return [
            self._end_leg(chan, ts, None)
            for chan in state.channels.values()
            if (chan.rang or chan.talked) and not chan.leg_ended
        ]

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
            remember(self._closed_linkedids, linkedid)
        out.append(self._emit(state, EventKind.COMPLETED, ts, ended=True))
        return out
