"""The tracker's state of one call and its channels, and how a Call record is read off it.

Pure data and pure functions: the tracker (ari_app/calls/tracker.py) changes this state event by
event; `build_call` turns it into the `Call` a CRM receives, applying the rules the tracker's
docstring states (disposition, dropped, ring and talk time).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import overload

from ari_app.calls.recording_links import RecordingLinkSigner, recording_url_for
from crm.model import Call, Direction, Disposition, Party, Transfer
from crm.recordings.names import linked_name

_FAILED_DIAL_STATUSES = frozenset({"CHANUNAVAIL", "CONGESTION", "INVALIDARGS", "DONTCALL"})


def endpoint_of(channel: str) -> str:
    """`PJSIP/7181-00000001` -> `7181`; `Local/7181@ctx-0000002a;1` -> `7181@ctx`."""
    _, _, resource = channel.partition("/")
    resource = resource.split(";", 1)[0]
    head, dash, tail = resource.rpartition("-")
    if dash and tail and all(c in "0123456789abcdef" for c in tail.lower()):
        return head
    return resource


@dataclass(slots=True)
class TrackedChannel:
    uniqueid: str
    channel: str
    endpoint: str
    extension: str | None  # set for agent phones (never for Local channels)
    is_trunk: bool
    call: CallState
    answered: bool = False  # this leg was answered as the target of a dial
    is_local: bool = False  # one half of a Local/...;1 / ;2 pair: plumbing, never a party
    rang: bool = False  # RINGING was sent for this agent leg
    talked: bool = False  # ANSWERED was sent for this agent leg
    leg_ended: bool = False  # LEG_ENDED was sent for it
    transferred: bool = False  # left the call by handing the caller on
    dial_status: str | None = None  # the DialEnd status of the dial that rang it
    reaches: str | None = None  # the channel this one's answered dial connected it to


@dataclass(slots=True)
class CallState:
    call_id: str
    primary: str  # uniqueid of the first channel
    direction: Direction
    start_ts: float
    caller_number: str | None
    caller_name: str | None
    called_number: str | None
    linkedids: set[str] = field(default_factory=set)
    channels: dict[str, TrackedChannel] = field(default_factory=dict)
    seq: int = 0
    last_ts: float = 0.0
    touched: int = 0
    dial_started: dict[str, float] = field(default_factory=dict)  # dest uniqueid -> ts
    first_ring_ts: float | None = None
    last_dial_end_ts: float | None = None
    last_dial_status: str | None = None
    answer_ts: float | None = None
    answer_ring_seconds: float = 0.0
    pbx_answered: bool = False  # the PBX itself answered the customer (IVR, queue, voicemail)
    talk_end_ts: float | None = None
    terminating_party: Party | None = None
    # The channel whose hangup request set talk_end_ts/terminating_party: a transferer's
    # request (it completes an attended transfer) is taken back when the transfer is seen.
    end_requested_by: str | None = None
    agent_extension: str | None = None
    rang: list[str] = field(default_factory=list)
    in_voicemail: bool = False
    voicemail_left: bool = False
    recording_file: str | None = None
    queue: str | None = None
    transfers: list[Transfer] = field(default_factory=list)
    variables: dict[str, str] = field(default_factory=dict)
    originate_id: str | None = None
    hangup_cause: int | None = None
    hangup_cause_text: str | None = None
    end_ts: float | None = None
    answered_sent: bool = False
    hangup_sent: bool = False
    reconciled: bool = False
    merged_into: str | None = None
    end_estimated: bool = False


@overload
def utc(ts: float) -> datetime: ...


@overload
def utc(ts: float | None) -> datetime | None: ...


def utc(ts: float | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC)


def epoch(moment: datetime | None) -> float | None:
    return None if moment is None else moment.timestamp()


def is_dropped(state: CallState) -> bool:
    if state.direction is not Direction.INBOUND:
        return False
    if state.answer_ts is not None or state.voicemail_left:
        return False
    # A pure IVR call the PBX answered and ended itself was served, not dropped.
    served_by_ivr = (
        state.pbx_answered
        and state.first_ring_ts is None
        and state.terminating_party is Party.SYSTEM
    )
    return not served_by_ivr


# -- snapshots ------------------------------------------------------------------------


def disposition(state: CallState) -> Disposition | None:
    if state.answer_ts is not None:
        return Disposition.ANSWERED
    if state.voicemail_left:
        return Disposition.VOICEMAIL
    if not state.hangup_sent:
        return None
    status = state.last_dial_status
    if status == "BUSY":
        return Disposition.BUSY
    if status == "NOANSWER":
        return Disposition.NO_ANSWER
    if status == "CANCEL":
        return Disposition.ABANDONED
    if status in _FAILED_DIAL_STATUSES or status == "ANSWER":
        # ANSWER without a conversation: the agent took a click-to-call, the client never did.
        return Disposition.FAILED
    if state.first_ring_ts is not None:
        # Still ringing when it ended: the caller gave up, or the ring timed out.
        if state.terminating_party is Party.CALLER:
            return Disposition.ABANDONED
        return Disposition.NO_ANSWER
    if state.pbx_answered:
        if state.terminating_party is Party.CALLER:
            return Disposition.ABANDONED
        return Disposition.ANSWERED
    return Disposition.FAILED


def ring_seconds(state: CallState) -> float:
    if state.answer_ts is not None:
        return state.answer_ring_seconds
    if state.first_ring_ts is None:
        return 0.0
    end = state.last_dial_end_ts
    if end is None or state.dial_started:
        end = state.end_ts if state.end_ts is not None else state.last_ts
    return max(0.0, end - state.first_ring_ts)


def build_call(
    state: CallState,
    *,
    pbx_id: str,
    source: str,
    recording_url_template: str,
    ended: bool = False,
    recording_links: RecordingLinkSigner | None = None,
) -> Call:
    talk = 0.0
    if state.answer_ts is not None:
        talk_end = state.talk_end_ts or state.end_ts
        if talk_end is not None:
            talk = max(0.0, talk_end - state.answer_ts)
    recording_url = None
    if state.recording_file:
        recording_url = recording_url_for(
            recording_url_template,
            recording_links,
            file=linked_name(state.recording_file, recording_url_template),
            call_id=state.call_id,
            pbx_id=pbx_id,
            issued_at=state.end_ts or state.start_ts,
        )
    agent = state.agent_extension
    if agent is None and state.rang:
        agent = state.rang[-1]
    return Call(
        call_id=state.call_id,
        pbx_id=pbx_id,
        source=source,
        direction=state.direction,
        caller_number=state.caller_number,
        caller_name=state.caller_name,
        called_number=state.called_number,
        agent_extension=agent,
        rang_extensions=list(state.rang),
        start_time=utc(state.start_ts),
        answer_time=utc(state.answer_ts),
        end_time=utc(state.end_ts),
        ring_seconds=round(ring_seconds(state), 3),
        talk_seconds=round(talk, 3),
        disposition=disposition(state),
        terminating_party=state.terminating_party,
        hangup_cause=state.hangup_cause,
        hangup_cause_text=state.hangup_cause_text,
        recording_file=state.recording_file,
        recording_url=recording_url,
        queue=state.queue,
        transfers=list(state.transfers),
        voicemail=state.voicemail_left,
        reconciled=state.reconciled,
        originate_id=state.originate_id,
        variables=dict(state.variables),
        ended=ended,
        end_estimated=state.end_estimated,
    )


def clean(value: str | None) -> str | None:
    if not value or value == "<unknown>" or value == "s":
        return None
    return value
