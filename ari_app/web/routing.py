"""The route table: one RouteSpec per route, the single source for the router, the auth rule
(route family) and the OpenAPI document.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Literal

from aiohttp import web
from pydantic import BaseModel

from ari_app.web.settings import RouteFamily

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, slots=True)
class RouteSpec:
    method: str
    path: str
    handler: Handler
    family: RouteFamily | None  # None only for the open health check
    summary: str
    query: type[BaseModel] | None = None
    body: type[BaseModel] | None = None
    responses: dict[int, str] = field(default_factory=dict)
    content_types: tuple[str, ...] = ("application/json",)
    tags: tuple[str, ...] = ()


FAMILY_KEY = web.AppKey("pbxcrm_route_families", dict)


def family_of(request: web.Request) -> RouteFamily | Literal[""] | None:
    """The route's family, None for the open health check, or "" for a route nobody declared.

    An undeclared route (added to the router without a RouteSpec) is refused, never open.
    """
    resource = request.match_info.route.resource
    if resource is None:
        return ""
    families: dict[str, RouteFamily | None] = request.app[FAMILY_KEY]
    return families.get(resource.canonical, "")
