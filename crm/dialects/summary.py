"""One line per `[[crm]]` block, as `check-config` prints it.

TOML attaches `[crm.auth]`, `[crm.requests.*]` and `[crm.success]` to the last `[[crm]]`
above them: a table written under the wrong block silently configures that block. Seeing
each block's URL, auth mode and events side by side makes such a slip visible.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from crm.dialects.base import DIALECTS, AdapterConfig
from crm.model import EventKind


def block_url(config: AdapterConfig) -> str:
    """Where the block sends: its `url` or `base_url`, or the hosts its requests name."""
    for attribute in ("url", "base_url"):
        value = getattr(config, attribute, None)
        if isinstance(value, str) and value:
            return _without_query(value)
    requests = getattr(config, "requests", None)
    if isinstance(requests, dict):
        urls = sorted({_without_query(template.url) for template in requests.values()})
        return ", ".join(urls) or "-"
    return "-"


def _without_query(url: str) -> str:
    # A query string may carry a token (`?token=`), the host part `user:password@`; the
    # summary is printed to a terminal.
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return f"{parts.scheme}://{host}{parts.path}" if parts.scheme else url


def block_auth(config: AdapterConfig) -> str:
    auth_mode = getattr(config, "auth_mode", None)
    if isinstance(auth_mode, str):
        return auth_mode
    auth = getattr(config, "auth", None)
    mode = getattr(auth, "mode", "none")
    if mode == "none" and getattr(config, "bearer_token", None) is not None:
        return "bearer"
    return str(mode)


def block_events(config: AdapterConfig) -> list[EventKind]:
    """The lifecycle steps the block may send, in lifecycle order."""
    wanted = (
        frozenset(config.events)
        if config.events is not None
        else DIALECTS[config.type].adapter_class.default_events
    )
    requests = getattr(config, "requests", None)
    if isinstance(requests, dict):
        wanted = wanted & frozenset(requests)
    return [kind for kind in EventKind if kind in wanted]


def describe_block(index: int, config: AdapterConfig) -> str:
    """`crm[1] "salesforce"  salesforce  https://...  auth=oauth2  events=...  (disabled)`."""
    events = ",".join(kind.value for kind in block_events(config)) or "none"
    state = "" if config.enabled else "  (disabled)"
    return (
        f'crm[{index}] "{config.name}"  type={config.type}  url={block_url(config)}  '
        f"auth={block_auth(config)}  events={events}{state}"
    )
