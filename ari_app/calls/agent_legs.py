"""How one agent leg of a call ended, in the words a CRM pop-up needs (crm.model.LEG_END_REASONS).

Every agent leg that rang or talked gets exactly one LEG_ENDED step, so a CRM that opened a card
for it on RINGING (Creatio, FixDigital, the screen pop) can always close it.
"""

from __future__ import annotations

# Q.850 cause 26, "Non-selected user clearing": Asterisk's "Answered elsewhere".
ANSWERED_ELSEWHERE_CAUSE = 26

_BY_DIAL_STATUS = {
    "BUSY": "busy",
    "NOANSWER": "no-answer",
    "CANCEL": "abandoned",
    "CHANUNAVAIL": "failed",
    "CONGESTION": "failed",
    "INVALIDARGS": "failed",
    "DONTCALL": "failed",
}


def leg_end_reason(
    *,
    talked: bool,
    transferred: bool,
    answered_elsewhere: bool,
    own_dial_status: str | None,
    call_dial_status: str | None,
    caller_gave_up: bool,
) -> str:
    if talked:
        return "transferred" if transferred else "completed"
    if answered_elsewhere:
        return "answered-elsewhere"
    status = own_dial_status
    if status is None or status == "ANSWER":
        # It rang and was picked up (a click-to-call's agent leg) or no dial result names it:
        # the call's own outcome is the leg's.
        status = call_dial_status if call_dial_status != "ANSWER" else None
    if status in _BY_DIAL_STATUS:
        return _BY_DIAL_STATUS[status]
    return "abandoned" if caller_gave_up else "no-answer"
