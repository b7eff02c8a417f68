"""Scenarios the lab did NOT record: an answered internal call, a failed transfer, and an
attended transfer whose consult call has a Linkedid of its own (a phone's own transfer key
sends a second SIP call; the recorded `Atxfer` keeps one Linkedid for every channel). Ring
groups, queues, pickups, blind and attended transfers are recorded: see
tests/test_tracker_multiparty_calls.py.

These frames are HAND-BUILT from Asterisk's AMI event documentation (Asterisk 22: Newchannel,
DialBegin/DialEnd, HangupRequest, Hangup, QueueCallerJoin, QueueCallerAbandon, BlindTransfer and
AttendedTransfer with their Transferer*/Transferee*/OrigTransferer*/SecondTransferer*/
TransferTarget* headers), shaped like the recorded frames of the same channels. They are not
captures; where the real order of events could differ, the assertions stick to what every
order must give.
"""

from __future__ import annotations

import pytest

from ari_app.calls.rules import CallRules
from ari_app.calls.tracker import CallTracker
from ari_app.pbx.ami.events import PbxClock, frame_to_event
from crm.model import CallEvent, Direction, Party


class Pbx:
    """Builds frames for a few channels and runs them through one tracker."""

    def __init__(self) -> None:
        self.tracker = CallTracker(CallRules(), pbx_id="lab")
        self.clock = PbxClock(now=lambda: 0.0)
        self.ts = 1795500000.0
        self.events: list[CallEvent] = []
        self.channels: dict[str, dict[str, str]] = {}

    def send(self, event: str, dt: float = 0.1, **headers: str) -> None:
        self.ts += dt
        frame = {"Event": event, "Timestamp": f"{self.ts:.6f}", **headers}
        mapped = frame_to_event(frame, self.clock.stamp(frame))
        if mapped is not None:
            self.events.extend(self.tracker.handle(mapped))

    def new_channel(
        self,
        name: str,
        uniqueid: str,
        linkedid: str,
        context: str,
        exten: str,
        caller: str,
        state: str = "Ring",
    ) -> None:
        self.channels[name] = {"Channel": name, "Uniqueid": uniqueid, "Linkedid": linkedid}
        self.send(
            "Newchannel",
            Channel=name,
            Uniqueid=uniqueid,
            Linkedid=linkedid,
            Context=context,
            Exten=exten,
            CallerIDNum=caller,
            CallerIDName=caller,
            ChannelStateDesc=state,
        )

    def ch(self, name: str) -> dict[str, str]:
        return self.channels[name]

    def dial_begin(self, caller: str, dest: str, dial_string: str, dt: float = 0.1) -> None:
        self.send(
            "DialBegin",
            dt,
            **self.ch(caller),
            DestChannel=dest,
            DestUniqueid=self.ch(dest)["Uniqueid"],
            DialString=dial_string,
        )

    def dial_end(self, caller: str, dest: str, status: str, dt: float = 0.1) -> None:
        self.send(
            "DialEnd",
            dt,
            **self.ch(caller),
            DestChannel=dest,
            DestUniqueid=self.ch(dest)["Uniqueid"],
            DialStatus=status,
        )

    def hangup_request(self, name: str, dt: float = 0.1, soft: bool = False) -> None:
        self.send("SoftHangupRequest" if soft else "HangupRequest", dt, **self.ch(name), Cause="16")

    def hangup(self, name: str, dt: float = 0.01, cause: str = "16") -> None:
        self.send("Hangup", dt, **self.ch(name), Cause=cause, **{"Cause-txt": "Normal Clearing"})

    def kinds(self) -> list[tuple[str, str, str | None]]:
        return [(e.call_id, e.kind.value, e.extension) for e in self.events]


def inbound_answered_by_7181(pbx: Pbx) -> None:
    pbx.new_channel(
        "PJSIP/trunk-00000001", "100.1", "100.1", "from-trunk", "4951112233", "+79031112233"
    )
    pbx.new_channel(
        "PJSIP/7181-00000002", "100.2", "100.1", "from-internal", "s", "7181", state="Down"
    )
    pbx.dial_begin("PJSIP/trunk-00000001", "PJSIP/7181-00000002", "7181")
    pbx.dial_end("PJSIP/trunk-00000001", "PJSIP/7181-00000002", "ANSWER", dt=2.0)


def test_internal_call_between_two_extensions() -> None:
    pbx = Pbx()
    pbx.new_channel("PJSIP/7070-00000001", "300.1", "300.1", "from-internal", "7181", "7070")
    pbx.new_channel(
        "PJSIP/7181-00000002", "300.2", "300.1", "from-internal", "s", "7181", state="Down"
    )
    pbx.dial_begin("PJSIP/7070-00000001", "PJSIP/7181-00000002", "7181")
    pbx.dial_end("PJSIP/7070-00000001", "PJSIP/7181-00000002", "ANSWER", dt=1.0)
    pbx.hangup_request("PJSIP/7181-00000002", dt=5.0)
    pbx.hangup("PJSIP/7181-00000002")
    pbx.hangup("PJSIP/7070-00000001")
    call = pbx.events[-1].call
    assert call.direction is Direction.INTERNAL
    assert call.caller_number == "7070"
    assert call.called_number == "7181"
    assert call.agent_extension == "7181"
    assert call.terminating_party is Party.AGENT
    assert call.talk_seconds == pytest.approx(5.0)
    assert "dropped" not in [k for _, k, _ in pbx.kinds()]


def test_attended_transfer_folds_the_consult_call_into_the_customer_call() -> None:
    pbx = Pbx()
    inbound_answered_by_7181(pbx)
    # 7181 puts the caller on hold and calls 7070 from a second channel (its own Linkedid).
    pbx.new_channel("PJSIP/7181-00000004", "101.4", "101.4", "from-internal", "7070", "7181")
    pbx.new_channel(
        "PJSIP/7070-00000005", "101.5", "101.4", "from-internal", "s", "7070", state="Down"
    )
    pbx.dial_begin("PJSIP/7181-00000004", "PJSIP/7070-00000005", "7070")
    pbx.dial_end("PJSIP/7181-00000004", "PJSIP/7070-00000005", "ANSWER", dt=2.0)
    pbx.send(
        "AttendedTransfer",
        10.0,
        Result="Success",
        OrigTransfererChannel="PJSIP/7181-00000002",
        OrigTransfererUniqueid="100.2",
        SecondTransfererChannel="PJSIP/7181-00000004",
        SecondTransfererUniqueid="101.4",
        TransfereeChannel="PJSIP/trunk-00000001",
        TransfereeUniqueid="100.1",
        TransferTargetChannel="PJSIP/7070-00000005",
        TransferTargetUniqueid="101.5",
        DestType="Bridge",
    )
    for leg in ("PJSIP/7181-00000002", "PJSIP/7181-00000004"):
        pbx.hangup_request(leg, dt=0.01)
        pbx.hangup(leg)
    customer = [(e.kind.value, e.extension) for e in pbx.events if e.call_id == "100.1"]
    # No hangup at the transfer: the target answers on the customer's call, 7181 leaves it.
    assert customer == [
        ("ringing", "7181"),
        ("answered", "7181"),
        ("answered", "7070"),
        ("leg_ended", "7181"),
    ]
    consult = [e for e in pbx.events if e.call_id == "101.4"]
    assert [(e.kind.value, e.extension) for e in consult] == [
        ("ringing", "7070"),
        ("answered", "7070"),
        ("leg_ended", "7070"),
        ("completed", None),
    ]
    assert consult[-1].data == {"merged_into": "100.1"}
    pbx.hangup_request("PJSIP/7070-00000005", dt=30.0)
    pbx.hangup("PJSIP/7070-00000005")
    pbx.hangup("PJSIP/trunk-00000001")
    customer = [e for e in pbx.events if e.call_id == "100.1"]
    assert [e.kind.value for e in customer] == [
        "ringing",
        "answered",
        "answered",
        "leg_ended",
        "leg_ended",
        "hangup",
        "completed",
    ]
    assert [e.data["reason"] for e in customer if e.kind.value == "leg_ended"] == [
        "transferred",
        "completed",
    ]
    call = customer[-1].call
    assert call.agent_extension == "7070"
    assert [(t.kind, t.from_extension, t.to_extension) for t in call.transfers] == [
        ("attended", "7181", "7070")
    ]
    assert call.terminating_party is Party.AGENT  # 7070 hung up, not the transferring 7181
    assert pbx.tracker.open_call_ids() == []


def test_a_failed_transfer_changes_nothing() -> None:
    pbx = Pbx()
    inbound_answered_by_7181(pbx)
    pbx.send(
        "BlindTransfer",
        5.0,
        Result="Fail",
        TransfererUniqueid="100.2",
        TransfereeUniqueid="100.1",
        Extension="9999",
    )
    pbx.hangup_request("PJSIP/7181-00000002", dt=5.0)
    pbx.hangup("PJSIP/7181-00000002")
    pbx.hangup("PJSIP/trunk-00000001")
    call = pbx.events[-1].call
    assert call.transfers == []
    assert call.terminating_party is Party.AGENT
