"""Creatio CC360's click-to-call shape: `GET /webapi/{token}/makecall?first=<ext>&second=<num>`.

The token in the path is the credential (route family `creatio`, method `path_token`).
"""

from __future__ import annotations

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from ari_app.web.originate_routes import start_originate
from ari_app.web.parsing import BadRequest, parse_query
from ari_app.web.routing import RouteSpec


class MakeCallQuery(BaseModel):
    model_config = ConfigDict(extra="ignore")  # Creatio may add its own parameters

    first: str = Field(min_length=1, max_length=32, description="Agent extension (digits)")
    second: str = Field(min_length=1, max_length=32, description="Client number")


async def makecall(request: web.Request) -> web.Response:
    try:
        query = parse_query(request, MakeCallQuery)
    except BadRequest as exc:
        return exc.response
    result = await start_originate(request, query.first, query.second, source="creatio")
    if isinstance(result, web.Response):
        return result
    return web.json_response({"success": True, "id": result.id, "state": result.state.value})


ROUTES = [
    RouteSpec(
        "GET",
        "/webapi/{token}/makecall",
        makecall,
        "creatio",
        "Creatio CC360 make call (token in the path)",
        query=MakeCallQuery,
        responses={200: "Sent to the PBX", 403: "Not allowed", 422: "Invalid parameter"},
        tags=("vendor",),
    ),
]
