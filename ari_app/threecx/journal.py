"""3CX call journaling: one `ReportCall` entry -> the same Call and lifecycle steps an Asterisk
call produces, so every configured CRM dialect gets 3CX calls too.

3CX reports a call once, after it ended, with `[CallType]` (Inbound, Outbound, Missed,
Notanswered), `[Number]`, `[Agent]`, `[Duration]` and the call's times. The steps mirror what
the tracker emits for the recorded Asterisk calls:

    Inbound      ringing, answered, hangup, completed
    Missed       ringing (when an agent rang), hangup, dropped, completed
    Outbound     answered, hangup, completed
    Notanswered  hangup, completed

3CX v20 hands the template no call id, so the call id is derived from what identifies the call
anyway (start second, number digits, agent, call type): a retried entry maps to the same call and
is recorded once.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import weakref
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from crm.model import Call, CallEvent, Direction, Disposition, EventKind
from crm.numbers import digits_only

if TYPE_CHECKING:
    from ari_app.calls.pipeline import Pipeline

log = logging.getLogger("pbxcrm.3cx")

SOURCE = "3cx"
_MAX_DURATION = timedelta(days=2)
# .NET's DateTime.MinValue, what 3CX renders for a time the call never reached.
_EARLIEST = datetime(1971, 1, 1, tzinfo=UTC)
_NON_KEY = re.compile(r"[^a-z0-9]")
_SAFE_ID = re.compile(r"[^A-Za-z0-9_.:-]")
_TIMESPAN = re.compile(
    r"^(?:(\d+)\.)?(\d+):(\d{1,2})(?::(\d{1,2}))?(?:\.(\d+))?$",
    re.ASCII,  # digits 0-9 only
)
# A variable 3CX did not substitute reaches us as its own text: `[AgentEmail]`, or a whole
# method call `[[CallEndTimeUTC].ToString("...")]`.
_UNRENDERED_TEXT = r"\[([A-Za-z][A-Za-z0-9_]*|\[[A-Za-z][A-Za-z0-9_]*\]\..*)\]"
_UNRENDERED = re.compile(f"^{_UNRENDERED_TEXT}$", re.DOTALL)


class CallType(StrEnum):
    INBOUND = "Inbound"
    OUTBOUND = "Outbound"
    MISSED = "Missed"
    NOTANSWERED = "Notanswered"

    @property
    def inbound(self) -> bool:
        return self in (CallType.INBOUND, CallType.MISSED)

    @property
    def answered(self) -> bool:
        return self in (CallType.INBOUND, CallType.OUTBOUND)


_CALL_TYPES = {_NON_KEY.sub("", t.value.lower()): t for t in CallType}

# Field names as a template may spell them, reduced to lower-case letters and digits.
_ALIASES: dict[str, str] = {
    "calltype": "call_type",
    "type": "call_type",
    "number": "number",
    "phone": "number",
    "name": "name",
    "agent": "agent",
    "agentextension": "agent",
    "extension": "agent",
    "agentemail": "agent_email",
    "agentfirstname": "agent_first_name",
    "agentlastname": "agent_last_name",
    "duration": "duration",
    "durationseconds": "duration",
    "start": "start",
    "startutc": "start",
    "starttimeutc": "start",
    "callstarttimeutc": "start",
    "answered": "answered",
    "answeredutc": "answered",
    "establishedtimeutc": "answered",
    "callestablishedtimeutc": "answered",
    "end": "end",
    "endutc": "end",
    "endtimeutc": "end",
    "callendtimeutc": "end",
    "entityid": "entity_id",
    "entitytype": "entity_type",
    "queue": "queue",
    "queueextension": "queue",
    "callid": "call_id",
}

_DATE_FORMATS = (
    "%m/%d/%Y %I:%M:%S %p",  # .NET's invariant/en-US DateTime.ToString()
    "%m/%d/%Y %H:%M:%S",
    "%Y-%m-%d %H:%M:%S",
)


def is_unrendered(value: str) -> bool:
    """True for a template variable 3CX left as literal text (it had no value for it)."""
    return bool(_UNRENDERED.match(value.strip()))


def parse_duration(value: object) -> float:
    """Seconds from `65`, `"65.5"`, `"01:05"`, `"00:01:05"` or a .NET TimeSpan `"1.02:03:04"`."""
    if value is None or value == "":
        return 0.0
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    else:
        text = str(value).strip()
        if not text.isascii():  # float() and int() would read Arabic-Indic digits too
            raise ValueError("duration must be seconds or hh:mm:ss, e.g. 65 or 00:01:05")
        match = _TIMESPAN.match(text)
        if match:
            days, first, second, third, fraction = match.groups()
            if third is None:  # mm:ss
                seconds = int(first) * 60 + int(second)
            else:  # hh:mm:ss
                seconds = int(first) * 3600 + int(second) * 60 + int(third)
            seconds += int(days or 0) * 86400
            if fraction:
                seconds += float(f"0.{fraction}")
        else:
            try:
                seconds = float(text.replace(",", "."))
            except ValueError:
                raise ValueError(
                    "duration must be seconds or hh:mm:ss, e.g. 65 or 00:01:05"
                ) from None
    if not 0 <= seconds <= _MAX_DURATION.total_seconds():
        raise ValueError("duration out of range")
    return seconds


def parse_time(value: object) -> datetime | None:
    """An aware UTC datetime, None for empty or for 3CX's "never" (0001-01-01)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, datetime):
        moment = value
    else:
        text = str(value).strip()
        moment_or_none: datetime | None = None
        try:
            # RFC 3339 allows a lower-case t and z.
            moment_or_none = datetime.fromisoformat(text.upper().replace("Z", "+00:00"))
        except ValueError:
            for fmt in _DATE_FORMATS:
                try:
                    moment_or_none = datetime.strptime(text, fmt)
                    break
                except ValueError:
                    continue
        if moment_or_none is None:
            raise ValueError("not a time; send ISO 8601 UTC, e.g. 2024-05-01T10:00:00Z")
        moment = moment_or_none
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)  # the template sends *UTC times
    moment = moment.astimezone(UTC)
    return None if moment < _EARLIEST else moment


def clean_number(value: str) -> str:
    """The number as 3CX meant it: a `+` sent unescaped in a query string arrives as a space."""
    text = value.strip(" \t\r\n")
    if value[:1] == " " and text[:1].isdigit():
        return "+" + text
    return text


def _text_or_integer(max_length: int) -> WithJsonSchema:
    """The schema of a text field that also takes a JSON integer (the model turns it into
    text), as the OpenAPI document should tell it."""
    return WithJsonSchema(
        {
            "type": ["string", "integer", "null"],
            "maxLength": max_length,
            # As text the integer must fit max_length too, sign included.
            "maximum": 10**max_length - 1,
            "minimum": -(10 ** (max_length - 1) - 1),
        }
    )


def _integer_as_text(value: Any) -> Any:
    """A JSON integer (also one written 65.0) as its text; anything else unchanged."""
    if isinstance(value, bool):  # JSON true is no number
        return value
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return value


_DURATION_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {"type": "number", "minimum": 0, "maximum": _MAX_DURATION.total_seconds()},
        {
            "type": "string",
            "pattern": r"^([0-9]{1,5}(\.[0-9]+)?|([01]?[0-9]|2[0-3]):[0-5]?[0-9]:[0-5]?[0-9]"
            r"(\.[0-9]+)?|[0-5]?[0-9]:[0-5][0-9])$",
        },
        # Left empty or as its own text by 3CX: absent, 0.
        {"type": "string", "pattern": r"^\s*$"},
        {"type": "string", "pattern": f"^\\s*{_UNRENDERED_TEXT}\\s*$"},
        {"type": "null"},
    ],
    "description": "Seconds, or hh:mm:ss / mm:ss as 3CX renders [Duration]",
}
# A time 3CX may leave empty, or as the variable's own text; both count as absent.
_OPTIONAL_TIME_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {"type": "string", "format": "date-time"},
        {"type": "string", "pattern": r"^\s*$"},
        {"type": "string", "pattern": f"^\\s*{_UNRENDERED_TEXT}\\s*$"},
        {"type": "null"},
    ]
}
_START_PATTERN = (
    r"^(197[1-9]|19[89][0-9]|[2-9][0-9]{3})-(0[1-9]|1[0-2])-"
    r"(0[1-9]|1[0-9]|2[0-8])T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](Z|[+-]0[0-9]:00)$"
)


class JournalEntry(BaseModel):
    """One `ReportCall`: field names in any case (`CallType`, `callType`, `call_type`)."""

    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)

    call_type: CallType
    # None for a withheld or anonymous caller: the call is journaled all the same.
    number: Annotated[str | None, _text_or_integer(64)] = Field(default=None, max_length=64)
    name: str | None = Field(default=None, max_length=200)
    agent: Annotated[str | None, _text_or_integer(64)] = Field(default=None, max_length=64)
    agent_email: str | None = Field(default=None, max_length=200)
    agent_first_name: str | None = Field(default=None, max_length=100)
    agent_last_name: str | None = Field(default=None, max_length=100)
    # Talk seconds for answered calls: a number, or text as 3CX renders it ("00:01:05").
    duration: Annotated[float, WithJsonSchema(_DURATION_SCHEMA)] = Field(
        default=0.0, ge=0, le=_MAX_DURATION.total_seconds()
    )
    # 3CX renders "never" as .NET's DateTime.MinValue: a start before 1971 is no start.
    start: datetime = Field(json_schema_extra={"pattern": _START_PATTERN})
    answered: Annotated[datetime | None, WithJsonSchema(_OPTIONAL_TIME_SCHEMA)] = None
    end: Annotated[datetime | None, WithJsonSchema(_OPTIONAL_TIME_SCHEMA)] = None
    entity_id: Annotated[str | None, _text_or_integer(200)] = Field(default=None, max_length=200)
    entity_type: str | None = Field(default=None, max_length=100)
    queue: Annotated[str | None, _text_or_integer(64)] = Field(default=None, max_length=64)
    call_id: Annotated[str | None, _text_or_integer(128)] = Field(default=None, max_length=128)

    @model_validator(mode="before")
    @classmethod
    def _canonical_keys(cls, raw: Any) -> Any:
        if not isinstance(raw, dict):
            return raw
        out: dict[str, Any] = {}
        for key, value in raw.items():
            name = _ALIASES.get(_NON_KEY.sub("", str(key).lower()))
            if name is None:
                continue
            if isinstance(value, str) and (not value.strip() or is_unrendered(value)):
                value = None  # 3CX renders a variable it has no value for as "" or as itself
            if value is not None or name not in out:
                out[name] = value
        return out

    @field_validator("call_type", mode="before")
    @classmethod
    def _call_type(cls, value: Any) -> CallType:
        found = _CALL_TYPES.get(_NON_KEY.sub("", str(value or "").lower()))
        if found is None:
            names = ", ".join(t.value for t in CallType)
            raise ValueError(f"call type must be one of {names}")
        return found

    @field_validator("number", mode="before")
    @classmethod
    def _number(cls, value: Any) -> Any:
        value = _integer_as_text(value)
        if isinstance(value, str):
            value = clean_number(value)
            if not digits_only(value):
                return None  # `Anonymous`, `Withheld`: a caller with no number, not an error
        return value

    @field_validator("agent", "queue", "call_id", "entity_id", mode="before")
    @classmethod
    def _text(cls, value: Any) -> Any:
        return _integer_as_text(value)

    @field_validator("duration", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> float:
        return parse_duration(value)

    @field_validator("start", "answered", "end", mode="before")
    @classmethod
    def _time(cls, value: Any) -> datetime | None:
        return parse_time(value)


def journal_call_id(entry: JournalEntry) -> str:
    """Stable across retries of the same entry, distinct for distinct calls."""
    if entry.call_id:
        return f"3cx-{_SAFE_ID.sub('_', entry.call_id)}"
    key = "|".join(
        [
            entry.start.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S"),
            digits_only(entry.number or ""),
            entry.agent or "",
            entry.call_type.value,
        ]
    )
    return "3cx-" + hashlib.sha256(key.encode()).hexdigest()[:24]


@dataclass(frozen=True, slots=True)
class _Times:
    start: datetime
    answer: datetime | None
    end: datetime
    talk: float


def _times(entry: JournalEntry) -> _Times:
    start = entry.start
    if entry.call_type.answered:
        duration = timedelta(seconds=entry.duration)
        answer = entry.answered or (entry.end - duration if entry.end else start)
        answer = max(answer, start)
        end = max(entry.end or answer + duration, answer)
        # With both times sent they are the talk time; [Duration] only fills a gap.
        if entry.answered and entry.end:
            talk = (end - answer).total_seconds()
        else:
            talk = entry.duration or (end - answer).total_seconds()
        return _Times(start, answer, end, round(talk, 3))
    # For a call nobody answered the duration is how long it rang.
    end = max(entry.end or start + timedelta(seconds=entry.duration), start)
    return _Times(start, None, end, 0.0)


def build_call_events(entry: JournalEntry, *, pbx_id: str) -> list[CallEvent]:
    """The lifecycle steps of one journal entry, seq 1.., each with the call as at that step."""
    call_id = journal_call_id(entry)
    t = _times(entry)
    kind = entry.call_type
    inbound = kind.inbound
    base = Call(
        call_id=call_id,
        pbx_id=pbx_id,
        source=SOURCE,
        direction=Direction.INBOUND if inbound else Direction.OUTBOUND,
        caller_number=entry.number if inbound else entry.agent,
        caller_name=entry.name if inbound else None,
        called_number=None if inbound else entry.number,
        agent_extension=entry.agent,
        rang_extensions=[entry.agent] if inbound and entry.agent else [],
        start_time=t.start,
        queue=entry.queue,
    )
    answered = base
    if t.answer is not None:
        answered = base.model_copy(
            update={
                "answer_time": t.answer,
                "ring_seconds": round((t.answer - t.start).total_seconds(), 3),
            }
        )
    ring = (t.answer or t.end) - t.start
    finished = answered.model_copy(
        update={
            "end_time": t.end,
            "ring_seconds": round(ring.total_seconds(), 3),
            "talk_seconds": t.talk,
            "disposition": Disposition.ANSWERED if kind.answered else Disposition.NO_ANSWER,
        }
    )
    details = {
        key: value
        for key, value in {
            "call_type": kind.value,
            "name": entry.name,
            "agent_email": entry.agent_email,
            "agent_name": " ".join(p for p in (entry.agent_first_name, entry.agent_last_name) if p)
            or None,
            "entity_id": entry.entity_id,
            "entity_type": entry.entity_type,
        }.items()
        if value
    }

    steps: list[tuple[EventKind, datetime, Call, str | None, dict[str, object]]] = []
    if inbound and entry.agent:
        steps.append((EventKind.RINGING, t.start, base, entry.agent, {}))
    if t.answer is not None:
        steps.append((EventKind.ANSWERED, t.answer, answered, entry.agent, {}))
    if entry.agent and (inbound or t.answer is not None):
        # Every card a RINGING or ANSWERED opened for the agent is closed (as for Asterisk).
        leg: dict[str, object] = {"reason": "completed", "answered": t.answer is not None}
        if t.answer is None:
            leg["reason"] = "abandoned" if kind is CallType.MISSED else "no-answer"
        steps.append((EventKind.LEG_ENDED, t.end, finished, entry.agent, leg))
    steps.append((EventKind.HANGUP, t.end, finished, None, {}))
    if kind is CallType.MISSED:
        steps.append((EventKind.DROPPED, t.end, finished, None, {}))
    completed = finished.model_copy(update={"ended": True})
    steps.append((EventKind.COMPLETED, t.end, completed, None, {"3cx": details}))
    return [
        CallEvent(call_id=call_id, seq=seq, kind=step, at=at, call=call, extension=ext, data=data)
        for seq, (step, at, call, ext, data) in enumerate(steps, start=1)
    ]


@dataclass(frozen=True, slots=True)
class JournalOutcome:
    call_id: str
    duplicate: bool  # the entry was recorded before (a 3CX retry): nothing new was sent
    events: list[CallEvent]


_LOCKS: weakref.WeakKeyDictionary[Pipeline, asyncio.Lock] = weakref.WeakKeyDictionary()


def threecx_lock(pipeline: Pipeline) -> asyncio.Lock:
    """One lock for 3CX writes that number steps from the store (journal entries and notes):
    two of them at once for one call would both pick the same next seq."""
    lock = _LOCKS.get(pipeline)
    if lock is None:
        lock = _LOCKS[pipeline] = asyncio.Lock()
    return lock


async def record_journal_entry(pipeline: Pipeline, entry: JournalEntry) -> JournalOutcome:
    """Store the call and queue its steps for every dialect; a repeated entry is a no-op."""
    events = build_call_events(entry, pbx_id=pipeline.pbx_id)
    call_id = events[0].call_id
    async with threecx_lock(pipeline):
        if await pipeline.store.get_call(pipeline.pbx_id, call_id) is not None:
            log.info("3cx journal entry for call %s already recorded: ignored", call_id)
            return JournalOutcome(call_id, True, [])
        await pipeline.add_call_events(events)
    log.info(
        "3cx call %s journaled: %s number=%s agent=%s steps=%s",
        call_id,
        entry.call_type.value,
        entry.number,
        entry.agent,
        ",".join(event.kind.value for event in events),
    )
    return JournalOutcome(call_id, False, events)
