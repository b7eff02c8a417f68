"""ARI recordings and AMI recordings of the same calls give the same calls and CRM events.

Each scenario was captured twice on the same lab PBX (fixtures/asterisk/README.md): once as AMI
bytes, once as ARI websocket messages. Both go through their mapping and a fresh CallTracker; the
resulting CallEvents must agree in every field. Times are compared to 5 ms, since ARI stamps
events to the millisecond and AMI to the microsecond (the same event differs by ~1.6 ms).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest

from ari_app.calls.rules import CallRules
from ari_app.calls.tracker import CallTracker
from ari_app.pbx.ami.events import PbxClock, frame_to_event
from ari_app.pbx.ari.events import AriEventMapper, channel_snapshot
from ari_app.pbx.ari.models import BadAriMessage, parse_channels, parse_event
from ari_app.pbx.channel_events import (
    ChannelCreated,
    DialEnded,
    DialStarted,
    QueueAgentConnected,
    QueueJoined,
    RecordingStarted,
    VariableSet,
)
from crm.model import CallEvent
from tests.fakes.ari_server import recorded_ari_messages, recorded_rest
from tests.recordings import FIXTURES, recorded_frames

RULES = CallRules()
TIME_TOLERANCE = 0.005


def ami_call_events(scenario: str) -> list[CallEvent]:
    tracker = CallTracker(RULES, pbx_id="lab", source="ami")
    clock = PbxClock()
    out: list[CallEvent] = []
    for frame in recorded_frames(scenario):
        event = frame_to_event(frame, clock.stamp(frame))
        if event is not None:
            out.extend(tracker.handle(event))
    return out


def ari_call_events(scenario: str) -> list[CallEvent]:
    tracker = CallTracker(RULES, pbx_id="lab", source="ari")
    mapper = AriEventMapper()
    out: list[CallEvent] = []
    for message in recorded_ari_messages(scenario):
        for event in mapper.map(parse_event(message)):
            out.extend(tracker.handle(event))
    return out


def assert_same_call(ami: dict[str, Any], ari: dict[str, Any], where: str) -> None:
    assert ami.keys() == ari.keys()
    for key in ami:
        if key == "source":
            assert (ami[key], ari[key]) == ("ami", "ari")
        elif isinstance(ami[key], datetime) and isinstance(ari[key], datetime):
            gap = abs((ami[key] - ari[key]).total_seconds())
            assert gap <= TIME_TOLERANCE, f"{where}: {key} differs by {gap:.4f}s"
        elif isinstance(ami[key], float):
            assert ari[key] == pytest.approx(ami[key], abs=TIME_TOLERANCE), f"{where}: {key}"
        elif key == "transfers":
            assert len(ari[key]) == len(ami[key]), f"{where}: {key}"
            for one, other in zip(ami[key], ari[key], strict=True):
                assert_same_call(one, other, f"{where}: {key}")
        else:
            assert ari[key] == ami[key], f"{where}: {key}"


# Every call recorded both ways (the multi-party day included: transfers, ring groups, pickup,
# queues with Local members, the ten-call burst).
BOTH_WAYS = sorted(path.stem for path in (FIXTURES / "ari").glob("*.jsonl"))


def test_every_ari_recording_has_its_ami_twin() -> None:
    assert len(BOTH_WAYS) >= 15
    assert all((FIXTURES / "ami" / f"{name}.ami").exists() for name in BOTH_WAYS)


@pytest.mark.parametrize("scenario", BOTH_WAYS)
def test_ari_and_ami_recordings_of_one_call_give_the_same_crm_events(scenario: str) -> None:
    ami = ami_call_events(scenario)
    ari = ari_call_events(scenario)
    assert ami, "the AMI replay produced no call events"
    assert [(e.call_id, e.kind, e.seq, e.extension, e.data) for e in ari] == [
        (e.call_id, e.kind, e.seq, e.extension, e.data) for e in ami
    ]
    for ami_event, ari_event in zip(ami, ari, strict=True):
        assert_same_call(ami_event.call.model_dump(), ari_event.call.model_dump(), scenario)
        assert abs((ami_event.at - ari_event.at).total_seconds()) <= TIME_TOLERANCE


def test_caller_hangs_up_call_is_the_readme_conclusion_from_ari_alone() -> None:
    events = ari_call_events("inbound_answered_caller_hangs_up")
    call = events[-1].call
    assert [e.kind.value for e in events] == [
        "ringing",
        "answered",
        "leg_ended",
        "hangup",
        "completed",
    ]
    assert call.call_id == "1795417965.0"
    assert call.source == "ari"
    assert (call.caller_number, call.called_number, call.agent_extension) == (
        "+79031234567",
        "4951112233",
        "7181",
    )
    assert call.terminating_party is not None and call.terminating_party.value == "caller"
    assert call.talk_seconds == pytest.approx(6.0, abs=0.05)


def test_a_dialled_channel_gets_the_linkedid_of_the_channel_that_dialled_it() -> None:
    mapper = AriEventMapper()
    created = []
    for message in recorded_ari_messages("inbound_answered_caller_hangs_up"):
        created += [e for e in mapper.map(parse_event(message)) if isinstance(e, ChannelCreated)]
    assert [(c.uniqueid, c.linkedid) for c in created] == [
        ("1795417965.0", "1795417965.0"),
        ("1795417965.1", "1795417965.0"),
    ]


def test_a_held_back_channel_keeps_its_events_in_order_until_the_dial_names_its_caller() -> None:
    mapper = AriEventMapper()
    seen = []
    for message in recorded_ari_messages("inbound_answered_caller_hangs_up"):
        seen += mapper.map(parse_event(message))
    agent = [e for e in seen if getattr(e, "uniqueid", None) == "1795417965.1"]
    assert isinstance(agent[0], ChannelCreated)
    assert agent[1] == VariableSet(agent[1].ts, "1795417965.1", "CRM_DID", "4951112233")
    dial_index = next(i for i, e in enumerate(seen) if isinstance(e, DialStarted))
    assert seen.index(agent[0]) < dial_index


def test_an_originated_channel_is_a_call_of_its_own_with_a_dial_that_has_no_caller() -> None:
    mapper = AriEventMapper()
    seen = []
    for message in recorded_ari_messages("ari_originate_click_to_call"):
        seen += mapper.map(parse_event(message))
    assert isinstance(seen[0], ChannelCreated)
    assert (seen[0].uniqueid, seen[0].linkedid) == ("c2c-0001", "c2c-0001")
    dials = [e for e in seen if isinstance(e, DialStarted | DialEnded)]
    assert [type(d).__name__ for d in dials] == ["DialStarted", "DialEnded"]
    assert all(d.uniqueid is None for d in dials)


def _with(message: dict[str, Any], **changes: Any) -> dict[str, Any]:
    return {**message, **changes}


def test_queue_and_mixmonitor_applications_become_queue_and_recording_events() -> None:
    """Hand-built: no ARI recording has a queue or MixMonitor; shapes copied from the recorded
    ChannelDialplan/Dial messages, app names from ami/inbound_queue_answered.ami and
    ami/inbound_answered_recorded.ami."""
    messages = recorded_ari_messages("inbound_answered_caller_hangs_up")
    dialplan = next(m for m in messages if m["type"] == "ChannelDialplan")
    answer = next(m for m in messages if m["type"] == "Dial" and m["dialstatus"] == "ANSWER")
    mapper = AriEventMapper()
    assert mapper.map(
        parse_event(_with(dialplan, dialplan_app="MixMonitor", dialplan_app_data="x.wav"))
    ) == [
        RecordingStarted(dialplan_ts := parse_event(dialplan).timestamp.timestamp(), "1795417965.0")
    ]
    queued = mapper.map(
        parse_event(_with(dialplan, dialplan_app="Queue", dialplan_app_data="support,t"))
    )
    assert QueueJoined(dialplan_ts, "1795417965.0", "support") in queued
    caller = {
        **answer["caller"],
        "dialplan": {**answer["caller"]["dialplan"], "app_name": "Queue", "app_data": "support"},
    }
    connected = mapper.map(parse_event(_with(answer, caller=caller)))
    assert connected[-1] == QueueAgentConnected(
        parse_event(answer).timestamp.timestamp(),
        "1795417965.0",
        "1795417965.1",
        "support",
        "PJSIP/7181",
    )


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        ([1, 2], "expected a JSON object"),
        ({"timestamp": "2026-11-23T07:12:45.419+0000"}, "no string 'type'"),
        ({"type": "ChannelCreated", "timestamp": "2026-11-23T07:12:45.419+0000"}, "channel"),
        ({"type": "Dial", "timestamp": "yesterday", "peer": {"id": "1"}}, "timestamp"),
    ],
)
def test_a_malformed_message_is_refused_with_a_reason_naming_the_problem(
    message: Any, reason: str
) -> None:
    with pytest.raises(BadAriMessage, match=reason):
        parse_event(message)


def test_an_unknown_event_type_is_parsed_and_maps_to_nothing() -> None:
    event = parse_event({"type": "TextMessageReceived", "timestamp": "2026-11-23T07:12:45+0000"})
    assert event.type == "TextMessageReceived"
    assert AriEventMapper().map(event) == []


def test_a_channel_listing_becomes_the_snapshot_ami_builds_from_core_show_channel() -> None:
    [channel] = parse_channels(recorded_rest("get_channels")["response"])
    created = channel.creationtime.timestamp() if channel.creationtime else 0.0
    snap = channel_snapshot(channel, ts=created + 5.0, linkedid="1795418059.12", bridge_id="")
    assert (snap.uniqueid, snap.channel, snap.state, snap.caller_num) == (
        "1795418059.12",
        "PJSIP/trunk-0000000c",
        "Up",
        "+79031234567",
    )
    assert (snap.context, snap.exten, snap.application) == ("from-trunk", "4951110002", "Stasis")
    assert snap.age_seconds == pytest.approx(5.0)


def reordered_ringing_before_dial(scenario: str) -> list[dict[str, Any]]:
    """The recording with each dialled phone's Ringing state change moved before the Dial
    event that names its caller: an order Asterisk also sends (same events, nothing invented)."""
    messages = list(recorded_ari_messages(scenario))
    for index, message in enumerate(messages):
        if message["type"] != "Dial" or message.get("dialstatus") != "":
            continue
        peer = message["peer"]["id"]
        ringing = next(
            (
                later
                for later in range(index + 1, len(messages))
                if messages[later]["type"] == "ChannelStateChange"
                and messages[later]["channel"]["id"] == peer
                and messages[later]["channel"]["state"] == "Ringing"
            ),
            None,
        )
        if ringing is not None:
            messages.insert(index, messages.pop(ringing))
    return messages


def created_linkedids(messages: list[dict[str, Any]]) -> dict[str, str]:
    mapper = AriEventMapper()
    out: dict[str, str] = {}
    for message in messages:
        for event in mapper.map(parse_event(message)):
            if isinstance(event, ChannelCreated):
                out[event.channel] = event.linkedid
    return out


@pytest.mark.parametrize(
    "scenario",
    [
        "inbound_answered_caller_hangs_up",
        "ring_group_three_agents",
        "queue_ringall_abandoned",
        "ari_burst_ten_inbound",
    ],
)
def test_a_phone_ringing_before_its_dial_event_still_joins_the_callers_call(
    scenario: str,
) -> None:
    messages = reordered_ringing_before_dial(scenario)
    if scenario == "inbound_answered_caller_hangs_up":  # recorded Dial first: now reversed
        assert messages != recorded_ari_messages(scenario)
    linkedids = created_linkedids(messages)
    callers = {name: linkedid for name, linkedid in linkedids.items() if "trunk" in name}
    agents = {name: linkedid for name, linkedid in linkedids.items() if "trunk" not in name}
    assert agents, "no agent channel was created"
    # Every agent leg carries the Linkedid of some trunk channel (the one that dialled it).
    assert set(agents.values()) <= set(callers.values())
    assert len(set(callers.values())) == len(callers)


def test_reordered_ari_events_give_the_same_calls_as_the_ami_recording() -> None:
    scenario = "ring_group_three_agents"
    tracker = CallTracker(RULES, pbx_id="lab", source="ari")
    mapper = AriEventMapper()
    ari: list[CallEvent] = []
    for message in reordered_ringing_before_dial(scenario):
        for event in mapper.map(parse_event(message)):
            ari.extend(tracker.handle(event))
    ami = ami_call_events(scenario)
    assert [(e.call_id, e.kind, e.extension) for e in ari] == [
        (e.call_id, e.kind, e.extension) for e in ami
    ]
