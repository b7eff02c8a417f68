"""The `[http]` section: pbxcrm's own HTTP port (never Asterisk's 8088).

Everything that can reach the PBX from outside is configured here: who may call (clients with a
token and/or a username/password, each limited to address ranges and route families), how each
route family may authenticate, and the click-to-call fraud rules.
"""

from __future__ import annotations

from ipaddress import IPv4Network, IPv6Network
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ari_app.agent.settings import AgentSettings
from ari_app.originate.settings import OriginateSettings
from ari_app.threecx.settings import ThreeCxSettings
from crm.secrets import Secret

Network = IPv4Network | IPv6Network

# A route family is a group of routes that share one auth rule (one per module in ari_app/web/).
RouteFamily = Literal[
    "originate", "calls", "recordings", "creatio", "fixdigital", "metrics", "openapi", "3cx"
]
ROUTE_FAMILIES: tuple[RouteFamily, ...] = (
    "originate",
    "calls",
    "recordings",
    "creatio",
    "fixdigital",
    "metrics",
    "openapi",
    "3cx",
)

# header_token: `Authorization: Bearer <t>` or `X-Api-Token: <t>`; path_token: the `{token}`
# segment of the vendor URL shapes; basic: HTTP basic; params: `username`/`password` as query or
# form fields (FixDigital's dialer sends credentials that way); query_token: a `token` query or
# form field (the cal4care DBN API: `/3cx/query?cid=&token=`); signed_link: the `{token}` slot
# of `/{token}/recording/{file}` holds pbxcrm's signature for that one file
# (ari_app/calls/recording_links.py), no client credential at all.
AuthMethod = Literal["header_token", "path_token", "basic", "params", "query_token", "signed_link"]

_ANYWHERE: list[Network] = [IPv4Network("0.0.0.0/0"), IPv6Network("::/0")]


class HttpClient(BaseModel):
    """One caller of the HTTP port (a CRM): its credentials, where it may call from, and what."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    token: Secret | None = None
    username: str | None = None
    password: Secret | None = None
    allow_from: list[Network] = Field(default_factory=lambda: list(_ANYWHERE))
    # None by default: each family a client may use is listed (least privilege).
    routes: list[RouteFamily] = Field(default_factory=list)
    # Click-to-call requests per minute for this client (toll-fraud brake).
    originate_per_minute: int = Field(default=10, ge=1)

    @model_validator(mode="after")
    def _has_credentials(self) -> HttpClient:
        if self.token is None and (self.username is None or self.password is None):
            raise ValueError(f"client {self.name!r} needs a token or a username and password")
        if (self.username is None) != (self.password is None):
            raise ValueError(f"client {self.name!r}: username and password go together")
        if self.token is not None and len(self.token.get_secret_value()) < 16:
            raise ValueError(f"client {self.name!r}: token must be at least 16 characters")
        return self


class RouteAuth(BaseModel):
    model_config = ConfigDict(extra="forbid")

    methods: list[AuthMethod]
    allow_from: list[Network] = Field(default_factory=lambda: list(_ANYWHERE))


def _default_routes() -> dict[RouteFamily, RouteAuth]:
    header: list[AuthMethod] = ["header_token", "basic"]
    return {
        "originate": RouteAuth(methods=header),
        "calls": RouteAuth(methods=header),
        # A client's token in a recording URL (path_token) is opt-in, and then only for a
        # client whose routes are ["recordings"] (ari_app/web/auth.py).
        "recordings": RouteAuth(methods=[*header, "signed_link"]),
        "creatio": RouteAuth(methods=["path_token"]),
        "fixdigital": RouteAuth(methods=["basic", "params"]),
        "metrics": RouteAuth(methods=header),
        "openapi": RouteAuth(methods=header),
        "3cx": RouteAuth(methods=["query_token", *header]),
    }


class HttpSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    max_body_bytes: int = Field(default=64 * 1024, ge=1024, le=16 * 1024 * 1024)
    # X-Forwarded-For is believed only when the direct peer is in one of these.
    trusted_proxies: list[Network] = Field(default_factory=list)
    clients: list[HttpClient] = Field(default_factory=list)
    routes: dict[RouteFamily, RouteAuth] = Field(default_factory=_default_routes)
    originate: OriginateSettings = Field(default_factory=OriginateSettings)
    history_max_limit: int = Field(default=500, ge=1, le=10000)
    # Wrong credentials from one address before it is refused (429) for the rest of the window.
    max_auth_failures: int = Field(default=10, ge=1, le=10_000)
    auth_failure_window_seconds: float = Field(default=300.0, gt=0)
    # Slow or stuck sockets: a request's headers must arrive within header_timeout_seconds of
    # the connection (or of the previous answer on a kept-alive one), its body within
    # body_timeout_seconds of its headers; past max_connections open at once, new ones are
    # closed at once (counted in /metrics).
    header_timeout_seconds: float = Field(default=10.0, gt=0, le=600)
    body_timeout_seconds: float = Field(default=30.0, gt=0, le=3600)
    max_connections: int = Field(default=512, ge=1, le=1_000_000)
    threecx: ThreeCxSettings = Field(default_factory=ThreeCxSettings)
    agent: AgentSettings = Field(default_factory=AgentSettings)

    @field_validator("routes")
    @classmethod
    def _fill_routes(cls, value: dict[RouteFamily, RouteAuth]) -> dict[RouteFamily, RouteAuth]:
        # A config that tunes one family keeps the defaults of the others.
        return {**_default_routes(), **value}

    @field_validator("clients")
    @classmethod
    def _unique_clients(cls, value: list[HttpClient]) -> list[HttpClient]:
        seen: set[str] = set()
        for client in value:
            if client.name in seen:
                raise ValueError(f"two [[http.clients]] are named {client.name!r}")
            seen.add(client.name)
        return value
