"""What the dialect tests share: a real client session, and adapters built from TOML text."""

from __future__ import annotations

import tomllib
from collections.abc import Iterable

import aiohttp

from crm.dialects.base import Adapter, DeliveryOutcome
from crm.dialects.registry import build_adapter, parse_adapter_config
from crm.model import CallEvent


def client_session() -> aiohttp.ClientSession:
    """The one session pbxcrm shares between adapters (a real one: real sockets)."""
    return aiohttp.ClientSession()


def adapter_from_toml(text: str, http: aiohttp.ClientSession) -> Adapter:
    """The config round trip a PBX admin relies on: one `[[crm]]` block -> a working adapter."""
    [raw] = tomllib.loads(text)["crm"]
    return build_adapter(parse_adapter_config(raw), http)


def key(adapter: Adapter, event: CallEvent) -> str:
    return f"{adapter.name}:{event.event_id}"


async def deliver_wanted(adapter: Adapter, events: Iterable[CallEvent]) -> list[DeliveryOutcome]:
    """What the outbox does for one adapter: deliver, in order, the events it wants."""
    return [await adapter.deliver(e, key(adapter, e)) for e in events if adapter.wants(e)]
