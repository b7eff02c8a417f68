"""The `[calls]` section: how channels are told apart (trunk vs agent) and what a call carries."""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, field_validator


class CallRules(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # A channel is a trunk (outside world) when its endpoint or its context matches.
    trunk_endpoints: list[str] = Field(default_factory=lambda: ["trunk"])
    trunk_contexts: list[str] = Field(default_factory=lambda: ["from-trunk", "from-pstn"])
    # Agent phones: endpoint names (the part after PJSIP/ or SIP/) matching this pattern.
    internal_extension_pattern: str = r"^\d{2,5}$"
    # `{file}` is the recording's file name, `{call_id}` the call, `{pbx_id}` the switch.
    recording_url_template: str = "http://127.0.0.1:8080/recordings/{file}"
    recording_dir: str = "/var/spool/asterisk/monitor"
    # A call with no event for this long is closed as reconciled (a lost Hangup).
    stale_call_seconds: float = Field(default=4 * 3600, gt=0)
    # How often the moment open calls were last seen alive is stored: a call that ends while
    # pbxcrm is down is closed at that moment after the restart (`end_estimated`), so its
    # talk time is short by at most this much plus the downtime.
    heartbeat_seconds: float = Field(default=5.0, gt=0)

    @field_validator("internal_extension_pattern")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a valid regular expression: {exc}") from None
        return value
