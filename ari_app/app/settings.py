"""The whole config file: each package owns its section model; this only composes them."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from agi.settings import AgiSettings
from ari_app.app.config_locator import TomlLines, describe_location
from ari_app.calls.rules import CallRules
from ari_app.pbx.settings import PbxSettings
from ari_app.web.settings import HttpSettings
from crm.dialects.base import AdapterConfig
from crm.dialects.registry import parse_adapter_config
from crm.recordings.settings import RecordingsSettings, apply_recordings
from crm.secrets import SECRET_UNAVAILABLE, SECRETS_CONTEXT_KEY
from crm.store.settings import OutboxSettings, StoreSettings


class LoggingSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    level: str = "INFO"
    format: str = "text"  # text | json


def _crm_block(value: Any, info: ValidationInfo) -> Any:
    # Validated one block at a time so a mistake is reported at its own index (crm.3...).
    if isinstance(value, AdapterConfig) or not isinstance(value, dict):
        return value
    return parse_adapter_config(value, info.context)


def _lookup_block(value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
    from crm.lookup.chain import parse_lookup_config

    parse_lookup_config(value, info.context)  # a mistake is reported at load, with its line
    return value


def _check_unique(section: str, names: list[Any]) -> None:
    first_index: dict[Any, int] = {}
    for index, name in enumerate(names):
        if name in first_index:
            raise ValueError(
                f"two [[{section}]] blocks are named {name!r} "
                f"({section}[{first_index[name]}] and {section}[{index}]): give each a name"
            )
        first_index[name] = index


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    pbx: PbxSettings = Field(default_factory=PbxSettings)
    calls: CallRules = Field(default_factory=CallRules)
    store: StoreSettings = Field(default_factory=StoreSettings)
    outbox: OutboxSettings = Field(default_factory=OutboxSettings)
    http: HttpSettings = Field(default_factory=HttpSettings)
    agi: AgiSettings = Field(default_factory=AgiSettings)
    logging: LoggingSettings = Field(default_factory=LoggingSettings)
    crm: list[Annotated[AdapterConfig, BeforeValidator(_crm_block)]] = Field(default_factory=list)
    lookup: list[Annotated[dict[str, Any], AfterValidator(_lookup_block)]] = Field(
        default_factory=list
    )
    recordings: RecordingsSettings | None = None  # absent: links to MixMonitor's files as-is

    @model_validator(mode="after")
    def _recordings(self) -> Settings:
        apply_recordings(self.recordings, self.calls, self.crm)
        return self

    @field_validator("lookup")
    @classmethod
    def _unique_lookup_names(cls, value: list[dict[str, Any]]) -> list[dict[str, Any]]:
        _check_unique("lookup", [raw.get("name") or raw.get("type") for raw in value])
        return value

    @field_validator("crm")
    @classmethod
    def _unique_names(cls, value: list[AdapterConfig]) -> list[AdapterConfig]:
        _check_unique("crm", [adapter.name for adapter in value])
        return value

    @model_validator(mode="after")
    def _no_token_in_recording_urls(self) -> Settings:
        # Recording URLs are written into CRM records: a client's token there can be copied
        # by anyone who reads a call.
        template = self.calls.recording_url_template
        for client in self.http.clients:
            if client.token is not None and client.token.get_secret_value() in template:
                raise ValueError(
                    f"calls.recording_url_template holds the token of [[http.clients]] "
                    f"{client.name!r}; write {{signature}} where the token is "
                    "(a link that opens that one recording)"
                )
        return self


class ConfigError(Exception):
    """A config mistake, worded for a PBX admin: file, line, key and what is wrong."""


@dataclass(frozen=True)
class ConfigProblem:
    """One mistake, located: `file:line: crm[3] "creatio-anon": auth_mode: message`."""

    path: Path
    line: int | None
    where: str
    message: str
    secret: bool  # a secret this machine cannot read (env var unset, file unreadable)

    def __str__(self) -> str:
        place = f"{self.path}:{self.line}" if self.line else str(self.path)
        return f"{place}: {self.where}: {self.message}"


@dataclass
class ConfigCheck:
    """What `check-config` found: the settings (secrets it could not read left unread)."""

    settings: Settings
    unreadable_secrets: list[ConfigProblem] = field(default_factory=list)


def _read(path: Path) -> tuple[str, dict[str, Any]]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc.strerror}") from None
    try:
        return text, tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None


def _problems(
    path: Path, text: str, raw: dict[str, Any], exc: ValidationError
) -> list[ConfigProblem]:
    lines = TomlLines(text)
    problems = []
    for error in exc.errors():
        loc = tuple(error["loc"])
        message = error["msg"].removeprefix("Value error, ")
        problems.append(
            ConfigProblem(
                path=path,
                line=lines.line_of(loc) if loc else None,
                where=describe_location(loc, raw),
                message=message,
                secret=error["type"] == SECRET_UNAVAILABLE,
            )
        )
    return problems


def _validate(path: Path, text: str, raw: dict[str, Any], context: dict[str, Any]) -> Settings:
    try:
        return Settings.model_validate(raw, context=context)
    except ValidationError as exc:
        problems = _problems(path, text, raw, exc)
        raise ConfigError("\n".join(str(problem) for problem in problems)) from None


def load_settings(path: str | Path) -> Settings:
    """The settings `pbxcrm run` uses: every secret of an enabled part read, or an error."""
    path = Path(path)
    text, raw = _read(path)
    return _validate(path, text, raw, {})


def check_settings(path: str | Path) -> ConfigCheck:
    """`check-config`: mistakes in the file are errors; secrets this shell cannot read are not.

    The service reads its secrets from its own environment (an EnvironmentFile, a file only
    the pbxcrm user may read), so an admin checking the file from a shell is told which ones
    were not readable here instead of being refused.
    """
    path = Path(path)
    text, raw = _read(path)
    try:
        return ConfigCheck(Settings.model_validate(raw))
    except ValidationError as exc:
        problems = _problems(path, text, raw, exc)
    if not all(problem.secret for problem in problems):
        raise ConfigError("\n".join(str(p) for p in problems if not p.secret))
    settings = _validate(path, text, raw, {SECRETS_CONTEXT_KEY: "skip"})
    return ConfigCheck(settings, problems)
