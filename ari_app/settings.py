"""The whole config file: each package owns its section model; this only composes them."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from agi.settings import AgiSettings
from ari_app.call_rules import CallRules
from ari_app.http.settings import HttpSettings
from ari_app.pbx_settings import PbxSettings
from crm.adapters.base import AdapterConfig, parse_adapter_config
from crm.recordings.settings import RecordingsSettings, apply_recordings
from crm.store_settings import OutboxSettings, StoreSettings


class LoggingSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    level: str = "INFO"
    format: str = "text"  # text | json


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    pbx: PbxSettings = Field(default_factory=PbxSettings)
    calls: CallRules = Field(default_factory=CallRules)
    store: StoreSettings = Field(default_factory=StoreSettings)
    outbox: OutboxSettings = Field(default_factory=OutboxSettings)
    http: HttpSettings = Field(default_factory=HttpSettings)
    agi: AgiSettings = Field(default_factory=AgiSettings)
    logging: LoggingSettings = Field(default_factory=LoggingSettings)
    crm: list[AdapterConfig] = Field(default_factory=list)
    lookup: list[dict[str, Any]] = Field(default_factory=list)
    recordings: RecordingsSettings | None = None  # absent: links to MixMonitor's files as-is

    @model_validator(mode="after")
    def _recordings(self) -> Settings:
        apply_recordings(self.recordings, self.calls, self.crm)
        return self

    @field_validator("lookup")
    @classmethod
    def _lookup_blocks(cls, value: list[dict[str, Any]]) -> list[dict[str, Any]]:
        from crm.lookup.chain import parse_lookup_config

        names: set[str] = set()
        for raw in value:
            config = parse_lookup_config(raw)  # a mistake is reported at load, with its line
            name = config.name or config.type
            if name in names:
                raise ValueError(f"two [[lookup]] blocks are named {name!r}")
            names.add(name)
        return value

    @field_validator("crm", mode="before")
    @classmethod
    def _dialects(cls, value: Any) -> Any:
        if not isinstance(value, list):
            return value
        return [
            item if isinstance(item, AdapterConfig) else parse_adapter_config(item)
            for item in value
        ]

    @field_validator("crm")
    @classmethod
    def _unique_names(cls, value: list[AdapterConfig]) -> list[AdapterConfig]:
        seen: set[str] = set()
        for adapter in value:
            if adapter.name in seen:
                raise ValueError(f"two [[crm]] blocks are named {adapter.name!r}")
            seen.add(adapter.name)
        return value


class ConfigError(Exception):
    """A config mistake, worded for a PBX admin: file, line, key and what is wrong."""


def _line_of(text: str, loc: tuple[int | str, ...]) -> int | None:
    """Best-effort line number of a dotted key in TOML text (array items counted in order)."""
    lines = text.splitlines()
    section: list[str] = []
    array_counts: dict[str, int] = {}
    target_table = [str(p) for p in loc[:-1]]
    key = str(loc[-1]) if loc else ""
    for number, raw in enumerate(lines, start=1):
        line = raw.strip()
        if line.startswith("[["):
            name = line.strip("[] ")
            array_counts[name] = array_counts.get(name, -1) + 1
            section = [*name.split("."), str(array_counts[name])]
            continue
        if line.startswith("["):
            section = line.strip("[] ").split(".")
            continue
        if "=" in line and not line.startswith("#"):
            name = line.split("=", 1)[0].strip().strip('"')
            if name == key and section == target_table:
                return number
    # Fall back to the table header the key belongs to.
    for number, raw in enumerate(lines, start=1):
        if raw.strip().strip("[] ") == ".".join(p for p in target_table if not p.isdigit()):
            return number
    return None


def load_settings(path: str | Path) -> Settings:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc.strerror}") from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    try:
        return Settings.model_validate(raw)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            loc = tuple(error["loc"])
            dotted = ".".join(str(p) for p in loc)
            line = _line_of(text, loc) if loc else None
            where = f"{path}:{line}" if line else str(path)
            problems.append(f"{where}: {dotted or '(top level)'}: {error['msg']}")
        raise ConfigError("\n".join(problems)) from None
    except ValueError as exc:
        raise ConfigError(f"{path}: {exc}") from None
