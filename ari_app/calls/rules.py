"""The `[calls]` section: how channels are told apart (trunk vs agent) and what a call carries."""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator

from ari_app.calls.recording_links import RecordingLinkSigner, template_problem


class CallRules(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # A channel is a trunk (outside world) when its endpoint or its context matches.
    trunk_endpoints: list[str] = Field(default_factory=lambda: ["trunk"])
    trunk_contexts: list[str] = Field(default_factory=lambda: ["from-trunk", "from-pstn"])
    # Agent phones: endpoint names (the part after PJSIP/ or SIP/) matching this pattern.
    internal_extension_pattern: str = r"^\d{2,5}$"
    # `{file}` is the recording's file name, `{call_id}` the call, `{pbx_id}` the switch,
    # `{signature}` a link that opens this one recording for `recording_link_days`
    # (ari_app/calls/recording_links.py).
    recording_url_template: str = "http://127.0.0.1:8080/{signature}/recording/{file}"
    recording_link_days: float = Field(default=7.0, gt=0, le=3650)
    recording_dir: str = "/var/spool/asterisk/monitor"
    # A call with no event for this long is closed as reconciled (a lost Hangup).
    stale_call_seconds: float = Field(default=4 * 3600, gt=0)
    # How often the moment open calls were last seen alive is stored: a call that ends while
    # pbxcrm is down is closed at that moment after the restart (`end_estimated`), so its
    # talk time is short by at most this much plus the downtime.
    heartbeat_seconds: float = Field(default=5.0, gt=0)
    # pbxcrm's own link key: never from the config file, handed in by whoever starts the
    # pipeline (`with_recording_key`).
    _recording_key: bytes | None = PrivateAttr(default=None)

    def with_recording_key(self, key: bytes) -> CallRules:
        rules = self.model_copy()
        rules._recording_key = key
        return rules

    @property
    def recording_links(self) -> RecordingLinkSigner | None:
        if self._recording_key is None:
            return None
        return RecordingLinkSigner(self._recording_key, self.recording_link_days * 86400.0)

    @field_validator("recording_url_template")
    @classmethod
    def _template(cls, value: str) -> str:
        problem = template_problem(value)
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("internal_extension_pattern")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a valid regular expression: {exc}") from None
        return value
