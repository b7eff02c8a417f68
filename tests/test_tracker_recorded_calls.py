"""Every recorded Asterisk scenario comes out of the tracker exactly as the fixture README says.

The expectations are the README's "what a CRM should conclude" for each capture, asserted field
by field; durations are checked to 10 ms against the figures computed from the timestamps.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from ari_app.calls.rules import CallRules
from ari_app.calls.tracker import CallTracker
from ari_app.pbx.ami.events import PbxClock, frame_to_event
from ari_app.pbx.channel_events import ChannelSnapshot, PbxDisconnected, SnapshotComplete
from crm.model import CallEvent, Direction, Disposition, EventKind, Party
from tests.recordings import recorded_frames

RULES = CallRules(recording_url_template="https://pbx.example/rec/{file}")


def run(scenario: str, *, strip_timestamps: bool = False) -> tuple[CallTracker, list[CallEvent]]:
    tracker = CallTracker(RULES, pbx_id="lab")
    receive_clock = iter(float(1_000_000 + i) for i in range(100_000))
    clock = PbxClock(now=lambda: next(receive_clock))
    out: list[CallEvent] = []
    for frame in recorded_frames(scenario):
        if strip_timestamps:
            frame.pop("Timestamp", None)
        event = frame_to_event(frame, clock.stamp(frame))
        if event is not None:
            out.extend(tracker.handle(event))
    return tracker, out


def kinds(events: list[CallEvent]) -> list[str]:
    return [event.kind.value for event in events]


def final(events: list[CallEvent]):
    assert events[-1].kind is EventKind.COMPLETED
    assert events[-1].call.ended
    return events[-1].call


def test_caller_hangs_up_after_answer() -> None:
    _, events = run("inbound_answered_caller_hangs_up")
    assert kinds(events) == ["ringing", "answered", "leg_ended", "hangup", "completed"]
    assert [e.seq for e in events] == [1, 2, 3, 4, 5]
    assert events[0].extension == "7181"
    call = final(events)
    assert call.call_id == "1795417965.0"
    assert call.pbx_id == "lab"
    assert call.direction is Direction.INBOUND
    assert call.caller_number == "+79031234567"
    assert call.called_number == "4951112233"
    assert call.agent_extension == "7181"
    assert call.disposition is Disposition.ANSWERED
    assert call.terminating_party is Party.CALLER
    assert call.ring_seconds == pytest.approx(1.5, abs=0.01)
    assert call.talk_seconds == pytest.approx(6.0, abs=0.01)
    assert call.start_time == datetime.fromtimestamp(1795417965.420603, UTC)
    assert call.start_time.utcoffset().total_seconds() == 0
    assert call.answer_time is not None and call.end_time is not None
    assert call.hangup_cause == 16
    assert call.voicemail is False
    assert call.recording_url is None
    assert call.reconciled is False


def test_agent_hangs_up_after_answer() -> None:
    _, events = run("inbound_answered_agent_hangs_up")
    assert kinds(events) == ["ringing", "answered", "leg_ended", "hangup", "completed"]
    call = final(events)
    assert call.caller_number == "+79161112233"
    assert call.agent_extension == "7181"
    assert call.terminating_party is Party.AGENT
    assert call.ring_seconds == pytest.approx(1.5, abs=0.01)
    assert call.talk_seconds == pytest.approx(5.0, abs=0.01)


def test_unanswered_call_that_left_voicemail_is_voicemail_not_dropped() -> None:
    _, events = run("inbound_no_answer_voicemail")
    assert kinds(events) == ["ringing", "leg_ended", "voicemail", "hangup", "completed"]
    call = final(events)
    assert call.caller_number == "+79262223344"
    assert call.agent_extension == "7181"  # who rang
    assert call.disposition is Disposition.VOICEMAIL
    assert call.voicemail is True
    assert call.answer_time is None
    assert call.talk_seconds == 0
    assert call.ring_seconds == pytest.approx(12.0, abs=0.01)
    assert call.terminating_party is Party.CALLER  # despite Hangup cause 0


def test_caller_hanging_up_while_ringing_is_abandoned_and_dropped() -> None:
    _, events = run("inbound_abandoned_while_ringing")
    assert kinds(events) == ["ringing", "leg_ended", "hangup", "dropped", "completed"]
    call = final(events)
    assert call.caller_number == "+79853334455"
    assert call.disposition is Disposition.ABANDONED
    assert call.terminating_party is Party.CALLER  # despite Hangup cause 127
    assert call.ring_seconds == pytest.approx(4.0, abs=0.02)
    assert call.talk_seconds == 0
    assert call.agent_extension == "7181"


def test_busy_agent_is_a_dropped_busy_call_and_the_caller_hung_up() -> None:
    _, events = run("inbound_busy_agent")
    assert kinds(events) == ["ringing", "leg_ended", "hangup", "dropped", "completed"]
    call = final(events)
    assert call.caller_number == "+79265556677"
    assert call.called_number == "4951112235"
    assert call.disposition is Disposition.BUSY
    assert call.voicemail is False  # the greeting played, no message was left
    # The busy phone's own HangupRequest (cause 17) is not "the agent hung up".
    assert call.terminating_party is Party.CALLER
    assert call.agent_extension == "7181"
    assert call.ring_seconds == pytest.approx(0.3, abs=0.01)


def test_click_to_call_is_outbound_from_the_agent_to_the_client() -> None:
    _, events = run("click_to_call_originate")
    assert kinds(events) == ["ringing", "answered", "leg_ended", "hangup", "completed"]
    assert events[0].extension == "101"  # the agent's phone rings first
    call = final(events)
    assert call.direction is Direction.OUTBOUND
    assert call.caller_number == "101"
    assert call.called_number == "89161234567"
    assert call.agent_extension == "101"
    assert call.originate_id == "c2c-0001"
    assert call.disposition is Disposition.ANSWERED
    assert call.ring_seconds == pytest.approx(1.5, abs=0.01)  # the client's ringing
    assert call.talk_seconds == pytest.approx(6.0, abs=0.01)
    assert call.terminating_party is Party.CALLER  # the outside party (the client) hung up


def test_click_to_call_the_agent_did_not_answer() -> None:
    _, events = run("click_to_call_agent_no_answer")
    assert kinds(events) == ["ringing", "leg_ended", "hangup", "completed"]
    call = final(events)
    assert call.direction is Direction.OUTBOUND
    assert call.originate_id == "c2c-0002"
    assert call.agent_extension == "101"
    assert call.answer_time is None
    assert call.disposition is Disposition.NO_ANSWER
    assert call.ring_seconds == pytest.approx(8.0, abs=0.02)
    assert call.hangup_cause == 19


def test_outbound_call_from_the_agent_phone() -> None:
    _, events = run("outbound_agent_dials")
    assert kinds(events) == ["answered", "leg_ended", "hangup", "completed"]
    call = final(events)
    assert call.direction is Direction.OUTBOUND
    assert call.caller_number == "7070"
    assert call.called_number == "89161234567"
    assert call.agent_extension == "7070"
    assert call.terminating_party is Party.AGENT
    assert call.ring_seconds == pytest.approx(1.5, abs=0.01)
    assert call.talk_seconds == pytest.approx(4.0, abs=0.01)


def test_recorded_call_carries_the_recording_url() -> None:
    _, events = run("inbound_answered_recorded")
    call = final(events)
    assert call.recording_file == "1795418967.2.wav"
    assert call.recording_url == "https://pbx.example/rec/1795418967.2.wav"
    assert call.caller_number == "+79037654321"
    assert call.called_number == "4951112234"
    assert call.terminating_party is Party.CALLER
    assert call.talk_seconds == pytest.approx(5.0, abs=0.01)


def test_queue_call_is_credited_to_the_member_that_answered() -> None:
    _, events = run("inbound_queue_answered")
    assert kinds(events) == ["ringing", "answered", "hangup", "leg_ended", "completed"]
    call = final(events)
    assert call.queue == "support"
    assert call.agent_extension == "517"
    assert call.caller_number == "+79167778899"
    assert call.called_number == "4951110003"
    assert call.disposition is Disposition.ANSWERED
    assert call.terminating_party is Party.CALLER
    # Talk runs from the member's answer, not from the PBX answering the caller for the queue.
    assert call.talk_seconds == pytest.approx(6.5, abs=0.01)


def test_ivr_survey_call_is_served_by_the_pbx_and_keeps_the_ivr_variables() -> None:
    _, events = run("ivr_agi_survey")
    assert kinds(events) == ["hangup", "completed"]
    call = final(events)
    assert call.called_number == "4951110000"
    assert call.agent_extension is None
    assert call.terminating_party is Party.SYSTEM  # dialplan Hangup()
    assert call.disposition is Disposition.ANSWERED
    assert call.variables["CRM_FOUND"] == "1"
    assert call.variables["SURVEY_RESULT"] == "7"
    duration = (call.end_time - call.start_time).total_seconds()
    assert duration == pytest.approx(2.6, abs=0.05)


def test_caller_leaving_the_ivr_is_dropped() -> None:
    _, events = run("ivr_agi_caller_hangs_up")
    assert kinds(events) == ["hangup", "dropped", "completed"]
    call = final(events)
    assert call.caller_number == "+79094445566"
    assert call.terminating_party is Party.CALLER
    assert call.disposition is Disposition.ABANDONED


def test_connecting_mid_call_picks_the_call_up_from_the_channel_list() -> None:
    _, events = run("mid_call_connect_reconcile")
    assert kinds(events) == ["answered", "hangup", "leg_ended", "completed"]
    assert events[0].data == {"reconciled": True}
    call = final(events)
    assert call.call_id == "1795420539.0"
    assert call.caller_number == "+79035550101"
    assert call.called_number == "4951112233"
    assert call.agent_extension == "7181"
    assert call.disposition is Disposition.ANSWERED
    assert call.terminating_party is Party.CALLER
    assert call.talk_seconds == pytest.approx(12.0, abs=0.01)  # from ANSWEREDTIME_MS
    assert call.reconciled is True


def test_asterisk_restart_ends_the_call_as_system() -> None:
    _, events = run("asterisk_restart_mid_call")
    assert kinds(events) == ["ringing", "answered", "leg_ended", "hangup", "completed"]
    call = final(events)
    assert call.caller_number == "+79165550202"
    assert call.terminating_party is Party.SYSTEM
    assert call.talk_seconds == pytest.approx(4.9, abs=0.01)
    assert call.disposition is Disposition.ANSWERED


def test_asterisk_killed_leaves_the_call_open_until_reconciled() -> None:
    tracker, events = run("asterisk_killed_mid_call")
    assert kinds(events) == ["ringing", "answered"]
    assert tracker.open_call_ids() == ["1795420633.0"]
    # The socket dropped ~4.9 s into the talk (the capture's wall clock); after the reconnect
    # the channel list is empty: the call is over, and it lasted at least until the drop.
    assert tracker.handle(PbxDisconnected(ts=1795420634.9609 + 4.9)) == []
    closing = tracker.handle(SnapshotComplete(ts=1795420650.0))
    assert kinds(closing) == ["leg_ended", "hangup", "completed"]
    call = closing[-1].call
    assert call.reconciled is True
    assert call.disposition is Disposition.ANSWERED
    assert call.terminating_party is Party.SYSTEM
    assert call.talk_seconds == pytest.approx(4.9, abs=0.05)
    assert tracker.open_call_ids() == []


def test_stale_calls_are_swept_closed() -> None:
    tracker, _ = run("asterisk_killed_mid_call")
    assert tracker.sweep(now_ts=1795420640.0) == []
    closing = tracker.sweep(now_ts=1795420640.0 + RULES.stale_call_seconds)
    assert kinds(closing) == ["leg_ended", "hangup", "completed"]
    assert closing[-1].call.reconciled is True


@pytest.mark.parametrize(
    "scenario",
    [
        "inbound_answered_caller_hangs_up",
        "inbound_no_answer_voicemail",
        "inbound_queue_answered",
        "click_to_call_originate",
    ],
)
def test_without_timestamp_headers_the_receive_clock_gives_the_times(scenario: str) -> None:
    _, stamped = run(scenario)
    _, unstamped = run(scenario, strip_timestamps=True)
    assert kinds(unstamped) == kinds(stamped)
    call = final(unstamped)
    # The receive clock in `run` ticks one second a frame from 1,000,000: times come from it.
    assert call.start_time is not None
    assert 1_000_000 <= call.start_time.timestamp() < 1_100_000
    assert call.disposition == final(stamped).disposition
    assert call.terminating_party == final(stamped).terminating_party


def test_a_restarted_tracker_continues_an_open_call_without_resending() -> None:
    _, events = run("asterisk_killed_mid_call")
    open_call = events[-1].call
    second = CallTracker(RULES, pbx_id="lab")
    second.restore(open_call, last_seq=events[-1].seq, sent={e.kind for e in events})
    assert second.open_call_ids() == ["1795420633.0"]
    closing = second.handle(SnapshotComplete(ts=1795420650.0))
    assert [(e.seq, e.kind.value) for e in closing] == [(3, "hangup"), (4, "completed")]
    call = closing[-1].call
    assert call.caller_number == "+79267770303"
    assert call.agent_extension == "7181"
    assert call.disposition is Disposition.ANSWERED
    assert call.reconciled is True


def test_a_restored_call_found_in_the_channel_list_keeps_its_numbering() -> None:
    frames = list(recorded_frames("mid_call_connect_reconcile"))
    clock = PbxClock(now=lambda: 0.0)
    first = CallTracker(RULES, pbx_id="lab")
    before: list[CallEvent] = []
    for frame in frames:
        event = frame_to_event(frame, clock.stamp(frame))
        if event is not None:
            before.extend(first.handle(event))
        if frame.get("Event") == "CoreShowChannelsComplete":
            break
    assert kinds(before) == ["answered"]
    # pbxcrm is killed here and restarted: the same channel list arrives again, then the rest.
    second = CallTracker(RULES, pbx_id="lab")
    second.restore(before[-1].call, last_seq=1, sent={EventKind.ANSWERED})
    after: list[CallEvent] = []
    for frame in frames:
        event = frame_to_event(frame, clock.stamp(frame))
        if event is not None:
            after.extend(second.handle(event))
    # The agent's leg, found talking in the channel list, still gets its end: a CRM card
    # opened before the restart is closed.
    assert [(e.seq, e.kind.value, e.extension) for e in after] == [
        (2, "hangup", None),
        (3, "leg_ended", "7181"),
        (4, "completed", None),
    ]
    assert after[-1].call.talk_seconds == pytest.approx(12.0, abs=0.01)
    assert after[-1].call.terminating_party is Party.CALLER


def test_a_call_that_starts_while_the_channel_list_is_on_its_way_is_not_closed() -> None:
    tracker = CallTracker(RULES, pbx_id="lab")
    clock = PbxClock(now=lambda: 0.0)
    frames = list(recorded_frames("inbound_answered_caller_hangs_up"))
    tracker.begin_snapshot()  # CoreShowChannels sent; Asterisk found no channel yet
    out: list[CallEvent] = []
    for frame in frames:
        event = frame_to_event(frame, clock.stamp(frame))
        if event is not None:
            out.extend(tracker.handle(event))
        if frame.get("Event") == "DialBegin":
            # The (empty) list is handed over only now, after the call's first events.
            out.extend(tracker.handle(SnapshotComplete(ts=0.0)))
    assert kinds(out) == ["ringing", "answered", "leg_ended", "hangup", "completed"]
    assert final(out).reconciled is False


def test_a_channel_list_delivered_after_a_hangup_does_not_revive_the_channel() -> None:
    tracker, events = run("inbound_answered_caller_hangs_up")
    assert kinds(events)[-1] == "completed"
    tracker.begin_snapshot()
    stale = ChannelSnapshot(
        ts=1795417973.0,
        uniqueid="1795417965.0",
        linkedid="1795417965.0",
        channel="PJSIP/trunk-00000000",
        state="Up",
        caller_num="+79031234567",
        connected_num="7181",
        context="from-trunk",
        exten="4951112233",
        application="Dial",
        bridge_id="",
        age_seconds=7.0,
    )
    assert tracker.handle(stale) == []
    assert tracker.handle(SnapshotComplete(ts=1795417973.0)) == []
    assert tracker.open_call_ids() == []


def test_late_frames_of_a_completed_call_do_not_reopen_it() -> None:
    tracker, events = run("inbound_answered_caller_hangs_up")
    assert kinds(events)[-1] == "completed"
    clock = PbxClock(now=lambda: 0.0)
    again: list[CallEvent] = []
    for frame in recorded_frames("inbound_answered_caller_hangs_up"):
        event = frame_to_event(frame, clock.stamp(frame))
        if event is not None:
            again.extend(tracker.handle(event))
    assert again == []
    assert tracker.open_call_ids() == []
