"""The `[http.agent]` section: the agent screen pop at `/agent` (who may sign in, what it shows)."""

from __future__ import annotations

from ipaddress import IPv4Network, IPv6Network
from typing import Literal

import phonenumbers
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from crm.secrets import Secret

Network = IPv4Network | IPv6Network
_ANYWHERE: list[Network] = [IPv4Network("0.0.0.0/0"), IPv6Network("::/0")]
_URL_FIELDS = ("{number}", "{digits}")


class AgentLogin(BaseModel):
    """One extension that may sign in to the screen pop, with a PIN, a token or both."""

    model_config = ConfigDict(extra="forbid")

    extension: str = Field(pattern=r"^[0-9A-Za-z_*#+-]{1,32}$")
    name: str = Field(default="", max_length=80)
    # Typed on the sign-in form; digits only. Pick 6 or more: every secret is also starred
    # out of the logs, and a short PIN would star out call ids that happen to contain it.
    pin: Secret | None = None
    # For a bookmark (`/agent#token=...`: the fragment never reaches a server or a log).
    token: Secret | None = None

    @model_validator(mode="after")
    def _has_secret(self) -> AgentLogin:
        if self.pin is None and self.token is None:
            raise ValueError(f"agent {self.extension!r} needs a pin or a token")
        if self.pin is not None:
            pin = self.pin.get_secret_value()
            if not pin.isascii() or not pin.isdigit() or len(pin) < 4:
                raise ValueError(f"agent {self.extension!r}: pin must be 4 or more digits")
        if self.token is not None and len(self.token.get_secret_value()) < 16:
            raise ValueError(f"agent {self.extension!r}: token must be at least 16 characters")
        return self


CardDirection = Literal["inbound", "outbound", "internal"]


def _inbound_and_outbound() -> list[CardDirection]:
    return ["inbound", "outbound"]


class AgentSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    agents: list[AgentLogin] = Field(default_factory=list)
    # Where browsers may sign in from (the direct peer, or X-Forwarded-For behind a trusted
    # proxy as for every other route).
    allow_from: list[Network] = Field(default_factory=lambda: list(_ANYWHERE))
    session_hours: float = Field(default=12.0, gt=0, le=24 * 30)
    # Mark the session cookie Secure: set this when browsers reach pbxcrm over HTTPS.
    cookie_secure: bool = False
    # Wrong PINs/tokens for one extension (or from one address) before sign-in is refused
    # for `lockout_seconds`: a 4-digit PIN must not be guessable in an afternoon.
    max_failures: int = Field(default=5, ge=1, le=100)
    lockout_seconds: float = Field(default=300.0, gt=0)
    # Which calls get a card.
    directions: list[CardDirection] = Field(default_factory=_inbound_and_outbound)
    # How many earlier calls with the same number the card lists.
    history_limit: int = Field(default=5, ge=0, le=50)
    # An ended call's card stays (for the note) until dismissed or this old.
    keep_ended_minutes: float = Field(default=240.0, gt=0)
    # ... and only this many ended cards per agent are kept (the oldest goes first).
    max_ended_cards: int = Field(default=20, ge=1, le=1000)
    # Link to the CRM record when the lookup gave none: {number} (E.164 when it parses),
    # {digits}. Empty: no link.
    crm_url_template: str = ""
    # Numbers without a country code are read as numbers of this region. Empty:
    # `[http.originate.fraud] default_region`.
    default_region: str = ""
    # Click-to-call from the page, per signed-in agent (toll-fraud brake).
    dial_per_minute: int = Field(default=10, ge=1)

    @field_validator("agents")
    @classmethod
    def _unique(cls, value: list[AgentLogin]) -> list[AgentLogin]:
        seen: set[str] = set()
        for agent in value:
            if agent.extension in seen:
                raise ValueError(f"two [[http.agent.agents]] have extension {agent.extension!r}")
            seen.add(agent.extension)
        tokens = [a.token.get_secret_value() for a in value if a.token is not None]
        if len(tokens) != len(set(tokens)):
            raise ValueError("two [[http.agent.agents]] share a token")
        return value

    @field_validator("crm_url_template")
    @classmethod
    def _known_placeholders(cls, value: str) -> str:
        try:
            value.format(number="", digits="")
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(
                f"crm_url_template: use only {', '.join(_URL_FIELDS)} ({exc!r})"
            ) from None
        if value and not value.startswith(("https://", "http://", "/")):
            raise ValueError("crm_url_template must be an http(s) URL or a path")
        return value

    @field_validator("default_region")
    @classmethod
    def _known_region(cls, value: str) -> str:
        if value and value.upper() not in phonenumbers.SUPPORTED_REGIONS:
            raise ValueError(f"unknown region code {value!r} (use ISO codes like RU, IL, DE)")
        return value.upper()

    def login_for(self, extension: str) -> AgentLogin | None:
        for agent in self.agents:
            if agent.extension == extension:
                return agent
        return None
