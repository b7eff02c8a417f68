"""The call model every source produces and every CRM adapter consumes.

A `Call` is the whole conversation as the CRM sees it (one Asterisk Linkedid, joined with
consult calls on attended transfer, or one 3CX journal entry). A `CallEvent` is one
lifecycle step of it, carrying a snapshot of the call as it was at that step, so an adapter
never has to read the store.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Direction(StrEnum):
    INBOUND = "inbound"
    OUTBOUND = "outbound"
    INTERNAL = "internal"


class Disposition(StrEnum):
    ANSWERED = "answered"
    NO_ANSWER = "no-answer"
    BUSY = "busy"
    FAILED = "failed"
    ABANDONED = "abandoned"
    VOICEMAIL = "voicemail"


class Party(StrEnum):
    """Who ended the call: the outside/originating party, the agent, or the switch itself."""

    CALLER = "caller"
    AGENT = "agent"
    SYSTEM = "system"


class EventKind(StrEnum):
    RINGING = "ringing"  # one per agent leg that starts ringing
    ANSWERED = "answered"  # one per agent who talked (transfer targets too); `extension` says who
    HANGUP = "hangup"  # the conversation ended (all parties gone or first party left)
    VOICEMAIL = "voicemail"  # a message was left
    DROPPED = "dropped"  # inbound, never answered by anyone, no voicemail
    COMPLETED = "completed"  # final record, once the whole Linkedid has ended
    SURVEY = "survey"  # post-call survey rating from the IVR
    NOTE = "note"  # agent's status + comments (screen pop, 3CX DBN)
    # One per agent leg that got RINGING or ANSWERED, when that leg is over: `extension` says
    # whose, data["reason"] how (LEG_END_REASONS), data["answered"] whether that agent talked.
    LEG_ENDED = "leg_ended"


# How an agent leg ended. An agent who talked: "completed" (left at the call's end or hung
# up) or "transferred" (handed the caller on). One who only rang: "answered-elsewhere" (another
# agent or a pickup took the call), "no-answer", "busy", "abandoned" (the caller gave up while
# it rang), "failed".
LEG_END_REASONS = (
    "completed",
    "transferred",
    "answered-elsewhere",
    "no-answer",
    "busy",
    "abandoned",
    "failed",
)


class Transfer(BaseModel):
    model_config = ConfigDict(frozen=True)

    at: datetime
    kind: str  # "blind" | "attended"
    from_extension: str | None = None
    to_extension: str | None = None


class Call(BaseModel):
    call_id: str  # stable across the call: the Linkedid it started with
    pbx_id: str = "default"
    source: str = "ami"  # ami | ari | 3cx
    direction: Direction = Direction.INBOUND
    caller_number: str | None = None
    caller_name: str | None = None
    called_number: str | None = None  # the DID for inbound, the dialled number for outbound
    agent_extension: str | None = None  # who answered; for unanswered calls, who rang
    rang_extensions: list[str] = Field(default_factory=list)
    start_time: datetime | None = None  # always timezone-aware (UTC)
    answer_time: datetime | None = None
    end_time: datetime | None = None
    ring_seconds: float = 0.0
    talk_seconds: float = 0.0
    disposition: Disposition | None = None
    terminating_party: Party | None = None
    hangup_cause: int | None = None
    hangup_cause_text: str | None = None
    recording_file: str | None = None
    recording_url: str | None = None
    recording_error: str | None = None  # why there is no link: file missing, empty, broken
    queue: str | None = None
    transfers: list[Transfer] = Field(default_factory=list)
    voicemail: bool = False
    reconciled: bool = False  # closed by pbxcrm after a reconnect, not by a Hangup it saw
    originate_id: str | None = None  # click-to-call request that created it (CRM_CALL_ID)
    variables: dict[str, str] = Field(default_factory=dict)  # CRM_* channel variables seen
    ended: bool = False
    # pbxcrm did not see the call end (it was down or cut off from the PBX, or the Hangup was
    # lost): end_time is the last moment it knew the call alive, so the true end is later.
    end_estimated: bool = False


class CallEvent(BaseModel):
    """One lifecycle step; `seq` orders the steps of one call (1, 2, 3 ...)."""

    call_id: str
    seq: int
    kind: EventKind
    at: datetime
    call: Call
    extension: str | None = None  # the agent leg this step is about (ringing, answered)
    data: dict[str, Any] = Field(default_factory=dict)  # survey rating, note status/comments

    @property
    def event_id(self) -> str:
        """Stable across restarts and retries: the idempotency key's root."""
        return f"{self.call.pbx_id}:{self.call_id}:{self.seq}:{self.kind.value}"
