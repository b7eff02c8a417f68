"""The `[store]` and `[outbox]` sections."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class StoreSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str = "var/pbxcrm.sqlite3"
    # Group commit: the writer gathers what arrives within this window into one transaction.
    commit_window_ms: float = Field(default=2.0, ge=0)
    max_batch: int = Field(default=2000, ge=1)


class OutboxSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    base_delay_seconds: float = Field(default=1.0, gt=0)
    max_delay_seconds: float = Field(default=300.0, gt=0)
    poll_interval_seconds: float = Field(default=1.0, gt=0)
    claim_batch: int = Field(default=200, ge=1)
