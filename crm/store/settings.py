"""The `[store]` and `[outbox]` sections."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from crm.secrets import Secret


class StoreSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str = "var/pbxcrm.sqlite3"
    # `postgresql://user:password@host:5432/db` selects the PostgreSQL backend (several pbxcrm
    # instances, one per PBX, sharing one database); unset means SQLite at `path`. A Secret
    # because the URL usually carries the password (`env:PBXCRM_PG_URL` works).
    url: Secret | None = None
    # Connections each instance keeps open to PostgreSQL for reads and outbox claims (the
    # writer has one more of its own).
    pool_size: int = Field(default=4, ge=1)
    # Group commit: while writes keep coming, the writer gathers what arrives within this
    # window into one transaction; a write that finds it idle is committed at once.
    commit_window_ms: float = Field(default=2.0, ge=0)
    max_batch: int = Field(default=2000, ge=1)
    # NORMAL in WAL mode survives a crash or kill -9 of pbxcrm (the WAL is in the OS page cache
    # and is replayed on open); only a power loss or kernel crash can lose the last commits.
    # FULL fsyncs every commit and survives those too, at a cost in commits per second.
    synchronous: Literal["NORMAL", "FULL"] = "NORMAL"
    # How long a writer waits for another process (e.g. `pbxcrm outbox retry`) to release the
    # database lock before it reports an error.
    busy_timeout_ms: int = Field(default=10_000, ge=0)


class OutboxSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    base_delay_seconds: float = Field(default=1.0, gt=0)
    max_delay_seconds: float = Field(default=300.0, gt=0)
    poll_interval_seconds: float = Field(default=1.0, gt=0)
    claim_batch: int = Field(default=200, ge=1)
    # A Retry-After longer than this is treated as this long, so one odd header cannot park a
    # delivery for days.
    max_retry_after_seconds: float = Field(default=3600.0, gt=0)
    # On stop, deliveries in flight get this long to finish before they are cancelled (a
    # cancelled delivery stays pending and is sent again, with the same key, after restart).
    stop_grace_seconds: float = Field(default=5.0, ge=0)
    # PostgreSQL only: a claimed delivery belongs to its instance this long, renewed every
    # lease/3 while the instance holds it. If the instance dies, another one takes the row
    # over once the last renewal has run out.
    lease_seconds: float = Field(default=60.0, gt=0)
