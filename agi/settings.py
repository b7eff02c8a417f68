"""The `[agi]` section: the FastAGI listener and the IVR scripts' behaviour."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class AgiSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(default=4573, ge=0, le=65535)
    lookup_budget_seconds: float = Field(default=2.0, gt=0)
