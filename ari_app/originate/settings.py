"""The `[http.originate]` section: how a click-to-call is dialled and what it may dial."""

from __future__ import annotations

import re
from typing import Literal

import phonenumbers
from pydantic import BaseModel, ConfigDict, Field, field_validator


class FraudRules(BaseModel):
    """What a click-to-call may dial. Defaults are strict: one country, no premium ranges.

    Countries are regions (ISO codes as phonenumbers names them), not calling codes: +7 is
    Russia and Kazakhstan, +1 is some twenty countries.
    """

    model_config = ConfigDict(extra="forbid")

    # The agent extension must match this; empty means `[calls] internal_extension_pattern`.
    agent_pattern: str = ""
    # Numbers without a country code are read as numbers of this region (phonenumbers code).
    default_region: str = "RU"
    # The regions a click-to-call may reach (phonenumbers' region of the dialled number).
    allowed_regions: list[str] = Field(default_factory=lambda: ["RU"])
    # phonenumbers number types refused in every region ...
    blocked_number_types: list[str] = Field(
        default_factory=lambda: ["PREMIUM_RATE", "SHARED_COST", "UAN", "VOIP", "PAGER"]
    )
    # ... unless the region has its own list here (e.g. { DE = ["PREMIUM_RATE"] }).
    blocked_number_types_by_region: dict[str, list[str]] = Field(default_factory=dict)
    # The old calling-code rule: accepted by name only to tell the admin what to write.
    allowed_country_codes: list[int] | None = Field(default=None, exclude=True)
    # E.164 prefixes refused (e.g. "+7809" for ranges the operator bills as premium).
    blocked_prefixes: list[str] = Field(default_factory=list)
    # How the number is handed to the dialplan, before `dial_prefix` is prepended.
    # national: "89161234567" for +79161234567 (national format, digits only);
    # e164: "+79161234567"; e164_digits: "79161234567".
    dial_format: Literal["national", "e164", "e164_digits"] = "national"
    dial_prefix: str = Field(default="", pattern=r"^[0-9*#+]*$")

    @field_validator("agent_pattern")
    @classmethod
    def _compiles(cls, value: str) -> str:
        if value:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"not a valid regular expression: {exc}") from None
        return value

    @field_validator("allowed_country_codes")
    @classmethod
    def _old_country_codes(cls, codes: list[int] | None) -> None:
        # Calling codes cannot be turned into regions safely (+7 is two countries): say what
        # to write instead of guessing.
        if codes is None:
            return None
        hints = "; ".join(
            f"+{code} is {', '.join(phonenumbers.region_codes_for_country_code(code)) or '-'}"
            for code in codes
        )
        raise ValueError(
            "replaced by allowed_regions, a list of region codes (e.g. allowed_regions = "
            f'["RU"]): {hints} - list only the countries you mean'
        )

    @field_validator("default_region")
    @classmethod
    def _known_region(cls, value: str) -> str:
        return _region(value)

    @field_validator("allowed_regions")
    @classmethod
    def _known_regions(cls, value: list[str]) -> list[str]:
        return [_region(region) for region in value]

    @field_validator("blocked_number_types")
    @classmethod
    def _known_types(cls, value: list[str]) -> list[str]:
        return _number_types(value)

    @field_validator("blocked_number_types_by_region")
    @classmethod
    def _known_region_types(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        return {_region(region): _number_types(types) for region, types in value.items()}

    def blocked_types_in(self, region: str) -> list[str]:
        return self.blocked_number_types_by_region.get(region, self.blocked_number_types)


def _region(value: str) -> str:
    if value.upper() not in phonenumbers.SUPPORTED_REGIONS:
        raise ValueError(f"unknown region code {value!r} (use ISO codes like RU, IL, DE)")
    return value.upper()


def _number_types(value: list[str]) -> list[str]:
    for name in value:
        if not hasattr(phonenumbers.PhoneNumberType, name.upper()):
            raise ValueError(f"unknown phonenumbers number type {name!r}")
    return [name.upper() for name in value]


class OriginateSettings(BaseModel):
    """How a click-to-call becomes an AMI Originate (shape of the recorded .sent.ami files)."""

    model_config = ConfigDict(extra="forbid")

    channel_template: str = "PJSIP/{extension}"
    context: str = "from-internal"
    priority: int = Field(default=1, ge=1)
    caller_id_template: str = '"Click-to-call {number}" <{extension}>'
    # How long the agent's phone rings before Asterisk gives up (Originate `Timeout`).
    ring_seconds: float = Field(default=30.0, gt=0, le=300)
    # Give up waiting for OriginateResponse this long after the ring timeout (lost connection).
    outcome_grace_seconds: float = Field(default=30.0, gt=0)
    fraud: FraudRules = Field(default_factory=FraudRules)
