"""3CX ReportCall entries -> the call model: what 3CX may send, and what it maps to."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from ari_app.threecx.journal import (
    CallType,
    JournalEntry,
    build_call_events,
    journal_call_id,
    parse_duration,
    parse_time,
)
from crm.model import Direction, Disposition, EventKind

START = "2024-05-01T10:00:00Z"


def entry(**fields: object) -> JournalEntry:
    raw: dict[str, object] = {"callType": "Inbound", "number": "+79031234567", "startUtc": START}
    raw.update(fields)
    return JournalEntry.model_validate(raw)


@pytest.mark.parametrize(
    ("raw", "seconds"),
    [
        ("00:01:05", 65),
        ("1:05", 65),
        ("65", 65),
        (65, 65),
        ("1.00:00:01", 86401),
        ("", 0),
        ("00:00:02.5000000", 2.5),
    ],
)
def test_durations_are_read_in_every_form_3cx_renders(raw: object, seconds: float) -> None:
    assert parse_duration(raw) == seconds


def test_a_duration_that_is_not_a_time_span_says_how_to_send_it() -> None:
    with pytest.raises(ValueError, match="hh:mm:ss"):
        parse_duration("about a minute")


def test_times_are_utc_and_3cx_never_is_none() -> None:
    assert parse_time("2024-05-01T10:00:00Z") == datetime(2024, 5, 1, 10, tzinfo=UTC)
    assert parse_time("2024-05-01 10:00:00") == datetime(2024, 5, 1, 10, tzinfo=UTC)
    assert parse_time("5/1/2024 10:00:00 AM") == datetime(2024, 5, 1, 10, tzinfo=UTC)
    assert parse_time("0001-01-01T00:00:00Z") is None
    assert parse_time("") is None


def test_field_names_count_in_any_case_and_empty_variables_are_absent() -> None:
    parsed = JournalEntry.model_validate(
        {
            "CallType": "notAnswered",
            "Number": "89031234567",
            "call_start_time_utc": START,
            "AGENT": 101,
            "Duration": "00:00:00",
            "entityId": "",
        }
    )
    assert parsed.call_type is CallType.NOTANSWERED
    assert parsed.agent == "101"
    assert parsed.entity_id is None


def test_a_plus_that_arrived_as_a_space_is_a_plus_again() -> None:
    assert entry(number=" 79031234567").number == "+79031234567"


def test_an_unknown_call_type_names_the_four_3cx_sends() -> None:
    with pytest.raises(ValidationError, match="Inbound, Outbound, Missed, Notanswered"):
        entry(callType="Transferred")


def test_a_missing_start_is_refused_but_a_number_without_digits_is_a_withheld_caller() -> None:
    with pytest.raises(ValidationError) as info:
        JournalEntry.model_validate({"callType": "Inbound", "number": "anonymous"})
    assert {error["loc"][0] for error in info.value.errors()} == {"start"}
    assert entry(number="anonymous").number is None
    assert entry(number="[Number]").number is None


@pytest.mark.parametrize(
    "unfilled",
    ["[AgentEmail]", " [Agent] ", "[[CallEndTimeUTC].ToString(\"yyyy'-'MM\")]"],
)
def test_a_variable_3cx_did_not_substitute_is_absent(unfilled: str) -> None:
    parsed = entry(agentEmail=unfilled, agent=unfilled, endUtc=unfilled)
    assert (parsed.agent_email, parsed.agent, parsed.end) == (None, None, None)


def test_bracketed_text_that_is_not_a_variable_is_kept() -> None:
    assert entry(name="[VIP] Ivan").name == "[VIP] Ivan"


def test_the_call_id_is_stable_for_a_retry_and_differs_between_calls() -> None:
    assert journal_call_id(entry()) == journal_call_id(entry())
    assert journal_call_id(entry()) != journal_call_id(entry(agent="102"))
    assert journal_call_id(entry(callId="abc/1")) == "3cx-abc_1"


def test_an_inbound_entry_with_its_own_answer_and_end_times_keeps_them() -> None:
    events = build_call_events(
        entry(
            agent="101",
            duration="00:00:50",
            answeredUtc="2024-05-01T10:00:10Z",
            endUtc="2024-05-01T10:01:00Z",
        ),
        pbx_id="site",
    )
    assert [e.kind for e in events] == [
        EventKind.RINGING,
        EventKind.ANSWERED,
        EventKind.LEG_ENDED,
        EventKind.HANGUP,
        EventKind.COMPLETED,
    ]
    ringing, answered, leg_ended, hangup, completed = events
    assert (leg_ended.extension, leg_ended.data) == (
        answered.extension,
        {"reason": "completed", "answered": True},
    )
    assert ringing.call.answer_time is None and not ringing.call.ended
    assert answered.at == datetime(2024, 5, 1, 10, 0, 10, tzinfo=UTC)
    assert answered.call.ring_seconds == 10
    assert hangup.call.disposition is Disposition.ANSWERED
    assert completed.call.ended and completed.call.talk_seconds == 50
    assert {e.call.pbx_id for e in events} == {"site"}
    assert completed.call.direction is Direction.INBOUND


def test_a_missed_call_without_an_agent_has_no_ringing_step() -> None:
    events = build_call_events(entry(callType="Missed"), pbx_id="site")
    assert [e.kind for e in events] == [EventKind.HANGUP, EventKind.DROPPED, EventKind.COMPLETED]
    assert events[-1].call.disposition is Disposition.NO_ANSWER


def test_answer_and_end_times_decide_ring_and_talk_over_the_duration() -> None:
    # [Duration] may span the whole call on some 3CX versions: the two times are exact.
    events = build_call_events(
        entry(
            duration="00:01:15",
            answeredUtc="2024-05-01T10:00:10Z",
            endUtc="2024-05-01T10:01:15Z",
        ),
        pbx_id="site",
    )
    final = events[-1].call
    assert (final.ring_seconds, final.talk_seconds) == (10, 65)
