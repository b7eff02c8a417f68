"""How channels move between calls: blind and attended transfers, an attended
transfer folding the consult call into the customer's call, and a channel dialled
by another call's channel (a pickup, a guessed ARI Linkedid) joining that call."""

from __future__ import annotations

from ari_app.calls.state import CallState, TrackedChannel, utc
from ari_app.calls.tracker_part import TrackerPart
from ari_app.pbx.channel_events import AttendedTransferred, BlindTransferred
from crm.model import CallEvent, EventKind, Transfer


class TransfersAndJoins(TrackerPart):
    """Part of CallTracker (ari_app/calls/tracker.py); the state it shares is in tracker_part.py."""

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
                at=utc(ev.ts),
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
        transferer.transferred = True
        state = transferer.call
        if state.end_requested_by == transferer.uniqueid:
            # Its hangup request completed the transfer: the customer's conversation goes on.
            state.talk_end_ts = None
            state.terminating_party = None
            state.end_requested_by = None
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
        device = self._device_behind(target)
        if device is not None:
            device.answered = True
        to_extension = device.extension if device is not None else None
        if device is not None and device.extension and not device.talked:
            device.talked = True
            out.append(self._emit(state, EventKind.ANSWERED, ev.ts, extension=device.extension))
        handed_over_by = first or second
        state.transfers.append(
            Transfer(
                at=utc(ev.ts),
                kind="attended",
                from_extension=handed_over_by.extension if handed_over_by else None,
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
        out: list[CallEvent] = []
        for chan in consult.channels.values():
            if (chan.rang or chan.talked) and not chan.leg_ended:
                # The consult call's cards close here; the legs start afresh in the
                # customer's call (the transfer target gets its ANSWERED there).
                out.append(self._end_leg(chan, ts, None))
            chan.rang = chan.talked = chan.leg_ended = False
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
        out.append(
            self._emit(
                consult, EventKind.COMPLETED, ts, ended=True, data={"merged_into": into.call_id}
            )
        )
        return out

    def _join_dialled(
        self, caller_uniqueid: str | None, dest: TrackedChannel, ts: float
    ) -> list[CallEvent]:
        """A dial between channels of two calls makes them one: the dialled channel's call
        was only a guess (ARI gives no Linkedid) or a pickup's own short-lived call."""
        caller = self._channels.get(caller_uniqueid) if caller_uniqueid else None
        if caller is None or caller.call is dest.call:
            return []
        return self._join(dest.call, caller.call, ts)

    def _join(self, absorbed: CallState, into: CallState, ts: float) -> list[CallEvent]:
        if absorbed is into:
            return []
        if absorbed.seq > 0:
            return self._merge(absorbed, into, ts)  # the CRM already saw it: close it
        # Nothing was sent for it yet: it simply never was a call of its own.
        for uniqueid, chan in absorbed.channels.items():
            chan.call = into
            into.channels[uniqueid] = chan
        for linkedid in absorbed.linkedids:
            self._by_linkedid[linkedid] = into
            into.linkedids.add(linkedid)
        into.dial_started.update(absorbed.dial_started)
        absorbed.channels.clear()
        self._calls.pop(absorbed.call_id, None)
        return []
