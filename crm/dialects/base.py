"""What a CRM adapter is: a config model plus a class that delivers one CallEvent.

Each dialect is one module that registers itself with `@register_dialect("type")`; the
`[[crm]]` blocks of the config file pick dialects by `type`, so a new CRM needs a config
block (or one small module), never a change to the pipeline.
"""

from __future__ import annotations

import builtins
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

import aiohttp
from pydantic import BaseModel, ConfigDict, Field

from crm.model import CallEvent, EventKind

# Where it always was for the dialects; defined apart so the HTTP plumbing (lookups too)
# does not import the call model.
from crm.transport.errors import DeliveryError as DeliveryError


class AdapterConfig(BaseModel):
    """Settings every adapter has; dialects subclass this with their own fields."""

    model_config = ConfigDict(extra="forbid")

    type: str
    name: str = ""  # unique per config; defaults to the type
    enabled: bool = True
    events: list[EventKind] | None = None  # None: the dialect's own default set
    concurrency: int = Field(default=4, ge=1, le=256)
    timeout_seconds: float = Field(default=10.0, gt=0)
    max_attempts: int = Field(default=12, ge=1)  # then dead letter
    default_region: str = "RU"  # for phone number formatting (phonenumbers region code)


@dataclass(slots=True)
class DeliveryOutcome:
    """A delivery the CRM took. `matched=False` is Salesforce's `unmatched`: kept, not failed."""

    status: int | None = None
    matched: bool | None = None
    response: str | None = None  # trimmed response body, kept for `outbox list`
    crm_data: dict[str, Any] = field(default_factory=dict)


class Adapter(ABC):
    """Delivers lifecycle events to one CRM. Instances are shared by all deliveries."""

    default_events: ClassVar[frozenset[EventKind]] = frozenset(EventKind)

    def __init__(self, config: AdapterConfig, http: aiohttp.ClientSession) -> None:
        self.config = config
        self.http = http
        self.name = config.name or config.type

    def wants(self, event: CallEvent) -> bool:
        kinds = self.config.events if self.config.events is not None else self.default_events
        return event.kind in kinds

    @abstractmethod
    async def deliver(self, event: CallEvent, idempotency_key: str) -> DeliveryOutcome:
        """Send one event; raise DeliveryError when the CRM did not take it."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release anything the adapter holds beyond the shared HTTP session."""


@dataclass(frozen=True, slots=True)
class Dialect:
    type: str
    # builtins.type: the field above shadows the builtin in this class body.
    config_model: builtins.type[AdapterConfig]
    adapter_class: builtins.type[Adapter]


DIALECTS: dict[str, Dialect] = {}


_AdapterClass = TypeVar("_AdapterClass", bound=type[Adapter])


def register_dialect(
    type_name: str, config_model: type[AdapterConfig]
) -> Callable[[_AdapterClass], _AdapterClass]:
    def register(adapter_class: _AdapterClass) -> _AdapterClass:
        DIALECTS[type_name] = Dialect(type_name, config_model, adapter_class)
        return adapter_class

    return register
