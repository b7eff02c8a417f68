"""Calls with more than two people, from the second recording day, as AMI and as ARI.

Each expectation is the fixture README's "Expected" line for that capture (what the call really
was), asserted field by field for both sources; durations to 50 ms of the README's figures
(which are rounded to 0.5 s, so the exact figures below are the event timestamps' differences).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import pytest

from crm.model import (
    LEG_END_REASONS,
    Call,
    CallEvent,
    Direction,
    Disposition,
    EventKind,
    Party,
)
from tests.test_ari_events import ami_call_events, ari_call_events

SOURCES = {"ami": ami_call_events, "ari": ari_call_events}


@dataclass(frozen=True)
class Expected:
    caller: str
    called: str
    agent: str | None
    rang: list[str]
    disposition: Disposition
    party: Party
    ring: float
    talk: float
    direction: Direction = Direction.INBOUND
    queue: str | None = None
    transfers: list[tuple[str, str, str]] = field(default_factory=list)
    dropped: bool = False
    # (extension, reason) of every agent leg, in the order the legs ended
    legs: list[tuple[str, str]] = field(default_factory=list)


EXPECTED: dict[str, Expected] = {
    "ring_group_three_agents": Expected(
        "+79161230001",
        "4951112240",
        "517",
        ["7070", "7181", "517"],
        Disposition.ANSWERED,
        Party.AGENT,
        ring=3.006,
        talk=4.003,
        legs=[("7070", "answered-elsewhere"), ("7181", "answered-elsewhere"), ("517", "completed")],
    ),
    "attended_transfer_target_hangs_up": Expected(
        "+79035550033",
        "4951112237",
        "7070",
        ["7181", "7070"],
        Disposition.ANSWERED,
        Party.AGENT,
        ring=1.506,
        talk=9.524,
        transfers=[("attended", "7181", "7070")],
        legs=[("7181", "transferred"), ("7070", "completed")],
    ),
    "blind_transfer_ami_target_hangs_up": Expected(
        "+79035550044",
        "4951112237",
        "7070",
        ["7181", "7070"],
        Disposition.ANSWERED,
        Party.AGENT,
        ring=1.508,
        talk=7.816,
        transfers=[("blind", "7181", "7070")],
        legs=[("7181", "transferred"), ("7070", "completed")],
    ),
    "queue_ringall_second_member_answers": Expected(
        "+79161230004",
        "4951112241",
        "7181",
        ["7070", "7181"],
        Disposition.ANSWERED,
        Party.CALLER,
        ring=3.006,
        talk=4.996,
        queue="sales",
        legs=[("7070", "answered-elsewhere"), ("7181", "completed")],
    ),
    "queue_ringall_abandoned": Expected(
        "+79161230005",
        "4951112241",
        "7181",
        ["7070", "7181"],
        Disposition.ABANDONED,
        Party.CALLER,
        ring=6.006,
        talk=0.0,
        queue="sales",
        dropped=True,
        legs=[("7070", "abandoned"), ("7181", "abandoned")],
    ),
    "queue_local_members_answered": Expected(
        "+79161230006",
        "4951112242",
        "7070",
        ["7181", "7070"],
        Disposition.ANSWERED,
        Party.CALLER,
        ring=2.004,
        talk=3.995,
        queue="support2",
        legs=[("7181", "answered-elsewhere"), ("7070", "completed")],
    ),
    "ring_group_local_channels": Expected(
        "+79161230007",
        "4951112243",
        "7070",
        ["7181", "7070"],
        Disposition.ANSWERED,
        Party.AGENT,
        ring=2.004,
        talk=4.004,
        legs=[("7181", "answered-elsewhere"), ("7070", "completed")],
    ),
    "call_pickup": Expected(
        "+79161230008",
        "4951112244",
        "7070",
        ["7181"],
        Disposition.ANSWERED,
        Party.CALLER,
        ring=3.026,
        talk=4.007,
        legs=[("7181", "answered-elsewhere"), ("7070", "completed")],
    ),
    "internal_call_no_answer": Expected(
        "7181",
        "7070",
        "7181",
        ["7070"],
        Disposition.ABANDONED,
        Party.CALLER,
        ring=5.006,
        talk=0.0,
        direction=Direction.INTERNAL,
        legs=[("7070", "abandoned")],
    ),
    "click_to_call_client_busy": Expected(
        "101",
        "89161234567",
        "101",
        ["101"],
        Disposition.BUSY,
        Party.SYSTEM,
        ring=1.807,
        talk=0.0,
        direction=Direction.OUTBOUND,
        legs=[("101", "busy")],
    ),
}


def completed_calls(events: list[CallEvent]) -> list[Call]:
    return [e.call for e in events if e.kind is EventKind.COMPLETED]


@pytest.mark.parametrize("source", sorted(SOURCES))
@pytest.mark.parametrize("scenario", sorted(EXPECTED))
def test_multiparty_call_is_what_the_recording_says(scenario: str, source: str) -> None:
    expected = EXPECTED[scenario]
    events = SOURCES[source](scenario)
    calls = completed_calls(events)
    assert len(calls) == 1, f"one call, not {[c.call_id for c in calls]}"
    assert {e.call_id for e in events} == {calls[0].call_id}
    call = calls[0]
    assert call.direction is expected.direction
    assert call.caller_number == expected.caller
    assert call.called_number == expected.called
    assert call.agent_extension == expected.agent
    assert call.rang_extensions == expected.rang
    assert call.disposition is expected.disposition
    assert call.terminating_party is expected.party
    assert call.ring_seconds == pytest.approx(expected.ring, abs=0.05)
    assert call.talk_seconds == pytest.approx(expected.talk, abs=0.05)
    assert call.queue == expected.queue
    assert [(t.kind, t.from_extension, t.to_extension) for t in call.transfers] == (
        expected.transfers
    )
    assert call.voicemail is False
    assert (EventKind.DROPPED in [e.kind for e in events]) is expected.dropped
    legs = [(e.extension, e.data["reason"]) for e in events if e.kind is EventKind.LEG_ENDED]
    assert legs == expected.legs
    assert not any(name.startswith("Local/") for name in call.rang_extensions)


@pytest.mark.parametrize("source", sorted(SOURCES))
@pytest.mark.parametrize("scenario", sorted(EXPECTED))
def test_every_agent_leg_rings_then_answers_or_not_then_ends_once(
    scenario: str, source: str
) -> None:
    """The lifecycle a CRM pop-up needs, per agent: an end for every ring, one answer at most,
    and the end after the answer."""
    events = SOURCES[source](scenario)
    for extension in {e.extension for e in events if e.extension}:
        mine = [e for e in events if e.extension == extension]
        kinds = [e.kind for e in mine]
        assert kinds.count(EventKind.LEG_ENDED) == 1, (extension, kinds)
        assert kinds[-1] is EventKind.LEG_ENDED, (extension, kinds)
        assert kinds.count(EventKind.ANSWERED) <= 1, (extension, kinds)
        assert mine[-1].data["answered"] is (EventKind.ANSWERED in kinds)
        assert mine[-1].data["reason"] in LEG_END_REASONS  # the documented contract
    assert [e.seq for e in events] == list(range(1, len(events) + 1))


@pytest.mark.parametrize("source", sorted(SOURCES))
def test_every_agent_who_talked_gets_an_answer_transfer_targets_included(source: str) -> None:
    for scenario in ("attended_transfer_target_hangs_up", "blind_transfer_ami_target_hangs_up"):
        events = SOURCES[source](scenario)
        answered = [e.extension for e in events if e.kind is EventKind.ANSWERED]
        assert answered == ["7181", "7070"], scenario


@pytest.mark.parametrize("source", sorted(SOURCES))
def test_a_pickup_makes_the_picker_the_one_who_answered(source: str) -> None:
    events = SOURCES[source]("call_pickup")
    answers = [e for e in events if e.kind is EventKind.ANSWERED]
    assert [(e.extension, e.data) for e in answers] == [("7070", {"picked_up": True})]
    ringing = [e.extension for e in events if e.kind is EventKind.RINGING]
    assert ringing == ["7181"]  # 7070 never rang: it dialled *8


@pytest.mark.parametrize("source", sorted(SOURCES))
def test_the_ten_call_burst_gives_ten_calls_each_answered_by_7181(source: str) -> None:
    events = SOURCES[source]("ari_burst_ten_inbound")
    calls = completed_calls(events)
    assert len(calls) == 10
    assert len({c.call_id for c in calls}) == 10
    assert {e.call_id for e in events} == {c.call_id for c in calls}
    for call in calls:
        assert (call.direction, call.caller_number, call.called_number) == (
            Direction.INBOUND,
            "+79031110000",
            "4951112233",
        )
        assert call.agent_extension == "7181"
        assert call.disposition is Disposition.ANSWERED
        assert call.terminating_party is Party.CALLER
        assert call.ring_seconds == pytest.approx(1.5, abs=0.1)
        assert call.talk_seconds == pytest.approx(4.0, abs=0.1)
        assert call.transfers == [] and call.voicemail is False
    per_call = Counter(e.call_id for e in events)
    assert set(per_call.values()) == {5}  # ringing, answered, leg_ended, hangup, completed
