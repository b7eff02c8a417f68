"""What a store row holds, on either backend: the call row's columns and values, and the records
the store hands back (notes, contacts, click-to-call requests)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from crm.model import Call, Direction

_NON_DIGITS = re.compile(r"\D+")

CALL_COLUMNS = (
    "pbx_id",
    "call_id",
    "direction",
    "caller_number",
    "called_number",
    "agent_extension",
    "start_time",
    "start_epoch",
    "answer_time",
    "end_time",
    "ring_seconds",
    "talk_seconds",
    "disposition",
    "terminating_party",
    "recording_file",
    "recording_url",
    "queue",
    "ended",
    "remote_number",
    "remote_digits",
    "call_json",
    "updated_at",
)

ORIGINATE_COLUMNS = (
    "id, agent_extension, number, state, reason, created_at, updated_at, request_json,"
    " target_pbx_id"
)


def digits_only(number: str | None) -> str | None:
    """The digits of a phone number ('+7 (903) 123-45-67' -> '79031234567'), None if none."""
    if not number:
        return None
    digits = _NON_DIGITS.sub("", number)
    return digits or None


def iso_utc(moment: datetime | None) -> str | None:
    """ISO 8601 in UTC with its offset; a naive datetime is taken to be UTC already."""
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat()


def remote_number_of(call: Call) -> str | None:
    """The outside party: the caller of an inbound call, the dialled number of an outbound one.

    Internal calls have no outside party, so they never match a customer's call history.
    """
    if call.direction is Direction.INBOUND:
        return call.caller_number
    if call.direction is Direction.OUTBOUND:
        return call.called_number
    return None


def call_params(call: Call, now: float) -> tuple[Any, ...]:
    """The values of CALL_COLUMNS for `call`, stored at `now`."""
    remote = remote_number_of(call)
    return (
        call.pbx_id,
        call.call_id,
        call.direction.value,
        call.caller_number,
        call.called_number,
        call.agent_extension,
        iso_utc(call.start_time),
        call.start_time.timestamp() if call.start_time else None,
        iso_utc(call.answer_time),
        iso_utc(call.end_time),
        call.ring_seconds,
        call.talk_seconds,
        call.disposition.value if call.disposition else None,
        call.terminating_party.value if call.terminating_party else None,
        call.recording_file,
        call.recording_url,
        call.queue,
        1 if call.ended else 0,
        remote,
        digits_only(remote),
        call.model_dump_json(),
        now,
    )


@dataclass(frozen=True, slots=True)
class Note:
    id: int
    pbx_id: str
    call_id: str | None
    number: str | None
    extension: str | None
    status: str | None
    comments: str | None
    created_at: float


@dataclass(frozen=True, slots=True)
class Contact:
    number_digits: str
    number: str
    name: str | None
    company: str | None
    owner_extension: str | None
    url: str | None
    updated_at: float


@dataclass(frozen=True, slots=True)
class OriginateRecord:
    id: str
    agent_extension: str | None
    number: str | None
    state: str
    reason: str | None
    created_at: float
    updated_at: float
    request: dict[str, Any] | None
    # Set when another instance took the request for this PBX (click-to-call relay).
    target_pbx_id: str | None = None


def originate_row(row: tuple[Any, ...]) -> OriginateRecord:
    """An OriginateRecord from a row of ORIGINATE_COLUMNS."""
    request = json.loads(row[7]) if row[7] else None
    return OriginateRecord(
        id=row[0],
        agent_extension=row[1],
        number=row[2],
        state=row[3],
        reason=row[4],
        created_at=row[5],
        updated_at=row[6],
        request=request,
        target_pbx_id=row[8],
    )
