"""A recording started on the customer's call stays on that call's record through transfers,
queues and ring groups with Local members, and pickups.

No multi-party capture has a MixMonitor in it (the lab recorded those calls unrecorded), so
each test adds the ONE frame a recording adds, shaped exactly like the recorded one in
inbound_answered_recorded.ami (`VarSet MIXMONITOR_FILENAME` on the channel MixMonitor ran on;
for ARI the `ChannelVarset` of that channel), to the multi-party recording; everything else is
as captured.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from ari_app.calls.rules import CallRules
from ari_app.calls.tracker import CallTracker
from ari_app.pbx.ami.events import PbxClock, frame_to_event
from ari_app.pbx.ari.events import AriEventMapper
from ari_app.pbx.ari.models import parse_event
from crm.model import Call, CallEvent, EventKind
from tests.fakes.ari_server import recorded_ari_messages
from tests.recordings import recorded_frames

RULES = CallRules(recording_url_template="https://pbx.example/rec/{file}")
FILE = "/var/spool/asterisk/monitor/customer-call.wav"


def with_recording_ami(scenario: str, channel_prefix: str) -> list[dict[str, str]]:
    frames = [dict(f) for f in recorded_frames(scenario)]
    for index, frame in enumerate(frames):
        if frame.get("Event") == "Newchannel" and frame["Channel"].startswith(channel_prefix):
            varset = {
                "Event": "VarSet",
                "Privilege": "dialplan,all",
                "Timestamp": frame["Timestamp"],
                "Channel": frame["Channel"],
                "Uniqueid": frame["Uniqueid"],
                "Linkedid": frame["Linkedid"],
                "Variable": "MIXMONITOR_FILENAME",
                "Value": FILE,
            }
            return [*frames[: index + 1], varset, *frames[index + 1 :]]
    raise AssertionError(f"no channel {channel_prefix} in {scenario}")


def with_recording_ari(scenario: str, channel_prefix: str) -> list[dict[str, Any]]:
    messages = recorded_ari_messages(scenario)
    for index, message in enumerate(messages):
        if message["type"] == "ChannelCreated" and message["channel"]["name"].startswith(
            channel_prefix
        ):
            varset = {
                "type": "ChannelVarset",
                "timestamp": message["timestamp"],
                "variable": "MIXMONITOR_FILENAME",
                "value": FILE,
                "channel": copy.deepcopy(message["channel"]),
                "asterisk_id": message.get("asterisk_id", ""),
                "application": message.get("application", "crm"),
            }
            return [*messages[: index + 1], varset, *messages[index + 1 :]]
    raise AssertionError(f"no channel {channel_prefix} in {scenario}")


def ami_events(frames: list[dict[str, str]]) -> list[CallEvent]:
    tracker = CallTracker(RULES, pbx_id="lab")
    clock = PbxClock()
    out: list[CallEvent] = []
    for frame in frames:
        event = frame_to_event(frame, clock.stamp(frame))
        if event is not None:
            out.extend(tracker.handle(event))
    return out


def ari_events(messages: list[dict[str, Any]]) -> list[CallEvent]:
    tracker = CallTracker(RULES, pbx_id="lab", source="ari")
    mapper = AriEventMapper()
    out: list[CallEvent] = []
    for message in messages:
        for event in mapper.map(parse_event(message)):
            out.extend(tracker.handle(event))
    return out


def the_one_call(events: list[CallEvent]) -> Call:
    finals = [e.call for e in events if e.kind is EventKind.COMPLETED]
    assert len(finals) == 1, [c.call_id for c in finals]
    return finals[0]


CASES = [
    # (scenario, the channel MixMonitor ran on)
    ("attended_transfer_target_hangs_up", "PJSIP/trunk-"),
    ("blind_transfer_ami_target_hangs_up", "PJSIP/trunk-"),
    ("call_pickup", "PJSIP/trunk-"),
    ("queue_local_members_answered", "PJSIP/trunk-"),
    # FreePBX-style member recording: started inside the Local member's own dialplan.
    ("queue_local_members_answered", "Local/7070@agents-00000001;2"),
    ("ring_group_local_channels", "Local/7070@agents-00000003;2"),
]


@pytest.mark.parametrize(("scenario", "channel"), CASES)
def test_the_recording_stays_on_the_customers_call_from_ami(scenario: str, channel: str) -> None:
    call = the_one_call(ami_events(with_recording_ami(scenario, channel)))
    assert call.recording_file == "customer-call.wav"
    assert call.recording_url == "https://pbx.example/rec/customer-call.wav"


@pytest.mark.parametrize(("scenario", "channel"), CASES)
def test_the_recording_stays_on_the_customers_call_from_ari(scenario: str, channel: str) -> None:
    call = the_one_call(ari_events(with_recording_ari(scenario, channel)))
    assert call.recording_file == "customer-call.wav"
    assert call.recording_url == "https://pbx.example/rec/customer-call.wav"
