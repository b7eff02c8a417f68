"""Generic JSON webhook: the CallEvent (with its call snapshot) POSTed as it is.

For CRMs or middleware the admin controls. The receiver de-duplicates on the
`Idempotency-Key` header, which stays the same across retries of one event.
"""

from __future__ import annotations

import json
from typing import ClassVar, Literal

from pydantic import Field

from crm.dialects.base import DeliveryOutcome, register_dialect
from crm.dialects.http_dialect import HttpAdapter, HttpDialectConfig
from crm.model import CallEvent, EventKind
from crm.secrets import Secret
from crm.transport.http_client import AuthConfig, trim


class WebhookConfig(HttpDialectConfig):
    type: str = "webhook"
    url: str
    method: Literal["POST", "PUT", "PATCH"] = "POST"
    headers: dict[str, str] = Field(default_factory=dict)
    bearer_token: Secret | None = None  # shorthand for [crm.auth] mode = "bearer"


@register_dialect("webhook", WebhookConfig)
class WebhookAdapter(HttpAdapter):
    config: WebhookConfig
    default_events: ClassVar[frozenset[EventKind]] = frozenset(EventKind)

    def _auth_config(self) -> AuthConfig | None:
        if self.config.bearer_token is not None and self.config.auth.mode == "none":
            return AuthConfig(mode="bearer", token=self.config.bearer_token)
        return self.config.auth

    def body(self, event: CallEvent, idempotency_key: str) -> dict[str, object]:
        return {
            "event_id": event.event_id,
            "idempotency_key": idempotency_key,
            **event.model_dump(mode="json"),
        }

    def body_bytes(self, event: CallEvent, idempotency_key: str) -> bytes:
        """`body()` as JSON bytes, the event serialised by pydantic straight to JSON: the same
        object, without the dict + json.dumps round trip (13% of the outbox's CPU a delivery)."""
        head = json.dumps({"event_id": event.event_id, "idempotency_key": idempotency_key})
        return head[:-1].encode() + b"," + event.model_dump_json().encode()[1:]

    async def deliver(self, event: CallEvent, idempotency_key: str) -> DeliveryOutcome:
        headers = {**self.config.headers, "Idempotency-Key": idempotency_key}
        if not any(name.lower() == "content-type" for name in headers):
            headers["Content-Type"] = "application/json"  # as json= set it; the admin's wins
        reply = await self.request(
            self.config.method,
            self.config.url,
            data=self.body_bytes(event, idempotency_key),
            headers=headers,
            what=f"webhook {event.kind.value}",
        )
        return DeliveryOutcome(status=reply.status, response=trim(reply.text))
