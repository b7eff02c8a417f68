"""The built-in dialects (importing this registers them) and `[[crm]]` -> adapter."""

from __future__ import annotations

from typing import Any

import aiohttp

from crm.dialects import (  # noqa: F401 - imported for their @register_dialect side effect
    creatio,
    dbn,
    declarative,
    fixdigital,
    salesforce,
    webhook,
)
from crm.dialects.base import DIALECTS, Adapter, AdapterConfig
from crm.transport.errors import DeliveryError as DeliveryError


def parse_adapter_config(
    raw: dict[str, Any], context: dict[str, Any] | None = None
) -> AdapterConfig:
    """Validate one `[[crm]]` block against its dialect's model (raises ValueError).

    A block switched off (`enabled = false`) keeps its `env:`/`file:` secrets unread: the
    example config ships every dialect that way, and a machine has only the secrets it uses.
    """
    from crm.secrets import SECRETS_CONTEXT_KEY

    type_name = raw.get("type")
    if type_name not in DIALECTS:
        known = ", ".join(sorted(DIALECTS))
        raise ValueError(f"unknown CRM type {type_name!r}; known types: {known}")
    if raw.get("enabled") is False:
        context = {**(context or {}), SECRETS_CONTEXT_KEY: "skip"}
    config = DIALECTS[type_name].config_model.model_validate(raw, context=context)
    if not config.name:
        config.name = config.type
    return config


def build_adapter(config: AdapterConfig, http: aiohttp.ClientSession) -> Adapter:
    return DIALECTS[config.type].adapter_class(config, http)
