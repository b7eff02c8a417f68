"""The `[agi]` section: the FastAGI listener and the IVR scripts' behaviour."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator


class CallerCheckSettings(BaseModel):
    """`[agi.caller_check]`: cal4care-style "is this caller known?"."""

    model_config = ConfigDict(extra="forbid")

    # Read when the dialplan passes no number argument (recorded: GET VARIABLE CALLERID(num)).
    number_variable: str = "CALLERID(num)"


class CrmLookupSettings(BaseModel):
    """`[agi.crm_lookup]`: jtel-style lookup whose JSON becomes channel variables."""

    model_config = ConfigDict(extra="forbid")

    source: str = ""  # name of the [[lookup]] block to ask; "" = the whole lookup chain
    variable_prefix: str = "CRM"
    max_variables: int = Field(default=64, ge=1, le=1000)
    max_value_bytes: int = Field(default=256, ge=8, le=4096)
    # ServiceName per DID (jtel's ServiceNumbers.Name2); unknown DIDs send "".
    service_names: dict[str, str] = Field(default_factory=dict)


class SurveySettings(BaseModel):
    """`[agi.survey]`: Salesforce saveSurvey rating by DTMF."""

    model_config = ConfigDict(extra="forbid")

    intro_prompts: list[str] = Field(default_factory=lambda: ["beep"])
    question_prompt: str = "beep"
    invalid_prompt: str = "option-is-invalid"
    thanks_prompt: str = "auth-thankyou"
    min_digit: int = Field(default=1, ge=0, le=9)
    max_digit: int = Field(default=9, ge=0, le=9)
    timeout_ms: int = Field(default=5000, ge=500, le=60000)
    attempts: int = Field(default=3, ge=1, le=10)
    result_variable: str = "SURVEY_RESULT"
    # Where the agent's extension is when the dialplan does not pass it as the third argument.
    extension_variable: str = "SURVEY_AGENT"
    question: str = "q1"  # used when the dialplan passes no question argument

    @model_validator(mode="after")
    def _range(self) -> SurveySettings:
        if self.min_digit > self.max_digit:
            raise ValueError("min_digit must not be greater than max_digit")
        return self


class AgiSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(default=4573, ge=0, le=65535)
    lookup_budget_seconds: float = Field(default=2.0, gt=0)
    # A connection that has not sent its whole agi_* block by then is dropped (port scans).
    env_timeout_seconds: float = Field(default=5.0, gt=0)
    # Longest wait for one reply; GET DATA waits for a human, so keep it above timeout_ms.
    reply_timeout_seconds: float = Field(default=120.0, gt=0)
    # Hard cap of one whole session, so nothing can pin a connection forever.
    session_timeout_seconds: float = Field(default=600.0, gt=0)
    max_sessions: int = Field(default=500, ge=1)
    # pbxcrm-agi (classic AGI) hands each session to this listener when `pbxcrm run` answers
    # there: a process per call that runs the scripts itself costs ~10x a bare pyst2 script.
    classic_via_daemon: bool = Field(default=True, strict=True)
    # Classic AGI run in its own process cannot reach pbxcrm's outbox: it appends survey
    # results here (JSON lines) for `pbxcrm run` to pick up.
    survey_spool: Path = Path("var/pbxcrm-survey-spool.jsonl")
    caller_check: CallerCheckSettings = Field(default_factory=CallerCheckSettings)
    crm_lookup: CrmLookupSettings = Field(default_factory=CrmLookupSettings)
    survey: SurveySettings = Field(default_factory=SurveySettings)
