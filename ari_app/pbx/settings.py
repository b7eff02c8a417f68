"""The `[pbx]` section: which switch to follow and how to reach it."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from ari_app.pbx.extension_owner import parse_extension_range
from crm.secrets import Secret


class AmiSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(default=5038, ge=1, le=65535)
    username: str = "pbxcrm"
    password: Secret = Field(default_factory=lambda: SecretStr(""))
    ping_interval_seconds: float = Field(default=10.0, gt=0)
    ping_timeout_seconds: float = Field(default=5.0, gt=0)
    # Reconnect backoff: the first retry after about `reconnect_initial_seconds`, doubling
    # (with jitter) up to `reconnect_max_seconds`.
    reconnect_initial_seconds: float = Field(default=0.5, gt=0, le=60)
    reconnect_max_seconds: float = Field(default=60.0, gt=0, le=60)
    action_timeout_seconds: float = Field(default=10.0, gt=0)
    connect_timeout_seconds: float = Field(default=5.0, gt=0)


class AriSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = "http://127.0.0.1:8088"
    username: str = "pbxcrm"
    password: Secret = Field(default_factory=lambda: SecretStr(""))
    app: str = "pbxcrm"
    subscribe_all: bool = True
    # Reconnect backoff: first retry after about `reconnect_initial_seconds`, doubling (with
    # jitter) up to `reconnect_max_seconds`.
    reconnect_initial_seconds: float = Field(default=0.5, gt=0, le=60)
    reconnect_max_seconds: float = Field(default=60.0, gt=0, le=60)
    request_timeout_seconds: float = Field(default=10.0, gt=0)
    # Websocket ping interval: a PBX that vanished without closing TCP is noticed this fast.
    ping_interval_seconds: float = Field(default=20.0, gt=0)
    # Click-to-call through POST /ari/channels instead of an AMI Originate.
    originate: bool = False


class PbxSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = "default"  # names this switch in the store when several share one
    source: Literal["ami", "ari"] = "ami"
    ami: AmiSettings = Field(default_factory=AmiSettings)
    ari: AriSettings = Field(default_factory=AriSettings)
    # Agent extensions of this PBX ("7000-7999" or "101"), published to the shared store so a
    # click-to-call taken by another instance is relayed here (docs/originate-relay.md).
    extensions: list[str] = Field(default_factory=list)
    # How often this instance looks for click-to-calls queued for its PBX by other instances,
    # and how long such a request may wait before it fails instead of ringing late.
    relay_poll_seconds: float = Field(default=1.0, gt=0, le=60)
    relay_max_age_seconds: float = Field(default=60.0, gt=0)

    @field_validator("extensions")
    @classmethod
    def _ranges_parse(cls, value: list[str]) -> list[str]:
        return [parse_extension_range(text).text for text in value]
