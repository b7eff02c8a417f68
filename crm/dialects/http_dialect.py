"""What the HTTP dialects share: the extension -> CRM user table, auth, and one send call."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import aiohttp
from pydantic import Field

from crm.dialects.base import Adapter, AdapterConfig, DeliveryError
from crm.transport.http_client import (
    AuthConfig,
    HttpReply,
    build_auth,
    send_with_auth,
    status_error,
    trim,
)


class HttpDialectConfig(AdapterConfig):
    # Extension -> CRM user id, for CRMs that know agents by their own id; unmapped
    # extensions are sent as they are.
    user_map: dict[str, str] = Field(default_factory=dict)
    auth: AuthConfig = Field(default_factory=AuthConfig)


class HttpAdapter(Adapter):
    config: HttpDialectConfig

    def __init__(self, config: AdapterConfig, http: aiohttp.ClientSession) -> None:
        super().__init__(config, http)
        assert isinstance(config, HttpDialectConfig)
        self.auth = build_auth(self._auth_config(), config.timeout_seconds)

    def _auth_config(self) -> AuthConfig | None:
        return self.config.auth

    async def request(
        self,
        method: str,
        url: str,
        *,
        params: Any = None,
        json_body: Any = None,
        data: Any = None,
        headers: Mapping[str, str] | None = None,
        what: str = "",
    ) -> HttpReply:
        """Send with auth; a non-2xx answer raises the DeliveryError the outbox acts on."""
        reply = await send_with_auth(
            self.http,
            self.auth,
            method,
            url,
            params=params,
            json_body=json_body,
            data=data,
            headers=headers,
            timeout=self.config.timeout_seconds,
        )
        error = status_error(reply, f"{self.name}: {what}" if what else "")
        if error is not None:
            raise error
        return reply


def refuse(message: str, reply: HttpReply) -> DeliveryError:
    """The CRM answered 2xx but said no in the body: not retryable, message kept."""
    return DeliveryError(message, retryable=False, status=reply.status, response=trim(reply.text))
