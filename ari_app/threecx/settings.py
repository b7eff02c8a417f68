"""The `[http.threecx]` section: how pbxcrm answers a 3CX (DBN queries and the CRM template)."""

from __future__ import annotations

import phonenumbers
from pydantic import BaseModel, ConfigDict, Field, field_validator

_URL_FIELDS = ("{number}", "{digits}", "{id}")


class ThreeCxSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Screen-pop URL for a contact the lookup found without a URL of its own; empty: none.
    # Placeholders: {number} (as 3CX sent it), {digits}, {id} (the contact's id).
    contact_url_template: str = ""
    # A DBN note is attached to the caller's most recent call only if that call started
    # within this many hours; an older call is another conversation, so the note stands alone.
    note_call_window_hours: float = Field(default=12.0, gt=0)
    # Numbers without a country code are read as numbers of this region (phonenumbers code).
    # Empty: `[http.originate.fraud] default_region`.
    default_region: str = ""

    @field_validator("contact_url_template")
    @classmethod
    def _known_placeholders(cls, value: str) -> str:
        try:
            value.format(number="", digits="", id="")
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(
                f"contact_url_template: use only {', '.join(_URL_FIELDS)} ({exc!r})"
            ) from None
        return value

    @field_validator("default_region")
    @classmethod
    def _known_region(cls, value: str) -> str:
        if value and value.upper() not in phonenumbers.SUPPORTED_REGIONS:
            raise ValueError(f"unknown region code {value!r} (use ISO codes like RU, IL, DE)")
        return value.upper()
