"""What each CRM dialect would send, without sending it: a stand-in for the HTTP session.

The dialects build their requests themselves (URL, query, headers, body, auth); this session
records every request they make instead of putting it on the network, and answers each with
a reply that lets a login or token fetch go on (`access_token`, Creatio's `Code: 0` and
cookies), so the request for the event itself is reached and recorded too. Whether the
dialect would have liked the answer to that request does not matter here.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from multidict import CIMultiDict
from yarl import URL

from crm.dialects.base import Adapter, DeliveryError
from crm.model import CallEvent
from crm.secrets import redact

_DRY_RUN_ANSWER = json.dumps(
    {"success": True, "access_token": "dry-run", "token_type": "Bearer", "Code": 0}
).encode()
_DRY_RUN_COOKIES = ("BPMCSRF=dry-run; Path=/", ".ASPXAUTH=dry-run; Path=/")


@dataclass(slots=True)
class RecordedRequest:
    method: str
    url: str
    headers: dict[str, str]
    body: Any

    def as_json(self) -> dict[str, Any]:
        """Fit for a terminal or a CI log: every configured secret starred."""
        return {
            "method": self.method,
            "url": redact(self.url),
            "headers": {key: redact(value) for key, value in self.headers.items()},
            "body": _redact_tree(self.body),
        }


def _redact_tree(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {key: _redact_tree(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_redact_tree(item) for item in value]
    return value


class _Answer:
    """The parts of aiohttp's ClientResponse that crm.transport.http_client.send reads."""

    status = 200
    charset = "utf-8"

    def __init__(self, url: str) -> None:
        self.url = URL(url)
        self.headers: CIMultiDict[str] = CIMultiDict({"Content-Type": "application/json"})
        for cookie in _DRY_RUN_COOKIES:
            self.headers.add("Set-Cookie", cookie)

    async def read(self) -> bytes:
        return _DRY_RUN_ANSWER


@dataclass
class RecordingSession:
    """Stands in for aiohttp.ClientSession in the dialects: records, never connects."""

    requests: list[RecordedRequest] = field(default_factory=list)

    @asynccontextmanager
    async def request(
        self,
        method: str,
        url: str,
        *,
        params: Any = None,
        json: Any = None,  # aiohttp's own keyword
        data: Any = None,
        headers: Mapping[str, str] | None = None,
        **_: Any,
    ) -> AsyncIterator[_Answer]:
        full_url = str(url)
        if params:
            items = params.items() if isinstance(params, Mapping) else params
            full_url += ("&" if "?" in full_url else "?") + urlencode(list(items))
        self.requests.append(
            RecordedRequest(method, full_url, dict(headers or {}), _body(json, data))
        )
        yield _Answer(full_url)

    async def close(self) -> None:
        return None


def _body(json_body: Any, data: Any) -> Any:
    if json_body is not None:
        return json_body
    if isinstance(data, bytes):
        text = data.decode("utf-8", "replace")
        try:
            return json.loads(text)
        except ValueError:
            return text
    if isinstance(data, Mapping):
        return dict(data)
    if isinstance(data, list | tuple):
        return [list(pair) for pair in data]
    return data


async def requests_for(
    adapter: Adapter, session: RecordingSession, event: CallEvent, idempotency_key: str
) -> tuple[list[RecordedRequest], str | None]:
    """The requests `adapter` makes for `event`, and the error it raised after them, if any."""
    start = len(session.requests)
    error: str | None = None
    try:
        await adapter.deliver(event, idempotency_key)
    except DeliveryError as exc:
        error = str(exc)
    return session.requests[start:], error
