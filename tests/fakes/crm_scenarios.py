"""CallEvents built by hand from the recorded AMI scenarios (tests/fixtures/asterisk/README.md).

Times are the recordings' `Timestamp` headers; numbers, extensions, Linkedids, causes and
the recording file are as recorded. The lifecycle steps (which EventKinds, in which order)
are what the call tracker is specified to produce for each scenario; they are built here
by hand so the dialect tests do not depend on the tracker.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from crm.model import Call, CallEvent, Direction, Disposition, EventKind, Party


def ts(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, tz=UTC)


def _events(call: Call, steps: list[tuple[EventKind, float, dict[str, Any]]]) -> list[CallEvent]:
    events = []
    for seq, (kind, at, extra) in enumerate(steps, start=1):
        snapshot = call.model_copy(deep=True)
        if kind in (EventKind.RINGING, EventKind.ANSWERED, EventKind.LEG_ENDED):
            snapshot.ended = False
        events.append(
            CallEvent(call_id=call.call_id, seq=seq, kind=kind, at=ts(at), call=snapshot, **extra)
        )
    return events


def completed_leg(extension: str) -> dict[str, Any]:
    return {"extension": extension, "data": {"reason": "completed", "answered": True}}


def missed_leg(extension: str, reason: str) -> dict[str, Any]:
    return {"extension": extension, "data": {"reason": reason, "answered": False}}


def answered_recorded() -> list[CallEvent]:
    """ami/inbound_answered_recorded.ami: +79037654321 -> 4951112234, agent 7181, MixMonitor."""
    call = Call(
        call_id="1795418967.2",
        direction=Direction.INBOUND,
        caller_number="+79037654321",
        called_number="4951112234",
        agent_extension="7181",
        rang_extensions=["7181"],
        start_time=ts(1795418967.933112),
        answer_time=ts(1795418969.441716),
        end_time=ts(1795418974.454316),
        ring_seconds=1.5,
        talk_seconds=5.0,
        disposition=Disposition.ANSWERED,
        terminating_party=Party.CALLER,
        hangup_cause=16,
        hangup_cause_text="Normal Clearing",
        recording_file="/var/spool/asterisk/monitor/1795418967.2.wav",
        recording_url="https://pbx.example.com/recordings/1795418967.2.wav",
        ended=True,
    )
    return _events(
        call,
        [
            (EventKind.RINGING, 1795418967.935382, {"extension": "7181"}),
            (EventKind.ANSWERED, 1795418969.441716, {"extension": "7181"}),
            (EventKind.LEG_ENDED, 1795418974.454231, completed_leg("7181")),
            (EventKind.HANGUP, 1795418974.451004, {}),
            (EventKind.COMPLETED, 1795418974.454316, {}),
        ],
    )


def answered_caller_hangs_up() -> list[CallEvent]:
    """ami/inbound_answered_caller_hangs_up.ami: +79031234567 -> 4951112233, agent 7181."""
    call = Call(
        call_id="1795417965.0",
        direction=Direction.INBOUND,
        caller_number="+79031234567",
        called_number="4951112233",
        agent_extension="7181",
        rang_extensions=["7181"],
        start_time=ts(1795417965.420603),
        answer_time=ts(1795417966.926553),
        end_time=ts(1795417972.935678),
        ring_seconds=1.5,
        talk_seconds=6.0,
        disposition=Disposition.ANSWERED,
        terminating_party=Party.CALLER,
        hangup_cause=16,
        ended=True,
    )
    return _events(
        call,
        [
            (EventKind.RINGING, 1795417965.422720, {"extension": "7181"}),
            (EventKind.ANSWERED, 1795417966.926553, {"extension": "7181"}),
            (EventKind.LEG_ENDED, 1795417972.935335, completed_leg("7181")),
            (EventKind.HANGUP, 1795417972.933879, {}),
            (EventKind.COMPLETED, 1795417972.935678, {}),
        ],
    )


def voicemail() -> list[CallEvent]:
    """ami/inbound_no_answer_voicemail.ami: +79262223344, 7181 rang ~12 s, message left."""
    call = Call(
        call_id="1795417990.4",
        direction=Direction.INBOUND,
        caller_number="+79262223344",
        called_number="4951112233",
        agent_extension="7181",
        rang_extensions=["7181"],
        start_time=ts(1795417990.929142),
        end_time=ts(1795418019.950126),
        ring_seconds=12.0,
        disposition=Disposition.VOICEMAIL,
        terminating_party=Party.CALLER,
        hangup_cause=16,
        voicemail=True,
        ended=True,
    )
    return _events(
        call,
        [
            (EventKind.RINGING, 1795417990.931245, {"extension": "7181"}),
            (EventKind.LEG_ENDED, 1795418002.937201, missed_leg("7181", "no-answer")),
            (EventKind.VOICEMAIL, 1795418019.947666, {}),
            (EventKind.HANGUP, 1795418019.949844, {}),
            (EventKind.COMPLETED, 1795418019.950126, {}),
        ],
    )


def abandoned() -> list[CallEvent]:
    """ami/inbound_abandoned_while_ringing.ami: +79853334455, 7181 rang ~4 s, caller gave up."""
    call = Call(
        call_id="1795418023.6",
        direction=Direction.INBOUND,
        caller_number="+79853334455",
        called_number="4951112233",
        agent_extension="7181",
        rang_extensions=["7181"],
        start_time=ts(1795418023.415680),
        end_time=ts(1795418027.431956),
        ring_seconds=4.0,
        disposition=Disposition.ABANDONED,
        terminating_party=Party.CALLER,
        hangup_cause=127,
        ended=True,
    )
    return _events(
        call,
        [
            (EventKind.RINGING, 1795418023.418329, {"extension": "7181"}),
            (EventKind.LEG_ENDED, 1795418027.428745, missed_leg("7181", "abandoned")),
            (EventKind.HANGUP, 1795418027.427708, {}),
            (EventKind.DROPPED, 1795418027.431956, {}),
            (EventKind.COMPLETED, 1795418027.431956, {}),
        ],
    )


def survey() -> list[CallEvent]:
    """ami/ivr_agi_survey.ami + agi/survey.txt: +79031234567 on 4951110000 keyed 7."""
    call = Call(
        call_id="1795418044.10",
        direction=Direction.INBOUND,
        caller_number="+79031234567",
        called_number="4951110000",
        start_time=ts(1795418044.651642),
        answer_time=ts(1795418044.651642),
        end_time=ts(1795418047.296588),
        disposition=Disposition.ANSWERED,
        terminating_party=Party.SYSTEM,
        ended=True,
    )
    # The survey IVR in the lab had no agent leg; the agent's extension comes from the
    # IVR's arguments in a real deployment, here 7070 (a lab agent phone).
    data = {"rating": "7", "extension": "7070", "number": "+79031234567"}
    return _events(call, [(EventKind.SURVEY, 1795418047.294367, {"data": data})])


def outbound_agent_dials() -> list[CallEvent]:
    """ami/outbound_agent_dials.ami: agent 7070 dials 89161234567, the agent hangs up."""
    call = Call(
        call_id="1795418982.4",
        direction=Direction.OUTBOUND,
        caller_number="7070",
        caller_name="Agent 7070",
        called_number="89161234567",
        agent_extension="7070",
        start_time=ts(1795418982.015821),
        answer_time=ts(1795418983.526857),
        end_time=ts(1795418987.536703),
        ring_seconds=1.5,
        talk_seconds=4.0,
        disposition=Disposition.ANSWERED,
        terminating_party=Party.AGENT,
        hangup_cause=16,
        ended=True,
    )
    return _events(
        call,
        [
            (EventKind.ANSWERED, 1795418983.526857, {"extension": "7070"}),
            (EventKind.LEG_ENDED, 1795418987.536703, completed_leg("7070")),
            (EventKind.HANGUP, 1795418987.535757, {}),
            (EventKind.COMPLETED, 1795418987.536703, {}),
        ],
    )


def note(status: str = "Schedule Later", comments: str = "Due to driving") -> CallEvent:
    """A screen-pop note for the answered caller (no recording holds one: built from the spec)."""
    [*_, completed] = answered_caller_hangs_up()
    return CallEvent(
        call_id=completed.call_id,
        seq=completed.seq + 1,
        kind=EventKind.NOTE,
        at=ts(1795417990.0),
        call=completed.call,
        extension="7181",
        data={"status": status, "comments": comments},
    )
