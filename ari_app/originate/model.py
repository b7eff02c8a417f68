"""What a click-to-call request is: its states, its record, and how sending one can fail."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from enum import StrEnum
from typing import Any, Protocol


class OriginateState(StrEnum):
    # Taken here for an extension of another PBX; that PBX's instance sends it (relay.py).
    QUEUED = "queued"
    PENDING = "pending"  # accepted, Originate not yet acknowledged by Asterisk
    RINGING_AGENT = "ringing_agent"  # Asterisk queued it and is ringing the agent
    CONNECTED = "connected"  # the agent answered; the dialplan now dials the client
    AGENT_NO_ANSWER = "agent_no_answer"
    AGENT_BUSY = "agent_busy"
    FAILED = "failed"
    # The call it made is over: `outcome`, `talk_seconds` and `call_id` say how it went.
    ENDED = "ended"


FINAL_STATES = frozenset(
    {
        OriginateState.CONNECTED,
        OriginateState.AGENT_NO_ANSWER,
        OriginateState.AGENT_BUSY,
        OriginateState.FAILED,
        OriginateState.ENDED,
    }
)


class OriginateRejected(Exception):
    """A click-to-call request refused before anything reached the PBX."""

    def __init__(self, field_name: str, message: str, *, status: int = 422) -> None:
        super().__init__(f"{field_name}: {message}")
        self.field = field_name
        self.message = message
        self.status = status


class PbxUnavailable(Exception):
    """The PBX could not take the Originate (not connected, or refused it)."""


class OutcomeUnknown(Exception):
    """Sent, but no answer came (timeout, connection lost): it may have run; never re-sent."""


@dataclass(slots=True)
class OriginateRecord:
    id: str
    agent_extension: str
    number: str  # E.164
    dial_number: str  # what went into the Originate's Exten
    client: str
    state: OriginateState = OriginateState.PENDING
    reason: str | None = None
    uniqueid: str | None = None  # the agent channel, once known
    created_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)
    source: str = "native"  # native | creatio | fixdigital
    client_ref: str | None = None  # the CRM's own id for this request (FixDigital ClientId)
    target_pbx_id: str | None = None  # set when queued for another PBX's instance to send
    # Once the call it made has ended (state ENDED): the call (Linkedid), how it went
    # (the call's disposition: answered | no-answer | busy | failed ...) and its talk time.
    call_id: str | None = None
    outcome: str | None = None
    talk_seconds: float | None = None
    ended_at: float | None = None

    def public(self) -> dict[str, Any]:
        # Every field is a scalar: asdict()'s recursive deep copy cost more than the rest of
        # building the answer.
        data = {name: getattr(self, name) for name in _RECORD_FIELDS}
        data["state"] = self.state.value
        return data


_RECORD_FIELDS = tuple(f.name for f in fields(OriginateRecord))


class OriginateBackend(Protocol):
    """Sends one Originate action; must never send it twice (even across a reconnect)."""

    async def originate(self, action: dict[str, str], *, timeout: float) -> Mapping[str, str]: ...
