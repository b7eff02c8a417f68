"""Caller lookup: "who is calling?" asked of local contacts, a DBN server, a jtel-style REST
service or a CRM dialect. Used by the IVR scripts, the screen pop and the 3CX endpoints.
"""

from __future__ import annotations

import builtins
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, TypeVar

import aiohttp
from pydantic import BaseModel, ConfigDict, Field


class LookupStatus(StrEnum):
    FOUND = "FOUND"
    NOTFOUND = "NOTFOUND"
    MULTIPLE = "MULTIPLE"
    ERROR = "ERROR"


class LookupRequest(BaseModel):
    number: str  # the caller's number as Asterisk gave it
    service_number: str | None = None  # the DID dialled
    service_name: str | None = None
    function: str | None = None
    user_data: list[str] = Field(default_factory=list)  # UserData, UserData2, UserData3


class LookupResult(BaseModel):
    status: LookupStatus
    source: str = ""
    contact_name: str | None = None
    company: str | None = None
    owner_extension: str | None = None
    contact_url: str | None = None
    record: Any = None  # the CRM's JSON as received (flattened into channel variables by AGI)
    error: str | None = None


class LookupConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: str
    name: str = ""
    timeout_seconds: float = Field(default=2.0, gt=0)
    cache_ttl_seconds: float = Field(default=60.0, ge=0)
    # Answers kept at most; past it the least recently used goes first.
    cache_max_entries: int = Field(default=10_000, ge=1)
    number_formats: list[str] = Field(default_factory=lambda: ["as_received"])
    default_region: str = "RU"


class LookupSource(ABC):
    def __init__(self, config: LookupConfig, http: aiohttp.ClientSession) -> None:
        self.config = config
        self.http = http
        self.name = config.name or config.type

    @abstractmethod
    async def lookup(self, request: LookupRequest) -> LookupResult:
        """Never raises for CRM trouble: returns status ERROR with the reason instead."""


@dataclass(frozen=True, slots=True)
class LookupKind:
    type: str
    # builtins.type: the field above shadows the builtin in this class body.
    config_model: builtins.type[LookupConfig]
    source_class: builtins.type[LookupSource]


LOOKUP_KINDS: dict[str, LookupKind] = {}


_SourceClass = TypeVar("_SourceClass", bound=type[LookupSource])


def register_lookup(
    type_name: str, config_model: type[LookupConfig]
) -> Callable[[_SourceClass], _SourceClass]:
    def register(source_class: _SourceClass) -> _SourceClass:
        LOOKUP_KINDS[type_name] = LookupKind(type_name, config_model, source_class)
        return source_class

    return register
